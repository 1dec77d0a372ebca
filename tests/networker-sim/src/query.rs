//! NetWorker's `q=` query language, as far as the resources here use it:
//! `field:value` clauses joined by `and`; values bare, `'quoted'` or `"quoted"`; ranges
//! `[a TO b]` (inclusive) and `{a TO b}` (exclusive) with `*` as an open end; `*` wildcards in
//! string values. The query arrives form-decoded (`+` is a space, `%XX` decoded).
//!
//! Clauses match the JSON the server renders: a dotted path (`size.value`, `resourceId.id`)
//! names a field; times compare as instants (a time without offset is in the server's zone),
//! numbers as numbers, free text (`comment`, `description`) by containment, other strings
//! exactly, all case-insensitively.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    Exact(String),
    Range {
        low: Option<String>,
        high: Option<String>,
        inclusive: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    pub field: String,
    pub term: Term,
    /// The value was written unquoted (matters for the leading-`-` quirk).
    pub bare: bool,
}

#[derive(Debug, PartialEq)]
pub struct QueryError(pub String);

/// Parses a decoded `q=` value.
pub fn parse(q: &str) -> Result<Vec<Clause>, QueryError> {
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0;
    let mut clauses = Vec::new();
    skip_ws(&chars, &mut i);
    if i == chars.len() {
        return Err(QueryError("empty query".into()));
    }
    loop {
        let start = i;
        while i < chars.len() && chars[i] != ':' && !chars[i].is_whitespace() {
            i += 1;
        }
        let field: String = chars[start..i].iter().collect();
        if field.is_empty() || i == chars.len() || chars[i] != ':' {
            return Err(QueryError(format!(
                "expected field:value at position {}",
                start + 1
            )));
        }
        if !field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        {
            return Err(QueryError(format!("invalid field name '{field}'")));
        }
        i += 1;
        let (term, bare) = match chars.get(i) {
            Some('[') | Some('{') => (range(&chars, &mut i)?, false),
            Some(_) => {
                let (value, bare) = value(&chars, &mut i)?;
                (Term::Exact(value), bare)
            }
            None => return Err(QueryError(format!("no value for '{field}'"))),
        };
        clauses.push(Clause { field, term, bare });
        skip_ws(&chars, &mut i);
        if i == chars.len() {
            return Ok(clauses);
        }
        let word_start = i;
        while i < chars.len() && !chars[i].is_whitespace() {
            i += 1;
        }
        let word: String = chars[word_start..i].iter().collect();
        if !word.eq_ignore_ascii_case("and") && word != "&&" {
            return Err(QueryError(format!(
                "expected 'and' at position {}, found '{word}'",
                word_start + 1
            )));
        }
        skip_ws(&chars, &mut i);
        if i == chars.len() {
            return Err(QueryError("query ends with 'and'".into()));
        }
    }
}

fn skip_ws(chars: &[char], i: &mut usize) {
    while *i < chars.len() && chars[*i].is_whitespace() {
        *i += 1;
    }
}

/// A quoted or bare value; bare values end at whitespace (or at `]`/`}` inside ranges).
fn value(chars: &[char], i: &mut usize) -> Result<(String, bool), QueryError> {
    match chars.get(*i) {
        Some(&q) if q == '\'' || q == '"' => {
            let start = *i + 1;
            let Some(len) = chars[start..].iter().position(|&c| c == q) else {
                return Err(QueryError(format!(
                    "unterminated quote at position {}",
                    *i + 1
                )));
            };
            *i = start + len + 1;
            Ok((chars[start..start + len].iter().collect(), false))
        }
        _ => {
            let start = *i;
            while *i < chars.len()
                && !chars[*i].is_whitespace()
                && chars[*i] != ']'
                && chars[*i] != '}'
            {
                *i += 1;
            }
            if *i == start {
                return Err(QueryError(format!(
                    "missing value at position {}",
                    start + 1
                )));
            }
            Ok((chars[start..*i].iter().collect(), true))
        }
    }
}

