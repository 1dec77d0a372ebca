//! The provider's operations over a NetWorker [`Client`] and a [`Shell`] on the KVM hosts.
//!
//! Backups and restores run a script on the host as a detached command: `start_*` starts it and
//! returns a handle; [`poll`] follows it and, for a backup, finds the save set the script's
//! `save` wrote by its exact save time; [`cancel`] stops it. NetWorker errors are returned, never
//! read as "no save sets", so an outage never looks like deleted backups.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::model::SaveSet;
use crate::rest::{Client, Transport};
use crate::script::{self, Script};

/// Runs commands on KVM hosts, detached (the host's `remote-exec-start`/`-poll`/`-cancel`).
pub trait Shell {
    /// Starts `command` on `target`; the id to poll it by.
    fn start(&mut self, target: &str, command: &str, timeout_secs: u64) -> Result<String>;
    fn poll(&mut self, id: &str) -> Result<ShellState>;
    fn cancel(&mut self, id: &str) -> bool;
}

/// Where a detached command is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellState {
    Running,
    Finished {
        exit_code: i32,
        stdout: String,
        stderr: String,
    },
    /// Unknown to the host: reported already, cancelled, or lost with a restart of bnr.
    Unknown,
}

/// The hypervisor host a call works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub cluster: String,
}

/// An instance as the operations need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub uuid: String,
    pub internal_name: String,
    pub hypervisor: String,
    pub state: String,
    /// Σ of its volumes' sizes (virtual bytes protected).
    pub volume_bytes: u64,
}

/// The zone's settings the operations use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// NetWorker server name given to the scripts: the host of the zone's URL setting.
    pub server: String,
    pub pool: String,
    pub verbose: bool,
    /// Bound of one script run.
    pub script_timeout_secs: u64,
    /// Local path of the storage pool volumes are restored into.
    pub pool_path: String,
}

/// A finished operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    BackupTaken {
        id: String,
        kind: String,
        size: u64,
        protected_size: u64,
        created: i64,
    },
    Restored,
    VolumeRestored {
        path: String,
        size: u64,
    },
}

/// Where an operation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Running(String),
    Finished(Outcome),
    Failed(Error),
}

/// A restore point for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub id: String,
    pub created: i64,
    pub kind: String,
    pub size: u64,
}

/// An offering: `(external id, name, description)`.
pub fn offerings<T: Transport>(client: &mut Client<T>) -> Result<Vec<(String, String, String)>> {
    Ok(client
        .offered_policies()?
        .into_iter()
        .map(|p| {
            let description = if p.period.is_empty() {
                format!("NetWorker protection policy {}", p.name)
            } else {
                format!(
                    "NetWorker protection policy {}, retention {}",
                    p.name, p.period
                )
            };
            (p.id, p.name, description)
        })
        .collect())
}

/// Only KVM instances are backed up by NetWorker (the scripts drive libvirt).
pub fn check_kvm(vm: &Vm) -> Result<()> {
    if vm.hypervisor.eq_ignore_ascii_case("KVM") {
        Ok(())
    } else {
        Err(Error::Rejected(format!(
            "NetWorker protects KVM instances only; instance {} runs on {}",
            vm.internal_name, vm.hypervisor
        )))
    }
}

fn require_host(host: Option<&Host>, what: &str) -> Result<Host> {
    host.cloned().ok_or_else(|| {
        Error::Rejected(format!(
            "bnr gave no KVM host for the {what}: the instance is not placed on a host of bnr's \
             inventory (addCluster, addHost)"
        ))
    })
}

/// Starts `nsrkvmbackup.sh` on the instance's host with the policy's retention.
pub fn start_backup<T: Transport, S: Shell>(
    client: &mut Client<T>,
    shell: &mut S,
    config: &Config,
    vm: &Vm,
    host: Option<&Host>,
    policy_id: &str,
    now: i64,
) -> Result<String> {
    check_kvm(vm)?;
    if vm.state != "Running" {
        return Err(Error::Rejected(format!(
            "instance {} is {}: NetWorker backs up running instances only (the script \
             snapshots the running domain); start it and retry",
            vm.internal_name, vm.state
        )));
    }
    let host = require_host(host, "backup")?;
    let policy = client
        .offered_policies()?
        .into_iter()
        .find(|p| p.id == policy_id)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "NetWorker has no protection policy {policy_id} marked -CSBKP- any more"
            ))
        })?;
    let retention = crate::time::retention(&policy.period).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "protection policy {} has a protection period bnr cannot read: `{}`",
            policy.name, policy.period
        ))
    })?;
    let command = script::backup_command(&script::BackupArgs {
        server: &config.server,
        retention: &retention,
        pool: &config.pool,
        cluster: &host.cluster,
        uuid: &vm.uuid,
        domain: &vm.internal_name,
        verbose: config.verbose,
    })?;
    let exec = shell.start(&host.address, &command, config.script_timeout_secs)?;
    Ok(json!({
        "op": "backup", "exec": exec, "host": host.name, "vm": vm.internal_name,
        "since": now, "protected": vm.volume_bytes,
    })
    .to_string())
}

