//! Rendering of Enterprise Manager XML entities (namespace `http://www.veeam.com/ent/v1.0`).

use std::time::SystemTime;

use crate::state::{BackupFile, Job, Profile, RestorePoint, RestoreSession, State, Task, urn};

pub const NS: &str = "http://www.veeam.com/ent/v1.0";

pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

pub fn document(root: &str, attrs: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<{root} xmlns=\"{NS}\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"{attrs}>{inner}</{root}>"
    )
}

pub fn link(href: &str, name: Option<&str>, kind: Option<&str>, rel: &str) -> String {
    let name = name
        .map(|n| format!(" Name=\"{}\"", esc(n)))
        .unwrap_or_default();
    let kind = kind.map(|t| format!(" Type=\"{t}\"")).unwrap_or_default();
    format!("<Link Href=\"{}\"{name}{kind} Rel=\"{rel}\"/>", esc(href))
}

/// `2023-11-03T16:26:12.209913Z`, as EM writes `CreationTimeUTC`.
pub fn utc(time: SystemTime) -> String {
    let micros = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let seconds = (micros / 1_000_000) as i64;
    let stamp = jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!(
        "{}.{:06}Z",
        stamp.strftime("%Y-%m-%dT%H:%M:%S"),
        micros % 1_000_000
    )
}

/// Elements a newer or differently configured EM adds; clients must ignore them.
pub fn extras(state: &State, entity: &str) -> String {
    let mut out = String::new();
    if state.profile == Profile::V12_3 && entity == "VmRestorePoint" {
        out.push_str("<SqlInfo><IsSqlServer>false</IsSqlServer><Databases/></SqlInfo><IsCorrupted>false</IsCorrupted>");
    }
    if state.faults.extra_elements {
        out.push_str(
            "<FutureElement Kind=\"unknown\"><Nested>value</Nested></FutureElement><Tags/>",
        );
    }
    out
}

pub fn backup_server_link(state: &State, base: &str) -> String {
    link(
        &format!("{base}/backupServers/{}", state.backup_server_guid),
        Some(&state.backup_server_name),
        Some("BackupServerReference"),
        "Up",
    )
}

pub fn job_ref(state: &State, base: &str, job: &Job) -> String {
    let href = format!("{base}/jobs/{}", job.guid);
    format!(
        "<Ref UID=\"{}\" Name=\"{}\" Href=\"{href}\" Type=\"JobReference\"><Links>{}{}{}</Links></Ref>",
        urn("Job", &job.guid),
        esc(&job.name),
        backup_server_link(state, base),
        link(
            &format!("{href}?format=Entity"),
            Some(&job.name),
            Some("Job"),
            "Alternate"
        ),
        link(
            &format!("{href}/backupSessions"),
            None,
            Some("BackupJobSessionReferenceList"),
            "Down"
        ),
    )
}

pub fn job_entity(state: &State, base: &str, job: &Job) -> String {
    let href = format!("{base}/jobs/{}", job.guid);
    let includes: String = job
        .includes
        .iter()
        .map(|i| include_entity(base, job, i))
        .collect();
    format!(
        "<Job Href=\"{href}?format=Entity\" Type=\"Job\" Name=\"{}\" UID=\"{}\"><Links>{}{}{}{}</Links>\
         <Platform>VMware</Platform><Description>{}</Description><NextRun>2030-01-01T22:00:00</NextRun>\
         <JobType>Backup</JobType><ScheduleEnabled>{}</ScheduleEnabled><ScheduleConfigured>{}</ScheduleConfigured>\
         <JobInfo><BackupJobInfo><Includes>{includes}</Includes></BackupJobInfo></JobInfo>{}</Job>",
        esc(&job.name),
        urn("Job", &job.guid),
        backup_server_link(state, base),
        link(&format!("{href}?action=start"), None, None, "Start"),
        link(&format!("{href}?action=clone"), None, None, "Clone"),
        link(
            &format!("{href}/includes"),
            None,
            Some("ObjectInJobReferenceList"),
            "Down"
        ),
        esc(&job.description),
        job.schedule_enabled,
        job.schedule_configured,
        extras(state, "Job"),
    )
}

pub fn include_entity(base: &str, job: &Job, include: &crate::state::Include) -> String {
    let href = format!("{base}/jobs/{}/includes/{}", job.guid, include.guid);
    format!(
        "<ObjectInJob Href=\"{href}\" Type=\"ObjectInJob\"><Links>{}</Links><ObjectInJobId>{}</ObjectInJobId>\
         <HierarchyObjRef>{}</HierarchyObjRef><Name>{}</Name><DisplayName>{}</DisplayName><Order>0</Order></ObjectInJob>",
        link(&href, None, None, "Delete"),
        include.guid,
        esc(&include.obj_ref),
        esc(&include.name),
        esc(&include.name),
    )
}

