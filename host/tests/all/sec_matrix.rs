//! The access matrix: every registered command × every kind of caller, against resources of
//! one user account (alice, in domain d1). Each caller is either allowed or refused; a refused
//! call changes nothing in the store. A command registered without a row here fails the test.
//!
//! Each command gets a fresh server. Refused callers go first, each checked against a snapshot
//! of every table; then the allowed callers in order, the first of whom must succeed outright
//! (later ones find the state the first left and must only not be refused).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::bnr_support::*;
use crate::sched_support::exec;
use crate::support_api::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    /// alice herself: the user of the owning account.
    SameAccount,
    /// A domain admin of d1, alice's domain.
    DomainAdminSameDomain,
    RootAdmin,
    /// A domain admin of d2.
    DomainAdminOtherDomain,
    /// bob, a user of another account in d1.
    OtherAccount,
    /// A disabled user of alice's account.
    Disabled,
}

const CALLERS: [Caller; 6] = [
    Caller::Disabled,
    Caller::OtherAccount,
    Caller::DomainAdminOtherDomain,
    Caller::SameAccount,
    Caller::DomainAdminSameDomain,
    Caller::RootAdmin,
];

/// Who may act.
#[derive(Debug, Clone, Copy)]
enum Policy {
    /// The owner, its domain's admins and the root admin.
    Owner,
    /// Every enabled caller (catalog reads).
    Everyone,
    /// Domain admins of the domain concerned, and the root admin.
    Admins,
    /// The root admin only.
    Root,
    /// Everyone whose domain is the one concerned, and the root admin.
    InDomain,
}

impl Policy {
    fn allows(self, c: Caller) -> bool {
        use Caller::*;
        match self {
            Policy::Owner => matches!(c, SameAccount | DomainAdminSameDomain | RootAdmin),
            Policy::Everyone => c != Disabled,
            Policy::Admins => matches!(c, DomainAdminSameDomain | RootAdmin),
            Policy::Root => c == RootAdmin,
            Policy::InDomain => !matches!(c, DomainAdminOtherDomain | Disabled),
        }
    }
}

/// alice's resources (and a few others) a command is pointed at.
struct Fixture {
    d1: String,
    zone: String,
    service_offering: String,
    template: String,
    offering: String,
    /// An offering no backup uses (only for `deleteBackupOffering`).
    unused_offering: String,
    /// bob's running VM (another account of d1).
    bob_vm: String,
    /// Stopped, assigned to `offering`, with ROOT + DATADISK, one backup and a schedule.
    vm: String,
    /// Running, not assigned.
    running: String,
    /// Destroyed (recoverable).
    destroyed: String,
    backup: String,
    backup_data_volume: String,
    schedule: String,
    /// Detached DATADISK.
    volume: String,
    /// Attached DATADISK of `running`.
    attached: String,
    job: String,
    alice_user: String,
    /// An account of d1 that owns nothing (only for `deleteAccount`).
    spare_account: String,
    /// A trusted key's signature over the `dummy-next` fixture (`addBackupProviderPlugin`).
    plugin_signature: String,
    /// A public key that is not trusted yet (`addBackupProviderSigningKey`).
    new_public_key: String,
    /// A KVM cluster and host of the zone (only for the host commands).
    cluster: String,
    host: String,
    creds: BTreeMap<Caller, Creds>,
}

