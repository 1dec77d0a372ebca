//! Prometheus metrics (`/metrics` on the listener given by `bnr serve --metrics-listen`).
//!
//! Off by default: until [`enable`] is called every hook is one atomic load. Counters and
//! histograms are updated where things happen (the provider call boundary, the HTTP handler,
//! the store's writer, the scheduler, the sync pass, the compiled-component cache); the gauges
//! that describe stored state (jobs, operations, backups by state) are read from the store
//! when `/metrics` is scraped. Every metric is listed in `docs/operations.md`.

use std::sync::OnceLock;
use std::time::Duration;

use crate::store::db::Connection;
use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::store::StoreError;

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Every backup state (the `backups.status` CHECK of migration 0002), so that an empty state
/// reads 0 instead of vanishing from the output.
const BACKUP_STATES: &[&str] = &[
    "Allocated",
    "Queued",
    "BackingUp",
    "BackedUp",
    "Error",
    "Failed",
    "Restoring",
    "Removed",
    "Expunged",
];

/// What the provider runtime reports, turned into metrics (when enabled) and job context.
#[derive(Debug, Default)]
pub struct RuntimeHooks;

impl bnr_runtime::RuntimeObserver for RuntimeHooks {
    fn provider_call(&self, call: &bnr_runtime::CallRecord<'_>) {
        if let Some(metrics) = get() {
            metrics.provider_call(
                CallLabels {
                    provider: call.provider.to_owned(),
                    version: call.version.to_owned(),
                    function: call.function.to_owned(),
                    zone: call.zone.to_owned(),
                },
                call.outcome,
                call.elapsed,
            );
        }
    }

    fn component_loaded(&self, from_cache: bool) {
        if let Some(metrics) = get() {
            metrics.compiled_cache(from_cache);
        }
    }

    fn current_job(&self) -> Option<String> {
        crate::jobs::current_job_uuid()
    }
}

/// The metrics, once enabled (`None`: metrics are off and hooks do nothing).
#[inline]
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Turns metrics on for the rest of the process.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub provider: String,
    pub version: String,
    pub function: String,
    pub zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallOutcomeLabels {
    pub provider: String,
    pub version: String,
    pub function: String,
    pub zone: String,
    /// `ok`, `provider_<variant>`, `trap`, `timeout`, `memory_limit`, `cpu_limit`,
    /// `result_too_large`, `busy`, `instantiate`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    command: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    zone: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0,
    ]
    .into_iter()
}

fn lag_buckets() -> impl Iterator<Item = f64> {
    [
        0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
    ]
    .into_iter()
}

