//! The component: binds the operations to the host's HTTP and remote-exec imports and to the
//! WIT exports (`bnr:provider@1.1.0`).

use std::time::Duration;

use bnr_sdk::prelude::*;

use crate::em::{self, Em, PASSWORD_SETTING, URL_SETTING, USERNAME_SETTING};
use crate::error::Error;
use crate::ops::{self, Handle, Limits, Progress, Vm};
use crate::ps::{self, ShellOutput};

const VALIDATE_SSL: &str = "backup.plugin.veeam.validate.ssl";
const PINNED_CERT: &str = "backup.plugin.veeam.tls.pinned.cert";
const CA_PEM: &str = "backup.plugin.veeam.tls.ca";
const REQUEST_TIMEOUT: &str = "backup.plugin.veeam.request.timeout";
const RESTORE_TIMEOUT: &str = "backup.plugin.veeam.restore.timeout";
const TASK_POLL_INTERVAL: &str = "backup.plugin.veeam.task.poll.interval";
const TASK_POLL_MAX_RETRY: &str = "backup.plugin.veeam.task.poll.max.retry";
const VERSION: &str = "backup.plugin.veeam.version";
const SSH_PORT: &str = "backup.plugin.veeam.ssh.port";
const SSH_HOST_KEY: &str = "backup.plugin.veeam.ssh.host.key";
const SSH_PRIVATE_KEY: &str = "backup.plugin.veeam.ssh.private.key";
const VCENTER: &str = "backup.plugin.veeam.vcenter";
const DATASTORE: &str = "backup.plugin.veeam.restore.datastore";

/// Largest EM answer read (a page of 500 restore points is well below).
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Largest PowerShell output read.
const MAX_OUTPUT_BYTES: u32 = 4 << 20;

pub struct Veeam;

/// The Enterprise Manager endpoint and the settings that establish trust in it.
fn em_access() -> HttpsAccess {
    HttpsAccess::new(URL_SETTING)
        .pinned_cert(PINNED_CERT)
        .ca_pem(CA_PEM)
        .validate(VALIDATE_SSL)
}

struct Http {
    timeout: Duration,
}

impl em::Transport for Http {
    fn send(&mut self, request: em::Request) -> crate::error::Result<em::Response> {
        let method = http::Method::from_name(request.method)
            .ok_or_else(|| Error::Internal(format!("HTTP method {}", request.method)))?;
        let response = http::Request::new(method, &request.url)
            .headers(request.headers)
            .body(request.body.unwrap_or_default())
            .timeout(self.timeout)
            .max_response_bytes(MAX_RESPONSE_BYTES)
            .send()
            .map_err(|e| e.naming_endpoint("Enterprise Manager", &em_access()))?;
        Ok(em::Response {
            status: response.status(),
            headers: response
                .headers()
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            body: response.into_body(),
        })
    }
}

struct Ssh {
    target: String,
    timeout: Duration,
}

