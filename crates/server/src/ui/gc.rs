//! The garbage collection page (`/ui/gc`): a **Dry run** that shows what would be freed, a run
//! (**Run garbage collection**) that goes on in the background while the page follows its
//! progress, and the history of runs (the registry's own record, scheduled runs included).

use std::sync::Mutex;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Response;
use berth_registry::GcProgress;
use maud::{Markup, html};

use super::html::{self, Nav};
use super::{Form, Ui, View, call, error_page, failed};
use crate::admin::ops;
use crate::admin::wire::GcResult;
use crate::{AppState, notify};

/// The run the UI started, if any, and the last one it finished.
#[derive(Debug, Default)]
pub struct Job(Mutex<JobState>);

#[derive(Debug, Default)]
struct JobState {
    running: Option<Running>,
    last: Option<Result<GcResult, String>>,
}

#[derive(Debug, Clone)]
struct Running {
    who: Option<String>,
    started: Instant,
    phase: &'static str,
    done: usize,
    total: Option<usize>,
}

/// `GET /ui/gc` (and, with `dry`, the page with a dry run's result).
pub async fn page(st: &AppState, ui: &Ui, view: &View, dry: Option<GcResult>) -> Response {
    if !view.is_admin() {
        return error_page(view, StatusCode::FORBIDDEN, "Only an admin may collect garbage.");
    }
    let reg = st.registry.clone();
    let history = match call(move || reg.gc_history(20)).await {
        Ok(h) => h,
        Err(e) => return failed(view, e),
    };
    let (running, last) = {
        let s = ui.gc.0.lock().unwrap_or_else(|e| e.into_inner());
        (s.running.clone(), s.last.clone())
    };
    let body = html! {
        @if let Some(r) = &running {
            // Reload while it runs (a plain refresh: no script needed).
            meta http-equiv="refresh" content="1";
            div.flash.busy role="status" {
                "Garbage collection is running"
                @if let Some(w) = &r.who { " (started by " (w) ")" }
                ": " (r.phase) " " (r.done) @if let Some(t) = r.total { " of " (t) }
                ", " (r.started.elapsed().as_secs()) " s so far."
            }
        }
        @if let Some(d) = &dry {
            section aria-labelledby="dry" {
                h2 #dry { "Dry run" }
                p.result { "Garbage collection would free " strong #would-free { (html::size(d.bytes_freed)) } " (" (d.bytes_freed) " bytes)." }
                (figures(d))
            }
        }
        @if running.is_none() {
            @if let Some(l) = &last {
                @match l {
                    Ok(r) => (html::flash("ok", html! { "The last run freed " strong { (html::size(r.bytes_freed)) } " in " (format!("{:.1}", r.seconds)) " s." })),
                    Err(e) => (html::flash("error", html! { "The last run failed: " (e) })),
                }
            }
        }
        p {
            "Deleting removes links; garbage collection then frees what no tag, trash entry or recent push reaches. "
            "It runs while the registry serves and never breaks an image."
        }
        div.buttons {
            form.inline method="post" action="/ui/gc" {
                (html::csrf(view))
                input type="hidden" name="action" value="dry-run";
                button type="submit" { "Dry run" }
            }
            form.inline method="post" action="/ui/gc" {
                (html::csrf(view))
                input type="hidden" name="action" value="run";
                button.danger type="submit" disabled[running.is_some()] { "Run garbage collection" }
            }
        }
        h2 { "History" }
        @if history.is_empty() {
            (html::empty("No garbage collection has run yet."))
        } @else {
            table.list {
                thead { tr {
                    th scope="col" { "Finished" } th scope="col" { "By" } th scope="col" { "Freed" }
                    th scope="col" { "Blobs" } th scope="col" { "Images" } th scope="col" { "Repositories" } th scope="col" { "Took" }
                } }
                tbody { @for r in &history { tr {
                    td { (html::time(&r.time)) }
                    td { (r.who.clone().unwrap_or_else(|| "schedule".into())) }
                    td.num { (html::size_cell(r.bytes_freed)) }
                    td.num { (r.blobs) }
                    td.num { (r.manifests) }
                    td.num { (r.repositories) }
                    td.num { (format!("{:.1} s", r.seconds)) }
                } } }
            }
        }
    };
    html::respond(StatusCode::OK, html::page(view, Nav::Gc, "Garbage collection", body))
}

fn figures(r: &GcResult) -> Markup {
    html! {
        ul {
            li { (r.blobs) " blobs" }
            li { (r.manifests.len()) " untagged images" }
            li { (r.repositories.len()) " empty repositories" }
            li { (r.uploads) " stale uploads" }
        }
    }
}

/// `POST /ui/gc`: a dry run (answered on the page) or a run (started, then followed).
pub async fn act(st: &AppState, ui: &std::sync::Arc<Ui>, view: &View, form: &Form) -> Response {
    if !view.is_admin() {
        return error_page(view, StatusCode::FORBIDDEN, "Only an admin may collect garbage.");
    }
    let mut opts = st.gc.clone();
    opts.who = view.user.clone();
    match form.get("action") {
        Some("dry-run") => {
            opts.dry_run = true;
            let reg = st.registry.clone();
            match call(move || ops::gc(&reg, &opts, &|_| {})).await {
                Ok(r) => page(st, ui, view, Some(r)).await,
                Err(e) => failed(view, e),
            }
        }
        Some("run") => {
            {
                let mut s = ui.gc.0.lock().unwrap_or_else(|e| e.into_inner());
                if s.running.is_some() {
                    return html::redirect("/ui/gc");
                }
                s.running = Some(Running {
                    who: view.user.clone(),
                    started: Instant::now(),
                    phase: "starting",
                    done: 0,
                    total: None,
                });
            }
            let (reg, ui, notifier) = (st.registry.clone(), ui.clone(), st.notify.clone());
            tokio::task::spawn_blocking(move || {
                /// Ends the run in the page's state whatever happens to it (a panic included),
                /// so the page never waits for a run that is gone.
                struct Finish<'a>(&'a Job);
                impl Drop for Finish<'_> {
                    fn drop(&mut self) {
                        let mut s = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
                        if s.running.take().is_some() {
                            s.last = Some(Err("the run stopped unexpectedly; see the server log".into()));
                        }
                    }
                }
                let _finish = Finish(&ui.gc);
                let progress = |p: GcProgress| {
                    let mut s = ui.gc.0.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(r) = &mut s.running {
                        (r.phase, r.done, r.total) = match p {
                            GcProgress::Scan { done, total } => ("reading repositories", done, Some(total)),
                            GcProgress::Sweep { done } => ("sweeping blobs", done, None),
                        };
                    }
                };
                let result = ops::gc(&reg, &opts, &progress).map_err(|e| e.to_string());
                // The page answered long ago: the run announces itself when it ends.
                if let (Some(n), Ok(r)) = (&notifier, &result) {
                    n.record_blocking(notify::gc_event(r));
                }
                let mut s = ui.gc.0.lock().unwrap_or_else(|e| e.into_inner());
                s.running = None;
                s.last = Some(result);
            });
            html::redirect("/ui/gc")
        }
        _ => error_page(view, StatusCode::BAD_REQUEST, "Choose a dry run or a run."),
    }
}
