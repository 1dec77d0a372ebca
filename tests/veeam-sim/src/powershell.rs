//! The PowerShell side of the Veeam server, as reached over Windows OpenSSH.
//!
//! Recognises the Veeam cmdlets CloudStack's plugin and bnr's provider run, by pattern, against
//! the shared state. Two framings are accepted:
//! - cmd.exe (OpenSSH's default shell): `PowerShell <stmt>;<stmt>...` on the command line, with
//!   pipes escaped as `^|`;
//! - `powershell ... -Command -` with the script on stdin.
//!
//! Output uses CRLF line ends, as on Windows.

use std::time::Instant;

use serde_json::json;

use crate::state::{RestoreResult, State, guid_of};

/// How the simulated OpenSSH server starts commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DefaultShell {
    #[default]
    Cmd,
    PowerShell,
}

/// What a command produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    pub exit: u32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn ok(text: impl Into<String>) -> Output {
        Output {
            exit: 0,
            stdout: crlf(&text.into()),
            stderr: String::new(),
        }
    }
    fn err(exit: u32, text: impl Into<String>) -> Output {
        Output {
            exit,
            stdout: String::new(),
            stderr: crlf(&text.into()),
        }
    }
}

fn crlf(text: &str) -> String {
    let mut out = text.replace("\r\n", "\n").replace('\n', "\r\n");
    if !out.is_empty() && !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out
}

/// What a command asks for once the framing is undone.
pub enum Wait {
    /// Answer now.
    Now(Output),
    /// The script loops until this restore session completes; answer then.
    RestoreSession {
        session: String,
        then: Box<dyn FnOnce(&State) -> Output + Send>,
    },
}

/// Runs one SSH exec request.
pub fn exec(
    state: &mut State,
    shell: DefaultShell,
    command: &str,
    stdin: &str,
    now: Instant,
) -> Wait {
    state.counters.ssh_commands += 1;
    if let Some(text) = &state.faults.powershell_error {
        return Wait::Now(Output::err(1, text.clone()));
    }
    let trimmed = command.trim();
    let lower = trimmed.to_ascii_lowercase();
    let script = if lower.starts_with("powershell") {
        let rest = &trimmed["powershell".len()..];
        if rest.trim_end().ends_with("-Command -") || rest.trim_end().ends_with("-command -") {
            stdin.to_string()
        } else {
            match shell {
                // cmd.exe removes its escape character before PowerShell sees the line.
                DefaultShell::Cmd => rest.replace("^|", "|"),
                DefaultShell::PowerShell if rest.contains("^|") => {
                    return Wait::Now(Output::err(
                        1,
                        "At line:1 char:1\nUnexpected token '^' in expression or statement.\n    + CategoryInfo          : ParserError",
                    ));
                }
                DefaultShell::PowerShell => rest.to_string(),
            }
        }
    } else {
        return Wait::Now(Output::err(
            1,
            format!(
                "'{}' is not recognized as an internal or external command,\noperable program or batch file.",
                trimmed.split_whitespace().next().unwrap_or("")
            ),
        ));
    };
    run_script(state, &script, now)
}

/// The first single- or double-quoted argument after `marker`.
fn quoted_after<'a>(script: &'a str, marker: &str) -> Option<&'a str> {
    let start = script.find(marker)? + marker.len();
    let rest = script[start..].trim_start();
    let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &rest[1..];
    body.find(quote).map(|end| &body[..end])
}

