//! The management commands: argument checks, confirmation, and printing. The work itself is
//! done by [`Admin`], against a server or a root.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use berth_oci::{Digest, RepoName, Tag};
use berth_registry::{DeleteTarget, RestoreTarget, TrashId};
use berth_server::admin::wire;

use crate::cli::{
    DuArgs, FsckArgs, GcArgs, LsArgs, RestoreArgs, RetentionArgs, RmArgs, SortBy, TrashAction, TrashArgs,
};
use crate::client::{Access, Admin};
use crate::format::{relative, short, size, table};

/// `REPO:TAG`, `REPO@DIGEST` or `REPO`.
pub fn parse_target(s: &str) -> anyhow::Result<DeleteTarget> {
    if let Some((repo, digest)) = s.split_once('@') {
        return Ok(DeleteTarget::Manifest(repo.parse()?, digest.parse::<Digest>()?));
    }
    // Repository names never contain ':', so the first one starts the tag.
    if let Some((repo, tag)) = s.split_once(':') {
        return Ok(DeleteTarget::Tag(repo.parse()?, tag.parse::<Tag>()?));
    }
    Ok(DeleteTarget::Repository(s.parse()?))
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Asks `question`; refuses without asking when stdin is not a terminal.
fn confirm(question: &str, yes: bool, what: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {what} without --yes (stdin is not a terminal, so nobody can confirm)");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") { Ok(()) } else { bail!("not confirmed; nothing was deleted") }
}

