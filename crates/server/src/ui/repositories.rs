//! The repositories page (`/ui/`): every repository the viewer may pull, with its tags, size,
//! shared bytes, what deleting it would free and its last push; filtered by name, sorted by
//! any column, a page at a time on the server (the admin listing's paging).

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::html::{self, Nav};
use super::{View, delete, failed};
use crate::AppState;
use crate::admin::listing::{Listing, Sort};
use crate::admin::ops::{self, REPOSITORY_SORTS};
use crate::body::blocking;

/// Rows per page.
pub const PAGE: usize = 50;

/// The columns, their sort and label.
const COLUMNS: &[(Sort, &str)] = &[
    (Sort::Name, "Name"),
    (Sort::Tags, "Tags"),
    (Sort::Size, "Size"),
    (Sort::Shared, "Shared"),
    (Sort::Unique, "Deleting frees"),
    (Sort::Pushed, "Last push"),
];

/// `GET /ui/`
pub async fn page(st: &AppState, view: &View, q: &HashMap<String, String>) -> Response {
    let mut q = q.clone();
    q.entry("n".into()).or_insert_with(|| PAGE.to_string());
    let listing = match Listing::from_query(&q, REPOSITORY_SORTS) {
        Ok(l) => l,
        Err(e) => return failed(view, e),
    };
    let reg = st.registry.clone();
    let caller = view.caller.clone();
    let l = listing.clone();
    let loaded = blocking(move || {
        let page = ops::repositories(&reg, &l, &|n| caller.may_pull(n))?;
        let mut pushed = Vec::new();
        for r in &page.body.repositories {
            let name = r.name.parse().map_err(|_| berth_registry::RegistryError::Corrupt {
                what: r.name.clone(),
                reason: "not a repository name".into(),
            })?;
            pushed.push(reg.repository_pushed(&name)?.map(|t| humantime::format_rfc3339_seconds(t).to_string()));
        }
        Ok::<_, berth_registry::RegistryError>((page, pushed))
    })
    .await;
    let (page, pushed) = match loaded {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return failed(view, e.into()),
        Err(e) => return failed(view, e),
    };
    let banner = delete::banner(st, view, &q).await;
    let contains = listing.contains.clone().unwrap_or_default();
    let sort_href = |s: Sort| {
        let mut p = vec![("sort", s.as_str().to_owned())];
        if !contains.is_empty() {
            p.push(("contains", contains.clone()));
        }
        format!("/ui/{}", html::query(&p))
    };
    let body = html! {
        (banner)
        form.filter method="get" action="/ui/" role="search" {
            label for="contains" { "Filter by name" }
            input #contains name="contains" type="search" value=(contains);
            @if listing.sort != Sort::Name { input type="hidden" name="sort" value=(listing.sort.as_str()); }
            button type="submit" { "Filter" }
            @if !contains.is_empty() { " " a href="/ui/" { "Clear" } }
        }
        @if page.body.repositories.is_empty() {
            (html::empty(if contains.is_empty() { "No repositories yet." } else { "No repository matches." }))
        } @else {
            table.list {
                caption.visually-hidden { "Repositories" }
                thead { tr {
                    @for (sort, label) in COLUMNS {
                        th scope="col" aria-sort=[(listing.sort == *sort).then_some(if *sort == Sort::Name { "ascending" } else { "descending" })] {
                            a href=(sort_href(*sort)) { (label) }
                        }
                    }
                } }
                tbody {
                    @for (r, p) in page.body.repositories.iter().zip(&pushed) {
                        tr {
                            th scope="row" { a href=(html::repo_href(&r.name)) { (r.name) } }
                            td.num { (r.tags) }
                            td.num { (html::size_cell(r.size)) }
                            td.num { (html::size_cell(r.shared)) }
                            td.num { (html::size_cell(r.unique)) }
                            td { @match p { Some(t) => (html::time(t)), None => "—" } }
                        }
                    }
                }
            }
        }
        (pager(&listing, page.next.as_ref()))
    };
    html::respond(StatusCode::OK, html::page(view, Nav::Repositories, "Repositories", body))
}

/// "First page" and "Next page" links for a listing shown at `/ui/`.
fn pager(current: &Listing, next: Option<&Listing>) -> Markup {
    let first = Listing { last: None, after: None, ..current.clone() };
    html! {
        nav.pager aria-label="Pages" {
            @if current.last.is_some() { a href=(format!("/ui/{}", html::query(&first.to_query()))) { "First page" } }
            @if let Some(n) = next { a rel="next" href=(format!("/ui/{}", html::query(&n.to_query()))) { "Next page" } }
        }
    }
}
