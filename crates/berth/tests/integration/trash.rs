//! The trash over time: expiry with a short retention, and the audit log.

use std::time::{Duration, Instant};

use crate::harness::{Berth, cli_fails, cli_ok};
use crate::protocol::Reg;

#[test]
fn entries_expire_after_a_short_retention_and_the_audit_log_records_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let berth = Berth::start_on(&root, Some("trash:\n  retention: 2s\n"));
    let url = berth.url("");
    let r = Reg::new(&berth.addr, "berth");
    r.push_image("exp/app", "v1", 90);
    r.push_image("exp/app", "v2", 91);
    let first = cli_ok(&["rm", "exp/app:v1", "--url", &url, "--json"]).json();
    let second = cli_ok(&["rm", "exp/app:v2", "--url", &url, "--json"]).json();
    let (a, b) =
        (first["entry"]["id"].as_str().unwrap().to_owned(), second["entry"]["id"].as_str().unwrap().to_owned());
    cli_ok(&["restore", &b, "--url", &url]);
    let listed = cli_ok(&["trash", "--url", &url, "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], a);
    assert!(listed[0]["expires"].is_string());

    let deadline = Instant::now() + Duration::from_secs(15);
    while !cli_ok(&["trash", "--url", &url, "--json"]).json().as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the entry did not expire within 15 s of a 2 s retention");
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = cli_fails(&["restore", &a, "--url", &url]);
    assert!(err.contains("no trash entry"), "{err}");
    assert_eq!(r.req("GET", "/v2/exp/app/tags/list", &[], b"").json()["tags"], serde_json::json!(["v2"]));

    let audit = std::fs::read_to_string(root.join("berth/audit/audit.jsonl")).unwrap();
    let steps: Vec<(String, String)> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["action"].as_str().unwrap().to_owned(), v["id"].as_str().unwrap().to_owned()))
        .collect();
    let want =
        [("delete", &a), ("delete", &b), ("restore", &b), ("expire", &a)].map(|(x, y)| (x.to_owned(), y.clone()));
    assert_eq!(steps, want);
}
