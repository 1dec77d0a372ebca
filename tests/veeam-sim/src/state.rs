//! The simulated Veeam Backup & Replication server: one state shared by the Enterprise Manager
//! XML API and the PowerShell side, so an id seen on one channel is valid on the other.
//!
//! Time-driven changes (tasks, job runs, restore sessions) are computed from `Instant`s when the
//! state is read (`advance`), so nothing runs in the background and a zero delay is immediate.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// Enterprise Manager / VBR version the simulator answers as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Profile {
    #[serde(rename = "11")]
    V11,
    #[serde(rename = "12")]
    V12,
    #[serde(rename = "12.3")]
    V12_3,
}

impl Profile {
    pub fn parse(text: &str) -> Option<Profile> {
        match text.trim() {
            "11" => Some(Profile::V11),
            "12" => Some(Profile::V12),
            "12.3" => Some(Profile::V12_3),
            _ => None,
        }
    }
    pub fn product_version(self) -> &'static str {
        match self {
            Profile::V11 => "11.0.1.1261",
            Profile::V12 => "12.0.0.1420",
            Profile::V12_3 => "12.3.0.310",
        }
    }
    pub fn rest_version(self) -> &'static str {
        match self {
            Profile::V11 => "v1_6",
            Profile::V12 | Profile::V12_3 => "v1_7",
        }
    }
    /// VBR 12 keeps one backup chain per machine: backups are named `<job> - <vm>`.
    pub fn per_machine_chains(self) -> bool {
        self != Profile::V11
    }
}

/// Delays of the time-driven state machines.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// Each of a task's `Running` and `OperationFinished` phases.
    pub task_phase_ms: u64,
    /// From a job start until its restore points exist.
    pub job_run_ms: u64,
    /// Each of a restore session's `Starting` and `Working` phases.
    pub restore_phase_ms: u64,
    /// Idle time after which a logon session is gone.
    pub session_idle_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            task_phase_ms: 200,
            job_run_ms: 500,
            restore_phase_ms: 200,
            session_idle_ms: 15 * 60 * 1000,
        }
    }
}

/// How the next tasks / restore sessions end; set through the admin endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    #[default]
    Success,
    Fail,
    /// Stays `Running` forever.
    Never,
    /// Stops at `OperationFinished` forever.
    StuckOperationFinished,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreResult {
    #[default]
    Success,
    Warning,
    Failed,
    /// Stays `Working` forever.
    Never,
}

