//! KVM clusters and hosts: a subset of CloudStack's `addCluster`, `listClusters`, `addHost`,
//! `listHosts`, `updateHost` and `deleteHost` (root admin only). Host credentials are accepted,
//! stored sealed and never listed.

use crate::api::registry::{ADMIN_ONLY, Command, Entity, Param, Registry, RegistryError};
use crate::api::{ApiError, ApiResult, Obj};
use crate::inventory::kvm::{
    self, Cluster, ClusterFilter, Host, HostFilter, HostState, HostUpdate, NewHost,
};
use crate::store::OpError;
use crate::store::events::{self, NewEvent};
use crate::store::query::Page;

const CLUSTER: Entity = Entity::table("clusters");
const HOST: Entity = Entity::table("hosts");

fn cluster_obj(c: &Cluster) -> Obj {
    Obj::new()
        .str("id", &c.uuid)
        .str("name", &c.name)
        .str("zoneid", &c.zone_uuid)
        .str("zonename", &c.zone_name)
        .str("hypervisortype", &c.hypervisor)
        .str("clustertype", "CloudManaged")
        .str("allocationstate", "Enabled")
        .str("managedstate", "Managed")
}

fn host_obj(h: &Host) -> Obj {
    let resource_state = if h.state == HostState::Maintenance {
        "Maintenance"
    } else {
        "Enabled"
    };
    Obj::new()
        .str("id", &h.uuid)
        .str("name", &h.name)
        .str("state", h.state.as_str())
        .str("resourcestate", resource_state)
        .str("type", "Routing")
        .str("ipaddress", &h.address)
        .str("zoneid", &h.zone_uuid)
        .str("zonename", &h.zone_name)
        .str("clusterid", &h.cluster_uuid)
        .str("clustername", &h.cluster_name)
        .str("clustertype", "CloudManaged")
        .str("hypervisor", &h.hypervisor)
        .int("sshport", i64::from(h.ssh_port))
        .opt_str(
            "hostkeyfingerprint",
            (!h.host_keys.is_empty()).then(|| h.host_keys.join(",")),
        )
        .date("created", h.created)
}

/// One page of `items` (the lists are small: clusters and hosts of an installation).
fn paged(items: Vec<Obj>, page: Page) -> ApiResult {
    let total = items.len() as u64;
    let items = match page.size {
        Some(size) => items
            .into_iter()
            .skip(((page.page.max(1) - 1) * size) as usize)
            .take(size as usize)
            .collect(),
        None => items,
    };
    ApiResult::List { total, items }
}

