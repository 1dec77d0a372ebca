//! KVM clusters and hosts (addCluster, addHost, listHosts, updateHost, deleteHost) and the
//! placement of KVM instances on them.

use serde_json::Value;

use crate::bnr_support::*;
use crate::support_api::*;

pub const HOST_PASSWORD: &str = "kvm-host-password-1";
const FINGERPRINT: &str = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";

pub async fn add_cluster(s: &TestServer, name: &str) -> String {
    let r = s
        .admin()
        .call(
            "addCluster",
            &[
                ("zoneid", &s.zone_id),
                ("clustername", name),
                ("hypervisor", "KVM"),
            ],
        )
        .await;
    r.ok("addCluster")["cluster"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

pub async fn add_host(s: &TestServer, cluster: &str, url: &str, name: &str) -> Value {
    let r = s
        .admin()
        .call(
            "addHost",
            &[
                ("zoneid", &s.zone_id),
                ("clusterid", cluster),
                ("url", url),
                ("name", name),
                ("username", "root"),
                ("password", HOST_PASSWORD),
                ("hypervisor", "KVM"),
                ("hostkeyfingerprint", FINGERPRINT),
            ],
        )
        .await;
    r.ok("addHost")["host"][0].clone()
}

async fn set_state(s: &TestServer, host: &str, state: &str) {
    s.admin()
        .call("updateHost", &[("id", host), ("state", state)])
        .await
        .ok("updateHost");
}

async fn listed_vm(s: &TestServer, vm: &str) -> Value {
    let r = s
        .admin()
        .call("listVirtualMachines", &[("id", vm), ("listall", "true")])
        .await;
    r.ok("listVirtualMachines")["virtualmachine"][0].clone()
}

#[tokio::test]
async fn clusters_and_hosts_are_listed_like_cloudstack_and_credentials_never_leave() {
    let s = start(Installed::Dummy).await;
    let cluster = add_cluster(&s, "kvm-c1").await;
    let host = add_host(&s, &cluster, "http://10.1.1.5:2222", "kvm1").await;
    assert_eq!(host["name"], "kvm1");
    assert_eq!(host["ipaddress"], "10.1.1.5");
    assert_eq!(host["sshport"], 2222);
    assert_eq!(host["state"], "Up");
    assert_eq!(host["type"], "Routing");
    assert_eq!(host["hypervisor"], "KVM");
    assert_eq!(host["clustername"], "kvm-c1");
    assert_eq!(host["hostkeyfingerprint"], FINGERPRINT);

    let clusters = s
        .admin()
        .call("listClusters", &[("zoneid", &s.zone_id)])
        .await;
    let clusters = clusters.ok("listClusters");
    assert_eq!(clusters["count"], 1);
    assert_eq!(clusters["cluster"][0]["hypervisortype"], "KVM");

    let hosts = s
        .admin()
        .call("listHosts", &[("clusterid", &cluster)])
        .await;
    let text = hosts.text.clone();
    assert_eq!(hosts.ok("listHosts")["count"], 1);
    assert!(!text.contains(HOST_PASSWORD), "{text}");
    assert!(!text.contains("password"), "{text}");
    // Stored sealed, not in plain text.
    let stored: String = s
        .state
        .store()
        .read(|c| {
            c.query_row("SELECT password FROM hosts", [], |r| r.get(0))
                .map_err(bnr::store::StoreError::from)
        })
        .await
        .unwrap();
    assert!(stored.starts_with("sealed:"), "{stored}");

    // Bad input is refused with the reason.
    for (params, needle) in [
        (vec![("url", "ftp://x")], "url"),
        (
            vec![("url", "10.1.1.6"), ("hostkeyfingerprint", "MD5:aa")],
            "fingerprint",
        ),
        (vec![("url", "10.1.1.5")], "already exists"),
    ] {
        let mut all = vec![
            ("zoneid", s.zone_id.as_str()),
            ("clusterid", cluster.as_str()),
            ("username", "root"),
            ("password", "pw"),
            ("hypervisor", "KVM"),
        ];
        all.extend(params);
        let r = s.admin().call("addHost", &all).await;
        let code = if needle == "already exists" { 530 } else { 431 };
        let message = r.err("addHost", code);
        assert!(message.contains(needle), "{message}");
    }
    let r = s
        .admin()
        .call(
            "addCluster",
            &[
                ("zoneid", &s.zone_id),
                ("clustername", "vmw"),
                ("hypervisor", "VMware"),
            ],
        )
        .await;
    assert!(r.err("addCluster", 431).contains("KVM"));
    let r = s
        .admin()
        .call("updateHost", &[("id", &id(&host)), ("state", "Alert")])
        .await;
    assert!(r.err("updateHost", 431).contains("state"));

    // Non-admins do not see the commands at all.
    let user = s.client(s.create_user("kim", "User", None).await);
    let r = user.call("listHosts", &[]).await;
    assert!([401, 432].contains(&r.status), "{}", r.text);
}

#[tokio::test]
async fn kvm_instances_run_on_an_up_host_and_come_back_to_their_last_host() {
    let s = start(Installed::Dummy).await;
    let cluster = add_cluster(&s, "kvm-c1").await;
    let h1 = add_host(&s, &cluster, "10.1.1.1", "kvm1").await;
    let h2 = add_host(&s, &cluster, "10.1.1.2", "kvm2").await;
    let user = s.client(s.create_user("kim", "User", None).await);

    // Every host down: a started instance has nowhere to run.
    set_state(&s, &id(&h1), "Down").await;
    set_state(&s, &id(&h2), "Maintenance").await;
    let (so, _, t) = s.catalog().await;
    let r = user
        .call(
            "deployVirtualMachine",
            &[
                ("serviceofferingid", so.as_str()),
                ("templateid", t.as_str()),
                ("zoneid", s.zone_id.as_str()),
                ("name", "nowhere"),
            ],
        )
        .await;
    assert!(r.err("deployVirtualMachine", 530).contains("no KVM host"));

    set_state(&s, &id(&h2), "Up").await;
    let v = vm(&s, &user, "kvm-vm", false).await;
    let listed = listed_vm(&s, &id(&v)).await;
    assert_eq!(listed["hypervisor"], "KVM");
    assert_eq!(listed["hostname"], "10.1.1.2");

    // Stopped, it keeps its last host and starts there again while that host is up.
    let done = user
        .call_async("stopVirtualMachine", &[("id", &id(&v))])
        .await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    set_state(&s, &id(&h1), "Up").await;
    let done = user
        .call_async("startVirtualMachine", &[("id", &id(&v))])
        .await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    assert_eq!(listed_vm(&s, &id(&v)).await["hostname"], "10.1.1.2");

    // A host with a running instance is not deleted; an idle one is.
    let r = s.admin().call("deleteHost", &[("id", &id(&h2))]).await;
    assert!(r.err("deleteHost", 530).contains("running"));
    s.admin()
        .call("deleteHost", &[("id", &id(&h1))])
        .await
        .ok("deleteHost");
    let hosts = s.admin().call("listHosts", &[]).await;
    assert_eq!(hosts.ok("listHosts")["count"], 1);
}
