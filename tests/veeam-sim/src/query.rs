//! EM's query service: `GET /api/query?type=...&filter=...&format=Entities|References&pageSize=&page=`.
//!
//! Filters are `Property==value` / `Property!=value` terms joined with `;` (and) or `,` (or);
//! values may be double-quoted.

use std::time::UNIX_EPOCH;

use axum::http::StatusCode;

use crate::api::{backup_files_doc, paging_info, restore_points_doc};
use crate::state::{BackupFile, RestorePoint, State, urn};
use crate::xml::{self, document};

type Reply = (StatusCode, Vec<(&'static str, String)>, String);

fn fail(status: StatusCode, message: &str) -> Reply {
    (status, Vec::new(), xml::error(status.as_u16(), message))
}

struct Term {
    property: String,
    equal: bool,
    value: String,
}

/// OR of ANDs.
fn parse_filter(filter: &str) -> Result<Vec<Vec<Term>>, String> {
    let mut any = Vec::new();
    for alternative in filter.split(',') {
        let mut all = Vec::new();
        for term in alternative.split(';').filter(|t| !t.trim().is_empty()) {
            let (property, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, true, v)
            } else {
                return Err(format!("Unsupported filter term '{term}'"));
            };
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            all.push(Term {
                property: property.trim().to_string(),
                equal,
                value: value.to_string(),
            });
        }
        any.push(all);
    }
    Ok(any)
}

fn matches(
    filter: &[Vec<Term>],
    property: impl Fn(&str) -> Option<String>,
) -> Result<bool, String> {
    if filter.is_empty() {
        return Ok(true);
    }
    for all in filter {
        let mut ok = true;
        for term in all {
            let actual = property(&term.property)
                .ok_or_else(|| format!("Unknown filter property '{}'", term.property))?;
            if actual.eq_ignore_ascii_case(&term.value) != term.equal {
                ok = false;
            }
        }
        if ok {
            return Ok(true);
        }
    }
    Ok(false)
}

fn point_property(point: &RestorePoint, name: &str) -> Option<String> {
    Some(match name.to_ascii_lowercase().as_str() {
        "name" => crate::xml::point_name(point),
        "uid" => urn("VmRestorePoint", &point.guid),
        "vmname" | "vmdisplayname" => point.vm_name.clone(),
        "pointtype" => if point.full { "Full" } else { "Increment" }.into(),
        "jobname" => point.job_name.clone(),
        "hierarchyobjref" => point.vm_ref.clone(),
        _ => return None,
    })
}

fn file_property(file: &BackupFile, name: &str) -> Option<String> {
    Some(match name.to_ascii_lowercase().as_str() {
        "name" => file.file_name.clone(),
        "uid" => urn("BackupFile", &file.guid),
        "backupname" => file.backup_name.clone(),
        "backupuid" => urn("Backup", &file.job_guid),
        "filetype" => if file.full { "vbk" } else { "vib" }.into(),
        _ => return None,
    })
}

pub fn run(state: &State, query: &[(String, String)], base: &str) -> Reply {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let Some(kind) = param("type") else {
        return fail(StatusCode::BAD_REQUEST, "Parameter 'type' is required");
    };
    let filter = match parse_filter(param("filter").unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return fail(StatusCode::BAD_REQUEST, &e),
    };
    let entities = param("format").is_none_or(|f| f.eq_ignore_ascii_case("Entities"));
    let size: usize = match param("pageSize").map(str::parse) {
        None => 100,
        Some(Ok(n)) if n > 0 => n,
        _ => return fail(StatusCode::BAD_REQUEST, "Invalid pageSize"),
    };
    let page: usize = match param("page").map(str::parse) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        _ => return fail(StatusCode::BAD_REQUEST, "Invalid page"),
    };
    let (total, body) = match kind {
        "VmRestorePoint" => {
            let mut found = Vec::new();
            for point in &state.restore_points {
                match matches(&filter, |p| point_property(point, p)) {
                    Ok(true) => found.push(point),
                    Ok(false) => {}
                    Err(e) => return fail(StatusCode::BAD_REQUEST, &e),
                }
            }
            found.sort_by_key(|p| p.created.duration_since(UNIX_EPOCH).unwrap_or_default());
            let total = found.len();
            let slice: Vec<_> = found
                .into_iter()
                .skip((page - 1) * size)
                .take(size)
                .collect();
            let doc = restore_points_doc(state, base, &slice, entities, None);
            (total, inner_of(&doc))
        }
        "BackupFile" => {
            let mut found = Vec::new();
            for file in &state.backup_files {
                match matches(&filter, |p| file_property(file, p)) {
                    Ok(true) => found.push(file),
                    Ok(false) => {}
                    Err(e) => return fail(StatusCode::BAD_REQUEST, &e),
                }
            }
            let total = found.len();
            let slice: Vec<_> = found
                .into_iter()
                .skip((page - 1) * size)
                .take(size)
                .collect();
            (
                total,
                inner_of(&backup_files_doc(state, base, &slice, None)),
            )
        }
        other => {
            return fail(
                StatusCode::BAD_REQUEST,
                &format!("Query type '{other}' is not supported"),
            );
        }
    };
    let (wrapper, list) = match (kind, entities) {
        ("VmRestorePoint", true) => ("Entities", "VmRestorePoints"),
        ("BackupFile", _) => ("Entities", "BackupFiles"),
        _ => ("Refs", ""),
    };
    let list_xml = if list.is_empty() {
        body
    } else {
        format!("<{list}>{body}</{list}>")
    };
    let inner = format!(
        "<{wrapper}>{list_xml}</{wrapper}>{}",
        paging_info(page, size, total)
    );
    (
        StatusCode::OK,
        Vec::new(),
        document("QueryResult", "", &inner),
    )
}

/// The children of a rendered document's root element.
fn inner_of(doc: &str) -> String {
    let start = doc.find("?>").map(|i| i + 2).unwrap_or(0);
    let root_open_end = doc[start..]
        .find('>')
        .map(|i| start + i + 1)
        .unwrap_or(start);
    let close = doc.rfind("</").unwrap_or(doc.len());
    if root_open_end > close {
        return String::new();
    }
    doc[root_open_end..close].to_string()
}
