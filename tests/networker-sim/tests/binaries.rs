//! The two binaries started as a user starts them: `kvmhost-sim` attached to a running
//! `networker-sim`, sharing its state; the host key file keeps the fingerprint across restarts.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use russh::keys::PublicKeyOrCertificate;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const UUID: &str = "5f1c3b7e-9a8d-4c2b-8e1f-0a1b2c3d4e5f";
const VM: &str = "i-2-15-VM";

struct Client;

impl russh::client::Handler for Client {
    type Error = russh::Error;
    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Starts `program` and returns it with the first stdout lines that contain each of `wanted`.
async fn spawn(program: &str, args: &[&str], wanted: &[&str]) -> (Child, Vec<String>) {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut found = Vec::new();
    for want in wanted {
        let line = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match lines.next_line().await.unwrap() {
                    Some(line) if line.contains(want) => return line,
                    Some(_) => continue,
                    None => panic!("{program} ended before printing {want}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{program} did not print {want}"));
        found.push(line);
    }
    (child, found)
}

fn after<'a>(line: &'a str, marker: &str) -> &'a str {
    line.split(marker)
        .nth(1)
        .unwrap()
        .split([' ', ','])
        .next()
        .unwrap()
}

async fn backup_over_ssh(addr: &str, password: &str) -> u32 {
    let mut session =
        russh::client::connect(Arc::new(russh::client::Config::default()), addr, Client)
            .await
            .unwrap();
    assert!(
        session
            .authenticate_password("root", password)
            .await
            .unwrap()
            .success()
    );
    let mut channel = session.channel_open_session().await.unwrap();
    channel
        .exec(
            true,
            format!(
                "sudo /usr/share/cloudstack-common/scripts/vm/hypervisor/kvm/nsrkvmbackup.sh -s 127.0.0.1 -R '7 Days' -P Default -c cluster1 -u {UUID} -t {VM}"
            ),
        )
        .await
        .unwrap();
    let mut exit = None;
    while let Some(msg) = channel.wait().await {
        if let ChannelMsg::ExitStatus { exit_status } = msg {
            exit = Some(exit_status);
        }
    }
    exit.unwrap()
}

#[tokio::test]
async fn kvmhost_sim_works_on_networker_sims_state_and_keeps_its_host_key() {
    let (_server, lines) = spawn(
        env!("CARGO_BIN_EXE_networker-sim"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &["REST API at", "admin at", "TLS certificate SHA-256"],
    )
    .await;
    assert!(after(&lines[0], "REST API at ").starts_with("https://127.0.0.1:"));
    let admin = after(&lines[1], "admin at ").to_string();
    assert_eq!(after(&lines[2], "SHA-256 ").len(), 64);

    let key_file = std::env::temp_dir().join(format!(
        "kvmhost-sim-test-{}-{}.key",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    let key_path = key_file.to_str().unwrap().to_string();
    let domain = format!("{VM}={UUID}");
    let host_args = [
        "--listen",
        "127.0.0.1:0",
        "--networker",
        &admin,
        "--name",
        "kvm1",
        "--cluster",
        "cluster1",
        "--password",
        "s3cret",
        "--host-key",
        &key_path,
        "--domain",
        &domain,
    ];
    let (host, lines) = spawn(env!("CARGO_BIN_EXE_kvmhost-sim"), &host_args, &["SSH at"]).await;
    let addr = after(&lines[0], "SSH at ").to_string();
    let fingerprint = after(&lines[0], "host key ").to_string();
    assert!(fingerprint.starts_with("SHA256:"));

    assert_eq!(backup_over_ssh(&addr, "s3cret").await, 0);
    let state = networker_sim::http::request(
        "GET",
        &format!("{admin}/state"),
        &[],
        None,
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap()
    .json()
    .unwrap();
    let save_sets = state["save_sets"].as_array().unwrap();
    assert_eq!(save_sets.len(), 1);
    assert_eq!(save_sets[0]["name"], VM);
    assert_eq!(save_sets[0]["clientHostname"], "cluster1");
    assert_eq!(state["counters"]["hosts"]["kvm1"]["ssh_sessions"], 1);

    drop(host);
    let (_again, lines) = spawn(env!("CARGO_BIN_EXE_kvmhost-sim"), &host_args, &["SSH at"]).await;
    assert_eq!(after(&lines[0], "host key "), fingerprint);
    let _ = std::fs::remove_file(&key_file);

    let refused = spawn_fails(&["--listen", "127.0.0.1:0", "--networker", "https://x/admin"]).await;
    assert!(refused.contains("http://"), "{refused}");
}

async fn spawn_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvmhost-sim"))
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
