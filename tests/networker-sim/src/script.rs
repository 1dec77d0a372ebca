//! What a KVM host does with a command line: CloudStack's `nsrkvmbackup.sh` and
//! `nsrkvmrestore.sh`, emulated step by step with their option parsing (`getopts`), their
//! validation, their output (stdout and the stderr of the tools they run) and exit codes, with
//! `save` and `recover` acting on the NetWorker state.
//!
//! The command line is split like a POSIX shell splits words (quotes and backslashes); shell
//! operators (`;`, `|`, `&`, redirections, `$`, backquotes) are refused: the host runs the two
//! scripts only.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::state::{HostFile, NextBackup, SavedFile, SavetimeLine, State, add_period};

pub const SCRIPTS_DIR: &str = "/usr/share/cloudstack-common/scripts/vm/hypervisor/kvm";
pub const BACKUP_SCRIPT: &str = "nsrkvmbackup.sh";
pub const RESTORE_SCRIPT: &str = "nsrkvmrestore.sh";
const VERSION: &str = "0.9.1";
const BACKUP_EXITS: &[u32] = &[1, 2, 3, 4, 5, 7, 8, 254, 255];
const RESTORE_EXITS: &[u32] = &[1, 2, 3, 4, 5, 6, 250, 254, 255];

/// The result of one command.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit: u32,
    pub stdout: String,
    pub stderr: String,
    /// How long the command runs before it ends with this output.
    pub delay_ms: u64,
    /// The command prints `stdout`/`stderr` and then never ends.
    pub hang: bool,
}

/// Whether `exit` can be injected for `script` (`backup` or `restore`).
pub fn injectable_exit(script: &str, exit: u32) -> bool {
    match script {
        "backup" => BACKUP_EXITS.contains(&exit),
        "restore" => RESTORE_EXITS.contains(&exit),
        _ => false,
    }
}

/// Runs `command` on `host` (which must exist in `state`).
pub fn exec(state: &mut State, host: &str, command: &str) -> Outcome {
    state.counters.ssh_commands += 1;
    if let Some(h) = state.hosts.get_mut(host) {
        h.counters.commands += 1;
    }
    let words = match split(command) {
        Ok(words) => words,
        Err(message) => {
            return Outcome {
                exit: 2,
                stderr: format!("bash: {message}\n"),
                ..Default::default()
            };
        }
    };
    let mut words = words.as_slice();
    if words.first().is_some_and(|w| w == "sudo") {
        words = &words[1..];
        if words.first().is_some_and(|w| w == "-n") {
            words = &words[1..];
        }
    }
    if words
        .first()
        .is_some_and(|w| matches!(w.as_str(), "bash" | "/bin/bash" | "sh" | "/bin/sh"))
    {
        words = &words[1..];
    }
    let Some(program) = words.first() else {
        return Outcome::default();
    };
    let args = &words[1..];
    let backup = format!("{SCRIPTS_DIR}/{BACKUP_SCRIPT}");
    let restore = format!("{SCRIPTS_DIR}/{RESTORE_SCRIPT}");
    if *program == backup {
        backup_script(state, host, program, args)
    } else if *program == restore {
        restore_script(state, host, program, args)
    } else if program.contains('/') {
        Outcome {
            exit: 127,
            stderr: format!("bash: {program}: No such file or directory\n"),
            ..Default::default()
        }
    } else {
        Outcome {
            exit: 127,
            stderr: format!("bash: {program}: command not found\n"),
            ..Default::default()
        }
    }
}

