//! Real S3 servers for tests: Garage (a production distributed object store), as one node or
//! as a three-node cluster with replication 3, and s3s-fs (a second, different
//! implementation), started on free loopback ports in a temp folder and stopped (by their own
//! PIDs) when dropped. `scripts/s3-servers` installs both once per
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

/// Runs `cmd`, panicking with its output unless it succeeds (other crates' test servers use
/// it too).
pub fn run(cmd: &mut Command) -> Output {
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

/// A Garage node's config file in `w` (its metadata and data folders beside it), serving S3
/// on `s3`, RPC on `rpc` and admin on `admin`, keeping `replication` copies of everything.
fn garage_config(w: &Path, (s3, rpc, admin): (u16, u16, u16), secret: &str, replication: u8) -> PathBuf {
    std::fs::create_dir_all(w).unwrap();
    let config = w.join("garage.toml");
    std::fs::write(
        &config,
        format!(
            "metadata_dir = \"{m}\"\ndata_dir = \"{d}\"\ndb_engine = \"lmdb\"\nmetadata_fsync = false\n\
             data_fsync = false\nreplication_factor = {replication}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n[s3_api]\n\
             s3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"test-admin-token\"\n",
            m = w.join("meta").display(),
            d = w.join("data").display(),
        ),
    )
    .unwrap();
    config
}

/// `garage server` on `config`, logging to `log`.
fn spawn_garage(bin: &Path, config: &Path, log: &Path) -> Child {
    Command::new(bin)
        .arg("-c")
        .arg(config)
        .arg("server")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn garage")
}

/// `garage -c <config>`, for admin commands.
fn garage_cli(bin: &Path, config: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("-c").arg(config);
    c
}

/// The node's `<id>@<rpc address>`, as `garage node connect` takes it.
fn garage_node_id(bin: &Path, config: &Path) -> String {
    String::from_utf8(run(garage_cli(bin, config).args(["node", "id", "-q"])).stdout).unwrap().trim().to_owned()
}

/// The test key, and the bucket `berth-test` it owns, created through the node of `config`.
fn garage_key_and_bucket(bin: &Path, config: &Path) {
    run(garage_cli(bin, config).args(["key", "import", "--yes", "-n", "berth", GARAGE_KEY, GARAGE_SECRET]));
    run(garage_cli(bin, config).args(["bucket", "create", "berth-test"]));
    run(garage_cli(bin, config).args([
        "bucket",
        "allow",
        "--read",
        "--write",
        "--owner",
        "berth-test",
        "--key",
        "berth",
    ]));
}

fn garage_options(s3: u16) -> S3Options {
    let mut options = S3Options::new("berth-test", "garage", GARAGE_KEY, GARAGE_SECRET);
    options.endpoint = Some(format!("http://127.0.0.1:{s3}"));
    options.path_style = true;
    options.secure = false;
    options
}

impl S3Server {
    /// A single-node Garage 2.5.0 with the bucket `berth-test`.
    pub fn garage() -> S3Server {
        let bin = tool("garage");
        // A port found free can be taken by a server another test starts before Garage binds
        // it; Garage then exits at once, and a fresh set of ports is tried.
        let mut attempt = 0;
        let (dir, ports, config, log, mut child) = loop {
            attempt += 1;
            let dir = tempfile::tempdir().unwrap();
            let ports = (free_port(), free_port(), free_port());
            let secret: String = (0..32).map(|i| format!("{:02x}", (i * 37 + ports.0 as usize) % 256)).collect();
            let config = garage_config(dir.path(), ports, &secret, 1);
            let log = dir.path().join("garage.log");
            let mut child = spawn_garage(&bin, &config, &log);
            let started = Instant::now();
            let exited = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break true;
                }
                if garage_cli(&bin, &config).arg("status").output().is_ok_and(|o| o.status.success())
                    || started.elapsed() > Duration::from_secs(30)
                {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if !exited || attempt == 3 {
                break (dir, ports, config, log, child);
            }
        };
        wait_for("garage", &mut child, &log, || {
            garage_cli(&bin, &config).arg("status").output().is_ok_and(|o| o.status.success())
        });
        let id = garage_node_id(&bin, &config);
        let id = id.split('@').next().unwrap();
        run(garage_cli(&bin, &config).args(["layout", "assign", "-z", "dc1", "-c", "1G", id]));
        run(garage_cli(&bin, &config).args(["layout", "apply", "--version", "1"]));
        garage_key_and_bucket(&bin, &config);
        wait_for("garage's S3 port", &mut child, &log, || answers(ports.0));
        S3Server { options: garage_options(ports.0), child, log, _dir: dir }
    }

    /// Three Garage 2.5.0 nodes on loopback, one zone each, keeping three copies of everything
    /// (so two nodes are a quorum and the cluster outlives any one of them), with the bucket
    /// `berth-test` reachable through every node's S3 endpoint.
    pub fn garage_cluster() -> GarageCluster {
        let bin = tool("garage");
        let dir = tempfile::tempdir().unwrap();
        let secret: String = (0..32).map(|i| format!("{:02x}", (i * 53 + 11) % 256)).collect();
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        for i in 1..=3 {
            let w = dir.path().join(format!("n{i}"));
            let ports = (free_port(), free_port(), free_port());
            let config = garage_config(&w, ports, &secret, 3);
            let log = w.join("garage.log");
            let child = spawn_garage(&bin, &config, &log);
            nodes.push(GarageNode { options: garage_options(ports.0), log, child: Some(child), s3_port: ports.0 });
            configs.push(config);
        }
        let mut cluster = GarageCluster { nodes, _dir: dir };
        for (node, config) in cluster.nodes.iter_mut().zip(&configs) {
            let child = node.child.as_mut().unwrap();
            wait_for("garage", child, &node.log, || {
                garage_cli(&bin, config).arg("status").output().is_ok_and(|o| o.status.success())
            });
        }
        let first = &configs[0];
        for config in &configs[1..] {
            run(garage_cli(&bin, first).args(["node", "connect", &garage_node_id(&bin, config)]));
        }
        for (i, config) in configs.iter().enumerate() {
            let id = garage_node_id(&bin, config);
            let id = id.split('@').next().unwrap();
            run(garage_cli(&bin, first).args(["layout", "assign", "-z", &format!("dc{}", i + 1), "-c", "1G", id]));
        }
        run(garage_cli(&bin, first).args(["layout", "apply", "--version", "1"]));
        garage_key_and_bucket(&bin, first);
        // The key and bucket reach the other nodes a moment after node 1 created them.
        for node in &mut cluster.nodes {
            let (port, options) = (node.s3_port, node.options.clone());
            let child = node.child.as_mut().unwrap();
            wait_for("a garage node serving the bucket", child, &node.log, || {
                answers(port) && crate::S3Backend::open(&options).and_then(|b| b.check()).is_ok()
            });
        }
        cluster
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

/// One node of a [`GarageCluster`].
pub struct GarageNode {
    /// What to give [`crate::S3Backend::open`] to reach the bucket through this node.
    pub options: S3Options,
    /// The node's log.
    pub log: PathBuf,
    child: Option<Child>,
    s3_port: u16,
}

/// Three Garage nodes with replication 3 ([`S3Server::garage_cluster`]); every node still
/// running is stopped, by its own PID, when this is dropped.
pub struct GarageCluster {
    /// Nodes 1, 2 and 3 (indexes 0, 1 and 2).
    pub nodes: Vec<GarageNode>,
    _dir: tempfile::TempDir,
}

impl GarageCluster {
    /// Kills node `i` (0-based) with SIGKILL, as a crash or a lost machine would, and reaps it.
    pub fn kill9(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("the node is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The PID of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
