//! The NetWorker REST client: Basic auth on every request, JSON, `q=` queries URL-encoded.
//!
//! One client per provider call, which probes the base URL once before its first request
//! (CloudStack's plugin probes once per request).

use crate::error::{Error, Result};
use crate::model::{self, ProtectionPolicy, SaveSet};
use crate::time;

/// One HTTP request, as the transport sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends requests (the host's `wasi:http` in the component, a socket in native tests).
pub trait Transport {
    fn send(&mut self, request: Request) -> Result<Response>;
}

/// A NetWorker server at `base` (e.g. `https://nw:9090/nwrestapi/v3`).
pub struct Client<T: Transport> {
    base: String,
    authorization: String,
    transport: T,
    probed: bool,
    /// Requests sent, the probe included (for measurements).
    pub requests: u32,
}

impl<T: Transport> Client<T> {
    pub fn new(base: &str, username: &str, password: &str, transport: T) -> Client<T> {
        Client {
            base: base.trim_end_matches('/').to_string(),
            authorization: bnr_sdk::http::basic_auth_value(username, password),
            transport,
            probed: false,
            requests: 0,
        }
    }

    fn send(&mut self, method: &'static str, path_and_query: &str) -> Result<Response> {
        let url = format!("{}{path_and_query}", self.base);
        self.requests += 1;
        self.transport.send(Request {
            method,
            url,
            headers: vec![
                ("Authorization".into(), self.authorization.clone()),
                ("Accept".into(), "application/json".into()),
                ("User-Agent".into(), "bnr-networker".into()),
            ],
        })
    }

    /// `GET {base}`: the credentials work and the server answers.
    fn probe(&mut self) -> Result<()> {
        if self.probed {
            return Ok(());
        }
        let response = self.send("GET", "")?;
        check(&response, "the API root")?;
        self.probed = true;
        Ok(())
    }

    fn get(&mut self, path: &str, query: Option<&str>) -> Result<Vec<u8>> {
        self.probe()?;
        let target = match query {
            Some(q) => format!("{path}?q={}", encode(q)),
            None => path.to_string(),
        };
        let response = self.send("GET", &target)?;
        check(&response, path)?;
        Ok(response.body)
    }

    /// Protection policies whose comment carries [`model::OFFERING_MARKER`].
    pub fn offered_policies(&mut self) -> Result<Vec<ProtectionPolicy>> {
        // Quoted, so a leading `-` is a literal and not the query language's negation.
        let body = self.get(
            "/global/protectionpolicies/",
            Some(&format!("comment:\"{}\"", model::OFFERING_MARKER)),
        )?;
        // As CloudStack's plugin: a policy whose *name* carries the marker is not offered.
        Ok(model::policies(&body)?
            .into_iter()
            .filter(|p| {
                p.comment.contains(model::OFFERING_MARKER)
                    && !p.name.contains(model::OFFERING_MARKER)
            })
            .collect())
    }

    /// Save sets of an instance (by its internal name).
    pub fn save_sets_of(&mut self, name: &str) -> Result<Vec<SaveSet>> {
        let body = self.get("/global/backups/", Some(&format!("name:\"{name}\"")))?;
        Ok(model::save_sets(&body)?
            .into_iter()
            .filter(|s| s.name == name)
            .collect())
    }

    /// Save sets of an instance saved at exactly `save_time` (Unix seconds).
    pub fn save_sets_at(&mut self, name: &str, save_time: i64) -> Result<Vec<SaveSet>> {
        let q = format!(
            "name:\"{name}\" and saveTime:\"{}\"",
            time::format_utc(save_time)
        );
        let body = self.get("/global/backups/", Some(&q))?;
        // Exact, whatever the server's matching: same name, same second.
        Ok(model::save_sets(&body)?
            .into_iter()
            .filter(|s| s.name == name && s.save_time == save_time)
            .collect())
    }

    /// The save set with this id, if NetWorker still has it.
    pub fn save_set(&mut self, id: &str) -> Result<Option<SaveSet>> {
        let body = self.get("/global/backups/", Some(&format!("id:\"{id}\"")))?;
        Ok(model::save_sets(&body)?.into_iter().find(|s| s.id == id))
    }

    /// Deletes a save set; `false` when NetWorker no longer has it.
    pub fn delete_save_set(&mut self, id: &str) -> Result<bool> {
        self.probe()?;
        let response = self.send("DELETE", &format!("/global/backups/{}", encode(id)))?;
        if response.status == 404 {
            return Ok(false);
        }
        check(&response, "/global/backups/{id}")?;
        Ok(true)
    }
}

/// 200/201/202/204 are success; everything else is an error of the matching kind.
fn check(response: &Response, what: &str) -> Result<()> {
    let status = response.status;
    let detail = || {
        let text = String::from_utf8_lossy(&response.body);
        model::truncate(text.trim(), 300).to_string()
    };
    match status {
        200..=204 => Ok(()),
        401 | 403 => Err(Error::Unauthorized(format!(
            "NetWorker refused the credentials (HTTP {status} on {what}); check \
             backup.plugin.networker.username and .password"
        ))),
        404 => Err(Error::NotFound(format!(
            "NetWorker has no {what} (HTTP 404)"
        ))),
        408 | 429 | 500..=599 => Err(Error::Unavailable(format!(
            "NetWorker answered HTTP {status} on {what}: {}",
            detail()
        ))),
        _ => Err(Error::Rejected(format!(
            "NetWorker answered HTTP {status} on {what}: {}",
            detail()
        ))),
    }
}

/// Percent-encoding of a query value: everything but RFC 3986's unreserved characters.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode("name:\"i-2-3-VM\" and saveTime:\"2022-07-12T02:02:03+00:00\""),
            "name%3A%22i-2-3-VM%22%20and%20saveTime%3A%222022-07-12T02%3A02%3A03%2B00%3A00%22"
        );
    }
}
