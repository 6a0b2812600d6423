//! Notifications: a listener records what Berth and CNCF Distribution 2.8 send for the same
//! requests, with the same config; Berth's own actions (restore, GC); and, with the listener
//! down while Berth restarts, every event once, in order per repository, and the outbox's bound.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Berth, Distribution, free_port, http};
use crate::protocol::Reg;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A webhook listener: records every POST's `Content-Type` and body.
struct Listener {
    port: u16,
    posts: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(port: u16) -> Listener {
        let socket = TcpListener::bind(("127.0.0.1", port)).expect("bind the listener");
        socket.set_nonblocking(true).unwrap();
        let posts: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (posts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match socket.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        if let Some(post) = read_post(&mut conn) {
                            p.lock().unwrap().push(post);
                        }
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Listener { port, posts, stop, thread: Some(thread) }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }

    /// Every event received so far, in arrival order.
    fn events(&self) -> Vec<Value> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| b["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until no event has arrived for half a second (at most 20 s); the events since `from`.
    fn settle(&self, from: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = (self.events().len(), Instant::now());
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let n = self.events().len();
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() > Duration::from_millis(700) {
                break;
            }
        }
        self.events()[from..].to_vec()
    }
}

/// Reads one HTTP request; `(Content-Type, body as JSON)` of a POST.
fn read_post(conn: &mut std::net::TcpStream) -> Option<(String, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned())
        })
    };
    let len: usize = header("content-length")?.parse().ok()?;
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + len]).ok()?;
    Some((header("content-type").unwrap_or_default(), body))
}

fn endpoint_config(port: u16, extra: &str) -> String {
    format!(
        "notifications:\n  endpoints:\n    - name: test\n      url: http://127.0.0.1:{port}/events\n      headers:\n        X-Test: [yes]\n      timeout: 1s\n      threshold: 3\n      backoff: 200ms\n{extra}"
    )
}

/// An event's shape: what a listener may rely on, without ids, times and ports.
fn shape(e: &Value) -> String {
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>().join(",")).unwrap_or_default();
    let t = &e["target"];
    format!(
        "{} target[{}] mediaType={} digest={} size={} length={} tag={} from={} request[{}] method={} actor[{}] source[{}] url={}",
        e["action"].as_str().unwrap_or("?"),
        {
            let mut k: Vec<&str> = t.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
            k.sort();
            k.join(",")
        },
        t["mediaType"].as_str().unwrap_or("-"),
        t["digest"].as_str().unwrap_or("-"),
        t["size"],
        t["length"],
        t["tag"].as_str().unwrap_or("-"),
        t["fromRepository"].as_str().unwrap_or("-"),
        keys(&e["request"]),
        e["request"]["method"].as_str().unwrap_or("-"),
        keys(&e["actor"]),
        keys(&e["source"]),
        t["url"]
            .as_str()
            .map(|u| u.split_once("/v2/").map_or("?", |(_, p)| p.split(':').next().unwrap_or("?")))
            .unwrap_or("-"),
    )
}

