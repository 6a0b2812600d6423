//! A small W3C WebDriver client for Debian's headless Chromium (`chromium`, `chromium-driver`):
//! the driver on a free loopback port, one browser session, and the handful of commands the UI
//! tests use. Both are ended when dropped, by their own handles, so a failing test leaves no
//! browser behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{free_port, http, require_tool};

/// The key W3C WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts `/usr/bin/chromedriver` (Debian's `chromium-driver`) on a free port and waits
    /// until it says it is ready.
    pub fn start() -> Driver {
        let bin = require_tool("chromedriver", "install it with `apt-get install -y chromium chromium-driver`");
        require_tool("chromium", "install it with `apt-get install -y chromium chromium-driver`");
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let mut driver = Driver { child, url };
        let started = Instant::now();
        loop {
            if let Ok(mut r) = http().get(format!("{}/status", driver.url)).call()
                && let Ok(v) = r.body_mut().read_json::<Value>()
                && v["value"]["ready"] == json!(true)
            {
                return driver;
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver was not ready within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new headless browser session with a `width`×`height` window.
    pub fn browser(&self, width: u32, height: u32) -> Browser {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}")]
            }
        }}});
        let v = send(&self.url, "POST", "/session", Some(caps)).expect("start a browser session");
        let id = v["sessionId"].as_str().expect("a session id").to_owned();
        Browser { base: format!("{}/session/{id}", self.url) }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one WebDriver command; its `value`, or the driver's error.
fn send(base: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let url = format!("{base}{path}");
    let agent = http();
    let resp = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("DELETE", _) => agent.delete(&url).call(),
        (_, b) => agent.post(&url).send_json(b.unwrap_or_else(|| json!({}))),
    };
    let mut resp = resp.map_err(|e| format!("{method} {path}: {e}"))?;
    let status = resp.status().as_u16();
    let v: Value = resp.body_mut().read_json().map_err(|e| format!("{method} {path}: {e}"))?;
    if status >= 400 {
        return Err(format!("{method} {path}: {} {}", v["value"]["error"], v["value"]["message"]));
    }
    Ok(v["value"].clone())
}

/// One browser session.
pub struct Browser {
    base: String,
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        send(&self.base, method, path, body).unwrap_or_else(|e| panic!("webdriver: {e}\npage: {}", self.current_url()))
    }

    /// Goes to `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    /// The address of the current page.
    pub fn current_url(&self) -> String {
        send(&self.base, "GET", "/url", None).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    /// The current page's title.
    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None).as_str().unwrap_or_default().to_owned()
    }

    fn elements(&self, using: &str, value: &str) -> Vec<Element> {
        let v = self.cmd("POST", "/elements", Some(json!({"using": using, "value": value})));
        v.as_array()
            .map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned()))).collect())
            .unwrap_or_default()
    }

    /// Every element matching a CSS selector.
    pub fn all(&self, css: &str) -> Vec<Element> {
        self.elements("css selector", css)
    }

    /// The one element matching a CSS selector (panics naming the page when there is none).
    pub fn find(&self, css: &str) -> Element {
        self.all(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {css} on {}:\n{}", self.current_url(), self.text()))
    }

    /// Buttons whose visible text is exactly `text`.
    pub fn buttons(&self, text: &str) -> Vec<Element> {
        self.elements("xpath", &format!("//button[normalize-space()='{text}']"))
    }

    /// The one button reading `text`.
    pub fn button(&self, text: &str) -> Element {
        self.buttons(text)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no button {text:?} on {}:\n{}", self.current_url(), self.text()))
    }

    /// The link reading `text`.
    pub fn link(&self, text: &str) -> Element {
        self.elements("xpath", &format!("//a[normalize-space()='{text}']"))
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no link {text:?} on {}:\n{}", self.current_url(), self.text()))
    }

    /// Clicks (a link or a submit button: waits for the next page).
    pub fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), None);
    }

    /// Clicks a link or a submit button and waits until the page it leads to has loaded (the
    /// driver may answer a click before the navigation it starts has begun).
    pub fn follow(&self, e: &Element) {
        self.execute("window.__berthOld = true; return null", json!([]));
        self.click(e);
        let started = Instant::now();
        loop {
            let v = send(
                &self.base,
                "POST",
                "/execute/sync",
                Some(json!({"script": "return !window.__berthOld && document.readyState === 'complete'", "args": []})),
            );
            if v == Ok(json!(true)) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no new page within 30 s at {}", self.current_url());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `text` into a field.
    pub fn type_into(&self, e: &Element, text: &str) {
        self.cmd("POST", &format!("/element/{}/clear", e.0), None);
        self.cmd("POST", &format!("/element/{}/value", e.0), Some(json!({"text": text})));
    }

    /// The visible text of an element.
    pub fn text_of(&self, e: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", e.0), None).as_str().unwrap_or_default().to_owned()
    }

    /// A DOM property of an element (`value`, `checked`).
    pub fn property(&self, e: &Element, name: &str) -> Value {
        self.cmd("GET", &format!("/element/{}/property/{name}", e.0), None)
    }

    /// The visible text of the whole page.
    pub fn text(&self) -> String {
        send(&self.base, "POST", "/execute/sync", Some(json!({"script": "return document.body.innerText", "args": []})))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Runs `script` in the page (a returned promise is waited for); its result.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": args})))
    }

    /// The cookies of the current page, as WebDriver describes them.
    pub fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None).as_array().cloned().unwrap_or_default()
    }

    /// Writes a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("base64 PNG")).expect("a PNG");
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({"width": width, "height": height})));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = send(&self.base, "DELETE", "", None);
    }
}
