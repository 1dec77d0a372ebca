//! PowerShell run on the Veeam server over SSH.
//!
//! Scripts go to `powershell.exe -Command -` on standard input, so neither cmd.exe nor
//! PowerShell re-parses them as a command line (no `^|` escaping, whatever OpenSSH's default
//! shell is). Every value is a single-quoted PowerShell literal; answers are `ConvertTo-Json`.

use crate::error::{Error, Result};

/// The command line every script runs under.
pub const COMMAND: &str = "powershell.exe -NoLogo -NoProfile -NonInteractive -Command -";

/// What a remote command produced.
#[derive(Debug, Clone)]
pub struct ShellOutput {
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs scripts on the Veeam server (the host's `remote-exec` in the component).
pub trait Shell {
    fn run(&mut self, script: &str) -> Result<ShellOutput>;
}

const PRELUDE: &str = "$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\n\
Import-Module Veeam.Backup.PowerShell -WarningAction SilentlyContinue\n";

/// A PowerShell single-quoted literal: `'` is doubled, nothing inside is interpreted.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        // PowerShell also ends a single-quoted string at the typographic quotes.
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A restore-point id as `Get-VBRRestorePoint` shows it: a bare GUID.
pub fn point_guid(id: &str) -> Result<String> {
    let guid = crate::model::guid_of(id);
    let ok = guid.len() == 36
        && guid.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if ok {
        Ok(guid.to_ascii_lowercase())
    } else {
        Err(Error::NotFound(format!(
            "'{id}' is not a Veeam restore point id"
        )))
    }
}

pub fn template_repository(template_job: &str) -> String {
    format!(
        "{PRELUDE}$job = Get-VBRJob -Name {}\nif (-not $job) {{ throw 'Backup job not found' }}\n\
         $job.GetBackupTargetRepository() | Select-Object Name, @{{Name='Id';Expression={{\"$($_.Id)\"}}}} | ConvertTo-Json -Compress\n",
        quote(template_job)
    )
}

pub fn remove_job(job_name: &str) -> String {
    format!(
        "{PRELUDE}$job = Get-VBRJob -Name {}\nif ($job) {{ Remove-VBRJob -Job $job -Confirm:$false }}\n\
         @{{ Removed = [bool]$job }} | ConvertTo-Json -Compress\n",
        quote(job_name)
    )
}

/// Removes exactly the restore point `guid` (Veeam also drops the increments that depend on it).
pub fn remove_restore_point(guid: &str) -> String {
    format!(
        "{PRELUDE}$point = Get-VBRRestorePoint | Where-Object {{ $_.Id -eq {} }}\n\
         if (-not $point) {{ Write-Output 'Failed to delete'; exit 1 }}\n\
         Remove-VBRRestorePoint -Oib $point -Confirm:$false\n@{{ Removed = 1 }} | ConvertTo-Json -Compress\n",
        quote(guid)
    )
}

/// Starts a restore of exactly restore point `guid` to a new VM; answers the session id.
pub fn start_restore_vm(guid: &str, esxi_host: &str, datastore: &str, vm_name: &str) -> String {
    format!(
        "{PRELUDE}$point = Get-VBRRestorePoint | Where-Object {{ $_.Id -eq {} }}\n\
         if (-not $point) {{ throw 'Restore point not found' }}\n\
         $server = Get-VBRServer -Name {}\nif (-not $server) {{ throw 'ESXi host not found' }}\n\
         $datastore = Find-VBRViDatastore -Server $server -Name {}\nif (-not $datastore) {{ throw 'Datastore not found' }}\n\
         $session = Start-VBRRestoreVM -RestorePoint $point -Server $server -Datastore $datastore -VMName {} -RunAsync\n\
         @{{ Id = \"$($session.Id)\"; Name = {} }} | ConvertTo-Json -Compress\n",
        quote(guid),
        quote(esxi_host),
        quote(datastore),
        quote(vm_name),
        quote(vm_name),
    )
}

pub fn restore_session(guid: &str) -> String {
    format!(
        "{PRELUDE}$s = Get-VBRRestoreSession -Id {}\nif (-not $s) {{ throw 'Restore session not found' }}\n\
         @{{ Id = \"$($s.Id)\"; IsCompleted = [bool]$s.IsCompleted; Result = \"$($s.Result)\"; Description = \"$($s.Description)\" }} | ConvertTo-Json -Compress\n",
        quote(guid)
    )
}

/// Runs `script` and parses its JSON answer; a non-zero exit is an error carrying the output.
pub fn run_json(shell: &mut dyn Shell, what: &str, script: &str) -> Result<serde_json::Value> {
    let out = shell.run(script)?;
    if out.exit != 0 {
        let text = if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        let first: String = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        return Err(Error::Rejected(format!(
            "{what} failed on the Veeam server (exit {}): {first}",
            out.exit
        )));
    }
    // Module loading may print warnings first; the answer is the last JSON line.
    let line = out
        .stdout
        .lines()
        .map(str::trim)
        .rev()
        .find(|l| l.starts_with('{') || l.starts_with('['));
    let line = line.ok_or_else(|| {
        Error::Internal(format!("{what}: the Veeam server printed no JSON answer"))
    })?;
    serde_json::from_str(line).map_err(|e| {
        Error::Internal(format!(
            "{what}: unreadable JSON from the Veeam server: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_single_quotes_and_leaves_the_rest_inert() {
        assert_eq!(quote("O'Brien $x; `n"), "'O''Brien $x; `n'");
        assert_eq!(quote("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
    }

    #[test]
    fn restore_point_ids_must_be_guids() {
        assert_eq!(
            point_guid("urn:veeam:VmRestorePoint:F6D2C3A0-0000-4000-8000-000000000001").unwrap(),
            "f6d2c3a0-0000-4000-8000-000000000001"
        );
        assert!(point_guid("f6d2c3a0' ; Remove-VBRJob").is_err());
        assert!(point_guid("").is_err());
    }
}
