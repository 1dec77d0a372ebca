//! Hostile-provider measurements: `cargo xtask plugins && cargo bench -p bnr --bench hostile`.
//!
//! 1. Peak RSS of the process while 32 concurrent calls of the `hostile` fixture return
//!    oversized results (`huge`: 40 MiB of policies built in guest memory; `alias`: 42 MiB
//!    of strings sharing one 1 MiB buffer), with the default limits, and with the copy bound
//!    lifted (hostcall fuel raised to 1 GiB) for comparison. Each scenario runs in a child
//!    process of its own, so each peak (`VmHWM`) is its own.
//! 2. Start-up: loading a providers directory of 10 components (one with a `describe()` that
//!    never returns) as `bnr serve` does, cold (compiling) and cached.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bnr_runtime::{
    CallContext, Catalog, Grants, PoolConfig, Runtime, RuntimeConfig, SandboxLimits, types,
};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn component(dir: &str, stem: &str) -> PathBuf {
    target_dir().join(dir).join(format!("{stem}.wasm"))
}

/// `VmHWM` and `VmRSS` of this process, in MiB.
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Child process: 32 concurrent calls in `mode`; prints `before_mib peak_mib outcomes`.
fn rss_child(mode: &str, copy_bound: bool, share: u32) {
    let cache = tempfile::tempdir().expect("cache");
    let mut limits = SandboxLimits::default();
    if !copy_bound {
        // The result-size check still runs, but only after the copy: the old behaviour.
        limits.max_result_bytes = 1 << 30;
    }
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: cache.path().to_owned(),
        observer: None,
        limits,
        pool: PoolConfig {
            max_instances_per_provider: share,
            ..PoolConfig::default()
        },
    })
    .expect("runtime");
    let hostile = runtime
        .load_file(&component("fixtures", "bnr_fixture_hostile"))
        .expect("hostile");
    let settings = [("backup.plugin.hostile.mode".to_owned(), mode.to_owned())].into();
    let grants = Grants::derive(hostile.info(), &settings, None, &[]);
    let ctx = CallContext::new("zone-1", settings, grants);
    let zone = types::Zone {
        uuid: "zone-1".into(),
        name: "zone1".into(),
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let (before, _) = memory_mib();
    let mut outcomes = tokio.block_on(async {
        let calls = (0..32).map(|_| {
            let (hostile, ctx, zone) = (hostile.clone(), ctx.clone(), zone.clone());
            tokio::spawn(async move {
                match hostile.list_policies(&ctx, &zone).await {
                    Ok(p) => format!("ok({})", p.len()),
                    Err(e) => format!("{e}"),
                }
            })
        });
        let mut outcomes = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            outcomes.push(call.await.expect("call task"));
        }
        outcomes
    });
    let (peak, _) = memory_mib();
    outcomes.sort_unstable();
    let mut summary: Vec<(String, usize)> = Vec::new();
    for outcome in outcomes {
        match summary.last_mut() {
            Some((last, n)) if *last == outcome => *n += 1,
            _ => summary.push((outcome, 1)),
        }
    }
    let summary: Vec<String> = summary.iter().map(|(o, n)| format!("{n} × {o}")).collect();
    println!("{before} {peak} {}", summary.join("; "));
}

fn rss_scenarios() {
    let exe = std::env::current_exe().expect("own path");
    println!("## Peak RSS, 32 concurrent calls returning oversized results\n");
    println!(
        "| results | slots for the provider | copy bound | RSS before (MiB) | peak RSS (MiB) | outcomes |"
    );
    println!("|---|---:|---|---:|---:|---|");
    for (mode, what) in [
        ("alias", "42 MiB aliasing one 1 MiB buffer"),
        ("huge", "40 MiB of policies"),
        ("ok", "tiny (baseline)"),
    ] {
        for (bound, share) in [(true, 8), (true, 32), (false, 32)] {
            let out = Command::new(&exe)
                .args([
                    "--rss-child",
                    mode,
                    if bound { "bound" } else { "unbound" },
                    &share.to_string(),
                ])
                .output()
                .expect("child runs");
            let text = String::from_utf8_lossy(&out.stdout);
            let mut parts = text.trim().splitn(3, ' ');
            let before = parts.next().unwrap_or("?");
            let peak = parts.next().unwrap_or("?");
            let outcome = parts.next().unwrap_or("?");
            println!(
                "| {what} | {share}{} | {} | {before} | {peak} | {outcome} |",
                if share == 8 { " (default)" } else { "" },
                if bound {
                    "16 MiB (default)"
                } else {
                    "off (1 GiB)"
                }
            );
        }
    }
}

fn startup_dir(with_hostile: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("providers dir");
    let mut files = vec![
        (component("providers", "bnr_dummy"), "bnr_dummy.wasm"),
        (component("fixtures", "bnr_fixture_hostile"), "hostile.wasm"),
        (
            component("fixtures", "bnr_fixture_scripted"),
            "scripted.wasm",
        ),
        (component("fixtures", "bnr_fixture_thief"), "thief.wasm"),
        (
            component("fixtures", "bnr_fixture_impostor"),
            "impostor.wasm",
        ),
        (
            component("fixtures", "bnr_fixture_wrong_world"),
            "wrong_world.wasm",
        ),
        (
            component("fixtures", "bnr_fixture_future_version"),
            "future.wasm",
        ),
        (
            component("fixtures", "bnr_fixture_scripted"),
            "scripted_copy.wasm",
        ),
        (
            component("fixtures", "bnr_fixture_hostile"),
            "hostile_copy.wasm",
        ),
    ];
    if with_hostile {
        files.push((
            component("fixtures", "bnr_fixture_slow_describe"),
            "slow_describe.wasm",
        ));
    } else {
        files.push((component("providers", "bnr_dummy"), "dummy_copy.wasm"));
    }
    for (source, name) in files {
        std::fs::copy(&source, dir.path().join(name))
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask plugins`)", source.display()));
    }
    dir
}

fn load_once(dir: &Path, cache: &Path) -> (Duration, usize) {
    let runtime = Runtime::new(RuntimeConfig::new(cache)).expect("runtime");
    let started = Instant::now();
    let results = Catalog::new().load_dir(&runtime, dir);
    let elapsed = started.elapsed();
    (elapsed, results.iter().filter(|(_, r)| r.is_ok()).count())
}

fn startup() {
    println!("\n## Start-up: loading 10 components\n");
    println!("| directory | cache | load time | loaded |");
    println!("|---|---|---:|---:|");
    for with_hostile in [false, true] {
        let dir = startup_dir(with_hostile);
        let cache = tempfile::tempdir().expect("cache");
        let label = if with_hostile {
            "9 + one whose describe() never returns"
        } else {
            "10 well-behaved files"
        };
        let (cold, loaded) = load_once(dir.path(), cache.path());
        println!(
            "| {label} | cold | {:.2} s | {loaded} |",
            cold.as_secs_f64()
        );
        let (warm, loaded) = load_once(dir.path(), cache.path());
        println!(
            "| {label} | cached | {:.2} s | {loaded} |",
            warm.as_secs_f64()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--rss-child") {
        let mode = args.get(at + 1).map_or("ok", String::as_str);
        let bound = args.get(at + 2).is_some_and(|b| b == "bound");
        let share = args.get(at + 3).and_then(|s| s.parse().ok()).unwrap_or(32);
        rss_child(mode, bound, share);
        return;
    }
    rss_scenarios();
    startup();
}