fn state_param(ctx_value: Option<&str>) -> Result<Option<HostState>, ApiError> {
    ctx_value
        .map(|s| {
            HostState::parse(s).ok_or_else(|| {
                ApiError::from(OpError::InvalidParameter(format!(
                    "state must be one of Up, Down, Disconnected, Maintenance, not '{s}'"
                )))
            })
        })
        .transpose()
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("addCluster")
            .describe("Adds a new cluster")
            .roles(ADMIN_ONLY)
            .object("cluster")
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .required()
                    .desc("the Zone ID for the cluster")
                    .related("listZones"),
            )
            .param(
                Param::string("clustername")
                    .required()
                    .desc("the cluster name"),
            )
            .param(
                Param::string("hypervisor")
                    .required()
                    .desc("hypervisor type of the cluster: KVM"),
            )
            .param(Param::string("clustertype").desc("type of the cluster: CloudManaged"))
            .param(Param::string("podid").desc("the Pod ID for the host; accepted and not used"))
            .field("id", "string", "the cluster ID")
            .field("name", "string", "the cluster name")
            .field("zoneid", "string", "the Zone ID of the cluster")
            .field("zonename", "string", "the Zone name of the cluster")
            .field(
                "hypervisortype",
                "string",
                "the hypervisor type of the cluster",
            )
            .field("clustertype", "string", "the type of the cluster")
            .field(
                "allocationstate",
                "string",
                "the allocation state of the cluster",
            )
            .field(
                "managedstate",
                "string",
                "whether this cluster is managed by CloudStack",
            )
            .handler(|ctx| async move {
                let zone_id = ctx.req_id("zoneid")?;
                let name = ctx.req_str("clustername")?.trim().to_string();
                let hypervisor = ctx.req_str("hypervisor")?.trim().to_string();
                if let Some(kind) = ctx.str("clustertype")
                    && !kind.eq_ignore_ascii_case("CloudManaged")
                {
                    return Err(OpError::InvalidParameter(format!(
                        "clustertype must be CloudManaged, not '{kind}'"
                    ))
                    .into());
                }
                let caller = ctx.caller.clone();
                let cluster = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        let cluster = kvm::add_cluster(tx, zone_id, &name, &hypervisor)?;
                        let text =
                            format!("Added cluster {} ({})", cluster.name, cluster.hypervisor);
                        events::record(
                            tx,
                            &NewEvent::completed(&caller, "CLUSTER.ADD", &text)
                                .resource("Cluster", &cluster.uuid),
                        )?;
                        Ok::<_, OpError>(cluster)
                    })
                    .await?;
                // CloudStack answers addCluster with a list of one cluster.
                Ok(ApiResult::List {
                    total: 1,
                    items: vec![cluster_obj(&cluster)],
                })
            }),
    )?;
    r.register(
        Command::sync("listClusters")
            .describe("Lists clusters.")
            .roles(ADMIN_ONLY)
            .object("cluster")
            .param(Param::uuid("id", CLUSTER).desc("lists clusters by the cluster ID"))
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .desc("lists clusters by Zone ID")
                    .related("listZones"),
            )
            .param(Param::string("name").desc("lists clusters by the cluster name"))
            .param(Param::string("hypervisor").desc("lists clusters by hypervisor type"))
            .list_params()
            .field("id", "string", "the cluster ID")
            .field("name", "string", "the cluster name")
            .field("zoneid", "string", "the Zone ID of the cluster")
            .field("zonename", "string", "the Zone name of the cluster")
            .field(
                "hypervisortype",
                "string",
                "the hypervisor type of the cluster",
            )
            .field("clustertype", "string", "the type of the cluster")
            .field(
                "allocationstate",
                "string",
                "the allocation state of the cluster",
            )
            .field(
                "managedstate",
                "string",
                "whether this cluster is managed by CloudStack",
            )
            .handler(|ctx| async move {
                let filter = ClusterFilter {
                    id: ctx.id("id"),
                    zone_id: ctx.id("zoneid"),
                    name: ctx.str("name").map(str::to_string),
                };
                let hypervisor = ctx.str("hypervisor").map(str::to_string);
                let page = ctx.page();
                let clusters = ctx
                    .state
                    .store()
                    .read(move |c| kvm::list_clusters(c, &filter))
                    .await?;
                let items = clusters
                    .iter()
                    .filter(|c| {
                        hypervisor
                            .as_ref()
                            .is_none_or(|h| c.hypervisor.eq_ignore_ascii_case(h))
                    })
                    .map(cluster_obj)
                    .collect();
                Ok(paged(items, page))
            }),
    )?;
    r.register(
        Command::sync("addHost")
            .describe("Adds a new host.")
            .roles(ADMIN_ONLY)
            .object("host")
            .param(Param::uuid("zoneid", Entity::ZONE).required().desc("the Zone ID for the host").related("listZones"))
            .param(Param::uuid("clusterid", CLUSTER).required().desc("the cluster ID for the host").related("listClusters"))
            .param(Param::string("url").required().desc("the host URL: http://<address>, or <address>:<ssh port>"))
            .param(Param::string("username").required().desc("the username for the host (SSH login)"))
            .param(Param::string("password").required().desc("the password for the host; stored encrypted, never listed"))
            .param(Param::string("hypervisor").required().desc("hypervisor type of the host: KVM"))
            .param(Param::string("podid").desc("the Pod ID for the host; accepted and not used"))
            .param(Param::string("name").desc("the host name (default: its address); NetWorker knows the host by it"))
            .param(Param::string("hostkeyfingerprint").length(1024).desc("pinned SSH host-key fingerprint(s), SHA256:... as ssh-keygen -lf prints them; without one, commands on the host are refused and the error shows its key's fingerprint"))
            .field("id", "string", "the ID of the host")
            .field("name", "string", "the name of the host")
            .field("state", "state", "the state of the host")
            .field("resourcestate", "string", "the resource state of the host")
            .field("type", "type", "the host type")
            .field("ipaddress", "string", "the IP address of the host")
            .field("zoneid", "string", "the Zone ID of the host")
            .field("zonename", "string", "the Zone name of the host")
            .field("clusterid", "string", "the cluster ID of the host")
            .field("clustername", "string", "the cluster name of the host")
            .field("clustertype", "string", "the cluster type of the cluster that host belongs to")
            .field("hypervisor", "string", "the host hypervisor")
            .field("sshport", "integer", "the SSH port bnr connects to")
            .field("hostkeyfingerprint", "string", "the pinned SSH host-key fingerprint(s)")
            .field("created", "date", "the date and time the host was created")
            .handler(|ctx| async move {
                let hypervisor = ctx.req_str("hypervisor")?;
                if !hypervisor.eq_ignore_ascii_case(kvm::KVM) {
                    return Err(OpError::InvalidParameter(format!(
                        "Unable to add a host of hypervisor type {hypervisor}: bnr manages KVM hosts"
                    ))
                    .into());
                }
                let req = NewHost {
                    zone_id: ctx.req_id("zoneid")?,
                    cluster_id: ctx.req_id("clusterid")?,
                    url: ctx.req_str("url")?.to_string(),
                    name: ctx.str("name").map(|s| s.trim().to_string()),
                    username: ctx.req_str("username")?.to_string(),
                    password: ctx.req_str("password")?.to_string(),
                    host_key: ctx.str("hostkeyfingerprint").map(str::to_string),
                };
                let caller = ctx.caller.clone();
                let store = ctx.state.store().clone();
                let host = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        let host = kvm::add_host(tx, store.secrets(), &req)?;
                        let text = format!("Added host {} ({}) to cluster {}", host.name, host.address, host.cluster_name);
                        events::record(tx, &NewEvent::completed(&caller, "HOST.ADD", &text).resource("Host", &host.uuid))?;
                        Ok::<_, OpError>(host)
                    })
                    .await?;
                // CloudStack answers addHost with a list of one host.
                Ok(ApiResult::List {
                    total: 1,
                    items: vec![host_obj(&host)],
                })
            }),
    )?;
    r.register(
        Command::sync("listHosts")
            .describe("Lists hosts.")
            .roles(ADMIN_ONLY)
            .object("host")
            .param(
                Param::uuid("id", HOST)
                    .desc("the id of the host")
                    .related("addHost"),
            )
            .param(
                Param::uuid("zoneid", Entity::ZONE)
                    .desc("the Zone ID for the host")
                    .related("listZones"),
            )
            .param(
                Param::uuid("clusterid", CLUSTER)
                    .desc("lists hosts existing in particular cluster")
                    .related("listClusters"),
            )
            .param(Param::string("name").desc("the name of the host"))
            .param(
                Param::string("state")
                    .desc("the state of the host: Up, Down, Disconnected or Maintenance"),
            )
            .param(Param::string("type").desc("the host type; only Routing hosts exist"))
            .param(Param::string("hypervisor").desc("hypervisor type of host: KVM"))
            .list_params()
            .field("id", "string", "the ID of the host")
            .field("name", "string", "the name of the host")
            .field("state", "state", "the state of the host")
            .field("resourcestate", "string", "the resource state of the host")
            .field("type", "type", "the host type")
            .field("ipaddress", "string", "the IP address of the host")
            .field("zoneid", "string", "the Zone ID of the host")
            .field("zonename", "string", "the Zone name of the host")
            .field("clusterid", "string", "the cluster ID of the host")
            .field("clustername", "string", "the cluster name of the host")
            .field(
                "clustertype",
                "string",
                "the cluster type of the cluster that host belongs to",
            )
            .field("hypervisor", "string", "the host hypervisor")
            .field("sshport", "integer", "the SSH port bnr connects to")
            .field(
                "hostkeyfingerprint",
                "string",
                "the pinned SSH host-key fingerprint(s)",
            )
            .field("created", "date", "the date and time the host was created")
            .handler(|ctx| async move {
                let filter = HostFilter {
                    id: ctx.id("id"),
                    zone_id: ctx.id("zoneid"),
                    cluster_id: ctx.id("clusterid"),
                    name: ctx.str("name").map(str::to_string),
                    state: state_param(ctx.str("state"))?,
                };
                // Every host is a KVM routing host: other types or hypervisors list nothing.
                let none = ctx
                    .str("type")
                    .is_some_and(|t| !t.eq_ignore_ascii_case("Routing"))
                    || ctx
                        .str("hypervisor")
                        .is_some_and(|h| !h.eq_ignore_ascii_case(kvm::KVM));
                let page = ctx.page();
                let hosts = if none {
                    Vec::new()
                } else {
                    ctx.state
                        .store()
                        .read(move |c| kvm::list_hosts(c, &filter))
                        .await?
                };
                Ok(paged(hosts.iter().map(host_obj).collect(), page))
            }),
    )?;
    r.register(
        Command::sync("updateHost")
            .describe("Updates a host.")
            .roles(ADMIN_ONLY)
            .object("host")
            .param(Param::uuid("id", HOST).required().desc("the ID of the host to update").related("listHosts"))
            .param(Param::string("name").desc("the new name of the host"))
            .param(Param::string("state").desc("the new state: Up, Down, Disconnected or Maintenance"))
            .param(Param::string("allocationstate").desc("Enable puts the host Up, Disable and Maintenance put it in Maintenance"))
            .param(Param::string("username").desc("the new username for the host (SSH login)"))
            .param(Param::string("password").desc("the new password for the host; stored encrypted, never listed"))
            .param(Param::string("hostkeyfingerprint").length(1024).desc("the pinned SSH host-key fingerprint(s), SHA256:..."))
            .field("id", "string", "the ID of the host")
            .field("name", "string", "the name of the host")
            .field("state", "state", "the state of the host")
            .field("resourcestate", "string", "the resource state of the host")
            .field("type", "type", "the host type")
            .field("ipaddress", "string", "the IP address of the host")
            .field("zoneid", "string", "the Zone ID of the host")
            .field("zonename", "string", "the Zone name of the host")
            .field("clusterid", "string", "the cluster ID of the host")
            .field("clustername", "string", "the cluster name of the host")
            .field("clustertype", "string", "the cluster type of the cluster that host belongs to")
            .field("hypervisor", "string", "the host hypervisor")
            .field("sshport", "integer", "the SSH port bnr connects to")
            .field("hostkeyfingerprint", "string", "the pinned SSH host-key fingerprint(s)")
            .field("created", "date", "the date and time the host was created")
            .handler(|ctx| async move {
                let id = ctx.req_id("id")?;
                let mut state = state_param(ctx.str("state"))?;
                if let Some(allocation) = ctx.str("allocationstate") {
                    state = Some(match allocation.to_ascii_lowercase().as_str() {
                        "enable" => HostState::Up,
                        "disable" | "maintenance" => HostState::Maintenance,
                        _ => {
                            return Err(OpError::InvalidParameter(format!(
                                "allocationstate must be Enable, Disable or Maintenance, not '{allocation}'"
                            ))
                            .into());
                        }
                    });
                }
                let update = HostUpdate {
                    name: ctx.str("name").map(|s| s.trim().to_string()),
                    state,
                    username: ctx.str("username").map(str::to_string),
                    password: ctx.str("password").map(str::to_string),
                    host_key: ctx.str("hostkeyfingerprint").map(str::to_string),
                };
                let caller = ctx.caller.clone();
                let store = ctx.state.store().clone();
                let host = ctx
                    .state
                    .store()
                    .write(move |tx| {
                        let host = kvm::update_host(tx, store.secrets(), id, &update)?;
                        let text = format!("Updated host {} ({}), now {}", host.name, host.address, host.state.as_str());
                        events::record(tx, &NewEvent::completed(&caller, "HOST.UPDATE", &text).resource("Host", &host.uuid))?;
                        Ok::<_, OpError>(host)
                    })
                    .await?;
                Ok(ApiResult::Object(host_obj(&host)))
            }),
    )?;
    r.register(
        Command::sync("deleteHost")
            .describe("Deletes a host.")
            .roles(ADMIN_ONLY)
            .object("success")
            .param(
                Param::uuid("id", HOST)
                    .required()
                    .desc("the host ID")
                    .related("listHosts"),
            )
            .param(
                Param::boolean("forced")
                    .desc("accepted; a host with instances running on it is never deleted"),
            )
            .field(
                "success",
                "boolean",
                "true if operation is executed successfully",
            )
            .handler(|ctx| async move {
                let id = ctx.req_id("id")?;
                let caller = ctx.caller.clone();
                ctx.state
                    .store()
                    .write(move |tx| {
                        let host = kvm::delete_host(tx, id)?;
                        let text = format!("Deleted host {} ({})", host.name, host.address);
                        events::record(
                            tx,
                            &NewEvent::completed(&caller, "HOST.DELETE", &text)
                                .resource("Host", &host.uuid),
                        )?;
                        Ok::<_, OpError>(())
                    })
                    .await?;
                Ok(ApiResult::success())
            }),
    )?;
    Ok(())
}
