//! # bnr-sdk: write bnr backup providers in Rust
//!
//! A bnr backup provider is a WebAssembly component (target `wasm32-wasip2`) of the WIT world
//! `bnr:provider/backup-provider@1.3.0`. This crate hides the WIT plumbing: implement the
//! [`Provider`] trait on a unit struct and call [`export_provider!`] once.
//!
//! ```no_run
//! use bnr_sdk::prelude::*;
//!
//! struct Tape;
//!
//! impl Provider for Tape {
//!     fn describe() -> ProviderInfo {
//!         ProviderInfo {
//!             name: "tape".into(),
//!             description: "Backups to the tape library".into(),
//!             version: "1.0.0".into(),
//!             settings: vec![
//!                 SettingDecl::url("backup.plugin.tape.url", "Tape library API"),
//!                 SettingDecl::secret("backup.plugin.tape.password", "API password"),
//!             ],
//!             needs: vec![Need::HttpToSetting("backup.plugin.tape.url".into())],
//!             capabilities: Capabilities::none(),
//!             adopts_operations_from: None,
//!         }
//!     }
//!
//!     fn list_policies(_zone: Zone) -> Result<Vec<Policy>> {
//!         let url: String = settings::require("backup.plugin.tape.url")?;
//!         let password = settings::require("backup.plugin.tape.password")?;
//!         let response = http::Request::get(&format!("{url}/policies"))
//!             .basic_auth("bnr", &password)
//!             .send()?
//!             .error_for_status()?;
//!         bnr_sdk::info!("tape library answered with {} bytes", response.body().len());
//!         // ... parse response.text()? into policies ...
//!         Ok(vec![Policy {
//!             external_id: "daily".into(),
//!             name: "Daily".into(),
//!             description: "One full backup a day".into(),
//!         }])
//!     }
//! }
//!
//! bnr_sdk::export_provider!(Tape);
//! # fn main() {}
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm` file in
//! `target/wasm32-wasip2/release/` is already a component. `bnr plugin inspect FILE.wasm` shows
//! what the host sees. A ready-to-copy crate lives in `sdk/template/`.
//!
//! ## Rules every provider follows
//!
//! - **Stateless.** The host gives every call a fresh instance. Nothing kept in memory survives
//!   between calls; long operations encode what they need in the [`Started::Pending`] handle.
//! - **`describe` does not call the host** (no settings, no logging, no HTTP): the host calls it
//!   once at load time, before any zone is known.
//! - **Settings are declared.** [`settings::get`] only sees settings listed in
//!   [`ProviderInfo::settings`]; undeclared names read as unset.
//! - **Reach is declared.** Outbound HTTP ([`http`]) and remote commands ([`exec`]) only reach
//!   targets named by a [`Need`] and granted by the operator; anything else fails with a typed
//!   "denied" error without a packet being sent.
//! - **Credentials and trust stay with the host.** With [`Need::SshToSetting`] the host reads
//!   the SSH user, password or private key and the pinned host key from the zone settings the
//!   need names and logs on itself; with [`Need::HttpsToSetting`] it checks the server's
//!   certificate against the pin or CA those settings give. The provider's code just sends
//!   commands and ordinary `https://` requests.
//! - **Bounded.** The host limits memory, CPU and wall-clock time of every call and the size of
//!   what it returns; a panic traps the instance and is reported by the host.
//!
//! Optional operations have default implementations returning
//! [`ProviderError::Unsupported`]; implement the ones the declared [`Capabilities`] promise.
//!
//! ## Cargo features
//!
//! - `json`: [`http::Request::json`] and [`http::Response::json`] through `serde_json`.

#![warn(missing_docs)]

extern crate self as bnr_sdk;

pub mod errors;
pub mod exec;
pub mod http;
pub mod hypervisor;
pub mod log;
pub mod random;
pub mod settings;
pub mod time;

/// The raw bindings generated from the WIT. Vendors use the friendly re-exports instead.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "backup-provider",
        path: "../wit/1.3.0",
        pub_export_macro: true,
        export_macro_name: "__export_backup_provider",
        default_bindings_module: "::bnr_sdk::bindings",
        runtime_path: "::bnr_sdk::__private::wit_bindgen::rt",
    });
}

