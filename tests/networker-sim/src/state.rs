//! The shared state of the NetWorker server and the KVM hosts: protection policies, pools,
//! clients, save sets, each host's domains and files, the injected faults and the counters.
//!
//! Two clocks exist on purpose: the NetWorker server's (`server_now`) and each host's
//! (`host_now`). Save sets carry the client's save time (`CLIENT_SAVETIME`, as NetWorker does),
//! so a host whose clock is skewed produces save times that disagree with the server's clock.

use std::collections::BTreeMap;

use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Span, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

/// The NetWorker server's identity and accounts.
#[derive(Clone, Debug)]
pub struct Server {
    /// Host name `save`/`recover` must be given with `-s` (or one of `aliases`).
    pub name: String,
    pub aliases: Vec<String>,
    pub username: String,
    pub password: String,
    /// The server's UTC offset, used to render times and to read times given without offset.
    pub tz_offset_secs: i32,
    /// Added to the real clock to give the server's clock.
    pub clock_skew_secs: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    #[serde(default)]
    pub comment: String,
    /// NetWorker's period spelling, e.g. `1 Days`, `7 Days`, `1 Months`.
    pub protection_period: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The destination pool of the policy's backup action.
    #[serde(default = "default_pool")]
    pub pool: String,
    #[serde(default)]
    pub resource_id: String,
}

fn yes() -> bool {
    true
}
fn default_pool() -> String {
    "Default".into()
}

#[derive(Clone, Debug)]
pub struct Client {
    pub hostname: String,
    pub resource_id: String,
    pub client_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SavedFile {
    pub path: String,
    pub size: u64,
}

#[derive(Clone, Debug)]
pub struct SaveSet {
    pub id: String,
    pub ssid: u32,
    /// The save set name (`save -N`), the domain name for CloudStack's script.
    pub name: String,
    /// The client the save set belongs to (`save -c`).
    pub client: String,
    pub client_id: String,
    pub pool: String,
    /// The host that actually ran `save`.
    pub actual_host: String,
    /// The client's clock when the save started.
    pub save_time: Timestamp,
    /// The server's clock when the save set completes; before it the save set is in progress.
    pub completes_at: Timestamp,
    pub duration_secs: i64,
    pub retention: Timestamp,
    pub files: Vec<SavedFile>,
    pub volume_id: u32,
}

impl SaveSet {
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
    pub fn expired(&self, server_now: Timestamp) -> bool {
        server_now >= self.retention
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Disk {
    /// libvirt target, e.g. `vda`.
    pub target: String,
    /// Source file of the disk.
    pub path: String,
    #[serde(default = "default_disk_size")]
    pub size: u64,
    /// `disk`, `cdrom` or `floppy`; only file-backed `disk`s are saved.
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_disk_size() -> u64 {
    1 << 30
}
fn default_device() -> String {
    "disk".into()
}

/// A running libvirt domain on a host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Domain {
    pub name: String,
    pub uuid: String,
    #[serde(default)]
    pub disks: Vec<Disk>,
}

impl Domain {
    /// A domain with one root disk at `/var/lib/libvirt/images/<uuid>`, 1 GiB.
    pub fn with_root_disk(name: &str, uuid: &str) -> Domain {
        Domain {
            name: name.into(),
            uuid: uuid.into(),
            disks: vec![Disk {
                target: "vda".into(),
                path: format!("/var/lib/libvirt/images/{uuid}"),
                size: default_disk_size(),
                device: default_device(),
            }],
        }
    }
}

/// Which save-time line the backup script's output carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavetimeLine {
    /// `save -LL` reports `completed savetime=<epoch>` and the script echoes `savetime=<epoch>`.
    #[default]
    Completed,
    /// Only the script's own `savetime=<epoch>`.
    Bare,
    /// No save time at all (the save succeeded).
    None,
}

/// Faults of one KVM host, all persistent until changed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostFaults {
    /// Make `nsrkvmbackup.sh` end with this exit code (1–5, 7, 8, 254, 255), at the step of the
    /// real script that ends with it.
    pub backup_exit: Option<u32>,
    /// Make `nsrkvmrestore.sh` end with this exit code (1–6, 250, 254, 255).
    pub restore_exit: Option<u32>,
    /// `save` fails: the script still exits 0, without a save time.
    pub save_fails: bool,
    /// Scripts never finish.
    pub hang: bool,
    /// The host clock minus the real clock, in seconds.
    pub clock_skew_secs: i64,
    pub savetime_line: SavetimeLine,
    /// How long a backup runs; the save set is in progress meanwhile.
    pub backup_duration_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostFile {
    pub size: u64,
    /// The save set id the file was last recovered from.
    pub recovered_from: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct HostCounters {
    pub ssh_sessions: u64,
    pub ssh_live: u64,
    pub ssh_auth_failures: u64,
    pub commands: u64,
    pub backups: u64,
    pub restores: u64,
}

#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub cluster: String,
    pub domains: Vec<Domain>,
    /// Accept any name/uuid pair as a running domain with one root disk.
    pub any_domain: bool,
    pub files: BTreeMap<String, HostFile>,
    pub faults: HostFaults,
    pub counters: HostCounters,
}

impl Host {
    pub fn domain(&self, name: &str, uuid: &str) -> Option<Domain> {
        match self.domains.iter().find(|d| d.name == name) {
            Some(d) if d.uuid == uuid => Some(d.clone()),
            Some(_) => None,
            None if self.any_domain && !self.domains.iter().any(|d| d.uuid == uuid) => {
                Some(Domain::with_root_disk(name, uuid))
            }
            None => None,
        }
    }
}

/// One REST fault rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestFault {
    /// `any`, or an endpoint as counted: `GET /`, `GET /global/backups`,
    /// `DELETE /global/backups/{id}`, `GET /global/protectionpolicies`, ...
    #[serde(default = "any")]
    pub endpoint: String,
    /// Answer with this status (401, 500, 503, ...) instead of the real answer.
    #[serde(default)]
    pub status: Option<u16>,
    /// Wait this long before answering (a slow server; clients time out).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Answer a list with no elements.
    #[serde(default)]
    pub empty: bool,
    /// Apply to this many matching requests, then disappear; forever when absent.
    #[serde(default)]
    pub times: Option<u32>,
}

fn any() -> String {
    "any".into()
}

/// What the next backup leaves on the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextBackup {
    #[default]
    Normal,
    /// The script reports a save time but no save set is recorded.
    NoSaveSet,
    /// Two save sets with the same name and save time are recorded.
    TwoSaveSets,
}