fn range(chars: &[char], i: &mut usize) -> Result<Term, QueryError> {
    let open = chars[*i];
    let close = if open == '[' { ']' } else { '}' };
    *i += 1;
    skip_ws(chars, i);
    let (low, _) = value(chars, i)?;
    skip_ws(chars, i);
    let to_start = *i;
    while *i < chars.len() && !chars[*i].is_whitespace() {
        *i += 1;
    }
    let to: String = chars[to_start..*i].iter().collect();
    if to != "TO" {
        return Err(QueryError(format!(
            "expected TO in range at position {}",
            to_start + 1
        )));
    }
    skip_ws(chars, i);
    let (high, _) = value(chars, i)?;
    skip_ws(chars, i);
    if chars.get(*i) != Some(&close) {
        return Err(QueryError(format!("range not closed by '{close}'")));
    }
    *i += 1;
    let open_end = |v: String| if v == "*" { None } else { Some(v) };
    Ok(Term::Range {
        low: open_end(low),
        high: open_end(high),
        inclusive: open == '[',
    })
}

/// Whether every clause matches `object`.
pub fn matches(clauses: &[Clause], object: &Value, tz: &TimeZone) -> bool {
    clauses.iter().all(|c| clause_matches(c, object, tz))
}

/// A cheap pre-check on a save set's identifying fields, so that a query by name or id does
/// not render every save set: `false` only when an exact clause on `name`, `id`, `shortId` or
/// the client certainly fails.
pub fn may_match_save_set(clauses: &[Clause], s: &crate::state::SaveSet) -> bool {
    clauses.iter().all(|c| {
        let Term::Exact(want) = &c.term else {
            return true;
        };
        if want.contains('*') {
            return true;
        }
        let ssid = s.ssid.to_string();
        let have = match c.field.as_str() {
            "name" => s.name.as_str(),
            "id" => s.id.as_str(),
            "shortId" => ssid.as_str(),
            "client" | "clientHostname" => s.client.as_str(),
            _ => return true,
        };
        have.eq_ignore_ascii_case(want)
    })
}

fn lookup<'a>(object: &'a Value, field: &str) -> Option<&'a Value> {
    // `client` is the short spelling of a backup's `clientHostname`.
    let field = match field {
        "client" if object.get("client").is_none() => "clientHostname",
        other => other,
    };
    let mut v = object;
    for part in field.split('.') {
        v = v.get(part)?;
    }
    Some(v)
}

fn clause_matches(clause: &Clause, object: &Value, tz: &TimeZone) -> bool {
    let Some(value) = lookup(object, &clause.field) else {
        return false;
    };
    let free_text = matches!(clause.field.as_str(), "comment" | "description");
    match value {
        Value::Array(items) => items
            .iter()
            .any(|item| scalar_matches(&clause.term, item, free_text, tz)),
        other => scalar_matches(&clause.term, other, free_text, tz),
    }
}

fn scalar_matches(term: &Term, value: &Value, free_text: bool, tz: &TimeZone) -> bool {
    match value {
        Value::String(s) => {
            if let Ok(t) = s.parse::<Timestamp>() {
                return time_matches(term, t, tz);
            }
            match term {
                Term::Exact(want) => text_matches(want, s, free_text),
                Term::Range {
                    low,
                    high,
                    inclusive,
                } => {
                    let s = s.to_lowercase();
                    let above = low.as_ref().is_none_or(|l| {
                        let l = l.to_lowercase();
                        if *inclusive { s >= l } else { s > l }
                    });
                    let below = high.as_ref().is_none_or(|h| {
                        let h = h.to_lowercase();
                        if *inclusive { s <= h } else { s < h }
                    });
                    above && below
                }
            }
        }
        Value::Number(n) => {
            let Some(n) = n.as_f64() else { return false };
            let num = |s: &str| s.parse::<f64>().ok();
            match term {
                Term::Exact(want) => num(want) == Some(n),
                Term::Range {
                    low,
                    high,
                    inclusive,
                } => {
                    let above = match low {
                        None => true,
                        Some(l) => num(l).is_some_and(|l| if *inclusive { n >= l } else { n > l }),
                    };
                    let below = match high {
                        None => true,
                        Some(h) => num(h).is_some_and(|h| if *inclusive { n <= h } else { n < h }),
                    };
                    above && below
                }
            }
        }
        Value::Bool(b) => {
            matches!(term, Term::Exact(want) if want.eq_ignore_ascii_case(&b.to_string()))
        }
        _ => false,
    }
}

