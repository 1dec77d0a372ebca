//! `bnr plugin check`: the provider contract run against one component and its vendor
//! endpoint, clause by clause. Every call goes through the same sandbox as in the server (so
//! its bounds apply); a pending operation is polled for at most [`OPERATION_BOUND`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bnr_runtime::types::{
    BackupOptions, BackupRef, Instance, OperationResult, PollStatus, ProviderError, RestoreTarget,
    Started, Volume, VolumeKind, Zone,
};
use bnr_runtime::{CallContext, CallError, Grants, Provider, Runtime, setting_prefix};

/// Longest a pending operation is polled before its clause fails.
pub const OPERATION_BOUND: Duration = Duration::from_secs(300);
/// The clauses of the contract proper, in order (besides loading and the bound).
const CONTRACT: &[&str] = &[
    "policies list",
    CREDENTIALS,
    "validate agrees with the list",
    "assign",
    "back up and poll to the end",
    "list restore points",
    "restore",
    "delete",
    "remove",
    "errors are typed",
];
/// The clause that a refused credential is `unauthorized` and names the settings to check.
const CREDENTIALS: &str = "refused credentials name their settings";
/// Appended to every secret setting given, to make the vendor refuse them.
const WRONG_SECRET_SUFFIX: &str = "-bnr-check-wrong";
/// Pause between polls.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// One clause's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub name: &'static str,
    /// `Ok(note)`: passed; `Err(reason)`: failed.
    pub outcome: Result<String, String>,
}

impl Clause {
    fn pass(name: &'static str, note: impl Into<String>) -> Self {
        Clause {
            name,
            outcome: Ok(note.into()),
        }
    }
    fn fail(name: &'static str, reason: impl Into<String>) -> Self {
        Clause {
            name,
            outcome: Err(reason.into()),
        }
    }
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl std::fmt::Display for Clause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(note) if note.is_empty() => write!(f, "PASS  {}", self.name),
            Ok(note) => write!(f, "PASS  {}: {note}", self.name),
            Err(reason) => write!(f, "FAIL  {}: {reason}", self.name),
        }
    }
}

/// The instance every clause works on: made up, with a root and a data volume.
fn test_instance() -> Instance {
    let volume = |uuid: &str, kind, size: u64, device_id| Volume {
        uuid: uuid.into(),
        name: format!("{uuid}-name"),
        kind,
        size,
        path: format!("/check/{uuid}"),
        device_id,
        disk_offering_id: None,
    };
    Instance {
        uuid: "bnr-check-instance".into(),
        name: "bnr-check".into(),
        internal_name: "i-2-99-VM".into(),
        hypervisor: "KVM".into(),
        host_address: None,
        state: "Stopped".into(),
        volumes: vec![
            volume("bnr-check-root", VolumeKind::Root, 1 << 30, 0),
            volume("bnr-check-data", VolumeKind::Datadisk, 1 << 30, 1),
        ],
        provider_ref: None,
    }
}

