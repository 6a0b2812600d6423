//! A repository's page (`/ui/r/<name>`): its tags with digest, platforms (of an index), size,
//! push time and the other tags on the same image; tags are selected to be deleted together,
//! and an admin may delete the whole repository.

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use axum::response::Response;
use berth_oci::{Digest, Reference, RepoName};
use maud::html;

use super::html::{self, Nav};
use super::{View, call, delete, error_page, failed};
use crate::AppState;
use crate::admin::listing::{Listing, Sort};
use crate::admin::ops::{self, TAG_SORTS};
use crate::auth::action::Action;

/// Rows per page.
const PAGE: usize = 100;

const COLUMNS: &[(Sort, &str)] = &[
    (Sort::Name, "Tag"),
    (Sort::Size, "Size"),
    (Sort::ImageUnique, "Deleting the image frees"),
    (Sort::Pushed, "Pushed"),
];

/// `GET /ui/r/<name>`
pub async fn page(st: &AppState, view: &View, name: &str, q: &HashMap<String, String>) -> Response {
    let Ok(name) = name.parse::<RepoName>() else {
        return error_page(view, StatusCode::NOT_FOUND, "There is no such repository.");
    };
    if !view.may(&name, Action::Pull) {
        // Whether it exists is not told to someone who may not read it.
        return error_page(view, StatusCode::NOT_FOUND, "There is no such repository.");
    }
    let mut q = q.clone();
    q.entry("n".into()).or_insert_with(|| PAGE.to_string());
    let listing = match Listing::from_query(&q, TAG_SORTS) {
        Ok(l) => l,
        Err(e) => return failed(view, e),
    };
    let reg = st.registry.clone();
    let (n2, l2) = (name.clone(), listing.clone());
    let loaded = call(move || {
        let page = ops::repository(&reg, &n2, &l2)?;
        let summary = reg.repository_summary(&n2)?;
        // Every tag's image (not only this page's), to name the tags that share one.
        let by_digest: BTreeMap<String, Vec<String>> = reg
            .tags_by_image(&n2)?
            .into_iter()
            .map(|(d, tags)| (d.to_string(), tags.iter().map(ToString::to_string).collect()))
            .collect();
        let mut platforms: HashMap<String, Vec<String>> = HashMap::new();
        for t in &page.body.tags {
            if platforms.contains_key(&t.digest) {
                continue;
            }
            let Ok(d) = t.digest.parse::<Digest>() else { continue };
            let p = match reg.manifest_get(&n2, &Reference::Digest(d)) {
                Ok(m) => m
                    .manifest
                    .as_ref()
                    .map(|m| {
                        m.manifests
                            .iter()
                            .filter_map(|c| c.platform.as_ref())
                            .map(|p| format!("{}/{}", p.os, p.architecture))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            platforms.insert(t.digest.clone(), p);
        }
        Ok((page, summary, by_digest, platforms))
    })
    .await;
    let (page, summary, by_digest, platforms) = match loaded {
        Ok(x) => x,
        Err(e) => return failed(view, e),
    };
    let Some(summary) = summary else {
        return error_page(view, StatusCode::NOT_FOUND, "There is no such repository.");
    };
    let banner = delete::banner(st, view, &q).await;
    let may_delete = view.may(&name, Action::Delete) && st.delete_enabled;
    let href = html::repo_href(name.as_str());
    let sort_href = |s: Sort| format!("{href}{}", html::query(&[("sort", s.as_str().to_owned())]));
    let first = Listing { last: None, after: None, ..listing.clone() };
    let body = html! {
        (banner)
        p.summary {
            (html::count(summary.tags, "tag", "tags")) " · " (html::count(summary.manifests, "image", "images")) " · " (html::size(summary.usage.total)) " in all, "
            (html::size(summary.usage.shared)) " shared with other repositories · deleting the repository frees "
            strong { (html::size(summary.usage.unique)) }
        }
        @if page.body.tags.is_empty() {
            (html::empty("No tags."))
        } @else {
            form #tags method="get" action="/ui/delete" {
                input type="hidden" name="repository" value=(name.as_str());
                table.list data-select[may_delete] {
                    caption.visually-hidden { "Tags of " (name) }
                    thead { tr {
                        @if may_delete { th scope="col" { span.visually-hidden { "Select" } } }
                        @for (sort, label) in COLUMNS {
                            th scope="col" aria-sort=[(listing.sort == *sort).then_some(if *sort == Sort::Name { "ascending" } else { "descending" })] {
                                a href=(sort_href(*sort)) { (label) }
                            }
                            @if *sort == Sort::Name {
                                th scope="col" { "Image" }
                                th scope="col" { "Platforms" }
                            }
                        }
                        th scope="col" { "Same image as" }
                    } }
                    tbody {
                        @for (i, t) in page.body.tags.iter().enumerate() {
                            @let others: Vec<&String> = by_digest.get(&t.digest).into_iter().flatten().filter(|o| **o != t.tag).collect();
                            tr {
                                @if may_delete {
                                    td { input type="checkbox" name="tag" value=(t.tag) id=(format!("tag-{i}")) aria-label=(format!("Select {}", t.tag)); }
                                }
                                th scope="row" { (t.tag) }
                                td { a href=(html::image_href(name.as_str(), &t.digest)) { (html::short_digest(&t.digest)) } }
                                td { @match platforms.get(&t.digest) { Some(p) if !p.is_empty() => (p.join(", ")), _ => "—" } }
                                td.num { (html::size_cell(t.size)) }
                                td.num { (html::size_cell(t.image_unique)) }
                                td { @match &t.pushed { Some(p) => (html::time(p)), None => "—" } }
                                td { @if others.is_empty() { "—" } @else { (others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) } }
                            }
                        }
                    }
                }
                @if may_delete {
                    p { button.danger type="submit" { "Delete" } " the selected tags (a confirmation comes first)" }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if listing.last.is_some() { a href=(format!("{href}{}", html::query(&first.to_query()))) { "First page" } }
            @if let Some(n) = &page.next { a rel="next" href=(format!("{href}{}", html::query(&n.to_query()))) { "Next page" } }
        }
        @if view.is_admin() && st.delete_enabled {
            section.danger-zone aria-labelledby="whole" {
                h2 #whole { "The whole repository" }
                form method="get" action="/ui/delete" {
                    input type="hidden" name="repository" value=(name.as_str());
                    button.danger type="submit" { "Delete repository" }
                }
            }
        }
    };
    html::respond(StatusCode::OK, html::page(view, Nav::Repositories, name.as_str(), body))
}