/// The WIT types of `bnr:provider@1.3.0` (`types`, `manifest`, and the exec and host records of `host`)
/// under friendly names.
pub mod types {
    pub use crate::bindings::bnr::provider::host::{
        ExecError, ExecOutput, ExecRequest, ExecState, HypervisorHost,
    };
    pub use crate::bindings::bnr::provider::manifest::{
        HttpsAccess, Need, ProviderInfo, SshAccess,
    };
    pub use crate::bindings::bnr::provider::types::{
        BackupOptions, BackupRef, BackupTaken, Capabilities, DeleteGranularity, Instance, LogLevel,
        Metric, OperationResult, Policy, PollStatus, Progress, ProviderError, RestorePoint,
        RestoreTarget, SettingDecl, SettingKind, Started, StorageStats, Volume, VolumeKind,
        VolumeRestoreRequest, VolumeRestored, Zone,
    };
}

pub use types::*;

/// `Result` with [`ProviderError`] as the error: the return type of every [`Provider`] operation.
pub type Result<T, E = ProviderError> = core::result::Result<T, E>;

/// Everything a provider usually needs: `use bnr_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::types::*;
    pub use crate::{Provider, Result, exec, http, hypervisor, log, random, settings, time};
}

/// The contract of a backup provider, one associated function per WIT export.
///
/// Only [`describe`](Provider::describe) is required. Every other operation defaults to
/// [`ProviderError::Unsupported`], except [`validate_policy`](Provider::validate_policy) (derived
/// from [`list_policies`](Provider::list_policies)) and
/// [`poll_operation`](Provider::poll_operation)/[`cancel_operation`](Provider::cancel_operation)
/// (`NotFound`: a provider that never returns [`Started::Pending`] has no handles).
///
/// Functions take no `self`: providers are stateless and the host creates a fresh instance per
/// call. Read configuration with [`settings`], talk to the vendor with [`http`] or [`exec`].
pub trait Provider {
    /// Name, version, declared settings and needs, capabilities. Must not call the host.
    fn describe() -> ProviderInfo;

    /// The policies the provider offers in `zone` (imported into bnr as backup offerings).
    fn list_policies(zone: Zone) -> Result<Vec<Policy>> {
        let _ = zone;
        Err(unsupported("list-policies"))
    }

    /// Whether `external_id` names a policy in `zone`. Defaults to looking it up in
    /// [`list_policies`](Provider::list_policies).
    fn validate_policy(zone: Zone, external_id: String) -> Result<bool> {
        Ok(Self::list_policies(zone)?
            .iter()
            .any(|policy| policy.external_id == external_id))
    }

    /// Register `instance` with a policy; the returned reference comes back as
    /// [`Instance::provider_ref`] in later calls.
    fn assign_instance(instance: Instance, policy_external_id: String) -> Result<Option<String>> {
        let _ = (instance, policy_external_id);
        Err(unsupported("assign-instance"))
    }

    /// Unregister `instance` from its policy.
    fn remove_instance(instance: Instance, policy_external_id: String) -> Result<()> {
        let _ = (instance, policy_external_id);
        Err(unsupported("remove-instance"))
    }

    /// Take a backup now: [`Started::Done`] with [`OperationResult::BackupTaken`], or a handle.
    fn start_backup(
        instance: Instance,
        policy_external_id: String,
        options: BackupOptions,
    ) -> Result<Started> {
        let _ = (instance, policy_external_id, options);
        Err(unsupported("start-backup"))
    }

    /// Delete a backup: [`Started::Done`] with [`OperationResult::Deleted`], or a handle.
    fn start_delete(backup: BackupRef, forced: bool) -> Result<Started> {
        let _ = (backup, forced);
        Err(unsupported("start-delete"))
    }

    /// Restore a whole instance: [`Started::Done`] with [`OperationResult::Restored`], or a handle.
    fn start_restore(backup: BackupRef, target: RestoreTarget) -> Result<Started> {
        let _ = (backup, target);
        Err(unsupported("start-restore"))
    }

    /// Restore one volume: [`Started::Done`] with [`OperationResult::VolumeRestored`], or a handle.
    fn start_restore_volume(request: VolumeRestoreRequest) -> Result<Started> {
        let _ = request;
        Err(unsupported("start-restore-volume"))
    }

    /// Progress or outcome of an operation a `start_*` function left [`Started::Pending`].
    fn poll_operation(handle: String) -> Result<PollStatus> {
        Err(ProviderError::NotFound(format!("no operation `{handle}`")))
    }

    /// Cancel a pending operation.
    fn cancel_operation(handle: String) -> Result<()> {
        Err(ProviderError::NotFound(format!("no operation `{handle}`")))
    }

    /// The provider's own restore points for `instance` (when `capabilities.reconciliation`).
    fn list_restore_points(instance: Instance) -> Result<Vec<RestorePoint>> {
        let _ = instance;
        Err(unsupported("list-restore-points"))
    }

