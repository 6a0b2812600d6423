//! Garbage collection and fsck.

use std::time::{Duration, SystemTime};

use berth_oci::{Digest, Reference};
use berth_storage::layout;
use bytes::Bytes;

use super::*;
use crate::{
    DeleteRequest, DeleteTarget, FsckOptions, GcOptions, GcProgress, RegistryError, RestoreTarget, UntaggedPolicy,
};

fn now_opts() -> GcOptions {
    GcOptions { grace: Duration::ZERO, untagged: UntaggedPolicy::OlderThan(Duration::ZERO), ..GcOptions::default() }
}

fn gc(reg: &Registry, opts: &GcOptions) -> crate::GcReport {
    reg.gc(opts, &|_| {}).unwrap()
}

/// Makes a file look `age` old, as if written long ago.
fn age(f: &Fixture, key: &berth_storage::Key, age: Duration) {
    let p = f.dir.path().join(key.as_str());
    std::fs::File::options().write(true).open(p).unwrap().set_modified(SystemTime::now() - age).unwrap();
}

fn whole(reg: &Registry, repo: &str, tag_name: &str) -> bool {
    reg.image_whole(&name(repo), &tag(tag_name)).unwrap()
}

/// Deletes one tag (into the trash).
fn delete_tag(reg: &Registry, repo: &str, t: &str) -> crate::Deleted {
    let target = DeleteTarget::Tag(name(repo), t.parse().unwrap());
    reg.delete(&DeleteRequest { target, force: false, who: None }).unwrap()
}

/// Deletes tags and purges the trash: what they held is unprotected from now on.
fn delete_tags_for_good(reg: &Registry, repo: &str, tags: &[&str]) {
    for t in tags {
        delete_tag(reg, repo, t);
    }
    reg.trash_purge(None, None).unwrap();
}

/// Runs GC and, once, right after its scan has read every repository (before any sweep), runs
/// `action`: a client acting while GC runs, at a chosen instant.
fn gc_with_action_after_scan(reg: &Registry, opts: &GcOptions, action: impl Fn() + Sync) -> crate::GcReport {
    use std::sync::atomic::{AtomicBool, Ordering};
    let acted = AtomicBool::new(false);
    let during = |p: GcProgress| {
        if let GcProgress::Scan { done, total } = p
            && done == total
            && !acted.swap(true, Ordering::SeqCst)
        {
            action();
        }
    };
    let report = reg.gc(opts, &during).unwrap();
    assert!(acted.load(Ordering::SeqCst), "GC never reported the end of its scan");
    report
}

#[test]
fn i2_gc_keeps_every_tagged_image_and_trash_content_and_frees_what_the_delete_predicted() {
    let f = fixture();
    let (_, keep_layer) = push_image(&f.reg, "gc/keep", "v1", b"kept layer");
    let (gone, _) = push_image(&f.reg, "gc/drop", "v1", b"dropped layer");
    let del = delete_tag(&f.reg, "gc/drop", "v1");
    let predicted = del.entry.bytes_freed;
    assert!(predicted > 0);

    let r = gc(&f.reg, &now_opts());
    assert_eq!((r.blobs, r.manifests.len()), (0, 0), "the trash entry holds everything: {r:?}");
    f.reg.restore(&RestoreTarget::Id(del.entry.id.clone()), false, None).unwrap();
    assert!(whole(&f.reg, "gc/drop", "v1"), "restored whole after a GC");
    assert!(whole(&f.reg, "gc/keep", "v1"));

    f.reg.record_pull(&name("gc/drop"), Some(&"v1".parse().unwrap()), &gone);
    f.reg.flush_pulls().unwrap();
    let pulls = f.dir.path().join(layout::pull_times(&name("gc/drop")).as_str());
    assert!(pulls.exists());
    let del = delete_tag(&f.reg, "gc/drop", "v1");
    f.reg.trash_purge(Some(&del.entry.id), None).unwrap();
    let r = gc(&f.reg, &now_opts());
    assert!(!pulls.exists() && !pulls.parent().unwrap().exists(), "its pull times went with the repository");
    assert_eq!(r.bytes_freed, predicted, "{r:?}");
    assert_eq!(r.manifests, vec![(name("gc/drop"), gone.clone())]);
    assert_eq!(r.repositories, vec![name("gc/drop")]);
    assert!(!f.dir.path().join(layout::blob_data(&gone).as_str()).exists());
    assert!(f.dir.path().join(layout::blob_data(&keep_layer).as_str()).exists());
    assert!(whole(&f.reg, "gc/keep", "v1"));
    assert!(!f.dir.path().join(layout::repo_dir(&name("gc/drop")).as_str()).exists(), "the empty folder went too");
    assert!(matches!(
        f.reg.manifest_get(&name("gc/drop"), &Reference::Digest(gone)),
        Err(RegistryError::NameUnknown { .. })
    ));
}

