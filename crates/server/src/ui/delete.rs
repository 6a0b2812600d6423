//! Deleting from the UI: a confirmation that names exactly which tags and images go and the
//! bytes it will free (0 B when another tag keeps the image, naming that tag), the delete, and
//! the line afterwards that offers **Undo** (a restore from the trash).
//!
//! The selection is planned with the admin operations' dry run: tags whose image keeps other
//! tags go one by one; tags that are every tag of their image take the image with them (one
//! delete of the manifest, so what it frees is counted as one); no tag and no digest is the
//! whole repository. The same plan is made again when the form is posted, so a change in
//! between is not acted on blindly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::http::{StatusCode, Uri};
use axum::response::Response;
use berth_oci::{Digest, RepoName, Tag};
use berth_registry::{DeleteRequest, DeleteTarget, Registry, RegistryError, RestoreTarget, TrashId};
use maud::{Markup, html};

use super::html::{self, Nav};
use super::{Form, View, call, error_page, failed};
use crate::admin::ops;
use crate::admin::wire::{DeleteResult, Entry};
use crate::auth::action::Action;
use crate::error::ApiError;
use crate::{AppState, notify};

/// What was asked for: a repository and tags, or one image, or (neither) the whole repository.
#[derive(Debug, Clone)]
struct Selection {
    repository: RepoName,
    tags: BTreeSet<Tag>,
    digest: Option<Digest>,
}

impl Selection {
    fn read(fields: &[(&str, &str)]) -> Result<Selection, ApiError> {
        let get = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let repository: RepoName =
            get("repository").ok_or_else(|| ApiError::BadRequest("no repository given".into()))?.parse()?;
        let tags = fields
            .iter()
            .filter(|(k, _)| *k == "tag")
            .map(|(_, v)| v.parse::<Tag>())
            .collect::<Result<BTreeSet<_>, _>>()?;
        if tags.len() > MAX_TAGS {
            return Err(ApiError::BadRequest(format!("select at most {MAX_TAGS} tags at once")));
        }
        let digest = get("digest").filter(|d| !d.is_empty()).map(str::parse::<Digest>).transpose()?;
        if digest.is_some() && !tags.is_empty() {
            return Err(ApiError::BadRequest("give tags or a digest, not both".into()));
        }
        Ok(Selection { repository, tags, digest })
    }

    fn whole_repository(&self) -> bool {
        self.tags.is_empty() && self.digest.is_none()
    }

    /// The fields that name it again in a form or a link.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("repository", self.repository.to_string())];
        f.extend(self.tags.iter().map(|t| ("tag", t.to_string())));
        f.extend(self.digest.iter().map(|d| ("digest", d.to_string())));
        f
    }
}

/// One delete of a plan, with its dry run and, for a tag that leaves its image standing, the
/// tags that keep it.
struct Step {
    target: DeleteTarget,
    dry: DeleteResult,
    kept_by: Vec<Tag>,
}

/// The deletes `sel` takes, each dry-run.
fn plan(reg: &Registry, sel: &Selection, who: Option<&str>) -> Result<Vec<Step>, RegistryError> {
    let name = &sel.repository;
    let targets: Vec<(DeleteTarget, Vec<Tag>)> = if sel.whole_repository() {
        vec![(DeleteTarget::Repository(name.clone()), vec![])]
    } else if let Some(d) = &sel.digest {
        vec![(DeleteTarget::Manifest(name.clone(), d.clone()), vec![])]
    } else {
        let usage = reg.repository_usage(name)?.ok_or_else(|| RegistryError::NameUnknown { name: name.clone() })?;
        let mut by_digest: BTreeMap<Digest, Vec<Tag>> = BTreeMap::new();
        for t in &usage.tags {
            by_digest.entry(t.digest.clone()).or_default().push(t.tag.clone());
        }
        let mut out = Vec::new();
        for t in &sel.tags {
            if !usage.tags.iter().any(|u| &u.tag == t) {
                return Err(RegistryError::ManifestUnknown { name: name.clone(), reference: t.to_string() });
            }
        }
        for (digest, all) in by_digest {
            let chosen: Vec<&Tag> = all.iter().filter(|t| sel.tags.contains(*t)).collect();
            if chosen.is_empty() {
                continue;
            }
            if chosen.len() == all.len() && all.len() > 1 {
                out.push((DeleteTarget::Manifest(name.clone(), digest), vec![]));
            } else {
                let others: Vec<Tag> = all.iter().filter(|t| !sel.tags.contains(*t)).cloned().collect();
                out.extend(chosen.into_iter().map(|t| (DeleteTarget::Tag(name.clone(), t.clone()), others.clone())));
            }
        }
        out
    };
    targets
        .into_iter()
        .map(|(target, kept_by)| {
            let req = DeleteRequest { target: target.clone(), force: false, who: who.map(str::to_owned) };
            Ok(Step { target, dry: ops::delete(reg, &req, true)?, kept_by })
        })
        .collect()
}