impl ps::Shell for Ssh {
    fn run(&mut self, script: &str) -> crate::error::Result<ShellOutput> {
        let output = exec::Command::new(&self.target, ps::COMMAND)
            .stdin(script)
            .timeout(self.timeout)
            .max_output_bytes(MAX_OUTPUT_BYTES)
            .run()
            .map_err(|e| {
                let mut message = format!("PowerShell over SSH to the Veeam server: {}", exec::describe_error(&e));
                if matches!(e, exec::ExecError::HostKeyUnknown(_) | exec::ExecError::HostKeyMismatch(_)) {
                    message.push_str(&format!(" (setting {SSH_HOST_KEY})"));
                }
                match ProviderError::from(e) {
                    ProviderError::InvalidConfig(_) => Error::InvalidConfig(message),
                    ProviderError::Unauthorized(_) => Error::Unauthorized(format!(
                        "{message}; check {USERNAME_SETTING} and {PASSWORD_SETTING} or {SSH_PRIVATE_KEY}"
                    )),
                    ProviderError::Unavailable(_) => Error::Unavailable(message),
                    _ => Error::Internal(message),
                }
            })?;
        Ok(ShellOutput {
            exit: output.exit_code,
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}

struct Sleep;

impl ops::Clock for Sleep {
    fn sleep_ms(&mut self, ms: u64) {
        time::sleep(Duration::from_millis(ms));
    }
}

/// The zone's connection settings, checked.
struct Config {
    url: String,
    username: String,
    password: String,
    request_timeout: Duration,
    limits: Limits,
}

fn config() -> Result<Config> {
    let url = settings::get(URL_SETTING).unwrap_or_else(|| "https://localhost:9398/api/".into());
    let version: u32 = settings::parse_or(VERSION, 0)?;
    if (1..11).contains(&version) {
        return Err(ProviderError::InvalidConfig(format!(
            "{VERSION}={version}: Veeam Backup & Replication before 11 is not supported"
        )));
    }
    let seconds =
        |name: &str, default: u64, max: u64| settings::parse_within(name, default, 1..=max);
    Ok(Config {
        url,
        username: settings::get(USERNAME_SETTING).unwrap_or_else(|| "administrator".into()),
        password: settings::get(PASSWORD_SETTING).unwrap_or_default(),
        request_timeout: Duration::from_secs(seconds(REQUEST_TIMEOUT, 300, 3600)?),
        limits: Limits {
            task_poll_interval_ms: seconds(TASK_POLL_INTERVAL, 5, 600)? * 1000,
            task_poll_max_retry: seconds(TASK_POLL_MAX_RETRY, 120, 10_000)? as u32,
        },
    })
}

/// When a restore started now is given up: `backup.plugin.veeam.restore.timeout` from now.
fn restore_deadline() -> Result<u64> {
    let seconds = settings::parse_within(RESTORE_TIMEOUT, 600, 1..=7 * 86_400)?;
    Ok(time::now_unix_secs() + seconds)
}

fn em_client(config: &Config) -> Result<Em<Http>> {
    Em::new(
        Http {
            timeout: config.request_timeout,
        },
        &config.url,
        &config.username,
        &config.password,
    )
    .map_err(ProviderError::from)
}

fn shell(config: &Config) -> Result<Ssh> {
    let target = http::url_host(&config.url)
        .ok_or_else(|| ProviderError::InvalidConfig(format!("{URL_SETTING} names no host")))?;
    // The PowerShell side may wait on the Veeam server longer than one HTTP request.
    Ok(Ssh {
        target,
        timeout: config.request_timeout,
    })
}

/// One EM session around `work`, always logged out.
fn with_em<R>(work: impl FnOnce(&mut Em<Http>, &Config) -> crate::error::Result<R>) -> Result<R> {
    let config = config()?;
    let mut client = em_client(&config)?;
    Ok(client.session(|em| work(em, &config))?)
}

fn vm_of(instance: &Instance) -> Vm {
    Vm {
        uuid: instance.uuid.clone(),
        internal_name: instance.internal_name.clone(),
        hypervisor: instance.hypervisor.clone(),
        host_address: instance.host_address.clone(),
        job: instance.provider_ref.clone(),
    }
}

fn pending(handle: Handle) -> Started {
    Started::Pending(handle.encode())
}

fn point_kind(full: bool) -> &'static str {
    if full { "Full" } else { "Increment" }
}

impl Provider for Veeam {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            name: "veeam".into(),
            description: "Veeam Backup & Replication for VMware instances, through Veeam Backup Enterprise Manager".into(),
            version: "1.0.0".into(),
            settings: vec![
                SettingDecl::url(URL_SETTING, "Veeam Backup Enterprise Manager REST API URL; its host also runs the Veeam PowerShell module over SSH")
                    .with_default("https://localhost:9398/api/"),
                SettingDecl::text(USERNAME_SETTING, "Account for Enterprise Manager (Portal Administrator) and for SSH").with_default("administrator"),
                SettingDecl::secret(PASSWORD_SETTING, "Password of the account"),
                SettingDecl::boolean(VALIDATE_SSL, "Validate Enterprise Manager's certificate (false accepts any certificate from that one server, when no pin or CA is set)")
                    .with_default("true"),
                SettingDecl::text(PINNED_CERT, "SHA-256 fingerprint(s) of Enterprise Manager's certificate to trust"),
                SettingDecl::text(CA_PEM, "CA certificate(s), PEM, that Enterprise Manager's certificate chains to"),
                SettingDecl::integer(REQUEST_TIMEOUT, "Seconds one Enterprise Manager request or PowerShell command may take").with_default("300"),
                SettingDecl::integer(RESTORE_TIMEOUT, "Seconds a restore may take").with_default("600"),
                SettingDecl::integer(TASK_POLL_INTERVAL, "Seconds between polls of a Veeam task").with_default("5"),
                SettingDecl::integer(TASK_POLL_MAX_RETRY, "Polls of a Veeam task before giving up").with_default("120"),
                SettingDecl::integer(VERSION, "Veeam Backup & Replication major version (0: any supported, 11 or later)").with_default("0"),
                SettingDecl::integer(SSH_PORT, "SSH port of the Veeam server").with_default("22"),
                SettingDecl::text(SSH_HOST_KEY, "Pinned SSH host key fingerprint(s) of the Veeam server (SHA256:...)"),
                SettingDecl::secret(SSH_PRIVATE_KEY, "Private key (OpenSSH format) for SSH, tried before the password"),
                SettingDecl::text(VCENTER, "vCenter name Veeam's hierarchy root is matched against (the zone's VMware datacenter vCenter); empty: the only root"),
                SettingDecl::text(DATASTORE, "Datastore restores to a new instance or volume go to").with_default("datastore1"),
            ],
            needs: vec![
                Need::HttpsToSetting(em_access()),
                Need::SshToSetting(SshAccess {
                    host_setting: URL_SETTING.into(),
                    port_setting: Some(SSH_PORT.into()),
                    username_setting: USERNAME_SETTING.into(),
                    password_setting: Some(PASSWORD_SETTING.into()),
                    private_key_setting: Some(SSH_PRIVATE_KEY.into()),
                    host_key_setting: SSH_HOST_KEY.into(),
                }),
            ],
            adopts_operations_from: None,
            capabilities: Capabilities {
                instance_from_backup: true,
                single_volume_restore: true,
                delete_granularity: DeleteGranularity::Chain,
                deletes_backups_on_offering_removal: false,
                reconciliation: true,
                // Retention is the Veeam job's (copied from the template), as in CloudStack,
                // which refuses `maxbackups` for Veeam: bnr's count-based deletes would drop
                // whole chains.
                provider_owned_retention: true,
                cross_zone_instance_creation: false,
                quiesce: false,
                storage_stats: false,
            },
        }
    }

