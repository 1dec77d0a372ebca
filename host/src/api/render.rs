//! Response objects, command results, and their JSON / XML envelopes (wire-protocol §2).

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use crate::store::format_date;

/// The version string CloudStack puts on XML responses.
pub const CLOUD_STACK_VERSION: &str = "4.22.0.0";
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";
pub const XML_CONTENT_TYPE: &str = "text/xml; charset=UTF-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

/// One response object (`virtualmachine`, `zone`, …). Setters skip `None` (Gson omits nulls).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Obj(pub Map<String, Value>);

impl Obj {
    pub fn new() -> Self {
        Obj(Map::new())
    }
    pub fn str(mut self, k: &str, v: impl Into<String>) -> Self {
        self.0.insert(k.to_string(), Value::String(v.into()));
        self
    }
    pub fn opt_str(self, k: &str, v: Option<impl Into<String>>) -> Self {
        match v {
            Some(v) => self.str(k, v),
            None => self,
        }
    }
    pub fn int(mut self, k: &str, v: i64) -> Self {
        self.0.insert(k.to_string(), Value::from(v));
        self
    }
    pub fn opt_int(self, k: &str, v: Option<i64>) -> Self {
        match v {
            Some(v) => self.int(k, v),
            None => self,
        }
    }
    pub fn bool(mut self, k: &str, v: bool) -> Self {
        self.0.insert(k.to_string(), Value::Bool(v));
        self
    }
    /// A stored Unix timestamp as `yyyy-MM-dd'T'HH:mm:ss+0000`.
    pub fn date(self, k: &str, unix_seconds: i64) -> Self {
        self.str(k, format_date(unix_seconds))
    }
    pub fn opt_date(self, k: &str, v: Option<i64>) -> Self {
        match v {
            Some(v) => self.date(k, v),
            None => self,
        }
    }
    pub fn value(mut self, k: &str, v: Value) -> Self {
        if !v.is_null() {
            self.0.insert(k.to_string(), v);
        }
        self
    }
    pub fn objs(mut self, k: &str, items: Vec<Obj>) -> Self {
        self.0.insert(
            k.to_string(),
            Value::Array(items.into_iter().map(|o| Value::Object(o.0)).collect()),
        );
        self
    }
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

/// What a command produced; the api layer wraps it in the envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiResult {
    /// `{"<cmd>response": {"<object name>": {...}}}`
    Object(Obj),
    /// `{"<cmd>response": {"count": total, "<object name>": [...]}}`, or `{}` when empty.
    List { total: u64, items: Vec<Obj> },
    /// `{"<cmd>response": {"success": true}}` (+ `displaytext`).
    Success { display_text: Option<String> },
    /// Fields directly inside `<cmd>response` (queryAsyncJobResult, login, registerUserKeys' shape).
    Inline(Obj),
}

impl ApiResult {
    pub fn success() -> Self {
        ApiResult::Success { display_text: None }
    }

    pub fn list(listed: crate::store::query::Listed<Obj>) -> Self {
        ApiResult::List {
            total: listed.total,
            items: listed.items,
        }
    }

    /// The inner object of the `<cmd>response` envelope.
    pub fn body(&self, object_name: &str) -> Value {
        match self {
            ApiResult::Object(o) => json!({ object_name: o.0 }),
            // CloudStack omits `count` when it is 0 and the item key when the page is empty.
            ApiResult::List { total: 0, .. } => json!({}),
            ApiResult::List { total, items } if items.is_empty() => json!({ "count": total }),
            ApiResult::List { total, items } => {
                json!({ "count": total, object_name: items.iter().map(|o| &o.0).collect::<Vec<_>>() })
            }
            ApiResult::Success { display_text } => {
                let mut m = Map::new();
                m.insert("success".into(), Value::Bool(true));
                if let Some(t) = display_text {
                    m.insert("displaytext".into(), Value::String(t.clone()));
                }
                Value::Object(m)
            }
            ApiResult::Inline(o) => Value::Object(o.0.clone()),
        }
    }

    /// The `jobresult` of a successful async job: like [`ApiResult::body`] except that a
    /// success display text appears as `details`.
    pub fn job_result(&self, object_name: &str) -> Value {
        match self {
            ApiResult::Success { display_text } => {
                let mut m = Map::new();
                m.insert("success".into(), Value::Bool(true));
                if let Some(t) = display_text {
                    m.insert("details".into(), Value::String(t.clone()));
                }
                Value::Object(m)
            }
            other => other.body(object_name),
        }
    }
}

/// `<command lower-cased>response`.
pub fn response_name(command: &str) -> String {
    format!("{}response", command.to_lowercase())
}