/// Splits a command line into words like a POSIX shell (without expansions).
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err("unexpected EOF while looking for matching `''".into());
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => {
                                return Err("unexpected EOF while looking for matching `\"'".into());
                            }
                        },
                        Some(c @ ('$' | '`')) => {
                            return Err(format!("unsupported shell syntax '{c}'"));
                        }
                        Some(c) => word.push(c),
                        None => {
                            return Err("unexpected EOF while looking for matching `\"'".into());
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => {}
                }
            }
            ';' | '|' | '&' | '<' | '>' | '(' | ')' | '$' | '`' => {
                return Err(format!("unsupported shell syntax '{c}'"));
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

enum Getopts {
    Options(Vec<(char, String)>),
    /// `-h`, `-?`, an unknown option or a missing argument: the scripts print usage, exit 254.
    Help {
        stderr: String,
    },
}

/// bash's `getopts` over `args` with `spec` (e.g. `h?vs:`): options end at `--`, at `-` or at
/// the first word not starting with `-`; an option's argument is the rest of its word or the
/// next word, whatever it looks like.
fn getopts(program: &str, args: &[String], spec: &str) -> Getopts {
    let mut options = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" || arg == "-" || !arg.starts_with('-') {
            break;
        }
        for (at, c) in arg[1..].char_indices() {
            let Some(pos) = spec.find(c).filter(|_| c != ':') else {
                return Getopts::Help {
                    stderr: format!("{program}: illegal option -- {c}\n"),
                };
            };
            if c == 'h' || c == '?' {
                return Getopts::Help {
                    stderr: String::new(),
                };
            }
            if spec[pos + 1..].starts_with(':') {
                let rest = &arg[1 + at + c.len_utf8()..];
                let value = if !rest.is_empty() {
                    rest.to_string()
                } else if i + 1 < args.len() {
                    i += 1;
                    args[i].clone()
                } else {
                    return Getopts::Help {
                        stderr: format!("{program}: option requires an argument -- {c}\n"),
                    };
                };
                options.push((c, value));
                break;
            }
            options.push((c, String::new()));
        }
        i += 1;
    }
    Getopts::Options(options)
}

/// The scripts' output: stdout, the stderr of the tools they run, and what `log` echoes with
/// `-v` (to stdout; without `-v` it only goes to the host's log file).
struct Out {
    stdout: String,
    stderr: String,
    verbose: bool,
}

impl Out {
    fn new() -> Out {
        Out {
            stdout: format!(
                "\nCloudstack B&R Framework - EMC Networker backup script\nVersion {VERSION}\n\n"
            ),
            stderr: String::new(),
            verbose: false,
        }
    }
    fn log(&mut self, line: &str) {
        if self.verbose {
            self.stdout.push_str(line);
            self.stdout.push('\n');
        }
    }
    /// `log -n`/`log -ne`: no newline.
    fn log_n(&mut self, text: &str) {
        if self.verbose {
            self.stdout.push_str(text);
        }
    }
    fn end(self, exit: u32) -> Outcome {
        Outcome {
            exit,
            stdout: self.stdout,
            stderr: self.stderr,
            ..Default::default()
        }
    }
}

fn backup_usage() -> &'static str {
    "\n\nUsage:[-v] [-h] [-l log_dir] [-dr] [-s networker_server] [-c networker_cluster_client] [-t target_vm] [-u target_uuid] [-p snapprefix] [-P media_pool ] [-R retention_time ]\n\
\nOptions:\n\
        -h Help and usage\n\
        -v Enable verbose mode\n\
        -l log_dir. Specify log directory. Default is /nsr/logs/cloudstack\n\
        -s networker_server  Specifiy the EMC Networker server we are going to use\n\
        -c networker_cluster_client  Specify the EMC Networker client CLUSTER to use\n\
        -t target_vm KVM domain to backup\n\
        -u target_uuid KVM domain to backup\n\
        -p Snapshot Prefix for backups\n\
        -P mediaPool EMC Networker Media Pool\n\
        -R retention_time Backup retention time\n\
Supplements Apache Cloudstack B&R Framework  EMC Networker plugin and performs the backup of the Virtual Machines\n\n"
}

