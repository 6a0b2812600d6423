//! Real S3 servers for tests: Garage (a production distributed object store) and s3s-fs (a
//! second, different implementation), started on free loopback ports in a temp folder and
//! stopped (by their own PIDs) when dropped. `scripts/s3-servers` installs both once per
//! machine into `${BERTH_TOOLS:-$HOME/.cache/berth-tools}/bin`; a test that cannot find them
//! fails and says so, it never skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::s3::S3Options;

/// Where `scripts/s3-servers` puts the servers.
pub fn tools_bin() -> PathBuf {
    match std::env::var_os("BERTH_TOOLS") {
        Some(t) => PathBuf::from(t).join("bin"),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/berth-tools/bin")
        }
    }
}

fn tool(name: &str) -> PathBuf {
    let path = tools_bin().join(name);
    assert!(path.is_file(), "{} is missing: run scripts/s3-servers (scripts/test does) to install it", path.display());
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn wait_for(what: &str, child: &mut Child, log: &Path, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} not ready in 30 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A running S3 server with one bucket, and the options that reach it.
pub struct S3Server {
    /// What to give [`crate::S3Backend::open`].
    pub options: S3Options,
    child: Child,
    /// The server's log.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Garage's fixed test credentials (its key ids are `GK` and 24 hex digits).
const GARAGE_KEY: &str = "GK000000000000000000000001";
const GARAGE_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000001";

impl S3Server {
    /// A single-node Garage 2.5.0 with the bucket `berth-test`.
    pub fn garage() -> S3Server {
        let bin = tool("garage");
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let secret: String = (0..32).map(|i| format!("{:02x}", (i * 37 + s3 as usize) % 256)).collect();
        let config = w.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{m}\"\ndata_dir = \"{d}\"\ndb_engine = \"lmdb\"\nmetadata_fsync = false\n\
                 data_fsync = false\nreplication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n[s3_api]\n\
                 s3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"test-admin-token\"\n",
                m = w.join("meta").display(),
                d = w.join("data").display(),
            ),
        )
        .unwrap();
        let log = w.join("garage.log");
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn garage");
        let g = || {
            let mut c = Command::new(&bin);
            c.arg("-c").arg(&config);
            c
        };
        wait_for("garage", &mut child, &log, || g().arg("status").output().is_ok_and(|o| o.status.success()));
        let id = String::from_utf8(run(g().args(["node", "id", "-q"])).stdout).unwrap();
        let id = id.trim().split('@').next().unwrap().to_owned();
        run(g().args(["layout", "assign", "-z", "dc1", "-c", "1G", &id]));
        run(g().args(["layout", "apply", "--version", "1"]));
        run(g().args(["key", "import", "--yes", "-n", "berth", GARAGE_KEY, GARAGE_SECRET]));
        run(g().args(["bucket", "create", "berth-test"]));
        run(g().args(["bucket", "allow", "--read", "--write", "--owner", "berth-test", "--key", "berth"]));
        wait_for("garage's S3 port", &mut child, &log, || answers(s3));
        let mut options = S3Options::new("berth-test", "garage", GARAGE_KEY, GARAGE_SECRET);
        options.endpoint = Some(format!("http://127.0.0.1:{s3}"));
        options.path_style = true;
        options.secure = false;
        S3Server { options, child, log, _dir: dir }
    }

    /// s3s-fs 0.14.1 over a temp folder, with the bucket `berth-test`.
    pub fn s3s_fs() -> S3Server {
        let bin = tool("s3s-fs");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("berth-test")).unwrap();
        let port = free_port();
        let log = dir.path().join("s3s-fs.log");
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "AKIDBERTH", "--secret-key", "SECRETBERTH"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn s3s-fs");
        wait_for("s3s-fs", &mut child, &log, || answers(port));
        let mut options = S3Options::new("berth-test", "us-east-1", "AKIDBERTH", "SECRETBERTH");
        options.endpoint = Some(format!("http://127.0.0.1:{port}"));
        options.path_style = true;
        options.secure = false;
        S3Server { options, child, log, _dir: dir }
    }
}
