//! The trash page (`/ui/trash`): each entry with what it holds, who deleted it, when it
//! expires and what it frees then; an admin may **Restore** or purge it.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use berth_registry::{RestoreTarget, TrashId};
use maud::html;

use super::html::{self, Nav};
use super::{Form, View, call, error_page, failed};
use crate::AppState;
use crate::admin::listing::Listing;
use crate::admin::ops;

/// `GET /ui/trash`: newest first.
pub async fn page(st: &AppState, view: &View, q: &HashMap<String, String>) -> Response {
    let reg = st.registry.clone();
    let caller = view.caller.clone();
    let listing = Listing { n: usize::MAX, ..Listing::default() };
    let list = match call(move || ops::trash(&reg, &listing, &|n| caller.may_see(n))).await {
        Ok(l) => l.body,
        Err(e) => return failed(view, e),
    };
    let admin = view.is_admin();
    let flash = match q.get("done").map(String::as_str) {
        Some("restored") => html::flash("ok", html! { "Restored." }),
        Some("purged") => html::flash("ok", html! { "Purged for good; the next garbage collection frees its space." }),
        _ => html! {},
    };
    let body = html! {
        (flash)
        p {
            "Every delete is kept here for "
            (html::duration(list.retention_seconds))
            " and can be restored until then; its space comes back at the first garbage collection after."
        }
        @if list.entries.is_empty() {
            (html::empty("The trash is empty."))
        } @else {
            table.list {
                caption.visually-hidden { "Trash entries, newest first" }
                thead { tr {
                    th scope="col" { "Deleted" } th scope="col" { "By" } th scope="col" { "What" }
                    th scope="col" { "Frees" } th scope="col" { "Expires" }
                    @if admin { th scope="col" { span.visually-hidden { "Actions" } } }
                } }
                tbody {
                    @for e in list.entries.iter().rev() {
                        tr id=(format!("entry-{}", e.id)) {
                            td { (html::time(&e.time)) }
                            td { (e.who.clone().unwrap_or_else(|| "—".into())) }
                            td {
                                (e.kind) " in " a href=(html::repo_href(&e.repository)) { (e.repository) }
                                @if !e.tags.is_empty() {
                                    ": " @for (i, (t, d)) in e.tags.iter().enumerate() {
                                        @if i > 0 { ", " } strong { (t) } " → " (html::short_digest(d))
                                    }
                                }
                                @if e.tags.is_empty() && !e.manifests.is_empty() {
                                    ": " (e.manifests.len()) " image(s)"
                                }
                            }
                            td.num { (html::size_cell(e.bytes_freed)) }
                            td { @match &e.expires { Some(t) => (html::time(t)), None => "—" } }
                            @if admin {
                                td.actions {
                                    form.inline method="post" action=(format!("/ui/trash/{}/restore", e.id)) {
                                        (html::csrf(view))
                                        button type="submit" aria-label=(format!("Restore {}", e.id)) { "Restore" }
                                    }
                                    form.inline method="post" action=(format!("/ui/trash/{}/purge", e.id)) {
                                        (html::csrf(view))
                                        button.danger type="submit" aria-label=(format!("Purge {}", e.id)) { "Purge" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    html::respond(StatusCode::OK, html::page(view, Nav::Trash, "Trash", body))
}

/// `POST /ui/trash/<id>/restore` and `POST /ui/trash/<id>/purge` (admins only).
pub async fn act(st: &AppState, view: &View, rest: &str, _form: &Form) -> Response {
    if !view.is_admin() {
        return error_page(view, StatusCode::FORBIDDEN, "Only an admin may restore or purge trash entries.");
    }
    let Some((id, action)) = rest.split_once('/') else {
        return error_page(view, StatusCode::NOT_FOUND, "There is no such page.");
    };
    let Ok(id) = id.parse::<TrashId>() else {
        return error_page(view, StatusCode::NOT_FOUND, "There is no such trash entry.");
    };
    let reg = st.registry.clone();
    let who = view.user.clone();
    let done = match action {
        "restore" => call(move || ops::restore(&reg, &RestoreTarget::Id(id), false, who.as_deref()).map(|_| ())).await,
        "purge" => call(move || ops::purge(&reg, Some(&id), who.as_deref()).map(|_| ())).await,
        _ => return error_page(view, StatusCode::NOT_FOUND, "There is no such page."),
    };
    match done {
        Ok(()) => html::redirect(&format!("/ui/trash?done={action}d")),
        Err(e) => failed(view, e),
    }
}
