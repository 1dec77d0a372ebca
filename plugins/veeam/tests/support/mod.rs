//! What the native tests and the bench share: plain HTTP over a socket (timed), the
//! simulator's PowerShell side called directly, and a sleeping clock.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bnr_veeam::em::{Request, Response, Transport};
use bnr_veeam::error::{Error, Result};
use bnr_veeam::ops::Clock;
use bnr_veeam::ps::{Shell, ShellOutput};
use veeam_sim::Running;

/// Plain HTTP/1.1, one connection per request; `spent` adds up the time requests took.
#[derive(Default)]
pub struct Http {
    pub spent: Duration,
    pub bytes: u64,
}

impl Transport for Http {
    fn send(&mut self, request: Request) -> Result<Response> {
        let started = Instant::now();
        let response = send(request);
        self.spent += started.elapsed();
        if let Ok(r) = &response {
            self.bytes += r.body.len() as u64;
        }
        response
    }
}

fn send(request: Request) -> Result<Response> {
    {
        let rest = request
            .url
            .strip_prefix("http://")
            .expect("plain http in these tests");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut stream =
            TcpStream::connect(authority).map_err(|e| Error::Unavailable(e.to_string()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = request.body.unwrap_or_default();
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
            request.method,
            body.len()
        );
        for (k, v) in &request.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("response head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok(Response {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        })
    }
}

pub struct SimShell<'a>(pub &'a Running);

impl Shell for SimShell<'_> {
    fn run(&mut self, script: &str) -> Result<ShellOutput> {
        let sim = &self.0.sim;
        let wait = {
            let mut state = sim.state.lock().unwrap();
            veeam_sim::powershell::exec(
                &mut state,
                sim.shell,
                bnr_veeam::ps::COMMAND,
                script,
                std::time::Instant::now(),
            )
        };
        let out = match wait {
            veeam_sim::powershell::Wait::Now(out) => out,
            veeam_sim::powershell::Wait::RestoreSession { then, .. } => {
                then(&sim.state.lock().unwrap())
            }
        };
        Ok(ShellOutput {
            exit: out.exit as i32,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

pub struct Sleep;

impl Clock for Sleep {
    fn sleep_ms(&mut self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}
