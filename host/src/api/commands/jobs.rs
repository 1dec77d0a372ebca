//! `queryAsyncJobResult` and `listAsyncJobs` (wire-protocol §2.3).

use crate::api::registry::{ALL_ROLES, Command, Entity, Param, Registry, RegistryError};
use crate::api::{ApiError, ApiResult, Obj};
use crate::identity::ListScope;
use crate::jobs::{self, Job, JobStatus};
use crate::store::OpError;

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(
        Command::sync("queryAsyncJobResult")
            .describe("Retrieves the current status of asynchronous job.")
            .since("3.0.0")
            .roles(ALL_ROLES)
            .answers_from_store()
            .object("asyncjobs")
            .param(
                Param::uuid("jobid", Entity::JOB)
                    .required()
                    .desc("the ID of the asynchronous job")
                    .related("listAsyncJobs"),
            )
            .field("jobid", "string", "the ID of the async job")
            .field(
                "jobstatus",
                "integer",
                "the current job status: 0 pending, 1 succeeded, 2 failed",
            )
            .field("jobresultcode", "integer", "the result code for the job")
            .field("jobresult", "responseobject", "the result reason")
            .handler(|ctx| async move {
                let job_id = ctx.req_id("jobid")?;
                let caller = &ctx.caller;
                // A primary-key lookup: run in place (see `Store::read_now`).
                let job = ctx.state.store().read_now(|c| {
                    let job = jobs::get_job_by_id(c, job_id)?
                        .ok_or_else(|| OpError::InvalidParameter("job does not exist".into()))?;
                    caller.check_access(c, job.account_id, job.domain_id, "the job")?;
                    Ok::<_, OpError>(job)
                })?;
                Ok(ApiResult::Inline(job_obj(&job)))
            }),
    )?;
    r.register(
        Command::sync("listAsyncJobs")
            .describe("Lists all pending asynchronous jobs for the account.")
            .since("3.0.0")
            .roles(ALL_ROLES)
            .object("asyncjobs")
            .param(Param::date("startdate").desc(
                "The start date of the async job (use format \"yyyy-MM-dd'T'HH:mm:ss'+'SSSS\")",
            ))
            .list_params()
            .scope_params()
            .field("jobid", "string", "the ID of the async job")
            .field("jobstatus", "integer", "the current job status")
            .handler(|ctx| async move {
                let (caller, sp, page) = (ctx.caller.clone(), ctx.scope_params(), ctx.page());
                let start = ctx.date("startdate");
                let listed = ctx
                    .state
                    .store()
                    .read(move |c| {
                        let scope = ListScope::resolve(c, &caller, &sp)?;
                        jobs::list(c, &scope, start, page)
                    })
                    .await
                    .map_err(ApiError::from)?;
                Ok(ApiResult::list(listed.map(|j| job_obj(&j))))
            }),
    )
}

/// The job as CloudStack's AsyncJobResponse: `jobresultcode` always; `jobresult` and
/// `jobresulttype` only once the job is terminal.
pub fn job_obj(job: &Job) -> Obj {
    let mut o = Obj::new()
        .str("accountid", &job.account_uuid)
        .str("userid", &job.user_uuid)
        .str("cmd", &job.cmd)
        .str("jobid", &job.uuid)
        .int("jobstatus", job.status as i64)
        .int("jobprocstatus", job.proc_status)
        .int("jobresultcode", job.result_code)
        .opt_str("jobinstancetype", job.instance_type.clone())
        .opt_str("jobinstanceid", job.instance_uuid.clone())
        .date("created", job.created)
        .opt_date("completed", job.completed);
    if job.status != JobStatus::Pending {
        o = o.str("jobresulttype", "object");
        if let Some(result) = &job.result {
            o = o.value("jobresult", result.clone());
        }
    }
    o
}