/// Starts `nsrkvmrestore.sh -S <ssid>` on the host bnr chose, over the instance's volumes.
pub fn start_restore<T: Transport, S: Shell>(
    client: &mut Client<T>,
    shell: &mut S,
    config: &Config,
    vm: &Vm,
    backup_id: &str,
    host: Option<&Host>,
    now: i64,
) -> Result<String> {
    check_kvm(vm)?;
    let host = require_host(host, "restore")?;
    let save_set = usable_save_set(client, backup_id, now)?;
    let command = script::restore_command(&config.server, &save_set.short_id, config.verbose)?;
    let exec = shell.start(&host.address, &command, config.script_timeout_secs)?;
    Ok(json!({
        "op": "restore", "exec": exec, "host": host.name, "vm": vm.internal_name, "since": now,
    })
    .to_string())
}

/// Starts `nsrkvmrestore.sh` for one volume into `new_volume` on the host bnr chose.
#[allow(clippy::too_many_arguments)]
pub fn start_restore_volume<T: Transport, S: Shell>(
    client: &mut Client<T>,
    shell: &mut S,
    config: &Config,
    backup_id: &str,
    source_volume: &str,
    new_volume: &str,
    size: u64,
    host: Option<&Host>,
    now: i64,
) -> Result<String> {
    let host = require_host(host, "volume restore")?;
    let save_set = usable_save_set(client, backup_id, now)?;
    let command = script::restore_volume_command(&script::VolumeArgs {
        server: &config.server,
        client: &save_set.client,
        destination: &host.name,
        new_volume,
        pool_path: &config.pool_path,
        source_volume,
        verbose: config.verbose,
    })?;
    let exec = shell.start(&host.address, &command, config.script_timeout_secs)?;
    let path = format!("{}/{new_volume}", config.pool_path.trim_end_matches('/'));
    Ok(json!({
        "op": "volume", "exec": exec, "host": host.name, "since": now, "path": path, "size": size,
    })
    .to_string())
}

/// The save set `id`, refused when NetWorker no longer has it or its retention has passed.
fn usable_save_set<T: Transport>(client: &mut Client<T>, id: &str, now: i64) -> Result<SaveSet> {
    let save_set = client.save_set(id)?.ok_or_else(|| {
        Error::NotFound(format!(
            "NetWorker no longer has save set {id}: its retention expired and it was recycled, \
             or it was deleted in NetWorker"
        ))
    })?;
    if save_set.expired(now) {
        return Err(Error::Rejected(format!(
            "save set {id} expired on {} (its retention passed); NetWorker will not recover it",
            crate::time::format_utc(save_set.retention_time.unwrap_or(now))
        )));
    }
    if save_set.short_id.is_empty() {
        return Err(Error::Internal(format!("save set {id} has no SSID")));
    }
    Ok(save_set)
}

fn field<'a>(handle: &'a Value, key: &str) -> Result<&'a str> {
    handle[key]
        .as_str()
        .ok_or_else(|| Error::NotFound(format!("operation handle without `{key}`")))
}

fn parse_handle(handle: &str) -> Result<Value> {
    serde_json::from_str(handle)
        .map_err(|_| Error::NotFound("not an operation handle of this provider".into()))
}

