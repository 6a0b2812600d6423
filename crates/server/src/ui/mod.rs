//! The web UI at `/ui/`: server-rendered HTML (readable without JavaScript; a little plain
//! JavaScript only adds niceties), its CSS and script embedded in the binary.
//!
//! A shell over the admin operations: every figure it shows and every change it makes goes
//! through [`crate::admin::ops`] or a `berth_registry` call the admin API makes too, under the
//! same rights ([`crate::auth::Caller`]): actions a user may not take are not offered, and are
//! refused when posted anyway. No registry logic lives here.
//!
//! This module routes, finds out who is looking ([`session`]), checks the CSRF token of every
//! `POST`, and hands over to the pages: [`repositories`], [`repository`], [`image`],
//! [`delete`] (confirmation, delete, undo), [`trash`], [`gc`], [`audit`] and [`signin`].

mod audit;
mod delete;
mod gc;
pub mod html;
mod image;
mod repositories;
mod repository;
pub mod session;
mod signin;
mod trash;

use std::collections::HashMap;
use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::RepoName;
use maud::html;

use crate::AppState;
use crate::auth::Caller;
use crate::auth::action::Action;
use crate::conn::Peer;
use crate::error::ApiError;
use html::Nav;

/// The UI's own state: sessions, and the GC run it started.
#[derive(Debug)]
pub struct Ui {
    sessions: session::Sessions,
    /// Whether cookies carry `Secure` (the server speaks TLS).
    secure: bool,
    gc: gc::Job,
}

impl Ui {
    /// A UI; `secure` when the server speaks TLS.
    pub fn new(secure: bool) -> Ui {
        Ui { sessions: session::Sessions::new(), secure, gc: gc::Job::default() }
    }
}

/// Who is looking at a page, and what they may do.
pub struct View {
    /// The signed-in user.
    pub user: Option<String>,
    /// Their rights.
    pub caller: Caller,
    /// The token their forms carry.
    pub csrf: String,
    /// Whether the registry has access control (so there is signing in at all).
    pub auth_on: bool,
    /// The registry's address as the browser reached it (for pull commands).
    pub host: String,
    /// Whether the browser reached it over TLS (here, or at a proxy in front), so cookies
    /// carry `Secure`.
    pub secure: bool,
}

impl View {
    fn signed_in(&self) -> bool {
        self.user.is_some()
    }

    /// Whether the viewer may do `action` in `repo`.
    pub fn may(&self, repo: &RepoName, action: Action) -> bool {
        self.caller.may(repo, action)
    }

    /// Whether the viewer is an admin (restores, purges, repository deletes, GC).
    pub fn is_admin(&self) -> bool {
        self.caller.is_admin()
    }
}

/// A request's form fields (every value of a repeated field kept, in order).
pub struct Form(Vec<(String, String)>);

impl Form {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }
}

/// The largest form body read.
const FORM_MAX: usize = 256 << 10;

/// An error page.
fn error_page(view: &View, status: StatusCode, message: &str) -> Response {
    let title = if status == StatusCode::NOT_FOUND { "Not found" } else { "That did not work" };
    html::respond(
        status,
        html::page(
            view,
            Nav::None,
            title,
            html! { p.error { (message) } p { a href="/ui/" { "Back to the repositories" } } },
        ),
    )
}

/// Runs a registry call off the async threads.
pub(crate) async fn call<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, berth_registry::RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    crate::body::blocking(f).await?.map_err(ApiError::from)
}

/// An [`ApiError`] from an operation, as a page.
fn failed(view: &View, e: ApiError) -> Response {
    let (status, message) = e.status_and_message();
    error_page(view, status, &message)
}

/// `GET /`: a browser is sent to the UI; anything else finds nothing there, as before.
pub async fn root(State(st): State<AppState>, req: Request) -> Response {
    let browser =
        req.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if browser && st.ui.is_some() { html::redirect("/ui/") } else { ApiError::NotFound.into_response() }
}

