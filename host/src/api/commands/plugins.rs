//! The provider lifecycle (bnr additions, root admin only): install, list, switch version,
//! roll back and delete provider components, and the trust list of signing keys.

use crate::api::registry::{Command, Entity, Param, Registry, RegistryError};
use crate::api::{ApiError, ApiResult, Ctx, Obj};
use crate::plugins::MAX_UPLOAD_BYTES;
use crate::service::{BackupError, PluginView, Upload};

use super::backup::service;
use super::backup_offering::provider_obj;

/// Refusals of bad input are 431, everything else 530 (with the service's text).
fn plugin_error(e: BackupError) -> ApiError {
    match e {
        BackupError::BadParameter(t) | BackupError::InvalidValue(t) => ApiError::param(t),
        BackupError::Refused(t) | BackupError::Denied(t) | BackupError::Provider(t) => {
            ApiError::internal(t)
        }
        BackupError::Store(s) => s.into(),
    }
}

fn plugin_obj(view: PluginView) -> Obj {
    provider_obj(&view.provider, view.zones)
        .str("source", view.origin.kind())
        .str("signer", view.origin.signer())
        .str("state", if view.active { "Active" } else { "Installed" })
        .opt_str(
            "adoptsoperationsfrom",
            view.provider.info().adopts_operations_from.clone(),
        )
        .opt_str(
            "id",
            match &view.origin {
                crate::plugins::Origin::Installed { uuid, .. } => Some(uuid.clone()),
                _ => None,
            },
        )
        .int("size", view.provider.inspection().size_bytes as i64)
}

trait PluginFields {
    fn plugin_fields(self) -> Self;
}