#[test]
fn berth_sends_what_distribution_2_8_sends_and_announces_restore_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let layout = crate::image::standard(&dir.path().join("oci"), 7);
    let layer = layout.layers[1].digest.to_string();
    let (l_dist, l_berth) = (Listener::start(free_port()), Listener::start(free_port()));
    let dist = Distribution::start_with(&dir.path().join("dist"), &endpoint_config(l_dist.port, ""));
    let berth = Berth::start_on(
        &dir.path().join("berth"),
        Some(&format!("gc:\n  interval: off\n{}", endpoint_config(l_berth.port, ""))),
    );
    // The same steps against each; what each listener heard per step.
    let mut heard: Vec<Vec<Vec<String>>> = Vec::new();
    for (addr, listener) in [(&dist.addr, &l_dist), (&berth.addr, &l_berth)] {
        let r = Reg::new(addr, "either");
        let mut steps: Vec<Vec<String>> = Vec::new();
        let mut step = |what: &dyn Fn()| {
            let from = listener.events().len();
            what();
            let mut s: Vec<String> = listener.settle(from).iter().map(shape).collect();
            // Concurrent blob transfers may be announced in either order.
            s.sort();
            steps.push(s);
        };
        step(&|| {
            crate::clients::copy(
                &format!("oci:{}:img", layout.layout.dir.display()),
                &format!("docker://{addr}/test/app:v1"),
                &[],
            )
        });
        let out = crate::image::Layout::new(&dir.path().join(format!("out-{}", listener.port)));
        step(&|| {
            crate::clients::pull(addr, "test/app:v1", &out, "v1");
        });
        let digest = std::cell::RefCell::new(String::new());
        step(&|| {
            let head = r.req("HEAD", "/v2/test/app/manifests/v1", &[("Accept", OCI_MANIFEST)], b"");
            *digest.borrow_mut() = head.h("docker-content-digest").unwrap().to_owned();
        });
        let digest = digest.into_inner();
        step(&|| {
            assert_eq!(
                r.req("GET", &format!("/v2/test/app/manifests/{digest}"), &[("Accept", OCI_MANIFEST)], b"").status,
                200
            );
        });
        step(&|| {
            assert_eq!(r.req("GET", &format!("/v2/test/app/blobs/{layer}"), &[], b"").status, 200);
        });
        step(&|| {
            let m = r.req("POST", &format!("/v2/other/app/blobs/uploads/?mount={layer}&from=test/app"), &[], b"");
            assert_eq!(m.status, 201);
        });
        step(&|| {
            assert_eq!(r.req("DELETE", &format!("/v2/test/app/manifests/{digest}"), &[], b"").status, 202);
        });
        heard.push(steps);
    }
    let names = [
        "skopeo push",
        "skopeo pull",
        "HEAD manifest by tag",
        "GET manifest by digest",
        "GET blob",
        "mount",
        "DELETE manifest",
    ];
    for (i, name) in names.iter().enumerate() {
        assert!(!heard[0][i].is_empty(), "Distribution announced nothing for {name}");
        assert_eq!(heard[1][i], heard[0][i], "{name}: Berth's events differ from Distribution's");
    }
    // The envelope: one event per request, Distribution's media type, the endpoint's headers.
    for (ct, body) in l_berth.posts.lock().unwrap().iter() {
        assert_eq!(ct, "application/vnd.docker.distribution.events.v1+json");
        assert_eq!(body["events"].as_array().map(Vec::len), Some(1));
    }
    let e = &l_berth.events()[0];
    assert_eq!(e["source"]["addr"].as_str().unwrap().rsplit(':').next(), berth.addr.rsplit(':').next());
    assert_eq!(e["request"]["useragent"].as_str().map(|u| u.starts_with("skopeo")), Some(true), "{e}");
    assert!(e["target"]["url"].as_str().unwrap().starts_with(&format!("http://{}/v2/test/app/", berth.addr)), "{e}");

    // What Distribution cannot do: restore, and GC with what it freed.
    let r = Reg::new(&berth.addr, "berth");
    let from = l_berth.events().len();
    let restore = r.req("POST", "/api/restore?repository=test/app&tag=v1", &[], b"");
    assert_eq!(restore.status, 200, "{}", String::from_utf8_lossy(&restore.body));
    let got = l_berth.settle(from);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (got[0]["action"].as_str(), got[0]["target"]["repository"].as_str()),
        (Some("restore"), Some("test/app"))
    );
    assert_eq!(got[0]["berth"]["tags"]["v1"], restore.json()["restored"]["tags"]["v1"]);
    r.req("DELETE", "/v2/test/app/manifests/v1", &[], b"");
    r.req("DELETE", "/api/trash", &[], b"");
    let from = l_berth.events().len();
    let gc = r.req("POST", "/api/gc?grace=0s&untagged=0s", &[], b"").json();
    let got = l_berth.settle(from);
    let gc_event = got.iter().find(|e| e["action"] == "gc").unwrap_or_else(|| panic!("{got:#?}"));
    assert_eq!(gc_event["berth"]["bytesFreed"], gc["bytes_freed"]);
    assert!(gc["bytes_freed"].as_u64().unwrap() > 0, "{gc}");
    drop(dist);
    l_dist.stop();
    l_berth.stop();
}

