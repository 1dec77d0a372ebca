//! Instances and volumes: state machine, ownership, visibility.

use serde_json::json;

use crate::support_api::*;

#[tokio::test]
async fn deploy_answers_jobid_and_id_then_the_vm_runs_with_its_volumes() {
    let s = TestServer::start().await;
    let a = s.admin();
    let (so, dof, t) = s.catalog().await;
    let r = a
        .call(
            "deployVirtualMachine",
            &[
                ("serviceofferingid", &so),
                ("templateid", &t),
                ("zoneid", &s.zone_id),
                ("diskofferingid", &dof),
                ("name", "web-1"),
                ("displayname", "Web One"),
            ],
        )
        .await;
    let first = r.ok("deployVirtualMachine");
    let id = first["id"].as_str().expect("create-style id").to_string();
    let jobid = first["jobid"].as_str().expect("jobid").to_string();
    s.wait_job(&jobid).await;
    let job = a.call("queryAsyncJobResult", &[("jobid", &jobid)]).await;
    let job = job.ok("queryAsyncJobResult");
    assert_eq!(job["jobinstancetype"], "VirtualMachine");
    assert_eq!(job["jobinstanceid"], id.as_str());
    let vm = &job["jobresult"]["virtualmachine"];
    assert_eq!(vm["id"], id.as_str());
    assert_eq!(vm["state"], "Running");
    assert_eq!(vm["name"], "web-1");
    assert_eq!(vm["displayname"], "Web One");
    assert_eq!(vm["zonename"], "zone1");
    assert_eq!(vm["cpunumber"], 1);
    assert_eq!(vm["memory"], 1024);
    let internal = vm["instancename"].as_str().unwrap();
    assert!(
        internal.starts_with("i-") && internal.ends_with("-VM"),
        "{internal}"
    );

    let vols = a.call("listVolumes", &[("virtualmachineid", &id)]).await;
    let vols = vols.ok("listVolumes");
    assert_eq!(vols["count"], 2);
    let v = vols["volume"].as_array().unwrap();
    assert_eq!(
        (v[0]["type"].as_str(), v[0]["size"].as_i64()),
        (Some("ROOT"), Some(2 << 30))
    );
    assert_eq!(
        (v[1]["type"].as_str(), v[1]["size"].as_i64()),
        (Some("DATADISK"), Some(5 << 30))
    );
    assert!(
        v.iter()
            .all(|x| x["state"] == "Ready" && x["virtualmachineid"] == id.as_str())
    );
    let root_only = a
        .call(
            "listVolumes",
            &[("virtualmachineid", &id), ("type", "ROOT")],
        )
        .await;
    assert_eq!(root_only.ok("listVolumes")["count"], 1);
}

#[tokio::test]
async fn stop_and_start_walk_the_state_machine() {
    let s = TestServer::start().await;
    let a = s.admin();
    let vm = s.deploy(&a, "db-1", &[]).await;
    let id = vm["id"].as_str().unwrap();
    let stopped = a.call_async("stopVirtualMachine", &[("id", id)]).await;
    assert_eq!(stopped["jobresult"]["virtualmachine"]["state"], "Stopped");
    let again = a.call_async("stopVirtualMachine", &[("id", id)]).await;
    assert_eq!(again["jobstatus"], 1, "stopping a stopped VM is a no-op");
    let listed = a.call("listVirtualMachines", &[("id", id)]).await;
    assert_eq!(
        listed.ok("listVirtualMachines")["virtualmachine"][0]["state"],
        "Stopped"
    );
    let started = a.call_async("startVirtualMachine", &[("id", id)]).await;
    assert_eq!(started["jobresult"]["virtualmachine"]["state"], "Running");
    let by_state = a.call("listVirtualMachines", &[("state", "Running")]).await;
    assert_eq!(by_state.ok("listVirtualMachines")["count"], 1);
}

#[tokio::test]
async fn a_vm_deployed_with_startvm_false_is_stopped_and_a_destroyed_vm_cannot_start() {
    let s = TestServer::start().await;
    let a = s.admin();
    let vm = s.deploy(&a, "cold", &[("startvm", "false")]).await;
    assert_eq!(vm["state"], "Stopped");
    let id = vm["id"].as_str().unwrap().to_string();
    let uuid = id.clone();
    s.state
        .store()
        .write(move |tx| {
            tx.execute("UPDATE vms SET state = 'Destroyed' WHERE uuid = ?1", [uuid])?;
            Ok::<_, bnr::store::StoreError>(())
        })
        .await
        .unwrap();
    let failed = a.call_async("startVirtualMachine", &[("id", &id)]).await;
    assert_eq!(failed["jobstatus"], 2);
    assert_eq!(failed["jobresultcode"], 530);
    assert!(
        failed["jobresult"]["errortext"]
            .as_str()
            .unwrap()
            .contains("Destroyed"),
        "{failed}"
    );
}