#[test]
fn i2_index_children_and_referrers_of_kept_manifests_stay_and_untagged_ones_go_by_policy() {
    let f = fixture();
    let (amd, _) = push_image(&f.reg, "gc/multi", "amd", b"amd");
    let (arm, _) = push_image(&f.reg, "gc/multi", "arm", b"arm");
    let index = index_json(&[(&amd, "amd64"), (&arm, "arm64")]);
    f.reg.manifest_put(&name("gc/multi"), &tag("both"), None, Bytes::from(index)).unwrap();
    // A signature on the index, untagged, as cosign and notation push them.
    let sig = upload(&f.reg, "gc/multi", b"signature");
    let empty = upload(&f.reg, "gc/multi", b"{}");
    let idx = f.reg.manifest_get(&name("gc/multi"), &tag("both")).unwrap().digest.clone();
    let referrer = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/x.sig","digest":"{sig}","size":9}}],"subject":{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{idx}","size":1}}}}"#
    );
    let sig_m = f
        .reg
        .manifest_put(
            &name("gc/multi"),
            &Reference::Digest(Digest::sha256_of(referrer.as_bytes())),
            None,
            Bytes::from(referrer),
        )
        .unwrap();
    // Untag the platform images: they are now reachable only as children of the index.
    delete_tags_for_good(&f.reg, "gc/multi", &["amd", "arm"]);
    // And an untagged manifest that nothing reaches.
    let (orphan, orphan_layer) = push_image(&f.reg, "gc/multi", "tmp", b"orphan");
    delete_tags_for_good(&f.reg, "gc/multi", &["tmp"]);

    let keep = GcOptions { untagged: UntaggedPolicy::Keep, ..now_opts() };
    assert!(gc(&f.reg, &keep).manifests.is_empty(), "untagged: keep");
    let young = GcOptions { untagged: UntaggedPolicy::OlderThan(Duration::from_secs(3600)), ..now_opts() };
    assert!(gc(&f.reg, &young).manifests.is_empty(), "untagged for less than an hour");
    age(&f, &layout::revision_link(&name("gc/multi"), &orphan), Duration::from_secs(7200));
    let r = gc(&f.reg, &young);
    assert_eq!(r.manifests, vec![(name("gc/multi"), orphan)], "only the old orphan goes");
    assert!(!f.dir.path().join(layout::blob_data(&orphan_layer).as_str()).exists());

    let r = gc(&f.reg, &now_opts());
    assert!(r.manifests.is_empty(), "children and the referrer of the tagged index stay: {r:?}");
    assert!(whole(&f.reg, "gc/multi", "both"));
    assert_eq!(f.reg.referrers(&name("gc/multi"), &idx, None).unwrap()[0].digest, sig_m.digest);
    // Once the index goes, its children and its signature go with it.
    delete_tags_for_good(&f.reg, "gc/multi", &["both"]);
    let r = gc(&f.reg, &now_opts());
    assert_eq!(r.manifests.len(), 4, "index, two children, signature: {r:?}");
    assert_eq!(r.repositories, vec![name("gc/multi")]);
}

#[test]
fn i2_race_a_blob_checked_during_gc_survives_and_the_push_completes() {
    let f = fixture();
    let layer = upload(&f.reg, "race/a", b"layer of a push in flight");
    let config = upload(&f.reg, "race/a", b"{}");
    for d in [&layer, &config] {
        age(&f, &layout::blob_data(d), Duration::from_secs(7200));
    }
    // The client checks its blobs exist while GC is scanning (grace 0: only the touch saves them).
    let r = gc_with_action_after_scan(&f.reg, &now_opts(), || {
        f.reg.blob_stat(&name("race/a"), &layer).unwrap();
        f.reg.blob_stat(&name("race/a"), &config).unwrap();
    });
    assert_eq!(r.blobs, 0, "{r:?}");
    let m = manifest_json((&config, 2), &[(&layer, 25)]);
    f.reg.manifest_put(&name("race/a"), &tag("v1"), None, Bytes::from(m)).unwrap();
    assert!(whole(&f.reg, "race/a", "v1"));
}

