//! CloudStack's KVM host scripts: their command lines, what their exit codes mean, and the save
//! time in their output.
//!
//! Every argument is checked against what the scripts accept and single-quoted, so nothing a
//! value holds reaches the host's shell as syntax.

use crate::error::{Error, Result};

/// Where the scripts live on a KVM host (cloudstack-common).
pub const SCRIPTS_DIR: &str = "/usr/share/cloudstack-common/scripts/vm/hypervisor/kvm";
pub const BACKUP_SCRIPT: &str = "nsrkvmbackup.sh";
pub const RESTORE_SCRIPT: &str = "nsrkvmrestore.sh";
/// Where the scripts log on the host.
pub const HOST_LOG_DIR: &str = "/nsr/logs/cloudstack/";

/// A value that is a plain word: letters, digits and `-._:/@+`, nothing the shell reads.
fn check_word(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/@+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{what} `{value}` cannot be passed to the host scripts: only letters, digits and \
             `-._:/@+` are accepted"
        )))
    }
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// What `nsrkvmbackup.sh` is given.
#[derive(Debug, Clone)]
pub struct BackupArgs<'a> {
    /// NetWorker server (`-s`).
    pub server: &'a str,
    /// Retention as `save -e` takes it, e.g. `7 Days` (`-R`).
    pub retention: &'a str,
    /// Media pool (`-P`).
    pub pool: &'a str,
    /// Cluster client (`-c`).
    pub cluster: &'a str,
    /// Instance uuid (`-u`).
    pub uuid: &'a str,
    /// libvirt domain name (`-t`).
    pub domain: &'a str,
    pub verbose: bool,
}

pub fn backup_command(args: &BackupArgs<'_>) -> Result<String> {
    check_word("the NetWorker server", args.server)?;
    check_word("the pool (backup.plugin.networker.pool)", args.pool)?;
    check_word("the cluster name", args.cluster)?;
    check_word("the instance uuid", args.uuid)?;
    check_word("the instance's internal name", args.domain)?;
    if crate::time::retention(args.retention).as_deref() != Some(args.retention) {
        return Err(Error::InvalidConfig(format!(
            "the retention `{}` is not a NetWorker period",
            args.retention
        )));
    }
    let mut line = format!(
        "{SCRIPTS_DIR}/{BACKUP_SCRIPT} -s {} -R {} -P {} -c {} -u {} -t {}",
        quote(args.server),
        quote(args.retention),
        quote(args.pool),
        quote(args.cluster),
        quote(args.uuid),
        quote(args.domain)
    );
    if args.verbose {
        line.push_str(" -v");
    }
    Ok(line)
}

/// `nsrkvmrestore.sh` of a whole instance, in place, from save set `ssid`.
pub fn restore_command(server: &str, ssid: &str, verbose: bool) -> Result<String> {
    check_word("the NetWorker server", server)?;
    check_word("the save set's SSID", ssid)?;
    let mut line = format!(
        "{SCRIPTS_DIR}/{RESTORE_SCRIPT} -s {} -S {}",
        quote(server),
        quote(ssid)
    );
    if verbose {
        line.push_str(" -v");
    }
    Ok(line)
}

/// What `nsrkvmrestore.sh` is given to restore one volume.
#[derive(Debug, Clone)]
pub struct VolumeArgs<'a> {
    pub server: &'a str,
    /// The backup's client (`-c`).
    pub client: &'a str,
    /// The destination host's name (`-d`).
    pub destination: &'a str,
    /// The new volume's uuid (`-n`).
    pub new_volume: &'a str,
    /// The storage pool's local path on the host (`-p`).
    pub pool_path: &'a str,
    /// The backed-up volume's uuid (`-a`).
    pub source_volume: &'a str,
    pub verbose: bool,
}

pub fn restore_volume_command(args: &VolumeArgs<'_>) -> Result<String> {
    check_word("the NetWorker server", args.server)?;
    check_word("the backup's client", args.client)?;
    check_word("the destination host name", args.destination)?;
    check_word("the new volume uuid", args.new_volume)?;
    check_word("the pool path", args.pool_path)?;
    check_word("the volume uuid", args.source_volume)?;
    let mut line = format!(
        "{SCRIPTS_DIR}/{RESTORE_SCRIPT} -s {} -c {} -d {} -n {} -p {} -a {}",
        quote(args.server),
        quote(args.client),
        quote(args.destination),
        quote(args.new_volume),
        quote(args.pool_path),
        quote(args.source_volume)
    );
    if args.verbose {
        line.push_str(" -v");
    }
    Ok(line)
}

/// The save time `save -LL` reported (`completed savetime=<10 digits>`), else the script's own
/// `savetime=<10 digits>` line. `None`: `save` failed (the script still exits 0 then).
pub fn save_time(output: &str) -> Option<i64> {
    let digits_after = |marker: &str| {
        output.match_indices(marker).find_map(|(at, _)| {
            let before_ok = at == 0
                || !output.as_bytes()[at - 1].is_ascii_alphanumeric()
                    && output.as_bytes()[at - 1] != b'_';
            let rest = &output[at + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (before_ok && digits.len() == 10).then(|| digits.parse().ok())?
        })
    };
    digits_after("completed savetime=").or_else(|| digits_after("savetime="))
}

/// Which script ran, for the meaning of its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Backup,
    Restore,
    RestoreVolume,
}

