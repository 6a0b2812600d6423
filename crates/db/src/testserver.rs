//! A throwaway PostgreSQL cluster for tests: `initdb` into a temp folder, the server on a free
//! loopback port, one database per test, stopped (by its own `pg_ctl`) when dropped.
//!
//! Debian's `postgresql` package provides the programs; `scripts/test` installs it when
//! missing. A test that cannot find them fails and says so; it never skips. PostgreSQL refuses
//! to run as root, so as root the cluster runs as the package's `postgres` user.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use berth_storage::testservers::run;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{DbConfig, Keys};

/// A running PostgreSQL server.
pub struct TestPg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    as_postgres: bool,
    next: AtomicUsize,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("initdb").is_file()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is missing (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql (scripts/test does)")
    })
}

impl TestPg {
    /// Initialises and starts a cluster.
    pub fn start() -> TestPg {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(dir.path()));
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = TestPg { bin, dir, port, as_postgres, next: AtomicUsize::new(0) };
        run(pg.command("initdb").arg("-D").arg(pg.data()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]));
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }

    fn command(&self, program: &str) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        }
    }

    fn start_server(&self) {
        // `fsync=off` loses nothing when only the server dies (the kernel keeps what it wrote);
        // `synchronous_commit=off` would lose the last commits on `stop`, which no production
        // setting Berth supports does (see `PgCoordination::start`).
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("pg.log"))
            .args(["-w", "-t", "30", "-o", &opts, "start"]));
    }

    /// Stops the server at once (as a crash would), leaving its data.
    pub fn stop(&self) {
        run(self.command("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]));
    }

    /// Starts it again after [`TestPg::stop`].
    pub fn restart(&self) {
        self.start_server();
    }

    /// A new, empty database; the configuration that reaches it.
    pub fn database(&self) -> DbConfig {
        let name = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        let admin = self.config_for("postgres");
        let mut c =
            admin.pg().connect(postgres::NoTls).unwrap_or_else(|e| panic!("connecting to {}: {e}", admin.describe()));
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
        self.config_for(&name)
    }

    fn config_for(&self, dbname: &str) -> DbConfig {
        DbConfig::from_keys(&Keys {
            host: Some("127.0.0.1".into()),
            port: Some(self.port),
            user: Some("postgres".into()),
            password: None,
            dbname: Some(dbname.into()),
            sslmode: Some("disable".into()),
        })
        .expect("test database config")
    }

    /// The URL of a database made by [`TestPg::database`] (the cluster trusts every local
    /// connection, so it holds no password).
    pub fn url(&self, config: &DbConfig) -> String {
        format!("{}?sslmode=disable", config.describe())
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]).output();
    }
}
