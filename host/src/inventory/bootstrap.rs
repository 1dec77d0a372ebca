//! First start on an empty data directory: ROOT domain, the root admin, zone `zone1` with one
//! service offering, disk offering and template, and B&R enabled with the `dummy` provider.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{BACKUP_FRAMEWORK_ENABLED, BACKUP_PROVIDER_PLUGIN, Settings};
use crate::identity::{self, NewAccount, Role};
use crate::inventory::{self, NewTemplate};
use crate::store::{OpError, Store};

pub const ADMIN_KEYS_FILE: &str = "admin-keys.json";
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";
pub const DEFAULT_ZONE: &str = "zone1";

/// Operator-provided credentials (from `BNR_ADMIN_PASSWORD`, `BNR_ADMIN_API_KEY`,
/// `BNR_ADMIN_SECRET_KEY`); anything missing is generated and written to the data directory.
#[derive(Debug, Clone, Default)]
pub struct BootstrapOptions {
    pub admin_password: Option<String>,
    pub admin_keys: Option<(String, String)>,
}

impl BootstrapOptions {
    pub fn from_env() -> BootstrapOptions {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        BootstrapOptions {
            admin_password: get("BNR_ADMIN_PASSWORD"),
            admin_keys: get("BNR_ADMIN_API_KEY").zip(get("BNR_ADMIN_SECRET_KEY")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub zone_id: i64,
    pub zone_uuid: String,
    pub api_key: String,
    pub secret_key: String,
    /// Files written (credentials the operator must pick up).
    pub written: Vec<PathBuf>,
    /// The admin password when it was generated (shown once at first start, also in
    /// `DIR/admin-password`).
    pub generated_password: Option<String>,
}

/// Bootstraps an empty database; returns `None` when it was already bootstrapped.
pub fn bootstrap_if_empty(
    store: &Store,
    settings: &Settings,
    data_dir: &Path,
    opts: &BootstrapOptions,
) -> anyhow::Result<Option<Bootstrapped>> {
    let already = store
        .read_blocking(identity::root_domain_id)
        .context("checking for the ROOT domain")?;
    if already.is_some() {
        return Ok(None);
    }
    let password = opts
        .admin_password
        .clone()
        .unwrap_or_else(identity::random_password);
    let (api_key, secret_key) = opts
        .admin_keys
        .clone()
        .unwrap_or_else(|| (identity::random_key(), identity::random_key()));
    let (zone_id, zone_uuid) = store
        .write_blocking(|tx| {
            let root = identity::create_domain(tx, "ROOT", None)?;
            let admin = identity::create_account(
                tx,
                &NewAccount {
                    account_name: "admin".into(),
                    domain_id: root.id,
                    role: Role::Admin,
                    username: "admin".into(),
                    password: password.clone(),
                    email: None,
                    firstname: Some("Admin".into()),
                    lastname: Some("User".into()),
                },
            )?;
            identity::set_user_keys(tx, store.secrets(), admin.id, &api_key, &secret_key)?;
            let zone = inventory::create_zone(tx, DEFAULT_ZONE)?;
            inventory::create_service_offering(
                tx,
                "Small Instance",
                "Small Instance, 1 vCPU, 1 GiB RAM",
                1,
                1000,
                1024,
            )?;
            inventory::create_disk_offering(tx, "Small", "Small Disk, 5 GiB", 5 << 30)?;
            inventory::create_template(
                tx,
                &NewTemplate {
                    name: "CentOS 5.6 (64-bit) no GUI (Simulator)",
                    display_text: "CentOS 5.6 (64-bit) no GUI (Simulator)",
                    zone_id: None,
                    os_type_name: "CentOS 5.5 (64-bit)",
                    hypervisor: "Simulator",
                    size_bytes: 2 << 30,
                },
            )?;
            Ok::<_, OpError>((zone.id, zone.uuid))
        })
        .context("creating the initial inventory")?;
    settings.set_blocking(BACKUP_FRAMEWORK_ENABLED, "true", None)?;
    settings.set_blocking(BACKUP_FRAMEWORK_ENABLED, "true", Some(zone_id))?;
    settings.set_blocking(BACKUP_PROVIDER_PLUGIN, "dummy", Some(zone_id))?;

    let mut written = Vec::new();
    if opts.admin_keys.is_none() {
        let path = data_dir.join(ADMIN_KEYS_FILE);
        let body = serde_json::json!({"apikey": api_key, "secretkey": secret_key});
        write_private(&path, &format!("{body}\n"))?;
        written.push(path);
    }
    let mut generated_password = None;
    if opts.admin_password.is_none() {
        let path = data_dir.join(ADMIN_PASSWORD_FILE);
        write_private(&path, &format!("{password}\n"))?;
        written.push(path);
        generated_password = Some(password);
    }
    Ok(Some(Bootstrapped {
        zone_id,
        zone_uuid,
        api_key,
        secret_key,
        written,
        generated_password,
    }))
}

/// Writes a credentials file readable only by the owner (0600 from creation on).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
