//! The component: binds the operations to the host's HTTP and remote-exec imports and to the
//! WIT exports (`bnr:provider@1.2.0`).

use std::time::Duration;

use bnr_sdk::prelude::*;

use crate::error::Error;
use crate::ops::{self, Config, Host, Outcome, Shell, ShellState, Status, Vm};
use crate::rest::{self, Client};

const URL: &str = "backup.plugin.networker.url";
const USERNAME: &str = "backup.plugin.networker.username";
const PASSWORD: &str = "backup.plugin.networker.password";
const POOL: &str = "backup.plugin.networker.pool";
const VALIDATE_SSL: &str = "backup.plugin.networker.validate.ssl";
const REQUEST_TIMEOUT: &str = "backup.plugin.networker.request.timeout";
const CLIENT_VERBOSITY: &str = "backup.plugin.networker.client.verbosity";
const PINNED_CERT: &str = "backup.plugin.networker.tls.pinned.cert";
const CA_PEM: &str = "backup.plugin.networker.tls.ca";
const SCRIPT_TIMEOUT: &str = "backup.plugin.networker.script.timeout";
const POOL_PATH: &str = "backup.plugin.networker.restore.pool.path";

const DEFAULT_URL: &str = "https://localhost:9090/nwrestapi/v3";
/// Largest NetWorker answer read (a page of save sets is far below).
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Largest script output read.
const MAX_OUTPUT_BYTES: u32 = 1 << 20;

pub struct Networker;

/// The NetWorker REST endpoint and the settings that establish trust in it.
fn rest_access() -> HttpsAccess {
    HttpsAccess::new(URL)
        .pinned_cert(PINNED_CERT)
        .ca_pem(CA_PEM)
        .validate(VALIDATE_SSL)
}

struct Http {
    timeout: Duration,
}

impl rest::Transport for Http {
    fn send(&mut self, request: rest::Request) -> crate::error::Result<rest::Response> {
        let method = http::Method::from_name(request.method)
            .ok_or_else(|| Error::Internal(format!("HTTP method {}", request.method)))?;
        let response = http::Request::new(method, &request.url)
            .headers(request.headers)
            .timeout(self.timeout)
            .max_response_bytes(MAX_RESPONSE_BYTES)
            .send()
            .map_err(|e| e.naming_endpoint("NetWorker", &rest_access()))?;
        Ok(rest::Response {
            status: response.status(),
            body: response.into_body(),
        })
    }
}

/// The host's detached remote exec.
struct Ssh;

impl Shell for Ssh {
    fn start(
        &mut self,
        target: &str,
        command: &str,
        timeout_secs: u64,
    ) -> crate::error::Result<String> {
        exec::Command::new(target, command)
            .timeout(Duration::from_secs(timeout_secs))
            .max_output_bytes(MAX_OUTPUT_BYTES)
            .start()
            .map_err(|e| exec_error(&e, target))
    }

    fn poll(&mut self, id: &str) -> crate::error::Result<ShellState> {
        Ok(match exec::poll(id) {
            ExecState::Running => ShellState::Running,
            ExecState::Finished(output) => ShellState::Finished {
                exit_code: output.exit_code,
                stdout: output.stdout,
                stderr: output.stderr,
            },
            ExecState::Failed(e) => {
                let target = hypervisor::current().map(|h| h.name).unwrap_or_default();
                return Err(exec_error(&e, &target));
            }
            ExecState::Unknown => ShellState::Unknown,
        })
    }

    fn cancel(&mut self, id: &str) -> bool {
        exec::cancel(id)
    }
}

/// An SSH failure, saying what to fix on the host record.
fn exec_error(error: &ExecError, target: &str) -> Error {
    let message = format!("SSH to KVM host {target}: {}", exec::describe_error(error));
    match error {
        ExecError::HostKeyUnknown(fingerprint) => Error::InvalidConfig(format!(
            "KVM host {target} presented SSH host key {fingerprint}, which is not pinned; check \
             it on the host (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and pin it \
             with updateHost hostkeyfingerprint={fingerprint}"
        )),
        ExecError::HostKeyMismatch(fingerprint) => Error::InvalidConfig(format!(
            "KVM host {target} presented SSH host key {fingerprint}, which is not the pinned \
             one; if the host was reinstalled, check and pin the new key with updateHost"
        )),
        ExecError::AuthFailed(_) => Error::Unauthorized(format!(
            "{message}; fix the host's username and password with updateHost"
        )),
        ExecError::Timeout => Error::Unavailable(format!(
            "{message}: the script did not finish within {SCRIPT_TIMEOUT}"
        )),
        ExecError::Unreachable(_) => Error::Unavailable(message),
        ExecError::Denied(_) | ExecError::InvalidConfig(_) => Error::InvalidConfig(message),
        ExecError::OutputTooLarge(_) | ExecError::InvalidRequest(_) => Error::Internal(message),
    }
}

