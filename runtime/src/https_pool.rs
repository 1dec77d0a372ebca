//! Idle keep-alive connections for providers' HTTPS to destinations with a TLS grant.
//!
//! A connection is only ever reused for exactly the key it was opened under: the provider,
//! the zone, the granted authority and the whole [`TlsTrust`] (pins, CA certificates,
//! `validate=false`). Scheme is part of it implicitly: only `https` connections are pooled.
//! So no zone or provider gets another's connection, and a settings change or hot swap that
//! changes the trust makes a new key: connections made under the old trust are never used
//! again and expire as idle.
//!
//! A connection goes back to the pool only after its response body was read to the end
//! without error and hyper reports it ready for the next request; anything else (an error,
//! a body dropped half-read, `Connection: close`, the server closing) drops it. Idle
//! connections expire after [`IDLE_TIMEOUT`], any connection after [`MAX_AGE`]; at most
//! [`MAX_IDLE_PER_KEY`] per key and [`MAX_IDLE_TOTAL`] overall are kept.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::tls::TlsTrust;

/// How long an unused connection is kept.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection is used at all (then it is closed when idle).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(300);
/// Idle connections kept per key.
pub(crate) const MAX_IDLE_PER_KEY: usize = 4;
/// Idle connections kept overall.
pub(crate) const MAX_IDLE_TOTAL: usize = 64;
/// How long a connection whose response was read may take to become ready again before it is
/// dropped instead of pooled.
const READY_WAIT: Duration = Duration::from_secs(1);

/// What a connection may be reused for: all of it must match.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub provider: Arc<str>,
    pub zone: String,
    /// `host:port` as granted.
    pub authority: String,
    pub trust: TlsTrust,
}

/// A request sender on an open connection whose driver runs as its own task.
pub(crate) struct Connection {
    pub sender: SendRequest<WasiBody>,
    pub opened: Instant,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        !self.connection.sender.is_closed()
            && now.duration_since(self.since) < IDLE_TIMEOUT
            && now.duration_since(self.connection.opened) < MAX_AGE
    }
}

#[derive(Default)]
struct Slots {
    idle: HashMap<PoolKey, Vec<Idle>>,
    /// Closes expired connections when nobody takes from the pool.
    sweeper: Option<JoinHandle<()>>,
}

impl Slots {
    fn total(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    fn sweep(&mut self, now: Instant) {
        self.idle.retain(|_, list| {
            list.retain(|idle| idle.usable(now));
            !list.is_empty()
        });
    }

    /// Drops the idle connection that has waited longest.
    fn evict_oldest(&mut self) {
        let oldest = self
            .idle
            .iter()
            .flat_map(|(key, list)| list.iter().enumerate().map(move |(i, idle)| (key, i, idle)))
            .min_by_key(|(_, _, idle)| idle.since)
            .map(|(key, i, _)| (key.clone(), i));
        if let Some((key, index)) = oldest
            && let Some(list) = self.idle.get_mut(&key)
        {
            list.remove(index);
            if list.is_empty() {
                self.idle.remove(&key);
            }
        }
    }
}

/// The process's idle HTTPS connections.
pub(crate) struct ConnectionPool {
    slots: Arc<Mutex<Slots>>,
}

static POOL: LazyLock<ConnectionPool> = LazyLock::new(|| ConnectionPool {
    slots: Arc::new(Mutex::new(Slots::default())),
});

/// The pool every provider call uses.
pub(crate) fn pool() -> &'static ConnectionPool {
    &POOL
}

impl ConnectionPool {
    /// The most recently used live connection for `key`, if any.
    pub(crate) fn take(&self, key: &PoolKey) -> Option<Connection> {
        let now = Instant::now();
        let mut slots = self.slots.lock();
        let list = slots.idle.get_mut(key)?;
        let mut found = None;
        while let Some(idle) = list.pop() {
            if idle.usable(now) && idle.connection.sender.is_ready() {
                found = Some(idle.connection);
                break;
            }
        }
        if list.is_empty() {
            slots.idle.remove(key);
        }
        found
    }

    /// Keeps `connection` for reuse under `key`, within the caps.
    fn put(&self, key: PoolKey, connection: Connection) {
        let now = Instant::now();
        let idle = Idle {
            connection,
            since: now,
        };
        if !idle.usable(now) {
            return;
        }
        let mut slots = self.slots.lock();
        slots.sweep(now);
        if slots.idle.get(&key).map_or(0, Vec::len) >= MAX_IDLE_PER_KEY {
            return;
        }
        if slots.total() >= MAX_IDLE_TOTAL {
            slots.evict_oldest();
        }
        slots.idle.entry(key).or_default().push(idle);
        let sweeping = slots
            .sweeper
            .as_ref()
            .is_some_and(|task| !task.is_finished());
        if !sweeping && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let slots_ref = Arc::downgrade(&self.slots);
            slots.sweeper = Some(runtime.spawn(async move {
                loop {
                    tokio::time::sleep(IDLE_TIMEOUT / 2).await;
                    let Some(slots) = slots_ref.upgrade() else {
                        return;
                    };
                    let mut slots = slots.lock();
                    slots.sweep(Instant::now());
                    if slots.idle.is_empty() {
                        // Under the lock, so a `put` after this starts a new sweeper.
                        slots.sweeper = None;
                        return;
                    }
                }
            }));
        }
    }

    fn idle_for(&self, provider: &str, zone: &str) -> usize {
        let now = Instant::now();
        self.slots
            .lock()
            .idle
            .iter()
            .filter(|(key, _)| &*key.provider == provider && key.zone == zone)
            .map(|(_, list)| list.iter().filter(|idle| idle.usable(now)).count())
            .sum()
    }
}

