//! Retention policies on a running server: keep-last-N with equal push times, patterns,
//! pulled-within with real skopeo pulls, a tag sharing an image with a kept tag; the dry run
//! reports exactly what the run then does; GC frees exactly what it reported; one restore
//! brings a repository's run back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::harness::{Berth, cli_ok};
use crate::protocol::Reg;

const CONFIG: &str = r#"
gc:
  interval: off
retention:
  interval: off
  policies:
    - name: team
      repositories: ["team/**"]
      keeptags:
        - patterns: ['^v[0-9]+\.[0-9]+\.[0-9]+$']
        - mostrecentlypushedcount: 2
        - pulledwithin: 1h
    - repositories: ["pat/**"]
      keeptags:
        - patterns: ['^release-']
        - mostrecentlypushedcount: 1
"#;

/// Sets when `repo:tag` was pushed (its tag link's time) to `at`, on a stopped server's root.
fn pushed_at(root: &Path, repo: &str, tag: &str, at: SystemTime) {
    let link = root.join(format!("docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"));
    std::fs::File::options().write(true).open(&link).unwrap().set_modified(at).unwrap();
}

/// tag -> (kept, reason) of one repository in a retention answer.
fn fates(run: &serde_json::Value, repo: &str) -> BTreeMap<String, (bool, String)> {
    let r = run["repositories"].as_array().unwrap().iter().find(|r| r["repository"] == repo).expect(repo);
    r["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tag"].as_str().unwrap().to_owned(), (t["kept"] == true, t["reason"].as_str().unwrap().to_owned())))
        .collect()
}

fn tags(r: &Reg, repo: &str) -> Vec<String> {
    let v = r.req("GET", &format!("/v2/{repo}/tags/list"), &[], b"").json();
    let mut t: Vec<String> =
        v["tags"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect()).unwrap_or_default();
    t.sort();
    t
}

