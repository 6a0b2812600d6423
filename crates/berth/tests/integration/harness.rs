//! Starts real servers for the tests: `berth serve` and CNCF Distribution's `registry`, each on
//! 127.0.0.1 with a free port and its own temp root, stopped by PID when dropped. Also finds
//! the external tools tests need, failing with the install command when one is missing.
//!
//! With `BERTH_TEST_AUTH=1` ([`auth_mode`]) every server starts with htpasswd auth on and
//! every client (the HTTP helpers, skopeo, the CLI with `--url`) signs in: `scripts/test` runs
//! the protocol, delete, trash and GC tests a second time that way.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `berth` binary under test.
pub fn berth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

/// Path of an external tool, or a failure that says how to get it.
pub fn require_tool(name: &str, install: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("this test needs `{name}`, which is not installed; {install} (scripts/test installs it when run as root)");
}

/// Auth on for every server and client of this test process (`BERTH_TEST_AUTH=1`): one user
/// in an htpasswd file written by `berth user add`, and a containers auth file naming each
/// server as it starts, for skopeo.
pub struct AuthMode {
    pub user: &'static str,
    pub password: &'static str,
    htpasswd: PathBuf,
    auth_json: PathBuf,
    hosts: Mutex<Vec<String>>,
}

/// The auth mode, when this test process runs in it.
pub fn auth_mode() -> Option<&'static AuthMode> {
    static MODE: std::sync::OnceLock<Option<AuthMode>> = std::sync::OnceLock::new();
    MODE.get_or_init(|| {
        if std::env::var("BERTH_TEST_AUTH").as_deref() != Ok("1") {
            return None;
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("auth-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mode = AuthMode {
            user: "tester",
            password: "tester-pass",
            htpasswd: dir.join("htpasswd"),
            auth_json: dir.join("auth.json"),
            hosts: Mutex::new(Vec::new()),
        };
        let f = mode.htpasswd.to_str().unwrap().to_owned();
        let out = cli_input(&["user", "add", mode.user, "--file", &f, "--password-stdin"], mode.password);
        assert_eq!(out.code, 0, "berth user add: {}", out.stderr);
        mode.write_auth_json(&[]);
        Some(mode)
    })
    .as_ref()
}

impl AuthMode {
    /// The config section that turns auth on (the same for Berth and Distribution).
    pub fn section(&self) -> String {
        format!("auth:\n  htpasswd:\n    realm: auth-mode\n    path: {}\n", self.htpasswd.display())
    }

    /// `config` with auth on, unless it sets up auth itself.
    fn add_to(&self, config: &str) -> String {
        if config.contains("auth:") || config.contains("access:") {
            config.to_owned()
        } else {
            format!("{config}\n{}", self.section())
        }
    }

    /// Names a server in the auth file skopeo reads.
    fn register(&self, addr: &str) {
        let mut hosts = self.hosts.lock().unwrap();
        hosts.push(addr.to_owned());
        self.write_auth_json(&hosts);
    }

    fn write_auth_json(&self, hosts: &[String]) {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password));
        let auths: serde_json::Map<String, serde_json::Value> =
            hosts.iter().map(|h| (h.clone(), serde_json::json!({ "auth": token }))).collect();
        let tmp = self.auth_json.with_extension(format!("tmp{}", hosts.len()));
        std::fs::write(&tmp, serde_json::json!({ "auths": auths }).to_string()).unwrap();
        std::fs::rename(&tmp, &self.auth_json).unwrap();
    }

    /// Where skopeo finds the credentials.
    pub fn auth_json(&self) -> &Path {
        &self.auth_json
    }
}

/// A free TCP port on 127.0.0.1 (for servers that cannot report the port they bound).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An HTTP client that returns error statuses as responses.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().new_agent()
}

/// An HTTP client that trusts the PEM certificates in `ca_pem` (and nothing else), and sends
/// `client` (PEM certificate and key) when given.
pub fn https(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> ureq::Agent {
    use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig, parse_pem};
    let certs = |pem: &[u8]| -> Vec<ureq::tls::Certificate<'static>> {
        parse_pem(pem)
            .filter_map(|i| match i.unwrap() {
                PemItem::Certificate(c) => Some(c.to_owned()),
                _ => None,
            })
            .collect()
    };
    let mut tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(certs(ca_pem))));
    if let Some((cert, key)) = client {
        let key = parse_pem(key)
            .find_map(|i| match i.unwrap() {
                PemItem::PrivateKey(k) => Some(k.to_owned()),
                _ => None,
            })
            .expect("a PEM private key");
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&certs(cert), key)));
    }
    ureq::Agent::config_builder().http_status_as_error(false).tls_config(tls.build()).build().new_agent()
}

