//! The trash page (`/ui/trash`): each entry with what it holds, who deleted it, when it
//! expires and what it frees then, newest first, a page at a time; an admin may **Restore** it,
//! or purge it after a confirmation that says what goes for good.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use berth_registry::{RestoreTarget, TrashId};
use maud::html;

use super::html::{self, Nav};
use super::{Form, View, call, error_page, failed};
use crate::admin::listing::{Listing, Sort};
use crate::admin::ops;
use crate::{AppState, notify};

/// Entries per page.
const PAGE: usize = 100;

/// `GET /ui/trash`: newest first.
pub async fn page(st: &AppState, view: &View, q: &HashMap<String, String>) -> Response {
    let reg = st.registry.clone();
    let caller = view.caller.clone();
    let mut q = q.clone();
    q.entry("n".into()).or_insert_with(|| PAGE.to_string());
    q.insert("sort".into(), Sort::Pushed.as_str().into());
    let listing = match Listing::from_query(&q, ops::TRASH_SORTS) {
        Ok(l) => l,
        Err(e) => return failed(view, e),
    };
    let l = listing.clone();
    let (list, next) = match call(move || ops::trash(&reg, &l, &|n| caller.may_see(n))).await {
        Ok(p) => (p.body, p.next),
        Err(e) => return failed(view, e),
    };
    let first = Listing { last: None, after: None, ..listing.clone() };
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
                    @for e in &list.entries {
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
                                    form.inline method="get" action=(format!("/ui/trash/{}/purge", e.id)) {
                                        button.danger type="submit" aria-label=(format!("Purge {}", e.id)) { "Purge" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if listing.last.is_some() { a href=(format!("/ui/trash{}", html::query(&first.to_query()))) { "First page" } }
            @if let Some(n) = &next { a rel="next" href=(format!("/ui/trash{}", html::query(&n.to_query()))) { "Next page" } }
        }
    };
    html::respond(StatusCode::OK, html::page(view, Nav::Trash, "Trash", body))
}

/// `GET /ui/trash/<id>/purge`: what purging the entry removes for good, and the button that does.
pub async fn confirm_purge(st: &AppState, view: &View, rest: &str) -> Response {
    if !view.is_admin() {
        return error_page(view, StatusCode::FORBIDDEN, "Only an admin may purge trash entries.");
    }
    let Some(Ok(id)) = rest.strip_suffix("/purge").map(str::parse::<TrashId>) else {
        return error_page(view, StatusCode::NOT_FOUND, "There is no such trash entry.");
    };
    let reg = st.registry.clone();
    let e = match call(move || ops::trash_entry(&reg, &id)).await {
        Ok(e) => e,
        Err(e) => return failed(view, e),
    };
    let body = html! {
        p {
            "Purging removes this delete from the trash for good: it can no longer be restored. "
            "What only it holds is freed at the next garbage collection."
        }
        dl.facts {
            dt { "Deleted" } dd { (html::time(&e.time)) }
            dt { "By" } dd { (e.who.clone().unwrap_or_else(|| "—".into())) }
            dt { "What" } dd {
                (e.kind) " in " (e.repository)
                @if !e.tags.is_empty() { ": " (e.tags.keys().cloned().collect::<Vec<_>>().join(", ")) }
                @if !e.manifests.is_empty() { " (" (html::count(e.manifests.len(), "image", "images")) ")" }
            }
            dt { "Frees" } dd { strong #freed { (html::size(e.bytes_freed)) } }
        }
        form method="post" action=(format!("/ui/trash/{}/purge", e.id)) {
            (html::csrf(view))
            button.danger type="submit" { "Purge" }
            " " a href="/ui/trash" { "Cancel" }
        }
    };
    html::respond(StatusCode::OK, html::page(view, Nav::Trash, "Purge from the trash", body))
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
        "restore" => {
            call(move || {
                ops::restore(&reg, &RestoreTarget::Id(id), false, who.as_deref())
                    .map(|r| vec![notify::trash_event("restore", &r.restored, false)])
            })
            .await
        }
        "purge" => {
            call(move || {
                ops::purge(&reg, Some(&id), who.as_deref())
                    .map(|r| r.purged.iter().map(|e| notify::trash_event("purge", e, false)).collect())
            })
            .await
        }
        _ => return error_page(view, StatusCode::NOT_FOUND, "There is no such page."),
    };
    match done {
        Ok(notes) => notify::attach(html::redirect(&format!("/ui/trash?done={action}d")), notes),
        Err(e) => failed(view, e),
    }
}