    fn list_policies(_zone: Zone) -> Result<Vec<Policy>> {
        let policies = with_em(|em, _| ops::list_policies(em))?;
        Ok(policies
            .into_iter()
            .map(|p| Policy {
                external_id: p.external_id,
                description: format!("Veeam backup job {}", p.name),
                name: p.name,
            })
            .collect())
    }

    fn validate_policy(_zone: Zone, external_id: String) -> Result<bool> {
        with_em(|em, _| ops::validate_policy(em, &external_id))
    }

    fn assign_instance(instance: Instance, policy_external_id: String) -> Result<Option<String>> {
        let vm = vm_of(&instance);
        ops::require_vmware(&vm)?;
        let config = config()?;
        let mut ssh = shell(&config)?;
        let vcenter = settings::get(VCENTER);
        let job = with_em(|em, config| {
            ops::assign(
                em,
                &mut ssh,
                &mut Sleep,
                config.limits,
                &vm,
                &policy_external_id,
                vcenter.as_deref(),
            )
        })?;
        Ok(Some(job))
    }

    fn remove_instance(instance: Instance, _policy_external_id: String) -> Result<()> {
        let config = config()?;
        ops::remove(&mut shell(&config)?, &vm_of(&instance)).map_err(ProviderError::from)
    }

    fn start_backup(
        instance: Instance,
        _policy: String,
        _options: BackupOptions,
    ) -> Result<Started> {
        let vm = vm_of(&instance);
        ops::require_vmware(&vm)?;
        with_em(|em, _| ops::start_backup(em, &vm)).map(pending)
    }

    fn start_delete(backup: BackupRef, forced: bool) -> Result<Started> {
        let config = config()?;
        ops::delete(&mut shell(&config)?, &backup.external_id, forced)?;
        Ok(Started::Done(OperationResult::Deleted))
    }

