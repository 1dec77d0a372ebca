//! `bnr serve`: open the data directory, bootstrap it if empty, recover jobs, serve HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{ApiState, Core, commands, router};
use crate::inventory::bootstrap::{self, BootstrapOptions, Bootstrapped};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub bootstrap: BootstrapOptions,
}

/// Opens the store, bootstraps an empty data directory, fails jobs interrupted by a previous
/// stop, and builds the API state with the built-in commands.
pub async fn prepare(
    data_dir: &Path,
    opts: &BootstrapOptions,
) -> anyhow::Result<(ApiState, Option<Bootstrapped>)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let (dir, opts2) = (data_dir.to_path_buf(), opts.clone());
    let (core, boot) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let core = Core::open(&dir)?;
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
    let (resumed, failed) = core.jobs.recover_interrupted().await?;
    if resumed + failed > 0 {
        tracing::warn!(
            resumed,
            failed,
            "handled jobs interrupted by the previous stop"
        );
    }
    let registry = commands::registry().context("building the command registry")?;
    Ok((ApiState::new(core, registry), boot))
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn run(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (state, _) = prepare(&opts.data_dir, &opts.bootstrap).await?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    serve_on(listener, state, shutdown).await
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
