//! The audit page (`/ui/audit`): the audit log newest first, a page at a time, filtered by
//! repository (a name or a glob) and by who acted, through the admin API's audit query.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::html::{self, Nav};
use super::{View, call, failed};
use crate::AppState;
use crate::admin::ops::{self, AuditQuery};

/// Lines per page.
const PAGE: usize = 100;

/// `GET /ui/audit`
pub async fn page(st: &AppState, view: &View, q: &HashMap<String, String>) -> Response {
    // Empty filter fields come from the form as empty values: they mean "any".
    let mut q: HashMap<String, String> =
        q.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
    q.entry("n".into()).or_insert_with(|| PAGE.to_string());
    let query = match AuditQuery::from_query(&q) {
        Ok(a) => a,
        Err(e) => return failed(view, e),
    };
    let reg = st.registry.clone();
    let caller = view.caller.clone();
    let aq = query.clone();
    let page = match call(move || ops::audit(&reg, &aq, &|n| caller.may_see(n))).await {
        Ok(p) => p,
        Err(e) => return failed(view, e),
    };
    let repository = query.repository.as_ref().map(ToString::to_string).unwrap_or_default();
    let who = query.who.clone().unwrap_or_default();
    let first = AuditQuery { last: None, ..query.clone() };
    let body = html! {
        form.filter method="get" action="/ui/audit" role="search" {
            label for="repository" { "Repository" }
            input #repository name="repository" type="search" value=(repository) placeholder="name or team/**";
            label for="who" { "User" }
            input #who name="who" type="search" value=(who);
            button type="submit" { "Filter" }
            @if !repository.is_empty() || !who.is_empty() { " " a href="/ui/audit" { "Clear" } }
        }
        @if page.body.entries.is_empty() {
            (html::empty("Nothing in the audit log matches."))
        } @else {
            table.list {
                caption.visually-hidden { "Audit log, newest first" }
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "By" }
                    th scope="col" { "Repository" } th scope="col" { "What" } th scope="col" { "Frees" }
                    th scope="col" { "Trash entry" }
                } }
                tbody {
                    @for e in &page.body.entries {
                        tr {
                            td { (html::time(&e.time)) }
                            td { (e.action) @if e.forced { " (forced)" } }
                            td { (e.who.clone().unwrap_or_else(|| "—".into())) }
                            td { a href=(html::repo_href(&e.repository)) { (e.repository) } }
                            td {
                                (e.kind)
                                @if !e.tags.is_empty() {
                                    ": " @for (i, (t, d)) in e.tags.iter().enumerate() {
                                        @if i > 0 { ", " } strong { (t) } " → " (html::short_digest(d))
                                    }
                                } @else if !e.manifests.is_empty() {
                                    ": " @for (i, d) in e.manifests.iter().enumerate() {
                                        @if i > 0 { ", " } (html::short_digest(d))
                                    }
                                }
                            }
                            td.num { (html::size_cell(e.bytes_freed)) }
                            td { @match &e.id { Some(id) => code { (id) }, None => "—" } }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if query.last.is_some() { a href=(format!("/ui/audit{}", html::query(&first.to_query()))) { "First page" } }
            @if let Some(n) = &page.next { a rel="next" href=(format!("/ui/audit{}", html::query(&n.to_query()))) { "Next page" } }
        }
    };
    html::respond(StatusCode::OK, html::page(view, Nav::Audit, "Audit", body))
}
