//! The PowerShell side over a real SSH connection: password logon, host key, exec with stdin;
//! and the admin endpoint over a real HTTP connection.

use std::sync::Arc;

use russh::ChannelMsg;
use russh::keys::{HashAlg, PublicKeyOrCertificate};
use veeam_sim::{Config, Running};

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

async fn start() -> Running {
    veeam_sim::start(Config {
        ssh_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls: true,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// (exit status, stdout) of `command` with `stdin`.
async fn run(
    running: &Running,
    password: &str,
    command: &str,
    stdin: &str,
) -> Result<(u32, String), String> {
    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(
        config,
        running.ssh.unwrap(),
        Client {
            seen: Default::default(),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let auth = session
        .authenticate_password("administrator", password)
        .await
        .map_err(|e| e.to_string())?;
    if !auth.success() {
        return Err("authentication failed".into());
    }
    let mut channel = session
        .channel_open_session()
        .await
        .map_err(|e| e.to_string())?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| e.to_string())?;
    if !stdin.is_empty() {
        channel
            .data_bytes(stdin.as_bytes().to_vec())
            .await
            .map_err(|e| e.to_string())?;
    }
    channel.eof().await.map_err(|e| e.to_string())?;
    let (mut exit, mut out) = (None, Vec::new());
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status),
            _ => {}
        }
    }
    Ok((
        exit.ok_or("no exit status")?,
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

#[tokio::test]
async fn a_script_on_stdin_runs_with_the_api_account_and_answers_json_with_crlf() {
    let running = start().await;
    let (exit, out) = run(
        &running,
        "P@ssword123",
        "powershell.exe -NoProfile -NonInteractive -Command -",
        "$job = Get-VBRJob -Name 'Gold'\n$job.GetBackupTargetRepository() | Select-Object Name | ConvertTo-Json -Compress\n",
    )
    .await
    .unwrap();
    assert_eq!(exit, 0, "{out}");
    assert!(out.ends_with("\r\n"));
    let value: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(value["Name"], "Gold Repository");
    assert_eq!(running.with_state(|s| s.counters.ssh_commands), 1);
}

#[tokio::test]
async fn cloudstacks_command_line_form_works_and_a_wrong_password_is_refused() {
    let running = start().await;
    let (exit, out) = run(
        &running,
        "P@ssword123",
        "PowerShell Import-Module Veeam.Backup.PowerShell -WarningAction SilentlyContinue;$Job = Get-VBRJob -Name 'Silver';$Job.GetBackupTargetRepository() ^| select Name ^| Format-List",
        "",
    )
    .await
    .unwrap();
    assert_eq!(exit, 0);
    assert!(
        out.contains("Name : Default Backup Repository\r\n"),
        "{out}"
    );
    assert!(
        run(&running, "wrong", "PowerShell Get-VBRJob", "")
            .await
            .is_err()
    );
    assert_eq!(running.with_state(|s| s.counters.ssh_commands), 1);
}

#[tokio::test]
async fn the_host_key_fingerprint_is_the_one_announced() {
    let running = start().await;
    let config = Arc::new(russh::client::Config::default());
    let seen = Arc::new(std::sync::Mutex::new(None));
    let _session =
        russh::client::connect(config, running.ssh.unwrap(), Client { seen: seen.clone() })
            .await
            .unwrap();
    let announced = running.ssh_host_key_fingerprint.clone().unwrap();
    assert!(announced.starts_with("SHA256:"));
    assert_eq!(seen.lock().unwrap().as_deref(), Some(announced.as_str()));
    assert_eq!(running.cert_sha256.as_deref().map(str::len), Some(64));
}

/// One plain-HTTP request to the admin endpoint; returns the status code and the body.
fn admin(running: &Running, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(running.http).unwrap();
    write!(
        stream,
        "{method} /admin{path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_endpoint_sets_a_jobs_retention() {
    let running = veeam_sim::start(Config::default()).await.unwrap();
    let running = std::sync::Arc::new(running);
    let sim = running.clone();
    let (ok, unknown, zero, state) = tokio::task::spawn_blocking(move || {
        (
            admin(
                &sim,
                "POST",
                "/retention",
                r#"{"job": "Gold", "points": 3}"#,
            ),
            admin(
                &sim,
                "POST",
                "/retention",
                r#"{"job": "Nope", "points": 3}"#,
            ),
            admin(
                &sim,
                "POST",
                "/retention",
                r#"{"job": "Gold", "points": 0}"#,
            ),
            admin(&sim, "GET", "/state", ""),
        )
    })
    .await
    .unwrap();
    assert_eq!(ok.0, 200, "{ok:?}");
    assert_eq!(unknown.0, 404, "{unknown:?}");
    assert_eq!(zero.0, 400, "{zero:?}");
    assert_eq!(
        running.with_state(|s| s
            .jobs
            .iter()
            .find(|j| j.name == "Gold")
            .unwrap()
            .retain_points),
        3
    );
    assert!(state.1.contains("\"retain_points\":3"), "{}", state.1);
}