fn restore_usage() -> &'static str {
    "\n\nUsage:[-v] [-h] [-l log_dir] [-s networker_server] [-c networker_cluster_client] [-S ssid] [-d networker_destination_client ] [ -a volume ] [ -p pool_local_path ]\n\
\nOptions:\n\
        -h Help and usage\n\
        -v Enable log mode\n\
        -l log_dir. Specify log directory. Default is /nsr/logs/cloudstack\n\
        -s networker_server  Specify the EMC Networker server we are going to use\n\
        -c networker_cluster_client  Specify the EMC Networker client CLUSTER to use\n\
        -d networker_destination_client Specify the EMC Networker client that is going to be used for the restore\n\
        -a volume Specify volume to restore\n\
        -p pool_local_path Local Path to Pool\n\
        -S ssid Specify SSID\n\
Supplements Apache Cloudstack B&R Framework  EMC Networker plugin and performs the backup of the Virtual Machines\n\n"
}

/// Whether `name` resolves on the host (`getent hosts`): the server's names, IP literals and
/// the names of known hosts and clients.
fn resolves(state: &State, name: &str) -> bool {
    !name.is_empty()
        && (state.is_server_name(name)
            || name.parse::<std::net::IpAddr>().is_ok()
            || state.hosts.contains_key(name)
            || state.client(name).is_some())
}

/// The four environment checks both scripts start with.
fn sanity_checks(
    out: &mut Out,
    state: &State,
    server: &str,
    forced: Option<u32>,
) -> Result<(), u32> {
    out.log("Performing environment sanity checks...");
    let checks: [(&str, &str, bool); 3] = [
        (
            "\t[1] Checking if Networker is installed\t",
            "\n\tNetworker Service NOT FOUND. Make sure that Networker client is properly installed",
            forced == Some(1),
        ),
        (
            "\t[2] Checking if Networker is running\t",
            "\n\tNetworker Service is not running. Investigate Networker logs, startup server and try again",
            forced == Some(2),
        ),
        (
            "\t[3] Checking Networker DNS Resolution\t",
            "\n\tNetworker Server cannot be resolved. Backups will most probably fail. Consider adding the ip/hostname to /etc/host or fix DNS resolution",
            forced == Some(3) || !resolves(state, server),
        ),
    ];
    for (n, (check, failure, fails)) in checks.into_iter().enumerate() {
        out.log_n(check);
        if fails {
            out.log("Failure");
            out.log(failure);
            return Err(n as u32 + 1);
        }
        out.log("Success");
    }
    out.log_n("\t[4] Checking QEMU / Libvirt Versions \t");
    if forced == Some(4) {
        out.log("Failure");
        out.log("\n\tYour QEMU version 2.0.0 is unsupported. Consider upgrading at least to latest QEMU at branch 2");
        return Err(4);
    }
    out.log_n("Success");
    out.log_n("\t\t [ Libvirt: 8.0.0 apiVersion: 8.0.0 ]");
    out.stdout.push('\n');
    out.log("Environment Sanity Checks successfully passed");
    Ok(())
}

