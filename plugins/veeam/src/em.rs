//! Enterprise Manager REST client: one logon per provider call, one re-logon on a 401, and a
//! logout at the end whatever happened (EM limits concurrent sessions).

use crate::error::{Error, Result};
use crate::model;

/// An HTTP request as the transport sends it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends HTTP requests (the host's `wasi:http` in the component, a socket in tests).
pub trait Transport {
    /// Transport-level failures (refused, timeout, TLS) come back as `Error::Unavailable`.
    fn send(&mut self, request: Request) -> Result<Response>;
}

const SESSION_HEADER: &str = "X-RestSvcSessionId";
pub const URL_SETTING: &str = "backup.plugin.veeam.url";
pub const USERNAME_SETTING: &str = "backup.plugin.veeam.username";
pub const PASSWORD_SETTING: &str = "backup.plugin.veeam.password";

struct Session {
    token: String,
    /// From the `LogonSession` body; the logout path needs it (the header token differs).
    id: Option<String>,
}

pub struct Em<T: Transport> {
    transport: T,
    /// `scheme://host:port/api`, without a trailing slash.
    base: String,
    username: String,
    password: String,
    session: Option<Session>,
    /// Requests sent, for measurements.
    pub requests: u32,
}

/// Checks `backup.plugin.veeam.url` and returns the API base without a trailing slash.
pub fn api_base(url: &str) -> Result<String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "{URL_SETTING} must start with https:// or http://, got '{url}'"
            ))
        })?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || url.contains(['?', '#', ' ']) {
        return Err(Error::InvalidConfig(format!(
            "{URL_SETTING} '{url}' is not a valid Enterprise Manager URL"
        )));
    }
    let mut base = url.trim_end_matches('/').to_string();
    if rest.trim_end_matches('/') == authority {
        base.push_str("/api");
    }
    Ok(base)
}

impl<T: Transport> Em<T> {
    pub fn new(transport: T, url: &str, username: &str, password: &str) -> Result<Em<T>> {
        if username.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "{USERNAME_SETTING} is not set"
            )));
        }
        Ok(Em {
            transport,
            base: api_base(url)?,
            username: username.to_string(),
            password: password.to_string(),
            session: None,
            requests: 0,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    fn send(&mut self, request: Request) -> Result<Response> {
        self.requests += 1;
        self.transport.send(request)
    }

    fn logon(&mut self) -> Result<()> {
        let response = self.send(Request {
            method: "POST",
            url: format!("{}/sessionMngr/?v=latest", self.base),
            headers: vec![(
                "Authorization",
                bnr_sdk::http::basic_auth_value(&self.username, &self.password),
            )],
            body: None,
        })?;
        match response.status {
            201 | 200 => {}
            401 | 403 => {
                return Err(Error::Unauthorized(format!(
                    "Enterprise Manager refused the logon of '{}': check {USERNAME_SETTING} and {PASSWORD_SETTING} \
                     (the account needs the Portal Administrator role)",
                    self.username
                )));
            }
            503 => return Err(Error::Unavailable(describe("logon", &response))),
            _ => {
                return Err(Error::Unavailable(format!(
                    "{}; is {URL_SETTING} ({}) the Enterprise Manager REST API?",
                    describe("logon", &response),
                    self.base
                )));
            }
        }
        let token = response.header(SESSION_HEADER).map(str::trim).unwrap_or("");
        if token.is_empty() {
            return Err(Error::Unavailable(format!(
                "the logon answer carried no {SESSION_HEADER} header; is {URL_SETTING} ({}) the Enterprise Manager REST API?",
                self.base
            )));
        }
        let body = response.text();
        let id = model::parse(&body)
            .ok()
            .and_then(|doc| model::logon_session_id(&doc));
        self.session = Some(Session {
            token: token.to_string(),
            id,
        });
        Ok(())
    }

    /// Sends one API request (path relative to the API root); logs on first when needed and
    /// once more if EM answers 401 (an expired session).
    pub fn call(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<String>,
    ) -> Result<Response> {
        if self.session.is_none() {
            self.logon()?;
        }
        let mut relogged = false;
        loop {
            let token = self
                .session
                .as_ref()
                .map(|s| s.token.clone())
                .unwrap_or_default();
            let mut headers = vec![(SESSION_HEADER, token)];
            if body.is_some() {
                headers.push(("Content-Type", "application/xml".to_string()));
            }
            let response = self.send(Request {
                method,
                url: format!("{}/{}", self.base, path.trim_start_matches('/')),
                headers,
                body: body.clone().map(String::into_bytes),
            })?;
            match response.status {
                200..=299 => return Ok(response),
                401 if !relogged => {
                    relogged = true;
                    self.session = None;
                    self.logon()?;
                }
                401 => return Err(Error::Unauthorized(describe(path, &response))),
                404 => return Err(Error::NotFound(describe(path, &response))),
                400 | 405 | 409 => return Err(Error::Rejected(describe(path, &response))),
                _ => return Err(Error::Unavailable(describe(path, &response))),
            }
        }
    }

    /// GET, parsed as XML by `read`.
    pub fn get<R>(
        &mut self,
        path: &str,
        read: impl FnOnce(&roxmltree::Document<'_>) -> Result<R>,
    ) -> Result<R> {
        let response = self.call("GET", path, None)?;
        let text = response.text();
        let doc = model::parse(&text)?;
        read(&doc)
    }

    /// POST/DELETE of an action that answers with a `Task`; returns its id.
    pub fn action(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<String>,
    ) -> Result<String> {
        let response = self.call(method, path, body)?;
        let text = response.text();
        let task = model::task(&model::parse(&text)?)?;
        if task.id.is_empty() {
            return Err(Error::Internal(format!(
                "Enterprise Manager answered {path} with a task without TaskId"
            )));
        }
        Ok(task.id)
    }

    /// Ends the EM session, if one was opened. Failures are ignored: the session expires anyway.
    pub fn logout(&mut self) {
        if let Some(session) = self.session.take()
            && let Some(id) = session.id
        {
            let _ = self.send(Request {
                method: "DELETE",
                url: format!("{}/logonSessions/{}", self.base, crate::ops::encode(&id)),
                headers: vec![(SESSION_HEADER, session.token)],
                body: None,
            });
        }
    }

    /// Runs `work` and always logs out afterwards.
    pub fn session<R>(&mut self, work: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let result = work(self);
        self.logout();
        result
    }
}

fn describe(what: &str, response: &Response) -> String {
    let text = response.text();
    let message = model::error_message(&text).unwrap_or_else(|| text.chars().take(200).collect());
    format!(
        "Enterprise Manager answered {what} with HTTP {}: {}",
        response.status,
        message.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_setting_is_checked() {
        assert_eq!(
            api_base("https://em:9398/api/").unwrap(),
            "https://em:9398/api"
        );
        assert_eq!(api_base("https://em:9398").unwrap(), "https://em:9398/api");
        assert!(matches!(
            api_base("em:9398/api"),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            api_base("https://user@em/api"),
            Err(Error::InvalidConfig(_))
        ));
    }
}
