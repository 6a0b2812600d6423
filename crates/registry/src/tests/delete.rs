//! Deleting, the trash, restore and accounting.

use std::time::{Duration, SystemTime};

use berth_oci::{Digest, Reference, Tag};
use berth_storage::layout;
use bytes::Bytes;

use super::*;
use crate::{DeleteKind, DeleteRequest, DeleteTarget, RegistryError, RestoreTarget};

/// Pushes an image whose layers are `layers` under `tag`, with a config of its own.
fn image(reg: &Registry, repo: &str, tag_name: &str, layers: &[&[u8]]) -> Pushed {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","for":"{repo}:{tag_name}"}}"#);
    super::image(reg, repo, tag_name, config.as_bytes(), layers)
}

fn retag(reg: &Registry, repo: &str, d: &Digest, tag_name: &str) {
    let bytes = reg.manifest_get(&name(repo), &Reference::Digest(d.clone())).unwrap().bytes.clone();
    reg.manifest_put(&name(repo), &tag(tag_name), None, bytes).unwrap();
}

fn del(reg: &Registry, target: DeleteTarget) -> crate::Result<crate::Deleted> {
    reg.delete(&DeleteRequest { target, force: false, who: Some("test".into()) })
}

fn t(s: &str) -> Tag {
    s.parse().unwrap()
}

fn resolves(reg: &Registry, repo: &str, tag_name: &str) -> Option<Digest> {
    reg.manifest_get(&name(repo), &tag(tag_name)).ok().map(|m| m.digest.clone())
}

#[test]
fn problem3_tag_delete_keeps_sibling_tags() {
    let f = fixture();
    let img = image(&f.reg, "d/app", "v1", &[b"layer one"]);
    retag(&f.reg, "d/app", &img.digest, "latest");
    let done = del(&f.reg, DeleteTarget::Tag(name("d/app"), t("v1"))).unwrap();
    assert_eq!(done.entry.kind, DeleteKind::Tag);
    assert_eq!(done.entry.tags.len(), 1);
    assert_eq!(resolves(&f.reg, "d/app", "v1"), None);
    assert_eq!(resolves(&f.reg, "d/app", "latest"), Some(img.digest.clone()));
    assert_eq!(done.entry.bytes_freed, 0, "latest still holds everything");
}

#[test]
fn i4_manifest_delete_takes_every_tag_and_restore_brings_exactly_them_back() {
    let f = fixture();
    let img = image(&f.reg, "d/app", "v1", &[b"layer one"]);
    retag(&f.reg, "d/app", &img.digest, "latest");
    let other = image(&f.reg, "d/app", "v2", &[b"another"]);
    let done = del(&f.reg, DeleteTarget::Manifest(name("d/app"), img.digest.clone())).unwrap();
    assert_eq!(done.entry.tags.keys().map(Tag::as_str).collect::<Vec<_>>(), ["latest", "v1"]);
    assert_eq!(done.entry.bytes_freed, img.total, "nothing else reaches it");
    assert!(matches!(
        f.reg.manifest_get(&name("d/app"), &Reference::Digest(img.digest.clone())),
        Err(RegistryError::ManifestUnknown { .. })
    ));
    assert_eq!(f.reg.tags_list(&name("d/app"), None, None).unwrap().items, ["v2"]);

    let restored = f.reg.restore(&RestoreTarget::Tag(name("d/app"), t("latest")), false, None).unwrap();
    assert_eq!(restored.entry.id, done.entry.id);
    assert_eq!(f.reg.tags_list(&name("d/app"), None, None).unwrap().items, ["latest", "v1", "v2"]);
    assert_eq!(resolves(&f.reg, "d/app", "v1"), Some(img.digest.clone()));
    assert_eq!(resolves(&f.reg, "d/app", "v2"), Some(other.digest));
    assert!(f.reg.trash_list().unwrap().is_empty(), "the entry is consumed");
}