/// What a non-zero exit code means and what to fix on the host.
pub fn exit_message(script: Script, code: i32, host: &str) -> String {
    let name = match script {
        Script::Backup => BACKUP_SCRIPT,
        Script::Restore | Script::RestoreVolume => RESTORE_SCRIPT,
    };
    let what = match (script, code) {
        (_, 1) => "the NetWorker client is not installed: install the NetWorker client \
                   (lgtoclnt) on the host"
            .to_string(),
        (_, 2) => "the NetWorker client service is not running: start it with \
                   `systemctl start networker` on the host"
            .to_string(),
        (_, 3) => "the NetWorker server named in backup.plugin.networker.url cannot be resolved \
                   or reached from the host: fix the host's DNS or /etc/hosts"
            .to_string(),
        (Script::Backup, 4) => "the host's QEMU is too old for live disk snapshots (2.1.3 or \
                                later is needed): upgrade qemu-kvm on the host"
            .to_string(),
        (Script::Restore, 4) => "NetWorker's `recover` failed: check that the save set is \
                                 still browsable and that the host may recover it (its client \
                                 is allowed to recover the cluster client's data)"
            .to_string(),
        (Script::RestoreVolume, 4) => "NetWorker's `recover` failed for the volume: check the \
                                       save set and the host's recover permissions"
            .to_string(),
        (Script::Backup, 5) => "the instance's libvirt domain is not on this host (name and \
                                uuid must both match): the instance runs elsewhere; check \
                                listVirtualMachines and the host's `virsh list`"
            .to_string(),
        (_, 5) => "NetWorker's `recover` of the volume failed: check that the save set is \
                   browsable and the destination host is a NetWorker client allowed to recover"
            .to_string(),
        (Script::Backup, 6) => "the script refused its arguments".to_string(),
        (_, 6) => "the recovered volume file is missing after `recover`: check free space and \
                   permissions in the storage pool's directory on the host"
            .to_string(),
        (Script::Backup, 7) => "the disk snapshot failed (`virsh snapshot-create-as`): check \
                                the guest agent, free space and permissions of the disk \
                                directory on the host"
            .to_string(),
        (Script::Backup, 8) => "merging the snapshot back (`virsh blockcommit`) failed: the \
                                instance runs on the snapshot overlay; commit it by hand with \
                                `virsh blockcommit --active --pivot` on the host before the next \
                                backup"
            .to_string(),
        (_, 7 | 8) => format!(
            "{name} does not document this exit code: check that the host's cloudstack-common \
             version matches bnr's and read the script's log"
        ),
        (_, 250) => "the script refused an SSID together with a volume restore".to_string(),
        (_, 251..=253) => "the script stopped on an internal error".to_string(),
        (_, 254) => "the script printed its usage: its version on the host does not take the \
                     options bnr sends; install the cloudstack-common version bnr expects"
            .to_string(),
        (_, 255) => "the script was called without a mandatory argument: its version on the \
                     host does not match; install the matching cloudstack-common"
            .to_string(),
        (_, 127) => format!(
            "the script is not installed: install cloudstack-common so that {SCRIPTS_DIR}/{name} exists"
        ),
        (_, 126) => format!("the script is not executable: `chmod +x {SCRIPTS_DIR}/{name}`"),
        _ => "the script failed".to_string(),
    };
    format!("{name} exited with {code} on host {host}: {what} (logs in {HOST_LOG_DIR} on the host)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_command_quotes_every_argument() {
        let line = backup_command(&BackupArgs {
            server: "nw.lan",
            retention: "7 Days",
            pool: "Default",
            cluster: "C1",
            uuid: "b1f5c3a0-1111-2222-3333-444455556666",
            domain: "i-2-15-VM",
            verbose: true,
        })
        .unwrap();
        assert_eq!(
            line,
            "/usr/share/cloudstack-common/scripts/vm/hypervisor/kvm/nsrkvmbackup.sh -s 'nw.lan' \
             -R '7 Days' -P 'Default' -c 'C1' -u 'b1f5c3a0-1111-2222-3333-444455556666' -t 'i-2-15-VM' -v"
        );
    }

    #[test]
    fn shell_syntax_in_a_value_is_refused() {
        let args = BackupArgs {
            server: "nw.lan",
            retention: "7 Days",
            pool: "Default; reboot",
            cluster: "C1",
            uuid: "u",
            domain: "d",
            verbose: false,
        };
        assert!(backup_command(&args).is_err());
        assert!(restore_command("nw", "1$(id)", false).is_err());
    }

    #[test]
    fn the_save_time_comes_from_save_or_the_script() {
        assert_eq!(
            save_time("x\n64167:save: completed savetime=1657591323\nsavetime=1657591323\n"),
            Some(1_657_591_323)
        );
        assert_eq!(save_time("savetime=1657591323\n"), Some(1_657_591_323));
        assert_eq!(save_time("nosavetime=1657591323 savetime=123"), None);
        assert_eq!(save_time("Unable to backup"), None);
    }

    #[test]
    fn every_documented_exit_code_says_what_to_fix() {
        for code in (1..=8).chain(250..=255) {
            for script in [Script::Backup, Script::Restore, Script::RestoreVolume] {
                let m = exit_message(script, code, "kvm1");
                assert!(
                    m.contains(&format!("exited with {code} on host kvm1")),
                    "{m}"
                );
                assert!(!m.contains("the script failed ("), "{code} {script:?}: {m}");
            }
        }
    }
}
