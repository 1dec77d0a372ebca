-- Backup & Recovery tables (cloudstack-bnr-spec.md §1), same conventions as 0001:
-- `id` internal, `uuid` public, INTEGER Unix seconds UTC, soft delete via `removed`.

CREATE TABLE backup_offerings (
    id           INTEGER PRIMARY KEY,
    uuid         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    external_id  TEXT NOT NULL,            -- provider policy id
    zone_id      INTEGER NOT NULL REFERENCES zones(id),
    provider     TEXT NOT NULL,            -- zone's provider name at import time
    user_driven  INTEGER NOT NULL CHECK (user_driven IN (0, 1)),  -- allowuserdrivenbackups
    created      INTEGER NOT NULL,
    removed      INTEGER NULL
);
CREATE UNIQUE INDEX backup_offerings_zone_external ON backup_offerings(zone_id, external_id) WHERE removed IS NULL;
CREATE UNIQUE INDEX backup_offerings_zone_name ON backup_offerings(zone_id, name) WHERE removed IS NULL;

CREATE TABLE backup_schedules (
    id            INTEGER PRIMARY KEY,
    uuid          TEXT NOT NULL UNIQUE,
    vm_id         INTEGER NOT NULL REFERENCES vms(id),
    interval_type TEXT NOT NULL CHECK (interval_type IN ('HOURLY', 'DAILY', 'WEEKLY', 'MONTHLY')),
    schedule      TEXT NOT NULL,           -- MM | MM:HH | MM:HH:D | MM:HH:DD
    timezone      TEXT NOT NULL,           -- canonical IANA name
    next_run      INTEGER NOT NULL,        -- absolute instant of the next slot
    async_job_id  INTEGER NULL REFERENCES async_jobs(id),  -- in-flight scheduled createBackup job
    max_backups   INTEGER NOT NULL DEFAULT 0 CHECK (max_backups >= 0),  -- 0 = keep all
    quiesce       INTEGER NULL,
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    domain_id     INTEGER NOT NULL REFERENCES domains(id),
    created       INTEGER NOT NULL
);
-- At most one schedule per (instance, interval type); creating an existing type updates it.
CREATE UNIQUE INDEX backup_schedules_vm_type ON backup_schedules(vm_id, interval_type);
CREATE INDEX backup_schedules_due ON backup_schedules(next_run) WHERE async_job_id IS NULL;

CREATE TABLE backups (
    id                 INTEGER PRIMARY KEY,
    uuid               TEXT NOT NULL UNIQUE,
    name               TEXT NOT NULL,
    description        TEXT NULL,
    vm_id              INTEGER NULL REFERENCES vms(id),   -- nullable: orphan backups survive the VM
    external_id        TEXT NULL,                         -- provider's handle; NULL while BackingUp
    type               TEXT NOT NULL DEFAULT 'FULL',
    date               INTEGER NOT NULL,                  -- serialised as `created`
    size               INTEGER NOT NULL DEFAULT 0,        -- physical bytes
    protected_size     INTEGER NOT NULL DEFAULT 0,        -- `virtualsize`
    status             TEXT NOT NULL CHECK (status IN ('Allocated', 'Queued', 'BackingUp', 'BackedUp',
                           'Error', 'Failed', 'Restoring', 'Removed', 'Expunged')),
    backup_offering_id INTEGER NOT NULL REFERENCES backup_offerings(id),
    account_id         INTEGER NOT NULL REFERENCES accounts(id),
    domain_id          INTEGER NOT NULL REFERENCES domains(id),
    zone_id            INTEGER NOT NULL REFERENCES zones(id),
    backed_volumes     TEXT NOT NULL DEFAULT '[]',        -- VolumeInfo JSON, sorted by deviceId
    backup_schedule_id INTEGER NULL,                      -- no FK: the schedule may be deleted later
    interval_type      TEXT NULL,                         -- schedule's type at creation; NULL = MANUAL
    status_reason      TEXT NULL,                         -- why a backup ended Error/Failed
    removed            INTEGER NULL
);
CREATE INDEX backups_account ON backups(account_id, id) WHERE removed IS NULL;
CREATE INDEX backups_domain ON backups(domain_id, id) WHERE removed IS NULL;
-- (vm, owner): a VM's backups inside an account-scoped list come in id order, and are counted
-- from the index alone.
CREATE INDEX backups_vm ON backups(vm_id, account_id) WHERE removed IS NULL;
CREATE INDEX backups_zone ON backups(zone_id, id) WHERE removed IS NULL;
CREATE INDEX backups_offering ON backups(backup_offering_id) WHERE removed IS NULL;
CREATE INDEX backups_schedule ON backups(backup_schedule_id, status, date) WHERE removed IS NULL;
CREATE INDEX backups_name ON backups(name, account_id) WHERE removed IS NULL;