    /// Current backup sizes of the given instances.
    fn metrics(zone: Zone, instances: Vec<Instance>) -> Result<Vec<Metric>> {
        let _ = (zone, instances);
        Err(unsupported("metrics"))
    }

    /// Used and total bytes of the zone's backup storage (when `capabilities.storage_stats`).
    fn storage_stats(zone: Zone) -> Result<StorageStats> {
        let _ = zone;
        Err(unsupported("storage-stats"))
    }
}

fn unsupported(operation: &str) -> ProviderError {
    ProviderError::Unsupported(format!("this provider does not implement `{operation}`"))
}

/// Export `$provider` (a type implementing [`Provider`]) as the component's `provider` interface.
///
/// Call it exactly once, at the top level of the provider's `cdylib` crate.
#[macro_export]
macro_rules! export_provider {
    ($provider:ty) => {
        #[doc(hidden)]
        type __BnrSdkExportedProvider = $crate::__private::Exported<$provider>;
        $crate::bindings::__export_backup_provider!(
            __BnrSdkExportedProvider with_types_in $crate::bindings
        );
    };
}

/// Support for [`export_provider!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use crate::bindings::exports::bnr::provider::provider::Guest;
    use crate::{Provider, types::*};
    use core::marker::PhantomData;

    /// Adapts a [`Provider`] to the generated `Guest` trait.
    pub struct Exported<P>(PhantomData<P>);

    impl<P: Provider> Guest for Exported<P> {
        fn describe() -> ProviderInfo {
            P::describe()
        }
        fn list_policies(zone: Zone) -> Result<Vec<Policy>, ProviderError> {
            P::list_policies(zone)
        }
        fn validate_policy(zone: Zone, external_id: String) -> Result<bool, ProviderError> {
            P::validate_policy(zone, external_id)
        }
        fn assign_instance(
            instance: Instance,
            policy_external_id: String,
        ) -> Result<Option<String>, ProviderError> {
            P::assign_instance(instance, policy_external_id)
        }
        fn remove_instance(
            instance: Instance,
            policy_external_id: String,
        ) -> Result<(), ProviderError> {
            P::remove_instance(instance, policy_external_id)
        }
        fn start_backup(
            instance: Instance,
            policy_external_id: String,
            options: BackupOptions,
        ) -> Result<Started, ProviderError> {
            P::start_backup(instance, policy_external_id, options)
        }
        fn start_delete(backup: BackupRef, forced: bool) -> Result<Started, ProviderError> {
            P::start_delete(backup, forced)
        }
        fn start_restore(
            backup: BackupRef,
            target: RestoreTarget,
        ) -> Result<Started, ProviderError> {
            P::start_restore(backup, target)
        }
        fn start_restore_volume(request: VolumeRestoreRequest) -> Result<Started, ProviderError> {
            P::start_restore_volume(request)
        }
        fn poll_operation(handle: String) -> Result<PollStatus, ProviderError> {
            P::poll_operation(handle)
        }
        fn cancel_operation(handle: String) -> Result<(), ProviderError> {
            P::cancel_operation(handle)
        }
        fn list_restore_points(instance: Instance) -> Result<Vec<RestorePoint>, ProviderError> {
            P::list_restore_points(instance)
        }
        fn metrics(zone: Zone, instances: Vec<Instance>) -> Result<Vec<Metric>, ProviderError> {
            P::metrics(zone, instances)
        }
        fn get_storage_stats(zone: Zone) -> Result<StorageStats, ProviderError> {
            P::storage_stats(zone)
        }
    }
}

// Small conveniences on the generated types.

impl ProviderError {
    /// The message carried by any variant.
    pub fn message(&self) -> &str {
        match self {
            ProviderError::NotFound(m)
            | ProviderError::InvalidConfig(m)
            | ProviderError::Unauthorized(m)
            | ProviderError::Unavailable(m)
            | ProviderError::Rejected(m)
            | ProviderError::Unsupported(m)
            | ProviderError::Internal(m) => m,
        }
    }
}

impl Capabilities {
    /// No optional capability: restore-point deletion granularity and every flag `false`.
    /// Start from this and switch on what the provider supports.
    pub fn none() -> Self {
        Capabilities {
            instance_from_backup: false,
            single_volume_restore: false,
            delete_granularity: DeleteGranularity::RestorePoint,
            deletes_backups_on_offering_removal: false,
            reconciliation: false,
            provider_owned_retention: false,
            cross_zone_instance_creation: false,
            quiesce: false,
            storage_stats: false,
        }
    }
}

