//! The web UI end to end in Debian's headless Chromium over WebDriver: signing in, finding,
//! deleting with the confirmation's figures, Undo, restoring from the trash, deleting a
//! repository, a GC dry run, the audit log, and a user without `delete` who is offered nothing
//! and refused anyway. skopeo checks what the registry serves after each step. Every page is
//! photographed under `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::clients::skopeo;
use crate::harness::{Berth, http, require_tool, run};
use crate::image::standard;
use crate::webdriver::{Browser, Driver};

/// Where the run leaves its screenshots.
pub fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("ui-screenshots")
}

fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let tool = require_tool("htpasswd", "install it with `apt-get install -y apache2-utils`");
    let file = dir.join("htpasswd");
    for (i, (u, p)) in users.iter().enumerate() {
        let mut c = Command::new(&tool);
        c.args(["-B", "-b", "-C", "10"]);
        if i == 0 {
            c.arg("-c");
        }
        run(c.arg(&file).arg(u).arg(p));
    }
    file
}

fn config(htpasswd: &Path) -> String {
    format!(
        r#"gc:
  interval: off
  grace: 0s
auth:
  htpasswd:
    realm: berth-ui
    path: {}
access:
  repositories:
    "**":
      policies:
        - users: [alice]
          actions: [pull, push, delete]
      default: [pull]
  admins: [alice]
"#,
        htpasswd.display()
    )
}