pub fn task_entity(state: &State, base: &str, task: &Task, now: std::time::Instant) -> String {
    let href = format!("{base}/tasks/{}", task.id);
    let (task_state, success) = state.task_state(task, now);
    let mut links = link(&href, None, Some("Task"), "Delete");
    let mut result = String::new();
    if let Some(success) = success {
        if let (true, crate::state::TaskEffect::RestoreSession(id)) = (success, &task.effect) {
            links.push_str(&link(
                &format!("{base}/restoreSessions/{id}?format=Entity"),
                None,
                Some("RestoreSession"),
                "Related",
            ));
        }
        let message = if success {
            ""
        } else {
            task.fail_message.as_str()
        };
        result = format!(
            "<Result Success=\"{success}\"><Message>{}</Message></Result>",
            esc(message)
        );
    }
    format!(
        "<Task Type=\"Task\" Href=\"{href}\"><Links>{links}</Links><TaskId>{}</TaskId><State>{task_state}</State>\
         <Operation>{}</Operation>{result}{}</Task>",
        task.id,
        task.operation,
        extras(state, "Task"),
    )
}

pub fn restore_point_ref(base: &str, point: &RestorePoint) -> String {
    format!(
        "<Ref UID=\"{}\" Name=\"{}\" Href=\"{base}/vmRestorePoints/{}\" Type=\"VmRestorePointReference\"/>",
        urn("VmRestorePoint", &point.guid),
        esc(&point_name(point)),
        point.guid
    )
}

pub fn point_name(point: &RestorePoint) -> String {
    let text = utc(point.created);
    format!(
        "{}@{}",
        point.vm_name,
        text.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

pub fn restore_point_entity(state: &State, base: &str, point: &RestorePoint) -> String {
    let href = format!("{base}/vmRestorePoints/{}", point.guid);
    format!(
        "<VmRestorePoint Href=\"{href}?format=Entity\" Type=\"VmRestorePoint\" Name=\"{}\" UID=\"{}\" VmDisplayName=\"{}\">\
         <Links>{}{}{}{}{}</Links><CreationTimeUTC>{}</CreationTimeUTC><VmName>{}</VmName><Algorithm>{}</Algorithm>\
         <PointType>{}</PointType><HierarchyObjRef>{}</HierarchyObjRef>{}</VmRestorePoint>",
        esc(&point_name(point)),
        urn("VmRestorePoint", &point.guid),
        esc(&point.vm_name),
        link(&format!("{href}?action=restore"), None, None, "Restore"),
        backup_server_link(state, base),
        link(
            &format!("{base}/restorePoints/{}", point.guid),
            None,
            Some("RestorePointReference"),
            "Up"
        ),
        link(
            &format!("{base}/backupFiles/{}", point.backup_file),
            None,
            Some("BackupFileReference"),
            "Up"
        ),
        link(
            &href,
            Some(&point_name(point)),
            Some("VmRestorePointReference"),
            "Alternate"
        ),
        utc(point.created),
        esc(&point.vm_name),
        if point.full { "Full" } else { "Increment" },
        if point.full { "Full" } else { "Increment" },
        esc(&point.vm_ref),
        extras(state, "VmRestorePoint"),
    )
}

pub fn backup_file_entity(state: &State, base: &str, file: &BackupFile) -> String {
    let href = format!("{base}/backupFiles/{}", file.guid);
    format!(
        "<BackupFile Href=\"{href}?format=Entity\" Type=\"BackupFile\" Name=\"{}\" UID=\"{}\"><Links>{}{}</Links>\
         <FilePath>E:\\Backups\\{}</FilePath><BackupSize>{}</BackupSize><DataSize>{}</DataSize>\
         <DeduplicationRatio>1.5</DeduplicationRatio><CompressRatio>2</CompressRatio>\
         <CreationTimeUtc>{}</CreationTimeUtc><FileType>{}</FileType>{}</BackupFile>",
        esc(&file.file_name),
        urn("BackupFile", &file.guid),
        backup_server_link(state, base),
        link(
            &format!("{base}/backups/{}", file.job_guid),
            Some(&file.backup_name),
            Some("BackupReference"),
            "Up"
        ),
        esc(&file.file_name),
        file.backup_size,
        file.data_size,
        utc(file.created),
        if file.full { "vbk" } else { "vib" },
        extras(state, "BackupFile"),
    )
}

pub fn restore_session_entity(
    state: &State,
    base: &str,
    session: &RestoreSession,
    now: std::time::Instant,
) -> String {
    let (session_state, result, progress) = state.restore_state(session, now);
    let end = if session_state == "Stopped" {
        format!("<EndTimeUTC>{}</EndTimeUTC>", utc(SystemTime::now()))
    } else {
        String::new()
    };
    let href = format!("{base}/restoreSessions/{}", session.guid);
    format!(
        "<RestoreSession Href=\"{href}?format=Entity\" Type=\"RestoreSession\" Name=\"{}\" UID=\"{}\" VmDisplayName=\"{}\">\
         <Links>{}</Links><JobType>RestoreVm</JobType><CreationTimeUTC>{}</CreationTimeUTC>{end}<State>{session_state}</State>\
         <Result>{result}</Result><Progress>{progress}</Progress><RestoredObjRef>{}</RestoredObjRef>{}</RestoreSession>",
        esc(&format!("Restore {}", session.vm_name)),
        urn("RestoreSession", &session.guid),
        esc(&session.vm_name),
        backup_server_link(state, base),
        utc(session.created),
        esc(&session.vm_name),
        extras(state, "RestoreSession"),
    )
}

pub fn error(status: u16, message: &str) -> String {
    document(
        "Error",
        &format!(" Message=\"{}\" StatusCode=\"{status}\"", esc(message)),
        "",
    )
}