/// Setting names: a provider owns the names under `backup.plugin.<its name>.` and nothing
/// else (`backup.plugin.acme.url` for provider `acme`); a component that declares any other
/// name, more than 64 settings, or descriptions and defaults beyond their length caps is not
/// loaded, and `bnr plugin inspect` says why.
impl SettingDecl {
    fn new(name: &str, description: &str, kind: SettingKind) -> Self {
        SettingDecl {
            name: name.into(),
            description: description.into(),
            kind,
            default_value: None,
            secret: kind == SettingKind::Secret,
        }
    }

    /// A free-text setting.
    pub fn text(name: &str, description: &str) -> Self {
        Self::new(name, description, SettingKind::Text)
    }

    /// An integer setting.
    pub fn integer(name: &str, description: &str) -> Self {
        Self::new(name, description, SettingKind::Integer)
    }

    /// A `true`/`false` setting.
    pub fn boolean(name: &str, description: &str) -> Self {
        Self::new(name, description, SettingKind::Boolean)
    }

    /// A URL setting (typically also named by a [`Need::HttpToSetting`]).
    pub fn url(name: &str, description: &str) -> Self {
        Self::new(name, description, SettingKind::Url)
    }

    /// A secret (password, token): never shown by the API, never logged.
    pub fn secret(name: &str, description: &str) -> Self {
        Self::new(name, description, SettingKind::Secret)
    }

    /// The value the host uses when the zone has none.
    pub fn with_default(mut self, value: &str) -> Self {
        self.default_value = Some(value.into());
        self
    }
}

impl ProviderInfo {
    /// Declares that this version finishes the pending operations of the earlier versions of
    /// this provider that `requirement` (semver, e.g. `">=1.0.0, <2.0.0"`) matches, because their
    /// operation handles mean the same here. When the version that started an operation is no
    /// longer installed, bnr then hands the operation to this one; without the declaration the
    /// operation stays on its version, and that version cannot be deleted while it is pending.
    /// bnr refuses to load a component whose requirement does not parse.
    pub fn adopts_operations_from(mut self, requirement: &str) -> Self {
        self.adopts_operations_from = Some(requirement.into());
        self
    }
}

impl SshAccess {
    /// SSH to the host named by `host_setting`, logging on as the user in `username_setting`,
    /// the server's key checked against the fingerprints in `host_key_setting`. Add a
    /// credential with [`password`](Self::password) and/or [`private_key`](Self::private_key).
    pub fn new(host_setting: &str, username_setting: &str, host_key_setting: &str) -> Self {
        SshAccess {
            host_setting: host_setting.into(),
            port_setting: None,
            username_setting: username_setting.into(),
            password_setting: None,
            private_key_setting: None,
            host_key_setting: host_key_setting.into(),
        }
    }

    /// The setting holding the port (default 22).
    pub fn port(mut self, setting: &str) -> Self {
        self.port_setting = Some(setting.into());
        self
    }

    /// The secret setting holding the password.
    pub fn password(mut self, setting: &str) -> Self {
        self.password_setting = Some(setting.into());
        self
    }

    /// The secret setting holding an OpenSSH private key.
    pub fn private_key(mut self, setting: &str) -> Self {
        self.private_key_setting = Some(setting.into());
        self
    }
}

impl HttpsAccess {
    /// HTTP(S) to the destination named by `url_setting`, HTTPS trusting the system roots
    /// until a trust setting is added.
    pub fn new(url_setting: &str) -> Self {
        HttpsAccess {
            url_setting: url_setting.into(),
            pinned_cert_setting: None,
            ca_pem_setting: None,
            validate_setting: None,
        }
    }

    /// The setting holding the pinned SHA-256 certificate fingerprints.
    pub fn pinned_cert(mut self, setting: &str) -> Self {
        self.pinned_cert_setting = Some(setting.into());
        self
    }

    /// The setting holding CA certificates (PEM).
    pub fn ca_pem(mut self, setting: &str) -> Self {
        self.ca_pem_setting = Some(setting.into());
        self
    }

    /// The boolean setting whose `false` accepts any certificate from this destination.
    pub fn validate(mut self, setting: &str) -> Self {
        self.validate_setting = Some(setting.into());
        self
    }
}

impl Instance {
    /// Sum of the sizes of the instance's volumes, in bytes.
    pub fn total_volume_size(&self) -> u64 {
        self.volumes.iter().map(|volume| volume.size).sum()
    }
}
