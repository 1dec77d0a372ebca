//! KVM clusters and hosts (CloudStack's `addCluster`, `addHost`, ...): a zone with a KVM cluster
//! runs its instances on KVM hosts. A host has an address, a cluster, a state, SSH credentials
//! (the password sealed at rest, never listed) and a pinned host-key fingerprint; the SSH
//! transport refuses a host whose key is not pinned and shows the key's fingerprint.
//!
//! Placement follows CloudStack: a started instance goes to an `Up` host of the zone; a
//! restore runs on the instance's last host if it is up, else on an up host of its cluster,
//! else on any up KVM host of the zone.

use crate::store::db::{Connection, OptionalExtension, Row, params};

use crate::store::{OpError, OpResult, Secrets, new_uuid, now};

/// The hypervisor name of KVM clusters, hosts and instances.
pub const KVM: &str = "KVM";
/// SSH port of a host whose URL names none.
pub const DEFAULT_SSH_PORT: u16 = 22;
/// Longest password accepted (a login secret, not data).
const MAX_PASSWORD_LEN: usize = 1024;

/// A host's state, as CloudStack names it (`Maintenance` is CloudStack's resource state,
/// folded in here: a host in maintenance takes no instances and runs no restores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Up,
    Down,
    Disconnected,
    Maintenance,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "Up",
            HostState::Down => "Down",
            HostState::Disconnected => "Disconnected",
            HostState::Maintenance => "Maintenance",
        }
    }

    /// Case-insensitive parse of a state name.
    pub fn parse(s: &str) -> Option<HostState> {
        [
            HostState::Up,
            HostState::Down,
            HostState::Disconnected,
            HostState::Maintenance,
        ]
        .into_iter()
        .find(|state| state.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub zone_id: i64,
    pub zone_uuid: String,
    pub zone_name: String,
    pub hypervisor: String,
    pub created: i64,
}

/// A host as listed: everything but its credentials.
#[derive(Debug, Clone)]
pub struct Host {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub zone_id: i64,
    pub zone_uuid: String,
    pub zone_name: String,
    pub cluster_id: i64,
    pub cluster_uuid: String,
    pub cluster_name: String,
    pub hypervisor: String,
    pub address: String,
    pub ssh_port: u16,
    /// Pinned host-key fingerprints (`SHA256:...`); empty when none is pinned yet.
    pub host_keys: Vec<String>,
    pub state: HostState,
    pub created: i64,
}

/// How bnr logs on to a host: what a provider call that runs a command there is given.
/// The password is in plain text here, in memory only; its `Debug` hides it.
#[derive(Clone)]
pub struct HostLogin {
    pub host: Host,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for HostLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLogin")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

const CLUSTER_COLUMNS: &str =
    "c.id, c.uuid, c.name, c.zone_id, z.uuid, z.name, c.hypervisor, c.created";
const CLUSTER_FROM: &str = "clusters c JOIN zones z ON z.id = c.zone_id";

fn cluster_from_row(r: &Row<'_>) -> crate::store::db::Result<Cluster> {
    Ok(Cluster {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        zone_id: r.get(3)?,
        zone_uuid: r.get(4)?,
        zone_name: r.get(5)?,
        hypervisor: r.get(6)?,
        created: r.get(7)?,
    })
}

const HOST_COLUMNS: &str = "h.id, h.uuid, h.name, h.zone_id, z.uuid, z.name, h.cluster_id, c.uuid, \
     c.name, h.hypervisor, h.address, h.ssh_port, h.host_key, h.state, h.created";
const HOST_FROM: &str =
    "hosts h JOIN zones z ON z.id = h.zone_id JOIN clusters c ON c.id = h.cluster_id";

fn host_from_row(r: &Row<'_>) -> crate::store::db::Result<Host> {
    let keys: Option<String> = r.get(12)?;
    let state: String = r.get(13)?;
    Ok(Host {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        zone_id: r.get(3)?,
        zone_uuid: r.get(4)?,
        zone_name: r.get(5)?,
        cluster_id: r.get(6)?,
        cluster_uuid: r.get(7)?,
        cluster_name: r.get(8)?,
        hypervisor: r.get(9)?,
        address: r.get(10)?,
        ssh_port: r.get(11)?,
        host_keys: keys.as_deref().map(split_fingerprints).unwrap_or_default(),
        state: HostState::parse(&state).unwrap_or(HostState::Disconnected),
        created: r.get(14)?,
    })
}

fn split_fingerprints(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn check_text(what: &str, value: &str) -> OpResult<()> {
    if value.trim().is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
        return Err(OpError::InvalidParameter(format!(
            "{what} must be between 1 and 255 printable characters"
        )));
    }
    Ok(())
}

/// A cluster or host name: what NetWorker and the host scripts get as a client name, so it is
/// kept to letters, digits, `.`, `-` and `_`.
fn check_name(what: &str, name: &str) -> OpResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(OpError::InvalidParameter(format!(
            "{what} must be 1 to 255 letters, digits, '.', '-' or '_', not '{name}'"
        )))
    }
}

