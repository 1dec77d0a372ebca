//! Enterprise Manager XML: what the provider reads, parsed tolerantly.
//!
//! Elements are matched by local name (any namespace); unknown elements and attributes are
//! ignored, so newer EM versions (e.g. VBR 12.3's `SqlInfo`) parse. A value EM may write as an
//! attribute or as a child element is read from either.

use roxmltree::{Document, Node};

use crate::error::{Error, Result};

/// Parses a response body.
pub fn parse(body: &str) -> Result<Document<'_>> {
    Document::parse(body)
        .map_err(|e| Error::Internal(format!("Enterprise Manager sent malformed XML: {e}")))
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().name().eq_ignore_ascii_case(name))
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> Option<Node<'a, 'i>> {
    children(node, name).next()
}

/// Attribute or child element text, trimmed.
pub fn field(node: Node<'_, '_>, name: &str) -> Option<String> {
    node.attributes()
        .find(|a| a.name().eq_ignore_ascii_case(name))
        .map(|a| a.value().trim().to_string())
        .or_else(|| child(node, name).map(|c| c.text().unwrap_or("").trim().to_string()))
}

/// Every element named `name` anywhere below (and including) the root.
pub fn all<'a, 'i>(
    doc: &'a Document<'i>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    doc.descendants()
        .filter(move |n| n.is_element() && n.tag_name().name().eq_ignore_ascii_case(name))
}

/// The GUID in either id form: `urn:veeam:<Type>:<guid>` or the bare GUID.
pub fn guid_of(id: &str) -> &str {
    id.trim().rsplit(':').next().unwrap_or(id)
}

/// Two ids name the same object (any form, any case).
pub fn same_id(a: &str, b: &str) -> bool {
    let (a, b) = (guid_of(a), guid_of(b));
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub href: String,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub rel: Option<String>,
}