/// Every `/ui` request.
pub async fn dispatch(State(st): State<AppState>, req: Request) -> Response {
    let Some(ui) = st.ui.clone() else { return ApiError::NotFound.into_response() };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/ui").unwrap_or("").to_owned();
    if path.is_empty() {
        return html::redirect("/ui/");
    }
    if let Some(asset) = path.strip_prefix("/static/") {
        return static_asset(asset);
    }
    let ip: Option<IpAddr> = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| c.0.addr.ip());
    let q: HashMap<String, String> =
        parts.uri.query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let cookie = session::cookie(&parts.headers);
    let (host, forwarded_tls) = public_address(&parts.headers, parts.uri.authority().map(|a| a.as_str()));
    let view = view(&st, &ui, cookie.as_deref(), host, ui.secure || forwarded_tls);

    let form = if parts.method == Method::POST {
        // The sign-in form's token is the same for every visitor, so there the browser must
        // also say where the form came from.
        if !same_origin(&parts.headers, &view.host, path == "/signin") {
            return error_page(&view, StatusCode::FORBIDDEN, "This form was sent from another site.");
        }
        let bytes = match axum::body::to_bytes(body, FORM_MAX).await {
            Ok(b) => b,
            Err(_) => return error_page(&view, StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"),
        };
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let form = Form(fields);
        if !form.get("csrf").is_some_and(|t| session::same(t, &view.csrf)) {
            return error_page(
                &view,
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this page; reload the page and try again.",
            );
        }
        Some(form)
    } else {
        drop(body);
        None
    };

    if path == "/signin" {
        return match form {
            Some(f) => signin::submit(&st, &ui, &view, &f, ip).await,
            None => signin::page(&st, &view, q.get("next").map(String::as_str), None),
        };
    }
    if view.auth_on && !view.signed_in() {
        return match parts.method {
            Method::GET | Method::HEAD => {
                let here = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui/");
                html::redirect(&format!("/ui/signin{}", html::query(&[("next", here.to_owned())])))
            }
            _ => error_page(&view, StatusCode::UNAUTHORIZED, "Sign in first."),
        };
    }
    let route = (parts.method.clone(), path.as_str());
    match (route, form) {
        ((Method::POST, "/signout"), Some(_)) => signin::sign_out(&ui, &view, cookie.as_deref()),
        ((Method::GET | Method::HEAD, "/"), None) => repositories::page(&st, &view, &q).await,
        ((Method::GET | Method::HEAD, "/trash"), None) => trash::page(&st, &view, &q).await,
        ((Method::POST, p), Some(f)) if p.starts_with("/trash/") => {
            trash::act(&st, &view, &p["/trash/".len()..], &f).await
        }
        ((Method::GET | Method::HEAD, p), None) if p.starts_with("/trash/") => {
            trash::confirm_purge(&st, &view, &p["/trash/".len()..]).await
        }
        ((Method::GET | Method::HEAD, "/gc"), None) => gc::page(&st, &ui, &view, None).await,
        ((Method::POST, "/gc"), Some(f)) => gc::act(&st, &ui, &view, &f).await,
        ((Method::GET | Method::HEAD, "/audit"), None) => audit::page(&st, &view, &q).await,
        ((Method::GET | Method::HEAD, "/delete"), None) => delete::confirm(&st, &view, &parts.uri).await,
        ((Method::POST, "/delete"), Some(f)) => delete::perform(&st, &view, &f).await,
        ((Method::POST, "/undo"), Some(f)) => delete::undo(&st, &view, &f).await,
        ((Method::GET | Method::HEAD, p), None) if p.starts_with("/r/") => {
            let rest = percent_encoding::percent_decode_str(&p["/r/".len()..]).decode_utf8_lossy().into_owned();
            match rest.split_once('@') {
                Some((name, digest)) => image::page(&st, &view, name, digest).await,
                None => repository::page(&st, &view, &rest, &q).await,
            }
        }
        _ => error_page(&view, StatusCode::NOT_FOUND, "There is no such page."),
    }
}

