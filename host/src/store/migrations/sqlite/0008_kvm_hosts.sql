-- KVM clusters and hosts (CloudStack's addCluster/addHost). A zone with a KVM cluster runs its
-- instances on KVM hosts; an instance keeps the host it runs on and the host it last ran on.
-- A host's SSH password is stored sealed (see store/secrets.rs) and never listed; the pinned
-- host-key fingerprint (`SHA256:...`) is what the SSH transport accepts from it.
CREATE TABLE clusters (
    id         INTEGER PRIMARY KEY,
    uuid       TEXT NOT NULL UNIQUE,
    zone_id    INTEGER NOT NULL REFERENCES zones(id),
    name       TEXT NOT NULL,
    hypervisor TEXT NOT NULL,
    created    INTEGER NOT NULL,
    removed    INTEGER NULL
);
CREATE UNIQUE INDEX clusters_zone_name ON clusters(zone_id, name) WHERE removed IS NULL;

CREATE TABLE hosts (
    id         INTEGER PRIMARY KEY,
    uuid       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    zone_id    INTEGER NOT NULL REFERENCES zones(id),
    cluster_id INTEGER NOT NULL REFERENCES clusters(id),
    hypervisor TEXT NOT NULL,
    address    TEXT NOT NULL,
    ssh_port   INTEGER NOT NULL CHECK (ssh_port BETWEEN 1 AND 65535),
    username   TEXT NOT NULL,
    password   TEXT NOT NULL,      -- sealed
    host_key   TEXT NULL,          -- pinned fingerprints, `SHA256:...`
    state      TEXT NOT NULL CHECK (state IN ('Up', 'Down', 'Disconnected', 'Maintenance')),
    created    INTEGER NOT NULL,
    removed    INTEGER NULL
);
CREATE UNIQUE INDEX hosts_address ON hosts(address) WHERE removed IS NULL;
CREATE INDEX hosts_cluster ON hosts(cluster_id, id);
CREATE INDEX hosts_zone ON hosts(zone_id, id);

ALTER TABLE vms ADD COLUMN host_id INTEGER NULL REFERENCES hosts(id);
ALTER TABLE vms ADD COLUMN last_host_id INTEGER NULL REFERENCES hosts(id);
