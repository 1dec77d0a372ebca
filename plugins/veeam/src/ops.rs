//! The provider's operations, in terms of Enterprise Manager requests and PowerShell scripts.
//!
//! Every public function here is one provider call: it uses one EM session (logged out at the
//! end by the caller through [`Em::session`]). Long work returns a pending [`Handle`] the host
//! polls; each poll is a fresh call.

use crate::em::{Em, Transport};
use crate::error::{Error, Result};
use crate::model::{self, esc, guid_of, same_id};
use crate::ps::{self, Shell};

/// Per-instance jobs are named `<internal name>-CSBKP-<uuid>`, as CloudStack names them, so
/// jobs made by either are recognised and template lists leave them out.
pub const JOB_MARKER: &str = "-CSBKP-";

pub fn job_name(internal_name: &str, uuid: &str) -> String {
    format!("{internal_name}{JOB_MARKER}{uuid}")
}

/// Sleeps between polls of short tasks inside one call.
pub trait Clock {
    fn sleep_ms(&mut self, ms: u64);
}

/// Limits from the zone settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub task_poll_interval_ms: u64,
    pub task_poll_max_retry: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub external_id: String,
    pub name: String,
}

/// Template jobs: every job whose name lacks the per-instance marker. Paged.
pub fn list_policies<T: Transport>(em: &mut Em<T>) -> Result<Vec<Policy>> {
    let mut policies = Vec::new();
    for_each_page(em, "jobs?", |doc| {
        for r in model::refs(doc) {
            if !r.name.contains(JOB_MARKER) && !r.uid.is_empty() {
                policies.push(Policy {
                    external_id: r.uid,
                    name: r.name,
                });
            }
        }
        Ok(())
    })?;
    Ok(policies)
}

const PAGE_SIZE: u32 = 500;