fn run_script(state: &mut State, script: &str, now: Instant) -> Wait {
    // Every profile is VBR 11 or later, where the snap-in was replaced by a module.
    if script.contains("Add-PSSnapin") {
        return Wait::Now(Output::err(
            1,
            "Add-PSSnapin : The Windows PowerShell snap-in 'VeeamPSSnapin' is not installed on this computer.",
        ));
    }
    let json = script.contains("ConvertTo-Json");

    // Version probe (registry CorePath + Veeam.Backup.Configuration.dll).
    if script.contains("ProductVersion") {
        let version = state.profile.product_version();
        return Wait::Now(Output::ok(if json {
            json!({ "ProductVersion": version }).to_string()
        } else {
            version.to_string()
        }));
    }

    if script.contains("Start-VBRRestoreVM") {
        return start_restore_vm(state, script, json, now);
    }

    if script.contains("Remove-VBRRestorePoint") {
        let id = quoted_after(script, "-eq").unwrap_or_default();
        // Exact id match only: a restore point is never chosen by a loop that falls back.
        let exact = state
            .restore_points
            .iter()
            .any(|p| p.guid.eq_ignore_ascii_case(id));
        if !exact || id.is_empty() {
            return Wait::Now(Output {
                exit: 1,
                stdout: crlf("Failed to delete"),
                stderr: String::new(),
            });
        }
        let removed = state.remove_restore_point_chain(id);
        return Wait::Now(Output::ok(if json {
            json!({ "Removed": removed }).to_string()
        } else {
            String::new()
        }));
    }

    if script.contains("Remove-VBRJob") {
        let Some(name) = quoted_after(script, "Get-VBRJob -Name") else {
            return Wait::Now(Output::err(
                1,
                "Remove-VBRJob : Cannot validate argument on parameter 'Job'.",
            ));
        };
        let with_backup = script.contains("Remove-VBRBackup");
        let removed = state.remove_job(name, with_backup);
        // A script that checks for the job itself (`if ($job)`) reports instead of failing.
        if !removed && script.contains("if ($job)") {
            return Wait::Now(Output::ok(if json {
                json!({ "Removed": false }).to_string()
            } else {
                String::new()
            }));
        }
        if !removed {
            return Wait::Now(Output::err(
                1,
                "Remove-VBRJob : Cannot validate argument on parameter 'Job'. The argument is null. Provide a valid value for the argument, and then try the command again.",
            ));
        }
        return Wait::Now(Output::ok(if json {
            json!({ "Removed": name }).to_string()
        } else {
            String::new()
        }));
    }

    if script.contains("GetBackupTargetRepository") {
        let name = quoted_after(script, "Get-VBRJob -Name").unwrap_or_default();
        let Some(job) = state.jobs.iter().find(|j| j.name == name) else {
            return Wait::Now(Output::err(
                1,
                "You cannot call a method on a null-valued expression.\n    + FullyQualifiedErrorId : InvokeMethodOnNull",
            ));
        };
        let Some(repo) = state.repositories.iter().find(|r| r.guid == job.repository) else {
            return Wait::Now(Output::err(1, "Repository not found"));
        };
        return Wait::Now(Output::ok(if json {
            json!({ "Name": repo.name, "Id": repo.guid }).to_string()
        } else {
            format!("\n\nName : {}\n\n\n", repo.name)
        }));
    }

    if script.contains("Sync-VBRBackupRepository") {
        return Wait::Now(Output::ok(if json {
            json!({ "Result": "Success" }).to_string()
        } else {
            String::new()
        }));
    }
    if script.contains("Get-VBRSession") {
        return Wait::Now(Output::ok(if json {
            json!({ "Result": "Success" }).to_string()
        } else {
            "Success".to_string()
        }));
    }

    if script.contains("Get-VBRRestoreSession") {
        let id = quoted_after(script, "-Id").unwrap_or_default();
        let Some(session) = state.restore_sessions.get(guid_of(id)).cloned() else {
            return Wait::Now(Output::ok(format!(
                "Cannot find restore session with ID {id}"
            )));
        };
        let (_, result, _) = state.restore_state(&session, now);
        let completed = result != "None";
        return Wait::Now(Output::ok(if json {
            json!({
                "Id": session.guid, "Name": session.new_vm_name.clone().unwrap_or(session.vm_name.clone()),
                "IsCompleted": completed, "Result": result, "Description": session.description,
            })
            .to_string()
        } else {
            session.description.clone()
        }));
    }

    if script.contains("Get-VBRRestorePoint") {
        let name = quoted_after(script, "-Name");
        let points: Vec<_> = state
            .restore_points
            .iter()
            .filter(|p| name.is_none_or(|n| p.vm_name == n))
            .collect();
        if json {
            let list: Vec<_> = points
                .iter()
                .map(|p| {
                    json!({
                        "Id": p.guid, "Name": p.vm_name,
                        "CreationTimeUtc": crate::xml::utc(p.created),
                        "Type": if p.full { "Full" } else { "Increment" }, "IsConsistent": true,
                    })
                })
                .collect();
            return Wait::Now(Output::ok(serde_json::Value::Array(list).to_string()));
        }
        let text: String = points
            .iter()
            .map(|p| {
                let time = jiff::Timestamp::try_from(p.created)
                    .map(|t| t.strftime("%-m/%-d/%Y %-H:%M:%S").to_string())
                    .unwrap_or_default();
                format!(
                    "\nId           : {}\nCreationTime : {time}\nType         : {}\n",
                    p.guid,
                    if p.full { "Full" } else { "Increment" }
                )
            })
            .collect();
        return Wait::Now(Output::ok(text));
    }

    Wait::Now(Output::err(
        1,
        "The term is not recognized as the name of a cmdlet, function, script file, or operable program.",
    ))
}

