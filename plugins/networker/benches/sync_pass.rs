//! A sync pass over 1,000 NetWorker-protected instances against `networker-sim` (no delays):
//! wall time and NetWorker requests of `metrics` (one call for all instances) and of
//! `list-restore-points` (one call per instance, as bnr's reconciliation makes them).
//!
//! `cargo bench -p bnr-networker --bench sync_pass`. Native build: the provider logic without
//! the wasm sandbox, the simulator in the same process.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use bnr_networker::ops::{self, Vm};
use bnr_networker::rest::Client;
use networker_sim::HostConfig;
use support::Http;

/// Instances of the pass (`NW_BENCH_INSTANCES` overrides, for a quick run).
fn instances() -> usize {
    std::env::var("NW_BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

fn main() {
    let count = instances();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut host = HostConfig::new("kvm1", "cluster1");
    host.any_domain = true;
    let sim = runtime
        .block_on(networker_sim::start(networker_sim::Config {
            hosts: vec![host],
            ..Default::default()
        }))
        .unwrap();
    let server = sim.rest_addr.ip().to_string();
    let vms: Vec<Vm> = (0..count)
        .map(|i| Vm {
            uuid: format!("00000000-0000-4000-8000-{i:012}"),
            internal_name: format!("i-2-{i}-VM"),
            hypervisor: "KVM".into(),
            state: "Running".into(),
            volume_bytes: 1 << 30,
        })
        .collect();
    let setup = Instant::now();
    for vm in &vms {
        let command = format!(
            "/usr/share/cloudstack-common/scripts/vm/hypervisor/kvm/nsrkvmbackup.sh -s {server} \
             -R '7 Days' -P Default -c cluster1 -u {} -t {}",
            vm.uuid, vm.internal_name
        );
        // One save a second, as a real server's save times (and SSIDs) are per second.
        sim.admin.advance_clock(1);
        let out = sim
            .admin
            .with_state(|s| networker_sim::script::exec(s, "kvm1", &command));
        assert_eq!(out.exit, 0, "{}", out.stderr);
    }
    eprintln!(
        "setup: {count} save sets in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
        + i64::try_from(count).unwrap();
    let client = || Client::new(&sim.rest_url, "administrator", "password", Http);

    let started = Instant::now();
    let mut c = client();
    let metrics = ops::metrics(&mut c, &vms, now).unwrap();
    let metrics_time = started.elapsed();
    assert_eq!(metrics.len(), count);
    let metrics_requests = c.requests;

    let started = Instant::now();
    let mut requests = 0;
    let mut points = 0;
    for vm in &vms {
        let mut c = client();
        points += ops::restore_points(&mut c, vm, now).unwrap().len();
        requests += c.requests;
    }
    let points_time = started.elapsed();
    assert_eq!(points, count);

    println!("instances: {count}");
    println!(
        "metrics (one call): {metrics_requests} requests, {:.1} ms",
        metrics_time.as_secs_f64() * 1e3
    );
    println!(
        "list-restore-points (one call per instance): {requests} requests, {:.1} ms",
        points_time.as_secs_f64() * 1e3
    );
    println!(
        "CloudStack's plugin, metrics for the same instances: {} requests (N0+N2 per instance, then N0+N4 per backup)",
        count * 4
    );
}
