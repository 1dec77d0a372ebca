//! Request parameters: merging query string and form body (first value wins), case-insensitive
//! names, `name[i].field` maps, and binding against a command's declarations.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::store::db::OptionalExtension;

use super::error::ApiError;
use super::registry::{Command, DEFAULT_PAGE_SIZE, MAX_MAP_ENTRIES, ParamType, Value};
use crate::store::{OpError, Store};

/// Most distinct parameters accepted in one request (bounds parsing and signing work).
pub const MAX_PARAMS: usize = 1024;

/// Map parameters: lower-cased name → index → field (case kept) → value.
type MapParams = HashMap<String, BTreeMap<u32, BTreeMap<String, String>>>;

/// Parameters as received: exact names, first value per exact name, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct RawParams {
    pub pairs: Vec<(String, String)>,
}

impl RawParams {
    /// Query string first, then the urlencoded body; a name seen again is ignored.
    pub fn parse(query: Option<&str>, body: Option<&[u8]>) -> Result<RawParams, ApiError> {
        /// Up to this many names a repeated one is found by scanning (every real request);
        /// past it, with a set (bounded work for a hostile one).
        const SCAN_LIMIT: usize = 32;
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut seen: Option<HashSet<String>> = None;
        let sources = query.map(str::as_bytes).into_iter().chain(body);
        for source in sources {
            for (k, v) in form_urlencoded::parse(source) {
                if k.is_empty() {
                    continue;
                }
                if pairs.len() == SCAN_LIMIT && seen.is_none() {
                    seen = Some(pairs.iter().map(|(name, _)| name.clone()).collect());
                }
                let repeated = match &seen {
                    Some(seen) => seen.contains(&*k),
                    None => pairs.iter().any(|(name, _)| *name == *k),
                };
                if repeated {
                    continue;
                }
                if pairs.len() >= MAX_PARAMS {
                    return Err(ApiError::param(format!(
                        "Too many parameters (more than {MAX_PARAMS})"
                    )));
                }
                if let Some(seen) = &mut seen {
                    seen.insert(k.to_string());
                }
                pairs.push((k.into_owned(), v.into_owned()));
            }
        }
        Ok(RawParams { pairs })
    }

