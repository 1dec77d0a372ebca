//! ACME backup provider for bnr: a template to copy.
//!
//! It talks to an imaginary REST API at the zone setting `backup.plugin.acme.url`:
//!
//! - `GET  /policies` → `[{"id": "...", "name": "...", "description": "..."}]`
//! - `POST /backups {"vm": "<uuid>", "policy": "<id>"}` → `{"job": "<job id>"}`
//! - `GET  /jobs/<job id>` → `{"state": "running|done|failed", "percent": 40,
//!   "backup": {"id": "...", "size": 1, "protected": 2}, "error": "..."}`
//! - `DELETE /backups/<id>`
//!
//! Replace the API calls with your vendor's; keep the shape: settings declared in `describe`,
//! HTTP only to the granted URL, long work returned as a pending handle and polled.

use bnr_sdk::http::Request;
use bnr_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

struct Acme;

const URL: &str = "backup.plugin.acme.url";
const USERNAME: &str = "backup.plugin.acme.username";
const PASSWORD: &str = "backup.plugin.acme.password";
const DEFAULT_USERNAME: &str = "bnr";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Prefix of the handles this provider returns; the rest is the vendor's job id.
const JOB_HANDLE_PREFIX: &str = "acme-job:";

#[derive(Deserialize)]
struct AcmePolicy {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Serialize)]
struct AcmeBackupRequest<'a> {
    vm: &'a str,
    policy: &'a str,
}

#[derive(Deserialize)]
struct AcmeJobStarted {
    job: String,
}

#[derive(Deserialize)]
struct AcmeBackup {
    id: String,
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

/// The base URL and credentials, read on every call (providers keep no state between calls).
struct Api {
    base: String,
    username: String,
    password: String,
}

impl Api {
    fn from_settings() -> Result<Api> {
        Ok(Api {
            base: settings::require(URL)?.trim_end_matches('/').to_owned(),
            username: settings::get(USERNAME).unwrap_or_else(|| DEFAULT_USERNAME.into()),
            password: settings::require(PASSWORD)?,
        })
    }

    fn request(&self, request: Request) -> Result<http::Response> {
        Ok(request
            .basic_auth(&self.username, &self.password)
            .header("accept", "application/json")
            .timeout(REQUEST_TIMEOUT)
            .send()?
            .error_for_status()
            .map_err(|e| e.naming_credentials(&[USERNAME, PASSWORD]))?)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Provider for Acme {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            name: "acme".into(),
            description: "ACME backup appliance".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            settings: vec![
                SettingDecl::url(
                    URL,
                    "ACME REST API base URL, e.g. https://acme.example:8443/api",
                ),
                SettingDecl::text(USERNAME, "ACME API user").with_default(DEFAULT_USERNAME),
                SettingDecl::secret(PASSWORD, "ACME API password"),
            ],
            needs: vec![Need::HttpToSetting(URL.into())],
            adopts_operations_from: None,
            capabilities: Capabilities {
                delete_granularity: DeleteGranularity::RestorePoint,
                ..Capabilities::none()
            },
        }
    }

    fn list_policies(_zone: Zone) -> Result<Vec<Policy>> {
        let api = Api::from_settings()?;
        let policies: Vec<AcmePolicy> = api.request(Request::get(&api.url("/policies")))?.json()?;
        bnr_sdk::debug!("ACME offers {} policies", policies.len());
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

    fn assign_instance(_instance: Instance, _policy: String) -> Result<Option<String>> {
        // ACME needs no registration: the policy is named on every backup.
        Ok(None)
    }

    fn remove_instance(_instance: Instance, _policy: String) -> Result<()> {
        Ok(())
    }

    fn start_backup(
        instance: Instance,
        policy: String,
        _options: BackupOptions,
    ) -> Result<Started> {
        let api = Api::from_settings()?;
        let body = AcmeBackupRequest {
            vm: &instance.uuid,
            policy: &policy,
        };
        let started: AcmeJobStarted = api
            .request(Request::post(&api.url("/backups")).json(&body))?
            .json()?;
        bnr_sdk::info!(
            "ACME backup job {} started for {}",
            started.job,
            instance.name
        );
        Ok(Started::Pending(format!(
            "{JOB_HANDLE_PREFIX}{}",
            started.job
        )))
    }

    fn poll_operation(handle: String) -> Result<PollStatus> {
        let job_id = handle
            .strip_prefix(JOB_HANDLE_PREFIX)
            .ok_or_else(|| ProviderError::NotFound(format!("not an ACME handle: `{handle}`")))?;
        let api = Api::from_settings()?;
        let job: AcmeJob = api
            .request(Request::get(&api.url(&format!("/jobs/{job_id}"))))?
            .json()?;
        Ok(match job.state.as_str() {
            "done" => {
                let backup = job.backup.ok_or_else(|| {
                    ProviderError::Internal("finished job without a backup".into())
                })?;
                PollStatus::Finished(OperationResult::BackupTaken(BackupTaken {
                    external_id: backup.id,
                    kind: "FULL".into(),
                    size: backup.size,
                    protected_size: backup.protected,
                    created: None,
                }))
            }
            "failed" => PollStatus::Failed(ProviderError::Rejected(
                job.error
                    .unwrap_or_else(|| "ACME reported a failure".into()),
            )),
            _ => PollStatus::Running(Progress {
                percent: job.percent.min(100),
                message: format!("ACME job {job_id} is {}", job.state),
            }),
        })
    }

    fn start_delete(backup: BackupRef, _forced: bool) -> Result<Started> {
        let api = Api::from_settings()?;
        api.request(Request::delete(
            &api.url(&format!("/backups/{}", backup.external_id)),
        ))?;
        Ok(Started::Done(OperationResult::Deleted))
    }
}

bnr_sdk::export_provider!(Acme);