-- Live (not removed) backups per owner, zone and offering, kept exact by the triggers below, so
-- that listBackups answers its `count` from a few rows instead of counting a million backups.
CREATE TABLE backup_counts (
    account_id         INTEGER NOT NULL,
    zone_id            INTEGER NOT NULL,
    backup_offering_id INTEGER NOT NULL,
    live               INTEGER NOT NULL,
    PRIMARY KEY (account_id, zone_id, backup_offering_id)
) WITHOUT ROWID;
CREATE TRIGGER backups_count_insert AFTER INSERT ON backups WHEN NEW.removed IS NULL
BEGIN
    INSERT INTO backup_counts(account_id, zone_id, backup_offering_id, live)
    VALUES (NEW.account_id, NEW.zone_id, NEW.backup_offering_id, 1)
    ON CONFLICT(account_id, zone_id, backup_offering_id) DO UPDATE SET live = live + 1;
END;
CREATE TRIGGER backups_count_update AFTER UPDATE OF removed, account_id, zone_id, backup_offering_id ON backups
BEGIN
    UPDATE backup_counts SET live = live - 1
     WHERE OLD.removed IS NULL AND account_id = OLD.account_id AND zone_id = OLD.zone_id
       AND backup_offering_id = OLD.backup_offering_id;
    INSERT INTO backup_counts(account_id, zone_id, backup_offering_id, live)
    SELECT NEW.account_id, NEW.zone_id, NEW.backup_offering_id, 1 WHERE NEW.removed IS NULL
    ON CONFLICT(account_id, zone_id, backup_offering_id) DO UPDATE SET live = live + 1;
END;
CREATE TRIGGER backups_count_delete AFTER DELETE ON backups WHEN OLD.removed IS NULL
BEGIN
    UPDATE backup_counts SET live = live - 1
     WHERE account_id = OLD.account_id AND zone_id = OLD.zone_id
       AND backup_offering_id = OLD.backup_offering_id;
END;

-- Instance metadata captured at backup time (createVMFromBackup reads it).
CREATE TABLE backup_details (
    backup_id INTEGER NOT NULL REFERENCES backups(id),
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (backup_id, name)
);

-- Long provider operations left pending by a `start-*` call: persisted so that polling resumes
-- after a restart and nothing stays in a transitional state forever.
CREATE TABLE provider_operations (
    id         INTEGER PRIMARY KEY,
    job_id     INTEGER NULL REFERENCES async_jobs(id),   -- NULL when not started by a job
    zone_id    INTEGER NOT NULL REFERENCES zones(id),
    provider   TEXT NOT NULL,
    handle     TEXT NOT NULL,               -- opaque, from the provider
    kind       TEXT NOT NULL CHECK (kind IN ('backup', 'delete', 'restore', 'restore-volume')),
    backup_id  INTEGER NULL REFERENCES backups(id),
    payload    TEXT NOT NULL DEFAULT '{}',  -- what finishing the operation needs (JSON)
    deadline   INTEGER NOT NULL,            -- Unix seconds; past it the operation is failed
    created    INTEGER NOT NULL
);
CREATE INDEX provider_operations_job ON provider_operations(job_id);

-- Time-weighted backup usage per instance and offering (issue: usage records).
CREATE TABLE backup_usage (
    id                 INTEGER PRIMARY KEY,
    vm_id              INTEGER NOT NULL REFERENCES vms(id),
    backup_offering_id INTEGER NOT NULL REFERENCES backup_offerings(id),
    account_id         INTEGER NOT NULL REFERENCES accounts(id),
    domain_id          INTEGER NOT NULL REFERENCES domains(id),
    zone_id            INTEGER NOT NULL REFERENCES zones(id),
    size               INTEGER NOT NULL,
    protected_size     INTEGER NOT NULL,
    start_date         INTEGER NOT NULL,
    end_date           INTEGER NULL         -- NULL while the period is open
);
CREATE INDEX backup_usage_open ON backup_usage(vm_id, backup_offering_id) WHERE end_date IS NULL;
