//! `cargo xtask ha [--replicas N]`: PostgreSQL from Debian's packages (a throw-away cluster on a
//! Unix socket in a temporary directory, as a non-root user) and N `bnr serve --cluster`
//! replicas on loopback, for trying replicas by hand. Runs until Ctrl-C, then stops the
//! replicas (SIGTERM, each drains) and the database, and deletes both.

use crate::postgres::TempPostgres;
use crate::{Result, plugins, workspace};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Replicas started unless `--replicas` says otherwise.
const DEFAULT_REPLICAS: usize = 3;
/// More would only exhaust the machine (and the cluster's `max_connections`).
const MAX_REPLICAS: usize = 9;
/// The lease the replicas run with: short, so a takeover is seen within seconds.
const LEASE_SECS: &str = "5";
/// How long a replica may take to start serving (the first one compiles the providers).
const START_BOUND: Duration = Duration::from_secs(120);
/// How long a replica may take to drain after SIGTERM before it is killed.
const STOP_BOUND: Duration = Duration::from_secs(40);
/// The database the replicas share.
const DATABASE: &str = "bnr";

/// Set by the SIGINT handler; the main loop polls it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn run(args: &[String]) -> Result<()> {
    let replicas = parse_replicas(args)?;
    plugins::build_all()?;
    let bnr = workspace::build_bnr()?;
    let target = workspace::target_dir()?;
    let providers = target.join("providers");

    catch_interrupt();
    let postgres = TempPostgres::start()?;
    postgres.create_database(DATABASE)?;
    let url = postgres.database_url(DATABASE);
    let work = std::env::temp_dir().join(format!("bnr-ha-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let outcome = run_replicas(&bnr, &providers, &url, &work, replicas);
    let _ = std::fs::remove_dir_all(&work);
    drop(postgres);
    outcome
}

/// `--replicas N` (1 to [`MAX_REPLICAS`]), nothing else.
fn parse_replicas(args: &[String]) -> Result<usize> {
    match args {
        [] => Ok(DEFAULT_REPLICAS),
        [flag, n] if flag == "--replicas" => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
            _ => Err(
                format!("--replicas takes a number from 1 to {MAX_REPLICAS} (got `{n}`)").into(),
            ),
        },
        _ => Err(format!(
            "usage: cargo xtask ha [--replicas N] (got `{}`)",
            args.join(" ")
        )
        .into()),
    }
}

/// Replicas that are running, stopped (SIGTERM, bounded) on drop.
struct Replicas(Vec<Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let started = Instant::now();
        for child in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && started.elapsed() < STOP_BOUND {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_replicas(bnr: &Path, providers: &Path, url: &str, work: &Path, n: usize) -> Result<()> {
    let password = random_token(12)?;
    let (api_key, secret_key) = (random_token(24)?, random_token(32)?);
    let key = base64(&random_bytes(32)?);
    let mut running = Replicas(Vec::new());
    let mut lines = Vec::new();
    for i in 1..=n {
        let addr = free_loopback_addr()?;
        let dir = work.join(format!("replica-{i}"));
        let log = work.join(format!("replica-{i}.log"));
        let mut command = Command::new(bnr);
        command
            .args(["serve", "--cluster", "--replica-lease-secs", LEASE_SECS])
            .args(["--listen", &addr, "--database", url])
            .arg("--data-dir")
            .arg(&dir)
            .arg("--providers-dir")
            .arg(providers)
            .env("BNR_ENCRYPTION_KEY", &key)
            .env("BNR_ADMIN_PASSWORD", &password)
            .env("BNR_ADMIN_API_KEY", &api_key)
            .env("BNR_ADMIN_SECRET_KEY", &secret_key)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::inherit());
        // Its own process group: Ctrl-C reaches this task only, which stops the replicas in
        // order (drain, then the database).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        running.0.push(command.spawn()?);
        // One at a time: the first one creates the schema and the admin account.
        wait_serving(&log, running.0.last_mut().expect("just pushed"))?;
        lines.push(format!(
            "replica {i}: http://{addr}/  user admin  password {password}  (log {})",
            log.display()
        ));
    }
    println!("PostgreSQL: {url}");
    for line in &lines {
        println!("{line}");
    }
    println!("API keys of admin: apikey {api_key}  secretkey {secret_key}");
    println!("Ctrl-C stops the replicas and the database.");
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            println!("stopping…");
            return Ok(());
        }
        for (i, child) in running.0.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                return Err(format!("replica {} exited ({status})", i + 1).into());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the replica logs that it serves; fails when it exits first or takes too long.
fn wait_serving(log: &Path, child: &mut Child) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut text = String::new();
        std::fs::File::open(log)?.read_to_string(&mut text)?;
        if text.contains("serving the CloudStack API") {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(format!("a replica exited ({status}); its log: {}", log.display()).into());
        }
        if started.elapsed() > START_BOUND || INTERRUPTED.load(Ordering::Relaxed) {
            return Err(format!("a replica did not start; its log: {}", log.display()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_loopback_addr() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// `n` random characters of `a-z0-9`.
fn random_token(n: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    Ok(random_bytes(n)?
        .into_iter()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect())
}

/// Standard base64 with padding (what `BNR_ENCRYPTION_KEY` takes).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SIGINT sets [`INTERRUPTED`] instead of ending the task, so the replicas and the database
/// are stopped in order. The replicas run in their own process groups and do not see it.
fn catch_interrupt() {
    extern "C" fn on_interrupt(_: i32) {
        INTERRUPTED.store(true, Ordering::Relaxed);
    }
    const SIGINT: i32 = 2;
    unsafe extern "C" {
        // libc's `signal(2)`; std links libc already.
        fn signal(signum: i32, handler: usize) -> usize;
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, on_interrupt as extern "C" fn(i32) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_default_to_three_and_take_one_to_nine() {
        assert_eq!(parse_replicas(&[]).unwrap(), 3);
        let args = |n: &str| vec!["--replicas".to_string(), n.to_string()];
        assert_eq!(parse_replicas(&args("1")).unwrap(), 1);
        assert_eq!(parse_replicas(&args("9")).unwrap(), 9);
        for bad in ["0", "10", "-1", "three", ""] {
            assert!(parse_replicas(&args(bad)).is_err(), "{bad}");
        }
        assert!(parse_replicas(&["--replica".to_string(), "2".to_string()]).is_err());
        assert!(parse_replicas(&["2".to_string()]).is_err());
    }

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff; 32]).len(), 44);
    }

    #[test]
    fn tokens_are_lower_case_letters_and_digits() {
        let token = random_token(40).unwrap();
        assert_eq!(token.len(), 40);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }
}