#[test]
fn i2_race_a_blob_checked_before_a_gc_without_grace_is_swept_and_the_push_is_refused_not_broken() {
    let f = fixture();
    let layer = upload(&f.reg, "race/b", b"slow push");
    let config = upload(&f.reg, "race/b", b"{}");
    f.reg.blob_stat(&name("race/b"), &layer).unwrap();
    for d in [&layer, &config] {
        age(&f, &layout::blob_data(d), Duration::from_secs(7200));
    }
    // The next GC starts after the check, with grace 0 and a clock past the touch.
    std::thread::sleep(Duration::from_millis(20));
    let r = gc(&f.reg, &GcOptions { grace: Duration::from_millis(1), ..now_opts() });
    assert_eq!(r.blobs, 2, "{r:?}");
    let m = manifest_json((&config, 2), &[(&layer, 9)]);
    let err = f.reg.manifest_put(&name("race/b"), &tag("v1"), None, Bytes::from(m.clone())).unwrap_err();
    match err {
        RegistryError::ManifestBlobUnknown { digests } => assert_eq!(digests.len(), 2),
        e => panic!("{e:?}"),
    }
    // The client pushes the blobs again and the manifest goes through.
    upload(&f.reg, "race/b", b"slow push");
    upload(&f.reg, "race/b", b"{}");
    f.reg.manifest_put(&name("race/b"), &tag("v1"), None, Bytes::from(m)).unwrap();
    assert!(whole(&f.reg, "race/b", "v1"));
}

#[test]
fn i2_grace_keeps_young_unreferenced_blobs_and_gc_purges_stale_uploads() {
    let f = fixture();
    let young = upload(&f.reg, "grace/a", b"just uploaded, manifest not yet pushed");
    let r = gc(&f.reg, &GcOptions { grace: Duration::from_secs(3600), ..now_opts() });
    assert_eq!((r.blobs, r.blobs_kept_recent), (0, 1));
    assert!(f.dir.path().join(layout::blob_data(&young).as_str()).exists());

    let fresh = f.reg.upload_start(&name("grace/a")).unwrap();
    let stale = f.reg.upload_start(&name("grace/a")).unwrap();
    std::fs::write(
        f.dir.path().join(layout::upload_started(&name("grace/a"), &stale).as_str()),
        "2020-01-01T00:00:00.000000000Z",
    )
    .unwrap();
    let r = gc(&f.reg, &GcOptions { upload_max_age: Duration::from_secs(3600), ..GcOptions::default() });
    assert_eq!(r.uploads, 1);
    assert!(f.reg.upload_status(&name("grace/a"), &fresh).is_ok());
    assert!(matches!(f.reg.upload_status(&name("grace/a"), &stale), Err(RegistryError::BlobUploadUnknown { .. })));
    let dry = gc(&f.reg, &GcOptions { dry_run: true, grace: Duration::ZERO, ..GcOptions::default() });
    assert_eq!(dry.blobs, 1, "a dry run reports the blob");
    assert!(f.dir.path().join(layout::blob_data(&young).as_str()).exists(), "and leaves it");
}

#[test]
fn moving_a_tag_starts_the_untagged_clock_of_the_manifest_it_left() {
    let f = fixture();
    let (old, _) = push_image(&f.reg, "clock/a", "latest", b"old");
    let link = layout::revision_link(&name("clock/a"), &old);
    age(&f, &link, Duration::from_secs(48 * 3600));
    push_image(&f.reg, "clock/a", "latest", b"new");
    let r = gc(&f.reg, &GcOptions { untagged: UntaggedPolicy::OlderThan(Duration::from_secs(3600)), ..now_opts() });
    assert!(r.manifests.is_empty(), "untagged a moment ago, though pushed two days ago");
}