/// How the protection-policy query behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyQuery {
    #[default]
    Normal,
    /// Always an empty list.
    Empty,
    /// `q=` is ignored: every policy is listed.
    IgnoreQuery,
    /// An unquoted value starting with `-` is read as a negation and matches nothing.
    LeadingDashNegates,
}

/// How an empty list is rendered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyList {
    /// `{"count":0}`
    #[default]
    CountOnly,
    /// `{"backups":[],"count":0}`
    EmptyArray,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    pub rest: Vec<RestFault>,
    pub next_backup: NextBackup,
    pub policy_query: PolicyQuery,
    pub empty_list: EmptyList,
    /// Expired save sets vanish at once instead of staying listed until a purge.
    pub purge_on_expiry: bool,
    /// Save sets render their times in a format clients cannot read as ISO 8601.
    pub malformed_dates: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// Requests per endpoint, e.g. `GET /global/backups`.
    pub requests: BTreeMap<String, u64>,
    pub unauthorized: u64,
    pub ssh_sessions: u64,
    pub ssh_live: u64,
    pub ssh_auth_failures: u64,
    pub ssh_commands: u64,
}

pub struct State {
    pub server: Server,
    pub policies: Vec<Policy>,
    pub pools: Vec<String>,
    pub clients: Vec<Client>,
    pub save_sets: Vec<SaveSet>,
    pub hosts: BTreeMap<String, Host>,
    pub faults: Faults,
    pub counters: Counters,
    /// Added to every clock (server and hosts): lets tests move time forward without waiting.
    pub advance_secs: i64,
    seed: [u8; 8],
    serial: u64,
    server_id: String,
}

impl State {
    pub fn new(server: Server) -> State {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut state = State {
            server,
            policies: Vec::new(),
            pools: vec!["Default".into(), "Default Clone".into()],
            clients: Vec::new(),
            save_sets: Vec::new(),
            hosts: BTreeMap::new(),
            faults: Faults::default(),
            counters: Counters::default(),
            advance_secs: 0,
            seed: (nanos as u64).to_le_bytes(),
            serial: 0,
            server_id: String::new(),
        };
        state.server_id = state.hex8();
        let name = state.server.name.clone();
        state.add_client(&name);
        for (name, comment, period) in [
            ("CSBRONZE", "-CSBKP-", "1 Days"),
            ("CSSILVER", "-CSBKP- silver tier", "7 Days"),
            ("CSGOLD", "-CSBKP-", "1 Months"),
            (
                "Server Protection",
                "Default policy for the NetWorker server",
                "1 Months",
            ),
            ("Platinum-CSBKP-", "-CSBKP-", "1 Years"),
        ] {
            state.add_policy(Policy {
                name: name.into(),
                comment: comment.into(),
                protection_period: period.into(),
                enabled: true,
                pool: "Default".into(),
                resource_id: String::new(),
            });
        }
        state
    }

