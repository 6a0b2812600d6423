//! The core: uploads, manifests, tags, listings and referrers, and what each refuses.

use berth_oci::{Algorithm, Digest, Reference, Tag};
use berth_storage::layout;
use bytes::Bytes;

use super::*;
use crate::RegistryError;

#[test]
fn i5_chunked_upload_survives_a_restart_between_chunks() {
    let f = fixture();
    let n = name("up/restart");
    let id = f.reg.upload_start(&n).unwrap();
    assert_eq!(f.reg.upload_append(&n, &id, Some(0), &mut body(&[b"hello "])).unwrap(), 6);
    // A new process has no in-memory hash state; the file is the truth.
    let again = open(f.dir.path());
    assert_eq!(again.upload_status(&n, &id).unwrap(), 6);
    assert_eq!(again.upload_append(&n, &id, Some(6), &mut body(&[b"world"])).unwrap(), 11);
    let d = Digest::sha256_of(b"hello world");
    let info = again.upload_complete(&n, &id, &d, None, &mut body(&[])).unwrap();
    assert_eq!(info.size, 11);
    assert_eq!(again.blob_stat(&n, &d).unwrap(), 11);
    assert!(matches!(again.upload_status(&n, &id), Err(RegistryError::BlobUploadUnknown { .. })));
}

#[test]
fn i3_digest_mismatch_discards_the_upload_and_stores_nothing() {
    let f = fixture();
    let n = name("up/mismatch");
    let claimed = Digest::sha256_of(b"what the client claims");
    let err = f.reg.blob_put(&n, &claimed, &mut body(&[b"what it sent"])).unwrap_err();
    assert!(matches!(err, RegistryError::DigestInvalid { .. }), "{err:?}");
    assert!(matches!(f.reg.blob_stat(&n, &claimed), Err(RegistryError::BlobUnknown { .. })));
    let uploads = f.dir.path().join(layout::uploads_dir(&n).as_str());
    assert_eq!(std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0), 0, "no upload left behind");
}

#[test]
fn sha512_uploads_are_verified_with_sha512() {
    let f = fixture();
    let n = name("up/sha512");
    let data = b"content addressed by sha512";
    let d = Digest::of(Algorithm::Sha512, data);
    let id = f.reg.upload_start(&n).unwrap();
    f.reg.upload_append(&n, &id, None, &mut body(&[&data[..5], &data[5..]])).unwrap();
    f.reg.upload_complete(&n, &id, &d, None, &mut body(&[])).unwrap();
    assert_eq!(f.reg.blob_stat(&n, &d).unwrap(), data.len() as u64);
}

#[test]
fn i1_manifest_push_refuses_missing_blobs_and_names_each_one() {
    let f = fixture();
    let (_, layer) = push_image(&f.reg, "img/a", "v1", b"layer");
    let other = Digest::sha256_of(b"other");
    // A layer that exists in another repository is still missing here.
    let m = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"a/b","digest":"{layer}","size":5}},"layers":[{{"mediaType":"a/c","digest":"{other}","size":5}}]}}"#
    );
    let err = f.reg.manifest_put(&name("img/b"), &tag("v1"), None, Bytes::from(m)).unwrap_err();
    match err {
        RegistryError::ManifestBlobUnknown { digests } => assert_eq!(digests, vec![layer, other]),
        e => panic!("{e:?}"),
    }
    assert!(!f.reg.repo_exists(&name("img/b")).unwrap());
}

#[test]
fn manifest_push_writes_distribution_links_and_a_tag_history() {
    let f = fixture();
    let (d, _) = push_image(&f.reg, "img/links", "v1", b"x");
    let n = name("img/links");
    let t: Tag = "v1".parse().unwrap();
    let root = f.dir.path();
    assert_eq!(std::fs::read_to_string(root.join(layout::tag_current_link(&n, &t).as_str())).unwrap(), d.to_string());
    assert!(root.join(layout::tag_index_link(&n, &t, &d).as_str()).is_file());
    assert!(root.join(layout::revision_link(&n, &d).as_str()).is_file());
    assert_eq!(f.reg.manifest_get(&n, &Reference::Digest(d.clone())).unwrap().digest, d);
}