#[test]
fn fsck_finds_damage_and_debris_and_repair_fixes_what_it_can() {
    let f = fixture();
    let (m, layer) = push_image(&f.reg, "fsck/a", "v1", b"layer");
    push_image(&f.reg, "fsck/b", "v1", b"other");
    let opts = FsckOptions { verify_content: true, repair: false, upload_max_age: Duration::from_secs(3600) };
    assert!(f.reg.fsck(&opts).unwrap().findings.is_empty());

    // A missing layer link (repairable), a dangling one (debris), corrupt content (damage).
    std::fs::remove_dir_all(f.dir.path().join(layout::layer_link_dir(&name("fsck/a"), &layer).as_str())).unwrap();
    let ghost = Digest::sha256_of(b"ghost");
    f.dir.path().join(layout::layer_link(&name("fsck/b"), &ghost).as_str()).parent().map(std::fs::create_dir_all);
    std::fs::write(f.dir.path().join(layout::layer_link(&name("fsck/b"), &ghost).as_str()), ghost.to_string()).unwrap();
    let (_, other) = (m, Digest::sha256_of(b"other"));
    std::fs::write(f.dir.path().join(layout::blob_data(&other).as_str()), b"bit rot").unwrap();
    let reg = open(f.dir.path());
    let r = reg.fsck(&opts).unwrap();
    let kinds: Vec<(&str, bool)> = r.findings.iter().map(|x| (x.kind, x.damage)).collect();
    assert!(kinds.contains(&("missing-layer-link", true)), "{kinds:?}");
    assert!(kinds.contains(&("dangling-layer-link", false)), "{kinds:?}");
    assert!(kinds.contains(&("corrupt-blob", true)), "{kinds:?}");
    assert_eq!(r.damage(), 2);

    let r = reg.fsck(&FsckOptions { repair: true, ..opts.clone() }).unwrap();
    assert_eq!(r.damage(), 0, "{:?}", r.findings);
    assert!(whole(&reg, "fsck/a", "v1"), "the layer link is back");
    assert!(f.dir.path().join(layout::quarantine(&other).as_str()).exists(), "corrupt data is set aside, not deleted");
    let after = reg.fsck(&opts).unwrap();
    let kinds: Vec<&str> = after.findings.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, ["missing-blob", "dangling-layer-link"], "fsck/b now says honestly that its layer is gone");
}

#[test]
fn i2_race_an_index_pushed_during_gc_keeps_its_old_untagged_children_whole() {
    let f = fixture();
    let (child, child_layer) = push_image(&f.reg, "race/idx", "amd", b"platform layer");
    let index = index_json(&[(&child, "amd64")]);
    f.reg.manifest_put(&name("race/idx"), &tag("both"), None, Bytes::from(index.clone())).unwrap();
    delete_tags_for_good(&f.reg, "race/idx", &["both", "amd"]);
    // The child lost its tags two days ago; its blobs are old.
    age(&f, &layout::revision_link(&name("race/idx"), &child), Duration::from_secs(48 * 3600));
    for d in [&child, &child_layer] {
        age(&f, &layout::blob_data(d), Duration::from_secs(48 * 3600));
    }
    // While GC scans, someone tags the index again (a rollback): the push must come out whole.
    let opts = GcOptions { untagged: UntaggedPolicy::OlderThan(Duration::from_secs(24 * 3600)), ..now_opts() };
    gc_with_action_after_scan(&f.reg, &opts, || {
        f.reg.manifest_put(&name("race/idx"), &tag("both"), None, Bytes::from(index.clone())).unwrap();
    });
    assert!(whole(&f.reg, "race/idx", "both"), "the index and its platform image are whole");
    assert!(f.dir.path().join(layout::blob_data(&child_layer).as_str()).exists());
}

#[test]
fn i4_race_a_restore_during_gc_comes_out_whole() {
    let f = fixture();
    let (img, layer) = push_image(&f.reg, "race/restore", "v1", b"restored layer");
    let del = f
        .reg
        .delete(&DeleteRequest {
            target: DeleteTarget::Manifest(name("race/restore"), img.clone()),
            force: false,
            who: None,
        })
        .unwrap();
    for d in [&img, &layer] {
        age(&f, &layout::blob_data(d), Duration::from_secs(7200));
    }
    gc_with_action_after_scan(&f.reg, &now_opts(), || {
        f.reg.restore(&RestoreTarget::Id(del.entry.id.clone()), false, None).unwrap();
    });
    assert!(whole(&f.reg, "race/restore", "v1"), "restored during GC, whole after it");
}

