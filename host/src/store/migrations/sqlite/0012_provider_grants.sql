-- Grants an admin gives one provider in one zone through updateBackupProviderGrants, for needs
-- that no setting covers: comma-separated `host[:port]`, URLs and `exec:HOST`, in normal form.
-- They add to the zone setting backup.framework.provider.grants; no row grants nothing.
CREATE TABLE provider_zone_grants (
    zone_id  INTEGER NOT NULL REFERENCES zones(id),
    provider TEXT NOT NULL,
    grants   TEXT NOT NULL,
    changed  INTEGER NOT NULL,
    PRIMARY KEY (zone_id, provider)
);