impl PluginFields for Command {
    fn plugin_fields(self) -> Self {
        self.object("backupproviderplugin")
            .field("id", "string", "ID of an installed (uploaded) component")
            .field("name", "string", "the provider name")
            .field("description", "string", "the provider's description")
            .field("version", "string", "the provider's version")
            .field("witversion", "string", "the provider interface version")
            .field("sha256", "string", "hex sha256 of the component")
            .field("size", "long", "bytes of the component")
            .field(
                "source",
                "string",
                "bundled (in the bnr binary), directory (--providers-dir) or installed (uploaded)",
            )
            .field(
                "signer",
                "string",
                "the trusted key that signed it, or how it is trusted otherwise",
            )
            .field(
                "state",
                "string",
                "Active (serves new calls for its name) or Installed",
            )
            .field(
                "adoptsoperationsfrom",
                "string",
                "the earlier versions (semver requirement) whose pending operations it takes over; absent: none",
            )
            .field("capabilities", "list", "the capabilities it declares")
            .field("deletegranularity", "string", "restore-point or chain")
            .field("needs", "list", "what it asks to reach")
            .field(
                "settings",
                "list",
                "its settings: name, description, secret",
            )
            .field(
                "zones",
                "list",
                "the zones it serves (active version only), each with its grants",
            )
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("addBackupProviderPlugin")
            .describe(
                "Installs a backup provider component: the request body (Content-Type application/wasm, parameters in the query string) or a file of the providers directory",
            )
            .since("bnr")
            .plugin_fields()
            .param(Param::string("file").length(255).desc(
                "file name (not a path) of a .wasm component in the providers directory; instead of a request body",
            ))
            .param(Param::string("pluginsignature").length(128).desc(
                "base64 ed25519 signature by a trusted key over the component's sha256, name and version (bnr plugin sign)",
            ))
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let wasm = upload_bytes(&ctx, svc.providers()).await?;
                let upload = Upload {
                    wasm,
                    signature: ctx.str("pluginsignature").map(str::to_string),
                };
                let view = svc.providers().install(upload).await.map_err(plugin_error)?;
                Ok(ctx.object(plugin_obj(view)))
            }),
    )?;
    r.register(
        Command::sync("listBackupProviderPlugins")
            .describe("Lists every loaded backup provider component, every version")
            .since("bnr")
            .plugin_fields()
            .param(Param::string("name").desc("only the components of this provider"))
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let views = svc
                    .providers()
                    .plugins(ctx.str("name"))
                    .await
                    .map_err(plugin_error)?;
                let items: Vec<Obj> = views.into_iter().map(plugin_obj).collect();
                Ok(ApiResult::List {
                    total: items.len() as u64,
                    items,
                })
            }),
    )?;
    r.register(
        Command::sync("updateBackupProviderPlugin")
            .describe(
                "Switches a provider to another loaded version (after a health probe), or rolls back to the version it used before",
            )
            .since("bnr")
            .plugin_fields()
            .param(Param::string("name").required().desc("the provider name"))
            .param(Param::string("version").desc("the version that serves new calls"))
            .param(
                Param::boolean("rollback")
                    .desc("true: return to the version used before the last switch"),
            )
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let name = ctx.req_str("name")?;
                let rollback = ctx.bool_or("rollback", false);
                let view = match (ctx.str("version"), rollback) {
                    (Some(_), true) | (None, false) => {
                        return Err(ApiError::param(
                            "Give either version or rollback=true",
                        ));
                    }
                    (Some(version), false) => svc.providers().activate(name, version, false).await,
                    (None, true) => svc.providers().rollback(name).await,
                }
                .map_err(plugin_error)?;
                Ok(ctx.object(plugin_obj(view)))
            }),
    )?;
    r.register(
        Command::sync("deleteBackupProviderPlugin")
            .describe(
                "Deletes an installed provider version; refused while a zone uses it or work of it is in flight",
            )
            .since("bnr")
            .object("success")
            .param(Param::string("name").required().desc("the provider name"))
            .param(Param::string("version").required().desc("the version"))
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                svc.providers()
                    .delete_plugin(ctx.req_str("name")?, ctx.req_str("version")?)
                    .await
                    .map_err(plugin_error)?;
                Ok(ApiResult::success())
            }),
    )?;
    r.register(
        Command::sync("updateBackupProviderGrants")
            .describe(
                "Sets what a backup provider may reach in a zone beyond what its settings name; each grant must match a kind of need the provider declares",
            )
            .since("bnr")
            .object("backupprovidergrants")
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .required()
                    .desc("the zone")
                    .related("listZones"),
            )
            .param(Param::string("provider").required().length(64).desc("the provider name"))
            .param(Param::string("grants").length(4096).desc(
                "comma-separated host[:port] or http(s) URLs (HTTP needs) and exec:HOST (remote-exec needs); empty or left out: none",
            ))
            .field("zoneid", "string", "the zone")
            .field("provider", "string", "the provider name")
            .field("grants", "list", "the grants, in normal form")
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let zone_id = ctx
                    .id("zoneid")
                    .ok_or_else(|| ApiError::param("Unable to find zone"))?;
                let provider = ctx.req_str("provider")?;
                let grants: Vec<String> = ctx
                    .str("grants")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_string)
                    .collect();
                let (zone_uuid, grants) = svc
                    .providers()
                    .set_grants(zone_id, provider, &grants)
                    .await
                    .map_err(plugin_error)?;
                Ok(ctx.object(
                    Obj::new()
                        .str("zoneid", zone_uuid)
                        .str("provider", provider.trim().to_lowercase())
                        .value("grants", serde_json::Value::from(grants)),
                ))
            }),
    )?;
    r.register(
        Command::sync("addBackupProviderSigningKey")
            .describe("Trusts an ed25519 public key for signatures on provider uploads")
            .since("bnr")
            .object("backupprovidersigningkey")
            .param(
                Param::string("name")
                    .required()
                    .length(64)
                    .desc("a name for the key"),
            )
            .param(
                Param::string("publickey")
                    .required()
                    .length(128)
                    .desc("base64 ed25519 public key (bnr plugin keygen writes it)"),
            )
            .field("id", "string", "ID of the key")
            .field("name", "string", "name of the key")
            .field("publickey", "string", "base64 public key")
            .field("created", "date", "when it was added")
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let key = svc
                    .providers()
                    .add_signing_key(ctx.req_str("name")?, ctx.req_str("publickey")?)
                    .await
                    .map_err(plugin_error)?;
                Ok(ctx.object(key_obj(key)))
            }),
    )?;
    r.register(
        Command::sync("listBackupProviderSigningKeys")
            .describe("Lists the keys trusted for signatures on provider uploads")
            .since("bnr")
            .object("backupprovidersigningkey")
            .field("id", "string", "ID of the key")
            .field("name", "string", "name of the key")
            .field("publickey", "string", "base64 public key")
            .field("created", "date", "when it was added")
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                let keys = svc.providers().signing_keys().await.map_err(plugin_error)?;
                let items: Vec<Obj> = keys.into_iter().map(key_obj).collect();
                Ok(ApiResult::List {
                    total: items.len() as u64,
                    items,
                })
            }),
    )?;
    r.register(
        Command::sync("deleteBackupProviderSigningKey")
            .describe("Removes a key from the trust list (components it signed stay installed)")
            .since("bnr")
            .object("success")
            .param(Param::string("name").required().desc("name of the key"))
            .handler(|ctx| async move {
                let svc = service(&ctx)?;
                svc.providers()
                    .delete_signing_key(ctx.req_str("name")?)
                    .await
                    .map_err(plugin_error)?;
                Ok(ApiResult::success())
            }),
    )?;
    Ok(())
}