fn text_matches(pattern: &str, text: &str, contains: bool) -> bool {
    let pattern = pattern.to_lowercase();
    let text = text.to_lowercase();
    if contains && !pattern.contains('*') {
        return text.contains(&pattern);
    }
    glob(&pattern, &text)
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (n, part) in parts.iter().enumerate() {
        if n == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if n == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(at) = rest.find(part) {
            rest = &rest[at + part.len()..];
        } else {
            return false;
        }
    }
    true
}

fn time_matches(term: &Term, t: Timestamp, tz: &TimeZone) -> bool {
    match term {
        Term::Exact(want) => parse_time(want, tz).is_some_and(|w| w.as_second() == t.as_second()),
        Term::Range {
            low,
            high,
            inclusive,
        } => {
            let bound = |v: &Option<String>| v.as_ref().map(|v| parse_time(v, tz));
            let (low, high) = (bound(low), bound(high));
            if matches!(low, Some(None)) || matches!(high, Some(None)) {
                return false;
            }
            let t = t.as_second();
            let above = low.flatten().is_none_or(|l| {
                if *inclusive {
                    t >= l.as_second()
                } else {
                    t > l.as_second()
                }
            });
            let below = high.flatten().is_none_or(|h| {
                if *inclusive {
                    t <= h.as_second()
                } else {
                    t < h.as_second()
                }
            });
            above && below
        }
    }
}

/// A query time: with an offset (`+03:00`, `Z`) it is exact; without, it is the server's local
/// time. A `+` sent unencoded arrives as a space and is read back as `+`.
pub fn parse_time(value: &str, tz: &TimeZone) -> Option<Timestamp> {
    let value = value.trim();
    if let Ok(t) = value.parse::<Timestamp>() {
        return Some(t);
    }
    if let Some((date, offset)) = value.split_once(' ')
        && let Ok(t) = format!("{date}+{offset}").parse::<Timestamp>()
    {
        return Some(t);
    }
    let civil: jiff::civil::DateTime = value.parse().ok()?;
    civil.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::Offset;
    use serde_json::json;

    fn tz() -> TimeZone {
        TimeZone::fixed(Offset::from_seconds(3 * 3600).unwrap())
    }

    #[test]
    fn cloudstacks_queries_parse() {
        let q =
            parse("name:i-2-15-VM and saveTime:['2022-07-12T05:00:00' TO '2022-07-12T06:00:00']")
                .unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].term, Term::Exact("i-2-15-VM".into()));
        assert!(matches!(
            &q[1].term,
            Term::Range {
                inclusive: true,
                ..
            }
        ));
        assert!(parse("comment:-CSBKP-").unwrap()[0].bare);
        assert!(parse("name:'open").is_err());
        assert!(parse("name:a or name:b").is_err());
        assert!(parse("name:a and").is_err());
        assert!(parse("saveTime:['a' 'b']").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn times_compare_as_instants_and_naive_times_are_server_local() {
        let obj = json!({"name": "i-2-15-VM", "saveTime": "2022-07-12T05:02:03+03:00",
                         "size": {"value": 100}, "comment": "Gold -CSBKP- tier"});
        let yes = |q: &str| matches(&parse(q).unwrap(), &obj, &tz());
        assert!(yes("saveTime:'2022-07-12T05:02:03'"));
        assert!(yes("saveTime:'2022-07-12T02:02:03Z'"));
        assert!(yes("saveTime:'2022-07-12T05:02:03 03:00'"));
        assert!(!yes("saveTime:'2022-07-12T05:02:04'"));
        assert!(yes(
            "saveTime:['2022-07-12T05:02:03' TO '2022-07-12T05:02:03']"
        ));
        assert!(!yes("saveTime:{'2022-07-12T05:02:03' TO *}"));
        assert!(yes("saveTime:['2022-07-12T05:00:00' TO *]"));
        assert!(!yes("saveTime:['not a time' TO *]"));
        assert!(yes("name:I-2-15-vm and size.value:[50 TO 100]"));
        assert!(yes("name:i-2-*"));
        assert!(!yes("name:i-2-1"));
        assert!(yes("comment:-CSBKP-"));
        assert!(!yes("missing:x"));
    }
}