pub struct Metrics {
    registry: Registry,
    provider_calls: Family<CallOutcomeLabels, Counter>,
    provider_call_seconds: Family<CallLabels, Histogram>,
    http_requests: Family<HttpLabels, Counter>,
    store_write_seconds: Histogram,
    compiled_cache: Family<ResultLabels, Counter>,
    scheduler_lag_seconds: Histogram,
    scheduler_last_tick: Gauge,
    sync_pass_seconds: Family<ZoneLabels, Histogram>,
    sync_passes: Family<SyncLabels, Counter>,
    sync_failing_in_a_row: Family<ZoneLabels, Gauge>,
    operations_in_flight: Gauge,
    operation_oldest_age_seconds: Gauge,
    operations_past_deadline: Gauge,
    jobs: Family<StateLabels, Gauge>,
    backups: Family<StateLabels, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bnr");
        let provider_calls = Family::<CallOutcomeLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Provider calls by provider, version, function, zone and outcome",
            provider_calls.clone(),
        );
        let provider_call_seconds = Family::<CallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register_with_unit(
            "provider_call_duration",
            "Wall-clock time of provider calls",
            Unit::Seconds,
            provider_call_seconds.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "API requests by command and HTTP status",
            http_requests.clone(),
        );
        let store_write_seconds = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "store_write_duration",
            "Time of one write transaction on the store, waiting for the writer included",
            Unit::Seconds,
            store_write_seconds.clone(),
        );
        let compiled_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "compiled_cache_lookups",
            "Compiled-component cache lookups by result (hit, miss)",
            compiled_cache.clone(),
        );
        let scheduler_lag_seconds = Histogram::new(lag_buckets());
        registry.register_with_unit(
            "scheduler_lag",
            "Delay from a scheduled backup's due time to its start",
            Unit::Seconds,
            scheduler_lag_seconds.clone(),
        );
        let scheduler_last_tick = Gauge::default();
        registry.register(
            "scheduler_last_tick_timestamp_seconds",
            "Unix time of the scheduler's last tick",
            scheduler_last_tick.clone(),
        );
        let sync_pass_seconds = Family::<ZoneLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register_with_unit(
            "sync_pass_duration",
            "Time of one background sync pass over a zone",
            Unit::Seconds,
            sync_pass_seconds.clone(),
        );
        let sync_passes = Family::<SyncLabels, Counter>::default();
        registry.register(
            "sync_passes",
            "Background sync passes by zone and outcome (ok, failed)",
            sync_passes.clone(),
        );
        let sync_failing_in_a_row = Family::<ZoneLabels, Gauge>::default();
        registry.register(
            "sync_consecutive_failures",
            "Sync passes of a zone that failed in a row (0 after a good pass)",
            sync_failing_in_a_row.clone(),
        );
        let operations_in_flight = Gauge::default();
        registry.register(
            "operations_in_flight",
            "Pending provider operations (persisted, being polled)",
            operations_in_flight.clone(),
        );
        let operation_oldest_age_seconds = Gauge::default();
        registry.register_with_unit(
            "operation_oldest_age",
            "Age of the oldest pending provider operation",
            Unit::Seconds,
            operation_oldest_age_seconds.clone(),
        );
        let operations_past_deadline = Gauge::default();
        registry.register(
            "operations_past_deadline",
            "Pending provider operations whose deadline has passed",
            operations_past_deadline.clone(),
        );
        let jobs = Family::<StateLabels, Gauge>::default();
        registry.register(
            "jobs",
            "Pending async jobs by state (running, waiting_on_provider)",
            jobs.clone(),
        );
        let backups = Family::<StateLabels, Gauge>::default();
        registry.register("backups", "Backups by state", backups.clone());
        Metrics {
            registry,
            provider_calls,
            provider_call_seconds,
            http_requests,
            store_write_seconds,
            compiled_cache,
            scheduler_lag_seconds,
            scheduler_last_tick,
            sync_pass_seconds,
            sync_passes,
            sync_failing_in_a_row,
            operations_in_flight,
            operation_oldest_age_seconds,
            operations_past_deadline,
            jobs,
            backups,
        }
    }

    /// One finished provider call.
    pub fn provider_call(&self, labels: CallLabels, outcome: &str, elapsed: Duration) {
        self.provider_call_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let CallLabels {
            provider,
            version,
            function,
            zone,
        } = labels;
        self.provider_calls
            .get_or_create(&CallOutcomeLabels {
                provider,
                version,
                function,
                zone,
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn http_request(&self, command: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                command: command.to_string(),
                status,
            })
            .inc();
    }

    /// The counter of `command`'s answers with `status`, to keep and count with no lookup.
    pub fn http_request_counter(&self, command: &str, status: u16) -> Counter {
        self.http_requests
            .get_or_create(&HttpLabels {
                command: command.to_string(),
                status,
            })
            .clone()
    }

    pub fn store_write(&self, elapsed: Duration) {
        self.store_write_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn compiled_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.compiled_cache
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// A scheduled run started `lag_secs` after it was due.
    pub fn scheduler_lag(&self, lag_secs: i64) {
        self.scheduler_lag_seconds.observe(lag_secs.max(0) as f64);
    }

    pub fn scheduler_ticked(&self, at_unix: i64) {
        self.scheduler_last_tick.set(at_unix);
    }

    /// One sync pass over `zone` ended.
    pub fn sync_pass(&self, zone: &str, ok: bool, elapsed: Duration) {
        let zone_labels = ZoneLabels { zone: zone.into() };
        self.sync_pass_seconds
            .get_or_create(&zone_labels)
            .observe(elapsed.as_secs_f64());
        self.sync_passes
            .get_or_create(&SyncLabels {
                zone: zone.into(),
                outcome: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
        let in_a_row = self.sync_failing_in_a_row.get_or_create(&zone_labels);
        if ok {
            in_a_row.set(0);
        } else {
            in_a_row.inc();
        }
    }

    /// Reads the gauges that describe stored state, then renders everything in the text
    /// format. `conn` is a read snapshot.
    pub fn render(&self, conn: &Connection, now: i64) -> Result<String, StoreError> {
        let (in_flight, oldest, past): (i64, Option<i64>, i64) = conn.query_row(
            "SELECT count(*), min(created), count(CASE WHEN deadline < ?1 THEN 1 END) \
             FROM provider_operations",
            [now],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        self.operations_in_flight.set(in_flight);
        self.operation_oldest_age_seconds
            .set(oldest.map_or(0, |created| (now - created).max(0)));
        self.operations_past_deadline.set(past);
        // Jobs start as soon as they are accepted (there is no queue): a pending job is either
        // running host-side or waiting on a provider operation that is being polled.
        let (waiting, pending): (i64, i64) = conn.query_row(
            "SELECT count(CASE WHEN EXISTS(SELECT 1 FROM provider_operations o WHERE o.job_id = j.id) \
             THEN 1 END), \
             count(*) FROM async_jobs j WHERE j.status = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (state, count) in [
            ("running", pending - waiting),
            ("waiting_on_provider", waiting),
        ] {
            self.jobs
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(count);
        }
        let mut by_state = conn.prepare_cached(
            "SELECT status, count(*) FROM backups WHERE removed IS NULL GROUP BY status",
        )?;
        let rows = by_state.query_map([], |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)))?;
        // States with no backup left are reported as 0, not dropped.
        for state in BACKUP_STATES {
            self.backups
                .get_or_create(&StateLabels {
                    state: (*state).into(),
                })
                .set(0);
        }
        for row in rows {
            let (state, count) = row?;
            self.backups
                .get_or_create(&StateLabels { state })
                .set(count);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(out)
    }
}
