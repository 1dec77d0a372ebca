//! The background loop started by `bnr serve`: every `backup.framework.sync.interval` seconds
//! it runs one scheduler tick and (unless the previous one is still running) one sync pass,
//! both at the wall-clock instant. A change of the interval takes effect at once: the next run
//! is re-planned from the previous one with the new interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::sync::Syncer;
use super::tick::Ticker;
use crate::config::{BACKUP_SYNC_INTERVAL, Settings};

/// Shortest interval honoured: a smaller (or non-positive) setting would turn the loop into a
/// busy loop hammering the store and the providers.
pub const MIN_INTERVAL_SECS: u64 = 1;
/// Longest interval honoured (one day), so a typo cannot silently stop scheduling for years.
pub const MAX_INTERVAL_SECS: u64 = 86_400;
/// Used when the setting is unreadable (it is validated as an integer, so only in theory).
const DEFAULT_INTERVAL_SECS: u64 = 300;

/// The effective loop interval for a setting value.
pub fn interval_from_setting(value: Option<i64>) -> Duration {
    let secs = match value {
        Some(v) => u64::try_from(v)
            .unwrap_or(MIN_INTERVAL_SECS)
            .clamp(MIN_INTERVAL_SECS, MAX_INTERVAL_SECS),
        None => DEFAULT_INTERVAL_SECS,
    };
    Duration::from_secs(secs)
}

/// The scheduler loop and the sync pass, sharing one interval.
pub struct Background {
    pub ticker: Ticker,
    pub syncer: Option<Arc<Syncer>>,
    pub settings: Settings,
    /// Unix seconds of the loop's start, then of its last tick (readiness looks at it).
    pub heartbeat: Arc<AtomicI64>,
    /// On a replica of a cluster: `Some(term)` while it holds the scheduler lease. Only the
    /// leader ticks and syncs; a new leader ticks at once. `None`: the process runs alone and
    /// always ticks.
    pub leader: Option<watch::Receiver<Option<i64>>>,
}

impl Background {
    pub fn interval(&self) -> Duration {
        interval_from_setting(self.settings.get_i64(BACKUP_SYNC_INTERVAL, None))
    }

    /// Starts the loop on tokio; the first run is one interval after start (like CloudStack).
    /// Abort the handle to stop it.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let mut changes = self.settings.subscribe();
        let mut interval = self.interval();
        let mut last = Instant::now();
        let mut sync_task: Option<JoinHandle<()>> = None;
        self.heartbeat
            .store(Timestamp::now().as_second(), Ordering::Release);
        tracing::info!(
            interval_secs = interval.as_secs(),
            "backup scheduler started"
        );
        let mut leader = self.leader.clone();
        // Whether the last run ticked as the leader: a replica that gains the lease since
        // ticks at once instead of waiting an interval.
        let mut leading = false;
        loop {
            let gained_leadership = async {
                match leader.as_mut() {
                    Some(rx) => loop {
                        if !leading && rx.borrow_and_update().is_some() {
                            return;
                        }
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    },
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(last + interval) => {}
                () = gained_leadership => {
                    tracing::info!("this replica leads the scheduler: ticking now");
                }
                change = changes.recv() => {
                    match change {
                        Ok(c) if c.name != BACKUP_SYNC_INTERVAL => continue,
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        // The settings service is gone: keep the current interval.
                        Err(RecvError::Closed) => changes = self.settings.subscribe(),
                    }
                    let updated = self.interval();
                    if updated != interval {
                        tracing::info!(interval_secs = updated.as_secs(),
                            "backup scheduler interval changed");
                        interval = updated;
                    }
                    continue;
                }
            }
            last = Instant::now();
            let now = Timestamp::now();
            self.heartbeat.store(now.as_second(), Ordering::Release);
            if let Some(rx) = &leader {
                leading = rx.borrow().is_some();
                if !leading {
                    // A follower: the leader ticks; this loop only stays ready to take over.
                    continue;
                }
            }
            if let Some(metrics) = crate::metrics::get() {
                metrics.scheduler_ticked(now.as_second());
            }
            match self.ticker.tick(now).await {
                Ok(report) => {
                    if report.reaped + report.started.len() + report.deleted > 0 {
                        tracing::info!(
                            reaped = report.reaped,
                            started = report.started.len(),
                            deleted = report.deleted,
                            skipped = report.skipped.len(),
                            "scheduler tick"
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "scheduler tick failed"),
            }
            if let Some(syncer) = &self.syncer {
                if sync_task.as_ref().is_some_and(|t| !t.is_finished()) {
                    tracing::warn!("previous backup sync pass still running; skipping this one");
                    continue;
                }
                let syncer = syncer.clone();
                sync_task = Some(tokio::spawn(async move {
                    let report = syncer.pass(now).await;
                    tracing::debug!(?report, "backup sync pass");
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_follows_the_setting_within_bounds() {
        assert_eq!(interval_from_setting(Some(300)), Duration::from_secs(300));
        assert_eq!(
            interval_from_setting(Some(0)),
            Duration::from_secs(MIN_INTERVAL_SECS)
        );
        assert_eq!(
            interval_from_setting(Some(-5)),
            Duration::from_secs(MIN_INTERVAL_SECS)
        );
        assert_eq!(
            interval_from_setting(Some(i64::MAX)),
            Duration::from_secs(MAX_INTERVAL_SECS)
        );
        assert_eq!(interval_from_setting(None), Duration::from_secs(300));
    }
}