fn key_obj(key: crate::service::SigningKeyView) -> Obj {
    Obj::new()
        .str("id", key.uuid)
        .str("name", key.name)
        .str("publickey", key.public_key)
        .date("created", key.created)
}

/// The component of an `addBackupProviderPlugin` request: its body, or the named file of the
/// providers directory (exactly one of them).
async fn upload_bytes(
    ctx: &Ctx,
    providers: &crate::service::Providers,
) -> Result<Vec<u8>, ApiError> {
    match (&ctx.upload, ctx.str("file")) {
        (Some(_), Some(_)) => Err(ApiError::param(
            "Send the component either as the request body or as file, not both",
        )),
        (None, None) => Err(ApiError::param(
            "Send the component as the request body (Content-Type: application/wasm) or name a file of the providers directory",
        )),
        (Some(body), None) => {
            if body.is_empty() {
                return Err(ApiError::param("The request body is empty"));
            }
            if body.len() > MAX_UPLOAD_BYTES {
                return Err(ApiError::param(format!(
                    "The component is larger than {MAX_UPLOAD_BYTES} bytes"
                )));
            }
            Ok(body.to_vec())
        }
        (None, Some(file)) => {
            let valid = !file.is_empty()
                && file.ends_with(".wasm")
                && !file.starts_with('.')
                && file
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(ApiError::param(
                    "file must be the name of a .wasm file in the providers directory (letters, digits, '-', '_', '.'; no path)",
                ));
            }
            let dir = providers
                .providers_dir()
                .ok_or_else(|| ApiError::param("This server has no providers directory"))?;
            let path = dir.join(file);
            let read = tokio::task::spawn_blocking(move || {
                let len = std::fs::metadata(&path)?.len();
                if len > MAX_UPLOAD_BYTES as u64 {
                    return Err(std::io::Error::other(format!(
                        "larger than {MAX_UPLOAD_BYTES} bytes"
                    )));
                }
                std::fs::read(&path)
            })
            .await
            .map_err(|_| ApiError::internal("Reading the component failed"))?;
            read.map_err(|e| {
                ApiError::param(format!(
                    "Cannot read {file} of the providers directory: {e}"
                ))
            })
        }
    }
}
