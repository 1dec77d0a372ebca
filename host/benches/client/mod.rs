//! The load client the API benches share: `cs`-style signed requests (signature version 3)
//! over minimal keep-alive HTTP/1.1 connections, the same for every server measured.

#![allow(dead_code, reason = "each bench uses a subset")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The root admin's keys every bench server is bootstrapped with.
pub const API_KEY: &str = "bench-api-key";
pub const SECRET_KEY: &str = "bench-secret-key";

/// Warm-up before a throughput run starts counting.
pub const WARM_UP: Duration = Duration::from_millis(500);

/// The cargo target directory the bench binary was built in (`target/providers` is there).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("bench binary path");
            exe.ancestors()
                .nth(3)
                .expect("<target>/<profile>/deps")
                .to_path_buf()
        })
}

/// Java `URLEncoder` + `%20`, upper-case hex: what CloudStack (and `cs`) sign.
pub fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A `cs`-style signed request path (signature version 3, expiring in an hour).
pub fn signed(command: &str, params: &[(&str, &str)]) -> String {
    let expires = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 3600)
        .expect("timestamp")
        .strftime("%Y-%m-%dT%H:%M:%S+0000")
        .to_string();
    let mut all: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("command".into(), command.into()));
    all.push(("response".into(), "json".into()));
    all.push(("apiKey".into(), API_KEY.into()));
    all.push(("signatureVersion".into(), "3".into()));
    all.push(("expires".into(), expires));
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let unsigned = sorted
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .to_lowercase();
    let mut mac = Hmac::<Sha1>::new_from_slice(SECRET_KEY.as_bytes()).expect("hmac");
    mac.update(unsigned.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    all.push(("signature".into(), sig));
    let query = all
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!("/client/api?{query}")
}

/// One keep-alive HTTP/1.1 connection; the servers answer with `content-length`.
pub struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream: BufReader::new(stream),
            host: addr.to_string(),
        }
    }

    /// GET `path`; returns (status, body).
    pub async fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .expect("write");
        let mut line = String::new();
        self.stream.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.expect("header");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.expect("body");
        (status, body)
    }
}

/// One keep-alive connection to each of several servers, used in turn (round-robin), starting
/// at a different server for each client so that the load spreads evenly from the first request.
pub struct RoundRobin {
    conns: Vec<Conn>,
    next: usize,
}

impl RoundRobin {
    pub async fn open(addrs: &[SocketAddr], first: usize) -> RoundRobin {
        let mut conns = Vec::with_capacity(addrs.len());
        for addr in addrs {
            conns.push(Conn::open(*addr).await);
        }
        RoundRobin {
            next: first % conns.len(),
            conns,
        }
    }

    /// GET `path` on the next server.
    pub async fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        let this = self.next;
        self.next = (this + 1) % self.conns.len();
        self.conns[this].get(path).await
    }
}

pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON body")
}

/// Requests per second over `run` (after [`WARM_UP`]) with `connections` clients sending `path`
/// in a loop, each spreading its requests over `addrs` round-robin. Every answer must be 200.
pub async fn throughput(
    addrs: &[SocketAddr],
    path: &str,
    connections: usize,
    run: Duration,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..connections {
        let (done, stop, path, addrs) =
            (done.clone(), stop.clone(), path.to_string(), addrs.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut conns = RoundRobin::open(&addrs, client).await;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = conns.get(&path).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(run).await;
    let counted = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    counted as f64 / elapsed.as_secs_f64()
}