#[test]
fn problem4_catalog_skips_repository_folders_left_empty() {
    let f = fixture();
    push_image(&f.reg, "cat/kept", "v1", b"x");
    // What Distribution leaves behind after deleting everything in a repository.
    let empty = f.dir.path().join("docker/registry/v2/repositories/cat/emptied/_manifests/tags");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(f.dir.path().join("docker/registry/v2/repositories/cat/emptied/_layers/sha256")).unwrap();
    let reg = open(f.dir.path());
    assert_eq!(reg.catalog(100, None).unwrap().items, ["cat/kept"]);
    assert!(matches!(reg.tags_list(&name("cat/emptied"), None, None), Err(RegistryError::NameUnknown { .. })));
}

#[test]
fn referrers_index_is_rebuilt_for_a_root_written_without_it() {
    let f = fixture();
    let (subject, layer) = push_image(&f.reg, "ref/a", "v1", b"img");
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x.sig",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{layer}","size":3}},"layers":[],
            "subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{subject}","size":1}}}}"#
    );
    let put = f.reg.manifest_put(&name("ref/a"), &tag("sig"), None, Bytes::from(m)).unwrap();
    // Another registry wrote this root: no index at all.
    std::fs::remove_dir_all(f.dir.path().join("berth/referrers")).unwrap();
    let reg = open(f.dir.path());
    let list = reg.referrers(&name("ref/a"), &subject, None).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].digest, put.digest);
    assert_eq!(list[0].artifact_type.as_deref(), Some("application/x.sig"));
    assert!(reg.referrers(&name("ref/a"), &subject, Some("application/other")).unwrap().is_empty());
}

#[test]
fn i3_a_corrupted_manifest_blob_is_never_served() {
    let f = fixture();
    let (d, _) = push_image(&f.reg, "img/corrupt", "v1", b"x");
    std::fs::write(f.dir.path().join(layout::blob_data(&d).as_str()), b"{\"tampered\":true}").unwrap();
    let reg = open(f.dir.path());
    assert!(matches!(reg.manifest_get(&name("img/corrupt"), &tag("v1")), Err(RegistryError::Storage(_))));
}

#[test]
fn tags_list_pages_in_lexical_order() {
    let f = fixture();
    let (d, _) = push_image(&f.reg, "img/tags", "b", b"x");
    let n = name("img/tags");
    let bytes = f.reg.manifest_get(&n, &Reference::Digest(d)).unwrap().bytes.clone();
    for t in ["a", "C", "c", "_z"] {
        f.reg.manifest_put(&n, &tag(t), None, bytes.clone()).unwrap();
    }
    assert_eq!(f.reg.tags_list(&n, None, None).unwrap().items, ["C", "_z", "a", "b", "c"]);
    let p = f.reg.tags_list(&n, Some(2), Some("_z")).unwrap();
    assert_eq!((p.items.as_slice(), p.more), (&["a".to_owned(), "b".to_owned()][..], true));
}