/// A throwaway certificate authority made with the `openssl` command, and certificates it
/// issues, in a folder of their own.
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    /// Makes a CA in `dir` (`ca.crt`, `ca.key`).
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = require_tool("openssl", "install it with `apt-get install -y openssl`");
        run(Command::new(&openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=berth test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.crt")));
        TestCa { dir: dir.to_owned() }
    }

    /// Issues `<name>.crt` and `<name>.key` for a server on 127.0.0.1 and localhost, or for a
    /// client; returns their paths.
    pub fn issue(&self, name: &str, server: bool) -> (PathBuf, PathBuf) {
        let openssl = require_tool("openssl", "install it with `apt-get install -y openssl`");
        let (crt, key, csr, ext) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
            self.dir.join(format!("{name}.csr")),
            self.dir.join(format!("{name}.ext")),
        );
        run(Command::new(&openssl)
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        let usage = if server {
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        };
        std::fs::write(&ext, format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{usage}")).unwrap();
        run(Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(self.dir.join("ca.crt"))
            .arg("-CAkey")
            .arg(self.dir.join("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt));
        (crt, key)
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.crt")).unwrap()
    }
}

/// Captures a child's stderr lines in the background (so its pipe never fills).
fn capture(child: &mut Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr piped");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    log
}

fn wait_until(what: &str, log: &Arc<Mutex<String>>, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start within 30 s; its log:\n{}", log.lock().unwrap());
}

/// `berth serve` on `cfg`, which must refuse to start (within 30 s); returns what it said.
pub fn serve_refused(cfg: &Path) -> String {
    use std::io::Read;
    let mut child = Command::new(berth_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(!status.success(), "berth serve exited 0 instead of refusing: {err}");
            return err;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth serve on {} started (or hung) where it must refuse", cfg.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A running `berth serve`.
pub struct Berth {
    child: Option<Child>,
    /// `127.0.0.1:<port>`
    pub addr: String,
    /// The storage root.
    pub root: PathBuf,
    log: Arc<Mutex<String>>,
    _dir: Option<tempfile::TempDir>,
}

impl Berth {
    /// Berth on a fresh temp root.
    pub fn start() -> Berth {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Berth::start_on(&dir.path().join("root"), None);
        b._dir = Some(dir);
        b
    }

    /// Berth on `root`, with an optional config file body.
    pub fn start_on(root: &Path, config: Option<&str>) -> Berth {
        let mut args = vec!["--addr".to_owned(), "127.0.0.1:0".into(), "--root".into(), root.display().to_string()];
        let with_auth = auth_mode().map(|m| m.add_to(config.unwrap_or("")));
        if let Some(text) = with_auth.as_deref().or(config) {
            let cfg_path = root.with_extension("berth-test.yml");
            std::fs::create_dir_all(root.parent().unwrap()).unwrap();
            std::fs::write(&cfg_path, text).unwrap();
            args.extend(["--config".to_owned(), cfg_path.display().to_string()]);
        }
        let mut b = Berth::spawn(None, &args);
        b.root = root.to_owned();
        if let Some(m) = auth_mode() {
            m.register(&b.addr);
        }
        b
    }

    /// `berth serve ARGS` in `cwd`; the args must make it listen on 127.0.0.1:0 (flag, env
    /// or config). `root` is left empty for the caller to fill in.
    pub fn spawn(cwd: Option<&Path>, args: &[String]) -> Berth {
        let mut cmd = Command::new(berth_bin());
        cmd.arg("serve").args(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn berth");
        let log = capture(&mut child);
        let mut addr = String::new();
        wait_until("berth", &log, || {
            let l = log.lock().unwrap();
            match l.find("berth listening on ") {
                Some(i) => {
                    addr = l[i + "berth listening on ".len()..].split_whitespace().next().unwrap().to_owned();
                    true
                }
                None => false,
            }
        });
        Berth { child: Some(child), addr, root: PathBuf::new(), log, _dir: None }
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal (`HUP`, `TERM`, …) to the server.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        run(Command::new("kill").arg(format!("-{name}")).arg(pid));
    }

    /// Kills the server with SIGKILL, as a crash or an OOM kill would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Stops the server with SIGTERM and waits for it; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("berth did not stop within 20 s of SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until the server's log holds `needle` (30 s at most).
pub fn wait_for_log(b: &Berth, needle: &str) {
    wait_until(&format!("the log line {needle:?}"), &b.log, || b.log().contains(needle));
}

/// A running CNCF Distribution (`docker-registry` from Debian, version 2.8).
pub struct Distribution {
    child: Option<Child>,
    /// `127.0.0.1:<port>`
    pub addr: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// Distribution's binary, or a failure saying how to install it.
pub fn distribution_bin() -> PathBuf {
    require_tool("docker-registry", "install it with `apt-get install -y docker-registry`")
}

impl Distribution {
    /// Distribution serving `root`, deletes enabled or not.
    pub fn start(root: &Path, delete_enabled: bool) -> Distribution {
        Distribution::start_config(root, delete_enabled, "")
    }

    /// Distribution serving `root` with deletes enabled and `extra` config appended.
    pub fn start_with(root: &Path, extra: &str) -> Distribution {
        Distribution::start_config(root, true, extra)
    }

    /// Distribution as Debian configures it: deletes enabled, in-memory blob descriptor cache.
    pub fn start_debian_default(root: &Path) -> Distribution {
        Distribution::start_config(root, true, "CACHE")
    }

    fn start_config(root: &Path, delete_enabled: bool, extra: &str) -> Distribution {
        let (cache, extra) =
            if extra == "CACHE" { ("  cache:\n    blobdescriptor: inmemory\n", "") } else { ("", extra) };
        let storage = format!(
            "{cache}  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {delete_enabled}\n",
            root.display()
        );
        Distribution::start_storage(&storage, extra)
    }

    /// Distribution with `storage` (the lines below `storage:`, indented) and `extra` sections.
    pub fn start_storage(storage: &str, extra: &str) -> Distribution {
        let with_auth = auth_mode().map(|m| m.add_to(extra));
        let extra = with_auth.as_deref().unwrap_or(extra);
        let bin = distribution_bin();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!("version: 0.1\nlog:\n  level: warn\nstorage:\n{storage}http:\n  addr: {addr}\n{extra}"),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            // Its AWS SDK panics at start on this machine's AWS_CA_BUNDLE (not a file it can use).
            .env_remove("AWS_CA_BUNDLE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn docker-registry");
        let log = capture(&mut child);
        let agent = http();
        let url = format!("http://{addr}/v2/");
        // Any answer (401 with auth on) means it is up.
        wait_until("docker-registry", &log, || agent.get(&url).call().is_ok());
        if let Some(m) = auth_mode() {
            m.register(&addr);
        }
        Distribution { child: Some(child), addr, log, _dir: dir }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a command; fails the test with its output when it does not succeed. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The result of running the `berth` CLI.
pub struct CliOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    /// Stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs `berth ARGS` with no terminal on stdin (so it may never prompt).
pub fn cli(args: &[&str]) -> CliOut {
    cli_env(args, &[])
}

/// [`cli`] with environment variables set (`Some`) or removed (`None`).
pub fn cli_env(args: &[&str], env: &[(&str, Option<&str>)]) -> CliOut {
    cli_full(args, env, None)
}

/// [`cli`] with `input` piped to stdin (a password for `--password-stdin`).
pub fn cli_input(args: &[&str], input: &str) -> CliOut {
    cli_full(args, &[], Some(input))
}

fn cli_full(args: &[&str], env: &[(&str, Option<&str>)], input: Option<&str>) -> CliOut {
    let mut cmd = Command::new(berth_bin());
    // In auth mode a command for a server signs in (unless the test does that itself).
    let mut input = input.map(str::to_owned);
    let mut args: Vec<&str> = args.to_vec();
    if args.contains(&"--url")
        && !args.contains(&"--user")
        && input.is_none()
        && let Some(m) = auth_mode()
    {
        args.extend(["--user", m.user, "--password-stdin"]);
        input = Some(format!("{}\n", m.password));
    }
    let input = input.as_deref();
    cmd.args(&args).env_remove("BERTH_URL").env_remove("BERTH_ROOT").env_remove("BERTH_CONFIG");
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.spawn().expect("run berth");
    if let Some(text) = input {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // berth may have stopped before reading it (a refused command): that is its answer.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().expect("run berth");
    CliOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `berth ARGS`, which must succeed; returns it.
pub fn cli_ok(args: &[&str]) -> CliOut {
    let out = cli(args);
    assert_eq!(out.code, 0, "berth {args:?} failed:\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
    out
}

/// `berth ARGS`, which must fail with exit code 1 and a one-line reason; returns the reason.
pub fn cli_fails(args: &[&str]) -> String {
    let out = cli(args);
    assert_eq!(out.code, 1, "berth {args:?} should fail:\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
    let err = out.stderr.trim().to_owned();
    assert!(err.starts_with("berth: ") && err.lines().count() == 1, "reason is not one line: {err:?}");
    err
}