fn backup_script(state: &mut State, host: &str, program: &str, args: &[String]) -> Outcome {
    let Some(h) = state.hosts.get_mut(host) else {
        return Outcome::default();
    };
    h.counters.backups += 1;
    let faults = h.faults.clone();
    let mut out = Out::new();
    let options = match getopts(program, args, "h?vs:l:c:t:u:p:P:R:") {
        Getopts::Options(options) => options,
        Getopts::Help { stderr } => {
            out.stderr.push_str(&stderr);
            out.stdout.push_str(backup_usage());
            return out.end(254);
        }
    };
    let (mut server, mut cluster, mut name, mut uuid) =
        <(String, String, String, String)>::default();
    let (mut pool, mut retention, mut prefix) =
        (String::new(), String::new(), "CSBKP_".to_string());
    for (option, value) in options {
        match option {
            'v' => out.verbose = true,
            's' => server = value,
            'c' => cluster = value,
            't' => name = value,
            'u' => uuid = value,
            'P' => pool = value,
            'R' => retention = value,
            'p' => prefix = value,
            _ => {}
        }
    }
    match faults.backup_exit {
        Some(254) => {
            out.stdout.push_str(backup_usage());
            return out.end(254);
        }
        Some(255) => {
            out.stdout.push_str(backup_usage());
            return out.end(255);
        }
        _ => {}
    }
    if server.is_empty() || name.is_empty() || cluster.is_empty() || uuid.is_empty() {
        out.stdout.push_str(backup_usage());
        return out.end(255);
    }
    if faults.hang {
        return Outcome {
            hang: true,
            ..out.end(0)
        };
    }
    if let Err(code) = sanity_checks(&mut out, state, &server, faults.backup_exit) {
        return out.end(code);
    }
    let domain = state.hosts.get(host).and_then(|h| h.domain(&name, &uuid));
    out.log("\nLooking for domain to backup");
    let domain = match domain {
        Some(domain) if faults.backup_exit != Some(5) => domain,
        _ => {
            let known = |f: &dyn Fn(&crate::state::Domain) -> bool| {
                state
                    .hosts
                    .get(host)
                    .is_some_and(|h| h.domains.iter().any(f))
            };
            if !known(&|d| d.uuid == uuid) {
                out.stderr
                    .push_str(&format!("error: failed to get domain '{uuid}'\n\n"));
            }
            if !known(&|d| d.name == name) {
                out.stderr
                    .push_str(&format!("error: failed to get domain '{name}'\n\n"));
            }
            out.log("Domain not found on this host. Aborting.....");
            out.log("Check for the location of the Instance in the cloudstack management console");
            return out.end(5);
        }
    };
    out.log(&format!("Domain {name} with UUID {uuid} found...."));
    let snapshot = format!("{prefix}{name}");
    out.log(&format!(
        "Preparing snapshots and gathering information for backing up domain {name} under snapshot name {snapshot}"
    ));
    out.log(&format!("Retention time is {retention}"));
    let disks: Vec<_> = domain.disks.iter().filter(|d| d.device == "disk").collect();
    for disk in &disks {
        out.log(&format!("\tDisk for {} is at {}", disk.target, disk.path));
    }
    if faults.backup_exit == Some(7) {
        out.stderr.push_str(
            "error: internal error: unable to execute QEMU command 'transaction': Could not create file: Permission denied\n",
        );
        out.log("");
        out.log("Agent not responding, trying to snapshot directly");
        out.stderr.push_str(
            "error: internal error: unable to execute QEMU command 'transaction': Could not create file: Permission denied\n",
        );
        out.log(&format!("Failed to create snapshot for {name}"));
        return out.end(7);
    }
    out.log(&format!("Domain snapshot {snapshot} created"));

    let files: Vec<SavedFile> = disks
        .iter()
        .map(|d| {
            let size = state
                .hosts
                .get(host)
                .and_then(|h| h.files.get(&d.path))
                .map_or(d.size, |f| f.size);
            SavedFile {
                path: d.path.clone(),
                size,
            }
        })
        .collect();
    let paths: String = files.iter().map(|f| format!(" {} ", f.path)).collect();
    match save(
        state, host, &server, &cluster, &name, &pool, &retention, files, &faults,
    ) {
        Ok(epoch) => {
            let (captured, reported) = match faults.savetime_line {
                SavetimeLine::Completed => (
                    format!("completed savetime={epoch}"),
                    format!("completed savetime={epoch}\n"),
                ),
                SavetimeLine::Bare => (format!("savetime={epoch}"), String::new()),
                SavetimeLine::None => (String::new(), String::new()),
            };
            out.stderr.push_str(&reported);
            out.log(&captured);
            if !captured.is_empty() {
                out.stdout.push_str(&format!("savetime={epoch}\n"));
            }
            out.log(&format!("Backup {paths} for {name} completed!!"));
        }
        Err(message) => {
            out.stderr.push_str(&message);
            out.stderr.push('\n');
            out.log("");
            out.log(&format!("Unable to backup {paths} for {name}"));
        }
    }
    for disk in &disks {
        out.log(&format!("Merging Snasphots for {}", disk.target));
        if faults.backup_exit == Some(8) {
            out.stderr.push_str(
                "error: internal error: unable to execute QEMU command 'block-commit': Could not reopen file: Permission denied\n",
            );
            out.log("");
            out.log(&format!(
                "Unable to merge disk %target changes for domain {name}"
            ));
            return out.end(8);
        }
        out.log("\nSuccessfully pivoted");
    }
    for disk in &disks {
        let overlay = format!("{}.{snapshot}", disk.path.trim_end_matches(".qcow2"));
        out.log(&format!("Deleting Snapshot {overlay}"));
        out.log("");
        out.log(&format!("Deleted Snapshot: {overlay}"));
    }
    Outcome {
        delay_ms: faults.backup_duration_ms,
        ..out.end(0)
    }
}