/// The body of a successful answer: `{"<name>": <result's body>}` in JSON (written straight
/// into one buffer, no intermediate `Value`), or CloudStack's XML. The JSON is byte for byte
/// what rendering [`ApiResult::body`] through a `Value` gives (keys in order, as `Map` keeps them).
pub fn answer_body(name: &str, result: &ApiResult, object_name: &str, format: Format) -> Bytes {
    match format {
        Format::Json => {
            let mut out = Vec::with_capacity(512);
            let envelope = JsonEnvelope {
                name,
                result,
                object_name,
            };
            // Writing to a Vec only fails for a map key that is not a string; every key here is.
            if serde_json::to_writer(&mut out, &envelope).is_err() {
                out = ok_json(name, result.body(object_name)).into_bytes();
            }
            Bytes::from(out)
        }
        Format::Xml => Bytes::from(to_xml(name, &result.body(object_name))),
    }
}

fn ok_json(name: &str, body: Value) -> String {
    let mut m = Map::new();
    m.insert(name.to_string(), body);
    Value::Object(m).to_string()
}

/// A 200 answer whose body is already rendered.
pub fn rendered_response(body: Bytes, format: Format) -> Response {
    let content_type = match format {
        Format::Json => JSON_CONTENT_TYPE,
        Format::Xml => XML_CONTENT_TYPE,
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

struct JsonEnvelope<'a> {
    name: &'a str,
    result: &'a ApiResult,
    object_name: &'a str,
}

impl Serialize for JsonEnvelope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(
            self.name,
            &JsonBody {
                result: self.result,
                object_name: self.object_name,
            },
        )?;
        m.end()
    }
}

/// [`ApiResult::body`] without building it.
struct JsonBody<'a> {
    result: &'a ApiResult,
    object_name: &'a str,
}

impl Serialize for JsonBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let object_name = self.object_name;
        match self.result {
            ApiResult::Object(o) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(object_name, &o.0)?;
                m.end()
            }
            ApiResult::List { total: 0, .. } => s.serialize_map(Some(0))?.end(),
            ApiResult::List { total, items } if items.is_empty() || object_name == "count" => {
                let mut m = s.serialize_map(Some(1))?;
                if items.is_empty() {
                    m.serialize_entry("count", total)?;
                } else {
                    m.serialize_entry(object_name, &ObjList(items))?;
                }
                m.end()
            }
            ApiResult::List { total, items } => {
                // A `Map` orders its keys; keep that order.
                let mut m = s.serialize_map(Some(2))?;
                if object_name < "count" {
                    m.serialize_entry(object_name, &ObjList(items))?;
                    m.serialize_entry("count", total)?;
                } else {
                    m.serialize_entry("count", total)?;
                    m.serialize_entry(object_name, &ObjList(items))?;
                }
                m.end()
            }
            ApiResult::Success { display_text } => {
                let mut m = s.serialize_map(None)?;
                if let Some(t) = display_text {
                    m.serialize_entry("displaytext", t)?;
                }
                m.serialize_entry("success", &true)?;
                m.end()
            }
            ApiResult::Inline(o) => o.0.serialize(s),
        }
    }
}

struct ObjList<'a>(&'a [Obj]);

impl Serialize for ObjList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|o| &o.0))
    }
}

/// Renders `{"<name>": body}` in the requested format with status 200.
pub fn ok_response(name: &str, body: Value, format: Format) -> Response {
    envelope(StatusCode::OK, name, body, format)
}

/// The one error rendering: status = errorcode, body with `uuidList`, `errorcode`,
/// `cserrorcode` (when set), `errortext`, and the `X-Description` header.
pub fn error_response(err: &ApiError, name: &str, format: Format) -> Response {
    let mut m = Map::new();
    m.insert("uuidList".into(), Value::Array(Vec::new()));
    m.insert("errorcode".into(), Value::from(err.code));
    if let Some(cs) = err.cs_code {
        m.insert("cserrorcode".into(), Value::from(cs));
    }
    m.insert("errortext".into(), Value::String(err.text.clone()));
    let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = envelope(status, name, Value::Object(m), format);
    // Header values cannot carry control characters or non-visible bytes; keep it printable.
    let description: String = err
        .text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&description) {
        resp.headers_mut().insert("X-Description", v);
    }
    resp
}

fn envelope(status: StatusCode, name: &str, body: Value, format: Format) -> Response {
    let (content_type, text) = match format {
        Format::Json => (JSON_CONTENT_TYPE, ok_json(name, body)),
        Format::Xml => (XML_CONTENT_TYPE, to_xml(name, &body)),
    };
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        text,
    )
        .into_response()
}

