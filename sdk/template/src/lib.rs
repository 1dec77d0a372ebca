//! ACME backup provider for bnr: a template to copy.
//!
//! It drives the example appliance (`sdk/example-appliance`, the stand-in for a vendor's
//! product) through its HTTP/JSON API under the zone setting `backup.plugin.acme.url`:
//!
//! - `GET  /policies` → `[{"id", "name", "description"}]`
//! - `PUT  /protected/{vm} {"policy"}`, `DELETE /protected/{vm}`: register, unregister a VM
//! - `POST /backups {"vm", "disk_bytes"}` → `{"job"}`; `GET /backups?vm={vm}` → restore points
//! - `POST /backups/{id}/restore` → `{"job"}`; `DELETE /backups/{id}`
//! - `GET  /jobs/{job}` → `{"state": "running|done|failed", "percent", "backup"?, "error"?}`;
//!   `DELETE /jobs/{job}` cancels
//!
//! To write your provider, keep the shape and replace what is marked **VENDOR**: the settings
//! your product needs, the JSON types it speaks, and the request in each operation.

use bnr_sdk::http::Request;
use bnr_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

struct Acme;

// VENDOR: every setting lives under `backup.plugin.<your provider name>.`.
const URL: &str = "backup.plugin.acme.url";
const USER: &str = "backup.plugin.acme.user";
const KEY: &str = "backup.plugin.acme.key";
const PINNED_CERT: &str = "backup.plugin.acme.tls.pinned.cert";
const CA_PEM: &str = "backup.plugin.acme.tls.ca";
const REQUEST_TIMEOUT: &str = "backup.plugin.acme.request.timeout";
const DEFAULT_USER: &str = "bnr";
/// The product's name in messages to the operator.
const VENDOR: &str = "the ACME appliance";
/// Prefix of the handles this provider returns. A handle outlives the call, a restart of bnr
/// and an upgrade of the provider (within a major version): change its format only with a new
/// prefix, and keep reading the old one.
const HANDLE_PREFIX: &str = "acme-job:";

// VENDOR: the JSON your product speaks.

#[derive(Deserialize)]
struct AcmePolicy {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Serialize)]
struct AcmeProtect<'a> {
    policy: &'a str,
}

#[derive(Serialize)]
struct AcmeBackupRequest<'a> {
    vm: &'a str,
    disk_bytes: u64,
}

#[derive(Deserialize)]
struct AcmeJobStarted {
    job: String,
}

#[derive(Deserialize)]
struct AcmeBackup {
    id: String,
    created: String,
    size: u64,
    protected: u64,
}

#[derive(Deserialize)]
struct AcmeJob {
    state: String,
    #[serde(default)]
    percent: u8,
    backup: Option<AcmeBackup>,
    error: Option<String>,
}

/// What a pending operation is waiting for; encoded in its handle (the provider keeps nothing
/// between calls).
#[derive(Clone, Copy, PartialEq)]
enum JobKind {
    Backup,
    Restore,
}

impl JobKind {
    fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
        }
    }
}

fn handle(kind: JobKind, job: &str) -> Started {
    Started::Pending(format!("{HANDLE_PREFIX}{}:{job}", kind.as_str()))
}

/// `acme-job:backup:job-000001` → (backup, `job-000001`); anything else is not ours.
fn parse_handle(handle: &str) -> Result<(JobKind, &str)> {
    let not_ours = || ProviderError::NotFound(format!("`{handle}` is not an ACME job handle"));
    let rest = handle.strip_prefix(HANDLE_PREFIX).ok_or_else(not_ours)?;
    let (kind, job) = rest.split_once(':').ok_or_else(not_ours)?;
    let kind = match kind {
        "backup" => JobKind::Backup,
        "restore" => JobKind::Restore,
        _ => return Err(not_ours()),
    };
    Ok((kind, segment(job).map_err(|_| not_ours())?))
}

/// An id put into a URL path: only what the appliance's ids are made of, so a stored id can
/// never change which resource a request reaches.
fn segment(id: &str) -> Result<&str> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(id)
    } else {
        Err(ProviderError::Rejected(format!(
            "`{}` is not an ACME id",
            id.chars().take(64).collect::<String>()
        )))
    }
}