/// NetWorker's `save -LL -q -e <retention> -s <server> -c <client> -N <name> -b <pool> <files>`:
/// the save time (the host's clock) or `save`'s error message.
#[allow(clippy::too_many_arguments)]
fn save(
    state: &mut State,
    host: &str,
    server: &str,
    client: &str,
    name: &str,
    pool: &str,
    retention: &str,
    files: Vec<SavedFile>,
    faults: &crate::state::HostFaults,
) -> Result<i64, String> {
    if !state.is_server_name(server) {
        return Err(format!(
            "save: RPC error: Unable to connect to NetWorker server '{server}': Connection refused"
        ));
    }
    if faults.save_fails {
        return Err(format!(
            "save: SYSTEM error: Unable to write save set '{name}' to a device in pool '{pool}'"
        ));
    }
    if state.client(client).is_none() {
        return Err(format!(
            "save: client `{client}' is not properly configured on the NetWorker Server"
        ));
    }
    if !state.pools.iter().any(|p| p == pool) {
        return Err(format!("save: pool `{pool}' does not exist"));
    }
    let save_time: Timestamp = {
        let now = state.host_now(host);
        Timestamp::from_second(now.as_second()).unwrap_or(now)
    };
    let Some(expiry) = add_period(save_time, retention, &state.tz()) else {
        return Err(format!("save: invalid expiration time `{retention}'"));
    };
    if files.is_empty() {
        return Err("save: no save paths".into());
    }
    let copies = match std::mem::take(&mut state.faults.next_backup) {
        NextBackup::Normal => 1,
        NextBackup::NoSaveSet => 0,
        NextBackup::TwoSaveSets => 2,
    };
    for _ in 0..copies {
        state.record_save_set(
            name,
            client,
            pool,
            host,
            save_time,
            expiry,
            faults.backup_duration_ms,
            files.clone(),
        );
    }
    Ok(save_time.as_second())
}

fn restore_script(state: &mut State, host: &str, program: &str, args: &[String]) -> Outcome {
    let Some(h) = state.hosts.get_mut(host) else {
        return Outcome::default();
    };
    h.counters.restores += 1;
    let faults = h.faults.clone();
    let forced = faults.restore_exit;
    let mut out = Out::new();
    let options = match getopts(program, args, "h?vs:l:c:d:a:S:n:p:") {
        Getopts::Options(options) => options,
        Getopts::Help { stderr } => {
            out.stderr.push_str(&stderr);
            out.stdout.push_str(restore_usage());
            return out.end(254);
        }
    };
    let mut o = std::collections::HashMap::new();
    for (option, value) in options {
        if option == 'v' {
            out.verbose = true;
        } else {
            o.insert(option, value);
        }
    }
    let get = |c: char| o.get(&c).cloned().unwrap_or_default();
    let (server, cluster, destination, volume, ssid, new_volume, pool_path) = (
        get('s'),
        get('c'),
        get('d'),
        get('a'),
        get('S'),
        get('n'),
        get('p'),
    );
    match forced {
        Some(254) | Some(255) => {
            out.stdout.push_str(restore_usage());
            return out.end(forced.unwrap_or(255));
        }
        Some(250) => {
            out.stdout
                .push_str("You can either restore a whole saveset or part of it but not both.\n");
            return out.end(250);
        }
        _ => {}
    }
    if !new_volume.is_empty() {
        if server.is_empty() || destination.is_empty() || cluster.is_empty() || pool_path.is_empty()
        {
            out.stdout.push_str(restore_usage());
            return out.end(255);
        }
    } else if !ssid.is_empty() {
        if server.is_empty() {
            out.stdout.push_str(restore_usage());
            return out.end(255);
        }
    } else {
        return out.end(255);
    }
    if faults.hang {
        return Outcome {
            hang: true,
            ..out.end(0)
        };
    }
    if ssid.is_empty() {
        // Volume form.
        let sanity_forced = forced.filter(|c| *c <= 4);
        if let Err(code) = sanity_checks(&mut out, state, &server, sanity_forced) {
            return out.end(code);
        }
        restore_volume(
            state,
            host,
            out,
            forced,
            &server,
            &cluster,
            &destination,
            &pool_path,
            &volume,
            &new_volume,
        )
    } else if new_volume.is_empty() {
        let sanity_forced = forced.filter(|c| *c <= 3);
        if let Err(code) = sanity_checks(&mut out, state, &server, sanity_forced) {
            return out.end(code);
        }
        restore_save_set(state, host, out, forced == Some(4), &server, &ssid)
    } else {
        // Both -S and -n: the script parses them and then does nothing.
        out.end(0)
    }
}

