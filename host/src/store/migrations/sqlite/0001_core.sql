-- Core tables (schema contract, migration 0001). Column names and meanings are fixed: other layers
-- read and write these tables directly. Conventions: `id` internal, `uuid` public (lower-case v4),
-- timestamps INTEGER Unix seconds UTC, soft delete via `removed`.

CREATE TABLE domains (
    id        INTEGER PRIMARY KEY,
    uuid      TEXT NOT NULL UNIQUE,
    name      TEXT NOT NULL,
    parent_id INTEGER NULL REFERENCES domains(id),
    path      TEXT NOT NULL,              -- '/' for ROOT, '/child/' below it
    created   INTEGER NOT NULL,
    removed   INTEGER NULL
);
CREATE UNIQUE INDEX domains_path ON domains(path) WHERE removed IS NULL;

CREATE TABLE accounts (
    id        INTEGER PRIMARY KEY,
    uuid      TEXT NOT NULL UNIQUE,
    name      TEXT NOT NULL,
    domain_id INTEGER NOT NULL REFERENCES domains(id),
    role      TEXT NOT NULL CHECK (role IN ('admin', 'domainadmin', 'user')),
    state     TEXT NOT NULL DEFAULT 'enabled' CHECK (state IN ('enabled', 'disabled', 'locked')),
    created   INTEGER NOT NULL,
    removed   INTEGER NULL
);
CREATE UNIQUE INDEX accounts_domain_name ON accounts(domain_id, name) WHERE removed IS NULL;

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    uuid          TEXT NOT NULL UNIQUE,
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    username      TEXT NOT NULL,
    password_hash TEXT NULL,
    api_key       TEXT NULL UNIQUE,
    secret_key    TEXT NULL,
    state         TEXT NOT NULL DEFAULT 'enabled' CHECK (state IN ('enabled', 'disabled', 'locked')),
    email         TEXT NULL,
    firstname     TEXT NULL,
    lastname      TEXT NULL,
    created       INTEGER NOT NULL,
    removed       INTEGER NULL
);
CREATE INDEX users_account ON users(account_id);
CREATE INDEX users_username ON users(username);

CREATE TABLE zones (
    id      INTEGER PRIMARY KEY,
    uuid    TEXT NOT NULL UNIQUE,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    removed INTEGER NULL
);

CREATE TABLE service_offerings (
    id            INTEGER PRIMARY KEY,
    uuid          TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    display_text  TEXT NOT NULL,
    cpu_number    INTEGER NOT NULL,
    cpu_speed_mhz INTEGER NOT NULL,
    memory_mb     INTEGER NOT NULL,
    created       INTEGER NOT NULL,
    removed       INTEGER NULL
);

CREATE TABLE disk_offerings (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    display_text    TEXT NOT NULL,
    disk_size_bytes INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    removed         INTEGER NULL
);

CREATE TABLE templates (
    id           INTEGER PRIMARY KEY,
    uuid         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    display_text TEXT NOT NULL,
    zone_id      INTEGER NULL REFERENCES zones(id),
    os_type_name TEXT NOT NULL,
    hypervisor   TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    created      INTEGER NOT NULL,
    removed      INTEGER NULL
);

