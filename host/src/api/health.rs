//! Liveness (`/healthz`), readiness (`/readyz`), and draining before a shutdown.
//!
//! Both probes are unauthenticated, so they say nothing but ok or not-ok with a reason code:
//! `{"status":"ok"}` (200) or `{"status":"not-ok","reason":"…"}` (503).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Notify;

use super::ApiState;
use crate::scheduler::service::Scheduler;
use crate::service::BackupService;
use crate::store::{OpError, now};

/// Why the server is not ready (the `reason` of `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The server is stopping and refuses new requests.
    Draining,
    /// A write transaction on the store failed.
    StoreNotWritable,
    /// A zone with B&R enabled has no loadable provider.
    ProviderNotLoaded,
    /// The scheduler loop has not ticked within two intervals.
    SchedulerStalled,
}

impl NotReady {
    pub fn code(self) -> &'static str {
        match self {
            NotReady::Draining => "draining",
            NotReady::StoreNotWritable => "store_not_writable",
            NotReady::ProviderNotLoaded => "provider_not_loaded",
            NotReady::SchedulerStalled => "scheduler_stalled",
        }
    }
}

/// Draining state and the state-changing requests still running.
#[derive(Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// One running state-changing request; dropping it ends it.
pub struct InFlight<'a>(&'a Lifecycle);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    /// From now on new API requests are answered 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Counts a request in; `None` when draining (the request must be refused). Counting first
    /// and checking second means a request either is refused or is waited for, never neither.
    pub fn enter(&self) -> Option<InFlight<'_>> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self);
        (!self.is_draining()).then_some(guard)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Completes when no counted request is running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

pub async fn readyz(State(state): State<ApiState>) -> Response {
    match readiness(&state).await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not-ok", "reason": reason.code()})),
        )
            .into_response(),
    }
}

/// The first reason the server is not ready, checked in order of cost.
pub async fn readiness(state: &ApiState) -> Result<(), NotReady> {
    if state.lifecycle.is_draining() {
        return Err(NotReady::Draining);
    }
    let at = now();
    if let Some(scheduler) = state.ext::<Arc<Scheduler>>()
        && !scheduler.ticked_recently(at)
    {
        return Err(NotReady::SchedulerStalled);
    }
    let written = state
        .store()
        .write(move |tx| {
            tx.execute(
                "INSERT INTO health_probe(id, checked) VALUES (1, ?1) \
                 ON CONFLICT(id) DO UPDATE SET checked = excluded.checked",
                [at],
            )?;
            Ok::<_, OpError>(())
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "readiness: the store is not writable");
        return Err(NotReady::StoreNotWritable);
    }
    if let Some(backup) = state.ext::<Arc<BackupService>>() {
        let zones = state
            .store()
            .read(|c| {
                let mut st =
                    c.prepare_cached("SELECT id, uuid FROM zones WHERE removed IS NULL")?;
                let zones = st
                    .query_map([], |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)))?
                    .collect::<crate::store::db::Result<Vec<_>>>()?;
                Ok::<_, OpError>(zones)
            })
            .await
            .map_err(|_| NotReady::StoreNotWritable)?;
        let providers = backup.providers();
        for (zone_id, zone_uuid) in zones {
            if providers.zone_enabled(zone_id) && providers.for_zone(zone_id, &zone_uuid).is_err() {
                return Err(NotReady::ProviderNotLoaded);
            }
        }
    }
    Ok(())
}