    /// Exact-name lookup.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Case-insensitive lookup (first match in arrival order).
    pub fn get_ci(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// API parameters by lower-cased name (first wins) and map parameters
    /// (`name[i].field`: lower-cased name → index → field (case kept) → value).
    fn normalized(&self) -> (HashMap<String, &str>, MapParams) {
        let mut plain: HashMap<String, &str> = HashMap::new();
        let mut maps: MapParams = HashMap::new();
        for (k, v) in &self.pairs {
            if let Some((base, index, field)) = split_map_key(k) {
                let entry = maps
                    .entry(base.to_lowercase())
                    .or_default()
                    .entry(index)
                    .or_default();
                entry.entry(field.to_string()).or_insert_with(|| v.clone());
            } else {
                plain.entry(k.to_lowercase()).or_insert(v.as_str());
            }
        }
        (plain, maps)
    }
}

/// `name[12].field` → (`name`, 12, `field`).
fn split_map_key(k: &str) -> Option<(&str, u32, &str)> {
    let open = k.find('[')?;
    let close = open + k[open..].find(']')?;
    let index: u32 = k[open + 1..close].parse().ok()?;
    let field = k[close + 1..].strip_prefix('.')?;
    if open == 0 || field.is_empty() {
        return None;
    }
    Some((&k[..open], index, field))
}

/// Validates and converts every declared parameter of `cmd`; UUIDs are resolved to internal ids
/// in one read. Missing required → 431 missing parameter; bad value or unknown entity → 431.
pub async fn bind(
    cmd: &Command,
    raw: &RawParams,
    store: &Store,
) -> Result<HashMap<String, Value>, ApiError> {
    let (plain, maps) = raw.normalized();
    let mut out: HashMap<String, Value> = HashMap::new();
    let mut lookups: Vec<(String, &'static str, String, String)> = Vec::new();
    for p in &cmd.params {
        if p.ty == ParamType::Map {
            match maps.get(&p.name) {
                Some(entries) if !entries.is_empty() => {
                    if entries.len() > MAX_MAP_ENTRIES {
                        return Err(ApiError::param(format!(
                            "Too many entries for parameter {} (more than {MAX_MAP_ENTRIES})",
                            p.name
                        )));
                    }
                    for entry in entries.values() {
                        for (field, value) in entry {
                            if field.len() > p.length || value.len() > p.length {
                                return Err(too_long(p.length, &p.name));
                            }
                        }
                    }
                    out.insert(
                        p.name.clone(),
                        Value::Map(entries.values().cloned().collect()),
                    );
                }
                _ if p.required => return Err(ApiError::missing_param(&cmd.name, &p.name)),
                _ => {}
            }
            continue;
        }
        let value = match plain.get(&p.name) {
            Some(v) if !v.is_empty() || p.ty == ParamType::String => *v,
            _ if p.required => return Err(ApiError::missing_param(&cmd.name, &p.name)),
            _ => continue,
        };
        if p.required && value.is_empty() {
            return Err(ApiError::missing_param(&cmd.name, &p.name));
        }
        if value.chars().count() > p.length {
            return Err(too_long(p.length, &p.name));
        }
        let invalid = || ApiError::invalid_value(&cmd.name, &p.name, value);
        let bound = match p.ty {
            ParamType::String => Value::Str(value.to_string()),
            ParamType::Boolean => match value.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(invalid()),
            },
            ParamType::Integer => {
                Value::Int(value.trim().parse::<i32>().map_err(|_| invalid())?.into())
            }
            ParamType::Long => Value::Int(value.trim().parse::<i64>().map_err(|_| invalid())?),
            ParamType::Date => Value::Date(parse_date(value).ok_or_else(invalid)?),
            ParamType::List => Value::List(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            ParamType::Uuid(entity) => {
                let parsed = uuid::Uuid::try_parse(value.trim()).map_err(|_| invalid())?;
                lookups.push((
                    p.name.clone(),
                    entity.table,
                    parsed.hyphenated().to_string(),
                    value.to_string(),
                ));
                continue;
            }
            ParamType::Map => unreachable_map(),
        };
        out.insert(p.name.clone(), bound);
    }
    check_paging(cmd, &out)?;
    if !lookups.is_empty() {
        // Unique-index lookups, a few per request: run them in place (see `Store::read_now`).
        let ids: Vec<Option<i64>> = store.read_now(|c| {
            let mut ids = Vec::with_capacity(lookups.len());
            for (_, table, uuid, _) in &lookups {
                let id: Option<i64> = c
                    .prepare_cached(&format!("SELECT id FROM {table} WHERE uuid = ?1"))?
                    .query_row([uuid], |r| r.get(0))
                    .optional()?;
                ids.push(id);
            }
            Ok::<_, OpError>(ids)
        })?;
        for ((name, _, uuid, given), id) in lookups.into_iter().zip(ids) {
            match id {
                Some(id) => {
                    out.insert(name, Value::Uuid { uuid, id });
                }
                None => return Err(ApiError::invalid_value(&cmd.name, &name, &given)),
            }
        }
    }
    Ok(out)
}

// Map parameters are handled before the scalar match; keep the match exhaustive without panicking.
fn unreachable_map() -> Value {
    Value::Map(Vec::new())
}

fn too_long(length: usize, name: &str) -> ApiError {
    ApiError::param(format!(
        "Value greater than max allowed length {length} for param: {name}"
    ))
}

fn check_paging(cmd: &Command, out: &HashMap<String, Value>) -> Result<(), ApiError> {
    if let Some(Value::Int(page)) = out.get("page")
        && *page < 1
    {
        return Err(ApiError::param("Page must be a positive integer"));
    }
    if let Some(Value::Int(size)) = out.get("pagesize") {
        if *size == 0 || *size < -1 {
            return Err(ApiError::param(
                "Page size must be a positive integer or -1",
            ));
        }
        if *size > DEFAULT_PAGE_SIZE as i64 {
            return Err(ApiError::param(format!(
                "Page size can't exceed max allowed page size value: {DEFAULT_PAGE_SIZE}"
            )));
        }
    }
    let _ = cmd;
    Ok(())
}

/// `yyyy-MM-dd` (start of day UTC), `yyyy-MM-dd HH:mm:ss` (UTC), or any `expires` form.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(ts) = super::signature::parse_expires(s) {
        return Some(ts);
    }
    let (date, time) = match s.split_once(' ') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (y, m, day) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() {
        return None;
    }
    let (hh, mm, ss) = match time {
        None => (0, 0, 0),
        Some(t) => {
            let mut p = t.split(':');
            let v = (
                p.next()?.parse().ok()?,
                p.next()?.parse().ok()?,
                p.next()?.parse().ok()?,
            );
            if p.next().is_some() {
                return None;
            }
            v
        }
    };
    jiff::civil::DateTime::new(y, m, day, hh, mm, ss, 0)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_wins_over_body_and_first_value_wins() {
        let raw = RawParams::parse(Some("a=1&a=2&b=x+y"), Some(b"a=3&c=%41")).unwrap();
        assert_eq!(raw.get("a"), Some("1"));
        assert_eq!(raw.get("b"), Some("x y"));
        assert_eq!(raw.get("c"), Some("A"));
    }

    #[test]
    fn the_first_value_wins_with_many_names_too() {
        // Past the scanned prefix the repeated names are found through the set.
        let names: Vec<String> = (0..100).map(|i| format!("p{i}={i}")).collect();
        let query = format!("{}&p3=x&p70=y", names.join("&"));
        let raw = RawParams::parse(Some(&query), Some(b"p99=z&p100=w")).unwrap();
        assert_eq!(raw.pairs.len(), 101);
        assert_eq!(raw.get("p3"), Some("3"));
        assert_eq!(raw.get("p70"), Some("70"));
        assert_eq!(raw.get("p99"), Some("99"));
        assert_eq!(raw.get("p100"), Some("w"));
        let too_many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("q{i}=1")).collect();
        assert!(RawParams::parse(Some(&too_many.join("&")), None).is_err());
    }

    #[test]
    fn map_keys_split_into_name_index_field() {
        assert_eq!(
            split_map_key("maxSchedules[0].DAILY"),
            Some(("maxSchedules", 0, "DAILY"))
        );
        assert_eq!(split_map_key("x[a].b"), None);
        assert_eq!(split_map_key("[0].b"), None);
        assert_eq!(split_map_key("x[0]"), None);
    }

    #[test]
    fn dates_in_list_filters() {
        assert_eq!(parse_date("2024-05-01"), Some(1_714_521_600));
        assert_eq!(parse_date("2024-05-01 10:20:30"), Some(1_714_558_830));
        assert_eq!(parse_date("2024-02-30"), None);
        assert_eq!(parse_date("yesterday"), None);
    }
}
