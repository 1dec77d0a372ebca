//! Provider runtime benchmarks: `cargo bench -p bnr --bench runtime`.
//!
//! A small self-contained harness (warm-up, N timed iterations, median and p99) over the
//! dummy provider. Needs the components: `cargo xtask plugins` first. Prints a Markdown table
//! with the design targets and the ratio measured / target.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bnr_runtime::{CallContext, Provider, Runtime, RuntimeConfig, types};

struct Measurement {
    name: &'static str,
    iterations: usize,
    median: Duration,
    p99: Duration,
    target: Option<Duration>,
}

fn summarize(
    name: &'static str,
    mut samples: Vec<Duration>,
    target: Option<Duration>,
) -> Measurement {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Measurement {
        name,
        iterations: samples.len(),
        median: at(0.5),
        p99: at(0.99),
        target,
    }
}

/// Runs `op` `warmup` times untimed, then `iterations` times timed one by one.
fn measure(
    name: &'static str,
    warmup: usize,
    iterations: usize,
    target: Option<Duration>,
    mut op: impl FnMut(),
) -> Measurement {
    for _ in 0..warmup {
        op();
    }
    let samples = (0..iterations)
        .map(|_| {
            let started = Instant::now();
            op();
            started.elapsed()
        })
        .collect();
    summarize(name, samples, target)
}

/// Like [`measure`] for an async expression, timed inside one tokio runtime.
macro_rules! measure_async {
    ($tokio:expr, $name:expr, $warmup:expr, $iterations:expr, $target:expr, $op:expr) => {
        $tokio.block_on(async {
            for _ in 0..$warmup {
                $op;
            }
            let mut samples = Vec::with_capacity($iterations);
            for _ in 0..$iterations {
                let started = Instant::now();
                $op;
                samples.push(started.elapsed());
            }
            summarize($name, samples, $target)
        })
    };
}

fn dummy_wasm() -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .unwrap_or_else(|| {
            // <target>/release/deps/runtime-<hash>
            let exe = std::env::current_exe().expect("bench binary path");
            exe.ancestors()
                .nth(3)
                .expect("<target>/<profile>/deps")
                .to_path_buf()
        });
    let candidates = [
        target.join("wasm32-wasip2/plugin/bnr_dummy.wasm"),
        target.join("providers/bnr_dummy.wasm"),
    ];
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            return bytes;
        }
    }
    panic!("bnr_dummy.wasm not found in {candidates:?}; run `cargo xtask plugins` first");
}

fn show(duration: Duration) -> String {
    let nanos = duration.as_nanos() as f64;
    if nanos < 10_000.0 {
        format!("{:.2} µs", nanos / 1e3)
    } else if nanos < 1_000_000.0 {
        format!("{:.1} µs", nanos / 1e3)
    } else {
        format!("{:.2} ms", nanos / 1e6)
    }
}

/// Virtual address space of this process in KiB (Linux), to show what the pool reserves.
fn vm_size_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let wasm = dummy_wasm();
    let cache = std::env::temp_dir().join(format!("bnr-bench-cache-{}", std::process::id()));
    let config = RuntimeConfig::new(&cache);
    let pool_instances = config.pool.max_instances;
    let vm_before = vm_size_kib();
    let rt: Arc<Runtime> = Runtime::new(config).expect("runtime");
    assert!(
        rt.pooling_enabled(),
        "the benchmark expects the pooling allocator"
    );
    if let (Some(before), Some(after)) = (vm_before, vm_size_kib()) {
        let reserved_gib = after.saturating_sub(before) as f64 / (1024.0 * 1024.0);
        println!(
            "pooling allocator, {pool_instances} instance slots: +{reserved_gib:.1} GiB of \
             virtual address space reserved\n"
        );
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut results = Vec::new();

    let first = rt.load_bytes(&wasm).expect("load dummy");
    let artifact = rt.cache_entry_path(first.sha256());
    let header = artifact.with_extension("meta");
    results.push(measure(
        "cold load: inspect + compile + write cache + describe",
        1,
        10,
        None,
        || {
            std::fs::remove_file(&artifact).expect("remove cached artifact");
            std::fs::remove_file(&header).expect("remove cache header");
            let provider = rt.load_bytes(&wasm).expect("cold load");
            assert!(!provider.loaded_from_cache());
        },
    ));
    results.push(measure(
        "cached load: inspect + verify + deserialize + describe",
        20,
        300,
        Some(Duration::from_millis(1)),
        || {
            let provider = rt.load_bytes(&wasm).expect("cached load");
            assert!(provider.loaded_from_cache());
        },
    ));

    let dummy: Arc<Provider> = rt.load_bytes(&wasm).expect("load dummy");
    let ctx = CallContext::default();
    let zone = types::Zone {
        uuid: "zone-1".into(),
        name: "Zone One".into(),
    };

    results.push(measure_async!(
        tokio,
        "fresh store + instantiate + call (validate-policy)",
        500,
        5_000,
        Some(Duration::from_micros(30)),
        assert!(
            dummy
                .validate_policy(&ctx, &zone, "gold-policy")
                .await
                .unwrap()
        )
    ));
    results.push(measure_async!(
        tokio,
        "fresh store + instantiate + call (list-policies, 2 records)",
        500,
        5_000,
        Some(Duration::from_micros(30)),
        assert_eq!(dummy.list_policies(&ctx, &zone).await.unwrap().len(), 2)
    ));

    let mut session = tokio.block_on(dummy.session(&ctx)).expect("session");
    results.push(measure_async!(
        tokio,
        "warm call on a reused instance (validate-policy)",
        2_000,
        50_000,
        Some(Duration::from_micros(2)),
        assert!(session.validate_policy(&zone, "gold-policy").await.unwrap())
    ));
    results.push(measure_async!(
        tokio,
        "warm call on a reused instance (list-policies, 2 records)",
        2_000,
        50_000,
        Some(Duration::from_micros(2)),
        assert_eq!(session.list_policies(&zone).await.unwrap().len(), 2)
    ));
    drop(session);

    println!("| measurement | n | median | p99 | target | median / target |");
    println!("|---|---:|---:|---:|---:|---:|");
    for m in &results {
        let (target, ratio) = match m.target {
            Some(t) => (
                format!("≤ {}", show(t)),
                format!("{:.2}", m.median.as_secs_f64() / t.as_secs_f64()),
            ),
            None => ("–".to_owned(), "–".to_owned()),
        };
        println!(
            "| {} | {} | {} | {} | {target} | {ratio} |",
            m.name,
            m.iterations,
            show(m.median),
            show(m.p99)
        );
    }
    let _ = std::fs::remove_dir_all(&cache);
}