/// Pinned fingerprints as `ssh-keygen -lf` prints them: `SHA256:` and 43 base64 characters,
/// separated by commas or blanks.
pub fn parse_fingerprints(text: &str) -> OpResult<Vec<String>> {
    let keys = split_fingerprints(text);
    if keys.is_empty() || keys.len() > 8 {
        return Err(OpError::InvalidParameter(
            "hostkeyfingerprint must hold 1 to 8 fingerprints like SHA256:<43 base64 characters>"
                .into(),
        ));
    }
    for key in &keys {
        let ok = key.strip_prefix("SHA256:").is_some_and(|b64| {
            b64.len() == 43
                && b64
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        });
        if !ok {
            return Err(OpError::InvalidParameter(format!(
                "'{key}' is not a host-key fingerprint; give it as ssh-keygen -lf prints it \
                 (SHA256:<43 base64 characters>)"
            )));
        }
    }
    Ok(keys)
}

/// The address and SSH port a host URL names: `http://10.1.1.5` as CloudStack takes it, or
/// `10.1.1.5`, `kvm1.lan:2222`, `ssh://[fd00::5]:22`. A port, when given, is the SSH port.
pub fn parse_host_url(url: &str) -> OpResult<(String, u16)> {
    let bad = || {
        OpError::InvalidParameter(format!(
            "url must name a host, like http://10.1.1.5 or kvm1.lan:22, not '{url}'"
        ))
    };
    let rest = url.trim();
    let rest = match rest.split_once("://") {
        Some((scheme, rest)) if ["http", "https", "ssh"].contains(&scheme) => rest,
        Some(_) => return Err(bad()),
        None => rest,
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '@', '?', '#']) {
        return Err(bad());
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or_else(bad)?;
        match tail {
            "" => (host, None),
            tail => (host, Some(tail.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    if !valid_host {
        return Err(bad());
    }
    let port = match port {
        None => DEFAULT_SSH_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
    };
    Ok((host.to_ascii_lowercase(), port))
}

fn check_password(password: &str) -> OpResult<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN || password.contains('\0') {
        return Err(OpError::InvalidParameter(format!(
            "password must be 1 to {MAX_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

fn seal(secrets: &Secrets, password: &str) -> OpResult<String> {
    secrets
        .seal(password)
        .map_err(|e| OpError::Store(crate::store::StoreError::from(e)))
}

/// Adds a cluster to a zone. Only KVM clusters are managed by bnr.
pub fn add_cluster(
    conn: &Connection,
    zone_id: i64,
    name: &str,
    hypervisor: &str,
) -> OpResult<Cluster> {
    check_name("clustername", name)?;
    if !hypervisor.eq_ignore_ascii_case(KVM) {
        return Err(OpError::InvalidParameter(format!(
            "Unable to add a cluster of hypervisor type {hypervisor}: bnr manages KVM clusters \
             (VMware zones are added with addVmwareDc)"
        )));
    }
    if super::vmware::of_zone(conn, zone_id)?.is_some() {
        return Err(OpError::InvalidState(
            "The zone is associated with a VMware datacenter; it cannot hold KVM clusters".into(),
        ));
    }
    let taken: bool = conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM clusters WHERE zone_id = ?1 AND name = ?2 AND removed IS NULL)",
        )?
        .query_row(params![zone_id, name], |r| r.get(0))?;
    if taken {
        return Err(OpError::InvalidState(format!(
            "A cluster with name {name} already exists in the zone"
        )));
    }
    let inserted_id = conn.insert(
        "INSERT INTO clusters(uuid, zone_id, name, hypervisor, created) VALUES (?1, ?2, ?3, ?4, ?5)", params![new_uuid(), zone_id, name, KVM, now()])?;
    get_cluster(conn, inserted_id)
}

pub fn get_cluster(conn: &Connection, id: i64) -> OpResult<Cluster> {
    conn.prepare_cached(&format!(
        "SELECT {CLUSTER_COLUMNS} FROM {CLUSTER_FROM} WHERE c.id = ?1 AND c.removed IS NULL"
    ))?
    .query_row([id], cluster_from_row)
    .optional()?
    .ok_or_else(|| OpError::InvalidParameter(format!("Unable to find cluster with id {id}")))
}

#[derive(Debug, Clone, Default)]
pub struct ClusterFilter {
    pub id: Option<i64>,
    pub zone_id: Option<i64>,
    pub name: Option<String>,
}

pub fn list_clusters(conn: &Connection, filter: &ClusterFilter) -> OpResult<Vec<Cluster>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {CLUSTER_COLUMNS} FROM {CLUSTER_FROM}
         WHERE c.removed IS NULL AND (CAST(?1 AS BIGINT) IS NULL OR c.id = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR c.zone_id = ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR c.name = ?3)
         ORDER BY c.id"
    ))?;
    let rows = st
        .query_map(
            params![filter.id, filter.zone_id, filter.name],
            cluster_from_row,
        )?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

/// What `addHost` records.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub zone_id: i64,
    pub cluster_id: i64,
    pub url: String,
    pub name: Option<String>,
    pub username: String,
    pub password: String,
    pub host_key: Option<String>,
}

pub fn add_host(conn: &Connection, secrets: &Secrets, req: &NewHost) -> OpResult<Host> {
    let cluster = get_cluster(conn, req.cluster_id)?;
    if cluster.zone_id != req.zone_id {
        return Err(OpError::InvalidParameter(
            "The cluster is not in the given zone".into(),
        ));
    }
    let (address, port) = parse_host_url(&req.url)?;
    let name = req.name.clone().unwrap_or_else(|| address.clone());
    check_name("name", &name)?;
    check_text("username", &req.username)?;
    check_password(&req.password)?;
    let host_key = match &req.host_key {
        Some(text) => Some(parse_fingerprints(text)?.join(",")),
        None => None,
    };
    if host_by_address(conn, &address)?.is_some() {
        return Err(OpError::InvalidState(format!(
            "A host with address {address} already exists"
        )));
    }
    let inserted_id = conn.insert(
        "INSERT INTO hosts(uuid, name, zone_id, cluster_id, hypervisor, address, ssh_port, username,
                           password, host_key, state, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'Up', ?11)", params![
        new_uuid(),
        name,
        req.zone_id,
        cluster.id,
        KVM,
        address,
        port,
        req.username.trim(),
        seal(secrets, &req.password)?,
        host_key,
        now()
    ])?;
    get_host(conn, inserted_id)
}