CREATE TABLE vms (
    id                  INTEGER PRIMARY KEY,
    uuid                TEXT NOT NULL UNIQUE,
    name                TEXT NOT NULL,
    display_name        TEXT NOT NULL,
    internal_name       TEXT NOT NULL,
    account_id          INTEGER NOT NULL REFERENCES accounts(id),
    domain_id           INTEGER NOT NULL REFERENCES domains(id),
    zone_id             INTEGER NOT NULL REFERENCES zones(id),
    service_offering_id INTEGER NOT NULL REFERENCES service_offerings(id),
    template_id         INTEGER NOT NULL REFERENCES templates(id),
    hypervisor          TEXT NOT NULL DEFAULT 'Simulator',
    host_address        TEXT NULL,
    state               TEXT NOT NULL CHECK (state IN ('Starting', 'Running', 'Stopping', 'Stopped',
                            'Destroyed', 'Expunging', 'Restoring', 'Error')),
    backup_offering_id  INTEGER NULL,     -- FK to backup_offerings(id), owned by the B&R migration
    backup_external_id  TEXT NULL,
    backup_volumes      TEXT NULL,        -- VolumeInfo JSON at assignment
    created             INTEGER NOT NULL,
    removed             INTEGER NULL
);
-- Listing indexes: account-scoped lists page by id inside an account / domain / zone.
CREATE INDEX vms_account ON vms(account_id, id);
CREATE INDEX vms_domain ON vms(domain_id, id);
CREATE INDEX vms_zone ON vms(zone_id, id);
CREATE INDEX vms_backup_offering ON vms(backup_offering_id) WHERE backup_offering_id IS NOT NULL;

CREATE TABLE volumes (
    id               INTEGER PRIMARY KEY,
    uuid             TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    vm_id            INTEGER NULL REFERENCES vms(id),
    account_id       INTEGER NOT NULL REFERENCES accounts(id),
    domain_id        INTEGER NOT NULL REFERENCES domains(id),
    zone_id          INTEGER NOT NULL REFERENCES zones(id),
    type             TEXT NOT NULL CHECK (type IN ('ROOT', 'DATADISK')),
    size_bytes       INTEGER NOT NULL,
    path             TEXT NOT NULL,
    device_id        INTEGER NULL,
    disk_offering_id INTEGER NULL REFERENCES disk_offerings(id),
    state            TEXT NOT NULL CHECK (state IN ('Allocated', 'Ready', 'Copying', 'Restoring',
                         'Destroy', 'Expunged')),
    created          INTEGER NOT NULL,
    removed          INTEGER NULL
);
CREATE INDEX volumes_vm ON volumes(vm_id, id);
CREATE INDEX volumes_account ON volumes(account_id, id);
CREATE INDEX volumes_domain ON volumes(domain_id, id);

-- Setting values only; definitions (default, type, description, category, dynamic, secret) live in code.
CREATE TABLE configurations (
    name     TEXT NOT NULL,
    scope    TEXT NOT NULL CHECK (scope IN ('global', 'zone')),
    scope_id INTEGER NOT NULL,            -- 0 for global, zones.id for zone
    value    TEXT NOT NULL,
    PRIMARY KEY (name, scope, scope_id)
);

CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    uuid          TEXT NOT NULL UNIQUE,
    type          TEXT NOT NULL,
    level         TEXT NOT NULL CHECK (level IN ('INFO', 'WARN', 'ERROR')),
    state         TEXT NOT NULL CHECK (state IN ('Scheduled', 'Started', 'Completed', 'Created')),
    description   TEXT NOT NULL,
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    domain_id     INTEGER NOT NULL REFERENCES domains(id),
    user_id       INTEGER NULL REFERENCES users(id),
    resource_type TEXT NULL,
    resource_uuid TEXT NULL,
    created       INTEGER NOT NULL
);
CREATE INDEX events_account ON events(account_id, id);
CREATE INDEX events_domain ON events(domain_id, id);

CREATE TABLE async_jobs (
    id            INTEGER PRIMARY KEY,
    uuid          TEXT NOT NULL UNIQUE,
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    user_id       INTEGER NOT NULL REFERENCES users(id),
    cmd           TEXT NOT NULL,
    status        INTEGER NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2)),
    result_code   INTEGER NOT NULL DEFAULT 0,
    result        TEXT NULL,
    instance_type TEXT NULL,
    instance_uuid TEXT NULL,
    created       INTEGER NOT NULL,
    completed     INTEGER NULL
);
CREATE INDEX async_jobs_account ON async_jobs(account_id, id);
CREATE INDEX async_jobs_pending ON async_jobs(status) WHERE status = 0;
