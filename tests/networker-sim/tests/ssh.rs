//! The KVM host side over real SSH (russh client): CloudStack's script command lines, their
//! validation, exit codes and output, and their effect on the NetWorker state seen over REST.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use networker_sim::http::request;
use networker_sim::{Config, Domain, HostConfig, Running, SavetimeLine};
use russh::ChannelMsg;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use serde_json::{Value, json};

const SCRIPTS: &str = "/usr/share/cloudstack-common/scripts/vm/hypervisor/kvm";
const UUID: &str = "5f1c3b7e-9a8d-4c2b-8e1f-0a1b2c3d4e5f";
const VM: &str = "i-2-15-VM";
const POOL: &str = "/mnt/7a1e6c22-pool";

struct Client {
    seen: Arc<std::sync::Mutex<Option<String>>>,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = key {
            *self.seen.lock().unwrap() = Some(key.fingerprint(HashAlg::Sha256).to_string());
        }
        Ok(true)
    }
}

fn domain() -> Domain {
    Domain {
        name: VM.into(),
        uuid: UUID.into(),
        disks: vec![
            networker_sim::Disk {
                target: "vda".into(),
                path: format!("{POOL}/root-volume-uuid"),
                size: 5 << 30,
                device: "disk".into(),
            },
            networker_sim::Disk {
                target: "vdb".into(),
                path: format!("{POOL}/data-volume-uuid"),
                size: 3 << 30,
                device: "disk".into(),
            },
            networker_sim::Disk {
                target: "hdc".into(),
                path: "/usr/share/cloudstack-common/vms/systemvm.iso".into(),
                size: 1 << 20,
                device: "cdrom".into(),
            },
        ],
    }
}