    /// Eight lowercase hex digits, unique within this state.
    pub fn hex8(&mut self) -> String {
        format!("{:08x}", self.next_u32())
    }

    fn next_u32(&mut self) -> u32 {
        self.serial += 1;
        let digest = sha2::Sha256::new()
            .chain_update(self.seed)
            .chain_update(self.serial.to_le_bytes())
            .finalize();
        u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    /// NetWorker's dotted resource id: sixteen byte values.
    fn resource_id(&mut self) -> String {
        let a = self.next_u32().to_be_bytes();
        let b = self.next_u32().to_be_bytes();
        let seq = self.serial as u8;
        format!(
            "{}.0.{}.{}.0.0.0.0.{}.{}.{}.{}.127.0.0.1",
            40 + (seq % 60),
            a[0],
            a[1],
            b[0],
            b[1],
            b[2],
            b[3]
        )
    }

    pub fn add_policy(&mut self, mut policy: Policy) {
        if policy.resource_id.is_empty() {
            policy.resource_id = self.resource_id();
        }
        self.policies.retain(|p| p.name != policy.name);
        self.policies.push(policy);
    }

    /// Registers a NetWorker client (idempotent).
    pub fn add_client(&mut self, hostname: &str) {
        if self.client(hostname).is_some() {
            return;
        }
        let resource_id = self.resource_id();
        let client_id = format!(
            "{}-{:08x}-{}-{}-{}-{}",
            self.hex8(),
            self.clients.len() + 1,
            self.hex8(),
            self.hex8(),
            self.hex8(),
            self.server_id
        );
        self.clients.push(Client {
            hostname: hostname.into(),
            resource_id,
            client_id,
        });
    }

    pub fn client(&self, hostname: &str) -> Option<&Client> {
        self.clients
            .iter()
            .find(|c| c.hostname.eq_ignore_ascii_case(hostname))
    }

    /// Registers a KVM host, its host client and its cluster client.
    pub fn add_host(&mut self, name: &str, cluster: &str, domains: Vec<Domain>, any_domain: bool) {
        self.add_client(name);
        self.add_client(cluster);
        let host = self.hosts.entry(name.into()).or_insert_with(|| Host {
            name: name.into(),
            cluster: cluster.into(),
            domains: Vec::new(),
            any_domain,
            files: BTreeMap::new(),
            faults: HostFaults::default(),
            counters: HostCounters::default(),
        });
        host.cluster = cluster.into();
        host.any_domain = any_domain;
        for domain in domains {
            add_domain(host, domain);
        }
    }

    pub fn server_now(&self) -> Timestamp {
        skewed(self.advance_secs + self.server.clock_skew_secs)
    }

    pub fn host_now(&self, host: &str) -> Timestamp {
        skewed(self.advance_secs + self.hosts.get(host).map_or(0, |h| h.faults.clock_skew_secs))
    }

    pub fn tz(&self) -> TimeZone {
        TimeZone::fixed(Offset::from_seconds(self.server.tz_offset_secs).unwrap_or(Offset::UTC))
    }

    /// A time as NetWorker renders it: `2022-07-12T05:02:03+03:00` in the server's zone.
    pub fn render_time(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    pub fn is_server_name(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(&self.server.name)
            || self
                .server
                .aliases
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
    }

    /// Removes the save sets whose retention has passed (NetWorker's `nsrim` recycling them).
    pub fn purge_expired(&mut self) -> usize {
        let now = self.server_now();
        let before = self.save_sets.len();
        self.save_sets.retain(|s| !s.expired(now));
        before - self.save_sets.len()
    }

    /// Records a save set as `save` does; returns its index.
    #[allow(clippy::too_many_arguments)]
    pub fn record_save_set(
        &mut self,
        name: &str,
        client: &str,
        pool: &str,
        actual_host: &str,
        save_time: Timestamp,
        retention: Timestamp,
        duration_ms: u64,
        files: Vec<SavedFile>,
    ) -> usize {
        let client_id = self
            .client(client)
            .map(|c| c.client_id.clone())
            .unwrap_or_default();
        let epoch = save_time.as_second() as u32;
        // NetWorker's ssid shares the save time's low 24 bits; the high byte keeps it unique.
        // Past 255 save sets with the same save time, any unused value will do.
        let start = self.next_u32() >> 24;
        let taken = |ssid: u32| self.save_sets.iter().any(|s| s.ssid == ssid);
        let shared = (0..255u32)
            .map(|n| (((start + n) % 255 + 1) << 24) | (epoch & 0x00ff_ffff))
            .find(|candidate| !taken(*candidate));
        let ssid = match shared {
            Some(ssid) => ssid,
            None => loop {
                let candidate = self.next_u32().max(1);
                if !self.save_sets.iter().any(|s| s.ssid == candidate) {
                    break candidate;
                }
            },
        };
        let id = format!(
            "{}-{:08x}-{:08x}-{:08x}-{}-{}",
            self.hex8(),
            self.save_sets.len() + 6,
            ssid,
            epoch,
            self.hex8(),
            self.server_id
        );
        let volume_id = 12_000_000 + (self.next_u32() % 1_000_000);
        let duration = SignedDuration::from_millis(duration_ms as i64);
        self.save_sets.push(SaveSet {
            id,
            ssid,
            name: name.into(),
            client: client.into(),
            client_id,
            pool: pool.into(),
            actual_host: actual_host.into(),
            save_time,
            completes_at: self.server_now().checked_add(duration).unwrap_or(save_time),
            duration_secs: (duration_ms as i64 + 999) / 1000,
            retention,
            files,
            volume_id,
        });
        self.save_sets.len() - 1
    }

    /// The save sets the server lists now.
    pub fn visible_save_sets(&self) -> impl Iterator<Item = &SaveSet> {
        let now = self.server_now();
        let hide_expired = self.faults.purge_on_expiry;
        self.save_sets
            .iter()
            .filter(move |s| !(hide_expired && s.expired(now)))
    }

    pub fn save_set_json(&self, s: &SaveSet, base: &str) -> Value {
        let now = self.server_now();
        let time = |t: Timestamp| {
            if self.faults.malformed_dates {
                t.to_zoned(self.tz())
                    .strftime("%a %b %e %H:%M:%S %Y")
                    .to_string()
            } else {
                self.render_time(t)
            }
        };
        let epoch = s.save_time.as_second().to_string();
        let status = if s.expired(now) {
            "Recyclable"
        } else if now < s.completes_at {
            "InProgress"
        } else {
            "Browsable"
        };
        let mut v = json!({
            "attributes": [
                {"key": "*ACTUAL_HOST", "values": [s.actual_host]},
                {"key": "*backup start time", "values": [epoch]},
                {"key": "saveset features", "values": ["CLIENT_SAVETIME"]},
            ],
            "browseTime": time(s.retention),
            "clientHostname": s.client,
            "clientId": s.client_id,
            "creationTime": time(s.save_time),
            "fileCount": s.files.len(),
            "id": s.id,
            "instances": [{
                "clone": false,
                "id": epoch,
                "status": status,
                "volumeIds": [s.volume_id.to_string()],
            }],
            "level": "Manual",
            "links": [{"href": format!("{base}/global/backups/{}", s.id), "rel": "item"}],
            "name": s.name,
            "retentionTime": time(s.retention),
            "saveTime": time(s.save_time),
            "shortId": s.ssid.to_string(),
            "size": {"unit": "Byte", "value": s.size()},
            "type": "File",
        });
        if now >= s.completes_at {
            let done = s
                .save_time
                .checked_add(SignedDuration::from_secs(s.duration_secs))
                .unwrap_or(s.save_time);
            v["completionTime"] = json!(time(done));
        }
        v
    }

    pub fn policy_json(&self, p: &Policy, base: &str) -> Value {
        json!({
            "comment": p.comment,
            "links": [{"href": format!("{base}/global/protectionpolicies/{}", p.name), "rel": "item"}],
            "name": p.name,
            "policyProtectionEnable": p.enabled,
            "policyProtectionPeriod": p.protection_period,
            "resourceId": {"id": p.resource_id, "sequence": 15},
            "summaryNotification": {"command": "nsrlog -f policy_notifications.log", "executeOn": "Completion"},
            "workflows": [{
                "name": format!("{} workflow", p.name),
                "comment": "",
                "enabled": p.enabled,
                "actions": [{
                    "name": "backup",
                    "actionType": "Backup",
                    "enabled": p.enabled,
                    "actionSpecificData": {"backup": {"backupSpecificData": {"traditional": {
                        "destinationPool": p.pool,
                        "forceBackupLevel": "",
                        "retentionPeriod": p.protection_period,
                    }}}},
                }, {
                    "name": "expire",
                    "actionType": "Expire",
                    "enabled": true,
                    "actionSpecificData": {"expire": {}},
                }],
            }],
        })
    }

    pub fn client_json(&self, c: &Client, base: &str) -> Value {
        json!({
            "aliases": [c.hostname],
            "backupType": "Filesystem",
            "clientId": c.client_id,
            "hostname": c.hostname,
            "links": [{"href": format!("{base}/global/clients/{}", c.resource_id), "rel": "item"}],
            "protectionGroups": [],
            "resourceId": {"id": c.resource_id, "sequence": 1},
            "saveSets": ["All"],
            "scheduledBackup": true,
        })
    }
}

pub fn add_domain(host: &mut Host, domain: Domain) {
    for disk in &domain.disks {
        host.files.entry(disk.path.clone()).or_insert(HostFile {
            size: disk.size,
            recovered_from: None,
        });
    }
    host.domains.retain(|d| d.name != domain.name);
    host.domains.push(domain);
}

fn skewed(secs: i64) -> Timestamp {
    Timestamp::now()
        .checked_add(SignedDuration::from_secs(secs))
        .unwrap_or_else(|_| Timestamp::now())
}

/// Reads a NetWorker retention/expiration period (`7 Days`, `1 Month`, `+2 weeks`, `1 Years`)
/// and adds it to `from` in the server's zone.
pub fn add_period(from: Timestamp, period: &str, tz: &TimeZone) -> Option<Timestamp> {
    let period = period.trim().trim_start_matches('+');
    let mut words = period.split_whitespace();
    let n: i64 = words.next()?.parse().ok()?;
    let unit = words.next()?.to_ascii_lowercase();
    if words.next().is_some() || !(1..=100_000).contains(&n) {
        return None;
    }
    let unit = unit.trim_end_matches('s');
    let span = match unit {
        "minute" => Span::new().try_minutes(n).ok()?,
        "hour" => Span::new().try_hours(n).ok()?,
        "day" => Span::new().try_days(n).ok()?,
        "week" => Span::new().try_weeks(n).ok()?,
        "month" => Span::new().try_months(n).ok()?,
        "year" => Span::new().try_years(n).ok()?,
        _ => return None,
    };
    from.to_zoned(tz.clone())
        .checked_add(span)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_sets_with_one_save_time_get_distinct_ssids() {
        let mut state = State::new(Server {
            name: "nw".into(),
            aliases: Vec::new(),
            username: "u".into(),
            password: "p".into(),
            tz_offset_secs: 0,
            clock_skew_secs: 0,
        });
        let t = Timestamp::from_second(1_657_591_323).unwrap();
        for _ in 0..300 {
            state.record_save_set("vm", "c", "Default", "h", t, t, 0, Vec::new());
        }
        let mut ssids: Vec<u32> = state.save_sets.iter().map(|s| s.ssid).collect();
        assert!(
            ssids[..255]
                .iter()
                .all(|s| s & 0xff_ffff == 1_657_591_323 & 0xff_ffff)
        );
        ssids.sort_unstable();
        ssids.dedup();
        assert_eq!(ssids.len(), 300);
    }

    #[test]
    fn periods_read_like_networker_spells_them() {
        let tz = TimeZone::fixed(Offset::from_seconds(3 * 3600).unwrap());
        let t: Timestamp = "2022-07-12T05:02:03+03:00".parse().unwrap();
        let day = add_period(t, "1 Days", &tz).unwrap();
        assert_eq!(day.as_second() - t.as_second(), 86_400);
        let week = add_period(t, "+2 weeks", &tz).unwrap();
        assert_eq!(week.as_second() - t.as_second(), 14 * 86_400);
        let month = add_period(t, "1 Month", &tz).unwrap();
        assert_eq!(
            month.to_zoned(tz.clone()).strftime("%F").to_string(),
            "2022-08-12"
        );
        assert!(add_period(t, "soon", &tz).is_none());
        assert!(add_period(t, "", &tz).is_none());
        assert!(add_period(t, "3 fortnights", &tz).is_none());
    }
}
