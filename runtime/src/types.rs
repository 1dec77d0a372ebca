//! The host's types for everything that crosses the provider boundary, independent of any WIT
//! version: what the rest of bnr works with. Each supported interface version's bindings
//! (private to this crate) convert from and to these at the boundary, in one place per version.
//!
//! The names and shapes follow the newest WIT package (`wit/<newest>/provider.wit`), which
//! documents every field; serde renders them by their Rust names.

#![allow(
    missing_docs,
    reason = "each field is documented where it is defined: the newest `wit/*/provider.wit`"
)]

use serde::{Deserialize, Serialize};

/// Severity of a provider's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// A failure the provider reports on purpose (traps and limit hits are
/// [`CallError`](crate::CallError)s of their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderError {
    /// The thing named (offering, backup, restore point, operation) does not exist.
    NotFound(String),
    /// A setting is missing or malformed.
    InvalidConfig(String),
    /// The vendor refused the credentials.
    Unauthorized(String),
    /// The vendor is unreachable or busy; the call may succeed later.
    Unavailable(String),
    /// The vendor understood and refused the request.
    Rejected(String),
    /// The provider does not implement this operation.
    Unsupported(String),
    /// Anything else that went wrong inside the provider.
    Internal(String),
}

/// How a declared setting's value is read and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettingKind {
    Text,
    Integer,
    Boolean,
    Url,
    Secret,
}

/// A zone-scoped setting the provider declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingDecl {
    /// Full setting name, e.g. `backup.plugin.veeam.url`.
    pub name: String,
    pub description: String,
    pub kind: SettingKind,
    pub default_value: Option<String>,
    /// Secret values are never shown by the API and never logged.
    pub secret: bool,
}

/// How finely backups can be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteGranularity {
    /// One restore point at a time.
    RestorePoint,
    /// Only a whole chain.
    Chain,
}

/// What the provider can do; bnr decides behaviour from these, never from a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub instance_from_backup: bool,
    pub single_volume_restore: bool,
    pub delete_granularity: DeleteGranularity,
    pub deletes_backups_on_offering_removal: bool,
    pub reconciliation: bool,
    pub provider_owned_retention: bool,
    pub cross_zone_instance_creation: bool,
    pub quiesce: bool,
    pub storage_stats: bool,
}

/// Outbound HTTPS to one destination, with the TLS trust the zone's settings give it; every
/// field names a declared setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpsAccess {
    pub url_setting: String,
    pub pinned_cert_setting: Option<String>,
    pub ca_pem_setting: Option<String>,
    pub validate_setting: Option<String>,
}

/// SSH to one host described by settings; every field names a declared setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshAccess {
    pub host_setting: String,
    pub port_setting: Option<String>,
    pub username_setting: String,
    pub password_setting: Option<String>,
    pub private_key_setting: Option<String>,
    pub host_key_setting: String,
}

/// A capability the provider asks for; the operator's grant decides what it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Need {
    HttpToSetting(String),
    RemoteExecOnInstanceHost,
    RemoteExecToSetting(String),
    HttpsToSetting(HttpsAccess),
    SshToSetting(SshAccess),
}

/// What a provider says about itself in `describe()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// Unique lower-case name, e.g. `dummy`.
    pub name: String,
    pub description: String,
    /// The provider's own version (semver).
    pub version: String,
    pub settings: Vec<SettingDecl>,
    pub needs: Vec<Need>,
    pub capabilities: Capabilities,
    /// Earlier versions of this provider whose pending operations this version can finish
    /// (a semver requirement, checked at load; 1.3.0 on). `None`: it takes over nothing.
    pub adopts_operations_from: Option<String>,
}

/// A zone as a provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    pub uuid: String,
    pub name: String,
}

/// A provider-side policy, imported into bnr as a backup offering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub external_id: String,
    pub name: String,
    pub description: String,
}

/// Root or data disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeKind {
    Root,
    Datadisk,
}

/// A volume of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub uuid: String,
    pub name: String,
    pub kind: VolumeKind,
    /// Bytes.
    pub size: u64,
    pub path: String,
    pub device_id: u32,
    pub disk_offering_id: Option<String>,
}

/// An instance (VM) as a provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub uuid: String,
    /// User-visible name (hostname).
    pub name: String,
    /// Hypervisor-side name, e.g. `i-2-10-VM`.
    pub internal_name: String,
    pub hypervisor: String,
    /// Address of the hypervisor host running (or last running) the instance.
    pub host_address: Option<String>,
    /// CloudStack state name.
    pub state: String,
    pub volumes: Vec<Volume>,
    /// What `assign-instance` returned for this instance, if anything.
    pub provider_ref: Option<String>,
}

/// A backup as bnr recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRef {
    pub external_id: String,
    pub offering_external_id: String,
    pub instance_uuid: String,
    /// Volumes as they were at backup time.
    pub volumes: Vec<Volume>,
}

/// Options of one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupOptions {
    pub quiesce: bool,
}

/// A finished backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTaken {
    pub external_id: String,
    /// Provider defined, e.g. `FULL`, `INCREMENTAL`.
    pub kind: String,
    /// Physical bytes stored.
    pub size: u64,
    /// Virtual bytes protected.
    pub protected_size: u64,
    /// Creation time, seconds since the Unix epoch; none = now.
    pub created: Option<u64>,
}

/// A finished single-volume restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRestored {
    /// Provider-side location of the new volume (path or uuid).
    pub path: String,
    pub size: u64,
}

/// Where an instance restore goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreTarget {
    /// Over the volumes of the instance the backup was taken from.
    InPlace(Instance),
    /// Into the freshly allocated volumes of a new instance.
    NewInstance(Instance),
}

/// One volume of a backup restored and attached to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRestoreRequest {
    pub backup: BackupRef,
    pub volume: Volume,
    pub attach_to: Instance,
    pub new_volume_name: String,
}

/// The terminal result of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationResult {
    BackupTaken(BackupTaken),
    Restored,
    VolumeRestored(VolumeRestored),
    Deleted,
}

/// What a `start-*` call returns: a finished result, or a handle to poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Started {
    Done(OperationResult),
    /// Opaque handle; bnr persists it and polls it, across restarts too.
    Pending(String),
}

/// Progress of a pending operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0..=100.
    pub percent: u8,
    pub message: String,
}

/// Where a pending operation is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PollStatus {
    Running(Progress),
    Finished(OperationResult),
    Failed(ProviderError),
}

/// A restore point the provider holds for an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// Matches `BackupTaken::external_id` for backups bnr took.
    pub id: String,
    pub created: u64,
    pub kind: String,
    pub size: u64,
    pub protected_size: u64,
}

/// Current sizes of one instance's backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    pub instance_uuid: String,
    pub size: u64,
    pub protected_size: u64,
}

/// Used and total bytes of a zone's backup storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStats {
    pub used_bytes: u64,
    pub total_bytes: u64,
}