pub fn links(node: Node<'_, '_>) -> Vec<Link> {
    child(node, "Links")
        .map(|l| {
            children(l, "Link")
                .map(|n| Link {
                    href: field(n, "Href").unwrap_or_default(),
                    name: field(n, "Name"),
                    kind: field(n, "Type"),
                    rel: field(n, "Rel"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn link_of_type<'l>(links: &'l [Link], kind: &str) -> Option<&'l Link> {
    links.iter().find(|l| {
        l.kind
            .as_deref()
            .is_some_and(|k| k.eq_ignore_ascii_case(kind))
    })
}

/// An `EntityReferences/Ref` (also `QueryResult/Refs/Ref`).
#[derive(Debug, Clone)]
pub struct Ref {
    pub uid: String,
    pub name: String,
    pub href: String,
    pub kind: String,
    pub links: Vec<Link>,
}

pub fn refs(doc: &Document<'_>) -> Vec<Ref> {
    all(doc, "Ref")
        .map(|n| Ref {
            uid: field(n, "UID").unwrap_or_default(),
            name: field(n, "Name").unwrap_or_default(),
            href: field(n, "Href").unwrap_or_default(),
            kind: field(n, "Type").unwrap_or_default(),
            links: links(n),
        })
        .collect()
}

/// `PagingInfo`: (page number, pages count), when the answer is paged.
pub fn paging(doc: &Document<'_>) -> Option<(u32, u32)> {
    let node = all(doc, "PagingInfo").next()?;
    let page = field(node, "PageNum")?.parse().ok()?;
    let pages = field(node, "PagesCount")?.parse().ok()?;
    Some((page, pages))
}

#[derive(Debug, Clone)]
pub struct Job {
    pub uid: String,
    pub name: String,
    pub description: String,
    pub schedule_configured: bool,
    pub schedule_enabled: bool,
    /// From the `BackupServerReference` link's `Href` (`.../backupServers/{id}`).
    pub backup_server: Option<String>,
}

fn flag(node: Node<'_, '_>, name: &str) -> bool {
    field(node, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

pub fn job(doc: &Document<'_>) -> Result<Job> {
    let node = all(doc, "Job")
        .next()
        .ok_or_else(|| Error::Internal("Enterprise Manager sent no Job".into()))?;
    let links = links(node);
    let backup_server = link_of_type(&links, "BackupServerReference")
        .and_then(|l| l.href.split("backupServers/").nth(1))
        .map(|id| id.split(['?', '/']).next().unwrap_or(id).to_string());
    Ok(Job {
        uid: field(node, "UID").unwrap_or_default(),
        name: field(node, "Name").unwrap_or_default(),
        description: field(node, "Description").unwrap_or_default(),
        schedule_configured: flag(node, "ScheduleConfigured"),
        schedule_enabled: flag(node, "ScheduleEnabled"),
        backup_server,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub state: String,
    pub operation: String,
    /// Set once the task finished.
    pub success: Option<bool>,
    pub message: String,
    /// The `Related` restore session, as a path below the API root (`restoreSessions/{id}`).
    pub restore_session: Option<String>,
}

impl Task {
    /// Only `Finished` is final; `OperationFinished` means EM has not caught up yet.
    pub fn finished(&self) -> bool {
        self.state.eq_ignore_ascii_case("Finished")
    }
}

pub fn task(doc: &Document<'_>) -> Result<Task> {
    let node = all(doc, "Task")
        .next()
        .ok_or_else(|| Error::Internal("Enterprise Manager sent no Task".into()))?;
    let result = child(node, "Result");
    let success = result
        .and_then(|r| field(r, "Success"))
        .map(|v| v.eq_ignore_ascii_case("true"));
    let message = result.and_then(|r| field(r, "Message")).unwrap_or_default();
    let restore_session = links(node)
        .into_iter()
        .find(|l| {
            l.rel
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case("Related"))
                && l.kind
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("RestoreSession"))
        })
        .and_then(|l| {
            l.href
                .split("restoreSessions/")
                .nth(1)
                .map(|id| id.split(['?', '/']).next().unwrap_or(id).to_string())
        });
    Ok(Task {
        id: field(node, "TaskId").unwrap_or_default(),
        state: field(node, "State").unwrap_or_default(),
        operation: field(node, "Operation").unwrap_or_default(),
        success,
        message,
        restore_session,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSession {
    pub uid: String,
    pub state: String,
    pub result: String,
    pub progress: u8,
}

pub fn restore_session(doc: &Document<'_>) -> Result<RestoreSession> {
    let node = all(doc, "RestoreSession")
        .next()
        .ok_or_else(|| Error::Internal("Enterprise Manager sent no RestoreSession".into()))?;
    Ok(RestoreSession {
        uid: field(node, "UID").unwrap_or_default(),
        state: field(node, "State").unwrap_or_default(),
        result: field(node, "Result").unwrap_or_default(),
        progress: field(node, "Progress")
            .and_then(|p| p.parse::<u32>().ok())
            .map(|p| p.min(100) as u8)
            .unwrap_or(0),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRestorePoint {
    pub uid: String,
    pub vm_name: String,
    /// Unix seconds.
    pub created: Option<u64>,
    pub full: bool,
    /// Its backup file and restore point are on this server (`Rel="Up"`), as CloudStack checks.
    pub local: bool,
    /// Id of its backup file (from the `BackupFileReference` link).
    pub backup_file: Option<String>,
}

pub fn vm_restore_points(doc: &Document<'_>) -> Vec<VmRestorePoint> {
    all(doc, "VmRestorePoint")
        .map(|n| {
            let links = links(n);
            let local = ["BackupFileReference", "RestorePointReference"]
                .iter()
                .all(|kind| {
                    links
                        .iter()
                        .filter(|l| l.kind.as_deref() == Some(kind))
                        .all(|l| {
                            l.rel
                                .as_deref()
                                .is_some_and(|r| r.eq_ignore_ascii_case("Up"))
                        })
                });
            VmRestorePoint {
                uid: field(n, "UID").unwrap_or_default(),
                vm_name: field(n, "VmName")
                    .or_else(|| field(n, "VmDisplayName"))
                    .unwrap_or_default(),
                created: field(n, "CreationTimeUTC")
                    .as_deref()
                    .and_then(bnr_sdk::time::parse_utc)
                    .and_then(|seconds| u64::try_from(seconds).ok()),
                full: field(n, "PointType").is_some_and(|t| t.eq_ignore_ascii_case("Full")),
                local,
                backup_file: link_of_type(&links, "BackupFileReference")
                    .and_then(|l| l.href.split("backupFiles/").nth(1))
                    .map(|id| id.split(['?', '/']).next().unwrap_or(id).to_string()),
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    pub uid: String,
    /// The `BackupReference` link's name: the job name, or `<job> - <vm>` with per-machine chains.
    pub backup_name: String,
    pub backup_size: u64,
    pub data_size: u64,
}

pub fn backup_files(doc: &Document<'_>) -> Vec<BackupFile> {
    all(doc, "BackupFile")
        .map(|n| {
            let links = links(n);
            BackupFile {
                uid: field(n, "UID").unwrap_or_default(),
                backup_name: link_of_type(&links, "BackupReference")
                    .and_then(|l| l.name.clone())
                    .unwrap_or_default(),
                backup_size: field(n, "BackupSize")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                data_size: field(n, "DataSize")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HierarchyItem {
    pub object_ref: String,
    pub object_type: String,
    pub name: String,
}

pub fn hierarchy_items(doc: &Document<'_>) -> Vec<HierarchyItem> {
    all(doc, "HierarchyItem")
        .map(|n| HierarchyItem {
            object_ref: field(n, "ObjectRef").unwrap_or_default(),
            object_type: field(n, "ObjectType").unwrap_or_default(),
            name: field(n, "ObjectName").unwrap_or_default(),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInJob {
    pub id: String,
    pub object_ref: String,
    pub name: String,
}

pub fn objects_in_job(doc: &Document<'_>) -> Vec<ObjectInJob> {
    all(doc, "ObjectInJob")
        .map(|n| ObjectInJob {
            id: field(n, "ObjectInJobId").unwrap_or_default(),
            object_ref: field(n, "HierarchyObjRef").unwrap_or_default(),
            name: field(n, "Name").unwrap_or_default(),
        })
        .collect()
}

/// `LogonSession/SessionId`, the id `DELETE /logonSessions/{id}` takes.
pub fn logon_session_id(doc: &Document<'_>) -> Option<String> {
    let node = all(doc, "LogonSession").next()?;
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    // `SessionId`; else the id in the session's own `UID` or `Href` (the same GUID on EM).
    field(node, "SessionId")
        .and_then(non_empty)
        .or_else(|| field(node, "UID").and_then(|u| non_empty(guid_of(&u).to_string())))
        .or_else(|| {
            let href = field(node, "Href")?;
            let rest = href.split("logonSessions/").nth(1)?;
            non_empty(rest.split(['?', '/']).next().unwrap_or(rest).to_string())
        })
}

/// The message of an `Error` body, if the answer is one.
pub fn error_message(body: &str) -> Option<String> {
    let doc = Document::parse(body).ok()?;
    let node = all(&doc, "Error").next()?;
    field(node, "Message")
}

/// Escapes text for an element or attribute value.
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

#[cfg(test)]
mod tests {
    use super::*;

    const POINT_12_3: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<VmRestorePoints xmlns="http://www.veeam.com/ent/v1.0">
  <VmRestorePoint Href="https://em:9398/api/vmRestorePoints/f6d2?format=Entity" Type="VmRestorePoint"
      Name="i-2-4-VM@2023-11-03 16:26:12.209913" UID="urn:veeam:VmRestorePoint:f6d2c3a0-0000-4000-8000-000000000001" VmDisplayName="i-2-4-VM">
    <Links>
      <Link Href="https://em:9398/api/vmRestorePoints/f6d2?action=restore" Rel="Restore"/>
      <Link Href="https://em:9398/api/backupServers/1" Name="vbr" Type="BackupServerReference" Rel="Up"/>
      <Link Href="https://em:9398/api/restorePoints/1" Type="RestorePointReference" Rel="Up"/>
      <Link Href="https://em:9398/api/backupFiles/1" Type="BackupFileReference" Rel="Up"/>
    </Links>
    <CreationTimeUTC>2023-11-03T16:26:12.209913Z</CreationTimeUTC>
    <VmName>i-2-4-VM</VmName>
    <Algorithm>Increment</Algorithm>
    <PointType>Increment</PointType>
    <HierarchyObjRef>urn:VMware:Vm:7a.vm-1036</HierarchyObjRef>
    <SqlInfo><IsSqlServer>false</IsSqlServer></SqlInfo>
    <SomethingNew Attr="x"><Deep/></SomethingNew>
  </VmRestorePoint>
</VmRestorePoints>"#;

    #[test]
    fn the_logon_session_id_comes_from_session_id_else_uid_else_href() {
        let id = |xml: &str| logon_session_id(&parse(xml).unwrap());
        assert_eq!(
            id(r#"<LogonSession xmlns="http://www.veeam.com/ent/v1.0" UID="urn:veeam:LogonSession:u-1"><SessionId>s-1</SessionId></LogonSession>"#).as_deref(),
            Some("s-1")
        );
        assert_eq!(
            id(r#"<LogonSession UID="urn:veeam:LogonSession:u-1"><UserName>a</UserName></LogonSession>"#).as_deref(),
            Some("u-1")
        );
        assert_eq!(
            id(r#"<LogonSession Href="https://em:9398/api/logonSessions/h-1"/>"#).as_deref(),
            Some("h-1")
        );
        assert_eq!(id("<LogonSession/>"), None);
    }

    #[test]
    fn a_12_3_restore_point_with_unknown_elements_parses() {
        let doc = parse(POINT_12_3).unwrap();
        let points = vm_restore_points(&doc);
        assert_eq!(points.len(), 1);
        let p = &points[0];
        assert_eq!(guid_of(&p.uid), "f6d2c3a0-0000-4000-8000-000000000001");
        assert_eq!(p.vm_name, "i-2-4-VM");
        assert_eq!(p.created, Some(1_699_028_772));
        assert!(!p.full);
        assert!(p.local);
    }

    #[test]
    fn a_finished_restore_task_names_its_session() {
        let body = r#"<Task xmlns="http://www.veeam.com/ent/v1.0" Type="Task" Href="x"><Links>
            <Link Href="https://em:9398/api/tasks/task-3" Type="Task" Rel="Delete"/>
            <Link Href="https://EM.example:9398/api/restoreSessions/ab12?format=Entity" Type="RestoreSession" Rel="Related"/>
            </Links><TaskId>task-3</TaskId><State>Finished</State><Operation>StartVMRestore</Operation>
            <Result Success="true"><Message></Message></Result></Task>"#;
        let t = task(&parse(body).unwrap()).unwrap();
        assert!(t.finished());
        assert_eq!(t.success, Some(true));
        assert_eq!(t.restore_session.as_deref(), Some("ab12"));
    }

    #[test]
    fn ids_compare_across_forms() {
        assert!(same_id("urn:veeam:Job:ABC-1", "abc-1"));
        assert!(!same_id("urn:veeam:Job:", ""));
        assert!(!same_id("abc-1", "abc-10"));
    }

    #[test]
    fn a_job_gives_its_backup_server() {
        let body = r#"<Job xmlns="http://www.veeam.com/ent/v1.0" Name="Gold" UID="urn:veeam:Job:1"><Links>
            <Link Href="https://em/api/backupServers/bs-9" Name="vbr" Type="BackupServerReference" Rel="Up"/>
            <Link Href="https://em/api/jobs/1?action=start" Rel="Start"/></Links>
            <ScheduleEnabled>false</ScheduleEnabled><ScheduleConfigured>true</ScheduleConfigured></Job>"#;
        let j = job(&parse(body).unwrap()).unwrap();
        assert_eq!(j.backup_server.as_deref(), Some("bs-9"));
        assert!(j.schedule_configured && !j.schedule_enabled);
    }
}