#[test]
fn an_index_is_accepted_only_when_its_platform_images_are_whole() {
    let f = fixture();
    let (child, layer) = push_image(&f.reg, "idx/whole", "amd", b"layer");
    std::fs::remove_dir_all(f.dir.path().join(layout::blob_dir(&layer).as_str())).unwrap();
    let index = index_json(&[(&child, "")]);
    let err = f.reg.manifest_put(&name("idx/whole"), &tag("both"), None, Bytes::from(index)).unwrap_err();
    match err {
        RegistryError::ManifestBlobUnknown { digests } => assert_eq!(digests, vec![layer]),
        e => panic!("{e:?}"),
    }
}

#[test]
fn i2_gc_stops_when_a_manifest_it_reaches_cannot_be_read_and_sweeps_one_it_does_not() {
    let f = fixture();
    let (child, child_layer) = push_image(&f.reg, "unread/idx", "amd", b"platform layer");
    f.reg.manifest_put(&name("unread/idx"), &tag("both"), None, Bytes::from(index_json(&[(&child, "amd64")]))).unwrap();
    delete_tags_for_good(&f.reg, "unread/idx", &["amd"]);
    let (lone, _) = push_image(&f.reg, "unread/lone", "v1", b"lone layer");
    delete_tags_for_good(&f.reg, "unread/lone", &["v1"]);
    for d in [&child, &child_layer] {
        age(&f, &layout::blob_data(d), Duration::from_secs(7200));
    }
    // Both manifests' bytes go bad on disk: what they reference is now unknown.
    for d in [&child, &lone] {
        std::fs::write(f.dir.path().join(layout::blob_data(d).as_str()), b"not a manifest any more").unwrap();
    }
    let reg = open(f.dir.path()); // no manifest cache
    let err = reg.gc(&now_opts(), &|_| {}).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Corrupt { what, .. } if what.contains(&child.to_string())),
        "the tagged index reaches the unreadable child: {err:?}"
    );
    assert!(f.dir.path().join(layout::blob_data(&child_layer).as_str()).exists(), "nothing was swept");
    // Without the index, the unreadable child is garbage like any other, and so is the lone one.
    delete_tags_for_good(&reg, "unread/idx", &["both"]);
    let r = gc(&reg, &now_opts());
    assert!(r.manifests.contains(&(name("unread/lone"), lone)), "{r:?}");
    assert!(r.manifests.contains(&(name("unread/idx"), child)), "{r:?}");
}

#[test]
fn every_run_but_a_dry_run_is_kept_in_the_history_newest_first() {
    let f = fixture();
    assert!(f.reg.gc_history(10).unwrap().is_empty());
    push_image(&f.reg, "hist/app", "v1", b"layer one");
    delete_tag(&f.reg, "hist/app", "v1");
    f.reg.trash_purge(None, None).unwrap();
    gc(&f.reg, &GcOptions { dry_run: true, ..now_opts() });
    assert!(f.reg.gc_history(10).unwrap().is_empty(), "dry runs are not recorded");
    let r = gc(&f.reg, &GcOptions { who: Some("alice".into()), ..now_opts() });
    gc(&f.reg, &now_opts());
    let h = f.reg.gc_history(10).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!((h[1].who.as_deref(), h[1].blobs, h[1].bytes_freed), (Some("alice"), r.blobs, r.bytes_freed));
    assert!(r.blobs > 0 && h[0].blobs == 0 && h[0].who.is_none(), "newest first");
    assert_eq!(f.reg.gc_history(1).unwrap().len(), 1);
}

#[test]
fn a_scheduled_run_does_nothing_when_a_run_finished_within_its_window() {
    let f = fixture();
    let (gone, _) = push_image(&f.reg, "gc/sched", "v1", b"scheduled");
    delete_tags_for_good(&f.reg, "gc/sched", &["v1"]);
    let mut opts = now_opts();
    opts.unless_ran_within = Some(Duration::from_secs(3600));
    // No run in the history yet: it runs.
    let first = gc(&f.reg, &opts);
    assert!(!first.skipped && first.manifests == vec![(name("gc/sched"), gone)], "{first:?}");
    push_image(&f.reg, "gc/sched", "v2", b"more");
    delete_tags_for_good(&f.reg, "gc/sched", &["v2"]);
    let second = gc(&f.reg, &opts);
    assert!(second.skipped && second.manifests.is_empty(), "a run finished a moment ago: {second:?}");
    assert_eq!(f.reg.gc_history(10).unwrap().len(), 1, "a skipped run is not recorded");
    opts.unless_ran_within = None;
    assert_eq!(gc(&f.reg, &opts).manifests.len(), 1, "asked for without a window, it runs");
}

