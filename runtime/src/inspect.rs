//! Checks a component's shape before anything compiles it: WebAssembly at all, a component
//! rather than a core module, the `backup-provider` world, a supported interface version,
//! and no imports the host does not provide.
//!
//! Only the top-level import and export names are read (the code sections are skipped), so
//! this is cheap enough to run on every load, cached or not.

use std::fmt;

use wasmparser::{Encoding, Parser, Payload};

use super::bindings::WitVersion;
use super::error::LoadError;
use super::limits::{
    DESCRIBE_MAX_DEFAULT_BYTES, DESCRIBE_MAX_NEEDS, DESCRIBE_MAX_SETTING_NAME_BYTES,
    DESCRIBE_MAX_SETTINGS, DESCRIBE_MAX_TEXT_BYTES,
};
use super::types::{Capabilities, DeleteGranularity, Need, ProviderInfo, SettingKind};

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "bnr:provider";
/// The interface a provider exports.
pub const PROVIDER_INTERFACE: &str = "bnr:provider/provider";
/// The provider interface versions this host loads (any patch), as users read them.
pub const SUPPORTED_WIT_VERSIONS: &str = "1.0.x, 1.1.x, 1.2.x, 1.3.x";

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// What the binary says about itself, before compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Version of `bnr:provider/provider` the component exports (e.g. `1.0.0`).
    pub wit_version: String,
    /// Which bindings serve it.
    pub version: WitVersion,
    /// Whether the component imports any `wasi:http` interface.
    pub imports_http: bool,
}

/// Reads the header and top-level names of `wasm` and refuses anything that cannot be a
/// provider for this host.
pub(crate) fn check_shape(wasm: &[u8]) -> Result<Shape, LoadError> {
    if wasm.len() < 8 {
        return Err(
            if wasm.starts_with(&WASM_MAGIC[..wasm.len().min(4)]) && !wasm.is_empty() {
                truncated(wasm.len())
            } else {
                LoadError::NotWasm
            },
        );
    }
    if &wasm[..4] != WASM_MAGIC {
        return Err(LoadError::NotWasm);
    }
    match wasm[4..8].try_into() {
        Ok(CORE_MODULE_VERSION) => return Err(LoadError::NotAComponent),
        Ok(COMPONENT_VERSION) => {}
        _ => {
            return Err(LoadError::Invalid(format!(
                "unknown WebAssembly binary version {:02x?}",
                &wasm[4..8]
            )));
        }
    }

    let mut exports = Vec::new();
    let mut imports = Vec::new();
    // Nested modules and components have their own imports and exports; only the outermost
    // ones are the component's interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|err| {
            if err.message().contains("unexpected end") {
                truncated(wasm.len())
            } else {
                LoadError::Invalid(format!("malformed component: {err}"))
            }
        })?;
        match payload {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(LoadError::NotAComponent);
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| LoadError::Invalid(e.to_string()))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| LoadError::Invalid(e.to_string()))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }

    let wit_version = provider_export_version(&exports)?;
    let exported = check_version(&wit_version)?;
    let mut imports_http = false;
    for import in &imports {
        let (interface, version) = split_version(import);
        if interface.starts_with("wasi:http/") {
            imports_http = true;
        } else if interface.starts_with("wasi:") {
            // The rest of WASI 0.2 is linked with nothing behind it (no files, env, sockets).
        } else if let Some(name) = interface.strip_prefix("bnr:provider/") {
            // Imports of the package must be of the version the component exports.
            let imported = check_version(version.unwrap_or("unversioned"))?;
            if imported != exported || !imported.importable_interfaces().contains(&name) {
                return Err(LoadError::WrongWorld(format!(
                    "the component imports `{import}`, which does not belong to `bnr:provider@{wit_version}`"
                )));
            }
        } else {
            return Err(LoadError::WrongWorld(format!(
                "the component imports `{import}`, which bnr does not provide (a provider may \
                 import only `bnr:provider/host` and WASI 0.2)"
            )));
        }
    }
    Ok(Shape {
        wit_version,
        version: exported,
        imports_http,
    })
}

fn truncated(len: usize) -> LoadError {
    LoadError::Invalid(format!(
        "truncated component: the file ends unexpectedly after {len} bytes"
    ))
}

fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((interface, version)) => (interface, Some(version)),
        None => (name, None),
    }
}

fn provider_export_version(exports: &[String]) -> Result<String, LoadError> {
    for export in exports {
        let (interface, version) = split_version(export);
        if interface == PROVIDER_INTERFACE {
            return Ok(version.unwrap_or("unversioned").to_owned());
        }
    }
    let shown = if exports.is_empty() {
        "nothing".to_owned()
    } else {
        exports
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(LoadError::WrongWorld(format!(
        "the component does not export `{PROVIDER_INTERFACE}` (world `backup-provider` of \
         `{WIT_PACKAGE}`); it exports {shown}"
    )))
}

fn check_version(version: &str) -> Result<WitVersion, LoadError> {
    let unsupported = || LoadError::UnsupportedVersion {
        found: version.to_owned(),
        supported: SUPPORTED_WIT_VERSIONS.to_owned(),
    };
    let mut parts = version.split('.');
    let mut number = || -> Result<u64, LoadError> {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(unsupported)
    };
    let (major, minor) = (number()?, number()?);
    // The patch may carry a pre-release or build suffix; only its presence matters here.
    parts.next().ok_or_else(unsupported)?;
    WitVersion::from_major_minor(major, minor).ok_or_else(unsupported)
}

/// The prefix every setting of provider `name` must start with: a provider owns the names
/// under `backup.plugin.<its name>.` and nothing else (not another provider's, not bnr's own).
pub fn setting_prefix(name: &str) -> String {
    format!("backup.plugin.{name}.")
}

/// Checks the `describe()` answer for what the rest of bnr relies on: a well-formed name and
/// version, settings only under the provider's own prefix, unique, within the declared caps
/// (`limits::DESCRIBE_*`), and needs that name declared settings.
pub(crate) fn check_info(info: &ProviderInfo) -> Result<(), LoadError> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info.name.starts_with(|c: char| c.is_ascii_lowercase())
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(LoadError::Invalid(format!(
            "provider name {:?} must be 1–64 lower-case letters, digits, `-` or `_`, starting \
             with a letter",
            shorten(&info.name)
        )));
    }
    if info.version.len() > DESCRIBE_MAX_TEXT_BYTES || !is_semver(&info.version) {
        return Err(LoadError::Invalid(format!(
            "provider version {:?} is not a semantic version (MAJOR.MINOR.PATCH)",
            shorten(&info.version)
        )));
    }
    if let Some(requirement) = &info.adopts_operations_from {
        adoption_requirement(requirement).map_err(LoadError::Invalid)?;
    }
    check_text(
        "the provider description",
        &info.description,
        DESCRIBE_MAX_TEXT_BYTES,
    )?;
    if info.settings.len() > DESCRIBE_MAX_SETTINGS {
        return Err(LoadError::Invalid(format!(
            "the provider declares {} settings; at most {DESCRIBE_MAX_SETTINGS} are allowed",
            info.settings.len()
        )));
    }
    if info.needs.len() > DESCRIBE_MAX_NEEDS {
        return Err(LoadError::Invalid(format!(
            "the provider declares {} needs; at most {DESCRIBE_MAX_NEEDS} are allowed",
            info.needs.len()
        )));
    }
    let prefix = setting_prefix(&info.name);
    let mut names = std::collections::HashSet::new();
    for decl in &info.settings {
        let key = decl.name.strip_prefix(&prefix).unwrap_or_default();
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !key_ok || decl.name.len() > DESCRIBE_MAX_SETTING_NAME_BYTES {
            return Err(LoadError::Invalid(format!(
                "setting {:?} is not owned by provider `{}`: a provider may only declare \
                 settings named `{prefix}<key>` (key: letters, digits, `.`, `-`, `_`; at most \
                 {DESCRIBE_MAX_SETTING_NAME_BYTES} bytes in all)",
                shorten(&decl.name),
                info.name
            )));
        }
        if !names.insert(decl.name.as_str()) {
            return Err(LoadError::Invalid(format!(
                "setting {:?} is declared twice",
                decl.name
            )));
        }
        check_text(
            &format!("the description of setting {}", decl.name),
            &decl.description,
            DESCRIBE_MAX_TEXT_BYTES,
        )?;
        if let Some(default) = &decl.default_value {
            check_text(
                &format!("the default of setting {}", decl.name),
                default,
                DESCRIBE_MAX_DEFAULT_BYTES,
            )?;
        }
    }
    for need in &info.needs {
        for name in need_settings(need) {
            if !names.contains(name) {
                return Err(LoadError::Invalid(format!(
                    "need {} refers to setting {:?}, which the provider does not declare",
                    need_kind(need),
                    shorten(name)
                )));
            }
        }
    }
    Ok(())
}