pub fn get_host(conn: &Connection, id: i64) -> OpResult<Host> {
    conn.prepare_cached(&format!(
        "SELECT {HOST_COLUMNS} FROM {HOST_FROM} WHERE h.id = ?1 AND h.removed IS NULL"
    ))?
    .query_row([id], host_from_row)
    .optional()?
    .ok_or_else(|| OpError::InvalidParameter(format!("Unable to find host with id {id}")))
}

/// The live host with this address (lower-case), if any.
pub fn host_by_address(conn: &Connection, address: &str) -> OpResult<Option<Host>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {HOST_COLUMNS} FROM {HOST_FROM} WHERE h.address = ?1 AND h.removed IS NULL"
        ))?
        .query_row([address.to_ascii_lowercase()], host_from_row)
        .optional()?)
}

#[derive(Debug, Clone, Default)]
pub struct HostFilter {
    pub id: Option<i64>,
    pub zone_id: Option<i64>,
    pub cluster_id: Option<i64>,
    pub name: Option<String>,
    pub state: Option<HostState>,
}

pub fn list_hosts(conn: &Connection, filter: &HostFilter) -> OpResult<Vec<Host>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {HOST_COLUMNS} FROM {HOST_FROM}
         WHERE h.removed IS NULL AND (CAST(?1 AS BIGINT) IS NULL OR h.id = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR h.zone_id = ?2)
           AND (CAST(?3 AS BIGINT) IS NULL OR h.cluster_id = ?3) AND (CAST(?4 AS TEXT) IS NULL OR h.name = ?4)
           AND (CAST(?5 AS TEXT) IS NULL OR h.state = ?5)
         ORDER BY h.id"
    ))?;
    let rows = st
        .query_map(
            params![
                filter.id,
                filter.zone_id,
                filter.cluster_id,
                filter.name,
                filter.state.map(HostState::as_str)
            ],
            host_from_row,
        )?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