/// Follows `PagingInfo` until the last page (bounded); an unpaged answer is one page.
fn for_each_page<T: Transport>(
    em: &mut Em<T>,
    path: &str,
    mut each: impl FnMut(&roxmltree::Document<'_>) -> Result<()>,
) -> Result<()> {
    const MAX_PAGES: u32 = 1000;
    let mut page = 1;
    loop {
        let url = format!("{path}&pageSize={PAGE_SIZE}&page={page}");
        let more = em.get(&url, |doc| {
            each(doc)?;
            Ok(model::paging(doc).is_some_and(|(num, count)| num < count))
        })?;
        if !more || page >= MAX_PAGES {
            return Ok(());
        }
        page += 1;
    }
}

fn find_job_by_name<T: Transport>(em: &mut Em<T>, name: &str) -> Result<Option<model::Ref>> {
    let mut found = None;
    for_each_page(em, "jobs?", |doc| {
        if found.is_none() {
            found = model::refs(doc).into_iter().find(|r| r.name == name);
        }
        Ok(())
    })?;
    Ok(found)
}

pub fn validate_policy<T: Transport>(em: &mut Em<T>, external_id: &str) -> Result<bool> {
    match em.get(
        &format!("jobs/{}?format=Entity", guid_of(external_id)),
        model::job,
    ) {
        Ok(job) => Ok(same_id(&job.uid, external_id) && !job.name.contains(JOB_MARKER)),
        Err(Error::NotFound(_)) | Err(Error::Rejected(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits for a short task (clone, include, toggle) to finish; deletes it; fails with EM's message.
pub fn wait_task<T: Transport>(
    em: &mut Em<T>,
    clock: &mut dyn Clock,
    limits: Limits,
    task_id: &str,
    what: &str,
) -> Result<()> {
    for attempt in 0..=limits.task_poll_max_retry {
        let task = em.get(&format!("tasks/{task_id}"), model::task)?;
        if task.finished() {
            let _ = em.call("DELETE", &format!("tasks/{task_id}"), None);
            return match task.success {
                Some(true) => Ok(()),
                _ => Err(Error::Rejected(format!(
                    "{what} failed on Veeam: {}",
                    non_empty(&task.message)
                ))),
            };
        }
        if attempt < limits.task_poll_max_retry {
            clock.sleep_ms(limits.task_poll_interval_ms);
        }
    }
    Err(Error::Unavailable(format!(
        "{what}: Veeam task {task_id} did not finish within backup.plugin.veeam.task.poll.max.retry polls"
    )))
}

fn non_empty(text: &str) -> &str {
    if text.trim().is_empty() {
        "no reason given"
    } else {
        text.trim()
    }
}

/// The instance facts the operations need.
#[derive(Debug, Clone)]
pub struct Vm {
    pub uuid: String,
    pub internal_name: String,
    pub hypervisor: String,
    pub host_address: Option<String>,
    /// The per-instance job's UID, when assigned.
    pub job: Option<String>,
}

/// Veeam protects VMware VMs only.
pub fn require_vmware(vm: &Vm) -> Result<()> {
    if vm.hypervisor.eq_ignore_ascii_case("VMware") {
        Ok(())
    } else {
        Err(Error::Rejected(format!(
            "Veeam backs up VMware instances only; instance {} runs on {}",
            vm.uuid, vm.hypervisor
        )))
    }
}

/// The hierarchy root (vCenter) UID: the one named `vcenter`; without a name, the only one.
fn hierarchy_root<T: Transport>(em: &mut Em<T>, vcenter: Option<&str>) -> Result<String> {
    let roots: Vec<model::Ref> = em.get("hierarchyRoots", |doc| Ok(model::refs(doc)))?;
    let chosen = match vcenter.filter(|v| !v.is_empty()) {
        Some(name) => roots.iter().find(|r| r.name.eq_ignore_ascii_case(name)),
        None if roots.len() == 1 => roots.first(),
        None => None,
    };
    chosen.map(|r| r.uid.clone()).ok_or_else(|| {
        let names: Vec<&str> = roots.iter().map(|r| r.name.as_str()).collect();
        Error::NotFound(format!(
            "no Veeam hierarchy root matches the vCenter {:?} (Enterprise Manager knows: {})",
            vcenter.unwrap_or(""),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })
}

fn lookup_vm<T: Transport>(em: &mut Em<T>, root: &str, name: &str) -> Result<model::HierarchyItem> {
    let path = format!("lookup?host={}&type=Vm&name={}", encode(root), encode(name));
    let items = em.get(&path, |doc| Ok(model::hierarchy_items(doc)))?;
    let mut matching = items
        .into_iter()
        .filter(|i| i.name == name && i.object_type.eq_ignore_ascii_case("Vm"));
    match (matching.next(), matching.next()) {
        (Some(item), None) => Ok(item),
        (None, _) => Err(Error::NotFound(format!(
            "VM '{name}' was not found in vCenter through Veeam"
        ))),
        (Some(_), Some(_)) => Err(Error::Rejected(format!(
            "more than one VM named '{name}' in vCenter"
        ))),
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Assigns: clones the template into the instance's own job (or finds the one a previous
/// attempt made) and adds the VM to it. Returns the job UID.
pub fn assign<T: Transport>(
    em: &mut Em<T>,
    shell: &mut dyn Shell,
    clock: &mut dyn Clock,
    limits: Limits,
    vm: &Vm,
    template_id: &str,
    vcenter: Option<&str>,
) -> Result<String> {
    require_vmware(vm)?;
    let name = job_name(&vm.internal_name, &vm.uuid);
    // Resolve the VM first: nothing is created on Veeam for a VM it cannot see.
    let root = hierarchy_root(em, vcenter)?;
    let item = lookup_vm(em, &root, &vm.internal_name)?;

    let job = match find_job_by_name(em, &name)? {
        Some(existing) => existing.uid,
        None => {
            let template = match em.get(
                &format!("jobs/{}?format=Entity", guid_of(template_id)),
                model::job,
            ) {
                Ok(job) => job,
                Err(Error::NotFound(_)) | Err(Error::Rejected(_)) => {
                    return Err(Error::NotFound(format!(
                        "the Veeam backup job {template_id} of this offering no longer exists"
                    )));
                }
                Err(e) => return Err(e),
            };
            let server = template.backup_server.clone().ok_or_else(|| {
                Error::Internal(format!("job {} names no backup server", template.name))
            })?;
            // The template's repository, by PowerShell (EM's job entity does not carry it).
            let repo = ps::run_json(
                shell,
                "reading the template's repository",
                &ps::template_repository(&template.name),
            )?;
            let repo_name = repo["Name"].as_str().unwrap_or_default().to_string();
            let repo_id = repo["Id"].as_str().unwrap_or_default().to_string();
            let repos = em.get(
                &format!("backupServers/{}/repositories", guid_of(&server)),
                |doc| Ok(model::refs(doc)),
            )?;
            let repository = repos
                .iter()
                .find(|r| !repo_id.is_empty() && same_id(&r.uid, &repo_id))
                .or_else(|| repos.iter().find(|r| r.name == repo_name))
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "repository '{repo_name}' of job {} not found",
                        template.name
                    ))
                })?;
            let spec = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><JobCloneSpec xmlns=\"http://www.veeam.com/ent/v1.0\">\
                 <BackupJobCloneInfo><JobName>{n}</JobName><FolderName>{n}</FolderName><RepositoryUid>{r}</RepositoryUid>\
                 </BackupJobCloneInfo></JobCloneSpec>",
                n = esc(&name),
                r = esc(&repository.uid)
            );
            let task = em.action(
                "POST",
                &format!("jobs/{}?action=clone", guid_of(&template.uid)),
                Some(spec),
            )?;
            wait_task(em, clock, limits, &task, "cloning the backup job")?;
            let clone = find_job_by_name(em, &name)?.ok_or_else(|| {
                Error::Internal(format!(
                    "Veeam reported the clone '{name}' done but does not list it"
                ))
            })?;
            let detail = em.get(
                &format!("jobs/{}?format=Entity", guid_of(&clone.uid)),
                model::job,
            )?;
            if detail.schedule_configured && !detail.schedule_enabled {
                let task = em.action(
                    "POST",
                    &format!("jobs/{}?action=toggleScheduleEnabled", guid_of(&clone.uid)),
                    None,
                )?;
                wait_task(em, clock, limits, &task, "enabling the job schedule")?;
            }
            clone.uid
        }
    };

    let includes = em.get(&format!("jobs/{job}/includes"), |doc| {
        Ok(model::objects_in_job(doc))
    })?;
    if !includes.iter().any(|i| i.object_ref == item.object_ref) {
        let spec = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateObjectInJobSpec xmlns=\"http://www.veeam.com/ent/v1.0\">\
             <HierarchyObjRef>{}</HierarchyObjRef><HierarchyObjName>{}</HierarchyObjName></CreateObjectInJobSpec>",
            esc(&item.object_ref),
            esc(&item.name)
        );
        let task = em.action("POST", &format!("jobs/{job}/includes"), Some(spec))?;
        wait_task(em, clock, limits, &task, "adding the VM to its backup job")?;
    }
    Ok(job)
}

/// Removes the instance's job. Its backups stay on Veeam (usable to create instances), as
/// CloudStack 4.21+ does; a job already gone is not an error.
pub fn remove(shell: &mut dyn Shell, vm: &Vm) -> Result<()> {
    require_vmware(vm)?;
    let name = job_name(&vm.internal_name, &vm.uuid);
    ps::run_json(shell, "removing the backup job", &ps::remove_job(&name))?;
    Ok(())
}

/// A restore point of one VM, with the size of its backup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub id: String,
    pub created: u64,
    pub full: bool,
    pub size: u64,
    pub protected_size: u64,
}

/// The VM's restore points, oldest first: a filtered, paged query (falls back to the plain
/// collection on an EM without the query service), then the sizes of their backup files.
pub fn restore_points<T: Transport>(em: &mut Em<T>, vm_name: &str) -> Result<Vec<Point>> {
    let mut raw = Vec::new();
    let filter = encode(&format!("VmName==\"{vm_name}\""));
    let queried = for_each_page(
        em,
        &format!("query?type=VmRestorePoint&format=Entities&filter={filter}"),
        |doc| {
            raw.extend(model::vm_restore_points(doc));
            Ok(())
        },
    );
    if let Err(Error::Rejected(_)) | Err(Error::NotFound(_)) = queried {
        raw.clear();
        raw = em.get("vmRestorePoints?format=Entity", |doc| {
            Ok(model::vm_restore_points(doc))
        })?;
    } else {
        queried?;
    }
    let mut points: Vec<model::VmRestorePoint> = raw
        .into_iter()
        .filter(|p| p.vm_name == vm_name && p.local)
        .collect();
    points.sort_by_key(|p| p.created);
    let files = backup_files_by_id(
        em,
        points
            .iter()
            .filter_map(|p| p.backup_file.clone())
            .collect(),
    )?;
    Ok(points
        .into_iter()
        .filter_map(|p| {
            let created = p.created?;
            let file = p
                .backup_file
                .as_deref()
                .and_then(|f| files.iter().find(|x| same_id(&x.uid, f)));
            Some(Point {
                id: guid_of(&p.uid).to_string(),
                created,
                full: p.full,
                size: file.map(|f| f.backup_size).unwrap_or(0),
                protected_size: file.map(|f| f.data_size).unwrap_or(0),
            })
        })
        .collect())
}

/// The backup files with these ids: one filtered query per 50 ids.
fn backup_files_by_id<T: Transport>(
    em: &mut Em<T>,
    ids: Vec<String>,
) -> Result<Vec<model::BackupFile>> {
    let mut files = Vec::new();
    for chunk in ids.chunks(50) {
        let filter: Vec<String> = chunk
            .iter()
            .map(|id| format!("Uid==\"urn:veeam:BackupFile:{}\"", guid_of(id)))
            .collect();
        let path = format!(
            "query?type=BackupFile&format=Entities&filter={}",
            encode(&filter.join(","))
        );
        match for_each_page(em, &path, |doc| {
            files.extend(model::backup_files(doc));
            Ok(())
        }) {
            Ok(()) => {}
            Err(Error::Rejected(_)) | Err(Error::NotFound(_)) => {
                return em.get("backupFiles?format=Entity", |doc| {
                    Ok(model::backup_files(doc))
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(files)
}

/// Per-instance totals over all backup files, grouped by the instance uuid in the backup name
/// (`<internal>-CSBKP-<uuid>` or `<job> - <vm>`). One paged pass over the files.
pub fn metrics<T: Transport>(em: &mut Em<T>, uuids: &[String]) -> Result<Vec<(String, u64, u64)>> {
    let mut totals: Vec<(String, u64, u64)> = uuids.iter().map(|u| (u.clone(), 0, 0)).collect();
    let mut add = |doc: &roxmltree::Document<'_>| {
        for file in model::backup_files(doc) {
            let Some(after) = file
                .backup_name
                .rsplit(JOB_MARKER)
                .next()
                .filter(|_| file.backup_name.contains(JOB_MARKER))
            else {
                continue;
            };
            let uuid = after.split(" - ").next().unwrap_or(after).trim();
            if let Some(entry) = totals
                .iter_mut()
                .find(|(u, _, _)| u.eq_ignore_ascii_case(uuid))
            {
                entry.1 += file.backup_size;
                entry.2 += file.data_size;
            }
        }
        Ok(())
    };
    match for_each_page(em, "query?type=BackupFile&format=Entities", &mut add) {
        Ok(()) => {}
        Err(Error::Rejected(_)) | Err(Error::NotFound(_)) => {
            let text = em.call("GET", "backupFiles?format=Entity", None)?.text();
            add(&model::parse(&text)?)?;
        }
        Err(e) => return Err(e),
    }
    Ok(totals)
}

/// What a pending operation is waiting for; the text form is the handle the host keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handle {
    /// A job start: the task, the job, the VM, the newest restore point time before it and
    /// the points of that second (times have one-second resolution).
    Backup {
        task: String,
        job: String,
        vm: String,
        after: u64,
        seen: Vec<String>,
    },
    /// An in-place restore through EM: the task (its related restore session follows) and
    /// the Unix second after which it is given up (`backup.plugin.veeam.restore.timeout`; 0:
    /// none, as in handles written before the deadline was kept).
    Restore { task: String, deadline: u64 },
    /// A PowerShell restore to a new VM: its restore session, the new VM's name and the
    /// restore's deadline.
    RestoreVm {
        session: String,
        vm: String,
        volume: Option<u64>,
        deadline: u64,
    },
}

impl Handle {
    pub fn encode(&self) -> String {
        match self {
            Handle::Backup {
                task,
                job,
                vm,
                after,
                seen,
            } => format!("backup|{task}|{job}|{vm}|{after}|{}", seen.join(",")),
            Handle::Restore { task, deadline } => format!("restore|{task}|{deadline}"),
            Handle::RestoreVm {
                session,
                vm,
                volume,
                deadline,
            } => {
                format!(
                    "restore-vm|{session}|{vm}|{}|{deadline}",
                    volume.map(|v| v.to_string()).unwrap_or_default()
                )
            }
        }
    }

    pub fn decode(text: &str) -> Result<Handle> {
        let parts: Vec<&str> = text.split('|').collect();
        let bad = || Error::NotFound(format!("'{text}' is not an operation of this provider"));
        let token = |s: &str| -> Result<String> {
            if s.is_empty()
                || s.len() > 200
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:.@".contains(c))
            {
                Err(bad())
            } else {
                Ok(s.to_string())
            }
        };
        match parts.as_slice() {
            ["backup", task, job, vm, after, seen] => Ok(Handle::Backup {
                task: token(task)?,
                job: token(job)?,
                vm: token(vm)?,
                after: after.parse().map_err(|_| bad())?,
                seen: seen
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(token)
                    .collect::<Result<_>>()?,
            }),
            ["restore", task] => Ok(Handle::Restore {
                task: token(task)?,
                deadline: 0,
            }),
            ["restore", task, deadline] => Ok(Handle::Restore {
                task: token(task)?,
                deadline: deadline.parse().map_err(|_| bad())?,
            }),
            ["restore-vm", session, vm, volume, rest @ ..] if rest.len() <= 1 => {
                Ok(Handle::RestoreVm {
                    session: token(session)?,
                    vm: token(vm)?,
                    volume: if volume.is_empty() {
                        None
                    } else {
                        Some(volume.parse().map_err(|_| bad())?)
                    },
                    deadline: match rest {
                        [deadline] => deadline.parse().map_err(|_| bad())?,
                        _ => 0,
                    },
                })
            }
            _ => Err(bad()),
        }
    }
}

/// Starts the instance's job. The handle remembers the newest restore point so the poll can
/// tell the one this run makes.
pub fn start_backup<T: Transport>(em: &mut Em<T>, vm: &Vm) -> Result<Handle> {
    require_vmware(vm)?;
    let job = vm.job.clone().filter(|j| !j.is_empty()).ok_or_else(|| {
        Error::NotFound(format!(
            "instance {} has no Veeam backup job; assign it to an offering first",
            vm.uuid
        ))
    })?;
    let points = restore_points(em, &vm.internal_name)?;
    let after = points.iter().map(|p| p.created).max().unwrap_or(0);
    let seen = points
        .iter()
        .filter(|p| p.created == after)
        .map(|p| p.id.clone())
        .collect();
    let task = match em.action(
        "POST",
        &format!("jobs/urn:veeam:Job:{}?action=start", guid_of(&job)),
        None,
    ) {
        Err(Error::NotFound(m)) => {
            return Err(Error::NotFound(format!(
                "the instance's Veeam job has vanished: {m}"
            )));
        }
        other => other?,
    };
    Ok(Handle::Backup {
        task,
        job,
        vm: vm.internal_name.clone(),
        after,
        seen,
    })
}

/// Where a pending operation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Running(u8, String),
    BackupTaken(Point),
    Restored,
    VolumeRestored { path: String, size: u64 },
    Failed(Error),
}

/// The restore setting whose deadline [`poll`] enforces.
pub const RESTORE_TIMEOUT_SETTING: &str = "backup.plugin.veeam.restore.timeout";

/// A restore still running at its deadline fails; Veeam may finish it later, which the
/// message says so nobody assumes the instance untouched.
fn restore_overdue(deadline: u64, now: u64, what: &str) -> Option<Progress> {
    (deadline != 0 && now >= deadline).then(|| {
        Progress::Failed(Error::Rejected(format!(
            "{what} did not finish within {RESTORE_TIMEOUT_SETTING}; Veeam may still complete it"
        )))
    })
}

/// One poll of a pending operation; `now` is the Unix second, for restore deadlines.
pub fn poll<T: Transport>(
    em: &mut Em<T>,
    shell: &mut dyn Shell,
    handle: &Handle,
    now: u64,
) -> Result<Progress> {
    match handle {
        Handle::Backup {
            task,
            vm,
            after,
            seen,
            ..
        } => {
            let state = match em.get(&format!("tasks/{task}"), model::task) {
                Ok(t) => Some(t),
                // Deleted by an earlier poll that saw it finish: the job was started.
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if let Some(t) = &state {
                if !t.finished() {
                    return Ok(Progress::Running(
                        10,
                        format!("starting the Veeam job ({})", t.state),
                    ));
                }
                if t.success != Some(true) {
                    let _ = em.call("DELETE", &format!("tasks/{task}"), None);
                    return Ok(Progress::Failed(Error::Rejected(format!(
                        "Veeam could not start the backup job: {}",
                        non_empty(&t.message)
                    ))));
                }
                let _ = em.call("DELETE", &format!("tasks/{task}"), None);
            }
            let newest = restore_points(em, vm)?
                .into_iter()
                .filter(|p| p.created >= *after && !seen.contains(&p.id))
                .max_by_key(|p| p.created);
            Ok(match newest {
                Some(point) => Progress::BackupTaken(point),
                None => Progress::Running(50, "the Veeam job is running".into()),
            })
        }
        Handle::Restore { task, deadline } => {
            let t = em.get(&format!("tasks/{task}"), model::task)?;
            if !t.finished() {
                if let Some(overdue) = restore_overdue(*deadline, now, "the Veeam restore") {
                    return Ok(overdue);
                }
                return Ok(Progress::Running(
                    10,
                    format!("starting the restore ({})", t.state),
                ));
            }
            if t.success != Some(true) {
                let _ = em.call("DELETE", &format!("tasks/{task}"), None);
                return Ok(Progress::Failed(Error::Rejected(format!(
                    "Veeam refused the restore: {}",
                    non_empty(&t.message)
                ))));
            }
            let Some(session) = t.restore_session.clone() else {
                let _ = em.call("DELETE", &format!("tasks/{task}"), None);
                return Ok(Progress::Failed(Error::Internal(
                    "the restore task names no restore session".into(),
                )));
            };
            let s = em.get(
                &format!("restoreSessions/{session}?format=Entity"),
                model::restore_session,
            )?;
            let outcome = match s.result.to_ascii_lowercase().as_str() {
                "success" => Progress::Restored,
                // Warning: the VM is back, with something Veeam wants looked at.
                "warning" => Progress::Restored,
                "failed" => Progress::Failed(Error::Rejected(format!(
                    "the Veeam restore session failed: {}",
                    restore_failure(shell, &session)
                ))),
                _ => {
                    if let Some(overdue) = restore_overdue(*deadline, now, "the Veeam restore") {
                        return Ok(overdue);
                    }
                    return Ok(Progress::Running(
                        s.progress.max(20),
                        format!("restoring ({})", s.state),
                    ));
                }
            };
            let _ = em.call("DELETE", &format!("tasks/{task}"), None);
            Ok(outcome)
        }
        Handle::RestoreVm {
            session,
            vm,
            volume,
            deadline,
        } => {
            let s = ps::run_json(
                shell,
                "reading the restore session",
                &ps::restore_session(session),
            )?;
            if !s["IsCompleted"].as_bool().unwrap_or(false) {
                if let Some(overdue) =
                    restore_overdue(*deadline, now, &format!("the Veeam restore to {vm}"))
                {
                    return Ok(overdue);
                }
                return Ok(Progress::Running(50, format!("restoring to {vm}")));
            }
            let result = s["Result"].as_str().unwrap_or_default();
            if result.eq_ignore_ascii_case("Success") || result.eq_ignore_ascii_case("Warning") {
                Ok(match volume {
                    Some(size) => Progress::VolumeRestored {
                        path: format!("{vm}/{vm}.vmdk"),
                        size: *size,
                    },
                    None => Progress::Restored,
                })
            } else {
                let why = s["Description"].as_str().unwrap_or("no reason given");
                Ok(Progress::Failed(Error::Rejected(format!(
                    "the Veeam restore to {vm} ended {result}: {why}"
                ))))
            }
        }
    }
}

/// The failure text of a restore session (PowerShell), or a note that it could not be read.
fn restore_failure(shell: &mut dyn Shell, session: &str) -> String {
    match ps::run_json(
        shell,
        "reading the restore session",
        &ps::restore_session(guid_of(session)),
    ) {
        Ok(v) => v["Description"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or("no reason given")
            .to_string(),
        Err(e) => format!("no reason available ({e})"),
    }
}

/// In-place restore of exactly `point_id` through EM, given up after `deadline` (Unix second).
pub fn start_restore<T: Transport>(
    em: &mut Em<T>,
    point_id: &str,
    deadline: u64,
) -> Result<Handle> {
    let guid = ps::point_guid(point_id)?;
    let task = match em.action(
        "POST",
        &format!("vmRestorePoints/{guid}?action=restore"),
        None,
    ) {
        Err(Error::NotFound(_)) => {
            return Err(Error::NotFound(format!(
                "Veeam has no restore point {guid}"
            )));
        }
        other => other?,
    };
    Ok(Handle::Restore { task, deadline })
}

/// Restore of exactly `point_id` to a new VM named `vm_name` on `esxi_host` (PowerShell),
/// given up after `deadline` (Unix second).
pub fn start_restore_vm(
    shell: &mut dyn Shell,
    point_id: &str,
    esxi_host: &str,
    datastore: &str,
    vm_name: &str,
    volume: Option<u64>,
    deadline: u64,
) -> Result<Handle> {
    let guid = ps::point_guid(point_id)?;
    let answer = ps::run_json(
        shell,
        "starting the restore",
        &ps::start_restore_vm(&guid, esxi_host, datastore, vm_name),
    )?;
    let session = answer["Id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let session = session
        .ok_or_else(|| Error::Internal("Start-VBRRestoreVM returned no session id".into()))?;
    Ok(Handle::RestoreVm {
        session,
        vm: vm_name.to_string(),
        volume,
        deadline,
    })
}

/// Deletes restore point `point_id` and the increments that depend on it. Veeam cannot drop
/// one point from a chain, so without `forced` this is refused.
pub fn delete(shell: &mut dyn Shell, point_id: &str, forced: bool) -> Result<()> {
    if !forced {
        return Err(Error::Rejected(
            "Veeam deletes whole backup chains only; delete with forced=true to remove this restore point and the ones that depend on it".into(),
        ));
    }
    let guid = ps::point_guid(point_id)?;
    match ps::run_json(
        shell,
        "deleting the restore point",
        &ps::remove_restore_point(&guid),
    ) {
        Ok(_) => Ok(()),
        Err(Error::Rejected(m)) if m.contains("Failed to delete") => Err(Error::NotFound(format!(
            "Veeam has no restore point {guid}"
        ))),
        Err(e) => Err(e),
    }
}

/// Stops the instance's job (cancel of a pending backup).
pub fn cancel<T: Transport>(em: &mut Em<T>, handle: &Handle) -> Result<()> {
    match handle {
        Handle::Backup { job, .. } => {
            em.action("POST", &format!("jobs/{}?action=stop", guid_of(job)), None)?;
            Ok(())
        }
        _ => Err(Error::Unsupported(
            "Veeam restores cannot be cancelled through Enterprise Manager".into(),
        )),
    }
}