/// Injected faults. Counters count down per matching request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// The next N authenticated API requests answer 401 (their session is dropped, as when it expired).
    pub unauthorized: u32,
    /// The next N API requests whose path contains `server_error_path` (any when empty) answer 500.
    pub server_error: u32,
    pub server_error_path: String,
    pub server_error_status: Option<u16>,
    /// Every API answer is delayed this long.
    pub delay_ms: u64,
    /// Outcome of tasks created from now on.
    pub task_outcome: TaskOutcome,
    pub task_fail_message: Option<String>,
    /// Result of restore sessions created from now on.
    pub restore_result: RestoreResult,
    /// Unknown elements added to every entity (tolerant parsing).
    pub extra_elements: bool,
    /// Job runs produce no restore point (the job session failed).
    pub job_run_fails: bool,
    /// SSH: every command exits 1 with this text.
    pub powershell_error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Repository {
    pub guid: String,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct VcenterVm {
    /// vCenter managed object id, e.g. `vm-1036`.
    pub moref: String,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct Include {
    pub guid: String,
    pub obj_ref: String,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct Job {
    pub guid: String,
    pub name: String,
    pub description: String,
    pub repository: String,
    pub schedule_configured: bool,
    pub schedule_enabled: bool,
    pub includes: Vec<Include>,
    /// Set on jobs created by clone; template jobs are the ones an admin made.
    pub cloned: bool,
    /// Restore points to keep per VM (the job's retention policy; a clone keeps its
    /// template's). Past it, a run merges the oldest increment into the full, as Veeam's
    /// forever-forward incremental chain does: the oldest point goes, the next becomes the full.
    pub retain_points: usize,
}

#[derive(Clone, Debug)]
pub struct RestorePoint {
    pub guid: String,
    pub job_guid: String,
    pub job_name: String,
    pub vm_name: String,
    pub vm_ref: String,
    pub created: SystemTime,
    pub full: bool,
    pub backup_file: String,
    pub backup_size: u64,
    pub data_size: u64,
}

#[derive(Clone, Debug)]
pub struct BackupFile {
    pub guid: String,
    pub backup_name: String,
    pub file_name: String,
    pub job_guid: String,
    pub created: SystemTime,
    pub full: bool,
    pub backup_size: u64,
    pub data_size: u64,
}

#[derive(Clone, Debug)]
pub enum TaskEffect {
    None,
    RestoreSession(String),
}

#[derive(Clone, Debug)]
pub struct Task {
    pub id: String,
    pub operation: String,
    pub started: Instant,
    pub outcome: TaskOutcome,
    pub fail_message: String,
    pub effect: TaskEffect,
}

#[derive(Clone, Debug)]
pub struct RestoreSession {
    pub guid: String,
    pub vm_name: String,
    pub restore_point: String,
    pub created: SystemTime,
    pub started: Instant,
    pub result: RestoreResult,
    pub description: String,
    /// PowerShell restores to a new VM: its name.
    pub new_vm_name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct LogonSession {
    pub user: String,
    pub last_used: Instant,
    /// The id in the `LogonSession` body and in `/logonSessions/{id}`; not the header token.
    pub session_id: String,
}

#[derive(Clone, Debug)]
struct PendingRun {
    job_guid: String,
    due: Instant,
}

/// Counters read by tests and benchmarks.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    pub requests: u64,
    pub logons: u64,
    pub logouts: u64,
    pub ssh_commands: u64,
    pub by_endpoint: BTreeMap<String, u64>,
    /// Time spent answering API requests (injected delays included), so a client's own
    /// overhead is its wall time minus this.
    pub http_answer_micros: u64,
    /// Time spent answering SSH commands, from the script's arrival to its last byte queued.
    pub ssh_answer_micros: u64,
}

pub struct State {
    pub profile: Profile,
    pub timing: Timing,
    pub faults: Faults,
    pub username: String,
    pub password: String,
    pub max_sessions: usize,
    pub backup_server_guid: String,
    pub backup_server_name: String,
    pub root_guid: String,
    /// The vCenter host name; CloudStack matches it against the hierarchy root's name.
    pub vcenter: String,
    pub esxi_hosts: Vec<String>,
    pub datastores: Vec<String>,
    pub repositories: Vec<Repository>,
    pub vms: Vec<VcenterVm>,
    pub jobs: Vec<Job>,
    pub restore_points: Vec<RestorePoint>,
    pub backup_files: Vec<BackupFile>,
    pub tasks: HashMap<String, Task>,
    pub restore_sessions: HashMap<String, RestoreSession>,
    pub sessions: HashMap<String, LogonSession>,
    pub counters: Counters,
    pending_runs: Vec<PendingRun>,
    next_task: u64,
    next_moref: u64,
}

pub fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The GUID inside either id form EM uses: `urn:veeam:<Type>:<guid>` or the bare GUID.
pub fn guid_of(id: &str) -> &str {
    id.rsplit(':').next().unwrap_or(id)
}

pub fn urn(kind: &str, guid: &str) -> String {
    format!("urn:veeam:{kind}:{guid}")
}

impl State {
    pub fn new(profile: Profile, username: &str, password: &str, vcenter: &str) -> State {
        let mut state = State {
            profile,
            timing: Timing::default(),
            faults: Faults::default(),
            username: username.to_string(),
            password: password.to_string(),
            max_sessions: 10,
            backup_server_guid: new_guid(),
            backup_server_name: "veeam-br".into(),
            root_guid: new_guid(),
            vcenter: vcenter.to_string(),
            esxi_hosts: vec!["10.0.0.1".into(), "10.0.0.2".into()],
            datastores: vec!["datastore1".into()],
            repositories: vec![
                Repository {
                    guid: new_guid(),
                    name: "Default Backup Repository".into(),
                },
                Repository {
                    guid: new_guid(),
                    name: "Gold Repository".into(),
                },
            ],
            vms: Vec::new(),
            jobs: Vec::new(),
            restore_points: Vec::new(),
            backup_files: Vec::new(),
            tasks: HashMap::new(),
            restore_sessions: HashMap::new(),
            sessions: HashMap::new(),
            counters: Counters::default(),
            pending_runs: Vec::new(),
            next_task: 0,
            next_moref: 1000,
        };
        let gold = state.repositories[1].guid.clone();
        let default = state.repositories[0].guid.clone();
        for (name, repo, description, retain_points) in [
            ("Gold", gold, "Daily, 14 restore points", 14),
            ("Silver", default, "Weekly, 4 restore points", 4),
        ] {
            state.jobs.push(Job {
                guid: new_guid(),
                name: name.into(),
                description: description.into(),
                repository: repo,
                schedule_configured: true,
                schedule_enabled: false,
                // Templates target an unused vCenter tag so they are never empty.
                includes: vec![Include {
                    guid: new_guid(),
                    obj_ref: format!(
                        "urn:VMware:Tag:{}.urn:vmomi:InventoryServiceTag:cs-unused:GLOBAL",
                        state.root_guid
                    ),
                    name: "cs-unused".into(),
                }],
                cloned: false,
                retain_points,
            });
        }
        state
    }

    /// Adds a VM to the vCenter inventory (idempotent by name) and returns its moref.
    pub fn add_vm(&mut self, name: &str) -> String {
        if let Some(vm) = self.vms.iter().find(|vm| vm.name == name) {
            return vm.moref.clone();
        }
        self.next_moref += 1;
        let moref = format!("vm-{}", self.next_moref);
        self.vms.push(VcenterVm {
            moref: moref.clone(),
            name: name.to_string(),
        });
        moref
    }

    pub fn vm_ref(&self, moref: &str) -> String {
        format!("urn:VMware:Vm:{}.{}", self.root_guid, moref)
    }

    /// Materialises every time-driven change due at `now`; drops idle sessions.
    pub fn advance(&mut self, now: Instant) {
        let idle = Duration::from_millis(self.timing.session_idle_ms);
        self.sessions
            .retain(|_, s| now.duration_since(s.last_used) < idle);
        let (due, later): (Vec<_>, Vec<_>) =
            self.pending_runs.drain(..).partition(|r| r.due <= now);
        self.pending_runs = later;
        for run in due {
            self.complete_job_run(&run.job_guid);
        }
    }

    fn complete_job_run(&mut self, job_guid: &str) {
        if self.faults.job_run_fails {
            return;
        }
        let Some(job) = self.jobs.iter().find(|j| j.guid == job_guid).cloned() else {
            return;
        };
        let created = SystemTime::now();
        for include in job.includes.iter().filter(|i| i.obj_ref.contains(":Vm:")) {
            let full = !self
                .restore_points
                .iter()
                .any(|p| p.job_guid == job.guid && p.vm_name == include.name);
            let backup_name = if self.profile.per_machine_chains() {
                format!("{} - {}", job.name, include.name)
            } else {
                job.name.clone()
            };
            let (backup_size, data_size) = if full {
                (2_147_483_648, 5_368_709_120)
            } else {
                (104_857_600, 5_368_709_120)
            };
            let stamp = jiff::Timestamp::try_from(created)
                .map(|t| t.strftime("%Y-%m-%dT%H%M%S").to_string());
            let file = BackupFile {
                guid: new_guid(),
                file_name: format!(
                    "{}D{}_{}.{}",
                    job.name,
                    stamp.unwrap_or_default(),
                    &new_guid()[..4],
                    if full { "vbk" } else { "vib" }
                ),
                backup_name,
                job_guid: job.guid.clone(),
                created,
                full,
                backup_size,
                data_size,
            };
            self.restore_points.push(RestorePoint {
                guid: new_guid(),
                job_guid: job.guid.clone(),
                job_name: job.name.clone(),
                vm_name: include.name.clone(),
                vm_ref: include.obj_ref.clone(),
                created,
                full,
                backup_file: file.guid.clone(),
                backup_size,
                data_size,
            });
            self.backup_files.push(file);
            self.apply_retention(&job, &include.name);
        }
    }

    /// Keeps at most `retain_points` points of `vm` in `job`: the oldest point goes and the
    /// increment after it is merged into the full backup file, whose point it becomes.
    fn apply_retention(&mut self, job: &Job, vm: &str) {
        loop {
            let mut chain: Vec<usize> = (0..self.restore_points.len())
                .filter(|&i| {
                    self.restore_points[i].job_guid == job.guid
                        && self.restore_points[i].vm_name == vm
                })
                .collect();
            if chain.len() <= job.retain_points.max(1) {
                return;
            }
            chain.sort_by_key(|&i| self.restore_points[i].created);
            let oldest = self.restore_points[chain[0]].clone();
            let next = chain[1];
            self.restore_points.retain(|p| p.guid != oldest.guid);
            if !oldest.full {
                self.backup_files.retain(|f| f.guid != oldest.backup_file);
                continue;
            }
            let next = if next > chain[0] { next - 1 } else { next };
            let merged = &mut self.restore_points[next];
            let increment_file = std::mem::replace(&mut merged.backup_file, oldest.backup_file);
            merged.full = true;
            merged.backup_size = oldest.backup_size;
            self.backup_files.retain(|f| f.guid != increment_file);
        }
    }

    /// Starts a job run; its restore points appear after `job_run_ms`.
    pub fn start_job_run(&mut self, job_guid: &str, now: Instant) {
        let due = now + Duration::from_millis(self.timing.job_run_ms);
        self.pending_runs.push(PendingRun {
            job_guid: job_guid.to_string(),
            due,
        });
        self.advance(now);
    }

    /// Stops a job: runs not finished yet produce nothing.
    pub fn stop_job_runs(&mut self, job_guid: &str) {
        self.pending_runs.retain(|r| r.job_guid != job_guid);
    }

    pub fn new_task(&mut self, operation: &str, now: Instant, effect: TaskEffect) -> String {
        self.next_task += 1;
        let id = format!("task-{}", self.next_task);
        let fail_message = self
            .faults
            .task_fail_message
            .clone()
            .unwrap_or_else(|| format!("{operation} failed: simulated failure"));
        self.tasks.insert(
            id.clone(),
            Task {
                id: id.clone(),
                operation: operation.into(),
                started: now,
                outcome: self.faults.task_outcome.clone(),
                fail_message,
                effect,
            },
        );
        id
    }

    /// A task whose outcome is decided by the request itself (e.g. a refused clone).
    pub fn failed_task(&mut self, operation: &str, now: Instant, message: &str) -> String {
        let id = self.new_task(operation, now, TaskEffect::None);
        let task = self.tasks.get_mut(&id).expect("just inserted");
        if task.outcome == TaskOutcome::Success {
            task.outcome = TaskOutcome::Fail;
        }
        task.fail_message = message.to_string();
        id
    }

    /// `Running`, `OperationFinished` or `Finished`, and the success flag once finished.
    pub fn task_state(&self, task: &Task, now: Instant) -> (&'static str, Option<bool>) {
        let phase = Duration::from_millis(self.timing.task_phase_ms);
        let age = now.duration_since(task.started);
        match task.outcome {
            TaskOutcome::Never => ("Running", None),
            TaskOutcome::StuckOperationFinished if age >= phase => ("OperationFinished", None),
            _ if age < phase => ("Running", None),
            _ if age < phase * 2 => ("OperationFinished", None),
            TaskOutcome::Success => ("Finished", Some(true)),
            _ => ("Finished", Some(false)),
        }
    }

    pub fn new_restore_session(
        &mut self,
        point: &RestorePoint,
        now: Instant,
        new_vm_name: Option<String>,
    ) -> String {
        let guid = new_guid();
        let result = self.faults.restore_result.clone();
        let description = match result {
            RestoreResult::Failed => format!(
                "Restore of {} failed: simulated datastore error",
                point.vm_name
            ),
            RestoreResult::Warning => format!(
                "Restore of {} finished with warnings: VMware Tools not found",
                point.vm_name
            ),
            _ => format!("Restoring {}", point.vm_name),
        };
        self.restore_sessions.insert(
            guid.clone(),
            RestoreSession {
                guid: guid.clone(),
                vm_name: point.vm_name.clone(),
                restore_point: point.guid.clone(),
                created: SystemTime::now(),
                started: now,
                result,
                description,
                new_vm_name,
            },
        );
        guid
    }

    /// (`State`, `Result`, progress percent) of a restore session.
    pub fn restore_state(
        &self,
        session: &RestoreSession,
        now: Instant,
    ) -> (&'static str, &'static str, u32) {
        let phase = Duration::from_millis(self.timing.restore_phase_ms);
        let age = now.duration_since(session.started);
        if session.result == RestoreResult::Never || age < phase * 2 {
            return if age < phase {
                ("Starting", "None", 0)
            } else {
                ("Working", "None", 50)
            };
        }
        match session.result {
            RestoreResult::Success => ("Stopped", "Success", 100),
            RestoreResult::Warning => ("Stopped", "Warning", 100),
            _ => ("Stopped", "Failed", 100),
        }
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        let guid = guid_of(id);
        self.jobs.iter().find(|j| j.guid.eq_ignore_ascii_case(guid))
    }

    pub fn job_mut(&mut self, id: &str) -> Option<&mut Job> {
        let guid = guid_of(id).to_string();
        self.jobs
            .iter_mut()
            .find(|j| j.guid.eq_ignore_ascii_case(&guid))
    }

    pub fn restore_point(&self, id: &str) -> Option<&RestorePoint> {
        let guid = guid_of(id);
        self.restore_points
            .iter()
            .find(|p| p.guid.eq_ignore_ascii_case(guid))
    }

    /// Removes a restore point and, as Veeam does for a chain, every later increment that
    /// depends on it. Returns how many points went.
    pub fn remove_restore_point_chain(&mut self, guid: &str) -> usize {
        let Some(point) = self.restore_point(guid).cloned() else {
            return 0;
        };
        let doomed: Vec<String> = self
            .restore_points
            .iter()
            .filter(|p| {
                p.job_guid == point.job_guid
                    && p.vm_name == point.vm_name
                    && p.created >= point.created
            })
            .map(|p| p.guid.clone())
            .collect();
        let files: Vec<String> = self
            .restore_points
            .iter()
            .filter(|p| doomed.contains(&p.guid))
            .map(|p| p.backup_file.clone())
            .collect();
        self.restore_points.retain(|p| !doomed.contains(&p.guid));
        self.backup_files.retain(|f| !files.contains(&f.guid));
        doomed.len()
    }

    /// Removes a job; with `with_backup`, also its restore points and files.
    pub fn remove_job(&mut self, name: &str, with_backup: bool) -> bool {
        let Some(job) = self.jobs.iter().find(|j| j.name == name).cloned() else {
            return false;
        };
        self.jobs.retain(|j| j.guid != job.guid);
        self.pending_runs.retain(|r| r.job_guid != job.guid);
        if with_backup {
            self.restore_points.retain(|p| p.job_guid != job.guid);
            self.backup_files.retain(|f| f.job_guid != job.guid);
        }
        true
    }

    pub fn live_sessions(&mut self, now: Instant) -> usize {
        self.advance(now);
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let mut s = State::new(Profile::V12, "administrator", "secret", "vcenter.local");
        s.timing = Timing {
            task_phase_ms: 0,
            job_run_ms: 0,
            restore_phase_ms: 0,
            session_idle_ms: 1000,
        };
        s
    }

    #[test]
    fn a_job_run_makes_a_full_then_an_increment_per_included_vm() {
        let mut s = state();
        let moref = s.add_vm("i-2-4-VM");
        let obj_ref = s.vm_ref(&moref);
        let job = s.jobs[0].guid.clone();
        s.job_mut(&job).unwrap().includes.push(Include {
            guid: new_guid(),
            obj_ref,
            name: "i-2-4-VM".into(),
        });
        let now = Instant::now();
        s.start_job_run(&job, now);
        s.start_job_run(&job, now);
        let kinds: Vec<bool> = s.restore_points.iter().map(|p| p.full).collect();
        assert_eq!(kinds, vec![true, false]);
        assert_eq!(s.backup_files.len(), 2);
        assert!(s.backup_files[0].backup_name.ends_with(" - i-2-4-VM"));
    }

    #[test]
    fn past_the_jobs_retention_the_oldest_point_merges_into_the_next() {
        let mut s = state();
        let moref = s.add_vm("i-2-4-VM");
        let obj_ref = s.vm_ref(&moref);
        let job = s.jobs[0].guid.clone();
        let job_mut = s.job_mut(&job).unwrap();
        job_mut.retain_points = 2;
        job_mut.includes.push(Include {
            guid: new_guid(),
            obj_ref,
            name: "i-2-4-VM".into(),
        });
        let now = Instant::now();
        for _ in 0..3 {
            s.start_job_run(&job, now);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(s.restore_points.len(), 2);
        assert_eq!(s.backup_files.len(), 2);
        let kinds: Vec<bool> = s.restore_points.iter().map(|p| p.full).collect();
        assert_eq!(
            kinds,
            vec![true, false],
            "the second run's point is the full now"
        );
        assert!(s.backup_files[0].file_name.ends_with(".vbk"));
    }

    #[test]
    fn removing_a_point_removes_the_increments_after_it() {
        let mut s = state();
        let moref = s.add_vm("vm1");
        let obj_ref = s.vm_ref(&moref);
        let job = s.jobs[0].guid.clone();
        s.job_mut(&job).unwrap().includes.push(Include {
            guid: new_guid(),
            obj_ref,
            name: "vm1".into(),
        });
        let now = Instant::now();
        for _ in 0..3 {
            s.start_job_run(&job, now);
            std::thread::sleep(Duration::from_millis(2));
        }
        let second = s.restore_points[1].guid.clone();
        assert_eq!(
            s.remove_restore_point_chain(&urn("VmRestorePoint", &second)),
            2
        );
        assert_eq!(s.restore_points.len(), 1);
        assert_eq!(s.backup_files.len(), 1);
    }

    #[test]
    fn tasks_and_sessions_follow_their_outcome() {
        let mut s = state();
        s.timing.task_phase_ms = 10_000;
        let now = Instant::now();
        let t = s.new_task("StartJob", now, TaskEffect::None);
        assert_eq!(s.task_state(&s.tasks[&t], now).0, "Running");
        assert_eq!(
            s.task_state(&s.tasks[&t], now + Duration::from_secs(15)).0,
            "OperationFinished"
        );
        assert_eq!(
            s.task_state(&s.tasks[&t], now + Duration::from_secs(25)),
            ("Finished", Some(true))
        );
        s.faults.task_outcome = TaskOutcome::Never;
        let stuck = s.new_task("StartJob", now, TaskEffect::None);
        assert_eq!(
            s.task_state(&s.tasks[&stuck], now + Duration::from_secs(3600))
                .0,
            "Running"
        );
        s.sessions.insert(
            "t".into(),
            LogonSession {
                user: "a".into(),
                last_used: now,
                session_id: "s".into(),
            },
        );
        assert_eq!(s.live_sessions(now), 1);
        assert_eq!(s.live_sessions(now + Duration::from_secs(2)), 0);
    }

    #[test]
    fn both_id_forms_find_the_same_job() {
        let s = state();
        let guid = s.jobs[0].guid.clone();
        assert!(s.job(&guid).is_some());
        assert!(s.job(&urn("Job", &guid)).is_some());
        assert!(
            s.job("urn:veeam:Job:00000000-0000-0000-0000-000000000000")
                .is_none()
        );
    }
}
