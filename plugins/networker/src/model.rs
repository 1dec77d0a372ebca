//! NetWorker's JSON objects, the fields the provider reads (unknown fields are ignored).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::time;

/// The comment marker of policies offered to bnr (as CloudStack's plugin uses it).
pub const OFFERING_MARKER: &str = "-CSBKP-";

/// A protection policy (`/global/protectionpolicies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionPolicy {
    pub name: String,
    /// `resourceId.id`: the offering's external id.
    pub id: String,
    pub comment: String,
    /// `policyProtectionPeriod`, e.g. `7 Days`.
    pub period: String,
}

/// A save set (`/global/backups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveSet {
    pub id: String,
    /// The SSID `recover -S` takes.
    pub short_id: String,
    /// The instance's internal name (`save -N`).
    pub name: String,
    /// The cluster client (`save -c`).
    pub client: String,
    pub kind: String,
    pub save_time: i64,
    /// Unset while the save is still running.
    pub completion_time: Option<i64>,
    pub retention_time: Option<i64>,
    /// Bytes.
    pub size: u64,
}

impl SaveSet {
    /// Whether its retention has passed at `now` (NetWorker still lists it until it is purged).
    pub fn expired(&self, now: i64) -> bool {
        self.retention_time.is_some_and(|t| t <= now)
    }
}

fn parse_json(body: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| {
        Error::Internal(format!(
            "NetWorker answered {what} with malformed JSON: {e}"
        ))
    })
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// `{"protectionPolicies": [...], "count": n}`; no list means none.
pub fn policies(body: &[u8]) -> Result<Vec<ProtectionPolicy>> {
    let json = parse_json(body, "the protection policy list")?;
    let Some(list) = json["protectionPolicies"].as_array() else {
        return Ok(Vec::new());
    };
    Ok(list
        .iter()
        .filter_map(|p| {
            let id = text(&p["resourceId"], "id");
            let name = text(p, "name");
            (!id.is_empty() && !name.is_empty()).then(|| ProtectionPolicy {
                name,
                id,
                comment: text(p, "comment"),
                period: text(p, "policyProtectionPeriod"),
            })
        })
        .collect())
}

/// Bytes of a `size` object (`{"unit": "Byte", "value": 658580844}`).
fn bytes(size: &Value) -> Result<u64> {
    let value = size["value"].as_u64().unwrap_or(0);
    let unit = size["unit"].as_str().unwrap_or("Byte").to_ascii_lowercase();
    let factor: u64 = match unit.trim_end_matches('s') {
        "byte" | "b" | "" => 1,
        "kb" | "kilobyte" => 1 << 10,
        "mb" | "megabyte" => 1 << 20,
        "gb" | "gigabyte" => 1 << 30,
        "tb" | "terabyte" => 1 << 40,
        other => {
            return Err(Error::Internal(format!(
                "NetWorker reported a save-set size in an unknown unit `{other}`"
            )));
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| Error::Internal("NetWorker reported an impossible save-set size".into()))
}

/// `{"backups": [...], "count": n}`; no list means none.
pub fn save_sets(body: &[u8]) -> Result<Vec<SaveSet>> {
    let json = parse_json(body, "the backup list")?;
    let Some(list) = json["backups"].as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|b| {
            let id = text(b, "id");
            let save_time = time::parse(&text(b, "saveTime"));
            let (Some(save_time), false) = (save_time, id.is_empty()) else {
                return Err(Error::Internal(format!(
                    "NetWorker listed a save set without an id or a valid saveTime: {}",
                    truncate(&b.to_string(), 300)
                )));
            };
            let optional_time = |key: &str| {
                let raw = text(b, key);
                if raw.is_empty() {
                    Ok(None)
                } else {
                    time::parse(&raw).map(Some).ok_or_else(|| {
                        Error::Internal(format!("save set {id} has a malformed {key} `{raw}`"))
                    })
                }
            };
            Ok(SaveSet {
                short_id: text(b, "shortId"),
                name: text(b, "name"),
                client: text(b, "clientHostname"),
                kind: text(b, "type"),
                save_time,
                completion_time: optional_time("completionTime")?,
                retention_time: optional_time("retentionTime")?,
                size: bytes(&b["size"])?,
                id,
            })
        })
        .collect()
}

pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKUP: &str = r#"{ "count": 1, "backups": [ {
        "clientHostname": "C1", "completionTime": "2022-07-12T05:02:06+03:00",
        "creationTime": "2022-07-12T05:02:03+03:00",
        "id": "d371d629-00000006-84ccd61b-62ccd61b-007d1500-5a80015d",
        "level": "Manual", "name": "i-2-15-VM", "retentionTime": "2152-02-29T13:11:11+02:00",
        "saveTime": "2022-07-12T05:02:03+03:00", "shortId": "2228016667",
        "size": {"unit": "Byte", "value": 658580844}, "type": "File", "extra": [1] } ] }"#;

    #[test]
    fn a_save_set_is_read_with_offsets_and_bytes() {
        let sets = save_sets(BACKUP.as_bytes()).unwrap();
        assert_eq!(sets.len(), 1);
        let s = &sets[0];
        assert_eq!(s.short_id, "2228016667");
        assert_eq!(s.client, "C1");
        assert_eq!(s.save_time, 1_657_591_323);
        assert_eq!(s.completion_time, Some(1_657_591_326));
        assert_eq!(s.size, 658_580_844);
        assert!(!s.expired(1_657_591_323));
    }

    #[test]
    fn empty_answers_and_units() {
        assert!(save_sets(br#"{"count":0}"#).unwrap().is_empty());
        assert!(policies(br#"{"count":0}"#).unwrap().is_empty());
        assert_eq!(
            bytes(&serde_json::json!({"unit": "KB", "value": 2})).unwrap(),
            2048
        );
        assert!(bytes(&serde_json::json!({"unit": "parsecs", "value": 2})).is_err());
        assert!(save_sets(b"<html>").is_err());
    }

    #[test]
    fn policies_carry_their_id_and_period() {
        let body = br#"{"count":1,"protectionPolicies":[{"comment":"-CSBKP-","name":"CSBRONZE",
            "policyProtectionPeriod":"1 Days","resourceId":{"id":"50.0.224.7","sequence":15}}]}"#;
        let p = policies(body).unwrap();
        assert_eq!(p[0].id, "50.0.224.7");
        assert_eq!(p[0].period, "1 Days");
    }
}