    fn start_restore(backup: BackupRef, target: RestoreTarget) -> Result<Started> {
        match target {
            RestoreTarget::InPlace(instance) => {
                ops::require_vmware(&vm_of(&instance))?;
                let deadline = restore_deadline()?;
                with_em(|em, _| ops::start_restore(em, &backup.external_id, deadline)).map(pending)
            }
            RestoreTarget::NewInstance(instance) => {
                ops::require_vmware(&vm_of(&instance))?;
                let config = config()?;
                let host = instance.host_address.clone().ok_or_else(|| {
                    ProviderError::Rejected(format!(
                        "instance {} has no ESXi host to restore to",
                        instance.uuid
                    ))
                })?;
                let datastore = settings::get(DATASTORE).unwrap_or_else(|| "datastore1".into());
                ops::start_restore_vm(
                    &mut shell(&config)?,
                    &backup.external_id,
                    &host,
                    &datastore,
                    &instance.internal_name,
                    None,
                    restore_deadline()?,
                )
                .map(pending)
                .map_err(ProviderError::from)
            }
        }
    }

    fn start_restore_volume(request: VolumeRestoreRequest) -> Result<Started> {
        ops::require_vmware(&vm_of(&request.attach_to))?;
        let config = config()?;
        let host = request.attach_to.host_address.clone().ok_or_else(|| {
            ProviderError::Rejected(format!(
                "instance {} has no ESXi host to restore to",
                request.attach_to.uuid
            ))
        })?;
        let datastore = settings::get(DATASTORE).unwrap_or_else(|| "datastore1".into());
        // Veeam restores whole VMs; the volume is taken from a VM restored under a new name.
        let temporary = format!("CS-RSTR-{}", random::uuid());
        ops::start_restore_vm(
            &mut shell(&config)?,
            &request.backup.external_id,
            &host,
            &datastore,
            &temporary,
            Some(request.volume.size),
            restore_deadline()?,
        )
        .map(pending)
        .map_err(ProviderError::from)
    }

    fn poll_operation(handle: String) -> Result<PollStatus> {
        let handle = Handle::decode(&handle)?;
        let config = config()?;
        let mut ssh = shell(&config)?;
        let now = time::now_unix_secs();
        let progress = with_em(|em, _| ops::poll(em, &mut ssh, &handle, now))?;
        Ok(match progress {
            Progress::Running(percent, message) => {
                PollStatus::Running(bnr_sdk::Progress { percent, message })
            }
            Progress::BackupTaken(point) => {
                PollStatus::Finished(OperationResult::BackupTaken(BackupTaken {
                    external_id: point.id,
                    kind: point_kind(point.full).into(),
                    size: point.size,
                    protected_size: point.protected_size,
                    created: Some(point.created),
                }))
            }
            Progress::Restored => PollStatus::Finished(OperationResult::Restored),
            Progress::VolumeRestored { path, size } => {
                PollStatus::Finished(OperationResult::VolumeRestored(VolumeRestored {
                    path,
                    size,
                }))
            }
            Progress::Failed(error) => PollStatus::Failed(error.into()),
        })
    }

    fn cancel_operation(handle: String) -> Result<()> {
        let handle = Handle::decode(&handle)?;
        with_em(|em, _| ops::cancel(em, &handle))
    }

    fn list_restore_points(instance: Instance) -> Result<Vec<RestorePoint>> {
        let vm = vm_of(&instance);
        ops::require_vmware(&vm)?;
        let points = with_em(|em, _| ops::restore_points(em, &vm.internal_name))?;
        Ok(points
            .into_iter()
            .map(|p| RestorePoint {
                id: p.id,
                created: p.created,
                kind: point_kind(p.full).into(),
                size: p.size,
                protected_size: p.protected_size,
            })
            .collect())
    }

    fn metrics(_zone: Zone, instances: Vec<Instance>) -> Result<Vec<Metric>> {
        let uuids: Vec<String> = instances.iter().map(|i| i.uuid.clone()).collect();
        let totals = with_em(|em, _| ops::metrics(em, &uuids))?;
        Ok(totals
            .into_iter()
            .map(|(instance_uuid, size, protected_size)| Metric {
                instance_uuid,
                size,
                protected_size,
            })
            .collect())
    }
}

bnr_sdk::export_provider!(Veeam);