/// The registry's address as the browser reached it, and whether over TLS at a proxy: a
/// proxy in front may rewrite `Host`, and says what it was in `X-Forwarded-Host` and
/// `X-Forwarded-Proto`. (A browser cannot set these on a cross-site request, so trusting them
/// here cannot weaken the origin check.) HTTP/2 carries the host in the URI's authority.
fn public_address(headers: &axum::http::HeaderMap, authority: Option<&str>) -> (String, bool) {
    let first =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next()).map(str::trim);
    let host = first("x-forwarded-host")
        .filter(|h| !h.is_empty())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .or(authority)
        .unwrap_or("localhost")
        .to_owned();
    (host, first("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https")))
}

/// Whether a POST comes from a page of this server. Browsers send `Origin` with every form
/// POST; one naming another host is refused whatever the form carries (defence in depth
/// beside the CSRF token). With `strict`, a POST that says nothing of where it came from
/// (no `Origin`, no `Sec-Fetch-Site: same-origin`) is refused too.
fn same_origin(headers: &axum::http::HeaderMap, host: &str, strict: bool) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => origin.split_once("://").is_some_and(|(_, h)| h.eq_ignore_ascii_case(host)),
        None => !strict || headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("same-origin"),
    }
}

/// Who is looking: the session's user (while their password entry is unchanged), or an
/// anonymous visitor.
fn view(st: &AppState, ui: &Ui, cookie: Option<&str>, host: String, secure: bool) -> View {
    let Some(auth) = &st.auth else {
        return View {
            user: None,
            caller: Caller::open(),
            csrf: ui.sessions.anonymous_csrf(),
            auth_on: false,
            host,
            secure,
        };
    };
    let live = cookie.and_then(|c| {
        let live = ui.sessions.get(c)?;
        if auth.user_fingerprint(&live.user) == Some(live.entry) {
            Some(live)
        } else {
            // Removed, or the password changed: the session ends with it.
            ui.sessions.end(c);
            None
        }
    });
    match live {
        Some(l) => View {
            caller: auth.caller_for(Some(&l.user)),
            user: Some(l.user),
            csrf: l.csrf,
            auth_on: true,
            host,
            secure,
        },
        None => View {
            user: None,
            caller: auth.caller_for(None),
            csrf: ui.sessions.anonymous_csrf(),
            auth_on: true,
            host,
            secure,
        },
    }
}

const CSS: &str = include_str!("assets/berth.css");
const JS: &str = include_str!("assets/berth.js");

fn static_asset(name: &str) -> Response {
    let (body, kind) = match name {
        "berth.css" => (CSS, "text/css; charset=utf-8"),
        "berth.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return ApiError::NotFound.into_response(),
    };
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_public_address_is_the_proxys_when_one_says_so() {
        let direct = headers(&[("host", "reg.example:5000")]);
        assert_eq!(public_address(&direct, None), ("reg.example:5000".into(), false));
        let proxied = headers(&[
            ("host", "127.0.0.1:5000"),
            ("x-forwarded-host", "reg.example, inner"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(public_address(&proxied, None), ("reg.example".into(), true));
        assert_eq!(public_address(&HeaderMap::new(), Some("h2.example")), ("h2.example".into(), false));
    }

    #[test]
    fn posts_from_another_origin_are_refused_and_sign_in_needs_an_origin() {
        let host = "reg.example:5000";
        assert!(same_origin(&headers(&[("origin", "http://reg.example:5000")]), host, true));
        assert!(same_origin(&headers(&[("origin", "https://REG.example:5000")]), host, false));
        assert!(!same_origin(&headers(&[("origin", "https://evil.example")]), host, false));
        assert!(!same_origin(&headers(&[("origin", "null")]), host, false));
        assert!(!same_origin(&headers(&[("origin", "http://reg.example:5000.evil")]), host, false));
        assert!(same_origin(&HeaderMap::new(), host, false), "the CSRF token still decides");
        assert!(!same_origin(&HeaderMap::new(), host, true));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")]), host, true));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")]), host, true));
    }
}
