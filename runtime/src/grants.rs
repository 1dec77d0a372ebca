//! Capabilities of one call: what a provider may reach ([`Grants`]) and what it may read
//! ([`CallContext`]).
//!
//! Effective permission = declared ∩ granted: a provider declares *needs* in `describe()`
//! ("HTTP to the host named by setting X", "remote exec on the instance's host"); the
//! operator's zone settings (and explicit extras) turn them into concrete destinations.
//! Nothing the provider did not declare is ever reachable, and nothing the operator did not
//! name either.

use std::collections::HashMap;

use http::uri::{Authority, Scheme, Uri};

use super::ssh::SshConnection;
use super::tls::TlsTrust;
use super::types::{HttpsAccess, Need, ProviderInfo, SshAccess};

/// Prefix marking an operator extra as a remote-exec target (`exec:backup-proxy.lan`).
/// Extras without it are HTTP destinations (`host`, `host:port` or a URL), or the name of a
/// need no setting covers ([`NEED_INSTANCE_HOST`]).
pub const OPERATOR_EXEC_PREFIX: &str = "exec:";

/// The need no setting covers: remote exec on the hypervisor host of the instance a call works
/// on (the host comes from the inventory). It reaches nothing until the zone grants it by this
/// name (`updateBackupProviderGrants` or `backup.framework.provider.grants`).
pub const NEED_INSTANCE_HOST: &str = "remote-exec-on-instance-host";

/// Whether `extras` grant a need by its name.
fn grants_need(extras: &[String], need: &str) -> bool {
    extras.iter().any(|e| e.trim().eq_ignore_ascii_case(need))
}

/// The needs `info` declares that no setting covers and `extras` do not grant, by name; a zone
/// must not serve calls of such a version.
pub fn ungranted_needs(info: &ProviderInfo, extras: &[String]) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for need in &info.needs {
        if matches!(need, Need::RemoteExecOnInstanceHost)
            && !grants_need(extras, NEED_INSTANCE_HOST)
            && !missing.contains(&NEED_INSTANCE_HOST)
        {
            missing.push(NEED_INSTANCE_HOST);
        }
    }
    missing
}

/// The concrete allowlist of one call. Build it with [`Grants::derive`]; the default grants
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// HTTP destinations, lower-case: `scheme://host:port` from a URL (only that scheme
    /// matches), `host:port` (either scheme) or `host` (only the scheme's default port, 80 or
    /// 443, matches).
    pub http_authorities: Vec<String>,
    /// Remote-exec targets, lower-case host names or addresses.
    pub exec_targets: Vec<String>,
    /// How to connect to exec targets (one entry per target at most; a granted target
    /// without one cannot be reached). From `ssh-to-setting` needs, or added by the caller
    /// from its own record of a host (the instance's hypervisor host).
    pub ssh: Vec<SshGrant>,
    /// TLS trust of HTTPS destinations declared with `https-to-setting`; a request to one of
    /// these must use `https`. Other destinations use the system roots.
    pub tls: Vec<TlsGrant>,
}

/// The SSH connection of one granted exec target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshGrant {
    /// Lower-case host name or address, as in [`Grants::exec_targets`].
    pub target: String,
    /// The resolved connection, or why the settings do not give one (names the setting).
    pub connection: Result<SshConnection, String>,
}

/// The TLS trust of one granted HTTPS destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsGrant {
    /// Lower-case `host:port` (port 443 when the setting named none).
    pub authority: String,
    /// The trust, or why the settings do not give one (names the setting).
    pub trust: Result<TlsTrust, String>,
}