/// `sudo recover -s <server> -S <ssid> -iY`: every file of the save set back in place.
fn restore_save_set(
    state: &mut State,
    host: &str,
    mut out: Out,
    forced: bool,
    server: &str,
    ssid: &str,
) -> Outcome {
    out.log(&format!("Preparing restore for SAVESET {ssid}"));
    let found = ssid
        .parse::<u32>()
        .ok()
        .and_then(|n| state.save_sets.iter().find(|s| s.ssid == n).cloned());
    let failure = if !state.is_server_name(server) {
        Some(format!(
            "recover: RPC error: Unable to connect to NetWorker server '{server}': Connection refused"
        ))
    } else if forced {
        Some("recover: Unable to read from the device: Connection reset by peer".to_string())
    } else if found.is_none() {
        Some(format!("recover: Invalid ssid `{ssid}'"))
    } else {
        None
    };
    if let Some(message) = failure {
        out.stderr.push_str(&message);
        out.stderr.push('\n');
        out.log("");
        out.log(&format!("Unable to restore SAVESET {ssid}"));
        return out.end(4);
    }
    let save_set = found.expect("checked above");
    let now = state.render_time(state.server_now());
    if let Some(h) = state.hosts.get_mut(host) {
        for file in &save_set.files {
            h.files.insert(
                file.path.clone(),
                HostFile {
                    size: file.size,
                    recovered_from: Some(save_set.id.clone()),
                },
            );
        }
    }
    out.log(&format!(
        "Recovering {} file(s) into their original locations\nReceived {} file(s) from NSR server `{server}'\nRecover completion time: {now}",
        save_set.files.len(),
        save_set.files.len()
    ));
    out.log(&format!("Restore of SAVESET {ssid} has been completed"));
    out.end(0)
}

