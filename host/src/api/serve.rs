//! `bnr serve`: open the data directory, bootstrap it if empty, recover jobs, serve HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{ApiState, Core, commands, router};
use crate::cluster::{ClusterOptions, Replica};
use crate::config::BACKUP_FRAMEWORK_ENABLED;
use crate::inventory::ExpungeGuard;
use crate::inventory::bootstrap::{self, BootstrapOptions, Bootstrapped};
use crate::scheduler::service::{ResumeOperations, Scheduler};
use crate::service::plugin_replicas::Member;
use crate::service::{BackupService, PluginPolicy, ProviderSource, Providers};
use crate::store::Database;

/// Directory (under the data directory) the providers are loaded from by default.
pub const DEFAULT_PROVIDERS_DIR: &str = "providers";
/// Directory (under the data directory) of the compiled-component cache.
pub const CACHE_DIR: &str = "cache";

/// How long a shutdown waits by default for running state-changing requests and jobs.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The store; `None`: SQLite in `DATA_DIR/bnr.sqlite`.
    pub database: Option<Database>,
    pub bootstrap: BootstrapOptions,
    /// Backup providers (`*.wasm`); `None` = `DATA_DIR/providers`.
    pub providers_dir: Option<PathBuf>,
    /// Where `/metrics` is served; `None`: metrics are off.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a shutdown waits for running state-changing requests and jobs.
    pub shutdown_grace: Duration,
    /// Accept unsigned provider uploads (development only).
    pub allow_unsigned_plugins: bool,
    /// Run as one replica of several on a shared database (`None`: alone).
    pub cluster: Option<ClusterOptions>,
    /// Keep the rendered answers of read commands between writes (`api::answers`).
    pub keep_answers: bool,
}

/// Providers from `DATA_DIR/providers`, compiled code cached in `DATA_DIR/cache`.
pub fn default_providers(data_dir: &Path) -> ProviderSource {
    ProviderSource::Directory {
        providers_dir: data_dir.join(DEFAULT_PROVIDERS_DIR),
        cache_dir: data_dir.join(CACHE_DIR),
    }
}

/// [`prepare_with`] with the providers of `DATA_DIR/providers`.
pub async fn prepare(
    data_dir: &Path,
    opts: &BootstrapOptions,
) -> anyhow::Result<(ApiState, Option<Bootstrapped>)> {
    prepare_with(data_dir, opts, default_providers(data_dir)).await
}

/// Opens the store, bootstraps an empty data directory, loads the backup providers, fails jobs
/// (and B&R work) interrupted by a previous stop, and builds the API state with the built-in
/// commands, plus the B&R commands when the global `backup.framework.enabled` is true.
pub async fn prepare_with(
    data_dir: &Path,
    opts: &BootstrapOptions,
    providers: ProviderSource,
) -> anyhow::Result<(ApiState, Option<Bootstrapped>)> {
    prepare_with_policy(data_dir, opts, providers, false).await
}

/// [`prepare_with`], choosing whether unsigned provider uploads are accepted.
pub async fn prepare_with_policy(
    data_dir: &Path,
    opts: &BootstrapOptions,
    providers: ProviderSource,
    allow_unsigned_plugins: bool,
) -> anyhow::Result<(ApiState, Option<Bootstrapped>)> {
    prepare_on(None, data_dir, opts, providers, allow_unsigned_plugins).await
}

/// [`prepare_with_policy`] on the store `database` (`None`: SQLite in the data directory).
pub async fn prepare_on(
    database: Option<&Database>,
    data_dir: &Path,
    opts: &BootstrapOptions,
    providers: ProviderSource,
    allow_unsigned_plugins: bool,
) -> anyhow::Result<(ApiState, Option<Bootstrapped>)> {
    prepare_replica(
        database,
        data_dir,
        opts,
        providers,
        allow_unsigned_plugins,
        None,
    )
    .await
}

