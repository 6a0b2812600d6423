//! An image's page (`/ui/r/<name>@<digest>`): what its config says (created, platform,
//! entrypoint, labels), its layers with sizes and how many manifests use each, an index's
//! platform images, its referrers (signatures, SBOMs, attestations), the tags on it, and the
//! command that pulls it.

use axum::http::StatusCode;
use axum::response::Response;
use berth_oci::{Digest, RepoName};
use maud::html;

use super::html::{self, Nav};
use super::{View, call, error_page, failed};
use crate::AppState;
use crate::auth::action::Action;

/// `GET /ui/r/<name>@<digest>`
pub async fn page(st: &AppState, view: &View, name: &str, digest: &str) -> Response {
    let (Ok(name), Ok(digest)) = (name.parse::<RepoName>(), digest.parse::<Digest>()) else {
        return error_page(view, StatusCode::NOT_FOUND, "There is no such image.");
    };
    if !view.may(&name, Action::Pull) {
        return error_page(view, StatusCode::NOT_FOUND, "There is no such image.");
    }
    let reg = st.registry.clone();
    let (n2, d2) = (name.clone(), digest.clone());
    let info = match call(move || reg.image(&n2, &d2)).await {
        Ok(i) => i,
        Err(e) => return failed(view, e),
    };
    let may_delete = view.may(&name, Action::Delete) && st.delete_enabled;
    let pull = format!("{}/{name}@{digest}", view.host);
    let whole = digest.to_string();
    let title = format!("{name}@{}", &whole[..whole.len().min(19)]);
    let body = html! {
        p.back { a href=(html::repo_href(name.as_str())) { "← " (name) } }
        dl.facts {
            dt { "Digest" } dd { code { (digest) } }
            dt { "Type" } dd { (info.media_type) @if let Some(a) = &info.artifact_type { " (artifact: " (a) ")" } }
            dt { "Manifest size" } dd { (html::size(info.size)) }
            dt { "Tags" } dd { @if info.tags.is_empty() { "none" } @else { (info.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")) } }
            @if let Some(s) = &info.subject {
                dt { "Refers to" } dd { a href=(html::image_href(name.as_str(), s)) { (html::short_digest(s)) } }
            }
        }
        h2 { "Pull" }
        p {
            label for="pull" { "Command" }
            input #pull.copy type="text" readonly value=(format!("docker pull {pull}"));
        }
        @if let Some(c) = &info.config {
            h2 { "Config" }
            dl.facts {
                dt { "Created" } dd { @match &c.created { Some(t) => (html::time(t)), None => "—" } }
                dt { "Platform" } dd { (c.platform.clone().unwrap_or_else(|| "—".into())) }
                dt { "Entrypoint" } dd { @if c.entrypoint.is_empty() { "—" } @else { code { (c.entrypoint.join(" ")) } } }
                dt { "Command" } dd { @if c.cmd.is_empty() { "—" } @else { code { (c.cmd.join(" ")) } } }
            }
            @if !c.labels.is_empty() {
                h3 { "Labels" }
                table.list { tbody { @for (k, v) in &c.labels { tr { th scope="row" { (k) } td { (v) } } } } }
            }
        }
        @if info.is_index {
            h2 { "Platforms" }
            table.list {
                thead { tr { th scope="col" { "Platform" } th scope="col" { "Image" } th scope="col" { "Size" } } }
                tbody { @for c in &info.children { tr {
                    th scope="row" { (c.platform.clone().unwrap_or_else(|| "—".into())) }
                    td { a href=(html::image_href(name.as_str(), &c.digest)) { (html::short_digest(&c.digest)) } }
                    td.num { (html::size_cell(c.size)) }
                } } }
            }
        } @else {
            h2 { "Layers" }
            table.list {
                thead { tr { th scope="col" { "Blob" } th scope="col" { "Type" } th scope="col" { "Size" } th scope="col" { "Used by manifests" } } }
                tbody { @for (i, b) in info.blobs.iter().enumerate() { tr {
                    th scope="row" { (html::short_digest(&b.digest)) @if i == 0 && info.config.is_some() { " (config)" } }
                    td { (b.media_type) }
                    td.num { (html::size_cell(b.size)) }
                    td.num { (b.used_by) }
                } } }
            }
        }
        h2 { "Referrers" }
        @if info.referrers.is_empty() {
            (html::empty("Nothing refers to this image (no signature, SBOM or attestation)."))
        } @else {
            table.list {
                thead { tr { th scope="col" { "Artifact type" } th scope="col" { "Manifest" } th scope="col" { "Size" } } }
                tbody { @for r in &info.referrers { tr {
                    th scope="row" { (r.artifact_type.clone().unwrap_or_else(|| r.media_type.clone())) }
                    td { a href=(html::image_href(name.as_str(), &r.digest)) { (html::short_digest(&r.digest)) } }
                    td.num { (html::size_cell(r.size)) }
                } } }
            }
        }
        @if may_delete {
            form method="get" action="/ui/delete" {
                input type="hidden" name="repository" value=(name.as_str());
                input type="hidden" name="digest" value=(whole);
                button.danger type="submit" { "Delete" } " this image and every tag on it (a confirmation comes first)"
            }
        }
    };
    html::respond(StatusCode::OK, html::page(view, Nav::Repositories, &title, body))
}