fn seconds(name: &str, default: u64, max: u64) -> Result<u64> {
    settings::parse_within(name, default, 1..=max)
}

fn client() -> Result<Client<Http>> {
    let url = settings::get_or(URL, DEFAULT_URL);
    let username = settings::get_or(USERNAME, "administrator");
    let password = settings::require(PASSWORD)?;
    let timeout = seconds(REQUEST_TIMEOUT, 300, 3600)?;
    Ok(Client::new(
        &url,
        &username,
        &password,
        Http {
            timeout: Duration::from_secs(timeout),
        },
    ))
}

/// The host part of the zone's URL: the NetWorker server the scripts name (`-s`).
fn server_name(url: &str) -> Result<String> {
    http::url_host(url).ok_or_else(|| {
        ProviderError::InvalidConfig(format!("{URL} does not name a NetWorker server"))
    })
}

fn config() -> Result<Config> {
    Ok(Config {
        server: server_name(&settings::get_or(URL, DEFAULT_URL))?,
        pool: settings::get_or(POOL, "Default"),
        verbose: settings::parse_or(CLIENT_VERBOSITY, false)?,
        script_timeout_secs: seconds(SCRIPT_TIMEOUT, 3600, 12 * 3600)?,
        pool_path: settings::get_or(POOL_PATH, "/var/lib/libvirt/images"),
    })
}

fn vm_of(instance: &Instance) -> Vm {
    Vm {
        uuid: instance.uuid.clone(),
        internal_name: instance.internal_name.clone(),
        hypervisor: instance.hypervisor.clone(),
        state: instance.state.clone(),
        volume_bytes: instance.volumes.iter().map(|v| v.size).sum(),
    }
}

fn current_host() -> Option<Host> {
    hypervisor::current().map(|h| Host {
        name: h.name,
        address: h.address,
        cluster: h.cluster,
    })
}

fn now() -> i64 {
    i64::try_from(time::now_unix_secs()).unwrap_or(i64::MAX)
}