/// What `updateHost` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct HostUpdate {
    pub name: Option<String>,
    pub state: Option<HostState>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub host_key: Option<String>,
}

pub fn update_host(
    conn: &Connection,
    secrets: &Secrets,
    id: i64,
    update: &HostUpdate,
) -> OpResult<Host> {
    let host = get_host(conn, id)?;
    if let Some(name) = &update.name {
        check_name("name", name)?;
        conn.prepare_cached("UPDATE hosts SET name = ?1 WHERE id = ?2")?
            .execute(params![name, host.id])?;
    }
    if let Some(state) = update.state {
        conn.prepare_cached("UPDATE hosts SET state = ?1 WHERE id = ?2")?
            .execute(params![state.as_str(), host.id])?;
    }
    if let Some(username) = &update.username {
        check_text("username", username)?;
        conn.prepare_cached("UPDATE hosts SET username = ?1 WHERE id = ?2")?
            .execute(params![username.trim(), host.id])?;
    }
    if let Some(password) = &update.password {
        check_password(password)?;
        conn.prepare_cached("UPDATE hosts SET password = ?1 WHERE id = ?2")?
            .execute(params![seal(secrets, password)?, host.id])?;
    }
    if let Some(keys) = &update.host_key {
        let keys = parse_fingerprints(keys)?;
        conn.prepare_cached("UPDATE hosts SET host_key = ?1 WHERE id = ?2")?
            .execute(params![keys.join(","), host.id])?;
    }
    get_host(conn, host.id)
}

/// Removes a host. Refused while an instance runs on it.
pub fn delete_host(conn: &Connection, id: i64) -> OpResult<Host> {
    let host = get_host(conn, id)?;
    let running: i64 = conn
        .prepare_cached("SELECT count(*) FROM vms WHERE host_id = ?1 AND removed IS NULL")?
        .query_row([host.id], |r| r.get(0))?;
    if running > 0 {
        return Err(OpError::InvalidState(format!(
            "Host {} has {running} instances running on it; stop or move them first",
            host.name
        )));
    }
    conn.prepare_cached("UPDATE hosts SET removed = ?1 WHERE id = ?2")?
        .execute(params![now(), host.id])?;
    Ok(host)
}

/// Whether instances of the zone run on KVM hosts (the zone has a KVM cluster).
pub fn is_kvm_zone(conn: &Connection, zone_id: i64) -> OpResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM clusters WHERE zone_id = ?1 AND hypervisor = ?2 AND removed IS NULL)",
        )?
        .query_row(params![zone_id, KVM], |r| r.get(0))?)
}

/// The up host of the zone with the fewest instances on it (lowest id on a tie), for a new or
/// starting instance.
pub fn place(conn: &Connection, zone_id: i64) -> OpResult<Option<Host>> {
    let id: Option<i64> = conn
        .prepare_cached(
            "SELECT h.id FROM hosts h
             WHERE h.zone_id = ?1 AND h.state = 'Up' AND h.removed IS NULL
             ORDER BY (SELECT count(*) FROM vms v WHERE v.host_id = h.id AND v.removed IS NULL), h.id
             LIMIT 1",
        )?
        .query_row([zone_id], |r| r.get(0))
        .optional()?;
    id.map(|id| get_host(conn, id)).transpose()
}

/// Puts an instance on `host`: it becomes its current and last host.
pub fn assign_vm(conn: &Connection, vm_id: i64, host: &Host) -> OpResult<()> {
    conn.prepare_cached(
        "UPDATE vms SET host_id = ?1, last_host_id = ?1, host_address = ?2 WHERE id = ?3",
    )?
    .execute(params![host.id, host.address, vm_id])?;
    Ok(())
}