fn start_restore_vm(state: &mut State, script: &str, json: bool, now: Instant) -> Wait {
    let id = quoted_after(script, "-eq").unwrap_or_default();
    // Exact id match; there is no fallback to another restore point.
    let Some(point) = state
        .restore_points
        .iter()
        .find(|p| p.guid.eq_ignore_ascii_case(id))
        .cloned()
    else {
        return Wait::Now(Output::err(
            1,
            format!("Restore point '{id}' was not found"),
        ));
    };
    let server = quoted_after(script, "Get-VBRServer -Name").unwrap_or_default();
    if !state.esxi_hosts.iter().any(|h| h == server) {
        return Wait::Now(Output::err(1, format!("Server '{server}' was not found")));
    }
    let datastore = script
        .find("Find-VBRViDatastore")
        .and_then(|at| quoted_after(&script[at..], "-Name"));
    if let Some(datastore) = datastore
        && !state.datastores.iter().any(|d| d == datastore)
    {
        return Wait::Now(Output::err(
            1,
            format!("Datastore '{datastore}' was not found"),
        ));
    }
    let Some(vm_name) = quoted_after(script, "-VMName") else {
        return Wait::Now(Output::err(
            1,
            "Start-VBRRestoreVM : Missing an argument for parameter 'VMName'.",
        ));
    };
    let vm_name = vm_name.to_string();
    let session = state.new_restore_session(&point, now, Some(vm_name.clone()));
    let waits = script.contains("IsCompleted");
    if !waits {
        let text = if json {
            json!({ "Id": session, "Name": vm_name }).to_string()
        } else {
            session.clone()
        };
        return Wait::Now(Output::ok(text));
    }
    let session_id = session.clone();
    Wait::RestoreSession {
        session,
        then: Box::new(move |state: &State| {
            let result = state
                .restore_sessions
                .get(&session_id)
                .map(|s| s.result.clone());
            match result {
                Some(RestoreResult::Failed) => Output::err(1, "Restore session failed"),
                _ => Output::ok(if json {
                    json!({ "Id": session_id, "Name": vm_name }).to_string()
                } else {
                    String::new()
                }),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Include, Profile, Timing, new_guid};

    fn state() -> State {
        let mut s = State::new(Profile::V12, "administrator", "secret", "vcenter.local");
        s.timing = Timing {
            task_phase_ms: 0,
            job_run_ms: 0,
            restore_phase_ms: 0,
            session_idle_ms: 60_000,
        };
        s
    }

    fn now(s: &mut State, command: &str, stdin: &str) -> Output {
        match exec(s, DefaultShell::Cmd, command, stdin, Instant::now()) {
            Wait::Now(out) => out,
            Wait::RestoreSession { then, .. } => then(s),
        }
    }

    #[test]
    fn cloudstacks_repository_lookup_prints_a_format_list_line() {
        let mut s = state();
        let out = now(
            &mut s,
            "PowerShell Import-Module Veeam.Backup.PowerShell -WarningAction SilentlyContinue;$ProgressPreference='SilentlyContinue';$Job = Get-VBRJob -Name 'Gold';$Job.GetBackupTargetRepository() ^| select Name ^| Format-List",
            "",
        );
        assert_eq!(out.exit, 0);
        assert!(out.stdout.contains("Name : Gold Repository\r\n"));
    }

    #[test]
    fn a_script_on_stdin_answers_json() {
        let mut s = state();
        let out = now(
            &mut s,
            "powershell -NoProfile -NonInteractive -Command -",
            "$job = Get-VBRJob -Name 'Silver'\n$job.GetBackupTargetRepository() | Select-Object Name, Id | ConvertTo-Json -Compress",
        );
        let value: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(value["Name"], "Default Backup Repository");
    }

    #[test]
    fn the_escaped_pipe_is_a_parse_error_when_the_default_shell_is_powershell() {
        let mut s = state();
        let Wait::Now(out) = exec(
            &mut s,
            DefaultShell::PowerShell,
            "PowerShell Get-VBRJob ^| Format-List",
            "",
            Instant::now(),
        ) else {
            panic!("expected an immediate answer")
        };
        assert_ne!(out.exit, 0);
    }

    #[test]
    fn deleting_an_unknown_restore_point_fails_and_keeps_the_others() {
        let mut s = state();
        let moref = s.add_vm("vm1");
        let obj_ref = s.vm_ref(&moref);
        let job = s.jobs[0].guid.clone();
        s.job_mut(&job).unwrap().includes.push(Include {
            guid: new_guid(),
            obj_ref,
            name: "vm1".into(),
        });
        s.start_job_run(&job, Instant::now());
        let script = format!(
            "$p = Get-VBRRestorePoint | Where-Object {{ $_.Id -eq '{}' }}\nif ($p) {{ Remove-VBRRestorePoint -Oib $p -Confirm:$false }} else {{ Write-Output 'Failed to delete'; exit 1 }}",
            new_guid()
        );
        let out = now(&mut s, "powershell -Command -", &script);
        assert_eq!(out.exit, 1);
        assert!(out.stdout.contains("Failed to delete"));
        assert_eq!(s.restore_points.len(), 1);
        let id = s.restore_points[0].guid.clone();
        let out = now(
            &mut s,
            "powershell -Command -",
            &script.replace(script.split('\'').nth(1).unwrap(), &id),
        );
        assert_eq!(out.exit, 0, "{out:?}");
        assert!(s.restore_points.is_empty());
    }

    #[test]
    fn the_snap_in_is_gone_from_version_11_on() {
        let mut s = state();
        let out = now(
            &mut s,
            "PowerShell Add-PSSnapin VeeamPSSnapin;Get-VBRJob",
            "",
        );
        assert_eq!(out.exit, 1);
    }
}
