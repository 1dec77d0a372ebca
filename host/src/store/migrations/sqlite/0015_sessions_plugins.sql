-- Login sessions (username/password clients and the console) shared by every replica, and
-- installed provider components that every replica can load.

-- One row per live login session. Only digests are kept: the sha256 (hex) of the session key
-- and of the JSESSIONID cookie, so the database never holds a usable session. Times are Unix
-- seconds; `last_used` is refreshed at most once a minute.
CREATE TABLE login_sessions (
    key_sha256        TEXT PRIMARY KEY,
    jsessionid_sha256 TEXT NOT NULL,
    user_id           INTEGER NOT NULL,
    created           INTEGER NOT NULL,
    last_used         INTEGER NOT NULL
);
CREATE INDEX login_sessions_user ON login_sessions(user_id);
CREATE INDEX login_sessions_last_used ON login_sessions(last_used);

-- The component itself, so a replica with another data directory can write its own
-- `plugins/<sha256>.wasm` (checked against `sha256`). NULL: installed before this column, only
-- in the data directory of the replica that installed it (filled in by that replica at start).
ALTER TABLE provider_plugins ADD COLUMN component BLOB NULL;

-- Which installed components each replica has loaded: a zone switches to one only when every
-- live replica reports it here.
CREATE TABLE replica_plugins (
    replica_id INTEGER NOT NULL REFERENCES replicas(id) ON DELETE CASCADE,
    sha256     TEXT NOT NULL,
    loaded     INTEGER NOT NULL,
    PRIMARY KEY (replica_id, sha256)
);

-- Raised by every change to installed components and to which one serves a name: replicas
-- load new components and follow activations when it moves.
INSERT INTO change_epochs(name, epoch) VALUES ('plugins', 0);
CREATE TRIGGER provider_plugins_epoch_insert AFTER INSERT ON provider_plugins
BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE name = 'plugins'; END;
CREATE TRIGGER provider_plugins_epoch_update AFTER UPDATE ON provider_plugins
BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE name = 'plugins'; END;
CREATE TRIGGER provider_plugins_epoch_delete AFTER DELETE ON provider_plugins
BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE name = 'plugins'; END;
CREATE TRIGGER provider_plugin_active_epoch_insert AFTER INSERT ON provider_plugin_active
BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE name = 'plugins'; END;
CREATE TRIGGER provider_plugin_active_epoch_update AFTER UPDATE ON provider_plugin_active
BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE name = 'plugins'; END;
CREATE TRIGGER provider_plugin_active_epoch_delete AFTER DELETE ON provider_plugin_active
BEGIN UPDATE change_epochs SET epoch = epoch + 1 WHERE name = 'plugins'; END;