/// [`prepare_on`], as one replica of a cluster when `cluster` is given: the process joins (its
/// [`Replica`] is an extension of the state), adopts only the work of dead replicas instead of
/// everything pending, and its scheduler loop follows the leader lease.
pub async fn prepare_replica(
    database: Option<&Database>,
    data_dir: &Path,
    opts: &BootstrapOptions,
    providers: ProviderSource,
    allow_unsigned_plugins: bool,
    cluster: Option<&ClusterOptions>,
) -> anyhow::Result<(ApiState, Option<Bootstrapped>)> {
    crate::store::create_private_dir(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let (dir, opts2, database) = (data_dir.to_path_buf(), opts.clone(), database.cloned());
    let (core, boot) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let core = Core::open_database(&dir, database.as_ref())?;
        let boot = bootstrap::bootstrap_if_empty(&core.store, &core.settings, &dir, &opts2)?;
        Ok((core, boot))
    })
    .await
    .context("start-up task")??;
    if let Some(b) = &boot {
        for path in &b.written {
            tracing::info!(file = %path.display(), "wrote initial admin credentials");
        }
    }
    let (store, settings) = (core.store.clone(), core.settings.clone());
    let providers_dir = match &providers {
        ProviderSource::Directory { providers_dir, .. } => providers_dir.clone(),
        ProviderSource::Loaded { .. } => data_dir.join(DEFAULT_PROVIDERS_DIR),
    };
    let policy = PluginPolicy {
        data_dir: Some(data_dir.to_path_buf()),
        allow_unsigned: allow_unsigned_plugins,
        providers_dir: Some(providers_dir),
    };
    let providers =
        tokio::task::spawn_blocking(move || Providers::load(store, settings, providers, policy))
            .await
            .context("provider loading task")??;
    let providers = Arc::new(providers);
    providers.watch_settings();
    let backup = BackupService::new(core.store.clone(), core.settings.clone(), providers.clone());
    // Before recover_interrupted: provider operations of interrupted jobs resume by handle.
    core.jobs
        .add_resume_hook(Arc::new(ResumeOperations::new(backup.clone())));
    let scheduler = Arc::new(Scheduler::new(
        core.store.clone(),
        core.settings.clone(),
        core.jobs.clone(),
        backup.clone(),
    ));

    let replica = match cluster {
        None => {
            let (resumed, failed) = core.jobs.recover_interrupted().await?;
            if resumed + failed > 0 {
                tracing::warn!(
                    resumed,
                    failed,
                    "handled jobs interrupted by the previous stop"
                );
            }
            None
        }
        Some(cluster) => {
            let (store, cluster) = (core.store.clone(), cluster.clone());
            let replica = tokio::task::spawn_blocking(move || Replica::join(&store, &cluster))
                .await
                .context("joining the cluster")??;
            // The first heartbeat runs a takeover pass: the work of dead replicas resumes here.
            replica.start(core.jobs.clone())?;
            let member = Member {
                replica: replica.id(),
                lease_ms: replica.lease().as_millis() as i64,
            };
            let joining = providers.clone();
            tokio::task::spawn_blocking(move || joining.join_cluster(member))
                .await
                .context("recording the loaded providers")??;
            let following = providers.clone();
            replica.follow_changes(
                core.settings.clone(),
                Arc::new(move || {
                    if let Err(e) = following.follow_installed_blocking() {
                        tracing::warn!(error = %e, "cannot follow provider changes");
                    }
                }),
            );
            Some(replica)
        }
    };
    // Work no pending job drives any more is ended here only when no other replica is alive:
    // another replica's work is never touched (a dead one's is adopted, then resumed).
    let alone = match &replica {
        None => true,
        Some(r) => {
            let (id, lease_ms) = (r.id(), r.lease().as_millis() as i64);
            core.store
                .read(move |c| {
                    crate::cluster::other_live_replicas(c, id, lease_ms)
                        .map_err(crate::store::StoreError::from)
                })
                .await?
                == 0
        }
    };
    let recovered = if alone {
        backup
            .recover_interrupted()
            .await
            .map_err(|e| anyhow::anyhow!("ending interrupted backup work: {e}"))?
    } else {
        Default::default()
    };
    if recovered != Default::default() {
        tracing::warn!(
            ?recovered,
            "ended backup work interrupted by the previous stop"
        );
    }

    let mut registry = commands::registry().context("building the command registry")?;
    // CloudStack registers the B&R commands only when the framework is enabled at start.
    if core.settings.get_bool(BACKUP_FRAMEWORK_ENABLED, None) {
        commands::backup::register(&mut registry).context("registering the B&R commands")?;
        commands::backup_usage::register(&mut registry)
            .context("registering the B&R usage commands")?;
    } else {
        tracing::info!("backup.framework.enabled is false: the B&R commands are not available");
    }
    let mut extensions = http::Extensions::new();
    extensions.insert(backup.clone());
    extensions.insert(scheduler.syncer().clone());
    extensions.insert(scheduler);
    extensions.insert(backup as Arc<dyn ExpungeGuard>);
    if let Some(replica) = replica {
        extensions.insert(replica);
    }
    Ok((ApiState::with_extensions(core, registry, extensions), boot))
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn run(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let providers = match &opts.providers_dir {
        Some(dir) => ProviderSource::Directory {
            providers_dir: dir.clone(),
            cache_dir: opts.data_dir.join(CACHE_DIR),
        },
        None => default_providers(&opts.data_dir),
    };
    if opts.metrics_listen.is_some() {
        // Before the providers load, so the compiled-cache lookups are counted.
        crate::metrics::enable();
    }
    if opts.allow_unsigned_plugins {
        tracing::warn!("unsigned provider uploads are accepted (--allow-unsigned-plugins)");
    }
    let (state, boot) = prepare_replica(
        opts.database.as_ref(),
        &opts.data_dir,
        &opts.bootstrap,
        providers,
        opts.allow_unsigned_plugins,
        opts.cluster.as_ref(),
    )
    .await?;
    if !opts.keep_answers {
        state.answers.set_enabled(false);
        tracing::info!("read answers are not kept (--no-kept-answers)");
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    if let Some(password) = boot.and_then(|b| b.generated_password) {
        // Shown on the terminal once, never through the log; the file keeps it (mode 0600).
        println!(
            "web console: http://{}/  user: admin  password: {password}  (also in {})",
            listener.local_addr()?,
            opts.data_dir.join(bootstrap::ADMIN_PASSWORD_FILE).display()
        );
    }
    let metrics_server = match opts.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "serving metrics at /metrics");
            let app = metrics_router(state.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            }))
        }
        None => None,
    };
    let leader = state.ext::<Replica>().map(|r| r.watch_leader());
    let background = state
        .ext::<Arc<Scheduler>>()
        .map(|s| s.spawn_loop_led(leader));
    let drain = drain(state.clone(), shutdown, background, opts.shutdown_grace);
    let served = serve_on(listener, state, drain).await;
    if let Some(task) = metrics_server {
        task.abort();
    }
    served
}