#[test]
fn a_retention_run_deletes_through_the_trash_in_one_entry_and_gc_frees_what_it_reported() {
    let f = fixture();
    for (i, t) in ["a", "b", "c", "d"].iter().enumerate() {
        push_image(&f.reg, "keep/app", t, format!("layer of {t}").as_bytes());
        // Pushed 4, 3, 2 and 1 hours ago.
        age(
            &f,
            &layout::tag_current_link(&name("keep/app"), &t.parse().unwrap()),
            Duration::from_secs(3600 * (4 - i as u64)),
        );
    }
    push_image(&f.reg, "other/app", "x", b"no policy applies here");
    let policy = crate::RetentionPolicy {
        name: "ci".into(),
        repositories: vec!["keep/**".parse().unwrap()],
        delete_untagged: None,
        delete_referrers: false,
        keep_tags: vec![crate::KeepRule { most_recently_pushed: Some(2), ..Default::default() }],
    };
    let now = SystemTime::now();
    let dry = f.reg.retention(std::slice::from_ref(&policy), None, true, now).unwrap();
    assert_eq!(dry.len(), 1, "a repository no policy matches is never touched: {dry:?}");
    let dropped = |r: &crate::RetainedRepo| -> Vec<String> {
        r.tags.iter().filter(|(_, f)| !f.kept()).map(|(t, _)| t.to_string()).collect()
    };
    assert_eq!(dropped(&dry[0]), ["a", "b"]);
    assert!(dry[0].bytes_freed > 0 && dry[0].trash_id.is_none());
    assert_eq!(f.reg.tags(&name("keep/app")).unwrap().len(), 4, "a dry run changes nothing");

    let run = f.reg.retention(std::slice::from_ref(&policy), None, false, now).unwrap();
    assert_eq!((dropped(&run[0]), run[0].bytes_freed), (dropped(&dry[0]), dry[0].bytes_freed), "as the dry run said");
    let id = run[0].trash_id.clone().expect("went to the trash");
    let entry = f.reg.trash_get(&id).unwrap();
    assert_eq!((entry.tags.len(), entry.who.as_deref()), (2, Some("retention:ci")), "one entry for the run");
    assert_eq!(f.reg.tags(&name("keep/app")).unwrap().len(), 2);

    // One restore undoes the run for the repository.
    f.reg.restore(&RestoreTarget::Id(id), false, None).unwrap();
    assert_eq!(f.reg.tags(&name("keep/app")).unwrap().len(), 4);
    assert!(whole(&f.reg, "keep/app", "a"));

    // Again, for good: GC frees exactly what the run reported, and what it kept stays whole.
    // (The restore re-pointed a and b, so they count as pushed last now.)
    let run = f.reg.retention(std::slice::from_ref(&policy), None, false, SystemTime::now()).unwrap();
    assert_eq!(dropped(&run[0]).len(), 2);
    f.reg.trash_purge(run[0].trash_id.as_ref(), None).unwrap();
    let r = gc(&f.reg, &now_opts());
    assert_eq!(r.bytes_freed, run[0].bytes_freed, "{r:?}");
    for (t, fate) in &run[0].tags {
        assert_eq!(whole(&f.reg, "keep/app", t.as_str()), fate.kept(), "{t}: {fate:?}");
    }
    assert!(whole(&f.reg, "other/app", "x"));
}