fn pending(handle: String) -> Started {
    Started::Pending(handle)
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Provider for Networker {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            name: "networker".into(),
            description: "Dell EMC NetWorker for KVM instances: save sets through the NetWorker REST API, backups and restores by CloudStack's nsrkvm scripts on the KVM hosts".into(),
            version: "1.0.0".into(),
            settings: vec![
                SettingDecl::url(URL, "NetWorker REST API URL; its host is the NetWorker server the KVM host scripts name").with_default(DEFAULT_URL),
                SettingDecl::text(USERNAME, "NetWorker REST API user").with_default("administrator"),
                SettingDecl::secret(PASSWORD, "Password of the NetWorker REST API user"),
                SettingDecl::text(POOL, "NetWorker media pool backups are saved to (save -b)").with_default("Default"),
                SettingDecl::boolean(VALIDATE_SSL, "Validate the NetWorker server's certificate (false accepts any certificate from that one server, when no pin or CA is set)").with_default("true"),
                SettingDecl::text(PINNED_CERT, "SHA-256 fingerprint(s) of the NetWorker server's certificate to trust"),
                SettingDecl::text(CA_PEM, "CA certificate(s), PEM, that the NetWorker server's certificate chains to"),
                SettingDecl::integer(REQUEST_TIMEOUT, "Seconds one NetWorker REST request may take (the host caps it)").with_default("300"),
                SettingDecl::boolean(CLIENT_VERBOSITY, "Run the KVM host scripts verbosely (-v)").with_default("false"),
                SettingDecl::integer(SCRIPT_TIMEOUT, "Seconds a backup or restore script may run on the KVM host").with_default("3600"),
                SettingDecl::text(POOL_PATH, "Local path of the KVM hosts' storage pool single volumes are restored into").with_default("/var/lib/libvirt/images"),
            ],
            needs: vec![
                Need::HttpsToSetting(rest_access()),
                Need::HttpToSetting(URL.into()),
                Need::RemoteExecOnInstanceHost,
            ],
            adopts_operations_from: None,
            capabilities: Capabilities {
                instance_from_backup: false,
                single_volume_restore: true,
                delete_granularity: DeleteGranularity::RestorePoint,
                deletes_backups_on_offering_removal: false,
                reconciliation: true,
                provider_owned_retention: false,
                cross_zone_instance_creation: false,
                quiesce: false,
                storage_stats: false,
            },
        }
    }

    fn list_policies(_zone: Zone) -> Result<Vec<Policy>> {
        let offerings = ops::offerings(&mut client()?)?;
        Ok(offerings
            .into_iter()
            .map(|(external_id, name, description)| Policy {
                external_id,
                name,
                description,
            })
            .collect())
    }

    fn assign_instance(instance: Instance, policy_external_id: String) -> Result<Option<String>> {
        ops::check_kvm(&vm_of(&instance))?;
        // NetWorker keeps nothing per instance: the policy only has to exist.
        if !Self::validate_policy(
            Zone {
                uuid: String::new(),
                name: String::new(),
            },
            policy_external_id.clone(),
        )? {
            return Err(ProviderError::NotFound(format!(
                "NetWorker has no protection policy {policy_external_id} marked -CSBKP-"
            )));
        }
        Ok(None)
    }

    fn remove_instance(instance: Instance, _policy_external_id: String) -> Result<()> {
        // Save sets stay in NetWorker until their retention passes; nothing to undo.
        ops::check_kvm(&vm_of(&instance)).map_err(ProviderError::from)
    }

    fn start_backup(
        instance: Instance,
        policy_external_id: String,
        _options: BackupOptions,
    ) -> Result<Started> {
        let host = current_host();
        ops::start_backup(
            &mut client()?,
            &mut Ssh,
            &config()?,
            &vm_of(&instance),
            host.as_ref(),
            &policy_external_id,
            now(),
        )
        .map(pending)
        .map_err(ProviderError::from)
    }

    fn start_delete(backup: BackupRef, _forced: bool) -> Result<Started> {
        ops::delete(&mut client()?, &backup.external_id)?;
        Ok(Started::Done(OperationResult::Deleted))
    }

    fn start_restore(backup: BackupRef, target: RestoreTarget) -> Result<Started> {
        let instance = match target {
            RestoreTarget::InPlace(instance) => instance,
            RestoreTarget::NewInstance(_) => {
                return Err(ProviderError::Unsupported(
                    "NetWorker restores an instance in place only".into(),
                ));
            }
        };
        let host = current_host();
        ops::start_restore(
            &mut client()?,
            &mut Ssh,
            &config()?,
            &vm_of(&instance),
            &backup.external_id,
            host.as_ref(),
            now(),
        )
        .map(pending)
        .map_err(ProviderError::from)
    }

    fn start_restore_volume(request: VolumeRestoreRequest) -> Result<Started> {
        ops::check_kvm(&vm_of(&request.attach_to))?;
        let host = current_host();
        ops::start_restore_volume(
            &mut client()?,
            &mut Ssh,
            &config()?,
            &request.backup.external_id,
            &request.volume.uuid,
            &random::uuid(),
            request.volume.size,
            host.as_ref(),
            now(),
        )
        .map(pending)
        .map_err(ProviderError::from)
    }

    fn poll_operation(handle: String) -> Result<PollStatus> {
        let status = ops::poll(&mut client()?, &mut Ssh, &handle, now())?;
        Ok(match status {
            Status::Running(message) => PollStatus::Running(Progress {
                percent: 0,
                message,
            }),
            Status::Failed(error) => PollStatus::Failed(error.into()),
            Status::Finished(Outcome::BackupTaken {
                id,
                kind,
                size,
                protected_size,
                created,
            }) => PollStatus::Finished(OperationResult::BackupTaken(BackupTaken {
                external_id: id,
                kind,
                size,
                protected_size,
                created: Some(unsigned(created)),
            })),
            Status::Finished(Outcome::Restored) => PollStatus::Finished(OperationResult::Restored),
            Status::Finished(Outcome::VolumeRestored { path, size }) => {
                PollStatus::Finished(OperationResult::VolumeRestored(VolumeRestored {
                    path,
                    size,
                }))
            }
        })
    }

    fn cancel_operation(handle: String) -> Result<()> {
        ops::cancel(&mut Ssh, &handle).map_err(ProviderError::from)
    }

    fn list_restore_points(instance: Instance) -> Result<Vec<RestorePoint>> {
        let points = ops::restore_points(&mut client()?, &vm_of(&instance), now())?;
        Ok(points
            .into_iter()
            .map(|p| RestorePoint {
                id: p.id,
                created: unsigned(p.created),
                kind: p.kind,
                size: p.size,
                protected_size: instance.volumes.iter().map(|v| v.size).sum(),
            })
            .collect())
    }

    fn metrics(_zone: Zone, instances: Vec<Instance>) -> Result<Vec<Metric>> {
        let vms: Vec<Vm> = instances.iter().map(vm_of).collect();
        let metrics = ops::metrics(&mut client()?, &vms, now())?;
        Ok(metrics
            .into_iter()
            .map(|(instance_uuid, size, protected_size)| Metric {
                instance_uuid,
                size,
                protected_size,
            })
            .collect())
    }
}

bnr_sdk::export_provider!(Networker);