/// `berth ls [REPO]`
pub fn ls(a: LsArgs) -> anyhow::Result<()> {
    let admin = Admin::open(&a.r#where, Access::Read)?;
    match a.repo {
        None => {
            let list = admin.repositories()?;
            if a.json {
                return print_json(&list.iter().map(|r| &r.name).collect::<Vec<_>>());
            }
            let rows = list.iter().map(|r| vec![r.name.clone(), r.tags.to_string(), size(r.size)]).collect::<Vec<_>>();
            table(&["REPOSITORY", "TAGS", "SIZE"], &rows);
        }
        Some(repo) => {
            let name: RepoName = repo.parse()?;
            let tags = admin.repository(&name)?;
            if a.json {
                return print_json(&tags.iter().map(|t| &t.tag).collect::<Vec<_>>());
            }
            let rows = tags
                .iter()
                .map(|t| {
                    vec![
                        t.tag.clone(),
                        short(&t.digest),
                        size(t.size),
                        t.pushed.as_deref().map(relative).unwrap_or_default(),
                        t.pulled.as_deref().map(relative).unwrap_or_else(|| "never".to_owned()),
                    ]
                })
                .collect::<Vec<_>>();
            table(&["TAG", "DIGEST", "SIZE", "PUSHED", "PULLED"], &rows);
        }
    }
    Ok(())
}

/// `berth du [REPO]`
pub fn du(a: DuArgs) -> anyhow::Result<()> {
    let admin = Admin::open(&a.r#where, Access::Read)?;
    let name = a.repo.as_deref().map(str::parse::<RepoName>).transpose()?;
    let mut repositories = admin.usage(name.as_ref())?;
    match a.sort {
        SortBy::Freed => repositories.sort_by(|x, y| y.unique.cmp(&x.unique).then(x.repository.cmp(&y.repository))),
        SortBy::Size => repositories.sort_by(|x, y| y.total.cmp(&x.total).then(x.repository.cmp(&y.repository))),
        SortBy::Name => repositories.sort_by(|x, y| x.repository.cmp(&y.repository)),
    }
    for r in &mut repositories {
        match a.sort {
            SortBy::Freed => r.tags.sort_by(|x, y| y.unique.cmp(&x.unique).then(x.tag.cmp(&y.tag))),
            SortBy::Size => r.tags.sort_by(|x, y| y.total.cmp(&x.total).then(x.tag.cmp(&y.tag))),
            SortBy::Name => r.tags.sort_by(|x, y| x.tag.cmp(&y.tag)),
        }
    }
    if a.json {
        return print_json(&repositories);
    }
    if name.is_some() {
        for r in &repositories {
            println!(
                "{}: {} in all, {} shared, {} freed by deleting the repository",
                r.repository,
                size(r.total),
                size(r.shared),
                size(r.unique)
            );
            let rows = r
                .tags
                .iter()
                .map(|t| {
                    vec![
                        t.tag.clone(),
                        short(&t.digest),
                        size(t.total),
                        size(t.shared),
                        size(t.unique),
                        size(t.image_unique),
                    ]
                })
                .collect::<Vec<_>>();
            table(&["TAG", "DIGEST", "SIZE", "SHARED", "FREED BY TAG DELETE", "FREED BY IMAGE DELETE"], &rows);
        }
    } else {
        let rows = repositories
            .iter()
            .map(|r| vec![r.repository.clone(), size(r.total), size(r.shared), size(r.unique)])
            .collect::<Vec<_>>();
        table(&["REPOSITORY", "SIZE", "SHARED", "FREED BY DELETE"], &rows);
    }
    Ok(())
}

fn describe(e: &wire::Entry) -> String {
    match e.kind.as_str() {
        "tag" => {
            e.tags.iter().map(|(t, d)| format!("{}:{t} ({})", e.repository, short(d))).collect::<Vec<_>>().join(", ")
        }
        "manifest" => {
            let tags = e.tags.keys().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
            let m = e.manifests.iter().map(|d| short(d)).collect::<Vec<_>>().join(", ");
            if tags.is_empty() {
                format!("{}@{m} (untagged)", e.repository)
            } else {
                format!("{}@{m} (tags: {tags})", e.repository)
            }
        }
        "blob" => {
            format!("layer {} from {}", e.layers.iter().map(|d| short(d)).collect::<Vec<_>>().join(", "), e.repository)
        }
        _ => format!("repository {} ({} tags, {} manifests)", e.repository, e.tags.len(), e.manifests.len()),
    }
}

/// `berth rm TARGET` on a Berth.
pub fn rm(a: RmArgs) -> anyhow::Result<()> {
    let target = parse_target(&a.target).with_context(|| format!("bad target {:?}", a.target))?;
    let admin = Admin::open(&a.r#where, if a.dry_run { Access::Read } else { Access::Write })?;
    if let DeleteTarget::Repository(n) = &target
        && !a.dry_run
    {
        // Show what goes before asking.
        let plan = admin.delete(target.clone(), a.force, true)?;
        confirm(
            &format!(
                "Delete {}, frees {} once its trash entry expires and GC runs?",
                describe(&plan.entry),
                size(plan.entry.bytes_freed)
            ),
            a.yes,
            &format!("delete the whole repository {n}"),
        )?;
    }
    let result = admin.delete(target, a.force, a.dry_run)?;
    if a.json {
        return print_json(&result);
    }
    let e = &result.entry;
    if result.dry_run {
        println!("would delete {}", describe(e));
        println!(
            "would free {} once GC runs{}",
            size(e.bytes_freed),
            if result.trashed { " after the trash entry expires" } else { "" }
        );
    } else if result.trashed {
        println!("deleted {} into the trash as {}", describe(e), e.id);
        println!(
            "frees {} once the entry expires ({}) and GC runs; undo with: berth restore {}",
            size(e.bytes_freed),
            e.expires.as_deref().map(relative).unwrap_or_default(),
            e.id
        );
    } else {
        println!("deleted {} (final: the trash is off); frees {} once GC runs", describe(e), size(e.bytes_freed));
    }
    Ok(())
}

/// `berth trash [purge [ID]]`
pub fn trash(a: TrashArgs) -> anyhow::Result<()> {
    match a.action {
        None => {
            let admin = Admin::open(&a.r#where, Access::Read)?;
            let (retention_seconds, entries) = admin.trash()?;
            if a.json {
                return print_json(&entries);
            }
            if retention_seconds == 0 {
                println!("the trash is off (trash.retention: 0): deletes are final");
            }
            let rows = entries
                .iter()
                .map(|e| {
                    vec![
                        e.id.clone(),
                        relative(&e.time),
                        e.expires.as_deref().map(relative).unwrap_or_default(),
                        describe(e),
                        size(e.bytes_freed),
                    ]
                })
                .collect::<Vec<_>>();
            table(&["ID", "DELETED", "EXPIRES", "WHAT", "FREES"], &rows);
        }
        Some(TrashAction::Purge { id, yes }) => {
            let admin = Admin::open(&a.r#where, Access::Write)?;
            let id = id.map(|s| s.parse::<TrashId>().map_err(anyhow::Error::msg)).transpose()?;
            if id.is_none() {
                let n = admin.trash()?.1.len();
                if n == 0 {
                    println!("the trash is empty");
                    return Ok(());
                }
                confirm(&format!("Purge all {n} trash entries for good?"), yes, "purge the whole trash")?;
            }
            let purged = admin.purge(id.as_ref())?;
            if a.json {
                return print_json(&purged);
            }
            for e in &purged.purged {
                println!("purged {} ({}); {} becomes collectable", e.id, describe(e), size(e.bytes_freed));
            }
        }
    }
    Ok(())
}

/// `berth restore ID | REPO[:TAG]`
pub fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    let target = if looks_like_trash_id(&a.target) {
        RestoreTarget::Id(a.target.parse().map_err(anyhow::Error::msg)?)
    } else {
        match parse_target(&a.target)? {
            DeleteTarget::Tag(n, t) => RestoreTarget::Tag(n, t),
            DeleteTarget::Repository(n) => RestoreTarget::Repository(n),
            _ => bail!("restore takes a trash id, REPO:TAG or REPO (not REPO@DIGEST)"),
        }
    };
    let admin = Admin::open(&a.r#where, Access::Write)?;
    let result = admin.restore(&target, a.force)?;
    if a.json {
        return print_json(&result);
    }
    let e = &result.restored;
    println!("restored {} from {}", describe(e), e.id);
    for (t, d) in &result.overwritten {
        println!("overwrote {}:{t}, which pointed at {}", e.repository, short(d));
    }
    Ok(())
}

/// `berth gc`
pub fn gc(a: GcArgs) -> anyhow::Result<()> {
    let admin = Admin::open(&a.r#where, if a.dry_run { Access::Read } else { Access::Write })?;
    let tty = std::io::stderr().is_terminal() && !a.json;
    let progress = |p: berth_registry::GcProgress| {
        if tty {
            match p {
                berth_registry::GcProgress::Scan { done, total } => {
                    eprint!("\rscanning repositories {done}/{total}   ")
                }
                berth_registry::GcProgress::Sweep { done } => eprint!("\rchecking blobs {done}            "),
            }
        }
    };
    if tty && matches!(admin, Admin::Http { .. }) {
        eprintln!("collecting on the server (waits for a GC already running)...");
    }
    let r = admin.gc(a.dry_run, a.list_storage, a.grace.as_deref(), a.untagged.as_deref(), &progress)?;
    if tty {
        eprintln!();
    }
    if a.json {
        return print_json(&r);
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} blobs ({}), {} untagged manifests, {} empty repositories ({} layer links), {} stale uploads in {:.1} s",
        r.blobs,
        size(r.bytes_freed),
        r.manifests.len(),
        r.repositories.len(),
        r.layer_links,
        r.uploads,
        r.seconds
    );
    println!(
        "{} blobs in use; {} unreferenced blobs kept as recent or in use by a push",
        r.blobs_in_use, r.blobs_kept_recent
    );
    if let Some(n) = r.store_requests {
        println!("{n} requests to the object store");
    }
    for m in &r.manifests {
        println!("  manifest {}@{}", m.repository, short(&m.digest));
    }
    for repo in &r.repositories {
        println!("  repository {repo}");
    }
    Ok(())
}

/// `berth retention`
pub fn retention(a: RetentionArgs) -> anyhow::Result<()> {
    let only = a.repository.as_deref().map(|p| p.parse::<berth_oci::RepoPattern>()).transpose()?;
    let admin = Admin::open(&a.r#where, if a.dry_run { Access::Read } else { Access::Write })?;
    let r = admin.retention(only.as_ref(), a.dry_run)?;
    let failed = r.repositories.iter().filter(|r| r.error.is_some()).count();
    if a.json {
        print_json(&r)?;
    } else {
        print_retention(&r);
    }
    if failed > 0 {
        bail!("retention failed in {failed} repositories; the others went through");
    }
    Ok(())
}

fn print_retention(r: &wire::RetentionResult) {
    let verb = if r.dry_run { "would go" } else { "went" };
    let (mut tags, mut manifests) = (0, 0);
    for repo in &r.repositories {
        if let Some(e) = &repo.error {
            println!("{} (policy {}): failed: {e}", repo.repository, repo.policy);
            continue;
        }
        let dropped = repo.tags.iter().filter(|t| !t.kept).count();
        tags += dropped;
        manifests += repo.manifests.len();
        println!(
            "{} (policy {}): {dropped} of {} tags and {} untagged manifests {verb}, freeing {}{}",
            repo.repository,
            repo.policy,
            repo.tags.len(),
            repo.manifests.len(),
            size(repo.bytes_freed),
            repo.trash_id.as_ref().map(|id| format!(" (trash {id})")).unwrap_or_default()
        );
        let width = repo.tags.iter().map(|t| t.tag.len()).max().unwrap_or(0);
        for t in &repo.tags {
            println!("  {:<width$}  {:<4}  {}", t.tag, if t.kept { "keep" } else { "drop" }, t.reason);
        }
        for m in &repo.manifests {
            println!("  {}  drop  {}", short(&m.digest), m.reason);
        }
    }
    println!(
        "{}{tags} tags and {manifests} untagged manifests in {} repositories {verb}, freeing {}",
        if r.dry_run { "dry run: " } else { "" },
        r.repositories.len(),
        size(r.bytes_freed)
    );
}

/// `berth fsck`
pub fn fsck(a: FsckArgs) -> anyhow::Result<()> {
    let admin = Admin::open(&a.r#where, if a.repair { Access::Write } else { Access::Read })?;
    let opts = berth_registry::FsckOptions {
        verify_content: a.verify_content,
        repair: a.repair,
        upload_max_age: admin.gc_defaults().upload_max_age,
    };
    let r = admin.fsck(&opts)?;
    if a.json {
        print_json(&r)?;
    } else {
        // Damage line by line; debris (a large GC leaves thousands of harmless links) as one
        // line per kind unless --verbose.
        for f in r.findings.iter().filter(|f| f.damage || a.verbose) {
            let what = if f.damage { "DAMAGE" } else { "debris" };
            let fixed = if f.repaired { " (repaired)" } else { "" };
            println!("{what:6}  {}: {}{fixed}", f.kind, f.message);
        }
        if !a.verbose {
            let mut kinds: std::collections::BTreeMap<&str, (usize, u64, usize)> = Default::default();
            for f in r.findings.iter().filter(|f| !f.damage) {
                let e = kinds.entry(f.kind.as_str()).or_default();
                e.0 += 1;
                e.1 += f.bytes;
                e.2 += usize::from(f.repaired);
            }
            for (kind, (n, bytes, repaired)) in kinds {
                let fixed = if repaired == n { " (repaired)" } else { "" };
                match r.findings.iter().find(|f| f.kind == kind) {
                    // One of a kind: what it says is worth more than a count.
                    Some(f) if n == 1 && bytes == 0 => println!("debris  {kind}: {}{fixed}", f.message),
                    _ => println!("debris  {kind}: {n} ({}){fixed}", size(bytes)),
                }
            }
        }
        let debris = r.findings.iter().filter(|f| !f.damage && !f.repaired).count();
        println!(
            "checked {} repositories, {} manifests{}: {} damage, {} debris{}",
            r.repositories,
            r.manifests,
            if a.verify_content { format!(", {} blobs hashed", r.blobs_verified) } else { String::new() },
            r.damage,
            debris,
            if debris > 0 && !a.repair { " (--repair cleans it up; --verbose lists it)" } else { "" }
        );
    }
    if r.damage > 0 {
        bail!("{} damaged {} found", r.damage, if r.damage == 1 { "item" } else { "items" });
    }
    Ok(())
}

/// Trash ids are `<yyyymmdd>T<hhmmss>Z-<hex>`; a one-component repository name never is.
fn looks_like_trash_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 17 && b[8] == b'T' && b[15] == b'Z' && b[16] == b'-' && b[..8].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert!(matches!(parse_target("a/b:v1"), Ok(DeleteTarget::Tag(_, _))));
        assert!(matches!(
            parse_target("a/b@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            Ok(DeleteTarget::Manifest(_, _))
        ));
        assert!(matches!(parse_target("a/b"), Ok(DeleteTarget::Repository(_))));
        assert!(parse_target("A:v1").is_err());
        assert!(parse_target("a@sha256:12").is_err());
        assert!(looks_like_trash_id("20261123T150102Z-0a1b2c3d"));
        assert!(!looks_like_trash_id("myrepo"));
    }
}
