//! Instance destroy/recover/expunge and volume create/attach/detach/delete over HTTP: every
//! transition, refusals, ownership, events, the B&R attach/detach guard (spec §3.9) and the
//! expunge guard hook (spec §3.10).

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use bnr::api::{ApiState, commands, router};
use bnr::identity::Caller;
use bnr::inventory::{ExpungeGuard, GuardFuture};
use bnr::store::{OpError, StoreError};

use crate::support_api::*;

/// The VM as an admin lists it with `listall` (None = not listed, e.g. expunged).
async fn admin_vm(s: &TestServer, id: &str) -> Option<Value> {
    let r = s
        .admin()
        .call("listVirtualMachines", &[("id", id), ("listall", "true")])
        .await;
    r.ok("listVirtualMachines")["virtualmachine"]
        .get(0)
        .cloned()
}

/// Every live volume of the admin's view (`listall`), by id.
async fn admin_volume(s: &TestServer, id: &str) -> Option<Value> {
    let r = s
        .admin()
        .call("listVolumes", &[("id", id), ("listall", "true")])
        .await;
    r.ok("listVolumes")["volume"].get(0).cloned()
}

async fn vm_volumes(s: &TestServer, vm_id: &str) -> Vec<Value> {
    let r = s
        .admin()
        .call(
            "listVolumes",
            &[("virtualmachineid", vm_id), ("listall", "true")],
        )
        .await;
    r.ok("listVolumes")["volume"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Types of the recorded events starting with `prefix`, oldest first (listEvents is newest first).
async fn event_types(s: &TestServer, prefix: &str) -> Vec<String> {
    let r = s
        .admin()
        .call("listEvents", &[("listall", "true"), ("pagesize", "-1")])
        .await;
    let mut types: Vec<String> = r.ok("listEvents")["event"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .filter(|t| t.starts_with(prefix))
        .collect();
    types.reverse();
    types
}

fn failed(job: &Value, code: u16) -> String {
    assert_eq!(job["jobstatus"], 2, "job should fail: {job}");
    assert_eq!(job["jobresultcode"], code, "{job}");
    assert_eq!(job["jobresult"]["errorcode"], code, "{job}");
    job["jobresult"]["errortext"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn succeeded(job: &Value) -> &Value {
    assert_eq!(job["jobstatus"], 1, "job should succeed: {job}");
    &job["jobresult"]
}

#[tokio::test]
async fn destroy_recover_and_expunge_walk_the_state_machine() {
    let s = TestServer::start().await;
    let a = s.admin();
    let (_, dof, _) = s.catalog().await;
    let vm = s.deploy(&a, "life", &[("diskofferingid", &dof)]).await;
    let id = vm["id"].as_str().unwrap().to_string();
    let vols = vm_volumes(&s, &id).await;
    assert_eq!(vols.len(), 2);
    let root = vols[0]["id"].as_str().unwrap().to_string();
    let data = vols[1]["id"].as_str().unwrap().to_string();

    // Running → Destroyed: ROOT to Destroy, the data disk detached and kept.
    let done = a.call_async("destroyVirtualMachine", &[("id", &id)]).await;
    assert_eq!(succeeded(&done)["virtualmachine"]["state"], "Destroyed");
    assert_eq!(done["jobinstancetype"], "VirtualMachine");
    assert_eq!(done["jobinstanceid"], id.as_str());
    let root_vol = admin_volume(&s, &root).await.expect("root kept");
    assert_eq!(root_vol["state"], "Destroy");
    assert_eq!(root_vol["destroyed"], true);
    assert_eq!(root_vol["virtualmachineid"], id.as_str());
    let data_vol = admin_volume(&s, &data).await.expect("data disk kept");
    assert_eq!(data_vol["state"], "Ready");
    assert!(data_vol.get("virtualmachineid").is_none(), "{data_vol}");
    assert!(data_vol.get("deviceid").is_none(), "{data_vol}");
    assert_eq!(admin_vm(&s, &id).await.unwrap()["state"], "Destroyed");
    let present = a
        .call(
            "listVirtualMachines",
            &[("listall", "true"), ("state", "Present")],
        )
        .await;
    assert_eq!(present.ok("listVirtualMachines")["count"], Value::Null);

    // Destroying again changes nothing; a destroyed VM cannot start or be expunged twice over.
    let again = a.call_async("destroyVirtualMachine", &[("id", &id)]).await;
    assert_eq!(succeeded(&again)["virtualmachine"]["state"], "Destroyed");
    let start = a.call_async("startVirtualMachine", &[("id", &id)]).await;
    assert!(failed(&start, 530).contains("Destroyed"));

    // Destroyed → Stopped with the ROOT volume Ready again.
    let r = a.call("recoverVirtualMachine", &[("id", &id)]).await;
    assert_eq!(
        r.ok("recoverVirtualMachine")["virtualmachine"]["state"],
        "Stopped"
    );
    assert_eq!(admin_volume(&s, &root).await.unwrap()["state"], "Ready");
    let text = a
        .call("recoverVirtualMachine", &[("id", &id)])
        .await
        .err("recoverVirtualMachine", 431);
    assert_eq!(text, format!("Vm with id {id} is not in the right state"));

    // Only a destroyed VM may be expunged.
    let refused = a.call_async("expungeVirtualMachine", &[("id", &id)]).await;
    assert_eq!(
        failed(&refused, 530),
        "Please destroy vm with specified vmId before expunge"
    );
    assert_eq!(admin_vm(&s, &id).await.unwrap()["state"], "Stopped");

    // Stopped → Destroyed → expunged: the VM and its ROOT volume are gone, the data disk stays.
    succeeded(&a.call_async("destroyVirtualMachine", &[("id", &id)]).await);
    let expunged = a.call_async("expungeVirtualMachine", &[("id", &id)]).await;
    assert_eq!(succeeded(&expunged)["success"], true);
    assert!(admin_vm(&s, &id).await.is_none());
    assert!(admin_volume(&s, &root).await.is_none());
    assert!(vm_volumes(&s, &id).await.is_empty());
    assert_eq!(admin_volume(&s, &data).await.unwrap()["state"], "Ready");
    let (removed, root_state): (Option<i64>, String) = {
        let uuid = id.clone();
        let root_uuid = root.clone();
        s.state
            .store()
            .read(move |c| {
                let removed =
                    c.query_row("SELECT removed FROM vms WHERE uuid = ?1", [uuid], |r| {
                        r.get(0)
                    })?;
                let state = c.query_row(
                    "SELECT state FROM volumes WHERE uuid = ?1",
                    [root_uuid],
                    |r| r.get(0),
                )?;
                Ok::<_, StoreError>((removed, state))
            })
            .await
            .unwrap()
    };
    assert!(removed.is_some(), "expunge soft-deletes the VM row");
    assert_eq!(root_state, "Expunged");

    // An expunged VM is not found for anything but a repeated (no-op) expunge.
    let twice = a.call_async("expungeVirtualMachine", &[("id", &id)]).await;
    assert_eq!(succeeded(&twice)["success"], true);
    for cmd in ["destroyVirtualMachine", "startVirtualMachine"] {
        let text = a.call(cmd, &[("id", &id)]).await.err(cmd, 431);
        assert_eq!(
            text,
            format!("Unable to find a virtual machine with id {id}")
        );
    }
    a.call("recoverVirtualMachine", &[("id", &id)])
        .await
        .err("recoverVirtualMachine", 431);
    // The host name is free again.
    s.deploy(&a, "life", &[]).await;

    assert_eq!(
        event_types(&s, "VM.").await,
        vec![
            "VM.CREATE",
            "VM.START",
            "VM.DESTROY",
            "VM.RECOVER",
            "VM.DESTROY",
            "VM.EXPUNGE",
            "VM.CREATE",
            "VM.START"
        ]
    );
    assert_eq!(event_types(&s, "VOLUME.").await, vec!["VOLUME.DETACH"]);
}

#[tokio::test]
async fn destroy_with_expunge_is_for_admins_and_removes_the_vm_at_once() {
    let s = TestServer::start().await;
    let a = s.admin();
    let user = s.client(s.create_user("ursula", "User", None).await);
    let vm = s.deploy(&user, "gone", &[]).await;
    let id = vm["id"].as_str().unwrap().to_string();
    let text = user
        .call("destroyVirtualMachine", &[("id", &id), ("expunge", "true")])
        .await
        .err("destroyVirtualMachine", 531);
    assert!(text.contains("can be passed by Admin only"), "{text}");
    assert_eq!(admin_vm(&s, &id).await.unwrap()["state"], "Running");

    let done = a
        .call_async("destroyVirtualMachine", &[("id", &id), ("expunge", "true")])
        .await;
    assert_eq!(succeeded(&done)["virtualmachine"]["state"], "Expunging");
    assert!(admin_vm(&s, &id).await.is_none());
    assert!(vm_volumes(&s, &id).await.is_empty());
    assert_eq!(
        event_types(&s, "VM.").await,
        vec!["VM.CREATE", "VM.START", "VM.DESTROY", "VM.EXPUNGE"]
    );
}

#[tokio::test]
async fn users_destroy_their_own_vms_only_and_do_not_see_destroyed_ones() {
    let s = TestServer::start().await;
    let alice = s.client(s.create_user("alice", "User", None).await);
    let bob = s.client(s.create_user("bob", "User", None).await);
    let vm = s.deploy(&alice, "alice-vm", &[]).await;
    let id = vm["id"].as_str().unwrap().to_string();

    bob.call("destroyVirtualMachine", &[("id", &id)])
        .await
        .err("destroyVirtualMachine", 531);
    assert_eq!(admin_vm(&s, &id).await.unwrap()["state"], "Running");

    succeeded(
        &alice
            .call_async("destroyVirtualMachine", &[("id", &id)])
            .await,
    );
    let listed = alice.call("listVirtualMachines", &[]).await;
    assert_eq!(listed.ok("listVirtualMachines")["count"], Value::Null);
    // Recover and expunge are admin commands.
    for cmd in ["recoverVirtualMachine", "expungeVirtualMachine"] {
        let text = alice.call(cmd, &[("id", &id)]).await.err(cmd, 401);
        assert!(text.contains("is not available for user"), "{text}");
    }
    // A domain admin of another domain cannot recover it; the root admin can.
    let d = s.admin().call("createDomain", &[("name", "other")]).await;
    let domain = d.ok("createDomain")["domain"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dadmin = s.client(s.create_user("dora", "DomainAdmin", Some(&domain)).await);
    dadmin
        .call("recoverVirtualMachine", &[("id", &id)])
        .await
        .err("recoverVirtualMachine", 531);
    dadmin
        .call("expungeVirtualMachine", &[("id", &id)])
        .await
        .err("expungeVirtualMachine", 531);
    let r = s
        .admin()
        .call("recoverVirtualMachine", &[("id", &id)])
        .await;
    assert_eq!(
        r.ok("recoverVirtualMachine")["virtualmachine"]["state"],
        "Stopped"
    );
    let listed = alice.call("listVirtualMachines", &[]).await;
    assert_eq!(listed.ok("listVirtualMachines")["count"], 1);
}

/// An expunge guard that records its calls and refuses while `refuse` is set.
struct RecordingGuard {
    refuse: Mutex<Option<String>>,
    calls: Mutex<Vec<(String, i64)>>,
}

impl ExpungeGuard for RecordingGuard {
    fn before_expunge<'a>(&'a self, caller: &'a Caller, vm_id: i64) -> GuardFuture<'a> {
        Box::pin(async move {
            self.calls.lock().push((caller.username.clone(), vm_id));
            match self.refuse.lock().clone() {
                Some(text) => Err(OpError::InvalidState(text)),
                None => Ok(()),
            }
        })
    }
}

/// The test server again, with `guard` registered the way the B&R service registers its own.
fn with_guard(mut s: TestServer, guard: Arc<RecordingGuard>) -> TestServer {
    let mut ext = http::Extensions::new();
    ext.insert::<Arc<dyn ExpungeGuard>>(guard);
    let state = ApiState::with_extensions(
        s.state.core.clone(),
        commands::registry().expect("registry"),
        ext,
    );
    s.router = router(state.clone());
    s.state = state;
    s
}

async fn internal_vm_id(s: &TestServer, uuid: &str) -> i64 {
    let uuid = uuid.to_string();
    s.state
        .store()
        .read(move |c| {
            let id = c.query_row("SELECT id FROM vms WHERE uuid = ?1", [uuid], |r| r.get(0))?;
            Ok::<_, StoreError>(id)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn the_expunge_guard_can_refuse_and_nothing_changes() {
    let guard = Arc::new(RecordingGuard {
        refuse: Mutex::new(Some(
            "VM [guarded] has a Backup Offering [gold] with 1 backups. Please, remove the backup offering before proceeding to VM exclusion!".into(),
        )),
        calls: Mutex::new(Vec::new()),
    });
    let s = with_guard(TestServer::start().await, guard.clone());
    let a = s.admin();
    let vm = s.deploy(&a, "guarded", &[]).await;
    let id = vm["id"].as_str().unwrap().to_string();
    let internal = internal_vm_id(&s, &id).await;

    // Destroy without expunge does not consult the guard.
    let other = s.deploy(&a, "plain", &[]).await;
    succeeded(
        &a.call_async(
            "destroyVirtualMachine",
            &[("id", other["id"].as_str().unwrap())],
        )
        .await,
    );
    assert!(guard.calls.lock().is_empty());

    // destroy+expunge refused: the VM is still Running with its volume Ready.
    let done = a
        .call_async("destroyVirtualMachine", &[("id", &id), ("expunge", "true")])
        .await;
    assert!(failed(&done, 530).contains("with 1 backups"));
    assert_eq!(admin_vm(&s, &id).await.unwrap()["state"], "Running");
    assert_eq!(vm_volumes(&s, &id).await[0]["state"], "Ready");

    // expunge refused: the VM stays Destroyed.
    succeeded(&a.call_async("destroyVirtualMachine", &[("id", &id)]).await);
    let done = a.call_async("expungeVirtualMachine", &[("id", &id)]).await;
    assert!(failed(&done, 530).contains("Please, remove the backup offering"));
    assert_eq!(admin_vm(&s, &id).await.unwrap()["state"], "Destroyed");
    assert_eq!(
        *guard.calls.lock(),
        vec![
            ("admin".to_string(), internal),
            ("admin".to_string(), internal)
        ]
    );
    assert!(
        !event_types(&s, "VM.")
            .await
            .contains(&"VM.EXPUNGE".to_string())
    );

    // A VM in the wrong state is refused before the guard is asked.
    let running = s.deploy(&a, "busy", &[]).await;
    let done = a
        .call_async(
            "expungeVirtualMachine",
            &[("id", running["id"].as_str().unwrap())],
        )
        .await;
    failed(&done, 530);
    assert_eq!(guard.calls.lock().len(), 2);

    // Once the guard agrees, the expunge goes through.
    *guard.refuse.lock() = None;
    let done = a.call_async("expungeVirtualMachine", &[("id", &id)]).await;
    assert_eq!(succeeded(&done)["success"], true);
    assert!(admin_vm(&s, &id).await.is_none());
    assert_eq!(guard.calls.lock().len(), 3);
}

/// Creates a volume as `client` and returns the job's volume object.
async fn create_volume(client: &Client<'_>, params: &[(&str, &str)]) -> Value {
    let done = client.call_async("createVolume", params).await;
    succeeded(&done)["volume"].clone()
}

#[tokio::test]
async fn volumes_are_created_attached_detached_and_deleted() {
    let s = TestServer::start().await;
    let a = s.admin();
    let (_, dof, _) = s.catalog().await;

    // createVolume answers id + jobid; the volume is Allocated and attached to nothing.
    let r = a
        .call(
            "createVolume",
            &[
                ("name", "extra"),
                ("diskofferingid", &dof),
                ("zoneid", &s.zone_id),
            ],
        )
        .await;
    let first = r.ok("createVolume");
    let vol_id = first["id"].as_str().expect("create-style id").to_string();
    s.wait_job(first["jobid"].as_str().unwrap()).await;
    let vol = admin_volume(&s, &vol_id).await.unwrap();
    assert_eq!(vol["name"], "extra");
    assert_eq!(vol["state"], "Allocated");
    assert_eq!(vol["type"], "DATADISK");
    assert_eq!(vol["size"], 5_i64 << 30);
    assert_eq!(vol["diskofferingid"], dof.as_str());
    assert_eq!(vol["zoneid"], s.zone_id.as_str());
    assert_eq!(vol["zonename"], "zone1");
    assert_eq!(vol["account"], "admin");
    assert_eq!(vol["domain"], "ROOT");
    assert!(vol["created"].is_string() && vol["domainid"].is_string());
    assert!(vol.get("virtualmachineid").is_none() && vol.get("path").is_none());

    let sized = create_volume(&a, &[("size", "20"), ("zoneid", &s.zone_id)]).await;
    assert_eq!(sized["size"], 20_i64 << 30);
    assert!(sized["name"].as_str().unwrap().starts_with("DATA-"));
    assert!(sized.get("diskofferingid").is_none());
    for (params, text) in [
        (
            vec![("zoneid", s.zone_id.as_str())],
            "At least one of disk Offering ID or size",
        ),
        (
            vec![("zoneid", s.zone_id.as_str()), ("size", "0")],
            "Invalid size",
        ),
        (
            vec![("zoneid", s.zone_id.as_str()), ("size", "5000")],
            "Invalid size",
        ),
    ] {
        let t = a
            .call("createVolume", &params)
            .await
            .err("createVolume", 431);
        assert!(t.contains(text), "{t}");
    }
    a.call("createVolume", &[("size", "1")])
        .await
        .err("createVolume", 431);

    // Attach to a stopped VM: next free device (2; 1 is the deploy-time data disk), Ready.
    let vm = s
        .deploy(
            &a,
            "host",
            &[("diskofferingid", &dof), ("startvm", "false")],
        )
        .await;
    let vm_id = vm["id"].as_str().unwrap().to_string();
    let done = a
        .call_async(
            "attachVolume",
            &[("id", &vol_id), ("virtualmachineid", &vm_id)],
        )
        .await;
    assert_eq!(done["jobinstancetype"], "Volume");
    let attached = &succeeded(&done)["volume"];
    assert_eq!(attached["virtualmachineid"], vm_id.as_str());
    assert_eq!(attached["vmname"], "host");
    assert_eq!(attached["deviceid"], 2);
    assert_eq!(attached["state"], "Ready");
    assert_eq!(
        attached["path"],
        vol_id.as_str(),
        "created on primary storage"
    );

    // The next one skips the CD-ROM slot 3; an explicit device id is honoured and checked.
    let done = a
        .call_async(
            "attachVolume",
            &[
                ("id", sized["id"].as_str().unwrap()),
                ("virtualmachineid", &vm_id),
            ],
        )
        .await;
    assert_eq!(succeeded(&done)["volume"]["deviceid"], 4);
    let third = create_volume(&a, &[("size", "1"), ("zoneid", &s.zone_id)]).await;
    let third_id = third["id"].as_str().unwrap().to_string();
    for (device, code, text) in [
        (
            "0",
            431,
            "Vm already has root volume attached to it".to_string(),
        ),
        ("3", 530, "deviceId should be 1,2,4-7".to_string()),
        ("8", 530, "deviceId should be 1,2,4-7".to_string()),
        ("4", 530, format!("deviceId 4 is used by vm {vm_id}")),
    ] {
        let done = a
            .call_async(
                "attachVolume",
                &[
                    ("id", &third_id),
                    ("virtualmachineid", &vm_id),
                    ("deviceid", device),
                ],
            )
            .await;
        assert_eq!(failed(&done, code), text);
    }
    let done = a
        .call_async(
            "attachVolume",
            &[
                ("id", &third_id),
                ("virtualmachineid", &vm_id),
                ("deviceid", "6"),
            ],
        )
        .await;
    assert_eq!(succeeded(&done)["volume"]["deviceid"], 6);

    // Already attached, or a ROOT volume: refused.
    let other = s.deploy(&a, "other", &[]).await;
    let other_id = other["id"].as_str().unwrap().to_string();
    let done = a
        .call_async(
            "attachVolume",
            &[("id", &vol_id), ("virtualmachineid", &other_id)],
        )
        .await;
    assert_eq!(
        failed(&done, 431),
        "Please specify a volume that is not attached to any VM."
    );
    let root = vm_volumes(&s, &vm_id)
        .await
        .iter()
        .find(|v| v["type"] == "ROOT")
        .and_then(|v| v["id"].as_str())
        .expect("root volume")
        .to_string();
    let done = a
        .call_async(
            "attachVolume",
            &[("id", &root), ("virtualmachineid", &other_id)],
        )
        .await;
    assert_eq!(
        failed(&done, 431),
        "Please specify a volume with the valid type: DATADISK"
    );

    // Listing by VM shows every attached volume (in creation order).
    let mut devices: Vec<i64> = vm_volumes(&s, &vm_id)
        .await
        .iter()
        .map(|v| v["deviceid"].as_i64().unwrap())
        .collect();
    devices.sort_unstable();
    assert_eq!(devices, vec![0, 1, 2, 4, 6]);

    // Deleting an attached volume is refused; detach by id, then by (vm, device).
    let t = a
        .call("deleteVolume", &[("id", &vol_id)])
        .await
        .err("deleteVolume", 431);
    assert_eq!(t, "Please specify a volume that is not attached to any VM.");
    let done = a.call_async("detachVolume", &[("id", &vol_id)]).await;
    let detached = &succeeded(&done)["volume"];
    assert!(detached.get("virtualmachineid").is_none() && detached.get("deviceid").is_none());
    assert_eq!(detached["state"], "Ready");
    let done = a
        .call_async(
            "detachVolume",
            &[("virtualmachineid", &vm_id), ("deviceid", "6")],
        )
        .await;
    assert_eq!(succeeded(&done)["volume"]["id"], third_id.as_str());
    let done = a.call_async("detachVolume", &[("id", &vol_id)]).await;
    assert_eq!(
        failed(&done, 431),
        "The specified volume is not attached to a VM."
    );
    let done = a.call_async("detachVolume", &[("id", &root)]).await;
    let t = failed(&done, 431);
    assert!(t.contains("DATADISK"), "{t}");
    for params in [
        vec![],
        vec![
            ("id", vol_id.as_str()),
            ("virtualmachineid", vm_id.as_str()),
        ],
        vec![("virtualmachineid", vm_id.as_str())],
    ] {
        a.call("detachVolume", &params)
            .await
            .err("detachVolume", 431);
    }
    a.call(
        "detachVolume",
        &[("virtualmachineid", &vm_id), ("deviceid", "5")],
    )
    .await
    .err("detachVolume", 431);

    // Delete: gone from listings, a second delete does not find it.
    let r = a.call("deleteVolume", &[("id", &vol_id)]).await;
    assert_eq!(r.ok("deleteVolume")["success"], true);
    assert!(admin_volume(&s, &vol_id).await.is_none());
    let t = a
        .call("deleteVolume", &[("id", &vol_id)])
        .await
        .err("deleteVolume", 431);
    assert!(t.contains("Unable to find volume"), "{t}");
    a.call(
        "attachVolume",
        &[("id", &vol_id), ("virtualmachineid", &vm_id)],
    )
    .await
    .err("attachVolume", 431);

    assert_eq!(
        event_types(&s, "VOLUME.").await,
        vec![
            "VOLUME.CREATE",
            "VOLUME.CREATE",
            "VOLUME.ATTACH",
            "VOLUME.ATTACH",
            "VOLUME.CREATE",
            "VOLUME.ATTACH",
            "VOLUME.DETACH",
            "VOLUME.DETACH",
            "VOLUME.DELETE"
        ]
    );
}

#[tokio::test]
async fn attach_requires_a_running_or_stopped_vm_in_the_same_zone() {
    let s = TestServer::start().await;
    let a = s.admin();
    let vol = create_volume(&a, &[("size", "1"), ("zoneid", &s.zone_id)]).await;
    let vol_id = vol["id"].as_str().unwrap().to_string();

    let vm = s.deploy(&a, "doomed", &[]).await;
    let vm_id = vm["id"].as_str().unwrap().to_string();
    succeeded(
        &a.call_async("destroyVirtualMachine", &[("id", &vm_id)])
            .await,
    );
    let done = a
        .call_async(
            "attachVolume",
            &[("id", &vol_id), ("virtualmachineid", &vm_id)],
        )
        .await;
    assert_eq!(
        failed(&done, 431),
        "Please specify a VM that is either running or stopped."
    );

    let z = a.call("createZone", &[("name", "zone2")]).await;
    let zone2 = z.ok("createZone")["zone"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let far = create_volume(&a, &[("size", "1"), ("zoneid", &zone2)]).await;
    let running = s.deploy(&a, "near", &[]).await;
    let done = a
        .call_async(
            "attachVolume",
            &[
                ("id", far["id"].as_str().unwrap()),
                ("virtualmachineid", running["id"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(
        failed(&done, 431),
        "Please specify a VM that is in the same zone as the volume."
    );
    assert!(
        admin_volume(&s, far["id"].as_str().unwrap())
            .await
            .unwrap()
            .get("virtualmachineid")
            .is_none()
    );

    // A VM takes at most 6 data disks.
    let running_id = running["id"].as_str().unwrap().to_string();
    for _ in 0..6 {
        let v = create_volume(&a, &[("size", "1"), ("zoneid", &s.zone_id)]).await;
        succeeded(
            &a.call_async(
                "attachVolume",
                &[
                    ("id", v["id"].as_str().unwrap()),
                    ("virtualmachineid", &running_id),
                ],
            )
            .await,
        );
    }
    let done = a
        .call_async(
            "attachVolume",
            &[("id", &vol_id), ("virtualmachineid", &running_id)],
        )
        .await;
    assert!(failed(&done, 431).contains("maximum number of data disks (6)"));
}

#[tokio::test]
async fn another_account_cannot_touch_a_volume_or_attach_to_a_vm_it_does_not_own() {
    let s = TestServer::start().await;
    let alice = s.client(s.create_user("alice", "User", None).await);
    let bob = s.client(s.create_user("bob", "User", None).await);
    let avm = s.deploy(&alice, "alice-vm", &[]).await;
    let bvm = s.deploy(&bob, "bob-vm", &[]).await;
    let avm_id = avm["id"].as_str().unwrap().to_string();
    let bvm_id = bvm["id"].as_str().unwrap().to_string();
    let avol = create_volume(&alice, &[("size", "2"), ("zoneid", &s.zone_id)]).await;
    assert_eq!(avol["account"], "alice");
    let avol_id = avol["id"].as_str().unwrap().to_string();
    let bvol = create_volume(&bob, &[("size", "2"), ("zoneid", &s.zone_id)]).await;
    let bvol_id = bvol["id"].as_str().unwrap().to_string();

    // Bob sees none of Alice's volumes and can do nothing with them.
    let r = bob.call("listVolumes", &[("id", &avol_id)]).await;
    assert_eq!(r.ok("listVolumes")["count"], Value::Null);
    for (cmd, params) in [
        (
            "attachVolume",
            vec![
                ("id", avol_id.as_str()),
                ("virtualmachineid", bvm_id.as_str()),
            ],
        ),
        (
            "attachVolume",
            vec![
                ("id", bvol_id.as_str()),
                ("virtualmachineid", avm_id.as_str()),
            ],
        ),
        ("detachVolume", vec![("id", avol_id.as_str())]),
        (
            "detachVolume",
            vec![("virtualmachineid", avm_id.as_str()), ("deviceid", "0")],
        ),
        ("deleteVolume", vec![("id", avol_id.as_str())]),
    ] {
        bob.call(cmd, &params).await.err(cmd, 531);
    }
    // A user cannot create a volume for someone else.
    bob.call(
        "createVolume",
        &[
            ("size", "1"),
            ("zoneid", &s.zone_id),
            ("account", "alice"),
            ("domainid", avol["domainid"].as_str().unwrap()),
        ],
    )
    .await
    .err("createVolume", 531);

    // Alice works with her own; users do not see storage paths.
    let done = alice
        .call_async(
            "attachVolume",
            &[("id", &avol_id), ("virtualmachineid", &avm_id)],
        )
        .await;
    let attached = &succeeded(&done)["volume"];
    assert_eq!(attached["deviceid"], 1);
    assert!(attached.get("path").is_none());
    bob.call("detachVolume", &[("id", &avol_id)])
        .await
        .err("detachVolume", 531);
    succeeded(&alice.call_async("detachVolume", &[("id", &avol_id)]).await);
    let r = alice.call("deleteVolume", &[("id", &avol_id)]).await;
    assert_eq!(r.ok("deleteVolume")["success"], true);

    // An admin creates a volume on behalf of Alice; she owns it.
    let domain = avol["domainid"].as_str().unwrap().to_string();
    let made = create_volume(
        &s.admin(),
        &[
            ("size", "1"),
            ("zoneid", &s.zone_id),
            ("account", "alice"),
            ("domainid", &domain),
        ],
    )
    .await;
    assert_eq!(made["account"], "alice");
    let r = alice
        .call("listVolumes", &[("id", made["id"].as_str().unwrap())])
        .await;
    assert_eq!(r.ok("listVolumes")["count"], 1);
}

/// Puts the VM into a backup offering with a recorded volume list, as the B&R service would.
async fn give_vm_backups(s: &TestServer, vm_uuid: &str, volumes_json: Option<&str>) {
    let (uuid, zone, volumes) = (
        vm_uuid.to_string(),
        s.zone_id.clone(),
        volumes_json.map(str::to_string),
    );
    s.state
        .store()
        .write(move |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO backup_offerings(uuid, name, description, external_id, zone_id, provider, user_driven, created)
                 SELECT 'bo-gold', 'gold', 'Gold', 'gold-policy', id, 'dummy', 1, 0 FROM zones WHERE uuid = ?1",
                [zone],
            )?;
            tx.execute(
                "UPDATE vms SET backup_offering_id = (SELECT id FROM backup_offerings WHERE uuid = 'bo-gold'),
                                backup_volumes = ?2
                 WHERE uuid = ?1",
                bnr::store::db::params![uuid, volumes],
            )?;
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn volumes_of_a_vm_with_backups_stay_put_unless_the_setting_allows_it() {
    let s = TestServer::start().await;
    let a = s.admin();
    let (_, dof, _) = s.catalog().await;
    let vm = s.deploy(&a, "protected", &[("diskofferingid", &dof)]).await;
    let vm_id = vm["id"].as_str().unwrap().to_string();
    let data = vm_volumes(&s, &vm_id).await[1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let spare = create_volume(&a, &[("size", "1"), ("zoneid", &s.zone_id)]).await;
    let spare_id = spare["id"].as_str().unwrap().to_string();

    // An offering without a recorded volume list (or an empty one) does not block.
    for volumes in [None, Some("[]")] {
        give_vm_backups(&s, &vm_id, volumes).await;
        succeeded(
            &a.call_async(
                "attachVolume",
                &[("id", &spare_id), ("virtualmachineid", &vm_id)],
            )
            .await,
        );
        succeeded(&a.call_async("detachVolume", &[("id", &spare_id)]).await);
    }
    let listed = admin_vm(&s, &vm_id).await.unwrap();
    assert_eq!(listed["backupofferingid"], "bo-gold");
    assert_eq!(listed["backupofferingname"], "gold");

    give_vm_backups(
        &s,
        &vm_id,
        Some(r#"[{"uuid":"x","type":"ROOT","size":2147483648,"path":"x","deviceId":0}]"#),
    )
    .await;
    let done = a
        .call_async(
            "attachVolume",
            &[("id", &spare_id), ("virtualmachineid", &vm_id)],
        )
        .await;
    assert_eq!(
        failed(&done, 431),
        "Unable to attach volume, please specify a VM that does not have any backups or set the global configuration 'backup.enable.attach.detach.of.volumes' to true."
    );
    assert!(
        admin_volume(&s, &spare_id)
            .await
            .unwrap()
            .get("virtualmachineid")
            .is_none()
    );
    let done = a.call_async("detachVolume", &[("id", &data)]).await;
    assert_eq!(
        failed(&done, 431),
        "Unable to detach volume, cannot detach volume from a VM that has backups. First remove the VM from the backup offering or set the global configuration 'backup.enable.attach.detach.of.volumes' to true."
    );
    assert_eq!(
        admin_volume(&s, &data).await.unwrap()["virtualmachineid"],
        vm_id.as_str()
    );

    // With the setting on, both work.
    let r = a
        .call(
            "updateConfiguration",
            &[
                ("name", "backup.enable.attach.detach.of.volumes"),
                ("value", "true"),
            ],
        )
        .await;
    r.ok("updateConfiguration");
    succeeded(
        &a.call_async(
            "attachVolume",
            &[("id", &spare_id), ("virtualmachineid", &vm_id)],
        )
        .await,
    );
    succeeded(&a.call_async("detachVolume", &[("id", &data)]).await);
    assert_eq!(
        admin_volume(&s, &spare_id).await.unwrap()["virtualmachineid"],
        vm_id.as_str()
    );
}