/// The endpoint and the settings the host uses to trust its certificate (a product with its
/// own certificate is pinned or given a CA; public certificates need neither).
fn endpoint() -> HttpsAccess {
    HttpsAccess::new(URL)
        .pinned_cert(PINNED_CERT)
        .ca_pem(CA_PEM)
}

/// The zone's connection settings, read on every call.
struct Api {
    base: String,
    user: String,
    key: String,
    timeout: Duration,
}

impl Api {
    fn from_settings() -> Result<Api> {
        Ok(Api {
            base: settings::require(URL)?.trim_end_matches('/').to_owned(),
            user: settings::get_or(USER, DEFAULT_USER),
            key: settings::require(KEY)?,
            timeout: Duration::from_secs(settings::parse_within(REQUEST_TIMEOUT, 30, 1..=300)?),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request` with the credentials. A refused login becomes `unauthorized` naming
    /// the settings to check; an unreachable appliance names the URL setting.
    fn send(&self, request: Request) -> Result<http::Response> {
        let response = request
            .basic_auth(&self.user, &self.key)
            .header("accept", "application/json")
            .timeout(self.timeout)
            .max_response_bytes(4 << 20)
            .send()
            .map_err(|e| e.naming_endpoint(VENDOR, &endpoint()))?;
        response
            .error_for_status()
            .map_err(|e| e.naming_credentials(&[USER, KEY]))
    }

    /// Like [`send`](Self::send), but a 404 is `None`: for deletes that may find the object
    /// already gone.
    fn send_if_found(&self, request: Request) -> Result<Option<http::Response>> {
        match self.send(request) {
            Err(ProviderError::NotFound(_)) => Ok(None),
            other => other.map(Some),
        }
    }
}

/// A backup as the host records it; `created` is the appliance's RFC 3339 time.
fn backup_taken(backup: AcmeBackup) -> Result<BackupTaken> {
    let created = bnr_sdk::time::parse_rfc3339(&backup.created).ok_or_else(|| {
        ProviderError::Internal(format!(
            "backup {} has an unreadable time `{}`",
            backup.id, backup.created
        ))
    })?;
    Ok(BackupTaken {
        external_id: backup.id,
        kind: "FULL".into(),
        size: backup.size,
        protected_size: backup.protected,
        created: u64::try_from(created).ok(),
    })
}

impl Provider for Acme {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            // VENDOR: a unique lower-case name; operators select it with
            // `backup.framework.provider.plugin`.
            name: "acme".into(),
            description: "ACME backup appliance".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            settings: vec![
                SettingDecl::url(
                    URL,
                    "ACME API base URL, e.g. https://acme.example:8443/api/v1",
                ),
                SettingDecl::text(USER, "ACME API user").with_default(DEFAULT_USER),
                SettingDecl::secret(KEY, "ACME API key of that user"),
                SettingDecl::text(
                    PINNED_CERT,
                    "SHA-256 fingerprint(s) of the appliance's certificate to trust",
                ),
                SettingDecl::text(CA_PEM, "CA certificate(s), PEM, of the appliance"),
                SettingDecl::integer(REQUEST_TIMEOUT, "Seconds one ACME request may take")
                    .with_default("30"),
            ],
            // Setting the URL grants the reach: HTTPS with the trust settings above, and plain
            // HTTP for a lab appliance. VENDOR: drop `HttpToSetting` if your product only
            // speaks HTTPS.
            needs: vec![
                Need::HttpsToSetting(endpoint()),
                Need::HttpToSetting(URL.into()),
            ],
            adopts_operations_from: None,
            capabilities: Capabilities {
                reconciliation: true,
                delete_granularity: DeleteGranularity::RestorePoint,
                ..Capabilities::none()
            },
        }
    }

    fn list_policies(_zone: Zone) -> Result<Vec<Policy>> {
        let api = Api::from_settings()?;
        let policies: Vec<AcmePolicy> = api.send(Request::get(&api.url("/policies")))?.json()?;
        Ok(policies
            .into_iter()
            .map(|policy| Policy {
                external_id: policy.id,
                name: policy.name,
                description: policy.description,
            })
            .collect())
    }

    // `validate_policy` defaults to looking the id up in `list_policies`.

    fn assign_instance(instance: Instance, policy: String) -> Result<Option<String>> {
        let api = Api::from_settings()?;
        let vm = segment(&instance.uuid)?;
        let request = Request::put(&api.url(&format!("/protected/{vm}")))
            .json(&AcmeProtect { policy: &policy });
        api.send(request)?;
        bnr_sdk::info!("{} is protected by ACME policy {policy}", instance.name);
        // Nothing to remember: the appliance knows the VM by its uuid.
        Ok(None)
    }

    fn remove_instance(instance: Instance, _policy: String) -> Result<()> {
        let api = Api::from_settings()?;
        let vm = segment(&instance.uuid)?;
        api.send_if_found(Request::delete(&api.url(&format!("/protected/{vm}"))))?;
        Ok(())
    }

    fn start_backup(
        instance: Instance,
        _policy: String,
        _options: BackupOptions,
    ) -> Result<Started> {
        let api = Api::from_settings()?;
        let body = AcmeBackupRequest {
            vm: segment(&instance.uuid)?,
            disk_bytes: instance.total_volume_size(),
        };
        let started: AcmeJobStarted = api
            .send(Request::post(&api.url("/backups")).json(&body))?
            .json()?;
        bnr_sdk::info!("ACME job {} backs up {}", started.job, instance.name);
        // Long work: answer at once with a handle; the host polls it.
        Ok(handle(JobKind::Backup, segment(&started.job)?))
    }

    fn start_restore(backup: BackupRef, target: RestoreTarget) -> Result<Started> {
        let RestoreTarget::InPlace(instance) = target else {
            return Err(ProviderError::Unsupported(
                "ACME restores an instance in place only".into(),
            ));
        };
        let api = Api::from_settings()?;
        let id = segment(&backup.external_id)?;
        let started: AcmeJobStarted = api
            .send(Request::post(&api.url(&format!("/backups/{id}/restore"))))?
            .json()?;
        bnr_sdk::info!("ACME job {} restores {}", started.job, instance.name);
        Ok(handle(JobKind::Restore, segment(&started.job)?))
    }

    fn poll_operation(handle: String) -> Result<PollStatus> {
        let (kind, job_id) = parse_handle(&handle)?;
        let api = Api::from_settings()?;
        let job: AcmeJob = api
            .send(Request::get(&api.url(&format!("/jobs/{job_id}"))))?
            .json()?;
        Ok(match (job.state.as_str(), kind) {
            ("done", JobKind::Backup) => {
                let backup = job.backup.ok_or_else(|| {
                    ProviderError::Internal(format!(
                        "ACME job {job_id} finished without a backup: {}",
                        job.error.unwrap_or_default()
                    ))
                })?;
                PollStatus::Finished(OperationResult::BackupTaken(backup_taken(backup)?))
            }
            ("done", JobKind::Restore) => PollStatus::Finished(OperationResult::Restored),
            ("failed", _) => PollStatus::Failed(ProviderError::Rejected(format!(
                "ACME job {job_id} failed: {}",
                job.error.unwrap_or_else(|| "no reason given".into())
            ))),
            _ => PollStatus::Running(Progress {
                percent: job.percent.min(100),
                message: format!("ACME {} job {job_id} is {}", kind.as_str(), job.state),
            }),
        })
    }

    fn cancel_operation(handle: String) -> Result<()> {
        let (_, job_id) = parse_handle(&handle)?;
        let api = Api::from_settings()?;
        api.send(Request::delete(&api.url(&format!("/jobs/{job_id}"))))?;
        Ok(())
    }

    fn start_delete(backup: BackupRef, _forced: bool) -> Result<Started> {
        let api = Api::from_settings()?;
        let id = segment(&backup.external_id)?;
        // Already gone counts as deleted, so a retried delete succeeds.
        api.send_if_found(Request::delete(&api.url(&format!("/backups/{id}"))))?;
        Ok(Started::Done(OperationResult::Deleted))
    }

    fn list_restore_points(instance: Instance) -> Result<Vec<RestorePoint>> {
        let api = Api::from_settings()?;
        let vm = segment(&instance.uuid)?;
        let backups: Vec<AcmeBackup> = api
            .send(Request::get(&api.url(&format!("/backups?vm={vm}"))))?
            .json()?;
        backups
            .into_iter()
            .map(|backup| {
                let taken = backup_taken(backup)?;
                Ok(RestorePoint {
                    id: taken.external_id,
                    created: taken.created.unwrap_or(0),
                    kind: taken.kind,
                    size: taken.size,
                    protected_size: taken.protected_size,
                })
            })
            .collect()
    }
}

bnr_sdk::export_provider!(Acme);
