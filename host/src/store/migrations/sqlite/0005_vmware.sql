-- VMware datacenters (CloudStack's addVmwareDc): a zone with one runs its instances on VMware.
-- `vcenter` is the vCenter host name as registered; backup providers such as Veeam match
-- their hierarchy root against it. The vCenter password is accepted by the API and not kept.
CREATE TABLE vmware_datacenters (
    id       INTEGER PRIMARY KEY,
    uuid     TEXT NOT NULL UNIQUE,
    zone_id  INTEGER NOT NULL UNIQUE REFERENCES zones(id),
    name     TEXT NOT NULL,
    vcenter  TEXT NOT NULL,
    username TEXT NOT NULL,
    created  INTEGER NOT NULL
);