/// One `/metrics` value for the endpoint `test`.
fn metric(berth: &Berth, name: &str) -> u64 {
    let text = http().get(&berth.url("/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    let line = format!("{name}{{endpoint=\"test\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).unwrap_or_else(|| panic!("no {name} in {text}")).parse().unwrap()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn events_wait_out_a_listener_outage_and_a_restart_and_arrive_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_port();
    let config = format!("gc:\n  interval: off\n{}", endpoint_config(port, ""));
    // The listener is down from the start.
    let mut berth = Berth::start_on(&root, Some(&config));
    let r = Reg::new(&berth.addr, "berth");
    r.push_image("a/x", "v1", 1);
    r.push_image("b/y", "v1", 2);
    r.push_image("a/x", "v2", 3);
    assert_eq!(r.req("DELETE", "/v2/a/x/manifests/v1", &[], b"").status, 202);
    wait_until("a failed delivery", || metric(&berth, "berth_notifications_failures_total") > 0);
    assert_eq!(metric(&berth, "berth_notifications_pending"), 10, "3 pushes of 3 events and a tag delete");
    assert!(berth.stop().success());
    // A command on the stopped root stores its events in the server's outbox.
    let cfg = root.with_extension("berth-test.yml").display().to_string();
    crate::harness::cli_ok(&["rm", "a/x:v2", "--yes", "--root", &root.display().to_string(), "--config", &cfg]);

    let berth = Berth::start_on(&root, Some(&config));
    let r = Reg::new(&berth.addr, "berth");
    assert_eq!(metric(&berth, "berth_notifications_pending"), 11, "the outbox survived the restart");
    r.push_image("b/y", "v2", 4);
    let listener = Listener::start(port);
    wait_until("the outbox to drain", || metric(&berth, "berth_notifications_pending") == 0);
    let events = listener.settle(0);
    let ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "each event exactly once");
    assert_eq!(events.len(), 14);
    // In order per repository: pushes (blob, blob, manifest) in push order, the delete last.
    let mut per_repo: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &events {
        let t = &e["target"];
        let what = match (e["action"].as_str().unwrap(), t["tag"].as_str()) {
            (a, Some(tag)) => format!("{a} {tag}"),
            (a, None) => format!("{a} blob"),
        };
        per_repo.entry(t["repository"].as_str().unwrap().to_owned()).or_default().push(what);
    }
    let blobs_then = |tag: &str| vec!["push blob".to_owned(), "push blob".into(), format!("push {tag}")];
    assert_eq!(
        per_repo["a/x"],
        [blobs_then("v1"), blobs_then("v2"), vec!["delete v1".to_owned(), "delete v2".to_owned()]].concat()
    );
    assert_eq!(per_repo["b/y"], [blobs_then("v1"), blobs_then("v2")].concat());
    assert_eq!(metric(&berth, "berth_notifications_dropped_total"), 0);
    listener.stop();
}

#[test]
fn past_its_bound_the_outbox_drops_the_oldest_counts_and_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!("gc:\n  interval: off\n{}", endpoint_config(port, "  outbox:\n    maxevents: 4\n"));
    let berth = Berth::start_on(&dir.path().join("root"), Some(&config));
    let r = Reg::new(&berth.addr, "berth");
    for i in 0..3 {
        r.push_image("c/z", &format!("v{i}"), 10 + i);
    }
    assert_eq!(metric(&berth, "berth_notifications_dropped_total"), 5, "9 events, at most 4 held");
    assert_eq!(metric(&berth, "berth_notifications_pending"), 4);
    assert!(berth.log().contains("notification outbox full"), "{}", berth.log());
    let listener = Listener::start(port);
    wait_until("the outbox to drain", || metric(&berth, "berth_notifications_pending") == 0);
    let tags: Vec<String> =
        listener.settle(0).iter().filter_map(|e| e["target"]["tag"].as_str().map(str::to_owned)).collect();
    assert_eq!(tags, ["v1", "v2"], "the newest events are the ones kept");
    listener.stop();
}