#[test]
fn retention_drops_old_untagged_manifests_and_orphan_referrers_but_never_what_stays_needs() {
    let f = fixture();
    let repo = "ret/multi";
    let (amd, _) = push_image(&f.reg, repo, "amd", b"amd");
    let (arm, _) = push_image(&f.reg, repo, "arm", b"arm");
    f.reg
        .manifest_put(&name(repo), &tag("both"), None, Bytes::from(index_json(&[(&amd, "amd64"), (&arm, "arm64")])))
        .unwrap();
    let (orphan, _) = push_image(&f.reg, repo, "tmp", b"orphan");
    push_image(&f.reg, repo, "young", b"young");
    let (signed, _) = push_image(&f.reg, repo, "signed", b"signed");
    // A signature on `signed`, untagged, as cosign and notation push them.
    let sig = upload(&f.reg, repo, b"signature");
    let empty = upload(&f.reg, repo, b"{}");
    let referrer = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/x.sig","digest":"{sig}","size":9}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{signed}","size":1}}}}"#
    );
    let sig_m = Digest::sha256_of(referrer.as_bytes());
    f.reg.manifest_put(&name(repo), &Reference::Digest(sig_m.clone()), None, Bytes::from(referrer.clone())).unwrap();
    // A signature of a platform image the tagged index keeps: it stays with its subject.
    let on_amd = referrer.replace(&signed.to_string(), &amd.to_string());
    let amd_sig = Digest::sha256_of(on_amd.as_bytes());
    f.reg.manifest_put(&name(repo), &Reference::Digest(amd_sig.clone()), None, Bytes::from(on_amd)).unwrap();
    // And a young one on `signed`, which stays even once `signed` is gone: a referrer may be
    // pushed before its subject.
    let young_sig_body = referrer.replace("application/x.sig\",\"config", "application/x.sig2\",\"config");
    let young_sig = Digest::sha256_of(young_sig_body.as_bytes());
    f.reg.manifest_put(&name(repo), &Reference::Digest(young_sig.clone()), None, Bytes::from(young_sig_body)).unwrap();
    delete_tags_for_good(&f.reg, repo, &["amd", "arm", "tmp", "young"]);
    for d in [&amd, &arm, &orphan, &sig_m, &amd_sig] {
        age(&f, &layout::revision_link(&name(repo), d), Duration::from_secs(7200));
    }
    let mut policy = crate::RetentionPolicy {
        name: "0".into(),
        repositories: vec!["ret/**".parse().unwrap()],
        delete_untagged: Some(Duration::from_secs(3600)),
        delete_referrers: true,
        keep_tags: vec![],
    };
    let going = |p: &crate::RetentionPolicy| -> Vec<Digest> {
        let r = f.reg.retention(std::slice::from_ref(p), None, true, SystemTime::now()).unwrap();
        r[0].manifests.iter().map(|(d, _)| d.clone()).collect()
    };
    // The platform images are old and untagged but the tagged index needs them; the referrer's
    // subject stays; `young` is untagged for less than the hour.
    assert_eq!(going(&policy), vec![orphan.clone()]);
    // With `signed` gone, its signature is an orphan referrer.
    delete_tags_for_good(&f.reg, repo, &["signed"]);
    f.reg
        .delete(&crate::DeleteRequest {
            target: crate::DeleteTarget::Manifest(name(repo), signed.clone()),
            force: false,
            who: None,
        })
        .unwrap();
    let mut expect = vec![orphan.clone(), sig_m.clone()];
    expect.sort();
    assert_eq!(going(&policy), expect);
    policy.delete_referrers = false;
    assert_eq!(going(&policy), vec![orphan.clone()], "referrers stay unless deletereferrers");
    policy.delete_referrers = true;
    let run = f.reg.retention(std::slice::from_ref(&policy), None, false, SystemTime::now()).unwrap();
    let entry = f.reg.trash_get(run[0].trash_id.as_ref().unwrap()).unwrap();
    let mut got = entry.manifests.clone();
    got.sort();
    assert_eq!(got, expect, "one trash entry holds the run's manifests");
    assert!(whole(&f.reg, repo, "both"));
    assert!(going(&policy).is_empty());
}

/// How a retention run would name `repo:t` now.
fn seen_tag(reg: &crate::Registry, repo: &str, t: &str) -> crate::SeenTag {
    let tag: berth_oci::Tag = t.parse().unwrap();
    let digest = reg.tag_links(&name(repo)).unwrap().into_iter().find(|(x, _)| x == &tag).unwrap().1;
    let pushed = reg.tag_pushed(&name(repo), &tag).unwrap().unwrap();
    crate::SeenTag { tag, digest, pushed }
}

