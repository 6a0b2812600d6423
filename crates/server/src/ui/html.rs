//! The page shell every UI page shares (head, navigation, who is signed in, the flash line) and
//! small pieces of markup: sizes, times, digests, hidden CSRF fields, paging links. All HTML is
//! built with maud, which escapes every value it is given; nothing here writes raw strings
//! into a page.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::View;

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Repositories,
    Trash,
    Gc,
    Audit,
    None,
}

/// A whole page: `title`, the navigation with `nav` current, and `body`.
pub fn page(view: &View, nav: Nav, title: &str, body: Markup) -> Markup {
    let link = |n: Nav, href: &str, text: &str| {
        html! { a href=(href) aria-current=[(n == nav).then_some("page")] { (text) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Berth" }
                link rel="stylesheet" href="/ui/static/berth.css";
                script src="/ui/static/berth.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    a.brand href="/ui/" { "Berth" }
                    @if view.signed_in() || !view.auth_on {
                        nav aria-label="Main" {
                            (link(Nav::Repositories, "/ui/", "Repositories"))
                            (link(Nav::Trash, "/ui/trash", "Trash"))
                            @if view.is_admin() { (link(Nav::Gc, "/ui/gc", "Garbage collection")) }
                            (link(Nav::Audit, "/ui/audit", "Audit"))
                        }
                    }
                    @if let Some(user) = &view.user {
                        form.signout method="post" action="/ui/signout" {
                            span.who { "Signed in as " strong { (user) } }
                            (csrf(view))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf(view: &View) -> Markup {
    html! { input type="hidden" name="csrf" value=(view.csrf); }
}

/// A page as an answer, never cached, with a strict content security policy (no inline
/// script, nothing from elsewhere, no framing).
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (status, markup.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

/// A `303 See Other` to `to` (after a form posts).
pub fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    // Locations are built from validated names, but a `next` may carry anything a header
    // cannot: such a redirect goes home rather than nowhere.
    let location = HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/ui/"));
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Bytes as a person reads them, in decimal units as docker and `berth du` print them:
/// `0 B`, `999 B`, `1.5 kB`, `3.2 GB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// A size with its exact byte count in a tooltip.
pub fn size_cell(bytes: u64) -> Markup {
    html! { span title=(format!("{bytes} bytes")) { (size(bytes)) } }
}

/// A digest shortened for a table (`sha256:0123abcd…`), whole in a tooltip.
pub fn short_digest(d: impl std::fmt::Display) -> Markup {
    let d = d.to_string();
    let short = match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}…", &hex[..12]),
        _ => d.clone(),
    };
    html! { code title=(d) { (short) } }
}

/// An RFC 3339 time shown as written, in a `<time>` element.
pub fn time(t: &str) -> Markup {
    html! { time datetime=(t) { (t.replace('T', " ").trim_end_matches('Z')) " UTC" } }
}

/// A query string from pairs, values percent-encoded.
pub fn query(pairs: &[(&str, String)]) -> String {
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", crate::headers::encode(v))).collect();
    if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
}

/// The path of a repository's page (names keep their slashes).
pub fn repo_href(name: &str) -> String {
    format!("/ui/r/{name}")
}

/// The path of an image's page.
pub fn image_href(name: &str, digest: impl std::fmt::Display) -> String {
    format!("/ui/r/{name}@{digest}")
}

/// A line telling what just happened (after a delete, a restore, a GC run).
pub fn flash(kind: &str, content: Markup) -> Markup {
    html! { div.flash.(kind) role="status" { (content) } }
}

/// A span of time in words, to the largest whole unit that fits: `7 days`, `12 hours`,
/// `90 minutes` stays `90 minutes` (not a whole number of hours), `45 seconds`.
pub fn duration(seconds: u64) -> String {
    for (unit, one, many) in [(86_400, "day", "days"), (3_600, "hour", "hours"), (60, "minute", "minutes")] {
        if seconds >= unit && seconds.is_multiple_of(unit) {
            return count((seconds / unit) as usize, one, many);
        }
    }
    count(seconds as usize, "second", "seconds")
}

/// `n` with `one` or `many` after it: `1 tag`, `3 tags`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The no-JavaScript-needed marker for empty lists.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1500), "1.5 kB");
        assert_eq!(size(12_300_000), "12.3 MB");
        assert_eq!(size(3_200_000_000), "3.2 GB");
    }

    #[test]
    fn durations_read_in_whole_units() {
        assert_eq!(duration(7 * 86_400), "7 days");
        assert_eq!(duration(86_400), "1 day");
        assert_eq!(duration(5_400), "90 minutes");
        assert_eq!(duration(45), "45 seconds");
        assert_eq!(duration(0), "0 seconds");
    }

    #[test]
    fn values_are_escaped_and_digests_shortened() {
        let m = short_digest("sha256:0123456789abcdef0123456789abcdef");
        assert_eq!(
            m.into_string(),
            "<code title=\"sha256:0123456789abcdef0123456789abcdef\">sha256:0123456789ab…</code>"
        );
        let evil = html! { p { ("<script>alert(1)</script>") } };
        assert_eq!(evil.into_string(), "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>");
        assert_eq!(query(&[("q", "a b&c".into())]), "?q=a%20b%26c");
    }
}