/// Loads `wasm` and runs the contract with `settings` (the zone's values). Needs a tokio runtime.
pub async fn run(rt: &Arc<Runtime>, wasm: Vec<u8>, settings: &[(String, String)]) -> Vec<Clause> {
    let mut clauses = Vec::new();
    let loader = rt.clone();
    let loaded = tokio::task::spawn_blocking(move || loader.load_bytes(&wasm)).await;
    let provider = match loaded {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            clauses.push(Clause::fail("describe is valid", e.to_string()));
            return clauses;
        }
        Err(_) => {
            clauses.push(Clause::fail("describe is valid", "the loader failed"));
            return clauses;
        }
    };
    let prefix = setting_prefix(provider.name());
    clauses.push(Clause::pass(
        "describe is valid",
        format!(
            "{} {} (WIT {}), {} settings under {prefix}",
            provider.name(),
            provider.version(),
            provider.wit_version(),
            provider.info().settings.len()
        ),
    ));
    let unknown: Vec<&str> = settings
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !provider.info().settings.iter().any(|s| s.name == *k))
        .collect();
    if !unknown.is_empty() {
        clauses.push(Clause::fail(
            "settings given are declared",
            format!(
                "{} not declared by the provider (declared: {})",
                unknown.join(", "),
                provider
                    .info()
                    .settings
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let values: HashMap<String, String> = settings.iter().cloned().collect();
    let grants = Grants::derive(provider.info(), &values, None, &[]);
    let ctx = CallContext::new("bnr-check-zone", values.clone(), grants);
    let mut checker = Checker {
        provider,
        ctx,
        values,
        bound_hits: Vec::new(),
    };
    checker.contract(&mut clauses).await;
    // Clauses after a failed step they depend on did not run: that proves nothing, so they fail.
    for name in CONTRACT {
        if !clauses.iter().any(|c| c.name == *name) {
            clauses.push(Clause::fail(name, "not run: a step it depends on failed"));
        }
    }
    clauses.push(if checker.bound_hits.is_empty() {
        Clause::pass("no call outlives its bound", "")
    } else {
        Clause::fail("no call outlives its bound", checker.bound_hits.join("; "))
    });
    clauses
}

struct Checker {
    provider: Arc<Provider>,
    ctx: CallContext,
    /// The settings given on the command line.
    values: HashMap<String, String>,
    bound_hits: Vec<String>,
}

impl Checker {
    /// Notes a call that hit a sandbox bound; the error text either way.
    fn note(&mut self, call: &str, e: &CallError) -> String {
        if matches!(
            e,
            CallError::Timeout | CallError::CpuLimit | CallError::MemoryLimit
        ) {
            self.bound_hits.push(format!("{call}: {e}"));
        }
        format!("{call}: {e}")
    }

    async fn contract(&mut self, clauses: &mut Vec<Clause>) {
        let zone = Zone {
            uuid: "bnr-check-zone".into(),
            name: "bnr check".into(),
        };
        let vm = test_instance();
        // Policies, and validate agreeing with them.
        let provider = self.provider.clone();
        let policies = match provider.list_policies(&self.ctx, &zone).await {
            Ok(p) if p.is_empty() => {
                clauses.push(Clause::fail("policies list", "list-policies returned none"));
                return;
            }
            Ok(p) => p,
            Err(e) => {
                let reason = self.note("list-policies", &e);
                clauses.push(Clause::fail("policies list", reason));
                return;
            }
        };
        clauses.push(Clause::pass(
            "policies list",
            policies
                .iter()
                .map(|p| p.external_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ));
        let credentials = self.credentials(&zone).await;
        clauses.push(credentials);

        let mut disagreements = Vec::new();
        for policy in &policies {
            match provider
                .validate_policy(&self.ctx, &zone, &policy.external_id)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    disagreements.push(format!("{} listed but not valid", policy.external_id))
                }
                Err(e) => disagreements.push(self.note("validate-policy", &e)),
            }
        }
        match provider
            .validate_policy(&self.ctx, &zone, "bnr-check-no-such-policy")
            .await
        {
            Ok(false) => {}
            Ok(true) => disagreements.push("a made-up policy id is valid".into()),
            Err(e) => disagreements.push(self.note("validate-policy", &e)),
        }
        clauses.push(if disagreements.is_empty() {
            Clause::pass("validate agrees with the list", "")
        } else {
            Clause::fail("validate agrees with the list", disagreements.join("; "))
        });

        let policy = policies[0].external_id.clone();
        match provider.assign_instance(&self.ctx, &vm, &policy).await {
            Ok(_) => clauses.push(Clause::pass("assign", format!("to {policy}"))),
            Err(e) => {
                let reason = self.note("assign-instance", &e);
                clauses.push(Clause::fail("assign", reason));
                return;
            }
        }

        let started = provider
            .start_backup(&self.ctx, &vm, &policy, BackupOptions { quiesce: false })
            .await;
        let taken = match self.drive("start-backup", started).await {
            Ok(OperationResult::BackupTaken(t)) => {
                clauses.push(Clause::pass(
                    "back up and poll to the end",
                    format!("{} ({} bytes)", t.external_id, t.size),
                ));
                t
            }
            Ok(other) => {
                clauses.push(Clause::fail(
                    "back up and poll to the end",
                    format!("finished with {other:?}, not backup-taken"),
                ));
                return;
            }
            Err(reason) => {
                clauses.push(Clause::fail("back up and poll to the end", reason));
                return;
            }
        };
        let backup = BackupRef {
            external_id: taken.external_id.clone(),
            offering_external_id: policy.clone(),
            instance_uuid: vm.uuid.clone(),
            volumes: vm.volumes.clone(),
        };

        if provider.info().capabilities.reconciliation {
            clauses.push(match provider.list_restore_points(&self.ctx, &vm).await {
                Ok(points) if points.iter().any(|p| p.id == taken.external_id) => {
                    Clause::pass("list restore points", format!("{} points", points.len()))
                }
                Ok(points) => Clause::fail(
                    "list restore points",
                    format!(
                        "the backup {} is not among the {} points",
                        taken.external_id,
                        points.len()
                    ),
                ),
                Err(e) => Clause::fail("list restore points", self.note("list-restore-points", &e)),
            });
        } else {
            clauses.push(Clause::pass(
                "list restore points",
                "not declared (capabilities.reconciliation = false)",
            ));
        }

        let started = provider
            .start_restore(&self.ctx, &backup, &RestoreTarget::InPlace(vm.clone()))
            .await;
        clauses.push(match self.drive("start-restore", started).await {
            Ok(OperationResult::Restored) => Clause::pass("restore", "in place"),
            Ok(other) => Clause::fail("restore", format!("finished with {other:?}, not restored")),
            Err(reason) => Clause::fail("restore", reason),
        });

        let started = provider.start_delete(&self.ctx, &backup, false).await;
        clauses.push(match self.drive("start-delete", started).await {
            Ok(OperationResult::Deleted) => Clause::pass("delete", ""),
            Ok(other) => Clause::fail("delete", format!("finished with {other:?}, not deleted")),
            Err(reason) => Clause::fail("delete", reason),
        });

        clauses.push(
            match provider.remove_instance(&self.ctx, &vm, &policy).await {
                Ok(()) => Clause::pass("remove", ""),
                Err(e) => Clause::fail("remove", self.note("remove-instance", &e)),
            },
        );

        // A handle the provider never issued must be refused with a typed error, not a trap.
        clauses.push(
            match provider
                .poll_operation(&self.ctx, "bnr-check-no-such-handle")
                .await
            {
                Err(CallError::Provider(e)) => Clause::pass("errors are typed", format!("{e:?}")),
                Ok(status) => Clause::fail(
                    "errors are typed",
                    format!("polling an unknown handle answered {status:?}"),
                ),
                Err(e) => Clause::fail("errors are typed", self.note("poll-operation", &e)),
            },
        );
    }

    /// Lists the policies again with every secret setting given made wrong: the vendor's
    /// refusal must come back as `unauthorized`, naming a setting the operator can check.
    async fn credentials(&mut self, zone: &Zone) -> Clause {
        let secrets: Vec<String> = self
            .provider
            .info()
            .settings
            .iter()
            .filter(|s| s.secret && self.values.contains_key(&s.name))
            .map(|s| s.name.clone())
            .collect();
        if secrets.is_empty() {
            return Clause::pass(CREDENTIALS, "no secret setting given");
        }
        let mut wrong = self.values.clone();
        for name in &secrets {
            if let Some(value) = wrong.get_mut(name) {
                value.push_str(WRONG_SECRET_SUFFIX);
            }
        }
        let grants = Grants::derive(self.provider.info(), &wrong, None, &[]);
        let ctx = CallContext::new("bnr-check-zone", wrong, grants);
        let provider = self.provider.clone();
        match provider.list_policies(&ctx, zone).await {
            Err(CallError::Provider(ProviderError::Unauthorized(message))) => {
                let declared = &self.provider.info().settings;
                if declared.iter().any(|s| message.contains(&s.name)) {
                    Clause::pass(CREDENTIALS, message)
                } else {
                    Clause::fail(
                        CREDENTIALS,
                        format!(
                            "unauthorized, but no setting is named for the operator to check \
                             (the SDK's `HttpError::naming_credentials` does it): {message}"
                        ),
                    )
                }
            }
            Ok(_) => Clause::fail(
                CREDENTIALS,
                format!(
                    "list-policies succeeded with wrong values of {}",
                    secrets.join(", ")
                ),
            ),
            Err(e) => {
                let reason = self.note("list-policies", &e);
                Clause::fail(
                    CREDENTIALS,
                    format!(
                        "wrong {} did not give unauthorized: {reason}",
                        secrets.join(", ")
                    ),
                )
            }
        }
    }

    /// A `start-*` answer driven to its result: polled while pending, within the bound.
    async fn drive(
        &mut self,
        call: &str,
        started: Result<Started, CallError>,
    ) -> Result<OperationResult, String> {
        let handle = match started {
            Ok(Started::Done(result)) => return Ok(result),
            Ok(Started::Pending(handle)) => handle,
            Err(e) => return Err(self.note(call, &e)),
        };
        let deadline = Instant::now() + OPERATION_BOUND;
        let provider = self.provider.clone();
        loop {
            match provider.poll_operation(&self.ctx, &handle).await {
                Ok(PollStatus::Finished(result)) => return Ok(result),
                Ok(PollStatus::Failed(e)) => return Err(format!("{call} failed: {e:?}")),
                Ok(PollStatus::Running(_)) => {}
                Err(e) => return Err(self.note("poll-operation", &e)),
            }
            if Instant::now() >= deadline {
                let _ = provider.cancel_operation(&self.ctx, &handle).await;
                self.bound_hits.push(format!(
                    "{call}: still pending after {} s",
                    OPERATION_BOUND.as_secs()
                ));
                return Err(format!(
                    "{call}: still pending after {} s (cancelled)",
                    OPERATION_BOUND.as_secs()
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