#[test]
fn a_retention_delete_leaves_what_changed_since_the_run_looked() {
    let f = fixture();
    let repo = "race/app";
    push_image(&f.reg, repo, "t", b"old");
    push_image(&f.reg, repo, "u", b"u");
    push_image(&f.reg, repo, "same", b"same");
    let (untagged, _) = push_image(&f.reg, repo, "tmp", b"untagged");
    delete_tags_for_good(&f.reg, repo, &["tmp"]);
    let (stale, _) = push_image(&f.reg, repo, "tmp2", b"stale");
    delete_tags_for_good(&f.reg, repo, &["tmp2"]);
    let seen = [seen_tag(&f.reg, repo, "t"), seen_tag(&f.reg, repo, "u"), seen_tag(&f.reg, repo, "same")];
    let written = f.reg.revision_times(&name(repo), &[untagged.clone(), stale.clone()]).unwrap();
    let manifests: Vec<crate::SeenManifest> = [&untagged, &stale]
        .into_iter()
        .map(|d| crate::SeenManifest { digest: d.clone(), written: written[d] })
        .collect();
    // Meanwhile: t is re-pushed to another image, `same` to the same one (it is new again),
    // the untagged manifest gets a tag, and the other is pushed again by digest.
    std::thread::sleep(Duration::from_millis(20));
    push_image(&f.reg, repo, "t", b"new");
    push_image(&f.reg, repo, "same", b"same");
    push_image(&f.reg, repo, "again", b"untagged");
    let bytes = f.reg.manifest_get(&name(repo), &Reference::Digest(stale.clone())).unwrap().bytes.clone();
    f.reg.manifest_put(&name(repo), &Reference::Digest(stale.clone()), None, bytes).unwrap();
    let target = crate::DeleteTarget::Tags(name(repo), seen.to_vec(), manifests);
    let done = f.reg.delete(&crate::DeleteRequest { target, force: false, who: None }).unwrap();
    assert_eq!(done.entry.tags.keys().map(|t| t.to_string()).collect::<Vec<_>>(), ["u"]);
    assert!(done.entry.manifests.is_empty(), "one is tagged now, the other was pushed again");
    assert!(whole(&f.reg, repo, "t") && whole(&f.reg, repo, "same") && whole(&f.reg, repo, "again"));
    // Nothing changed: nothing is done and nothing recorded.
    let target = crate::DeleteTarget::Tags(name(repo), vec![seen[0].clone()], vec![]);
    let done = f.reg.delete(&crate::DeleteRequest { target, force: false, who: None }).unwrap();
    assert!(!done.trashed && f.reg.trash_get(&done.entry.id).is_err(), "no empty trash entry");
}

#[test]
fn a_restored_tag_keeps_its_push_time_until_pushed_again() {
    let f = fixture();
    push_image(&f.reg, "times/app", "old", b"old");
    push_image(&f.reg, "times/app", "new", b"new");
    let tn = |t: &str| -> berth_oci::Tag { t.parse().unwrap() };
    let link = |t: &str| layout::tag_current_link(&name("times/app"), &tn(t));
    age(&f, &link("old"), Duration::from_secs(10 * 3600));
    age(&f, &link("new"), Duration::from_secs(3600));
    // Written behind the registry's back: start from a fresh handle.
    let reg = super::open(f.dir.path());
    let pushed = |r: &crate::Registry, t: &str| r.tag_pushed(&name("times/app"), &tn(t)).unwrap().unwrap();
    let before = pushed(&reg, "old");
    let target = crate::DeleteTarget::Tags(name("times/app"), vec![seen_tag(&reg, "times/app", "old")], vec![]);
    let done = reg.delete(&crate::DeleteRequest { target, force: false, who: None }).unwrap();
    reg.restore(&RestoreTarget::Id(done.entry.id), false, None).unwrap();
    assert_eq!(pushed(&reg, "old"), before, "restored, old is still the older tag");
    assert!(pushed(&reg, "old") < pushed(&reg, "new"));
    let fresh = super::open(f.dir.path());
    assert_eq!(pushed(&fresh, "old"), before, "and it is stored, not only remembered");
    // Pushed again, it is new.
    push_image(&reg, "times/app", "old", b"old again");
    assert!(pushed(&reg, "old") > pushed(&reg, "new"));
}