impl Grants {
    /// Derives the allowlist from what the provider declared and what the zone grants.
    ///
    /// - `http-to-setting(X)`: the authority of the value of setting `X` (a URL, `host` or
    ///   `host:port`). A URL's port defaults to its scheme's (80/443).
    /// - `remote-exec-on-instance-host`: `instance_host`, when given and `operator_extra`
    ///   grants the need by name ([`NEED_INSTANCE_HOST`]).
    /// - `remote-exec-to-setting(X)`: the host named by the value of setting `X`.
    /// - `operator_extra`: `exec:HOST` entries add exec targets, other entries add HTTP
    ///   destinations, but each only if the provider declared a need of that kind.
    ///
    /// A setting's value is the zone's value, else the provider's declared default. Values
    /// that do not parse as a host are ignored (they grant nothing).
    pub fn derive(
        info: &ProviderInfo,
        settings: &HashMap<String, String>,
        instance_host: Option<&str>,
        operator_extra: &[String],
    ) -> Grants {
        let mut grants = Grants::default();
        let (wants_http, wants_exec) = declared_kinds(info);
        for need in &info.needs {
            match need {
                Need::HttpToSetting(name) => {
                    if let Some(authority) =
                        setting_value(info, settings, name).and_then(normalize_http_target)
                    {
                        grants.http_authorities.push(authority);
                    }
                }
                Need::RemoteExecOnInstanceHost => {
                    if !grants_need(operator_extra, NEED_INSTANCE_HOST) {
                        continue;
                    }
                    if let Some(host) = instance_host.and_then(normalize_exec_target) {
                        grants.exec_targets.push(host);
                    }
                }
                Need::RemoteExecToSetting(name) => {
                    if let Some(host) =
                        setting_value(info, settings, name).and_then(normalize_exec_target)
                    {
                        grants.exec_targets.push(host);
                    }
                }
                Need::HttpsToSetting(access) => {
                    if let Some(authority) = setting_value(info, settings, &access.url_setting)
                        .and_then(normalize_http_target)
                        .and_then(https_authority)
                    {
                        grants.tls.push(TlsGrant {
                            authority: authority.clone(),
                            trust: tls_trust(info, settings, access),
                        });
                        // The grant names its scheme: plain HTTP to the same port is not granted.
                        grants.http_authorities.push(format!("https://{authority}"));
                    }
                }
                Need::SshToSetting(access) => {
                    let value = setting_value(info, settings, &access.host_setting);
                    if let Some(host) = value.and_then(normalize_exec_target) {
                        let connection = ssh_connection(info, settings, access, value);
                        grants.ssh.push(SshGrant {
                            target: host.clone(),
                            connection,
                        });
                        grants.exec_targets.push(host);
                    }
                }
            }
        }
        for extra in operator_extra {
            if extra.trim().eq_ignore_ascii_case(NEED_INSTANCE_HOST) {
                continue;
            }
            match extra.strip_prefix(OPERATOR_EXEC_PREFIX) {
                Some(target) if wants_exec => {
                    grants.exec_targets.extend(normalize_exec_target(target));
                }
                None if wants_http => {
                    grants.http_authorities.extend(normalize_http_target(extra));
                }
                _ => {}
            }
        }
        grants.http_authorities.sort();
        grants.http_authorities.dedup();
        grants.exec_targets.sort();
        grants.exec_targets.dedup();
        // One connection per target: the first declaration wins.
        let mut seen = std::collections::HashSet::new();
        grants.ssh.retain(|grant| seen.insert(grant.target.clone()));
        let mut seen = std::collections::HashSet::new();
        grants
            .tls
            .retain(|grant| seen.insert(grant.authority.clone()));
        grants
    }

    /// The SSH connection for a granted exec target, if one is known.
    pub(crate) fn ssh_for(&self, target: &str) -> Option<&SshGrant> {
        let target = normalize_exec_target(target)?;
        self.ssh.iter().find(|grant| grant.target == target)
    }

    /// The TLS grant for `host:port` (lower-cased), if the destination has one.
    pub(crate) fn tls_for(&self, host: &str, port: u16) -> Option<&TlsGrant> {
        let authority = format!("{}:{port}", host.to_ascii_lowercase());
        self.tls.iter().find(|grant| grant.authority == authority)
    }

    /// Whether `target` (as a guest names it in an exec request) is a granted exec target.
    pub fn allows_exec(&self, target: &str) -> bool {
        normalize_exec_target(target).is_some_and(|t| self.exec_targets.contains(&t))
    }