#[tokio::test]
async fn two_users_of_different_accounts_cannot_see_or_touch_each_others_vms() {
    let s = TestServer::start().await;
    let alice = s.client(s.create_user("alice", "User", None).await);
    let bob = s.client(s.create_user("bob", "User", None).await);
    let avm = s.deploy(&alice, "alice-vm", &[]).await;
    s.deploy(&bob, "bob-vm", &[]).await;
    let aid = avm["id"].as_str().unwrap();
    for params in [vec![], vec![("listall", "true")]] {
        let r = bob.call("listVirtualMachines", &params).await;
        let inner = r.ok("listVirtualMachines");
        assert_eq!(inner["count"], 1);
        assert_eq!(inner["virtualmachine"][0]["name"], "bob-vm");
    }
    let r = bob.call("listVirtualMachines", &[("id", aid)]).await;
    assert_eq!(r.json, json!({"listvirtualmachinesresponse": {}}));
    let r = bob.call("listVolumes", &[("virtualmachineid", aid)]).await;
    assert_eq!(r.json, json!({"listvolumesresponse": {}}));
    bob.call("stopVirtualMachine", &[("id", aid)])
        .await
        .err("stopVirtualMachine", 531);
    assert!(
        avm.get("instancename").is_none(),
        "internal names are for root admins"
    );
    let all = s
        .admin()
        .call("listVirtualMachines", &[("listall", "true")])
        .await;
    assert_eq!(all.ok("listVirtualMachines")["count"], 2);
    let own = s.admin().call("listVirtualMachines", &[]).await;
    assert_eq!(
        own.json,
        json!({"listvirtualmachinesresponse": {}}),
        "without listall an admin sees its own"
    );
}

#[tokio::test]
async fn a_domain_admin_sees_its_subtree_and_admins_deploy_on_behalf_of_accounts() {
    let s = TestServer::start().await;
    let a = s.admin();
    let d = a.call("createDomain", &[("name", "sales")]).await;
    let domain_id = d.ok("createDomain")["domain"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dadmin = s.client(s.create_user("boss", "DomainAdmin", Some(&domain_id)).await);
    let carol = s.client(s.create_user("carol", "User", Some(&domain_id)).await);
    let root_user = s.client(s.create_user("dave", "User", None).await);
    s.deploy(&carol, "carol-vm", &[]).await;
    s.deploy(&root_user, "dave-vm", &[]).await;
    let onbehalf = s
        .deploy(
            &a,
            "for-carol",
            &[("account", "carol"), ("domainid", &domain_id)],
        )
        .await;
    assert_eq!(onbehalf["account"], "carol");
    let r = dadmin
        .call("listVirtualMachines", &[("listall", "true")])
        .await;
    let names: Vec<&str> = r.ok("listVirtualMachines")["virtualmachine"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, vec!["carol-vm", "for-carol"]);
    let r = dadmin.call("listDomains", &[]).await;
    assert_eq!(r.ok("listDomains")["domain"][0]["path"], "ROOT/sales");
    // A user cannot deploy for someone else.
    let (so, _, t) = s.catalog().await;
    carol
        .call(
            "deployVirtualMachine",
            &[
                ("serviceofferingid", &so),
                ("templateid", &t),
                ("zoneid", &s.zone_id),
                ("account", "boss"),
                ("domainid", &domain_id),
            ],
        )
        .await
        .err("deployVirtualMachine", 531);
}

#[tokio::test]
async fn list_accounts_and_users_show_keys_and_roles() {
    let s = TestServer::start().await;
    s.create_user("erin", "User", None).await;
    let r = s.admin().call("listAccounts", &[("name", "erin")]).await;
    let acc = &r.ok("listAccounts")["account"][0];
    assert_eq!(acc["accounttype"], 0);
    assert_eq!(acc["roletype"], "User");
    assert_eq!(acc["user"][0]["username"], "erin");
    let r = s.admin().call("listUsers", &[("username", "erin")]).await;
    assert!(r.ok("listUsers")["user"][0]["apikey"].is_string());
    assert!(!r.text.contains("secretkey"));
}