/// Waits for `shutdown`, then drains: new API requests get 503, the scheduler loop stops, and
/// running state-changing requests and jobs get up to `grace` to finish, except jobs only
/// polling a persisted provider operation, which are released at once. Whatever is still
/// running then is dropped; its provider operations stay persisted and resume at the next
/// start, and its jobs are resumed or failed cleanly then.
async fn drain(
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    background: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
) {
    shutdown.await;
    state.lifecycle.start_draining();
    if let Some(task) = background {
        task.abort();
    }
    tracing::info!(
        requests = state.lifecycle.in_flight(),
        jobs = state.jobs().running(),
        grace_secs = grace.as_secs(),
        "draining: new requests are refused with 503"
    );
    // Jobs only polling a persisted provider operation are not waited for: they resume by
    // their handle at the next start, however long the operation still takes.
    let settled = async {
        state.lifecycle.wait_idle().await;
        state.jobs().wait_settled().await;
    };
    if tokio::time::timeout(grace, settled).await.is_err() {
        tracing::warn!(
            requests = state.lifecycle.in_flight(),
            jobs = state.jobs().running(),
            "shutdown deadline passed; unfinished work resumes at the next start"
        );
    } else {
        tracing::info!(
            released = state.jobs().waiting_on_operations(),
            "drained; jobs waiting on persisted provider operations resume at the next start"
        );
    }
    if let Some(replica) = state.ext::<Replica>().cloned() {
        // Marked stopped: another replica adopts what is left at its next heartbeat.
        let _ = tokio::task::spawn_blocking(move || replica.stop()).await;
    }
}

/// `/metrics` on its own listener (Prometheus / OpenMetrics text format).
pub fn metrics_router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(render_metrics))
        .with_state(state)
}

async fn render_metrics(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let Some(metrics) = crate::metrics::get() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let rendered = state
        .store()
        .read(move |c| metrics.render(c, crate::store::now()))
        .await;
    match rendered {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the store for /metrics");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Serves `state` on an already-bound listener until `shutdown` completes.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving the CloudStack API at /client/api");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