    /// Whether an HTTP request to `authority` over `scheme` is granted. The match is exact on
    /// the lower-cased host, on the port (an omitted port is the scheme's default) and, for a
    /// grant that names one, on the scheme: an `https://` grant never lets plain `http://`
    /// through to the same port.
    pub fn allows_http(&self, scheme: &Scheme, authority: &Authority) -> bool {
        let Some(default_port) = default_port(scheme) else {
            return false;
        };
        // `user@host` never matches: the grant names a host, not credentials.
        if authority.as_str().contains('@') {
            return false;
        }
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(default_port);
        self.http_authorities.iter().any(|granted| {
            let granted = match granted.split_once("://") {
                Some((granted_scheme, rest)) => {
                    if !granted_scheme.eq_ignore_ascii_case(scheme.as_str()) {
                        return false;
                    }
                    rest
                }
                None => granted.as_str(),
            };
            let Ok(granted) = granted.parse::<Authority>() else {
                return false;
            };
            granted.host().eq_ignore_ascii_case(&host)
                && granted.port_u16().unwrap_or(default_port) == port
        })
    }
}

/// Whether the provider declared an HTTP need and a remote-exec need: operator extras of a
/// kind it did not declare grant nothing.
fn declared_kinds(info: &ProviderInfo) -> (bool, bool) {
    let wants_http = info
        .needs
        .iter()
        .any(|need| matches!(need, Need::HttpToSetting(_) | Need::HttpsToSetting(_)));
    let wants_exec = info.needs.iter().any(|need| {
        matches!(
            need,
            Need::RemoteExecOnInstanceHost | Need::RemoteExecToSetting(_) | Need::SshToSetting(_)
        )
    });
    (wants_http, wants_exec)
}

/// Checks one operator grant (`host[:port]`, a URL, `exec:HOST`, or the name of a need no
/// setting covers) against what the provider
/// declared, and returns it in normal form. The error says why it grants nothing.
pub fn check_operator_extra(info: &ProviderInfo, extra: &str) -> Result<String, String> {
    let (wants_http, wants_exec) = declared_kinds(info);
    let extra = extra.trim();
    if extra.eq_ignore_ascii_case(NEED_INSTANCE_HOST) {
        return if info
            .needs
            .iter()
            .any(|need| matches!(need, Need::RemoteExecOnInstanceHost))
        {
            Ok(NEED_INSTANCE_HOST.to_string())
        } else {
            Err(format!(
                "`{extra}`: backup provider {} does not declare that need",
                info.name
            ))
        };
    }
    match extra.strip_prefix(OPERATOR_EXEC_PREFIX) {
        Some(target) => {
            if !wants_exec {
                return Err(format!(
                    "`{extra}`: backup provider {} declares no remote-exec need",
                    info.name
                ));
            }
            normalize_exec_target(target)
                .map(|host| format!("{OPERATOR_EXEC_PREFIX}{host}"))
                .ok_or_else(|| format!("`{extra}` does not name a host"))
        }
        None => {
            if !wants_http {
                return Err(format!(
                    "`{extra}`: backup provider {} declares no HTTP need",
                    info.name
                ));
            }
            normalize_http_target(extra).ok_or_else(|| {
                format!("`{extra}` is not an HTTP destination (host, host:port or http(s) URL)")
            })
        }
    }
}

fn setting_value<'a>(
    info: &'a ProviderInfo,
    settings: &'a HashMap<String, String>,
    name: &str,
) -> Option<&'a str> {
    settings.get(name).map(String::as_str).or_else(|| {
        info.settings
            .iter()
            .find(|decl| decl.name == name)
            .and_then(|decl| decl.default_value.as_deref())
    })
}

/// `host` → `host:port`; `host:p` unchanged.
/// `host:port` of an HTTPS destination (a bare host gets port 443); `None` for a URL of any
/// other scheme.
fn https_authority(target: String) -> Option<String> {
    match target.split_once("://") {
        Some(("https", authority)) => Some(authority.to_owned()),
        Some(_) => None,
        None => Some(with_default_port(&target, 443)),
    }
}