#[test]
fn i6_a_blob_over_the_limit_is_refused_as_it_crosses_it_and_its_data_removed() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_with(dir.path(), Config { max_blob_bytes: Some(10), ..Config::default() });
    let n = name("lim/app");
    let uploads = dir.path().join(layout::uploads_dir(&n).as_str());
    let left = || std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);

    // Monolithic: refused, nothing stored, nothing left.
    let d = Digest::sha256_of(b"eleven byte");
    let err = reg.blob_put(&n, &d, &mut body(&[b"eleven byte"])).unwrap_err();
    assert!(matches!(err, RegistryError::SizeInvalid { too_large: true, .. }), "{err:?}");
    assert_eq!(left(), 0);

    // Chunked: the chunk that crosses the limit is refused and the session goes with its data.
    let id = reg.upload_start(&n).unwrap();
    assert_eq!(reg.upload_append(&n, &id, Some(0), &mut body(&[b"123456"])).unwrap(), 6);
    let err = reg.upload_append(&n, &id, Some(6), &mut body(&[b"7890", b"X"])).unwrap_err();
    assert!(matches!(err, RegistryError::SizeInvalid { too_large: true, .. }), "{err:?}");
    assert_eq!(left(), 0);
    assert!(matches!(reg.upload_status(&n, &id), Err(RegistryError::BlobUploadUnknown { .. })));

    // Exactly at the limit is fine.
    let d = Digest::sha256_of(b"1234567890");
    assert_eq!(reg.blob_put(&n, &d, &mut body(&[b"12345", b"67890"])).unwrap().size, 10);
}

#[test]
fn an_upload_in_flight_survives_a_repository_delete_and_lands_in_a_fresh_repository() {
    let f = fixture();
    let (_, _) = push_image(&f.reg, "del/up", "v1", b"layer");
    let n = name("del/up");
    let id = f.reg.upload_start(&n).unwrap();
    f.reg.upload_append(&n, &id, Some(0), &mut body(&[b"part"])).unwrap();
    let req = crate::DeleteRequest { target: crate::DeleteTarget::Repository(n.clone()), force: false, who: None };
    f.reg.delete(&req).unwrap();
    assert!(f.reg.catalog(100, None).unwrap().items.is_empty());
    let d = Digest::sha256_of(b"part two");
    f.reg.upload_append(&n, &id, Some(4), &mut body(&[b" two"])).unwrap();
    f.reg.upload_complete(&n, &id, &d, None, &mut body(&[])).unwrap();
    assert_eq!(f.reg.blob_stat(&n, &d).unwrap(), 8);
    // The repository starts afresh: the delete's trash entry holds the old content only.
    push_image(&f.reg, "del/up", "v2", b"layer");
    assert_eq!(f.reg.tags_list(&n, None, None).unwrap().items, ["v2"]);
}

#[test]
fn an_image_is_summarised_with_its_config_tags_and_how_many_manifests_use_each_layer() {
    let f = fixture();
    let config =
        br#"{"created":"2026-11-30T10:00:00Z","os":"linux","architecture":"amd64","config":{"Entrypoint":["/app"]}}"#;
    let a = image(&f.reg, "ui/app", "v1", config, &[b"shared layer", b"own layer a"]);
    image(&f.reg, "ui/app", "v2", br#"{"os":"linux","architecture":"arm64"}"#, &[b"shared layer", b"own layer b"]);
    f.reg
        .manifest_put(
            &name("ui/app"),
            &tag("also-v1"),
            None,
            f.reg.manifest_get(&name("ui/app"), &tag("v1")).unwrap().bytes.clone(),
        )
        .unwrap();
    let info = f.reg.image(&name("ui/app"), &a.digest).unwrap();
    assert!(!info.is_index);
    let c = info.config.as_ref().unwrap();
    assert_eq!((c.platform.as_deref(), c.entrypoint.as_slice()), (Some("linux/amd64"), &["/app".to_owned()][..]));
    let tags: Vec<&str> = info.tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, ["also-v1", "v1"]);
    // The config blob first, then the layers; the shared layer is used by both manifests.
    assert_eq!(info.blobs.len(), 3);
    assert_eq!(info.blobs[1].digest, a.layers[0]);
    assert_eq!((info.blobs[1].used_by, info.blobs[2].used_by), (2, 1));
    assert!(matches!(
        f.reg.image(&name("ui/app"), &Digest::sha256_of(b"no such manifest")),
        Err(RegistryError::ManifestUnknown { .. })
    ));
}
