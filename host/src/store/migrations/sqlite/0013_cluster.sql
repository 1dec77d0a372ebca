-- Several `bnr serve` replicas on one database: who is alive, who leads, who owns which work.
-- Portable SQL (SQLite and PostgreSQL); every claim on these rows is a conditional UPDATE.

-- One row per running process. `heartbeat` is the database's clock (milliseconds since the
-- Unix epoch), so replicas never compare their own clocks. `epoch` grows whenever the replica's
-- work is taken from it (it was found dead) or it re-joins after fencing itself: writes made
-- under an older epoch do not match any more.
CREATE TABLE replicas (
    id         INTEGER PRIMARY KEY,
    uuid       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,            -- host and pid, for operators
    epoch      INTEGER NOT NULL DEFAULT 1,
    started    INTEGER NOT NULL,         -- database clock, ms
    heartbeat  INTEGER NOT NULL,         -- database clock, ms
    stopped    INTEGER NULL              -- set by a clean shutdown: its work is taken at once
);
CREATE INDEX replicas_heartbeat ON replicas(heartbeat);

-- Named leases (`scheduler`: the leader that runs the tick, the sync pass, deadlines, usage).
-- `term` grows with every new holder; renewals match (name, holder, term).
CREATE TABLE leases (
    name     TEXT PRIMARY KEY,
    holder   INTEGER NULL REFERENCES replicas(id),
    term     INTEGER NOT NULL DEFAULT 0,
    expires  INTEGER NOT NULL DEFAULT 0   -- database clock, ms
);
INSERT INTO leases(name, holder, term, expires) VALUES ('scheduler', NULL, 0, 0);

-- The replica (and its epoch) whose process runs a job or polls an operation. NULL: written
-- before replicas existed, or by a process that runs alone.
ALTER TABLE async_jobs ADD COLUMN owner INTEGER NULL;
ALTER TABLE async_jobs ADD COLUMN owner_epoch INTEGER NULL;
ALTER TABLE provider_operations ADD COLUMN owner INTEGER NULL;
ALTER TABLE provider_operations ADD COLUMN owner_epoch INTEGER NULL;
CREATE INDEX async_jobs_owner ON async_jobs(owner) WHERE status = 0;

-- Counters raised by every change to rows that replicas keep in memory (`settings`: the
-- `configurations` table). Each replica polls them and reloads what moved, so a change made
-- through one replica (a zone's provider swap included) reaches the others within the poll.
CREATE TABLE change_epochs (
    name  TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL
);
INSERT INTO change_epochs(name, epoch) VALUES ('settings', 0);
CREATE TRIGGER configurations_epoch_insert AFTER INSERT ON configurations
BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE name = 'settings'; END;
CREATE TRIGGER configurations_epoch_update AFTER UPDATE ON configurations
BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE name = 'settings'; END;
CREATE TRIGGER configurations_epoch_delete AFTER DELETE ON configurations
BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE name = 'settings'; END;