/// What a plan will do, as one short value: the form carries the one the confirmation showed,
/// and the delete goes ahead only if planning again gives the same (a tag pushed or moved in
/// between would otherwise be deleted unseen).
fn fingerprint(steps: &[Step]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for s in steps {
        let e = &s.dry.entry;
        h.update(format!("{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n", s.target, e.tags, e.manifests, e.layers, s.kept_by));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The most tags one delete may name (a listing page's most).
const MAX_TAGS: usize = 1000;

/// Whether the viewer may take every step.
fn allowed(view: &View, sel: &Selection) -> bool {
    if sel.whole_repository() { view.is_admin() } else { view.may(&sel.repository, Action::Delete) }
}

fn tag_list(tags: &[Tag]) -> String {
    tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

fn describe(step: &Step) -> Markup {
    let e = &step.dry.entry;
    let tags: Vec<&String> = e.tags.keys().collect();
    html! {
        @match &step.target {
            DeleteTarget::Tag(_, t) => {
                "Tag " strong { (t) }
                @if step.kept_by.is_empty() {
                    " and its image " (html::short_digest(e.tags.values().next().map_or("", |d| d.as_str())))
                } @else {
                    ". The image stays: " strong { (tag_list(&step.kept_by)) }
                    (if step.kept_by.len() == 1 { " still points at it" } else { " still point at it" })
                }
            }
            DeleteTarget::Manifest(_, d) => {
                "Image " (html::short_digest(d))
                @if tags.is_empty() { " (no tag)" } @else { " with its tags " strong { (tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")) } }
            }
            DeleteTarget::Repository(n) => {
                "The whole repository " strong { (n) } ": "
                (html::count(e.tags.len(), "tag", "tags")) ", " (html::count(e.manifests.len(), "image", "images"))
            }
            DeleteTarget::Blob(_, d) => { "Layer link " (html::short_digest(d)) }
            DeleteTarget::Tags(_, ts, _) => { "Tags " strong { (ts.iter().map(|s| s.tag.as_str()).collect::<Vec<_>>().join(", ")) } }
        }
        ". Frees " strong.freed { (html::size(e.bytes_freed)) } "."
    }
}

fn retention_words(seconds: Option<u64>) -> String {
    match seconds {
        Some(0) | None => "once garbage collection runs (the trash is off: this cannot be undone)".to_owned(),
        Some(s) => format!("once it leaves the trash ({}) and garbage collection runs", html::duration(s)),
    }
}

/// The selection in `fields`, if the viewer may delete it and deletes are enabled; otherwise
/// the page saying why not.
fn selected(st: &AppState, view: &View, fields: &[(String, String)]) -> Result<Selection, Box<Response>> {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sel = Selection::read(&pairs).map_err(|e| Box::new(failed(view, e)))?;
    if !allowed(view, &sel) {
        return Err(Box::new(error_page(view, StatusCode::FORBIDDEN, "You may not delete this.")));
    }
    st.check_deletes_enabled().map_err(|e| Box::new(failed(view, e)))?;
    Ok(sel)
}

/// `GET /ui/delete?repository=…[&tag=…]*[&digest=…]`: the confirmation.
pub async fn confirm(st: &AppState, view: &View, uri: &Uri) -> Response {
    let fields: Vec<(String, String)> =
        uri.query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let sel = match selected(st, view, &fields) {
        Ok(s) => s,
        Err(page) => return *page,
    };
    let reg = st.registry.clone();
    let (s2, who) = (sel.clone(), view.user.clone());
    match call(move || plan(&reg, &s2, who.as_deref())).await {
        Ok(steps) => confirmation(st, view, &sel, &steps, None),
        Err(e) => failed(view, e),
    }
}

/// The confirmation page for `steps`; `changed` when a delete was refused because the plan
/// changed since it was shown.
fn confirmation(st: &AppState, view: &View, sel: &Selection, steps: &[Step], changed: Option<&str>) -> Response {
    if steps.is_empty() {
        return error_page(view, StatusCode::BAD_REQUEST, "Nothing was selected.");
    }
    let total: u64 = steps.iter().map(|s| s.dry.entry.bytes_freed).sum();
    let retention = steps[0].dry.trashed.then(|| st.registry.config().trash_retention.as_secs());
    let back = if sel.whole_repository() { "/ui/".to_owned() } else { html::repo_href(sel.repository.as_str()) };
    let all_kept = steps.iter().all(|s| matches!(s.target, DeleteTarget::Tag(..)) && !s.kept_by.is_empty());
    let body = html! {
        @if let Some(why) = changed { (html::flash("warn", html! { (why) })) }
        p { "This deletes:" }
        ul.plan { @for s in steps { li { (describe(s)) } } }
        p.total {
            "In all it frees " strong #freed { (html::size(total)) } " (" (total) " bytes) " (retention_words(retention)) "."
            @if steps.len() > 1 { " Layers shared only among these images are counted once each delete goes, so the figure may be a little low." }
        }
        @if total == 0 {
            @if all_kept { p { "Nothing is freed: every image stays for another tag." } }
            @else { p { "Nothing is freed: everything it holds is still used elsewhere." } }
        }
        form method="post" action="/ui/delete" {
            (html::csrf(view))
            @for (k, v) in sel.fields() { input type="hidden" name=(k) value=(v); }
            input type="hidden" name="plan" value=(fingerprint(steps));
            button.danger type="submit" { "Delete" }
            " " a href=(back) { "Cancel" }
        }
    };
    let status = if changed.is_some() { StatusCode::CONFLICT } else { StatusCode::OK };
    html::respond(status, html::page(view, Nav::Repositories, &format!("Delete from {}", sel.repository), body))
}

/// What a posted delete came to.
enum Done {
    /// Deleted: the trash ids, the error that stopped it partway, if any, and what to announce.
    Deleted(Vec<String>, Option<RegistryError>, Vec<notify::Happened>),
    /// Nothing done: the plan is no longer the one confirmed; here is the new one.
    Changed(Vec<Step>),
}

/// `POST /ui/delete`: deletes as planned, then back to the page with the Undo line.
pub async fn perform(st: &AppState, view: &View, form: &Form) -> Response {
    let sel = match selected(st, view, &form.0) {
        Ok(s) => s,
        Err(page) => return *page,
    };
    let shown = form.get("plan").unwrap_or("").to_owned();
    let reg = st.registry.clone();
    let (s2, who) = (sel.clone(), view.user.clone());
    let done = call(move || {
        let steps = plan(&reg, &s2, who.as_deref())?;
        if !super::session::same(&fingerprint(&steps), &shown) {
            return Ok(Done::Changed(steps));
        }
        let (mut ids, mut notes) = (Vec::new(), Vec::new());
        for s in steps {
            let req = DeleteRequest { target: s.target, force: false, who: who.clone() };
            match ops::delete(&reg, &req, false) {
                Ok(r) => {
                    notes.extend(notify::deleted(&r.entry));
                    ids.push(r.entry.id);
                }
                // What went already is in the trash: say so rather than lose it.
                Err(e) if !ids.is_empty() => return Ok(Done::Deleted(ids, Some(e), notes)),
                Err(e) => return Err(e),
            }
        }
        Ok(Done::Deleted(ids, None, notes))
    })
    .await;
    let (ids, stopped, notes) = match done {
        Ok(Done::Deleted(ids, stopped, notes)) => (ids, stopped, notes),
        Ok(Done::Changed(steps)) => {
            let why = "The repository changed since this page was shown; nothing was deleted. Check what the delete takes now.";
            return confirmation(st, view, &sel, &steps, Some(why));
        }
        Err(e) => return failed(view, e),
    };
    if let Some(e) = stopped {
        let (status, message) = ApiError::from(e).status_and_message();
        let body = html! {
            p.error { "Part of the delete went through; the rest was refused: " (message) }
            p { "Trash entries made: " (ids.join(", ")) ". " a href="/ui/trash" { "Open the trash" } }
        };
        return notify::attach(
            html::respond(status, html::page(view, Nav::Repositories, "Partly deleted", body)),
            notes,
        );
    }
    let to = if sel.whole_repository() { "/ui/".to_owned() } else { html::repo_href(sel.repository.as_str()) };
    notify::attach(html::redirect(&format!("{to}{}", html::query(&[("deleted", ids.join(","))]))), notes)
}

/// The trash ids of a `deleted`/`restored` parameter.
fn ids(list: &str) -> Vec<TrashId> {
    list.split(',').filter_map(|s| s.trim().parse().ok()).take(100).collect()
}

/// The line at the top of a page after a delete (with **Undo**) or a restore.
pub async fn banner(st: &AppState, view: &View, q: &HashMap<String, String>) -> Markup {
    if let Some(list) = q.get("restored") {
        let n = ids(list).len();
        return html::flash(
            "ok",
            html! { "Restored " (n) (if n == 1 { " delete" } else { " deletes" }) " from the trash." },
        );
    }
    let Some(list) = q.get("deleted") else { return html! {} };
    let wanted = ids(list);
    let reg = st.registry.clone();
    let w = wanted.clone();
    // Only entries the viewer may see (ids are guessable), and those still in the trash.
    let caller = view.caller.clone();
    let entries: Vec<Entry> = call(move || {
        Ok(w.iter()
            .filter_map(|id| ops::trash_entry(&reg, id).ok())
            .filter(|e| caller.may_see(&e.repository))
            .collect::<Vec<_>>())
    })
    .await
    .unwrap_or_default();
    if entries.is_empty() {
        return if !wanted.is_empty() && st.registry.config().trash_retention.is_zero() {
            html::flash("warn", html! { "Deleted. The trash is off on this registry, so it cannot be undone." })
        } else {
            html! {}
        };
    }
    let shown: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let freed: u64 = entries.iter().map(|e| e.bytes_freed).sum();
    let what: Vec<String> = entries
        .iter()
        .map(|e| match e.kind.as_str() {
            "repository" => format!("repository {}", e.repository),
            _ if e.tags.is_empty() => format!("{} image(s) of {}", e.manifests.len(), e.repository),
            _ => e.tags.keys().map(|t| format!("{}:{t}", e.repository)).collect::<Vec<_>>().join(", "),
        })
        .collect();
    html::flash(
        "ok",
        html! {
            "Deleted " strong { (what.join(", ")) } ". It frees " (html::size(freed)) " once garbage collection runs after the trash lets it go. "
            @if view.is_admin() {
                form.inline method="post" action="/ui/undo" {
                    (html::csrf(view))
                    input type="hidden" name="ids" value=(shown.join(","));
                    button type="submit" { "Undo" }
                }
            } @else {
                "An admin can restore it from the trash."
            }
        },
    )
}

/// `POST /ui/undo`: restores the entries of a delete, newest first, then back to the page.
pub async fn undo(st: &AppState, view: &View, form: &Form) -> Response {
    if !view.is_admin() {
        return error_page(view, StatusCode::FORBIDDEN, "Only an admin may restore from the trash.");
    }
    let list = form.get("ids").unwrap_or("").to_owned();
    let mut wanted = ids(&list);
    wanted.reverse();
    let reg = st.registry.clone();
    let who = view.user.clone();
    let restored = call(move || {
        let (mut repos, mut notes) = (Vec::new(), Vec::new());
        for id in &wanted {
            let r = ops::restore(&reg, &RestoreTarget::Id(id.clone()), false, who.as_deref())?;
            notes.push(notify::trash_event("restore", &r.restored, false));
            repos.push(r.restored.repository);
        }
        Ok((repos, notes))
    })
    .await;
    match restored {
        Ok((repos, notes)) => {
            let to = match repos.first() {
                Some(r) => html::repo_href(r),
                None => "/ui/".to_owned(),
            };
            notify::attach(html::redirect(&format!("{to}{}", html::query(&[("restored", list)]))), notes)
        }
        Err(e) => failed(view, e),
    }
}