/// Follows the operation `handle`.
pub fn poll<T: Transport, S: Shell>(
    client: &mut Client<T>,
    shell: &mut S,
    handle: &str,
    now: i64,
) -> Result<Status> {
    let h = parse_handle(handle)?;
    let (op, exec, host) = (field(&h, "op")?, field(&h, "exec")?, field(&h, "host")?);
    let since = h["since"].as_i64().unwrap_or(now);
    let script = match op {
        "backup" => Script::Backup,
        "restore" => Script::Restore,
        "volume" => Script::RestoreVolume,
        other => return Err(Error::NotFound(format!("unknown operation `{other}`"))),
    };
    let name = match script {
        Script::Backup => script::BACKUP_SCRIPT,
        _ => script::RESTORE_SCRIPT,
    };
    let (exit_code, stdout, stderr) = match shell.poll(exec)? {
        ShellState::Running => {
            return Ok(Status::Running(format!(
                "{name} running on host {host} for {}s",
                (now - since).max(0)
            )));
        }
        ShellState::Unknown => {
            return Ok(Status::Failed(Error::Internal(format!(
                "{name} on host {host} is no longer followed (bnr restarted while it ran, or it \
                 was cancelled); see {} on the host",
                script::HOST_LOG_DIR
            ))));
        }
        ShellState::Finished {
            exit_code,
            stdout,
            stderr,
        } => (exit_code, stdout, stderr),
    };
    if exit_code != 0 {
        let tail = last_line(&stderr).or_else(|| last_line(&stdout));
        let mut message = script::exit_message(script, exit_code, host);
        if let Some(tail) = tail {
            message.push_str(&format!("; last output: {tail}"));
        }
        return Ok(Status::Failed(Error::Rejected(message)));
    }
    match script {
        Script::Backup => {
            let vm = field(&h, "vm")?;
            let output = format!("{stdout}\n{stderr}");
            let Some(save_time) = script::save_time(&output) else {
                return Ok(Status::Failed(Error::Rejected(format!(
                    "{name} on host {host} finished without a save time: NetWorker's `save` \
                     failed (the script exits 0 anyway); see {} on the host{}",
                    script::HOST_LOG_DIR,
                    last_line(&stderr)
                        .map(|l| format!("; last output: {l}"))
                        .unwrap_or_default()
                ))));
            };
            let matches = client.save_sets_at(vm, save_time)?;
            match matches.as_slice() {
                [one] => Ok(Status::Finished(Outcome::BackupTaken {
                    id: one.id.clone(),
                    kind: if one.kind.is_empty() {
                        "File".into()
                    } else {
                        one.kind.clone()
                    },
                    size: one.size,
                    protected_size: h["protected"].as_u64().unwrap_or(one.size),
                    created: one.save_time,
                })),
                [] => Ok(Status::Failed(Error::Rejected(format!(
                    "NetWorker has no save set of {vm} saved at {} (the save time the host \
                     reported); check that the host's clock and the NetWorker server's agree",
                    crate::time::format_utc(save_time)
                )))),
                several => Ok(Status::Failed(Error::Rejected(format!(
                    "{} save sets of {vm} were saved at {}: {}; bnr records none rather than \
                     guess; delete the duplicates in NetWorker and take a new backup",
                    several.len(),
                    crate::time::format_utc(save_time),
                    several
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))),
            }
        }
        Script::Restore => Ok(Status::Finished(Outcome::Restored)),
        Script::RestoreVolume => Ok(Status::Finished(Outcome::VolumeRestored {
            path: field(&h, "path")?.to_string(),
            size: h["size"].as_u64().unwrap_or(0),
        })),
    }
}

/// Stops the operation's script (closing its SSH session).
pub fn cancel<S: Shell>(shell: &mut S, handle: &str) -> Result<()> {
    let h = parse_handle(handle)?;
    shell.cancel(field(&h, "exec")?);
    Ok(())
}

fn last_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| crate::model::truncate(l, 300).to_string())
}

/// Deletes save set `id`; one NetWorker no longer has counts as deleted.
pub fn delete<T: Transport>(client: &mut Client<T>, id: &str) -> Result<()> {
    client.delete_save_set(id)?;
    Ok(())
}

/// The instance's complete, unexpired save sets.
pub fn restore_points<T: Transport>(
    client: &mut Client<T>,
    vm: &Vm,
    now: i64,
) -> Result<Vec<Point>> {
    check_kvm(vm)?;
    Ok(client
        .save_sets_of(&vm.internal_name)?
        .into_iter()
        .filter(|s| s.completion_time.is_some() && !s.expired(now))
        .map(|s| Point {
            id: s.id,
            created: s.save_time,
            kind: if s.kind.is_empty() {
                "File".into()
            } else {
                s.kind
            },
            size: s.size,
        })
        .collect())
}

/// Per instance: bytes NetWorker stores for its unexpired save sets, and the virtual bytes
/// protected (Σ of its volumes). One request per instance.
pub fn metrics<T: Transport>(
    client: &mut Client<T>,
    vms: &[Vm],
    now: i64,
) -> Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for vm in vms.iter().filter(|vm| check_kvm(vm).is_ok()) {
        let stored = client
            .save_sets_of(&vm.internal_name)?
            .iter()
            .filter(|s| !s.expired(now))
            .fold(0u64, |sum, s| sum.saturating_add(s.size));
        out.push((vm.uuid.clone(), stored, vm.volume_bytes));
    }
    Ok(out)
}
