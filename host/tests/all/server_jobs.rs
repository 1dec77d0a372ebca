//! Async job lifecycle through queryAsyncJobResult (wire-protocol §2.3).

use std::any::Any;
use std::sync::Arc;

use serde_json::json;

use crate::support_api::*;
use bnr::jobs::{
    self, INTERRUPTED_TEXT, Job, JobFailure, JobFuture, JobManager, JobSpec, OutcomeOf, ResumeHook,
};
use bnr::store::StoreError;

async fn admin_ids(s: &TestServer) -> (i64, i64) {
    s.state
        .store()
        .read(|c| {
            c.query_row(
                "SELECT u.account_id, u.id FROM users u WHERE u.username = 'admin'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(bnr::store::StoreError::from)
        })
        .await
        .expect("admin ids")
}

fn spec(account_id: i64, user_id: i64) -> JobSpec {
    JobSpec {
        account_id,
        user_id,
        cmd: "testCommand".into(),
        instance_type: None,
        instance_uuid: None,
    }
}

#[tokio::test]
async fn a_pending_job_has_a_result_code_but_no_result_and_then_completes() {
    let s = TestServer::start().await;
    let (account, user) = admin_ids(&s).await;
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let work: JobFuture = Box::pin(async move {
        let _ = gate.await;
        Ok(json!({"success": true}))
    });
    let jobid = s
        .state
        .jobs()
        .submit(spec(account, user), work, None)
        .await
        .expect("submit");
    let pending = s
        .admin()
        .call("queryAsyncJobResult", &[("jobid", &jobid)])
        .await;
    let p = pending.ok("queryAsyncJobResult");
    assert_eq!(p["jobstatus"], 0);
    assert_eq!(p["jobresultcode"], 0);
    assert!(
        p.get("jobresult").is_none() && p.get("jobresulttype").is_none(),
        "{p}"
    );
    release.send(()).expect("job waiting");
    s.wait_job(&jobid).await;
    let done = s
        .admin()
        .call("queryAsyncJobResult", &[("jobid", &jobid)])
        .await;
    let d = done.ok("queryAsyncJobResult");
    assert_eq!(d["jobstatus"], 1);
    assert_eq!(d["jobresultcode"], 0);
    assert_eq!(d["jobresulttype"], "object");
    assert_eq!(d["jobresult"], json!({"success": true}));
    assert!(d["created"].is_string() && d["completed"].is_string());
}

/// Submits `work` as the admin's job; returns the job id.
async fn submitted(s: &TestServer, work: JobFuture, outcome_of: Option<OutcomeOf>) -> String {
    let (account, user) = admin_ids(s).await;
    s.state
        .jobs()
        .submit(spec(account, user), work, outcome_of)
        .await
        .expect("submit")
}

/// The job once it has ended.
async fn ended(s: &TestServer, jobid: &str) -> Job {
    s.state
        .jobs()
        .wait(jobid)
        .await
        .expect("wait")
        .expect("job")
}

/// The job's status as queryAsyncJobResult answers it.
async fn job_status(s: &TestServer, jobid: &str) -> serde_json::Value {
    s.admin()
        .call("queryAsyncJobResult", &[("jobid", jobid)])
        .await
        .ok("queryAsyncJobResult")
        .clone()
}

#[tokio::test]
async fn a_job_whose_last_write_records_its_outcome_ends_when_that_write_commits() {
    let s = TestServer::start().await;
    let store = s.state.store().clone();
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let (sealed_tx, sealed) = tokio::sync::oneshot::channel::<()>();
    // The submitter's rendering: the work's result is an i64.
    let outcome_of: OutcomeOf =
        Arc::new(|result: &dyn Any| result.downcast_ref::<i64>().map(|n| Ok(json!({ "n": n }))));
    let work: JobFuture = Box::pin(async move {
        let seal = jobs::outcome_seal().expect("a job submitted with outcome_of has a seal");
        let seal = Arc::new(seal);
        // A result of another type records nothing.
        let other = seal.clone();
        let recorded = store
            .write(move |tx| Ok::<_, StoreError>(other.record(tx, &"not the work's result")?))
            .await
            .expect("write");
        assert!(!recorded);
        // A transaction that fails after recording rolls the outcome back with it.
        let rolled_back = seal.clone();
        let failed: Result<(), StoreError> = store
            .write(move |tx| {
                assert!(rolled_back.record(tx, &1_i64)?);
                Err(StoreError::Task("the change failed".into()))
            })
            .await;
        assert!(failed.is_err());
        let committed = seal.clone();
        assert!(
            store
                .write(move |tx| Ok::<_, StoreError>(committed.record(tx, &7_i64)?))
                .await
                .expect("write")
        );
        Arc::into_inner(seal).expect("one seal left").committed();
        let _ = sealed_tx.send(());
        // The work goes on; what it returns now is not recorded.
        let _ = gate.await;
        Ok(json!({ "n": 8 }))
    });
    let jobid = submitted(&s, work, Some(outcome_of)).await;
    sealed.await.expect("the work reached its last write");
    let done = job_status(&s, &jobid).await;
    assert_eq!(done["jobstatus"], 1, "{done}");
    assert_eq!(done["jobresult"]["n"], 7, "{done}");
    let _ = release.send(());
    assert_eq!(ended(&s, &jobid).await.result, Some(json!({ "n": 7 })));
}

#[tokio::test]
async fn a_job_without_outcome_of_has_no_seal_and_records_what_its_work_returns() {
    let s = TestServer::start().await;
    let work: JobFuture = Box::pin(async move {
        assert!(jobs::outcome_seal().is_none());
        Ok(json!({ "n": 3 }))
    });
    let jobid = submitted(&s, work, None).await;
    assert_eq!(ended(&s, &jobid).await.result, Some(json!({ "n": 3 })));
    assert!(jobs::outcome_seal().is_none(), "no seal outside a job");
}

#[tokio::test]
async fn a_failed_job_carries_errorcode_and_errortext() {
    let s = TestServer::start().await;
    let (account, user) = admin_ids(&s).await;
    let work: JobFuture = Box::pin(async {
        Err(JobFailure {
            code: 530,
            text: "provider said no".into(),
        })
    });
    let jobid = s
        .state
        .jobs()
        .submit(spec(account, user), work, None)
        .await
        .expect("submit");
    s.wait_job(&jobid).await;
    let r = s
        .admin()
        .call("queryAsyncJobResult", &[("jobid", &jobid)])
        .await;
    let d = r.ok("queryAsyncJobResult");
    assert_eq!(d["jobstatus"], 2);
    assert_eq!(d["jobresultcode"], 530);
    assert_eq!(
        d["jobresult"],
        json!({"errorcode": 530, "errortext": "provider said no"})
    );
}

#[tokio::test]
async fn a_panicking_job_fails_instead_of_staying_pending() {
    let s = TestServer::start().await;
    let (account, user) = admin_ids(&s).await;
    let work: JobFuture = Box::pin(async {
        let v: Vec<u8> = Vec::new();
        // Index out of bounds on purpose.
        let _ = v[usize::from(v.is_empty())];
        Ok(json!({}))
    });
    let jobid = s
        .state
        .jobs()
        .submit(spec(account, user), work, None)
        .await
        .expect("submit");
    s.wait_job(&jobid).await;
    let d = s
        .admin()
        .call("queryAsyncJobResult", &[("jobid", &jobid)])
        .await;
    assert_eq!(d.ok("queryAsyncJobResult")["jobstatus"], 2);
}

#[tokio::test]
async fn an_unknown_job_id_is_431_and_another_users_job_is_refused() {
    let s = TestServer::start().await;
    s.admin()
        .call(
            "queryAsyncJobResult",
            &[("jobid", &uuid::Uuid::new_v4().to_string())],
        )
        .await
        .err("queryAsyncJobResult", 431);
    let alice = s.create_user("alice", "User", None).await;
    let bob = s.create_user("bob", "User", None).await;
    let (so, _, t) = s.catalog().await;
    let r = s
        .client(alice)
        .call(
            "deployVirtualMachine",
            &[
                ("serviceofferingid", &so),
                ("templateid", &t),
                ("zoneid", &s.zone_id),
            ],
        )
        .await;
    let jobid = r.ok("deployVirtualMachine")["jobid"]
        .as_str()
        .unwrap()
        .to_string();
    s.wait_job(&jobid).await;
    s.client(bob)
        .call("queryAsyncJobResult", &[("jobid", &jobid)])
        .await
        .err("queryAsyncJobResult", 531);
}

#[tokio::test]
async fn jobs_left_pending_by_a_previous_process_are_failed_or_resumed_at_start() {
    let s = TestServer::start().await;
    let (account, user) = admin_ids(&s).await;
    let (a, b) = s
        .state
        .store()
        .write(move |tx| {
            let a = JobManager::insert_pending(
                tx,
                &JobSpec {
                    cmd: "abandoned".into(),
                    ..spec(account, user)
                },
                None,
            )?;
            let b = JobManager::insert_pending(
                tx,
                &JobSpec {
                    cmd: "resumable".into(),
                    ..spec(account, user)
                },
                None,
            )?;
            Ok::<_, bnr::store::StoreError>((a, b))
        })
        .await
        .expect("insert");
    struct Resume;
    impl ResumeHook for Resume {
        fn resume(&self, job: &Job) -> Option<JobFuture> {
            (job.cmd == "resumable")
                .then(|| Box::pin(async { Ok(json!({"success": true})) }) as JobFuture)
        }
    }
    // A new manager over the same store plays the restarted process.
    let restarted = JobManager::new(s.state.store().clone());
    restarted.add_resume_hook(Arc::new(Resume));
    let (resumed, failed) = restarted.recover_interrupted().await.expect("recover");
    assert_eq!((resumed, failed), (1, 1));
    let a = restarted.wait(&a).await.unwrap().unwrap();
    assert_eq!(a.result_code, 530);
    assert_eq!(a.result.unwrap()["errortext"], INTERRUPTED_TEXT);
    let b = restarted.wait(&b).await.unwrap().unwrap();
    assert_eq!(b.result.unwrap(), json!({"success": true}));
}

#[tokio::test]
async fn list_async_jobs_shows_the_callers_jobs() {
    let s = TestServer::start().await;
    let alice = s.client(s.create_user("alice", "User", None).await);
    s.deploy(&alice, "vm1", &[]).await;
    let r = alice.call("listAsyncJobs", &[]).await;
    let jobs = r.ok("listAsyncJobs");
    assert_eq!(jobs["count"], 1);
    assert_eq!(jobs["asyncjobs"][0]["cmd"], "deployVirtualMachine");
    assert_eq!(jobs["asyncjobs"][0]["jobstatus"], 1);
}