/// Takes an instance off its host (it stopped); the last host stays.
pub fn release_vm(conn: &Connection, vm_id: i64) -> OpResult<()> {
    conn.prepare_cached("UPDATE vms SET host_id = NULL WHERE id = ?1")?
        .execute([vm_id])?;
    Ok(())
}

/// The host a restore of the instance runs on, as CloudStack picks it: the instance's last host
/// if it is up, else an up host of that host's cluster, else an up KVM host of the zone.
pub fn restore_host(conn: &Connection, vm: &super::Vm) -> OpResult<Host> {
    let last = match vm.last_host_id {
        Some(id) => conn
            .prepare_cached(&format!(
                "SELECT {HOST_COLUMNS} FROM {HOST_FROM} WHERE h.id = ?1"
            ))?
            .query_row([id], host_from_row)
            .optional()?,
        None => None,
    };
    if let Some(last) = &last
        && last.state == HostState::Up
        && is_live(conn, last.id)?
    {
        return Ok(last.clone());
    }
    let up = |cluster_id: Option<i64>| -> OpResult<Option<Host>> {
        let id: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM hosts WHERE zone_id = ?1 AND hypervisor = ?2 AND state = 'Up'
                   AND removed IS NULL AND (CAST(?3 AS BIGINT) IS NULL OR cluster_id = ?3)
                 ORDER BY id LIMIT 1",
            )?
            .query_row(params![vm.zone_id, KVM, cluster_id], |r| r.get(0))
            .optional()?;
        id.map(|id| get_host(conn, id)).transpose()
    };
    if let Some(last) = &last
        && let Some(host) = up(Some(last.cluster_id))?
    {
        return Ok(host);
    }
    up(None)?.ok_or_else(|| {
        OpError::InvalidState(format!(
            "No KVM host is Up in zone {} to restore instance {} on; bring a host of the zone \
             Up (updateHost state=Up) and retry",
            vm.zone_name, vm.name
        ))
    })
}

fn is_live(conn: &Connection, host_id: i64) -> OpResult<bool> {
    Ok(conn
        .prepare_cached("SELECT removed IS NULL FROM hosts WHERE id = ?1")?
        .query_row([host_id], |r| r.get(0))?)
}

/// The live host at `address` with its credentials opened, for a provider call that runs a
/// command there.
pub fn login_by_address(
    conn: &Connection,
    secrets: &Secrets,
    address: &str,
) -> OpResult<Option<HostLogin>> {
    let Some(host) = host_by_address(conn, address)? else {
        return Ok(None);
    };
    let (username, sealed): (String, String) = conn
        .prepare_cached("SELECT username, password FROM hosts WHERE id = ?1")?
        .query_row([host.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let password = secrets
        .open(&sealed)
        .map_err(|e| OpError::Store(crate::store::StoreError::from(e)))?;
    Ok(Some(HostLogin {
        host,
        username,
        password,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_urls_name_an_address_and_an_optional_ssh_port() {
        assert_eq!(
            parse_host_url("http://10.1.1.5").unwrap(),
            ("10.1.1.5".into(), 22)
        );
        assert_eq!(
            parse_host_url("KVM1.lan:2222").unwrap(),
            ("kvm1.lan".into(), 2222)
        );
        assert_eq!(
            parse_host_url("ssh://[fd00::5]:22/").unwrap(),
            ("fd00::5".into(), 22)
        );
        for bad in [
            "",
            "ftp://h",
            "h:0",
            "h:99999",
            "user@h",
            "h/path",
            "h;rm -rf /",
        ] {
            assert!(parse_host_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_must_look_like_ssh_keygen_output() {
        let ok = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
        assert_eq!(parse_fingerprints(ok).unwrap(), vec![ok.to_string()]);
        assert_eq!(parse_fingerprints(&format!("{ok}, {ok}")).unwrap().len(), 2);
        for bad in [
            "",
            "MD5:aa",
            "SHA256:short",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
        ] {
            assert!(parse_fingerprints(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_states_parse_case_insensitively() {
        assert_eq!(HostState::parse("up"), Some(HostState::Up));
        assert_eq!(
            HostState::parse("Maintenance"),
            Some(HostState::Maintenance)
        );
        assert_eq!(HostState::parse("Alert"), None);
    }
}