#[test]
fn i4_restore_refuses_when_content_is_gone_and_changes_nothing() {
    let f = fixture();
    image(&f.reg, "d/gone", "v1", &[b"precious layer"]);
    let done = del(&f.reg, DeleteTarget::Tag(name("d/gone"), t("v1"))).unwrap();
    let layer = Digest::sha256_of(b"precious layer");
    std::fs::remove_file(f.dir.path().join(layout::blob_data(&layer).as_str())).unwrap();
    let err = f.reg.restore(&RestoreTarget::Id(done.entry.id.clone()), false, None).unwrap_err();
    match &err {
        RegistryError::RestoreIncomplete { missing, .. } => assert_eq!(missing, &vec![layer.clone()]),
        e => panic!("{e:?}"),
    }
    assert!(err.to_string().contains(&layer.to_string()), "{err}");
    assert_eq!(resolves(&f.reg, "d/gone", "v1"), None, "nothing was restored");
    assert_eq!(f.reg.trash_list().unwrap().len(), 1, "the entry stays");
}

#[test]
fn restore_refuses_to_overwrite_a_repushed_tag_unless_forced() {
    let f = fixture();
    let old = image(&f.reg, "d/re", "v1", &[b"old"]);
    let done = del(&f.reg, DeleteTarget::Tag(name("d/re"), t("v1"))).unwrap();
    let new = image(&f.reg, "d/re", "v1", &[b"new"]);
    let err = f.reg.restore(&RestoreTarget::Id(done.entry.id.clone()), false, None).unwrap_err();
    assert!(matches!(err, RegistryError::Conflict { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("d/re:v1") && msg.contains(&new.digest.to_string()) && msg.contains(&old.digest.to_string()),
        "{msg}"
    );
    assert_eq!(resolves(&f.reg, "d/re", "v1"), Some(new.digest.clone()));
    let r = f.reg.restore(&RestoreTarget::Id(done.entry.id), true, None).unwrap();
    assert_eq!(r.overwritten.get(&t("v1")), Some(&new.digest));
    assert_eq!(resolves(&f.reg, "d/re", "v1"), Some(old.digest));
}

#[test]
fn platform_image_of_a_tagged_index_cannot_be_deleted_unless_forced() {
    let f = fixture();
    let amd = image(&f.reg, "d/multi", "amd", &[b"amd layer"]);
    let arm = image(&f.reg, "d/multi", "arm", &[b"arm layer"]);
    let index = index_json(&[(&amd.digest, "amd64"), (&arm.digest, "arm64")]);
    let idx = f.reg.manifest_put(&name("d/multi"), &tag("both"), None, Bytes::from(index)).unwrap();
    let err = del(&f.reg, DeleteTarget::Manifest(name("d/multi"), arm.digest.clone())).unwrap_err();
    assert!(matches!(err, RegistryError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains(&idx.digest.to_string()) && err.to_string().contains("d/multi:both"), "{err}");
    assert!(f.reg.manifest_get(&name("d/multi"), &Reference::Digest(arm.digest.clone())).is_ok(), "still there");
    // A tag on the child is just a tag: deleting it is fine.
    del(&f.reg, DeleteTarget::Tag(name("d/multi"), t("arm"))).unwrap();
    f.reg
        .delete(&DeleteRequest {
            target: DeleteTarget::Manifest(name("d/multi"), arm.digest.clone()),
            force: true,
            who: None,
        })
        .unwrap();
}

#[test]
fn blob_delete_is_refused_while_a_manifest_in_the_repository_uses_it() {
    let f = fixture();
    image(&f.reg, "d/blob", "v1", &[b"used layer"]);
    let used = Digest::sha256_of(b"used layer");
    let err = del(&f.reg, DeleteTarget::Blob(name("d/blob"), used.clone())).unwrap_err();
    assert!(matches!(err, RegistryError::InUse { .. }), "{err:?}");
    let stray = Digest::sha256_of(b"never used");
    f.reg.blob_put(&name("d/blob"), &stray, &mut body(&[b"never used"])).unwrap();
    let done = del(&f.reg, DeleteTarget::Blob(name("d/blob"), stray.clone())).unwrap();
    assert_eq!(done.entry.layers, vec![stray.clone()]);
    assert_eq!(done.entry.bytes_freed, 10);
    assert!(matches!(f.reg.blob_stat(&name("d/blob"), &stray), Err(RegistryError::BlobUnknown { .. })));
    assert!(f.dir.path().join(layout::blob_data(&stray).as_str()).is_file(), "data is left to GC");
}

#[test]
fn problem4_repository_delete_leaves_the_catalog_and_restore_brings_it_back() {
    let f = fixture();
    image(&f.reg, "team/a", "v1", &[b"a"]);
    let b = image(&f.reg, "team/b", "v1", &[b"b"]);
    retag(&f.reg, "team/b", &b.digest, "v2");
    assert_eq!(f.reg.catalog(100, None).unwrap().items, ["team/a", "team/b"]);
    let done = del(&f.reg, DeleteTarget::Repository(name("team/b"))).unwrap();
    assert_eq!(done.entry.tags.len(), 2);
    assert_eq!(f.reg.catalog(100, None).unwrap().items, ["team/a"]);
    assert_eq!(open(f.dir.path()).catalog(100, None).unwrap().items, ["team/a"], "also after a restart");
    assert!(matches!(f.reg.tags_list(&name("team/b"), None, None), Err(RegistryError::NameUnknown { .. })));
    assert!(!f.dir.path().join(layout::repo_dir(&name("team/b")).as_str()).exists());

    f.reg.restore(&RestoreTarget::Repository(name("team/b")), false, None).unwrap();
    assert_eq!(f.reg.catalog(100, None).unwrap().items, ["team/a", "team/b"]);
    assert_eq!(f.reg.tags_list(&name("team/b"), None, None).unwrap().items, ["v1", "v2"]);
    let layer = Digest::sha256_of(b"b");
    assert_eq!(f.reg.blob_stat(&name("team/b"), &layer).unwrap(), 1, "layer links are back, so pulls work");

    // A lone repository's parent folder goes with it.
    del(&f.reg, DeleteTarget::Repository(name("team/a"))).unwrap();
    del(&f.reg, DeleteTarget::Repository(name("team/b"))).unwrap();
    assert!(!f.dir.path().join("docker/registry/v2/repositories/team").exists());
}

#[test]
fn trash_expiry_purges_entries_and_the_audit_log_records_each_step() {
    let f = fixture();
    let reg = open_with(f.dir.path(), Config { trash_retention: Duration::from_secs(60), ..Config::default() });
    image(&reg, "d/exp", "v1", &[b"x"]);
    image(&reg, "d/exp", "v2", &[b"y"]);
    let first = del(&reg, DeleteTarget::Tag(name("d/exp"), t("v1"))).unwrap();
    let second = del(&reg, DeleteTarget::Tag(name("d/exp"), t("v2"))).unwrap();
    assert!(reg.trash_expire(SystemTime::now()).unwrap().is_empty(), "nothing is old enough yet");
    reg.restore(&RestoreTarget::Id(second.entry.id.clone()), false, None).unwrap();
    let later = SystemTime::now() + Duration::from_secs(61);
    let expired = reg.trash_expire(later).unwrap();
    assert_eq!(expired.iter().map(|e| &e.id).collect::<Vec<_>>(), [&first.entry.id]);
    assert!(reg.trash_list().unwrap().is_empty());
    assert!(matches!(
        reg.restore(&RestoreTarget::Id(first.entry.id.clone()), false, None),
        Err(RegistryError::TrashUnknown { .. })
    ));

    let audit = std::fs::read_to_string(f.dir.path().join(layout::audit_log().as_str())).unwrap();
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<(&str, &str)> =
        lines.iter().map(|l| (l["action"].as_str().unwrap(), l["id"].as_str().unwrap())).collect();
    let (a, b) = (first.entry.id.as_str(), second.entry.id.as_str());
    assert_eq!(steps, [("delete", a), ("delete", b), ("restore", b), ("expire", a)]);
    assert_eq!(lines[0]["who"], "test");
    assert_eq!(lines[0]["tags"]["v1"], first.entry.tags[&t("v1")].to_string());
}

#[test]
fn with_retention_zero_deletes_are_final_and_leave_no_entry() {
    let f = fixture();
    let reg = open_with(f.dir.path(), Config { trash_retention: Duration::ZERO, ..Config::default() });
    image(&reg, "d/final", "v1", &[b"x"]);
    let done = del(&reg, DeleteTarget::Tag(name("d/final"), t("v1"))).unwrap();
    assert!(!done.trashed);
    assert!(reg.trash_list().unwrap().is_empty());
    let audit = std::fs::read_to_string(f.dir.path().join(layout::audit_log().as_str())).unwrap();
    assert!(audit.contains(r#""trashed":false"#), "{audit}");
}

#[test]
fn usage_counts_shared_and_unique_bytes() {
    let f = fixture();
    let shared: &[u8] = &[7u8; 1000];
    let a = image(&f.reg, "u/a", "v1", &[&[1u8; 300], shared]);
    let b = image(&f.reg, "u/b", "v1", &[&[2u8; 500], shared]);
    retag(&f.reg, "u/b", &b.digest, "latest");
    let usage = f.reg.usage().unwrap();
    let ua = usage.iter().find(|u| u.name.as_str() == "u/a").unwrap();
    assert_eq!(ua.usage.total, a.total);
    assert_eq!(ua.usage.shared, 1000);
    assert_eq!(ua.usage.unique, a.manifest_and_config + 300);
    let ub = usage.iter().find(|u| u.name.as_str() == "u/b").unwrap();
    assert_eq!(ub.usage.unique, b.manifest_and_config + 500);
    for tu in &ub.tags {
        assert_eq!(tu.usage.unique, 0, "{}: its sibling tag keeps everything", tu.tag);
        assert_eq!(
            tu.image_unique,
            b.manifest_and_config + 500,
            "deleting the image frees what is not shared with u/a"
        );
    }
    // The delete prices itself the same way, and a dry run changes nothing.
    let plan = f
        .reg
        .delete_plan(&DeleteRequest { target: DeleteTarget::Repository(name("u/a")), force: false, who: None })
        .unwrap();
    assert_eq!(plan.bytes_freed, ua.usage.unique);
    assert_eq!(f.reg.catalog(10, None).unwrap().items, ["u/a", "u/b"]);
    assert!(f.reg.trash_list().unwrap().is_empty());
    // Once u/b is gone too, the shared layer belongs to u/a alone.
    del(&f.reg, DeleteTarget::Repository(name("u/b"))).unwrap();
    let ua = f.reg.usage().unwrap().into_iter().find(|u| u.name.as_str() == "u/a").unwrap();
    assert_eq!(ua.usage.unique, a.manifest_and_config + 300, "the trash entry of u/b still holds the shared layer");
    f.reg.trash_purge(None, None).unwrap();
    let ua = f.reg.usage().unwrap().into_iter().find(|u| u.name.as_str() == "u/a").unwrap();
    assert_eq!(ua.usage.unique, a.total);
}

#[test]
fn the_graph_kept_in_memory_matches_a_fresh_scan_after_every_kind_of_change() {
    let f = fixture();
    let check = |when: &str| {
        let kept = f.reg.with_graph(|g, _| (g.by_digest(), g.trash.keys().cloned().collect::<Vec<_>>())).unwrap();
        let opts = crate::scan::ScanOptions { sizes: true, listing: false };
        let fresh = open(f.dir.path()).scan(opts, &|_, _| {}).unwrap().graph;
        assert_eq!(kept.0, fresh.by_digest(), "repositories differ after {when}");
        assert_eq!(kept.1, fresh.trash.keys().cloned().collect::<Vec<_>>(), "trash differs after {when}");
    };
    f.reg.usage().unwrap(); // load it first, so every later change is applied incrementally
    let a = image(&f.reg, "g/a", "v1", &[b"1", b"2"]);
    check("a push");
    retag(&f.reg, "g/a", &a.digest, "v2");
    check("a retag");
    let d1 = del(&f.reg, DeleteTarget::Tag(name("g/a"), t("v1"))).unwrap();
    check("a tag delete");
    let stray = Digest::sha256_of(b"stray");
    f.reg.blob_put(&name("g/a"), &stray, &mut body(&[b"stray"])).unwrap();
    check("a blob upload");
    f.reg.blob_mount(&name("g/b"), &name("g/a"), &stray).unwrap();
    check("a mount");
    del(&f.reg, DeleteTarget::Blob(name("g/b"), stray)).unwrap();
    check("a blob delete");
    del(&f.reg, DeleteTarget::Manifest(name("g/a"), a.digest.clone())).unwrap();
    check("a manifest delete");
    f.reg.restore(&RestoreTarget::Id(d1.entry.id), false, None).unwrap();
    check("a restore");
    del(&f.reg, DeleteTarget::Repository(name("g/a"))).unwrap();
    check("a repository delete");
    f.reg.trash_purge(None, None).unwrap();
    check("a purge");
}

#[test]
fn deleting_unknown_things_says_what_is_unknown() {
    let f = fixture();
    image(&f.reg, "d/x", "v1", &[b"x"]);
    let missing = Digest::sha256_of(b"missing");
    type Expect = fn(&RegistryError) -> bool;
    let cases: Vec<(DeleteTarget, Expect)> = vec![
        (DeleteTarget::Tag(name("d/x"), t("nope")), |e| matches!(e, RegistryError::ManifestUnknown { .. })),
        (DeleteTarget::Tag(name("d/none"), t("v1")), |e| matches!(e, RegistryError::NameUnknown { .. })),
        (DeleteTarget::Manifest(name("d/x"), missing.clone()), |e| matches!(e, RegistryError::ManifestUnknown { .. })),
        (DeleteTarget::Blob(name("d/x"), missing.clone()), |e| matches!(e, RegistryError::BlobUnknown { .. })),
        (DeleteTarget::Repository(name("d/none")), |e| matches!(e, RegistryError::NameUnknown { .. })),
    ];
    for (target, ok) in cases {
        let e = del(&f.reg, target.clone()).unwrap_err();
        assert!(ok(&e), "{target:?}: {e:?}");
    }
    assert!(f.reg.trash_list().unwrap().is_empty());
}

/// Review finding: bytes that are there but not a manifest Berth parses (an old root's oddity)
/// are present, and a restore brings their tag back.
#[test]
fn i4_a_manifest_berth_cannot_parse_is_restored_as_it_is() {
    let f = fixture();
    let n = name("odd/app");
    let bytes = br#"{"schemaVersion":99,"odd":true}"#;
    let d = Digest::sha256_of(bytes);
    let at = |k: berth_storage::Key| f.dir.path().join(k.as_str());
    let write = |k: berth_storage::Key, data: &[u8]| {
        std::fs::create_dir_all(at(k.clone()).parent().unwrap()).unwrap();
        std::fs::write(at(k), data).unwrap();
    };
    write(layout::blob_data(&d), bytes);
    write(layout::revision_link(&n, &d), d.to_string().as_bytes());
    write(layout::tag_current_link(&n, &t("v1")), d.to_string().as_bytes());
    let reg = open(f.dir.path());
    let gone = del(&reg, DeleteTarget::Tag(n.clone(), t("v1"))).unwrap();
    assert!(reg.missing_content(&gone.entry).unwrap().is_empty(), "its bytes are there");
    reg.restore(&RestoreTarget::Id(gone.entry.id), false, None).unwrap();
    assert_eq!(resolves(&reg, "odd/app", "v1"), Some(d));
}

/// The audit log is read backwards a chunk at a time: paging through a log of many chunks
/// returns every line once, newest first, and a torn last line is skipped.
#[test]
fn the_audit_log_pages_backwards_across_chunks() {
    let f = fixture();
    let mut log = Vec::new();
    let mut starts = Vec::new();
    for i in 0..1500u64 {
        let entry = crate::TrashEntry {
            id: format!("20261123T150102Z-{i:08x}").parse().unwrap(),
            time: SystemTime::UNIX_EPOCH,
            who: Some(format!("user{}", i % 3)),
            kind: crate::DeleteKind::Tag,
            repository: name(&format!("audit/r{}", i % 5)),
            tags: [(t("v1"), Digest::sha256_of(&i.to_le_bytes()))].into_iter().collect(),
            manifests: vec![],
            layers: vec![],
            bytes_freed: i,
            pushed: Default::default(),
        };
        starts.push(log.len() as u64);
        let r = crate::AuditRecord::of(crate::AuditAction::Delete, &entry, false, Some(true), SystemTime::UNIX_EPOCH);
        log.extend(crate::journal::encode_audit(&r));
    }
    log.extend_from_slice(br#"{"version":1,"time":"2026-11-2"#); // torn by a crash
    let path = f.dir.path().join(layout::audit_log().as_str());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &log).unwrap();
    assert!(log.len() > 5 * (64 << 10), "spans several chunks: {}", log.len());

    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = f.reg.audit_log(before, 100, |_| true).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 100);
        before = Some(page.last().unwrap().0);
        seen.extend(page.into_iter().map(|(offset, r)| (offset, r.bytes_freed)));
    }
    let want: Vec<(u64, u64)> = starts.iter().enumerate().rev().map(|(i, &o)| (o, i as u64)).collect();
    assert_eq!(seen, want, "every line once, newest first, at its offset");
    // Filters apply while reading, and a page stops at n.
    let mine =
        f.reg.audit_log(None, 7, |r| r.who.as_deref() == Some("user1") && r.repository.as_str() == "audit/r2").unwrap();
    assert_eq!(mine.iter().map(|(_, r)| r.bytes_freed).collect::<Vec<_>>(), [1492, 1477, 1462, 1447, 1432, 1417, 1402]);
    assert!(f.reg.audit_log(None, 0, |_| true).unwrap().is_empty());
}

#[test]
fn push_times_are_remembered_and_follow_every_change_of_a_tag() {
    let f = fixture();
    let a = image(&f.reg, "d/times", "v1", &[b"times a"]);
    image(&f.reg, "d/times", "v2", &[b"times b"]);
    let first = f.reg.push_times(&name("d/times")).unwrap();
    assert_eq!(first.keys().map(Tag::as_str).collect::<Vec<_>>(), ["v1", "v2"]);
    assert!(std::sync::Arc::ptr_eq(&first, &f.reg.push_times(&name("d/times")).unwrap()), "read once, then kept");

    // A re-push moves the tag's time; a delete takes it; a restore brings it back.
    std::thread::sleep(Duration::from_millis(20));
    retag(&f.reg, "d/times", &a.digest, "v2");
    let moved = f.reg.push_times(&name("d/times")).unwrap();
    assert!(moved[&t("v2")] > first[&t("v2")], "{moved:?} after {first:?}");
    assert_eq!(f.reg.repository_pushed(&name("d/times")).unwrap(), Some(moved[&t("v2")]));
    let done = del(&f.reg, DeleteTarget::Tag(name("d/times"), t("v2"))).unwrap();
    assert_eq!(f.reg.push_times(&name("d/times")).unwrap().keys().map(Tag::as_str).collect::<Vec<_>>(), ["v1"]);
    assert_eq!(f.reg.tag_pushed(&name("d/times"), &t("v2")).unwrap(), None);
    f.reg.restore(&RestoreTarget::Id(done.entry.id), false, None).unwrap();
    assert!(f.reg.tag_pushed(&name("d/times"), &t("v2")).unwrap().is_some(), "restored");
    del(&f.reg, DeleteTarget::Repository(name("d/times"))).unwrap();
    assert!(f.reg.push_times(&name("d/times")).unwrap().is_empty());
    assert_eq!(f.reg.repository_pushed(&name("d/times")).unwrap(), None);
}

/// A pulled tag's resolution is remembered; moving, deleting, restoring and deleting the
/// repository each make the next pull see the change.
#[test]
fn a_remembered_tag_follows_every_change_of_it() {
    let f = fixture();
    let a = image(&f.reg, "cache/app", "v1", &[b"one"]);
    let b = image(&f.reg, "cache/app", "other", &[b"two"]);
    assert_eq!(resolves(&f.reg, "cache/app", "v1"), Some(a.digest.clone()));
    assert_eq!(resolves(&f.reg, "cache/app", "v1"), Some(a.digest.clone()), "now remembered");
    retag(&f.reg, "cache/app", &b.digest, "v1");
    assert_eq!(resolves(&f.reg, "cache/app", "v1"), Some(b.digest.clone()), "moved");
    del(&f.reg, DeleteTarget::Tag(name("cache/app"), t("v1"))).unwrap();
    assert_eq!(resolves(&f.reg, "cache/app", "v1"), None, "deleted");
    f.reg.restore(&RestoreTarget::Tag(name("cache/app"), t("v1")), false, Some("test")).unwrap();
    assert_eq!(resolves(&f.reg, "cache/app", "v1"), Some(b.digest.clone()), "restored");
    del(&f.reg, DeleteTarget::Repository(name("cache/app"))).unwrap();
    assert_eq!(resolves(&f.reg, "cache/app", "v1"), None, "repository deleted");
    assert_eq!(resolves(&f.reg, "cache/app", "other"), None);
}