/// CloudStack's XML rendering of a response: the envelope element carries `cloud-stack-version`;
/// object fields become child elements; a list becomes repeated elements named by its key.
pub fn to_xml(name: &str, body: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let tag = xml_name(name);
    out.push_str(&format!(
        "<{tag} cloud-stack-version=\"{CLOUD_STACK_VERSION}\">"
    ));
    if let Value::Object(m) = body {
        for (k, v) in m {
            xml_field(&mut out, k, v);
        }
    } else {
        xml_text(&mut out, body);
    }
    out.push_str(&format!("</{tag}>"));
    out
}

fn xml_field(out: &mut String, key: &str, v: &Value) {
    let tag = xml_name(key);
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                xml_field(out, key, item);
            }
        }
        Value::Object(m) => {
            out.push_str(&format!("<{tag}>"));
            for (k, v) in m {
                xml_field(out, k, v);
            }
            out.push_str(&format!("</{tag}>"));
        }
        scalar => {
            out.push_str(&format!("<{tag}>"));
            xml_text(out, scalar);
            out.push_str(&format!("</{tag}>"));
        }
    }
}

fn xml_text(out: &mut String, v: &Value) {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A literal CR would be read back as LF.
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            // Characters XML 1.0 cannot carry at all, not even as references.
            _ => out.push(char::REPLACEMENT_CHARACTER),
        }
    }
}

/// XML 1.0's `Char` production (Rust `char`s are never surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Keys come from code, but keep the output well-formed whatever they are.
fn xml_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_renders_as_well_formed_xml_that_reads_back(
            text in prop::collection::vec(
                prop_oneof![
                    any::<char>(),
                    Just('\u{FFFF}'),
                    Just('\u{FFFE}'),
                    (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
                ],
                0..40,
            ).prop_map(|cs| cs.into_iter().collect::<String>()),
        ) {
            let body = json!({"backup": [{"name": text.clone(), "description": text.clone()}]});
            let xml = to_xml("listbackupsresponse", &body);
            let doc = roxmltree::Document::parse(&xml).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let name = doc.descendants().find(|n| n.has_tag_name("name")).unwrap();
            let expected: String = text
                .chars()
                .map(|c| if is_xml_char(c) { c } else { char::REPLACEMENT_CHARACTER })
                .collect();
            prop_assert_eq!(name.text().unwrap_or(""), expected);
        }
    }

    #[test]
    fn answer_json_is_the_body_rendered_through_a_value() {
        let item = |id: &str| Obj::new().str("id", id).int("size", 7).bool("ok", true);
        let results = [
            ApiResult::Object(item("a")),
            ApiResult::List {
                total: 0,
                items: vec![],
            },
            ApiResult::List {
                total: 9,
                items: vec![],
            },
            ApiResult::List {
                total: 2,
                items: vec![item("a"), item("b\"<")],
            },
            ApiResult::Success { display_text: None },
            ApiResult::Success {
                display_text: Some("done".into()),
            },
            ApiResult::Inline(item("x")),
        ];
        // Object names before and after "count" in key order.
        for object_name in ["backup", "zone", "count"] {
            for r in &results {
                let expected = ok_json("listthingsresponse", r.body(object_name));
                let got = answer_body("listthingsresponse", r, object_name, Format::Json);
                assert_eq!(
                    std::str::from_utf8(&got).unwrap(),
                    expected,
                    "{r:?} {object_name}"
                );
                let xml = answer_body("listthingsresponse", r, object_name, Format::Xml);
                assert_eq!(xml, to_xml("listthingsresponse", &r.body(object_name)));
            }
        }
    }

    #[test]
    fn empty_list_is_an_empty_object() {
        let r = ApiResult::List {
            total: 0,
            items: vec![],
        };
        assert_eq!(r.body("zone"), json!({}));
    }

    #[test]
    fn list_count_is_the_total_not_the_page_length() {
        let r = ApiResult::List {
            total: 7,
            items: vec![Obj::new().str("id", "a")],
        };
        assert_eq!(r.body("zone"), json!({"count": 7, "zone": [{"id": "a"}]}));
    }

    #[test]
    fn job_success_text_is_details() {
        let r = ApiResult::Success {
            display_text: Some("x".into()),
        };
        assert_eq!(r.job_result("n"), json!({"success": true, "details": "x"}));
        assert_eq!(r.body("n"), json!({"success": true, "displaytext": "x"}));
    }

    #[test]
    fn xml_repeats_list_elements_and_escapes_text() {
        let body = json!({"count": 2, "zone": [{"id": "a", "name": "<x&y>"}, {"id": "b"}]});
        assert_eq!(
            to_xml("listzonesresponse", &body),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><listzonesresponse cloud-stack-version=\"4.22.0.0\">\
             <count>2</count><zone><id>a</id><name>&lt;x&amp;y&gt;</name></zone><zone><id>b</id></zone>\
             </listzonesresponse>"
        );
    }
}