fn with_default_port(authority: &str, port: u16) -> String {
    match authority.parse::<Authority>() {
        Ok(parsed) if parsed.port_u16().is_none() => format!("{authority}:{port}"),
        _ => authority.to_owned(),
    }
}

fn tls_trust(
    info: &ProviderInfo,
    settings: &HashMap<String, String>,
    access: &HttpsAccess,
) -> Result<TlsTrust, String> {
    fn named<'a>(
        info: &'a ProviderInfo,
        settings: &'a HashMap<String, String>,
        setting: &'a Option<String>,
    ) -> Option<(&'a str, &'a str)> {
        let name = setting.as_deref()?;
        Some((name, setting_value(info, settings, name)?))
    }
    let named = |setting| named(info, settings, setting);
    TlsTrust::from_values(
        named(&access.pinned_cert_setting),
        named(&access.ca_pem_setting),
        named(&access.validate_setting).map(|(_, value)| value),
    )
}

/// The connection an `ssh-to-setting` need describes, from the settings' values. The port is
/// the port setting's value, else the one in the host value (`host:2222`), else 22; the user
/// is the user setting's value, else the one in the host value (`user@host`).
fn ssh_connection(
    info: &ProviderInfo,
    settings: &HashMap<String, String>,
    access: &SshAccess,
    host_value: Option<&str>,
) -> Result<SshConnection, String> {
    let value = |name: &Option<String>| {
        name.as_deref()
            .and_then(|name| setting_value(info, settings, name))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host_value = host_value.unwrap_or_default().trim();
    let host_part = host_value
        .split_once("://")
        .map_or(host_value, |(_, rest)| rest);
    let (user_in_host, host_part) = match host_part.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, host_part),
    };
    let port_in_host = host_part
        .split('/')
        .next()
        .and_then(|a| a.parse::<Authority>().ok())
        .and_then(|a| a.port_u16());
    let port = match value(&access.port_setting) {
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                format!(
                    "setting `{}` must be a TCP port (1-65535), not `{text}`",
                    access.port_setting.as_deref().unwrap_or_default()
                )
            })?,
        None => port_in_host.unwrap_or(22),
    };
    let username = value(&Some(access.username_setting.clone()))
        .or(user_in_host)
        .ok_or_else(|| {
            format!(
                "setting `{}` (the SSH user) is not set",
                access.username_setting
            )
        })?
        .to_owned();
    let host_keys = value(&Some(access.host_key_setting.clone()))
        .map(|pins| {
            pins.split([',', ' ', '\n', '\t', ';'])
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut source = vec![format!("`{}`", access.username_setting)];
    source.extend(
        [&access.private_key_setting, &access.password_setting]
            .into_iter()
            .flatten()
            .map(|name| format!("`{name}`")),
    );
    Ok(SshConnection {
        port,
        username,
        password: value(&access.password_setting).map(str::to_owned),
        private_key: value(&access.private_key_setting).map(str::to_owned),
        host_keys,
        credential_source: format!("settings {}", source.join(", ")),
    })
}

fn default_port(scheme: &Scheme) -> Option<u16> {
    if *scheme == Scheme::HTTP {
        Some(80)
    } else if *scheme == Scheme::HTTPS {
        Some(443)
    } else {
        None
    }
}

/// `https://Host:9398/api` → `https://host:9398`; `http://host/x` → `http://host:80`; `Host:8080` →
/// `host:8080`; `host` → `host`. `None` for anything that is not a plain HTTP(S) destination
/// (other schemes, credentials in the authority, paths without a scheme, blanks).
pub(crate) fn normalize_http_target(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || value.contains(char::is_whitespace) {
        return None;
    }
    if value.contains("://") {
        let uri: Uri = value.parse().ok()?;
        let scheme = uri.scheme()?;
        let port = default_port(scheme)?;
        let authority = uri.authority()?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return None;
        }
        let port = authority.port_u16().unwrap_or(port);
        // The scheme stays part of the grant: a URL names one protocol, not a port for any.
        return Some(format!(
            "{}://{}:{port}",
            scheme.as_str().to_ascii_lowercase(),
            authority.host().to_ascii_lowercase()
        ));
    }
    if value.contains(['/', '@', '?', '#']) {
        return None;
    }
    let authority: Authority = value.parse().ok()?;
    if authority.host().is_empty() {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    Some(match authority.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// A host name or address for remote exec: `Host`, `host:22`, `user@host` or
/// `ssh://user@host:22` all name `host`.
pub(crate) fn normalize_exec_target(value: &str) -> Option<String> {
    let value = value.trim();
    let value = value.split_once("://").map_or(value, |(_, rest)| rest);
    let value = value.split('/').next().unwrap_or_default();
    let value = value.rsplit_once('@').map_or(value, |(_, host)| host);
    if value.is_empty() || value.contains(char::is_whitespace) {
        return None;
    }
    let authority: Authority = value.parse().ok()?;
    let host = authority.host().to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// What one call may see and reach. The service layer builds one per call.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The zone the call is made for (tags the provider's log lines).
    pub zone_uuid: String,
    /// The zone's values of the settings the provider declared (secret ones included; they
    /// are never logged). Undeclared names are never shown to the provider.
    pub settings: HashMap<String, String>,
    /// Concrete allowlist for this call; derive it with [`Grants::derive`].
    pub grants: Grants,
    /// The backup the call works on, if any (tags the call's span).
    pub backup_uuid: Option<String>,
    /// The hypervisor host the call works on, as 1.2.0's `host.current-host` shows it.
    pub host: Option<HypervisorHost>,
}

/// A hypervisor host of bnr's inventory as a provider sees it (no credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HypervisorHost {
    /// The host's name in bnr.
    pub name: String,
    /// The address commands go to.
    pub address: String,
    /// Its cluster's name.
    pub cluster: String,
}

impl CallContext {
    /// A context for a call in `zone_uuid`.
    pub fn new(
        zone_uuid: impl Into<String>,
        settings: HashMap<String, String>,
        grants: Grants,
    ) -> Self {
        Self {
            zone_uuid: zone_uuid.into(),
            settings,
            grants,
            host: None,
            backup_uuid: None,
        }
    }

    /// The same context, working on `host`.
    pub fn with_host(mut self, host: HypervisorHost) -> Self {
        self.host = Some(host);
        self
    }

    /// The same context for calls working on the backup `uuid`.
    pub fn for_backup(mut self, uuid: &str) -> Self {
        self.backup_uuid = Some(uuid.to_string());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Capabilities, DeleteGranularity, ProviderInfo, SettingDecl, SettingKind};

    fn info(needs: Vec<Need>) -> ProviderInfo {
        ProviderInfo {
            name: "test".into(),
            description: String::new(),
            version: "1.0.0".into(),
            settings: vec![
                SettingDecl {
                    name: "vendor.url".into(),
                    description: String::new(),
                    kind: SettingKind::Url,
                    default_value: Some("https://default.example:9398/api".into()),
                    secret: false,
                },
                SettingDecl {
                    name: "proxy.host".into(),
                    description: String::new(),
                    kind: SettingKind::Text,
                    default_value: None,
                    secret: false,
                },
            ],
            needs,
            adopts_operations_from: None,
            capabilities: Capabilities {
                instance_from_backup: false,
                single_volume_restore: false,
                delete_granularity: DeleteGranularity::RestorePoint,
                deletes_backups_on_offering_removal: false,
                reconciliation: false,
                provider_owned_retention: false,
                cross_zone_instance_creation: false,
                quiesce: false,
                storage_stats: false,
            },
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn extras(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_provider_that_declares_nothing_is_granted_nothing_even_with_operator_extras() {
        let grants = Grants::derive(
            &info(vec![]),
            &settings(&[("vendor.url", "https://veeam.lan")]),
            Some("kvm1.lan"),
            &extras(&["veeam.lan:443", "exec:kvm1.lan"]),
        );
        assert_eq!(grants, Grants::default());
    }

    #[test]
    fn an_http_need_grants_the_authority_of_the_zone_setting_with_the_scheme_port() {
        let grants = Grants::derive(
            &info(vec![Need::HttpToSetting("vendor.url".into())]),
            &settings(&[("vendor.url", "https://Veeam.LAN:9398/api/sessions")]),
            None,
            &[],
        );
        assert_eq!(grants.http_authorities, vec!["https://veeam.lan:9398"]);
        assert!(grants.exec_targets.is_empty());

        let grants = Grants::derive(
            &info(vec![Need::HttpToSetting("vendor.url".into())]),
            &settings(&[("vendor.url", "http://networker.lan/nwrestapi")]),
            None,
            &[],
        );
        assert_eq!(grants.http_authorities, vec!["http://networker.lan:80"]);
    }

    #[test]
    fn an_unset_setting_falls_back_to_the_declared_default() {
        let grants = Grants::derive(
            &info(vec![Need::HttpToSetting("vendor.url".into())]),
            &HashMap::new(),
            None,
            &[],
        );
        assert_eq!(
            grants.http_authorities,
            vec!["https://default.example:9398"]
        );
    }

    #[test]
    fn a_need_on_an_unset_setting_without_default_grants_nothing() {
        let grants = Grants::derive(
            &info(vec![Need::RemoteExecToSetting("proxy.host".into())]),
            &HashMap::new(),
            None,
            &[],
        );
        assert_eq!(grants, Grants::default());
    }

    #[test]
    fn settings_the_provider_did_not_name_in_a_need_grant_nothing() {
        let grants = Grants::derive(
            &info(vec![Need::HttpToSetting("vendor.url".into())]),
            &settings(&[("vendor.url", "veeam.lan"), ("proxy.host", "evil.example")]),
            None,
            &[],
        );
        assert_eq!(grants.http_authorities, vec!["veeam.lan"]);
    }

    #[test]
    fn remote_exec_needs_grant_the_instance_host_and_the_setting_host() {
        let grants = Grants::derive(
            &info(vec![
                Need::RemoteExecOnInstanceHost,
                Need::RemoteExecToSetting("proxy.host".into()),
            ]),
            &settings(&[("proxy.host", "root@Proxy.lan:22")]),
            Some("KVM1.lan"),
            &extras(&[NEED_INSTANCE_HOST]),
        );
        assert_eq!(grants.exec_targets, vec!["kvm1.lan", "proxy.lan"]);
        assert!(grants.http_authorities.is_empty());
    }

    #[test]
    fn the_instance_host_is_reached_only_when_the_zone_grants_that_need() {
        let declared = info(vec![Need::RemoteExecOnInstanceHost]);
        let grants = Grants::derive(&declared, &HashMap::new(), Some("kvm1.lan"), &[]);
        assert_eq!(grants, Grants::default());
        assert_eq!(ungranted_needs(&declared, &[]), vec![NEED_INSTANCE_HOST]);
        let given = extras(&["Remote-Exec-On-Instance-Host"]);
        let grants = Grants::derive(&declared, &HashMap::new(), Some("kvm1.lan"), &given);
        assert_eq!(grants.exec_targets, vec!["kvm1.lan"]);
        assert!(grants.http_authorities.is_empty());
        assert!(ungranted_needs(&declared, &given).is_empty());
        // A provider that does not declare it gets nothing from the grant.
        let grants = Grants::derive(&info(vec![]), &HashMap::new(), Some("kvm1.lan"), &given);
        assert_eq!(grants, Grants::default());
    }

    #[test]
    fn operator_grants_are_checked_against_the_declared_needs() {
        let exec_only = info(vec![Need::RemoteExecToSetting("proxy.host".into())]);
        assert_eq!(
            check_operator_extra(&exec_only, " exec:Jump.LAN "),
            Ok("exec:jump.lan".to_string())
        );
        let refused = check_operator_extra(&exec_only, "mirror.lan").unwrap_err();
        assert!(refused.contains("declares no HTTP need"), "{refused}");
        let refused = check_operator_extra(&exec_only, NEED_INSTANCE_HOST).unwrap_err();
        assert!(refused.contains("does not declare that need"), "{refused}");
        let http = info(vec![Need::HttpToSetting("vendor.url".into())]);
        assert_eq!(
            check_operator_extra(&http, "https://Mirror.lan"),
            Ok("https://mirror.lan:443".to_string())
        );
        assert!(check_operator_extra(&http, "ftp://files.lan").is_err());
        assert!(check_operator_extra(&http, "exec:jump.lan").is_err());
    }

    #[test]
    fn operator_extras_only_widen_the_kinds_the_provider_declared() {
        let grants = Grants::derive(
            &info(vec![Need::HttpToSetting("vendor.url".into())]),
            &settings(&[("vendor.url", "veeam.lan:9398")]),
            Some("kvm1.lan"),
            &extras(&["https://Mirror.lan", "exec:kvm1.lan", "not a host"]),
        );
        assert_eq!(
            grants.http_authorities,
            vec!["https://mirror.lan:443", "veeam.lan:9398"]
        );
        assert!(grants.exec_targets.is_empty());

        let grants = Grants::derive(
            &info(vec![Need::RemoteExecOnInstanceHost]),
            &HashMap::new(),
            None,
            &extras(&["exec:Jump.lan", "mirror.lan"]),
        );
        assert_eq!(grants.exec_targets, vec!["jump.lan"]);
        assert!(grants.http_authorities.is_empty());
    }

    #[test]
    fn values_that_are_not_plain_http_destinations_grant_nothing() {
        for value in [
            "",
            "   ",
            "ftp://files.lan",
            "https://user:pw@veeam.lan",
            "veeam.lan/api",
            "user@veeam.lan",
            "two words",
        ] {
            assert_eq!(normalize_http_target(value), None, "{value:?}");
        }
    }

    #[test]
    fn http_matching_is_exact_on_host_and_port() {
        let grants = Grants {
            http_authorities: vec!["veeam.lan:9398".into(), "plain.lan".into()],
            ..Grants::default()
        };
        let allows = |scheme: Scheme, authority: &str| {
            grants.allows_http(&scheme, &authority.parse().unwrap())
        };
        assert!(allows(Scheme::HTTPS, "veeam.lan:9398"));
        assert!(allows(Scheme::HTTPS, "VEEAM.lan:9398"));
        assert!(!allows(Scheme::HTTPS, "veeam.lan"));
        assert!(!allows(Scheme::HTTPS, "veeam.lan:9399"));
        assert!(!allows(Scheme::HTTPS, "veeam.lan.evil.example:9398"));
        assert!(!allows(Scheme::HTTPS, "evil@veeam.lan:9398"));
        assert!(allows(Scheme::HTTPS, "plain.lan"));
        assert!(allows(Scheme::HTTPS, "plain.lan:443"));
        assert!(allows(Scheme::HTTP, "plain.lan"));
        assert!(!allows(Scheme::HTTP, "plain.lan:8080"));
        assert!(!allows(Scheme::HTTPS, "other.lan"));
    }

    #[test]
    fn a_url_grant_matches_only_its_own_scheme() {
        let grants = Grants::derive(
            &info(vec![Need::HttpToSetting("vendor.url".into())]),
            &settings(&[("vendor.url", "https://veeam.lan:9398/api")]),
            None,
            &extras(&["http://mirror.lan:8080"]),
        );
        let allows = |scheme: Scheme, authority: &str| {
            grants.allows_http(&scheme, &authority.parse().unwrap())
        };
        assert!(allows(Scheme::HTTPS, "veeam.lan:9398"));
        assert!(!allows(Scheme::HTTP, "veeam.lan:9398"));
        assert!(allows(Scheme::HTTP, "mirror.lan:8080"));
        assert!(!allows(Scheme::HTTPS, "mirror.lan:8080"));
    }

    #[test]
    fn exec_matching_ignores_case_and_user_but_not_the_host() {
        let grants = Grants {
            exec_targets: vec!["kvm1.lan".into()],
            ..Grants::default()
        };
        assert!(grants.allows_exec("KVM1.lan"));
        assert!(grants.allows_exec("root@kvm1.lan"));
        assert!(!grants.allows_exec("kvm2.lan"));
        assert!(!grants.allows_exec(""));
    }
}
