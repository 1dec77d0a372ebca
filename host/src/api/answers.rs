//! Rendered answers of read-only commands, kept in memory between requests.
//!
//! A command registered with [`Command::answers_from_store`] promises that its answer depends
//! only on the caller, its parameters and the rows of the store. Its rendered answer is kept
//! under (command, caller, every non-authentication parameter in arrival order, format) and
//! served again while no row of any table has changed since it was read
//! ([`Store::data_generation`]), and for at most [`MAX_AGE`]. Nothing is kept when other
//! processes write to the same database (a cluster replica, [`Store::sees_every_write`]). Nothing is skipped on the way in: a request served from
//! here has been authenticated (signature, expiry, enabled user and account) and
//! role-checked like any other. Only successful answers are kept; bounded in count and bytes.
//! `bnr serve --no-kept-answers` turns keeping off ([`AnswerCache::set_enabled`]): every read is
//! then answered from the store, as on a system that writes between most reads.
//!
//! [`Command::answers_from_store`]: super::registry::Command::answers_from_store

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;

use super::params::RawParams;
use super::render::Format;
use crate::identity::Caller;
use crate::store::Store;

/// Answers kept at most; past it every answer is dropped and the cache refills on demand.
const MAX_ENTRIES: usize = 1024;
/// Bytes of answers kept at most (same policy as [`MAX_ENTRIES`]).
const MAX_TOTAL_BYTES: usize = 32 << 20;
/// Larger answers are rendered anew every time (big pages are rare and would crowd out the rest).
const MAX_ANSWER_BYTES: usize = 256 << 10;
/// An answer is read again after this long even when nothing changed through this process.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Parameters that authenticate a request but do not change its answer.
const AUTH_PARAMS: [&str; 5] = [
    "apikey",
    "signature",
    "signatureversion",
    "expires",
    "sessionkey",
];

struct Kept {
    generation: u64,
    made: Instant,
    body: Bytes,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Box<[u8]>, Kept>,
    bytes: usize,
}

pub struct AnswerCache {
    store: Store,
    entries: RwLock<Entries>,
    hits: AtomicU64,
    enabled: AtomicBool,
}

/// What an answer is kept under. Names and values are length-prefixed so that no two different
/// requests share a key; parameters stay in arrival order because the first of two names
/// differing only in case is the one used.
pub fn key(command: &str, caller: &Caller, raw: &RawParams, format: Format) -> Box<[u8]> {
    let mut key = Vec::with_capacity(
        64 + raw
            .pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum::<usize>(),
    );
    let mut push = |bytes: &[u8]| {
        key.extend_from_slice(&bytes.len().to_le_bytes());
        key.extend_from_slice(bytes);
    };
    push(command.as_bytes());
    push(&caller.user_id.to_le_bytes());
    push(&[format as u8]);
    for (name, value) in raw.iter() {
        if AUTH_PARAMS.iter().any(|a| name.eq_ignore_ascii_case(a)) {
            continue;
        }
        push(name.as_bytes());
        push(value.as_bytes());
    }
    key.into_boxed_slice()
}

impl AnswerCache {
    pub fn new(store: Store) -> AnswerCache {
        AnswerCache {
            store,
            entries: RwLock::new(Entries::default()),
            hits: AtomicU64::new(0),
            enabled: AtomicBool::new(true),
        }
    }

    /// Whether answers are kept (on unless the operator turned it off).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns keeping answers on or off; off also drops what is kept.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
        if !enabled {
            let mut entries = self.entries.write();
            entries.map.clear();
            entries.bytes = 0;
        }
    }

    /// The generation to keep an answer under: read it before reading the store.
    pub fn generation(&self) -> u64 {
        self.store.data_generation()
    }

    /// The kept answer for `key`, when nothing changed since it was read.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        if !self.is_enabled() || !self.store.sees_every_write() {
            return None;
        }
        let generation = self.store.data_generation();
        let entries = self.entries.read();
        let kept = entries.map.get(key)?;
        if kept.generation != generation || kept.made.elapsed() >= MAX_AGE {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(kept.body.clone())
    }

    /// Keeps `body`, read under `generation`, unless the store changed since or it is too big.
    pub fn put(&self, key: Box<[u8]>, generation: u64, body: &Bytes) {
        if body.len() > MAX_ANSWER_BYTES
            || !self.is_enabled()
            || self.store.data_generation() != generation
            || !self.store.sees_every_write()
        {
            return;
        }
        let mut entries = self.entries.write();
        if entries.map.len() >= MAX_ENTRIES || entries.bytes + body.len() > MAX_TOTAL_BYTES {
            entries.map.clear();
            entries.bytes = 0;
        }
        entries.bytes += body.len();
        let kept = Kept {
            generation,
            made: Instant::now(),
            body: body.clone(),
        };
        if let Some(old) = entries.map.insert(key, kept) {
            entries.bytes -= old.body.len();
        }
    }

    /// Requests answered from memory so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Answers held (for tests).
    pub fn len(&self) -> usize {
        self.entries.read().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
