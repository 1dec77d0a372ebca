-- Provider components installed through the API (issue 10). The component itself is the file
-- `plugins/<sha256>.wasm` of the data directory; this row is what it was installed as.
CREATE TABLE provider_plugins (
    id          INTEGER PRIMARY KEY,
    uuid        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    wit_version TEXT NOT NULL,
    sha256      TEXT NOT NULL UNIQUE,
    size        INTEGER NOT NULL,
    signer      TEXT NULL,                    -- name of the trusted key; NULL: installed unsigned
    created     INTEGER NOT NULL,
    UNIQUE (name, version)
);

-- Which component serves new calls for a provider name (bundled, directory or installed), and
-- what a rollback returns to. No row: the bundled component, else the directory's.
CREATE TABLE provider_plugin_active (
    name            TEXT PRIMARY KEY,
    sha256          TEXT NOT NULL,
    previous_sha256 TEXT NULL,
    changed         INTEGER NOT NULL
);

-- Public keys whose signatures on uploaded components are accepted.
CREATE TABLE provider_signing_keys (
    id         INTEGER PRIMARY KEY,
    uuid       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL UNIQUE,          -- base64 of the 32-byte ed25519 key
    created    INTEGER NOT NULL
);

-- The exact component a pending operation was started on: it is finished on that one.
ALTER TABLE provider_operations ADD COLUMN provider_version TEXT NULL;
ALTER TABLE provider_operations ADD COLUMN provider_sha256 TEXT NULL;