/// Pushes `tag` of the OCI layout at `layout` (every platform of an index) to `addr/dest` as
/// alice.
fn push(layout: &Path, tag: &str, addr: &str, dest: &str) {
    run(skopeo()
        .args(["copy", "--all", "--dest-tls-verify=false", "--retry-times=0", "--dest-creds", "alice:alice-pass"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{addr}/{dest}")));
}

/// The digest skopeo reads for `reference`, or `None` when the registry has no such manifest.
fn pulled(addr: &str, reference: &str) -> Option<String> {
    let out = skopeo()
        .args(["inspect", "--tls-verify=false", "--creds", "reader:reader-pass", "--format", "{{.Digest}}"])
        .arg(format!("docker://{addr}/{reference}"))
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    fn take(&self, b: &Browser, name: &str) {
        b.screenshot(&self.dir.join(format!("{name}.png")));
    }
}

fn sign_in(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/ui/signin"));
    b.type_into(&b.find("input#username"), user);
    b.type_into(&b.find("input#password"), password);
    b.follow(&b.button("Sign in"));
    assert!(!b.current_url().contains("/ui/signin"), "signed in as {user}:\n{}", b.text());
}

#[test]
fn the_ui_in_chromium_finds_deletes_undoes_restores_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let file = htpasswd(dir.path(), &[("alice", "alice-pass"), ("reader", "reader-pass")]);
    let berth = Berth::start_on(&dir.path().join("root"), Some(&config(&file)));
    let a = &berth.addr;
    let base = berth.url("");

    let app = standard(&dir.path().join("app"), 1001);
    let tools = standard(&dir.path().join("tools"), 1002);
    let web = standard(&dir.path().join("web"), 1003);
    push(&app.layout.dir, "img", a, "team/app:v1");
    push(&app.layout.dir, "img", a, "team/app:latest");
    push(&app.layout.dir, "multi", a, "team/app:multi");
    push(&tools.layout.dir, "img", a, "team/tools:v1");
    push(&web.layout.dir, "img", a, "public/web:v1");
    let image = app.image.digest.to_string();
    let index = app.index.digest.to_string();

    let driver = Driver::start();
    let b = driver.browser(1280, 900);
    let shots = Shots { dir: screenshots() };

    // A stale password a browser keeps sending gets no challenge (no dialog) on UI pages.
    let mut r = http()
        .get(berth.url("/ui/"))
        .header("Authorization", "Basic YWxpY2U6d3Jvbmc=")
        .config()
        .max_redirects(0)
        .build()
        .call()
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.body_mut().read_to_string().unwrap_or_default());
    assert!(r.headers().get("www-authenticate").is_none());

    // A browser at / lands on the sign-in page; the API is untouched.
    b.goto(&format!("{base}/"));
    assert!(b.current_url().contains("/ui/signin"), "{}", b.current_url());
    assert_eq!(http().get(berth.url("/v2/")).call().unwrap().status(), 401, "/v2/ still asks for credentials");
    shots.take(&b, "01-sign-in");
    b.type_into(&b.find("input#username"), "alice");
    b.type_into(&b.find("input#password"), "wrong");
    b.follow(&b.button("Sign in"));
    assert!(b.text().contains("Wrong username or password"), "{}", b.text());

    sign_in(&b, &base, "alice", "alice-pass");
    let cookie = b.cookies().into_iter().find(|c| c["name"] == "berth_session").expect("a session cookie");
    assert_eq!(cookie["httpOnly"], json!(true), "{cookie}");
    assert_eq!(cookie["sameSite"], json!("Strict"), "{cookie}");
    for nav in ["Repositories", "Trash", "Garbage collection", "Audit"] {
        b.link(nav);
    }

    // Repositories, then filtered by name.
    b.goto(&format!("{base}/ui/"));
    assert_eq!(b.title(), "Repositories · Berth");
    for r in ["team/app", "team/tools", "public/web"] {
        b.link(r);
    }
    shots.take(&b, "02-repositories");
    b.type_into(&b.find("input#contains"), "app");
    b.follow(&b.button("Filter"));
    let rows: Vec<String> = b.all("tbody th a").iter().map(|e| b.text_of(e)).collect();
    assert_eq!(rows, ["team/app"], "the filter keeps only team/app");
    b.follow(&b.link("team/app"));
    assert!(b.current_url().ends_with("/ui/r/team/app"), "{}", b.current_url());
    let page = b.text();
    assert!(page.contains("linux/amd64") && page.contains("linux/arm64"), "the index's platforms:\n{page}");
    shots.take(&b, "03-repository");

    // Deleting one of two tags on one image: the confirmation says 0 B and names the other tag.
    b.click(&b.find("input[value='latest']"));
    b.follow(&b.button("Delete"));
    let confirm = b.text();
    assert_eq!(b.text_of(&b.find("#freed")), "0 B", "{confirm}");
    assert!(confirm.contains("v1"), "the confirmation names the tag that keeps the image:\n{confirm}");
    assert!(confirm.contains("latest"), "{confirm}");
    shots.take(&b, "04-delete-confirmation");
    b.follow(&b.button("Delete"));
    assert!(b.text().contains("Deleted"), "{}", b.text());
    shots.take(&b, "05-deleted-with-undo");
    assert_eq!(pulled(a, "team/app:latest"), None, "latest is gone");
    assert_eq!(pulled(a, "team/app:v1").as_deref(), Some(image.as_str()), "v1 still pulls");

    // Undo brings it back in place.
    b.follow(&b.button("Undo"));
    assert!(b.text().contains("Restored"), "{}", b.text());
    assert_eq!(pulled(a, "team/app:latest").as_deref(), Some(image.as_str()), "Undo restored latest");

    // The index's page, then deleting it, then restoring it from the Trash page.
    b.goto(&format!("{base}/ui/r/team/app@{index}"));
    let page = b.text();
    assert!(
        page.contains(&format!("docker pull {a}/team/app@{index}")) || {
            let v = b.property(&b.find("input#pull"), "value");
            v == json!(format!("docker pull {a}/team/app@{index}"))
        }
    );
    assert!(page.contains("arm64"), "{page}");
    shots.take(&b, "06-image-index");
    b.goto(&format!("{base}/ui/r/team/app@{image}"));
    let page = b.text();
    assert!(page.contains("amd64"), "the config summary:\n{page}");
    shots.take(&b, "07-image");
    b.goto(&format!("{base}/ui/r/team/app@{index}"));
    b.follow(&b.button("Delete"));
    let confirm = b.text();
    let freed = b.text_of(&b.find("#freed"));
    assert_ne!(freed, "0 B", "deleting the index frees its arm64 image and layers:\n{confirm}");
    // A tag pushed onto the image after the confirmation was shown: the delete does not take
    // it unseen; the page shows the new plan instead.
    push(&app.layout.dir, "multi", a, "team/app:multi2");
    b.follow(&b.button("Delete"));
    let again = b.text();
    assert!(again.contains("changed since this page was shown") && again.contains("multi2"), "{again}");
    assert_eq!(pulled(a, "team/app:multi").as_deref(), Some(index.as_str()), "nothing was deleted");
    b.follow(&b.button("Delete"));
    assert_eq!(pulled(a, "team/app:multi"), None, "the index is gone");
    assert_eq!(pulled(a, "team/app:multi2"), None, "with the tag the second confirmation named");
    b.follow(&b.link("Trash"));
    shots.take(&b, "08-trash");
    let restore = b.buttons("Restore");
    assert_eq!(restore.len(), 1, "one trash entry (the undone delete left the trash):\n{}", b.text());
    assert!(b.text().contains("multi"), "{}", b.text());
    b.follow(&restore[0]);
    assert!(b.text().contains("Restored"), "{}", b.text());
    assert_eq!(pulled(a, "team/app:multi").as_deref(), Some(index.as_str()), "restored from the trash");
    assert_eq!(pulled(a, "team/app:multi2").as_deref(), Some(index.as_str()), "both tags");

    // Deleting the whole repository takes it off the list.
    b.goto(&format!("{base}/ui/r/team/tools"));
    b.follow(&b.button("Delete repository"));
    assert_ne!(b.text_of(&b.find("#freed")), "0 B", "{}", b.text());
    b.follow(&b.button("Delete"));
    assert!(b.current_url().contains("/ui/?deleted="), "{}", b.current_url());
    let rows: Vec<String> = b.all("tbody th a").iter().map(|e| b.text_of(e)).collect();
    assert_eq!(rows, ["public/web", "team/app"], "team/tools left the list");
    assert_eq!(pulled(a, "team/tools:v1"), None);

    // Purged, its blobs are garbage: a dry run shows what a run would free, then a run frees it.
    b.follow(&b.link("Trash"));
    let entries = b.all("tbody tr");
    let purge = b.buttons("Purge");
    assert_eq!(purge.len(), entries.len());
    b.follow(&purge[0]);
    assert!(b.text().contains("can no longer be restored"), "purging asks first:\n{}", b.text());
    assert_ne!(b.text_of(&b.find("#freed")), "0 B", "{}", b.text());
    shots.take(&b, "08b-purge-confirmation");
    b.follow(&b.button("Purge"));
    assert!(b.text().contains("Purged"), "{}", b.text());
    b.follow(&b.link("Garbage collection"));
    b.follow(&b.button("Dry run"));
    let would = b.text_of(&b.find("#would-free"));
    assert!(would.ends_with(" kB") || would.ends_with(" MB"), "the dry run shows a figure: {would}\n{}", b.text());
    shots.take(&b, "09-gc-dry-run");
    b.follow(&b.button("Run garbage collection"));
    let started = std::time::Instant::now();
    while !b.text().contains("The last run freed") {
        assert!(started.elapsed().as_secs() < 60, "GC did not finish:\n{}", b.text());
        std::thread::sleep(std::time::Duration::from_millis(300));
        b.goto(&format!("{base}/ui/gc"));
    }
    assert!(b.text().contains(&would), "the run freed what the dry run said ({would}):\n{}", b.text());
    shots.take(&b, "10-gc-history");
    assert_eq!(pulled(a, "team/app:v1").as_deref(), Some(image.as_str()), "GC kept what is used");

    // The audit log, filtered by repository and by user.
    b.follow(&b.link("Audit"));
    b.type_into(&b.find("input#repository"), "team/tools");
    b.follow(&b.button("Filter"));
    let audit = b.text();
    assert!(audit.contains("team/tools") && !audit.contains("team/app"), "{audit}");
    assert!(audit.contains("alice"), "{audit}");
    shots.take(&b, "11-audit");

    // A narrow window still reads.
    b.resize(420, 900);
    b.goto(&format!("{base}/ui/r/team/app"));
    shots.take(&b, "12-repository-narrow");
    b.resize(1280, 900);

    // No CSRF token: refused, nothing changes.
    let status = b.execute(
        "return fetch('/ui/delete', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, \
         body: 'repository=team/app&tag=v1'}).then(r => r.status)",
        json!([]),
    );
    assert_eq!(status, json!(403), "a POST without the CSRF token is refused");
    assert_eq!(pulled(a, "team/app:v1").as_deref(), Some(image.as_str()));

    // Sign out, and sign in as someone who may only pull.
    b.follow(&b.button("Sign out"));
    assert!(b.current_url().contains("/ui/signin"));
    b.goto(&format!("{base}/ui/trash"));
    assert!(b.current_url().contains("/ui/signin"), "signed out: {}", b.current_url());
    sign_in(&b, &base, "reader", "reader-pass");
    b.goto(&format!("{base}/ui/r/team/app"));
    assert!(b.buttons("Delete").is_empty() && b.buttons("Delete repository").is_empty(), "{}", b.text());
    assert!(b.all("input[type=checkbox]").is_empty(), "no tag can be selected");
    shots.take(&b, "13-repository-read-only");
    b.goto(&format!("{base}/ui/r/team/app@{image}"));
    assert!(b.buttons("Delete").is_empty(), "{}", b.text());
    // Their own, valid CSRF token does not make a delete theirs to make.
    let csrf = b.property(&b.find("input[name=csrf]"), "value");
    let status = b.execute(
        "return fetch('/ui/delete', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, \
         body: 'csrf=' + encodeURIComponent(arguments[0]) + '&repository=team/app&tag=v1'}).then(r => r.status)",
        json!([csrf]),
    );
    assert_eq!(status, json!(403), "a forged delete by a reader is refused");
    let status = b.execute(
        "return fetch('/ui/gc', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, \
         body: 'csrf=' + encodeURIComponent(arguments[0]) + '&action=run'}).then(r => r.status)",
        json!([csrf]),
    );
    assert_eq!(status, json!(403), "a forged GC by a reader is refused");
    assert_eq!(pulled(a, "team/app:v1").as_deref(), Some(image.as_str()), "nothing changed");
    assert_eq!(pulled(a, "team/app:latest").as_deref(), Some(image.as_str()), "nothing changed");
}

/// Open registry: `/` sends a browser to the UI, which loads nothing from elsewhere, and
/// `ui.enabled: false` takes it away while `/v2/` stays as it was.
#[test]
fn the_ui_is_served_from_the_binary_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let on = Berth::start_on(&dir.path().join("on"), Some("gc:\n  interval: off\n"));
    let agent = http();
    let get = |url: &str, accept: &str| {
        let mut r = agent.get(url).header("Accept", accept).config().max_redirects(0).build().call().unwrap();
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        (status, location, r.body_mut().read_to_string().unwrap_or_default())
    };
    let (status, location, _) = get(&on.url("/"), "text/html,application/xhtml+xml");
    assert_eq!((status, location.as_deref()), (303, Some("/ui/")), "a browser at / goes to the UI");
    assert_eq!(get(&on.url("/"), "application/json").0, 404, "a client at / finds nothing, as before");
    let (status, _, page) = get(&on.url("/ui/"), "text/html");
    assert_eq!(status, 200);
    assert!(page.contains("No repositories yet."), "{page}");
    // Every address the page loads or links to is on this server.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.match_indices(attr) {
            let v = &page[i + attr.len()..];
            assert!(v.starts_with('/') || v.starts_with('#'), "{attr}{}", &v[..v.find('"').unwrap()]);
        }
    }
    let (status, _, css) = get(&on.url("/ui/static/berth.css"), "text/css");
    assert_eq!(status, 200);
    assert!(!css.contains("url(") && !css.contains("@import"), "the stylesheet loads nothing");
    assert_eq!(get(&on.url("/ui/static/other.js"), "*/*").0, 404);
    assert_eq!(get(&on.url("/v2/"), "application/json").0, 200);

    let off = Berth::start_on(&dir.path().join("off"), Some("gc:\n  interval: off\nui:\n  enabled: false\n"));
    assert_eq!(get(&off.url("/ui/"), "text/html").0, 404);
    assert_eq!(get(&off.url("/"), "text/html").0, 404);
    assert_eq!(get(&off.url("/v2/"), "application/json").0, 200);
}
