//! Host bindings generated from the frozen WIT package `bnr:provider@1.0.0`, and their
//! conversions from and to the host types.
//!
//! Every import is `async` (so a slow host function never blocks an executor thread) and
//! `trappable` (a host-side failure becomes a trap for that one call, never a host crash).
//! Every later version maps its `types` interface onto this one (`with`), so the domain
//! records below convert once for all versions.

#![allow(missing_docs, reason = "generated; the WIT file documents the types")]

wasmtime::component::bindgen!({
    world: "backup-provider",
    path: "../wit/1.0.0",
    imports: { default: async | trappable },
    exports: { default: async },
});

use self::bnr::provider::types as wit;
use crate::ssh::{self, ExecFailure, ExecOutcome};
use crate::state::{ExecRequest, HostState, LegacyLogin};
use crate::types;

impl From<wit::LogLevel> for types::LogLevel {
    fn from(level: wit::LogLevel) -> Self {
        match level {
            wit::LogLevel::Trace => Self::Trace,
            wit::LogLevel::Debug => Self::Debug,
            wit::LogLevel::Info => Self::Info,
            wit::LogLevel::Warn => Self::Warn,
            wit::LogLevel::Error => Self::Error,
        }
    }
}

impl From<wit::ProviderError> for types::ProviderError {
    fn from(error: wit::ProviderError) -> Self {
        match error {
            wit::ProviderError::NotFound(m) => Self::NotFound(m),
            wit::ProviderError::InvalidConfig(m) => Self::InvalidConfig(m),
            wit::ProviderError::Unauthorized(m) => Self::Unauthorized(m),
            wit::ProviderError::Unavailable(m) => Self::Unavailable(m),
            wit::ProviderError::Rejected(m) => Self::Rejected(m),
            wit::ProviderError::Unsupported(m) => Self::Unsupported(m),
            wit::ProviderError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<wit::SettingKind> for types::SettingKind {
    fn from(kind: wit::SettingKind) -> Self {
        match kind {
            wit::SettingKind::Text => Self::Text,
            wit::SettingKind::Integer => Self::Integer,
            wit::SettingKind::Boolean => Self::Boolean,
            wit::SettingKind::Url => Self::Url,
            wit::SettingKind::Secret => Self::Secret,
        }
    }
}

impl From<wit::SettingDecl> for types::SettingDecl {
    fn from(decl: wit::SettingDecl) -> Self {
        Self {
            name: decl.name,
            description: decl.description,
            kind: decl.kind.into(),
            default_value: decl.default_value,
            secret: decl.secret,
        }
    }
}

impl From<wit::DeleteGranularity> for types::DeleteGranularity {
    fn from(granularity: wit::DeleteGranularity) -> Self {
        match granularity {
            wit::DeleteGranularity::RestorePoint => Self::RestorePoint,
            wit::DeleteGranularity::Chain => Self::Chain,
        }
    }
}

impl From<wit::Capabilities> for types::Capabilities {
    fn from(c: wit::Capabilities) -> Self {
        Self {
            instance_from_backup: c.instance_from_backup,
            single_volume_restore: c.single_volume_restore,
            delete_granularity: c.delete_granularity.into(),
            deletes_backups_on_offering_removal: c.deletes_backups_on_offering_removal,
            reconciliation: c.reconciliation,
            provider_owned_retention: c.provider_owned_retention,
            cross_zone_instance_creation: c.cross_zone_instance_creation,
            quiesce: c.quiesce,
            storage_stats: c.storage_stats,
        }
    }
}

/// 1.0.0's own `provider-info` (its `need` cases all exist in later versions).
impl From<wit::ProviderInfo> for types::ProviderInfo {
    fn from(info: wit::ProviderInfo) -> Self {
        Self {
            name: info.name,
            description: info.description,
            version: info.version,
            settings: info.settings.into_iter().map(Into::into).collect(),
            needs: info
                .needs
                .into_iter()
                .map(|need| match need {
                    wit::Need::HttpToSetting(s) => types::Need::HttpToSetting(s),
                    wit::Need::RemoteExecOnInstanceHost => types::Need::RemoteExecOnInstanceHost,
                    wit::Need::RemoteExecToSetting(s) => types::Need::RemoteExecToSetting(s),
                })
                .collect(),
            capabilities: info.capabilities.into(),
            // Declared from 1.3.0 on: earlier components take over nothing.
            adopts_operations_from: None,
        }
    }
}

impl From<&types::Zone> for wit::Zone {
    fn from(zone: &types::Zone) -> Self {
        Self {
            uuid: zone.uuid.clone(),
            name: zone.name.clone(),
        }
    }
}

impl From<wit::Policy> for types::Policy {
    fn from(policy: wit::Policy) -> Self {
        Self {
            external_id: policy.external_id,
            name: policy.name,
            description: policy.description,
        }
    }
}

impl From<&types::Volume> for wit::Volume {
    fn from(volume: &types::Volume) -> Self {
        Self {
            uuid: volume.uuid.clone(),
            name: volume.name.clone(),
            kind: match volume.kind {
                types::VolumeKind::Root => wit::VolumeKind::Root,
                types::VolumeKind::Datadisk => wit::VolumeKind::Datadisk,
            },
            size: volume.size,
            path: volume.path.clone(),
            device_id: volume.device_id,
            disk_offering_id: volume.disk_offering_id.clone(),
        }
    }
}

impl From<&types::Instance> for wit::Instance {
    fn from(vm: &types::Instance) -> Self {
        Self {
            uuid: vm.uuid.clone(),
            name: vm.name.clone(),
            internal_name: vm.internal_name.clone(),
            hypervisor: vm.hypervisor.clone(),
            host_address: vm.host_address.clone(),
            state: vm.state.clone(),
            volumes: vm.volumes.iter().map(Into::into).collect(),
            provider_ref: vm.provider_ref.clone(),
        }
    }
}

impl From<&types::BackupRef> for wit::BackupRef {
    fn from(backup: &types::BackupRef) -> Self {
        Self {
            external_id: backup.external_id.clone(),
            offering_external_id: backup.offering_external_id.clone(),
            instance_uuid: backup.instance_uuid.clone(),
            volumes: backup.volumes.iter().map(Into::into).collect(),
        }
    }
}

impl From<types::BackupOptions> for wit::BackupOptions {
    fn from(options: types::BackupOptions) -> Self {
        Self {
            quiesce: options.quiesce,
        }
    }
}

impl From<&types::RestoreTarget> for wit::RestoreTarget {
    fn from(target: &types::RestoreTarget) -> Self {
        match target {
            types::RestoreTarget::InPlace(vm) => Self::InPlace(vm.into()),
            types::RestoreTarget::NewInstance(vm) => Self::NewInstance(vm.into()),
        }
    }
}

impl From<&types::VolumeRestoreRequest> for wit::VolumeRestoreRequest {
    fn from(request: &types::VolumeRestoreRequest) -> Self {
        Self {
            backup: (&request.backup).into(),
            volume: (&request.volume).into(),
            attach_to: (&request.attach_to).into(),
            new_volume_name: request.new_volume_name.clone(),
        }
    }
}

impl From<wit::OperationResult> for types::OperationResult {
    fn from(result: wit::OperationResult) -> Self {
        match result {
            wit::OperationResult::BackupTaken(taken) => Self::BackupTaken(types::BackupTaken {
                external_id: taken.external_id,
                kind: taken.kind,
                size: taken.size,
                protected_size: taken.protected_size,
                created: taken.created,
            }),
            wit::OperationResult::Restored => Self::Restored,
            wit::OperationResult::VolumeRestored(restored) => {
                Self::VolumeRestored(types::VolumeRestored {
                    path: restored.path,
                    size: restored.size,
                })
            }
            wit::OperationResult::Deleted => Self::Deleted,
        }
    }
}

impl From<wit::Started> for types::Started {
    fn from(started: wit::Started) -> Self {
        match started {
            wit::Started::Done(result) => Self::Done(result.into()),
            wit::Started::Pending(handle) => Self::Pending(handle),
        }
    }
}

impl From<wit::PollStatus> for types::PollStatus {
    fn from(status: wit::PollStatus) -> Self {
        match status {
            wit::PollStatus::Running(progress) => Self::Running(types::Progress {
                percent: progress.percent,
                message: progress.message,
            }),
            wit::PollStatus::Finished(result) => Self::Finished(result.into()),
            wit::PollStatus::Failed(error) => Self::Failed(error.into()),
        }
    }
}

impl From<wit::RestorePoint> for types::RestorePoint {
    fn from(point: wit::RestorePoint) -> Self {
        Self {
            id: point.id,
            created: point.created,
            kind: point.kind,
            size: point.size,
            protected_size: point.protected_size,
        }
    }
}

impl From<wit::Metric> for types::Metric {
    fn from(metric: wit::Metric) -> Self {
        Self {
            instance_uuid: metric.instance_uuid,
            size: metric.size,
            protected_size: metric.protected_size,
        }
    }
}

impl From<wit::StorageStats> for types::StorageStats {
    fn from(stats: wit::StorageStats) -> Self {
        Self {
            used_bytes: stats.used_bytes,
            total_bytes: stats.total_bytes,
        }
    }
}

impl wit::Host for HostState {}

/// 1.0.0's `host`: its exec request names its own login and has no stdin or output bound, and
/// its errors have fewer cases (the message carries what an admin needs).
impl bnr::provider::host::Host for HostState {
    async fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        self.log_line(level.into(), message);
        Ok(())
    }

    async fn setting(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.setting_value(&name))
    }

    async fn remote_exec(
        &mut self,
        request: wit::ExecRequest,
    ) -> wasmtime::Result<Result<wit::ExecOutput, wit::ExecError>> {
        let login = LegacyLogin {
            port: request.port,
            username: request.username,
            password: request.password,
        };
        let request = ExecRequest {
            target: request.target,
            command: request.command,
            stdin: Vec::new(),
            timeout_ms: request.timeout_ms,
            // No output bound in 1.0.0: the host's applies.
            max_output_bytes: ssh::EXEC_OUTPUT_MAX_BYTES,
        };
        Ok(self
            .remote_exec_legacy(request, login)
            .await
            .map(exec_output)
            .map_err(exec_error))
    }
}

fn exec_output(done: ExecOutcome) -> wit::ExecOutput {
    wit::ExecOutput {
        exit_code: done.exit_code,
        stdout: done.stdout,
        stderr: done.stderr,
    }
}

fn exec_error(failure: ExecFailure) -> wit::ExecError {
    use wit::ExecError;
    match failure {
        ExecFailure::Denied(m) | ExecFailure::InvalidRequest(m) => ExecError::Denied(m),
        ExecFailure::Unreachable(m) => ExecError::Unreachable(m),
        ExecFailure::AuthFailed(m) => ExecError::AuthFailed(m),
        ExecFailure::Timeout => ExecError::Timeout,
        ExecFailure::HostKeyUnknown(f) => {
            ExecError::Unreachable(format!("the host key {f} is not pinned for this target"))
        }
        ExecFailure::HostKeyMismatch(f) => {
            ExecError::Unreachable(format!("the host key {f} does not match the pinned one"))
        }
        ExecFailure::OutputTooLarge(n) => ExecError::Unreachable(format!(
            "the command wrote more than {n} bytes; the session was closed"
        )),
        ExecFailure::InvalidConfig(m) => ExecError::Unreachable(m),
    }
}