/// How many idle HTTPS connections `provider` keeps for `zone` (diagnostics and tests).
pub fn idle_https_connections(provider: &str, zone: &str) -> usize {
    pool().idle_for(provider, zone)
}

/// A connection to hand back once its response has been read.
pub(crate) struct Checkin {
    pub key: PoolKey,
    pub connection: Connection,
}

impl Checkin {
    /// Pools the connection once hyper says it can take the next request (it is dropped if
    /// it cannot, e.g. after `Connection: close`).
    fn give_back(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let Checkin {
                key,
                mut connection,
            } = self;
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, connection.sender.ready()).await {
                pool().put(key, connection);
            }
        });
    }
}

/// A response body that enforces the between-bytes timeout and returns its connection to the
/// pool when it was read to the end without error.
pub(crate) struct PooledBody {
    incoming: Incoming,
    between_bytes: Duration,
    stall: Pin<Box<tokio::time::Sleep>>,
    checkin: Option<Checkin>,
}

impl PooledBody {
    pub(crate) fn new(incoming: Incoming, between_bytes: Duration, checkin: Checkin) -> Self {
        let mut body = Self {
            incoming,
            between_bytes,
            stall: Box::pin(tokio::time::sleep(between_bytes)),
            checkin: Some(checkin),
        };
        // An empty body (e.g. 204) is complete before anyone reads it.
        if body.incoming.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.give_back();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                // A connection that failed is never reused.
                this.checkin = None;
                Poll::Ready(Some(Err(if err.is_timeout() {
                    HttpError::HttpResponseTimeout
                } else {
                    HttpError::from(err)
                })))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = tokio::time::Instant::now() + this.between_bytes;
                this.stall.as_mut().reset(deadline);
                if this.incoming.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if this.stall.as_mut().poll(cx).is_ready() {
                    this.checkin = None;
                    return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to the end but never polled past it: still reusable. Otherwise the sender is
        // dropped with the half-read response and hyper closes the connection.
        if self.incoming.is_end_stream() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi_http::io::TokioIo;

    /// A ready sender on an in-memory connection whose peer stays open.
    async fn connection() -> (Connection, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1024);
        let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(client))
            .await
            .unwrap();
        tokio::spawn(driver);
        sender.ready().await.unwrap();
        let connection = Connection {
            sender,
            opened: Instant::now(),
        };
        (connection, server)
    }

    fn key(zone: &str, trust: TlsTrust) -> PoolKey {
        PoolKey {
            provider: Arc::from("p"),
            zone: zone.to_owned(),
            authority: "127.0.0.1:1".to_owned(),
            trust,
        }
    }

    #[tokio::test]
    async fn caps_per_key_and_overall_hold_and_keys_never_mix() {
        let pool = ConnectionPool {
            slots: Arc::new(Mutex::new(Slots::default())),
        };
        let mut peers = Vec::new();
        let a = key("z-a", TlsTrust::Pinned(vec![[1; 32]]));
        for _ in 0..MAX_IDLE_PER_KEY + 2 {
            let (connection, peer) = connection().await;
            peers.push(peer);
            pool.put(a.clone(), connection);
        }
        assert_eq!(pool.idle_for("p", "z-a"), MAX_IDLE_PER_KEY);
        // Same zone, another pin; another zone, same pin: nothing to take.
        assert!(
            pool.take(&key("z-a", TlsTrust::Pinned(vec![[2; 32]])))
                .is_none()
        );
        assert!(
            pool.take(&key("z-b", TlsTrust::Pinned(vec![[1; 32]])))
                .is_none()
        );
        assert!(pool.take(&a).is_some());
        assert_eq!(pool.idle_for("p", "z-a"), MAX_IDLE_PER_KEY - 1);

        for i in 0..MAX_IDLE_TOTAL {
            let (connection, peer) = connection().await;
            peers.push(peer);
            pool.put(key(&format!("z-{i}"), TlsTrust::AnyCertificate), connection);
        }
        assert_eq!(pool.slots.lock().total(), MAX_IDLE_TOTAL);
        // The longest idle ones (zone A's) made room.
        assert_eq!(pool.idle_for("p", "z-a"), 0);
    }

    #[tokio::test]
    async fn a_closed_connection_is_neither_kept_nor_taken() {
        let pool = ConnectionPool {
            slots: Arc::new(Mutex::new(Slots::default())),
        };
        let a = key("z-a", TlsTrust::AnyCertificate);
        let (connection, peer) = connection().await;
        pool.put(a.clone(), connection);
        assert_eq!(pool.idle_for("p", "z-a"), 1);
        // The peer goes away: the driver ends and the sender reports closed.
        drop(peer);
        for _ in 0..500 {
            if pool.idle_for("p", "z-a") == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.idle_for("p", "z-a"), 0);
        assert!(pool.take(&a).is_none());
    }
}