#[test]
fn retention_keeps_what_its_rules_keep_dry_run_matches_the_run_gc_frees_it_and_restore_undoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let mut berth = Berth::start_on(&root, Some(CONFIG));
    let r = Reg::new(&berth.addr, "berth");
    for (tag, seed) in [("alias", 5), ("v1.0.0", 1), ("old-pulled", 2), ("old", 3), ("b", 4), ("a", 5), ("c", 6)] {
        r.push_image("team/app", tag, seed);
    }
    for (tag, seed) in [("release-1", 11), ("pr-1", 12), ("pr-2", 13)] {
        r.push_image("pat/app", tag, seed);
    }
    r.push_image("other/app", "old", 21);
    // A real pull of an old tag through skopeo: pulledwithin keeps it.
    let out = crate::image::Layout::new(&dir.path().join("out"));
    crate::clients::pull(&berth.addr, "team/app:old-pulled", &out, "p");
    assert!(berth.stop().success(), "a stop stores the pull times");
    // One instant, so that a, b and c are pushed at exactly the same time.
    let (h, now) = (Duration::from_secs(3600), SystemTime::now());
    for (tag, hours) in [("alias", 200), ("v1.0.0", 100), ("old-pulled", 90), ("old", 80), ("a", 1), ("b", 1), ("c", 1)]
    {
        pushed_at(&root, "team/app", tag, now - h * hours);
    }
    pushed_at(&root, "other/app", "old", now - h * 5000);

    let berth = Berth::start_on(&root, Some(CONFIG));
    let r = Reg::new(&berth.addr, "berth");
    let url = format!("http://{}", berth.addr);
    let before = tags(&r, "team/app");
    let dry = cli_ok(&["retention", "--dry-run", "--json", "--url", &url]).json();
    assert_eq!(dry["dry_run"], true);
    let f = fates(&dry, "team/app");
    let kept: Vec<&str> = f.iter().filter(|(_, (k, _))| *k).map(|(t, _)| t.as_str()).collect();
    assert_eq!(kept, ["a", "alias", "b", "old-pulled", "v1.0.0"], "{f:#?}");
    assert!(f["v1.0.0"].1.starts_with("keeptags[0]: matches"), "{f:#?}");
    assert_eq!(f["a"].1, "keeptags[1]: among the 2 most recently pushed");
    assert_eq!(
        f["c"],
        (false, "no keeptags rule keeps it".to_owned()),
        "a, b and c were pushed at the same time: by name, c is third"
    );
    assert_eq!(f["old-pulled"].1, "keeptags[2]: pulled within 1h");
    assert_eq!(f["alias"].1, "points at the image a keeps", "a tag sharing a kept image stays");
    assert!(
        !dry["repositories"].as_array().unwrap().iter().any(|r| r["repository"] == "other/app"),
        "no policy matches other/app: never touched"
    );
    assert_eq!(tags(&r, "team/app"), before, "a dry run changes nothing");
    // The text report says the same, per tag.
    let text = cli_ok(&["retention", "--dry-run", "--url", &url, "team/**"]).stdout;
    assert!(text.contains("team/app (policy team): 2 of 7 tags and 0 untagged manifests would go"), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("c ") && l.contains("drop")), "{text}");
    assert!(!text.contains("pat/app"), "the pattern limits the run: {text}");

    let run = r.req("POST", "/api/retention?repository=team/**", &[], b"");
    assert_eq!(run.status, 200, "{}", String::from_utf8_lossy(&run.body));
    let run = run.json();
    assert_eq!(fates(&run, "team/app"), f, "the run does what the dry run said");
    let team = |v: &serde_json::Value| {
        v["repositories"].as_array().unwrap().iter().find(|r| r["repository"] == "team/app").unwrap().clone()
    };
    assert_eq!(team(&run)["bytes_freed"], team(&dry)["bytes_freed"]);
    assert_eq!(tags(&r, "team/app"), ["a", "alias", "b", "old-pulled", "v1.0.0"]);
    assert_eq!(tags(&r, "pat/app"), ["pr-1", "pr-2", "release-1"], "outside the pattern given");
    let audit = r.req("GET", "/api/audit?repository=team/app", &[], b"").json();
    assert!(audit.to_string().contains("retention:team"), "{audit}");
    for t in ["a", "alias", "b", "old-pulled", "v1.0.0"] {
        crate::clients::pull(&berth.addr, &format!("team/app:{t}"), &out, t);
    }
    // GC, once the run's entry leaves the trash and the untagged manifests may go, frees
    // exactly what the run reported.
    let id = team(&run)["trash_id"].as_str().unwrap().to_owned();
    cli_ok(&["trash", "--url", &url, "purge", &id]);
    let gc = cli_ok(&["gc", "--grace", "0s", "--untagged", "0s", "--json", "--url", &url]).json();
    assert_eq!(gc["bytes_freed"], team(&run)["bytes_freed"], "{gc}");

    // The configured policy names the second one by its index; one restore undoes its run.
    let run = cli_ok(&["retention", "--json", "--url", &url, "pat/**"]).json();
    let pat = &run["repositories"][0];
    assert_eq!((pat["repository"].as_str(), pat["policy"].as_str()), (Some("pat/app"), Some("1")));
    assert_eq!(tags(&r, "pat/app"), ["pr-2", "release-1"], "pr-2 is the newest");
    cli_ok(&["restore", pat["trash_id"].as_str().unwrap(), "--url", &url]);
    assert_eq!(tags(&r, "pat/app"), ["pr-1", "pr-2", "release-1"]);
    crate::clients::pull(&berth.addr, "pat/app:pr-1", &out, "pr1");
    // Restored, pr-1 keeps its push time: the next run decides as this one did, instead of
    // taking pr-1 for the newest tag and dropping pr-2.
    let again = cli_ok(&["retention", "--dry-run", "--json", "--url", &url, "pat/**"]).json();
    assert_eq!(fates(&again, "pat/app"), fates(&run, "pat/app"));
    assert_eq!(tags(&r, "other/app"), ["old"]);

    // A server without policies says so rather than report an empty run.
    let plain = Berth::start();
    let resp = Reg::new(&plain.addr, "plain").req("POST", "/api/retention", &[], b"");
    assert_eq!(resp.status, 405, "{}", String::from_utf8_lossy(&resp.body));
    assert!(String::from_utf8_lossy(&resp.body).contains("no retention policies"));
}