/// `recover -R <dest> -c <client> -s <server> -a <pool>/<volume> -iR`, then the rename to
/// `<pool>/<new volume>` and its check.
#[allow(clippy::too_many_arguments)]
fn restore_volume(
    state: &mut State,
    host: &str,
    mut out: Out,
    forced: Option<u32>,
    server: &str,
    cluster: &str,
    destination: &str,
    pool_path: &str,
    volume: &str,
    new_volume: &str,
) -> Outcome {
    let source = format!("{pool_path}/{volume}");
    let target = format!("{pool_path}/{new_volume}");
    out.log(&format!(
        "Preparning restore for volume {volume} at destination as  {target}"
    ));
    // The newest save set of the client that holds the file.
    let found = state
        .visible_save_sets()
        .filter(|s| s.client.eq_ignore_ascii_case(cluster))
        .filter(|s| s.files.iter().any(|f| f.path == source))
        .max_by_key(|s| s.save_time)
        .cloned();
    let destination_host = state
        .hosts
        .keys()
        .find(|h| h.split('.').next() == Some(destination) || *h == destination)
        .cloned();
    let failure = if !state.is_server_name(server) {
        Some(format!(
            "recover: RPC error: Unable to connect to NetWorker server '{server}': Connection refused"
        ))
    } else if forced == Some(5) {
        Some("recover: Unable to read from the device: Connection reset by peer".to_string())
    } else if state.client(cluster).is_none() {
        Some(format!("recover: Unknown client `{cluster}'"))
    } else if state.client(destination).is_none() && destination_host.is_none() {
        Some(format!(
            "recover: Unknown destination client `{destination}'"
        ))
    } else if found.is_none() {
        Some(format!("recover: {source}: not in index"))
    } else {
        None
    };
    if let Some(message) = failure {
        out.stderr.push_str(&message);
        out.stderr.push('\n');
        out.log("");
        out.log("Unable to restore SAVESET ");
        return out.end(5);
    }
    let save_set = found.expect("checked above");
    let size = save_set
        .files
        .iter()
        .find(|f| f.path == source)
        .map_or(0, |f| f.size);
    out.log("Recovering 1 file into its original location\nReceived 1 file(s) from NSR server");
    out.log("Restore of SAVESET  has been completed");
    if forced == Some(6) {
        out.log(&format!("Unable to verify final restored volume: {target}"));
        return out.end(6);
    }
    // The file lands on the destination client; `-iR` renames it when the name is taken.
    if let Some(dest) = destination_host
        .as_deref()
        .and_then(|d| state.hosts.get_mut(d))
    {
        let landed = if dest.files.contains_key(&source) {
            format!("{source}.R")
        } else {
            source.clone()
        };
        dest.files.insert(
            landed,
            HostFile {
                size,
                recovered_from: Some(save_set.id.clone()),
            },
        );
    }
    let Some(h) = state.hosts.get_mut(host) else {
        return out.end(6);
    };
    let renamed = format!("{source}.R");
    let moved = h.files.remove(&renamed).or_else(|| h.files.remove(&source));
    match moved {
        Some(file) => {
            h.files.insert(target.clone(), file);
        }
        None => out.stderr.push_str(&format!(
            "mv: cannot stat '{source}': No such file or directory\n"
        )),
    }
    if h.files.contains_key(&target) {
        out.log(&format!("Volume restored under path/name: {target}"));
        out.end(0)
    } else {
        out.log(&format!("Unable to verify final restored volume: {target}"));
        out.end(6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split("a -R '7 Days' -P \"My Pool\" b\\ c").unwrap(),
            vec!["a", "-R", "7 Days", "-P", "My Pool", "b c"]
        );
        assert!(split("a; rm -rf /").is_err());
        assert!(split("a $(id)").is_err());
        assert!(split("a 'open").is_err());
        assert_eq!(split("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn getopts_behaves_like_bash() {
        let args = |s: &str| split(s).unwrap();
        let Getopts::Options(o) = getopts("p", &args("-vsserver -c c1 rest -t x"), "h?vs:c:t:")
        else {
            panic!()
        };
        assert_eq!(
            o,
            vec![
                ('v', String::new()),
                ('s', "server".into()),
                ('c', "c1".into())
            ]
        );
        let Getopts::Options(o) = getopts("p", &args("-s -c"), "h?vs:c:") else {
            panic!()
        };
        assert_eq!(o, vec![('s', "-c".into())]);
        assert!(
            matches!(getopts("p", &args("-x"), "h?vs:"), Getopts::Help { stderr } if stderr == "p: illegal option -- x\n")
        );
        assert!(
            matches!(getopts("p", &args("-s"), "h?vs:"), Getopts::Help { stderr } if stderr.contains("requires an argument -- s"))
        );
        assert!(matches!(
            getopts("p", &args("-h"), "h?vs:"),
            Getopts::Help { .. }
        ));
    }
}