/// Declared text is shown in listings and logs: bounded, and free of control characters.
fn check_text(what: &str, text: &str, max: usize) -> Result<(), LoadError> {
    if text.len() > max {
        return Err(LoadError::Invalid(format!(
            "{what} is {} bytes; at most {max} are allowed",
            text.len()
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(LoadError::Invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

/// A declared string as it may appear in a load error: cut, and without control characters.
fn shorten(text: &str) -> String {
    super::untrusted::sanitize(text, 80, &[])
}

/// The kind of a need, for messages that must not echo an unbounded setting name.
fn need_kind(need: &Need) -> &'static str {
    match need {
        Need::HttpToSetting(_) => "http-to-setting",
        Need::RemoteExecToSetting(_) => "remote-exec-to-setting",
        Need::RemoteExecOnInstanceHost => "remote-exec-on-instance-host",
        Need::HttpsToSetting(_) => "https-to-setting",
        Need::SshToSetting(_) => "ssh-to-setting",
    }
}

/// A provider's `adopts-operations-from` declaration, parsed; the error says what is wrong.
pub(crate) fn adoption_requirement(text: &str) -> Result<semver::VersionReq, String> {
    if text.len() > DESCRIBE_MAX_TEXT_BYTES {
        return Err(format!(
            "adopts-operations-from is {} bytes; at most {DESCRIBE_MAX_TEXT_BYTES} are allowed",
            text.len()
        ));
    }
    semver::VersionReq::parse(text).map_err(|e| {
        format!(
            "adopts-operations-from {:?} is not a semver requirement (e.g. `>=1.0.0, <2.0.0`): {e}",
            shorten(text)
        )
    })
}

/// Whether `info` adopts the pending operations of version `version` of provider `name`:
/// the same provider, an earlier version, matching the declared requirement. Deny by default.
pub(crate) fn adopts(info: &ProviderInfo, name: &str, version: &str) -> bool {
    let Some(requirement) = info.adopts_operations_from.as_deref() else {
        return false;
    };
    let (Ok(requirement), Ok(started), Ok(own)) = (
        adoption_requirement(requirement),
        semver::Version::parse(version),
        semver::Version::parse(&info.version),
    ) else {
        return false;
    };
    name == info.name && started < own && requirement.matches(&started)
}

fn is_semver(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<_> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Every setting a need names.
fn need_settings(need: &Need) -> Vec<&str> {
    match need {
        Need::HttpToSetting(s) | Need::RemoteExecToSetting(s) => vec![s.as_str()],
        Need::RemoteExecOnInstanceHost => Vec::new(),
        Need::HttpsToSetting(a) => [
            Some(&a.url_setting),
            a.pinned_cert_setting.as_ref(),
            a.ca_pem_setting.as_ref(),
            a.validate_setting.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect(),
        Need::SshToSetting(a) => [
            Some(&a.host_setting),
            a.port_setting.as_ref(),
            Some(&a.username_setting),
            a.password_setting.as_ref(),
            a.private_key_setting.as_ref(),
            Some(&a.host_key_setting),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect(),
    }
}

/// A need as the operator reads it, e.g. `http-to-setting(backup.plugin.veeam.url)`.
pub fn describe_need(need: &Need) -> String {
    match need {
        Need::HttpToSetting(s) => format!("http-to-setting({s})"),
        Need::RemoteExecOnInstanceHost => "remote-exec-on-instance-host".to_owned(),
        Need::RemoteExecToSetting(s) => format!("remote-exec-to-setting({s})"),
        Need::HttpsToSetting(a) => {
            let mut trust: Vec<String> = Vec::new();
            if let Some(s) = &a.pinned_cert_setting {
                trust.push(format!("pin={s}"));
            }
            if let Some(s) = &a.ca_pem_setting {
                trust.push(format!("ca={s}"));
            }
            if let Some(s) = &a.validate_setting {
                trust.push(format!("validate={s}"));
            }
            if trust.is_empty() {
                format!("https-to-setting({})", a.url_setting)
            } else {
                format!("https-to-setting({}; {})", a.url_setting, trust.join(", "))
            }
        }
        Need::SshToSetting(a) => {
            let mut parts = vec![format!("user={}", a.username_setting)];
            if let Some(s) = &a.port_setting {
                parts.push(format!("port={s}"));
            }
            if let Some(s) = &a.password_setting {
                parts.push(format!("password={s}"));
            }
            if let Some(s) = &a.private_key_setting {
                parts.push(format!("key={s}"));
            }
            parts.push(format!("host-key={}", a.host_key_setting));
            format!("ssh-to-setting({}; {})", a.host_setting, parts.join(", "))
        }
    }
}

/// The provider's yes/no capabilities by their WIT names.
pub fn capability_flags(c: &Capabilities) -> [(&'static str, bool); 8] {
    [
        ("instance-from-backup", c.instance_from_backup),
        ("single-volume-restore", c.single_volume_restore),
        (
            "deletes-backups-on-offering-removal",
            c.deletes_backups_on_offering_removal,
        ),
        ("reconciliation", c.reconciliation),
        ("provider-owned-retention", c.provider_owned_retention),
        (
            "cross-zone-instance-creation",
            c.cross_zone_instance_creation,
        ),
        ("quiesce", c.quiesce),
        ("storage-stats", c.storage_stats),
    ]
}

/// The WIT name of a delete granularity.
pub fn delete_granularity_name(g: DeleteGranularity) -> &'static str {
    match g {
        DeleteGranularity::RestorePoint => "restore-point",
        DeleteGranularity::Chain => "chain",
    }
}

/// What `bnr plugin inspect` prints: a component's declaration, as loaded.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The provider's self-description.
    pub info: ProviderInfo,
    /// Version of the provider interface the component was built against.
    pub wit_version: String,
    /// Hex sha256 of the `.wasm` bytes.
    pub sha256: String,
    /// Size of the `.wasm` file in bytes.
    pub size_bytes: usize,
    /// Whether the component imports `wasi:http` (it then declares an HTTP need).
    pub imports_http: bool,
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = &self.info;
        writeln!(f, "name:         {}", info.name)?;
        writeln!(f, "version:      {}", info.version)?;
        writeln!(f, "description:  {}", info.description)?;
        writeln!(f, "wit version:  {WIT_PACKAGE}@{}", self.wit_version)?;
        writeln!(f, "sha256:       {}", self.sha256)?;
        writeln!(f, "size:         {} bytes", self.size_bytes)?;
        writeln!(f, "settings:")?;
        if info.settings.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for s in &info.settings {
            let kind = match s.kind {
                SettingKind::Text => "text",
                SettingKind::Integer => "integer",
                SettingKind::Boolean => "boolean",
                SettingKind::Url => "url",
                SettingKind::Secret => "secret",
            };
            // A secret-kind setting says so once; `[secret]` marks other kinds flagged secret.
            let secret = if s.secret && s.kind != SettingKind::Secret {
                " [secret]"
            } else {
                ""
            };
            let default = match (&s.default_value, s.secret) {
                (Some(_), true) => " (default: ***)".to_owned(),
                (Some(d), false) => format!(" (default: {d})"),
                (None, _) => String::new(),
            };
            writeln!(f, "  {} ({kind}){secret}{default}", s.name)?;
            if !s.description.is_empty() {
                writeln!(f, "      {}", s.description)?;
            }
        }
        writeln!(f, "needs:")?;
        if info.needs.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for need in &info.needs {
            writeln!(f, "  {}", describe_need(need))?;
        }
        if self.imports_http {
            writeln!(
                f,
                "  (links wasi:http: outbound HTTP to the granted hosts only)"
            )?;
        }
        writeln!(f, "capabilities:")?;
        for (name, on) in capability_flags(&info.capabilities) {
            writeln!(f, "  {name}: {}", if on { "yes" } else { "no" })?;
        }
        let granularity = delete_granularity_name(info.capabilities.delete_granularity);
        writeln!(f, "  delete-granularity: {granularity}")?;
        let adopts = info.adopts_operations_from.as_deref().unwrap_or("(none)");
        write!(f, "adopts operations from: {adopts}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_the_supported_minor_are_accepted_and_others_refused() {
        for ok in ["1.0.0", "1.0.7", "1.0.1-rc.1"] {
            assert_eq!(check_version(ok).ok(), Some(WitVersion::V1_0), "{ok}");
        }
        for ok in ["1.1.0", "1.1.3"] {
            assert_eq!(check_version(ok).ok(), Some(WitVersion::V1_1), "{ok}");
        }
        for ok in ["1.2.0", "1.2.1"] {
            assert_eq!(check_version(ok).ok(), Some(WitVersion::V1_2), "{ok}");
        }
        for ok in ["1.3.0", "1.3.2"] {
            assert_eq!(check_version(ok).ok(), Some(WitVersion::V1_3), "{ok}");
        }
        for bad in ["2.0.0", "1.4.0", "0.9.0", "1.0", "unversioned", "x.y.z"] {
            assert!(
                matches!(
                    check_version(bad),
                    Err(LoadError::UnsupportedVersion { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_wasm_are_refused_as_not_wasm() {
        for bytes in [
            &b""[..],
            b"hello world, not wasm",
            b"\x7fELF\x02\x01\x01\x00",
        ] {
            assert!(matches!(check_shape(bytes), Err(LoadError::NotWasm)));
        }
    }

    #[test]
    fn a_core_module_header_is_refused_as_not_a_component() {
        let module = b"\0asm\x01\x00\x00\x00";
        assert!(matches!(check_shape(module), Err(LoadError::NotAComponent)));
    }

    #[test]
    fn an_inspection_flags_secret_settings_and_never_prints_their_default() {
        use crate::types::{Capabilities, SettingDecl};
        let secret = |name: &str, default: Option<&str>| SettingDecl {
            name: name.into(),
            description: "vendor password".into(),
            kind: SettingKind::Secret,
            default_value: default.map(Into::into),
            secret: true,
        };
        let inspection = Inspection {
            info: ProviderInfo {
                name: "veeam".into(),
                description: "Veeam B&R".into(),
                version: "0.3.1".into(),
                settings: vec![secret("veeam.password", Some("changeme"))],
                needs: vec![
                    Need::RemoteExecOnInstanceHost,
                    Need::HttpToSetting("veeam.url".into()),
                ],
                adopts_operations_from: Some(">=0.2.0, <0.3.1".into()),
                capabilities: Capabilities {
                    instance_from_backup: false,
                    single_volume_restore: true,
                    delete_granularity: DeleteGranularity::Chain,
                    deletes_backups_on_offering_removal: true,
                    reconciliation: true,
                    provider_owned_retention: true,
                    cross_zone_instance_creation: false,
                    quiesce: true,
                    storage_stats: false,
                },
            },
            wit_version: "1.0.0".into(),
            sha256: "ab".repeat(32),
            size_bytes: 1234,
            imports_http: true,
        };
        let text = inspection.to_string();
        assert!(
            text.contains("veeam.password (secret) (default: ***)"),
            "{text}"
        );
        assert!(!text.contains("changeme"), "{text}");
        assert!(text.contains("remote-exec-on-instance-host"), "{text}");
        assert!(text.contains("http-to-setting(veeam.url)"), "{text}");
        assert!(text.contains("links wasi:http"), "{text}");
        assert!(text.contains("delete-granularity: chain"), "{text}");
        assert!(
            text.contains("adopts operations from: >=0.2.0, <0.3.1"),
            "{text}"
        );
    }

    #[test]
    fn only_a_declared_requirement_over_earlier_versions_of_the_same_provider_adopts() {
        let mut info = info_with("dummy", vec![]);
        info.version = "1.3.0".into();
        assert!(!adopts(&info, "dummy", "1.1.0"), "nothing declared");
        info.adopts_operations_from = Some(">=1.1.0, <2.0.0".into());
        assert!(adopts(&info, "dummy", "1.1.0"));
        assert!(adopts(&info, "dummy", "1.2.9"));
        assert!(!adopts(&info, "dummy", "1.0.0"), "below the requirement");
        assert!(!adopts(&info, "dummy", "1.3.0"), "its own version");
        assert!(!adopts(&info, "dummy", "1.4.0"), "a later version");
        assert!(!adopts(&info, "other", "1.1.0"), "another provider");
        assert!(!adopts(&info, "dummy", "not-a-version"));
    }

    #[test]
    fn a_requirement_that_does_not_parse_refuses_the_load_with_the_reason() {
        let mut info = info_with("dummy", vec![]);
        info.adopts_operations_from = Some(">=1.0.0, <<2".into());
        let err = check_info(&info).expect_err("refused").to_string();
        assert!(err.contains("adopts-operations-from"), "{err}");
        assert!(err.contains("not a semver requirement"), "{err}");
        info.adopts_operations_from = Some(">=1.0.0, <2.0.0".into());
        check_info(&info).expect("a valid requirement loads");
    }

    fn info_with(name: &str, settings: Vec<crate::types::SettingDecl>) -> ProviderInfo {
        use crate::types::Capabilities;
        ProviderInfo {
            name: name.into(),
            description: String::new(),
            version: "1.0.0".into(),
            settings,
            needs: vec![],
            adopts_operations_from: None,
            capabilities: Capabilities {
                instance_from_backup: false,
                single_volume_restore: false,
                delete_granularity: DeleteGranularity::Chain,
                deletes_backups_on_offering_removal: false,
                reconciliation: false,
                provider_owned_retention: false,
                cross_zone_instance_creation: false,
                quiesce: false,
                storage_stats: false,
            },
        }
    }

    fn text_setting(name: &str) -> crate::types::SettingDecl {
        crate::types::SettingDecl {
            name: name.into(),
            description: String::new(),
            kind: SettingKind::Text,
            default_value: None,
            secret: false,
        }
    }

    #[test]
    fn a_provider_may_declare_settings_only_under_its_own_prefix() {
        let ok = info_with("vault", vec![text_setting("backup.plugin.vault.url")]);
        assert!(check_info(&ok).is_ok());
        for stolen in [
            "backup.plugin.veeam.password",
            "backup.plugin.vaultx.url",
            "backup.plugin.vault.",
            "backup.framework.provider.plugin",
            "backup.framework.enabled",
            "vault.url",
            "backup.plugin.vault.new\nline",
        ] {
            let err = check_info(&info_with("vault", vec![text_setting(stolen)])).unwrap_err();
            assert!(
                matches!(&err, LoadError::Invalid(m) if m.contains("not owned by provider `vault`")),
                "{stolen:?}: {err}"
            );
        }
    }

    #[test]
    fn describe_answers_beyond_the_caps_are_refused() {
        let many = (0..=DESCRIBE_MAX_SETTINGS)
            .map(|i| text_setting(&format!("backup.plugin.big.s{i}")))
            .collect();
        let err = check_info(&info_with("big", many)).unwrap_err();
        assert!(err.to_string().contains("at most 64"), "{err}");

        let mut long = text_setting("backup.plugin.big.s");
        long.description = "x".repeat(DESCRIBE_MAX_TEXT_BYTES + 1);
        let err = check_info(&info_with("big", vec![long])).unwrap_err();
        assert!(err.to_string().contains("bytes; at most"), "{err}");

        let mut default = text_setting("backup.plugin.big.s");
        default.default_value = Some("y".repeat(DESCRIBE_MAX_DEFAULT_BYTES + 1));
        assert!(check_info(&info_with("big", vec![default])).is_err());

        let name = format!(
            "backup.plugin.big.{}",
            "k".repeat(DESCRIBE_MAX_SETTING_NAME_BYTES)
        );
        assert!(check_info(&info_with("big", vec![text_setting(&name)])).is_err());

        let mut info = info_with("big", vec![text_setting("backup.plugin.big.url")]);
        info.needs =
            vec![Need::HttpToSetting("backup.plugin.big.url".into()); DESCRIBE_MAX_NEEDS + 1];
        assert!(check_info(&info).is_err());

        let mut info = info_with("big", vec![]);
        info.description = "forged\n2026-01-01 ERROR".into();
        assert!(check_info(&info).is_err());
    }

    #[test]
    fn a_cut_off_header_is_reported_as_truncated() {
        let err = check_shape(b"\0asm\x0d").unwrap_err();
        assert!(
            matches!(&err, LoadError::Invalid(m) if m.contains("truncated")),
            "{err}"
        );
    }
}
