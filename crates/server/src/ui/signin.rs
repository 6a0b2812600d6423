//! Signing in and out of the UI with the registry's own users (`auth.htpasswd`): the same
//! password check, cache and limit on wrong passwords as a request's Basic credentials.

use std::net::IpAddr;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use maud::html;

use super::html::{self, Nav};
use super::{Form, Ui, View};
use crate::AppState;
use crate::auth::SignIn;

/// Where to go after signing in: a path of the UI, never elsewhere.
fn next_or_home(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains("://") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

/// `GET /ui/signin` (and the form again after a failure, with `problem`).
pub fn page(st: &AppState, view: &View, next: Option<&str>, problem: Option<(StatusCode, String)>) -> Response {
    if !view.auth_on || view.user.is_some() {
        return html::redirect(&next_or_home(next));
    }
    let tokens = st.auth.as_ref().is_some_and(|a| a.signs_in_with_tokens());
    let (status, problem) = match problem {
        Some((s, p)) => (s, Some(p)),
        None => (StatusCode::OK, None),
    };
    let body = html! {
        @if tokens {
            p.error {
                "This registry signs users in through a token server (auth.token); the web UI cannot sign in against it. "
                "Use the registry's clients and the berth command line."
            }
        } @else {
            @if let Some(p) = problem { p.error role="alert" { (p) } }
            form.signin method="post" action="/ui/signin" {
                (html::csrf(view))
                input type="hidden" name="next" value=(next_or_home(next));
                p {
                    label for="username" { "Username" }
                    input #username name="username" type="text" autocomplete="username" required autofocus;
                }
                p {
                    label for="password" { "Password" }
                    input #password name="password" type="password" autocomplete="current-password" required;
                }
                p { button type="submit" { "Sign in" } }
            }
        }
    };
    html::respond(status, html::page(view, Nav::None, "Sign in", body))
}

/// `POST /ui/signin`.
pub async fn submit(st: &AppState, ui: &Ui, view: &View, form: &Form, ip: Option<IpAddr>) -> Response {
    let Some(auth) = &st.auth else { return html::redirect("/ui/") };
    let next = form.get("next");
    let user = form.get("username").unwrap_or("").trim();
    let password = form.get("password").unwrap_or("");
    match auth.sign_in(user, password, ip).await {
        SignIn::Ok(user) => {
            let Some(entry) = auth.user_fingerprint(&user) else {
                return page(st, view, next, Some((StatusCode::UNAUTHORIZED, "Wrong username or password.".into())));
            };
            let id = ui.sessions.start(&user, entry);
            let mut resp = html::redirect(&next_or_home(next));
            if let Ok(v) = HeaderValue::from_str(&super::session::set_cookie(Some(&id), view.secure)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        SignIn::Wrong => page(st, view, next, Some((StatusCode::UNAUTHORIZED, "Wrong username or password.".into()))),
        SignIn::Blocked(secs) => page(
            st,
            view,
            next,
            Some((
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many wrong passwords from this address; try again in {secs} s."),
            )),
        ),
        SignIn::Unsupported => page(st, view, next, None),
    }
}

/// `POST /ui/signout`.
pub fn sign_out(ui: &Ui, view: &View, cookie: Option<&str>) -> Response {
    if let Some(c) = cookie {
        ui.sessions.end(c);
    }
    let mut resp = html::redirect("/ui/signin");
    if let Ok(v) = HeaderValue::from_str(&super::session::set_cookie(None, view.secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_only_ui_paths_are_followed() {
        assert_eq!(next_or_home(Some("/ui/r/team/app")), "/ui/r/team/app");
        for bad in ["https://evil.example/ui/", "//evil.example/ui/", "/ui/\\\\evil", "/v2/", "javascript:alert(1)"] {
            assert_eq!(next_or_home(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(next_or_home(None), "/ui/");
    }
}