async fn start_with(client_key: Option<&PrivateKey>) -> Running {
    let mut kvm1 = HostConfig::new("kvm1", "cluster1");
    kvm1.domains = vec![domain()];
    if let Some(key) = client_key {
        kvm1.authorized_keys = vec![key.public_key().clone()];
    }
    let kvm2 = HostConfig::new("kvm2", "cluster1");
    networker_sim::start(Config {
        hosts: vec![kvm1, kvm2],
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn start() -> Running {
    start_with(None).await
}

enum Auth<'a> {
    Password(&'a str),
    Key(&'a PrivateKey),
}

struct Run {
    exit: Option<u32>,
    stdout: String,
    stderr: String,
}

async fn connect(
    addr: std::net::SocketAddr,
    auth: Auth<'_>,
) -> Result<russh::client::Handle<Client>, String> {
    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(
        config,
        addr,
        Client {
            seen: Default::default(),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let result = match auth {
        Auth::Password(p) => session.authenticate_password("root", p).await,
        Auth::Key(key) => {
            session
                .authenticate_publickey(
                    "root",
                    PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None),
                )
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    if !result.success() {
        return Err("authentication failed".into());
    }
    Ok(session)
}

/// Runs `command` on `host` and collects everything until the channel closes.
async fn run_on(sim: &Running, host: &str, auth: Auth<'_>, command: &str) -> Result<Run, String> {
    let session = connect(sim.host(host).unwrap().ssh_addr, auth).await?;
    let mut channel = session
        .channel_open_session()
        .await
        .map_err(|e| e.to_string())?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| e.to_string())?;
    let mut run = Run {
        exit: None,
        stdout: String::new(),
        stderr: String::new(),
    };
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => run.stdout.push_str(&String::from_utf8_lossy(&data)),
            ChannelMsg::ExtendedData { data, .. } => {
                run.stderr.push_str(&String::from_utf8_lossy(&data))
            }
            ChannelMsg::ExitStatus { exit_status } => run.exit = Some(exit_status),
            _ => {}
        }
    }
    Ok(run)
}

async fn run(sim: &Running, command: &str) -> Run {
    run_on(sim, "kvm1", Auth::Password("password"), command)
        .await
        .unwrap()
}

fn backup_command(extra: &str) -> String {
    format!(
        "{SCRIPTS}/nsrkvmbackup.sh -s 127.0.0.1 -R '7 Days' -P Default -c cluster1 -u {UUID} -t {VM}{extra}"
    )
}

fn save_sets(sim: &Running) -> usize {
    sim.admin.with_state(|s| s.save_sets.len())
}

async fn rest(sim: &Running, path_and_query: &str) -> Value {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("administrator:password")
    );
    let r = request(
        "GET",
        &format!("{}{path_and_query}", sim.rest_url),
        &[("Authorization", &auth)],
        None,
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn cloudstacks_backup_command_creates_a_save_set_and_prints_its_save_time() {
    let sim = start().await;
    let run = run(&sim, &format!("sudo {}", backup_command(""))).await;
    assert_eq!(run.exit, Some(0), "{} {}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(
            "\nCloudstack B&R Framework - EMC Networker backup script\nVersion 0.9.1\n"
        )
    );
    let saved: i64 = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("savetime="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(run.stderr.contains(&format!("completed savetime={saved}")));
    let list = rest(&sim, &format!("/global/backups/?q=name:{VM}")).await;
    assert_eq!(list["count"], 1);
    let b = &list["backups"][0];
    assert_eq!(b["clientHostname"], "cluster1");
    assert_eq!(b["instances"][0]["id"], saved.to_string());
    // The two file-backed disks, not the CD-ROM.
    assert_eq!(b["size"]["value"], (5u64 << 30) + (3u64 << 30));
    assert_eq!(b["fileCount"], 2);
    assert_eq!(b["attributes"][0]["values"][0], "kvm1");
    let counters = sim.admin.host_counters("kvm1").unwrap();
    assert_eq!(
        (counters.ssh_sessions, counters.commands, counters.backups),
        (1, 1, 1)
    );
    eventually("the session to close", || {
        sim.admin.host_counters("kvm1").unwrap().ssh_live == 0
    })
    .await;
    assert_eq!(sim.admin.counters().ssh_live, 0);
}

#[tokio::test]
async fn verbose_output_and_the_other_savetime_forms() {
    let sim = start().await;
    let verbose = run(&sim, &backup_command(" -v")).await;
    assert_eq!(verbose.exit, Some(0));
    for line in [
        "Performing environment sanity checks...",
        "\t[1] Checking if Networker is installed\tSuccess",
        "Environment Sanity Checks successfully passed",
        &format!("Domain {VM} with UUID {UUID} found...."),
        "Retention time is 7 Days",
        &format!("\tDisk for vda is at {POOL}/root-volume-uuid"),
    ] {
        assert!(
            verbose.stdout.contains(line),
            "{line:?} in {}",
            verbose.stdout
        );
    }
    assert!(verbose.stdout.contains("\ncompleted savetime="));

    sim.admin
        .host_faults("kvm1", |f| f.savetime_line = SavetimeLine::Bare)
        .unwrap();
    let bare = run(&sim, &backup_command("")).await;
    assert!(bare.stdout.contains("savetime="));
    assert!(!bare.stdout.contains("completed") && !bare.stderr.contains("completed"));
    sim.admin
        .host_faults("kvm1", |f| f.savetime_line = SavetimeLine::None)
        .unwrap();
    let none = run(&sim, &backup_command("")).await;
    assert_eq!(none.exit, Some(0));
    assert!(!none.stdout.contains("savetime=") && !none.stderr.contains("savetime="));
    assert_eq!(save_sets(&sim), 3);
}

#[tokio::test]
async fn arguments_are_validated_like_the_script_does() {
    let sim = start().await;
    let missing = run(
        &sim,
        &format!("{SCRIPTS}/nsrkvmbackup.sh -s 127.0.0.1 -c cluster1 -t {VM}"),
    )
    .await;
    assert_eq!(missing.exit, Some(255));
    assert!(missing.stdout.contains("Usage:[-v] [-h]"));
    let unknown = run(&sim, &backup_command(" -x")).await;
    assert_eq!(unknown.exit, Some(254));
    assert!(
        unknown
            .stderr
            .contains("nsrkvmbackup.sh: illegal option -- x")
    );
    let no_value = run(&sim, &format!("{SCRIPTS}/nsrkvmbackup.sh -s")).await;
    assert_eq!(no_value.exit, Some(254));
    assert!(no_value.stderr.contains("option requires an argument -- s"));
    assert_eq!(
        run(&sim, &format!("{SCRIPTS}/nsrkvmbackup.sh -h"))
            .await
            .exit,
        Some(254)
    );

    let wrong_uuid = run(
        &sim,
        &format!("{SCRIPTS}/nsrkvmbackup.sh -s 127.0.0.1 -R '7 Days' -P Default -c cluster1 -u 00000000-0000-0000-0000-000000000000 -t {VM}"),
    )
    .await;
    assert_eq!(wrong_uuid.exit, Some(5));
    assert!(
        wrong_uuid
            .stderr
            .contains("error: failed to get domain '00000000-0000-0000-0000-000000000000'")
    );
    let elsewhere = run_on(
        &sim,
        "kvm2",
        Auth::Password("password"),
        &backup_command(""),
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.exit, Some(5));

    let unresolvable = run(
        &sim,
        &format!("{SCRIPTS}/nsrkvmbackup.sh -s nowhere.invalid -R '7 Days' -P Default -c cluster1 -u {UUID} -t {VM}"),
    )
    .await;
    assert_eq!(unresolvable.exit, Some(3));

    let not_there = run(&sim, "/tmp/nsrkvmbackup.sh -s x").await;
    assert_eq!(not_there.exit, Some(127));
    assert!(not_there.stderr.contains("No such file or directory"));
    assert_eq!(run(&sim, "nsrkvmbackup.sh").await.exit, Some(127));
    let injected = run(&sim, &format!("{}; rm -rf /", backup_command(""))).await;
    assert_eq!(injected.exit, Some(2));
    assert_eq!(save_sets(&sim), 0);
}

#[tokio::test]
async fn a_save_that_fails_still_exits_zero_without_a_save_time() {
    let sim = start().await;
    let bad_pool = run(
        &sim,
        &format!("{SCRIPTS}/nsrkvmbackup.sh -s 127.0.0.1 -R '7 Days' -P NoSuchPool -c cluster1 -u {UUID} -t {VM}"),
    )
    .await;
    assert_eq!(bad_pool.exit, Some(0));
    assert!(bad_pool.stderr.contains("pool `NoSuchPool' does not exist"));
    assert!(!bad_pool.stdout.contains("savetime="));
    let bad_client = run(
        &sim,
        &format!("{SCRIPTS}/nsrkvmbackup.sh -s 127.0.0.1 -R '7 Days' -P Default -c cluster9 -u {UUID} -t {VM}"),
    )
    .await;
    assert!(bad_client.stderr.contains("not properly configured"));
    let bad_retention = run(
        &sim,
        &format!("{SCRIPTS}/nsrkvmbackup.sh -s 127.0.0.1 -R 'whenever' -P Default -c cluster1 -u {UUID} -t {VM}"),
    )
    .await;
    assert!(bad_retention.stderr.contains("invalid expiration time"));
    sim.admin
        .host_faults("kvm1", |f| f.save_fails = true)
        .unwrap();
    let failing = run(&sim, &backup_command("")).await;
    assert_eq!(failing.exit, Some(0));
    assert!(!failing.stdout.contains("savetime="));
    assert_eq!(save_sets(&sim), 0);
}

#[tokio::test]
async fn every_injected_backup_exit_code_ends_the_script_at_its_step() {
    let sim = start().await;
    for code in [1u32, 2, 3, 4, 5, 7, 8, 254, 255] {
        sim.admin
            .host_faults("kvm1", |f| f.backup_exit = Some(code))
            .unwrap();
        let before = save_sets(&sim);
        let r = run(&sim, &backup_command(" -v")).await;
        assert_eq!(r.exit, Some(code), "{}", r.stdout);
        // Only a failing block commit comes after `save`.
        assert_eq!(
            save_sets(&sim) - before,
            usize::from(code == 8),
            "exit {code}"
        );
    }
    let bad = request(
        "PUT",
        &format!("{}/hosts/kvm1/faults", sim.admin_url),
        &[],
        Some(br#"{"backup_exit": 6}"#),
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn restore_in_place_recovers_the_save_sets_files() {
    let sim = start().await;
    let backup = run(&sim, &backup_command("")).await;
    assert_eq!(backup.exit, Some(0));
    let list = rest(&sim, &format!("/global/backups/?q=name:{VM}")).await;
    let ssid = list["backups"][0]["shortId"].as_str().unwrap().to_string();
    let id = list["backups"][0]["id"].as_str().unwrap().to_string();

    let restore = run_on(
        &sim,
        "kvm2",
        Auth::Password("password"),
        &format!("{SCRIPTS}/nsrkvmrestore.sh -s 127.0.0.1 -S {ssid} -v"),
    )
    .await
    .unwrap();
    assert_eq!(restore.exit, Some(0), "{}", restore.stderr);
    assert!(
        restore
            .stdout
            .contains(&format!("Restore of SAVESET {ssid} has been completed"))
    );
    let recovered = sim.admin.with_state(|s| {
        s.hosts["kvm2"].files[&format!("{POOL}/root-volume-uuid")]
            .recovered_from
            .clone()
    });
    assert_eq!(recovered.as_deref(), Some(id.as_str()));

    let unknown = run(
        &sim,
        &format!("{SCRIPTS}/nsrkvmrestore.sh -s 127.0.0.1 -S 12345"),
    )
    .await;
    assert_eq!(unknown.exit, Some(4));
    let no_server = run(&sim, &format!("{SCRIPTS}/nsrkvmrestore.sh -S {ssid}")).await;
    assert_eq!(no_server.exit, Some(255));
    assert!(no_server.stdout.contains("Usage:"));
    let nothing = run(&sim, &format!("{SCRIPTS}/nsrkvmrestore.sh -s 127.0.0.1")).await;
    assert_eq!(nothing.exit, Some(255));
    assert!(!nothing.stdout.contains("Usage:"));
    for code in [1u32, 2, 3, 4, 250, 254, 255] {
        sim.admin
            .host_faults("kvm1", |f| f.restore_exit = Some(code))
            .unwrap();
        let r = run(
            &sim,
            &format!("{SCRIPTS}/nsrkvmrestore.sh -s 127.0.0.1 -S {ssid}"),
        )
        .await;
        assert_eq!(r.exit, Some(code));
    }
}

#[tokio::test]
async fn a_volume_is_restored_under_its_new_name_on_the_destination_host() {
    let sim = start().await;
    assert_eq!(run(&sim, &backup_command("")).await.exit, Some(0));
    let restore_as = |dest: &str, source: &str, new: &str| {
        format!(
            "{SCRIPTS}/nsrkvmrestore.sh -s 127.0.0.1 -c cluster1 -d {dest} -n {new} -p {POOL} -a {source}"
        )
    };
    let volume = |dest: &str, source: &str| restore_as(dest, source, "new-volume-uuid");
    let r = run_on(
        &sim,
        "kvm2",
        Auth::Password("password"),
        &volume("kvm2", "data-volume-uuid"),
    )
    .await
    .unwrap();
    assert_eq!(r.exit, Some(0), "{}", r.stderr);
    let file = sim.admin.with_state(|s| {
        s.hosts["kvm2"]
            .files
            .get(&format!("{POOL}/new-volume-uuid"))
            .map(|f| f.size)
    });
    assert_eq!(file, Some(3 << 30));

    // On the source host the original file exists: the recovered one lands as `.R` first.
    let same_host = run(&sim, &volume("kvm1", "root-volume-uuid")).await;
    assert_eq!(same_host.exit, Some(0));
    sim.admin.with_state(|s| {
        let files = &s.hosts["kvm1"].files;
        assert!(files.contains_key(&format!("{POOL}/root-volume-uuid")));
        assert!(files.contains_key(&format!("{POOL}/new-volume-uuid")));
        assert!(!files.contains_key(&format!("{POOL}/root-volume-uuid.R")));
    });

    // Recovered onto another host: nothing to rename here.
    let elsewhere = run_on(
        &sim,
        "kvm2",
        Auth::Password("password"),
        &restore_as("kvm1", "data-volume-uuid", "other-uuid"),
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.exit, Some(6));
    let not_saved = run(&sim, &volume("kvm1", "never-saved")).await;
    assert_eq!(not_saved.exit, Some(5));
    let unknown_dest = run(&sim, &volume("nohost", "data-volume-uuid")).await;
    assert_eq!(unknown_dest.exit, Some(5));
    let missing = run(
        &sim,
        &format!("{SCRIPTS}/nsrkvmrestore.sh -s 127.0.0.1 -n x -p {POOL}"),
    )
    .await;
    assert_eq!(missing.exit, Some(255));
    let both = run(
        &sim,
        &format!("{SCRIPTS}/nsrkvmrestore.sh -s 127.0.0.1 -S 1 -c cluster1 -d kvm1 -n x -p {POOL}"),
    )
    .await;
    assert_eq!(both.exit, Some(0));
    for code in [5u32, 6] {
        sim.admin
            .host_faults("kvm1", |f| f.restore_exit = Some(code))
            .unwrap();
        assert_eq!(
            run(&sim, &volume("kvm1", "data-volume-uuid")).await.exit,
            Some(code)
        );
    }
}

#[tokio::test]
async fn public_keys_and_passwords_are_checked_and_the_host_key_is_the_announced_one() {
    let client_key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let stranger = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let sim = start_with(Some(&client_key)).await;
    let by_key = run_on(&sim, "kvm1", Auth::Key(&client_key), &backup_command(""))
        .await
        .unwrap();
    assert_eq!(by_key.exit, Some(0));
    assert!(
        connect(sim.ssh_addr.unwrap(), Auth::Key(&stranger))
            .await
            .is_err()
    );
    assert!(
        connect(sim.ssh_addr.unwrap(), Auth::Password("wrong"))
            .await
            .is_err()
    );
    assert!(sim.admin.host_counters("kvm1").unwrap().ssh_auth_failures >= 2);

    let seen = Arc::new(std::sync::Mutex::new(None));
    let _session = russh::client::connect(
        Arc::new(russh::client::Config::default()),
        sim.ssh_addr.unwrap(),
        Client { seen: seen.clone() },
    )
    .await
    .unwrap();
    let announced = sim.host_key_fingerprint.clone().unwrap();
    assert!(announced.starts_with("SHA256:"));
    assert_eq!(seen.lock().unwrap().as_deref(), Some(announced.as_str()));
    assert_ne!(sim.host("kvm2").unwrap().host_key_fingerprint, announced);
}

#[tokio::test]
async fn a_hanging_script_never_exits_and_its_session_ends_with_the_client() {
    let sim = start().await;
    sim.admin.host_faults("kvm1", |f| f.hang = true).unwrap();
    let session = connect(sim.ssh_addr.unwrap(), Auth::Password("password"))
        .await
        .unwrap();
    let mut channel = session.channel_open_session().await.unwrap();
    channel.exec(true, backup_command("")).await.unwrap();
    let mut banner = false;
    let waited = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    banner |= String::from_utf8_lossy(&data).contains("Networker backup script")
                }
                ChannelMsg::ExitStatus { .. } => return true,
                _ => {}
            }
        }
        true
    })
    .await;
    assert!(waited.is_err(), "the script ended");
    assert!(banner);
    assert_eq!(sim.admin.host_counters("kvm1").unwrap().ssh_live, 1);
    drop(channel);
    drop(session);
    eventually("the hanging session to end", || {
        sim.admin.host_counters("kvm1").unwrap().ssh_live == 0
    })
    .await;
}

#[tokio::test]
async fn a_skewed_host_clock_puts_save_times_outside_the_servers_window() {
    let sim = start().await;
    sim.admin
        .host_faults("kvm1", |f| f.clock_skew_secs = 3 * 3600)
        .unwrap();
    let server_now = jiff::Timestamp::now();
    let r = run(&sim, &backup_command("")).await;
    let saved: i64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("savetime="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(saved >= server_now.as_second() + 3 * 3600 - 5);
    let fmt = |t: i64| {
        jiff::Timestamp::from_second(t)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string()
    };
    let window = format!(
        "/global/backups/?q=name:{VM}+and+saveTime:['{}'+TO+'{}']",
        fmt(server_now.as_second() - 300),
        fmt(server_now.as_second() + 300)
    );
    assert_eq!(rest(&sim, &window).await["count"], 0);
    let exact = format!("/global/backups/?q=name:{VM}+and+saveTime:'{}'", fmt(saved));
    assert_eq!(rest(&sim, &exact).await["count"], 1);
}

#[tokio::test]
async fn a_long_backup_shows_its_save_set_in_progress_until_it_ends() {
    let sim = start().await;
    sim.admin
        .host_faults("kvm1", |f| f.backup_duration_ms = 1500)
        .unwrap();
    let addr = sim.ssh_addr.unwrap();
    let running = tokio::spawn(async move {
        let session = connect(addr, Auth::Password("password")).await.unwrap();
        let mut channel = session.channel_open_session().await.unwrap();
        channel.exec(true, backup_command("")).await.unwrap();
        let mut exit = None;
        while let Some(msg) = channel.wait().await {
            if let ChannelMsg::ExitStatus { exit_status } = msg {
                exit = Some(exit_status);
            }
        }
        exit
    });
    eventually("the save set to appear", || save_sets(&sim) == 1).await;
    let during = rest(&sim, &format!("/global/backups/?q=name:{VM}")).await;
    assert!(
        during["backups"][0].get("completionTime").is_none(),
        "{during}"
    );
    assert_eq!(during["backups"][0]["instances"][0]["status"], "InProgress");
    assert_eq!(running.await.unwrap(), Some(0));
    let after = rest(&sim, &format!("/global/backups/?q=name:{VM}")).await;
    assert!(after["backups"][0]["completionTime"].is_string(), "{after}");
}

#[tokio::test]
async fn a_host_attached_through_the_admin_endpoint_shares_the_servers_state() {
    // As `kvmhost-sim --networker URL` does: register, then serve SSH against the admin API.
    let sim = networker_sim::start(Config::default()).await.unwrap();
    let body = json!({"name": "kvm9", "cluster": "cluster9", "domains": [domain()]});
    networker_sim::ssh::admin_call(&sim.admin_url, "/hosts", &body.to_string())
        .await
        .unwrap();
    let key = networker_sim::ssh::generate_host_key().unwrap();
    let access = networker_sim::ssh::Access {
        username: "root".into(),
        password: Some("secret".into()),
        authorized_keys: Vec::new(),
    };
    let (addr, _, _task) = networker_sim::ssh::start(
        networker_sim::ssh::Backend::Remote(sim.admin_url.clone()),
        "kvm9".into(),
        access,
        key,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let session = connect(addr, Auth::Password("secret")).await.unwrap();
    let mut channel = session.channel_open_session().await.unwrap();
    channel
        .exec(
            true,
            format!("{SCRIPTS}/nsrkvmbackup.sh -s 127.0.0.1 -R '1 Days' -P Default -c cluster9 -u {UUID} -t {VM}"),
        )
        .await
        .unwrap();
    let mut exit = None;
    while let Some(msg) = channel.wait().await {
        if let ChannelMsg::ExitStatus { exit_status } = msg {
            exit = Some(exit_status);
        }
    }
    assert_eq!(exit, Some(0));
    assert_eq!(
        rest(&sim, "/global/backups/?q=client:cluster9").await["count"],
        1
    );
    assert_eq!(sim.admin.host_counters("kvm9").unwrap().ssh_sessions, 1);
    assert!(connect(addr, Auth::Password("wrong")).await.is_err());
    eventually("the failure to be counted", || {
        sim.admin.host_counters("kvm9").unwrap().ssh_auth_failures == 1
    })
    .await;
}