async fn fixture(s: &TestServer, command: &str) -> Fixture {
    let admin = s.admin();
    let admin = &admin;
    let domain = |name: &'static str| async move {
        admin
            .call("createDomain", &[("name", name)])
            .await
            .ok("createDomain")["domain"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let d1 = domain("d1").await;
    let d2 = domain("d2").await;
    let alice = s.create_user("alice", "User", Some(&d1)).await;
    let bob = s.create_user("bob", "User", Some(&d1)).await;
    let da1 = s.create_user("da1", "DomainAdmin", Some(&d1)).await;
    let da2 = s.create_user("da2", "DomainAdmin", Some(&d2)).await;
    let disabled = s.create_user("dis", "User", Some(&d1)).await;
    // The disabled user belongs to alice's account.
    exec(
        s,
        "UPDATE users SET state = 'disabled',
             account_id = (SELECT id FROM accounts WHERE name = 'alice')
         WHERE username = 'dis'",
    )
    .await;
    let gold = import(s, "gold-policy", "Gold", true).await;
    // An offering without backups, for the command that deletes one.
    let unused = if command == "deleteBackupOffering" {
        id(&import(s, "silver-policy", "Silver", true).await)
    } else {
        String::new()
    };
    let bob_vm = id(&vm(s, &s.client(bob.clone()), "bob-vm", false).await);
    let a = s.client(alice.clone());
    let vm_obj = vm(s, &a, "alice-vm", true).await;
    let vm_uuid = id(&vm_obj);
    assign(&a, &vm_uuid, &id(&gold)).await;
    let b = backup(&a, &vm_uuid).await;
    stop(&a, &vm_uuid).await;
    let backed: Value = serde_json::from_str(b["volumes"].as_str().unwrap()).unwrap();
    let schedule =
        crate::sched_support::configure_schedule(&a, &vm_uuid, "DAILY", "00:01", &[]).await;
    let running = vm(s, &a, "alice-run", true).await;
    let destroyed = vm(s, &a, "alice-gone", false).await;
    job_ok(
        &a.call_async("destroyVirtualMachine", &[("id", &id(&destroyed))])
            .await,
    );
    let (service_offering, dof, template) = s.catalog().await;
    let done = a
        .call_async(
            "createVolume",
            &[
                ("name", "alice-data"),
                ("diskofferingid", &dof),
                ("zoneid", &s.zone_id),
            ],
        )
        .await;
    let volume = id(&job_ok(&done)["volume"]);
    let listed = a
        .call("listVolumes", &[("virtualmachineid", &id(&running))])
        .await;
    let attached = items(listed.ok("listVolumes"), "volume")
        .into_iter()
        .find(|v| v["type"] == "DATADISK")
        .map(id)
        .expect("data disk");
    let jobs = a.call("listAsyncJobs", &[]).await;
    let job = items(jobs.ok("listAsyncJobs"), "asyncjobs")
        .first()
        .and_then(|j| j["jobid"].as_str())
        .expect("alice has a job")
        .to_string();
    let users = s
        .admin()
        .call("listUsers", &[("username", "alice"), ("listall", "true")])
        .await;
    let alice_user = users.ok("listUsers")["user"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Added last, so the instances above stay outside it and the datacenter may be removed.
    if command == "removeVmwareDc" {
        admin
            .call(
                "addVmwareDc",
                &[
                    ("zoneid", s.zone_id.as_str()),
                    ("name", "dc1"),
                    ("vcenter", "vcenter.lan"),
                ],
            )
            .await
            .ok("addVmwareDc");
    }
    // Added last too, so the instances above stay off KVM hosts.
    let (mut cluster, mut host) = (String::new(), String::new());
    if matches!(
        command,
        "addHost" | "listHosts" | "updateHost" | "deleteHost" | "listClusters"
    ) {
        let added = admin
            .call(
                "addCluster",
                &[
                    ("zoneid", s.zone_id.as_str()),
                    ("clustername", "c1"),
                    ("hypervisor", "KVM"),
                ],
            )
            .await;
        cluster = added.ok("addCluster")["cluster"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let added = admin
            .call(
                "addHost",
                &[
                    ("zoneid", s.zone_id.as_str()),
                    ("clusterid", cluster.as_str()),
                    ("url", "http://10.9.0.1"),
                    ("username", "root"),
                    ("password", "host-password"),
                    ("hypervisor", "KVM"),
                ],
            )
            .await;
        host = added.ok("addHost")["host"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
    }
    let (plugin_signature, new_public_key) = plugin_fixture(s, command).await;
    let mut spare_account = String::new();
    if command == "deleteAccount" {
        s.create_user("carol", "User", Some(&d1)).await;
        let listed = admin
            .call("listAccounts", &[("name", "carol"), ("domainid", &d1)])
            .await;
        spare_account = listed.ok("listAccounts")["account"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
    }
    Fixture {
        spare_account,
        plugin_signature,
        new_public_key,
        cluster,
        host,
        d1,
        zone: s.zone_id.clone(),
        service_offering,
        template,
        offering: id(&gold),
        unused_offering: unused,
        bob_vm,
        vm: vm_uuid,
        running: id(&running),
        destroyed: id(&destroyed),
        backup: id(&b),
        backup_data_volume: backed[1]["uuid"].as_str().unwrap().to_string(),
        schedule: id(&schedule),
        volume,
        attached,
        job,
        alice_user,
        creds: BTreeMap::from([
            (Caller::SameAccount, alice),
            (Caller::OtherAccount, bob),
            (Caller::DomainAdminSameDomain, da1),
            (Caller::DomainAdminOtherDomain, da2),
            (Caller::Disabled, disabled),
            (
                Caller::RootAdmin,
                Creds {
                    api_key: ADMIN_API_KEY.into(),
                    secret_key: ADMIN_SECRET_KEY.into(),
                },
            ),
        ]),
    }
}

/// For the plugin commands: a trusted key `matrix-key`, the `dummy-next` fixture as
/// `next.wasm` in the providers directory (installed already for the commands that act on an
/// installed version); returns its signature and an untrusted public key.
async fn plugin_fixture(s: &TestServer, command: &str) -> (String, String) {
    use bnr::plugins::signing;
    let (_, new_public_key) = signing::generate_key();
    if !command.contains("BackupProviderPlugin") && command != "deleteBackupProviderSigningKey" {
        return (String::new(), new_public_key);
    }
    let (secret, public) = signing::generate_key();
    s.admin()
        .call(
            "addBackupProviderSigningKey",
            &[("name", "matrix-key"), ("publickey", &public)],
        )
        .await
        .ok("addBackupProviderSigningKey");
    let wasm = crate::support::component_bytes("bnr_fixture_dummy_next");
    let providers = s.dir.path().join("providers");
    std::fs::create_dir_all(&providers).unwrap();
    std::fs::write(providers.join("next.wasm"), &wasm).unwrap();
    let key = signing::parse_secret_key(&secret).unwrap();
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&wasm))
    };
    let signature = signing::sign(&key, &sha256, "dummy", "1.1.0");
    if matches!(
        command,
        "updateBackupProviderPlugin" | "deleteBackupProviderPlugin"
    ) {
        s.admin()
            .call(
                "addBackupProviderPlugin",
                &[("file", "next.wasm"), ("pluginsignature", &signature)],
            )
            .await
            .ok("addBackupProviderPlugin");
    }
    (signature, new_public_key)
}

type Params = Vec<(&'static str, String)>;

/// The parameters and the policy of each command, against the fixture.
fn case(command: &str, f: &Fixture, zone: &str) -> Option<(Policy, Params)> {
    let z = || ("zoneid", zone.to_string());
    let p = |v: &[(&'static str, &String)]| -> Params {
        v.iter().map(|(k, v)| (*k, (*v).clone())).collect()
    };
    use Policy::*;
    Some(match command {
        "listApis" | "listZones" | "listServiceOfferings" | "listDiskOfferings" => {
            (Everyone, vec![])
        }
        "listTemplates" => (Everyone, vec![("templatefilter", "executable".into())]),
        "listBackupOfferings" => (Everyone, vec![]),
        "createZone" => (Root, vec![("name", "zone9".into())]),
        "addVmwareDc" => (
            Root,
            vec![
                z(),
                ("name", "dc9".into()),
                ("vcenter", "vcenter9.lan".into()),
            ],
        ),
        "listVmwareDcs" | "removeVmwareDc" => (Root, vec![z()]),
        "addCluster" => (
            Root,
            vec![
                z(),
                ("clustername", "c9".into()),
                ("hypervisor", "KVM".into()),
            ],
        ),
        "listClusters" | "listHosts" => (Root, vec![]),
        "addHost" => (
            Root,
            vec![
                z(),
                ("clusterid", f.cluster.clone()),
                ("url", "http://10.9.0.9".into()),
                ("username", "root".into()),
                ("password", "host-password".into()),
                ("hypervisor", "KVM".into()),
            ],
        ),
        "updateHost" => (
            Root,
            vec![("id", f.host.clone()), ("state", "Maintenance".into())],
        ),
        "deleteHost" => (Root, vec![("id", f.host.clone())]),
        "createDomain" => (
            Admins,
            vec![("name", "sub".into()), ("parentdomainid", f.d1.clone())],
        ),
        "createAccount" => (
            Admins,
            vec![
                ("username", "newbie".into()),
                ("password", "pw".into()),
                ("email", "n@example.com".into()),
                ("firstname", "N".into()),
                ("lastname", "B".into()),
                ("roletype", "User".into()),
                ("domainid", f.d1.clone()),
            ],
        ),
        "registerUserKeys" => (Owner, p(&[("id", &f.alice_user)])),
        "disableUser" | "enableUser" | "deleteUser" => (Admins, p(&[("id", &f.alice_user)])),
        "disableAccount" => (
            Admins,
            vec![
                ("account", "alice".into()),
                ("domainid", f.d1.clone()),
                ("lock", "false".into()),
            ],
        ),
        "enableAccount" => (
            Admins,
            vec![("account", "alice".into()), ("domainid", f.d1.clone())],
        ),
        "deleteAccount" => (Admins, p(&[("id", &f.spare_account)])),
        "listAccounts"
        | "listUsers"
        | "listEvents"
        | "listAsyncJobs"
        | "listVirtualMachines"
        | "listVolumes"
        | "listBackups"
        | "listBackupSchedule" => (
            Owner,
            vec![("listall", "true".into()), ("domainid", f.d1.clone())],
        ),
        "listDomains" => (InDomain, vec![("id", f.d1.clone())]),
        "queryAsyncJobResult" => (Owner, p(&[("jobid", &f.job)])),
        "deployVirtualMachine" => (
            Owner,
            vec![
                ("serviceofferingid", f.service_offering.clone()),
                ("templateid", f.template.clone()),
                z(),
                ("name", "on-behalf".into()),
                ("account", "alice".into()),
                ("domainid", f.d1.clone()),
            ],
        ),
        "startVirtualMachine" => (Owner, p(&[("id", &f.vm)])),
        "stopVirtualMachine" => (Owner, p(&[("id", &f.running)])),
        "destroyVirtualMachine" => (Owner, p(&[("id", &f.running)])),
        "recoverVirtualMachine" => (Admins, p(&[("id", &f.destroyed)])),
        "expungeVirtualMachine" => (Admins, p(&[("id", &f.destroyed)])),
        "createVolume" => (
            Owner,
            vec![
                ("name", "on-behalf".into()),
                ("size", "1".into()),
                z(),
                ("account", "alice".into()),
                ("domainid", f.d1.clone()),
            ],
        ),
        "attachVolume" => (
            Owner,
            p(&[("id", &f.volume), ("virtualmachineid", &f.running)]),
        ),
        "detachVolume" => (Owner, p(&[("id", &f.attached)])),
        "deleteVolume" => (Owner, p(&[("id", &f.volume)])),
        "listBackupProviders" => (Root, vec![]),
        "listBackupProviderPlugins" => (Root, vec![]),
        "addBackupProviderPlugin" => (
            Root,
            vec![
                ("file", "next.wasm".into()),
                ("pluginsignature", f.plugin_signature.clone()),
            ],
        ),
        "updateBackupProviderPlugin" => (
            Root,
            vec![("name", "dummy".into()), ("version", "1.1.0".into())],
        ),
        "deleteBackupProviderPlugin" => (
            Root,
            vec![("name", "dummy".into()), ("version", "1.1.0".into())],
        ),
        "updateBackupProviderGrants" => (Root, vec![z(), ("provider", "dummy".into())]),
        "listBackupProviderSigningKeys" => (Root, vec![]),
        "addBackupProviderSigningKey" => (
            Root,
            vec![
                ("name", "another-key".into()),
                ("publickey", f.new_public_key.clone()),
            ],
        ),
        "deleteBackupProviderSigningKey" => (Root, vec![("name", "matrix-key".into())]),
        "listBackupProviderOfferings" => (Root, vec![z()]),
        "importBackupOffering" => (
            Root,
            vec![
                z(),
                ("externalid", "silver-policy".into()),
                ("name", "Silver".into()),
                ("description", "Silver".into()),
                ("allowuserdrivenbackups", "true".into()),
            ],
        ),
        "updateBackupOffering" => (
            Root,
            p(&[("id", &f.offering)])
                .into_iter()
                .chain([("description", "new".to_string())])
                .collect(),
        ),
        "deleteBackupOffering" => (Root, p(&[("id", &f.unused_offering)])),
        "assignVirtualMachineToBackupOffering" => (
            Owner,
            p(&[
                ("virtualmachineid", &f.running),
                ("backupofferingid", &f.offering),
            ]),
        ),
        "removeVirtualMachineFromBackupOffering" => (
            Owner,
            vec![
                ("virtualmachineid", f.vm.clone()),
                ("forced", "true".into()),
            ],
        ),
        "createBackup" => (Owner, p(&[("virtualmachineid", &f.vm)])),
        "deleteBackup" => (Owner, p(&[("id", &f.backup)])),
        "restoreBackup" => (Owner, p(&[("id", &f.backup)])),
        "restoreVolumeFromBackupAndAttachToVM" => (
            Owner,
            p(&[
                ("backupid", &f.backup),
                ("volumeid", &f.backup_data_volume),
                ("virtualmachineid", &f.running),
            ]),
        ),
        "createVMFromBackup" => (
            Owner,
            p(&[("backupid", &f.backup)])
                .into_iter()
                .chain([z()])
                .collect(),
        ),
        "createBackupSchedule" => (
            Owner,
            vec![
                ("virtualmachineid", f.vm.clone()),
                ("intervaltype", "HOURLY".into()),
                ("schedule", "5".into()),
                ("timezone", "UTC".into()),
            ],
        ),
        "updateBackupSchedule" => (
            Owner,
            vec![
                ("id", f.schedule.clone()),
                ("virtualmachineid", f.vm.clone()),
                ("intervaltype", "DAILY".into()),
                ("schedule", "00:02".into()),
                ("timezone", "UTC".into()),
            ],
        ),
        "deleteBackupSchedule" => (Owner, p(&[("id", &f.schedule)])),
        "listBackupUsageRecords" => (
            Admins,
            vec![
                ("startdate", "2020-01-01".into()),
                ("enddate", "2100-01-01".into()),
                ("domainid", f.d1.clone()),
            ],
        ),
        "listBackupStorageStats" => (Root, vec![]),
        "listBackupSyncStatus" => (Root, vec![]),
        "listConfigurations" => (Root, vec![]),
        "updateConfiguration" => (
            Root,
            vec![
                ("name", "backup.framework.sync.interval".into()),
                ("value", "301".into()),
            ],
        ),
        _ => return None,
    })
}

/// Variants that put alice's data together with bob's instance: refused for every caller
/// (the caller must reach every object, and objects put together must share an owner).
fn mixed(command: &str, f: &Fixture) -> Option<Params> {
    let p = |v: &[(&'static str, &String)]| -> Params {
        v.iter().map(|(k, v)| (*k, (*v).clone())).collect()
    };
    match command {
        "attachVolume" => Some(p(&[("id", &f.volume), ("virtualmachineid", &f.bob_vm)])),
        "restoreVolumeFromBackupAndAttachToVM" => Some(p(&[
            ("backupid", &f.backup),
            ("volumeid", &f.backup_data_volume),
            ("virtualmachineid", &f.bob_vm),
        ])),
        "createVMFromBackup" => Some(vec![
            ("backupid", f.backup.clone()),
            ("zoneid", f.zone.clone()),
            ("account", "bob".into()),
            ("domainid", f.d1.clone()),
        ]),
        _ => None,
    }
}

/// Commands whose refusal of an outsider may be an answer that shows none of alice's resources.
fn is_list(command: &str) -> bool {
    command.starts_with("list")
}

/// Every table's rows, as text.
async fn snapshot(s: &TestServer) -> String {
    s.state
        .store()
        .read(|c| {
            let tables: Vec<String> = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect::<bnr::store::db::Result<_>>()?;
            let mut out = String::new();
            for t in tables {
                let mut st = c.prepare(&format!("SELECT * FROM \"{t}\""))?;
                let n = st.column_count();
                let mut rows = st
                    .query_map([], |r| {
                        let mut row = Vec::new();
                        for i in 0..n {
                            row.push(format!("{:?}", r.get_ref(i)?));
                        }
                        Ok(row.join("|"))
                    })?
                    .collect::<bnr::store::db::Result<Vec<_>>>()?;
                rows.sort();
                out.push_str(&t);
                out.push('\n');
                for row in rows {
                    out.push_str(&row);
                    out.push('\n');
                }
            }
            Ok::<_, bnr::store::StoreError>(out)
        })
        .await
        .expect("snapshot")
}

/// Error codes that mean "you may not": bad credentials, command not available to the role,
/// permission denied.
const REFUSALS: [u16; 3] = [401, 432, 531];
/// The B&R commands wrap a permission error into 530 (as CloudStack's do); its text says so.
const WRAPPED_REFUSALS: [&str; 2] = ["does not have permission", "belong to different accounts"];

fn is_refusal(code: u16, text: &str) -> bool {
    REFUSALS.contains(&code) || (code == 530 && WRAPPED_REFUSALS.iter().any(|t| text.contains(t)))
}

struct Outcome {
    status: u16,
    /// The final job status and result code, for async commands answered with a job.
    job: Option<(i64, i64)>,
    text: String,
}

impl Outcome {
    fn refused(&self) -> bool {
        is_refusal(self.status, &self.text)
            || self
                .job
                .is_some_and(|(_, code)| is_refusal(u16::try_from(code).unwrap_or(0), &self.text))
    }
    fn succeeded(&self) -> bool {
        self.status == 200 && self.job.is_none_or(|(status, _)| status == 1)
    }
}

async fn call(s: &TestServer, creds: &Creds, command: &str, params: &Params) -> Outcome {
    let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = s.client(creds.clone()).call(command, &p).await;
    let mut job = None;
    if r.status == 200
        && let Some(jobid) = r
            .json
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|inner| inner.get("jobid"))
            .and_then(Value::as_str)
            .filter(|_| command != "queryAsyncJobResult")
    {
        s.wait_job(jobid).await;
        let done = s
            .admin()
            .call("queryAsyncJobResult", &[("jobid", jobid)])
            .await
            .ok("queryAsyncJobResult")
            .clone();
        job = Some((
            done["jobstatus"].as_i64().unwrap_or(-1),
            done["jobresultcode"].as_i64().unwrap_or(0),
        ));
        return Outcome {
            status: r.status,
            job,
            text: format!("{} / job {done}", r.text),
        };
    }
    Outcome {
        status: r.status,
        job,
        text: r.text,
    }
}

/// alice's resource ids that an outsider's list answer must not show.
fn alice_ids<'a>(f: &'a Fixture, command: &str) -> Vec<&'a str> {
    if command == "listDomains" {
        return vec![&f.d1];
    }
    vec![
        &f.vm,
        &f.running,
        &f.volume,
        &f.backup,
        &f.schedule,
        &f.job,
        &f.alice_user,
    ]
}

async fn check_command(command: String) -> Vec<String> {
    let s = start(Installed::Dummy).await;
    let f = fixture(&s, &command).await;
    let Some((policy, params)) = case(&command, &f, &s.zone_id) else {
        return vec![format!(
            "{command}: registered but not in the access matrix"
        )];
    };
    let mut problems = Vec::new();
    if let Some(params) = mixed(&command, &f) {
        for caller in CALLERS {
            let before = snapshot(&s).await;
            let outcome = call(&s, &f.creds[&caller], &command, &params).await;
            if !outcome.refused() {
                problems.push(format!(
                    "{command} with bob's instance: {caller:?} not refused: {}",
                    outcome.text
                ));
            }
            if before != snapshot(&s).await {
                problems.push(format!(
                    "{command} with bob's instance: {caller:?} was refused but changed the store"
                ));
            }
        }
    }
    let mut first_allowed = true;
    for caller in CALLERS {
        let creds = &f.creds[&caller];
        let before = snapshot(&s).await;
        let outcome = call(&s, creds, &command, &params).await;
        if policy.allows(caller) {
            if outcome.refused() {
                problems.push(format!("{command}: {caller:?} refused: {}", outcome.text));
            } else if first_allowed && !outcome.succeeded() {
                problems.push(format!("{command}: {caller:?} failed: {}", outcome.text));
            }
            first_allowed = false;
            continue;
        }
        let after = snapshot(&s).await;
        let hidden = is_list(&command)
            && outcome.status == 200
            && caller != Caller::Disabled
            && !alice_ids(&f, &command)
                .iter()
                .any(|id| outcome.text.contains(id));
        if !(outcome.refused() || hidden) {
            problems.push(format!(
                "{command}: {caller:?} not refused: {}",
                outcome.text
            ));
        }
        if before != after {
            problems.push(format!(
                "{command}: {caller:?} was refused but changed the store"
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_allows_exactly_its_callers_and_a_refusal_changes_nothing() {
    let s = start(Installed::Dummy).await;
    let commands: Vec<String> = s
        .state
        .registry
        .all()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    drop(s);
    assert!(commands.len() > 40, "the B&R commands are registered");
    // A few servers at a time (each command gets its own); the test client is not `Send`, so
    // they share this thread and wait on the store's blocking pool concurrently.
    let local = tokio::task::LocalSet::new();
    let problems = local
        .run_until(async move {
            let mut set = tokio::task::JoinSet::new();
            let mut problems = Vec::new();
            let mut pending = commands.into_iter();
            for command in pending.by_ref().take(3) {
                set.spawn_local(check_command(command));
            }
            while let Some(done) = tokio::time::timeout(Duration::from_secs(900), set.join_next())
                .await
                .expect("the matrix finishes within 15 minutes")
            {
                problems.extend(done.expect("command check"));
                if let Some(command) = pending.next() {
                    set.spawn_local(check_command(command));
                }
            }
            problems
        })
        .await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
