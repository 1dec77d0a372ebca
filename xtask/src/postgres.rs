//! A throw-away PostgreSQL server from Debian's `postgresql` package: its own cluster in a
//! temporary directory, reachable only on a Unix socket there (no TCP), stopped and deleted
//! when dropped. `initdb` refuses to run as root, so as root the server runs as `postgres`.

use crate::Result;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The superuser of the throw-away cluster.
const SUPERUSER: &str = "postgres";
/// The Debian package that provides the server.
const PACKAGE_HINT: &str = "install Debian's PostgreSQL server: apt-get install -y postgresql";

pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres_user: bool,
}

impl TempPostgres {
    /// Creates and starts the cluster; fails (never skips) when PostgreSQL is not installed.
    pub fn start() -> Result<TempPostgres> {
        let bin = server_bin_dir()?;
        let as_postgres_user = running_as_root()?;
        let dir = std::env::temp_dir().join(format!("bnr-postgres-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let server = TempPostgres {
            dir,
            bin,
            as_postgres_user,
        };
        if as_postgres_user {
            run(Command::new("chown")
                .arg(format!("{SUPERUSER}:{SUPERUSER}"))
                .arg(&server.dir))?;
        }
        let data = server.dir.join("data");
        let mut initdb = server.tool("initdb");
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run_quiet(&mut initdb)?;
        // Unix socket only, in the cluster's own directory; durability is not needed for tests.
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=400",
            server.dir.display()
        );
        let mut start = server.tool("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(server.dir.join("server.log"))
            .args(["-w", "start"]);
        run_quiet(&mut start)?;
        Ok(server)
    }

    /// The connection URL of the `postgres` database (tests create their own databases).
    pub fn url(&self) -> String {
        format!(
            "postgresql:///postgres?host={}&user={SUPERUSER}",
            self.dir.display()
        )
    }

    /// Creates database `name` (owned by the superuser).
    pub fn create_database(&self, name: &str) -> Result<()> {
        let mut createdb = self.tool("createdb");
        createdb
            .arg("-h")
            .arg(&self.dir)
            .args(["-U", SUPERUSER, name]);
        run_quiet(&mut createdb)
    }

    /// The connection URL of database `name`.
    pub fn database_url(&self, name: &str) -> String {
        format!(
            "postgresql:///{name}?host={}&user={SUPERUSER}",
            self.dir.display()
        )
    }

    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", SUPERUSER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let mut stop = self.tool("pg_ctl");
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = run_quiet(&mut stop);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `/usr/lib/postgresql/<newest version>/bin`.
fn server_bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|_| {
            format!(
                "PostgreSQL is not installed ({} is missing): {PACKAGE_HINT}",
                root.display()
            )
        })?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no PostgreSQL server in {}: {PACKAGE_HINT}", root.display()).into())
}

fn running_as_root() -> Result<bool> {
    let output = Command::new("id").arg("-u").output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn run(command: &mut Command) -> Result<()> {
    let status = command.status()?;
    if !status.success() {
        return Err(format!("{command:?} failed: {status}").into());
    }
    Ok(())
}

/// Runs `command`, showing its output only when it fails.
fn run_quiet(command: &mut Command) -> Result<()> {
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}
