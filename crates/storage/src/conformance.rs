//! The backend conformance suite: the [`Backend`] contract as executable checks.
//!
//! Every backend runs [`run_all`] against a real instance (the filesystem backend in a temp
//! dir; an object store against a real server the test command starts). Each check uses its
//! own key prefix so the suite can run on a store that holds other data.

use std::io::Read;
use std::path::Path;

use crate::backend::Backend;
use crate::key::Key;

fn k(s: &str) -> Key {
    Key::new(format!("conformance/{s}")).expect("valid test key")
}

/// Runs every check.
pub fn run_all(b: &dyn Backend) {
    put_then_get(b);
    put_replaces_atomically(b);
    put_if_absent_never_overwrites(b);
    ranged_reads(b);
    stat_reports_size(b);
    missing_keys_are_not_found(b);
    delete_missing_is_not_an_error(b);
    delete_prefix_removes_everything_below(b);
    listing_is_sorted_and_paged(b);
    staged_writer_appends_and_renames(b);
    prune_keeps_non_empty_folders(b);
    remove_empty_folder_is_not_recursive(b);
    keys_cannot_leave_the_root();
}

/// A put is visible to the next get.
pub fn put_then_get(b: &dyn Backend) {
    let key = k("put/a");
    b.put(&key, b"hello").unwrap();
    assert_eq!(b.get(&key).unwrap(), b"hello");
}

/// A second put replaces the first whole.
pub fn put_replaces_atomically(b: &dyn Backend) {
    let key = k("replace/a");
    b.put(&key, &vec![1u8; 100_000]).unwrap();
    b.put(&key, b"short").unwrap();
    assert_eq!(b.get(&key).unwrap(), b"short");
}

/// Put-if-absent writes once and reports it.
pub fn put_if_absent_never_overwrites(b: &dyn Backend) {
    let key = k("pia/a");
    assert!(b.put_if_absent(&key, b"first").unwrap());
    assert!(!b.put_if_absent(&key, b"second").unwrap());
    assert_eq!(b.get(&key).unwrap(), b"first");
}

/// `open` starts at an offset and reports the whole size.
pub fn ranged_reads(b: &dyn Backend) {
    let key = k("range/a");
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    b.put(&key, &data).unwrap();
    let (mut r, size) = b.open(&key, 1234).unwrap();
    assert_eq!(size, 10_000);
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, &data[1234..]);
    let (mut r, _) = b.open(&key, 10_000).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert!(got.is_empty());
}

/// `stat` gives the size.
pub fn stat_reports_size(b: &dyn Backend) {
    let key = k("stat/a");
    b.put(&key, b"12345").unwrap();
    assert_eq!(b.stat(&key).unwrap().size, 5);
}

/// Reads of a missing key, or of a folder-like prefix, say NotFound.
pub fn missing_keys_are_not_found(b: &dyn Backend) {
    b.put(&k("nf/dir/child"), b"x").unwrap();
    for key in [k("nf/missing"), k("nf/dir")] {
        assert!(b.get(&key).unwrap_err().is_not_found(), "get {key}");
        assert!(b.stat(&key).unwrap_err().is_not_found(), "stat {key}");
        assert!(b.open(&key, 0).expect_err("open fails").is_not_found(), "open {key}");
    }
}

/// Deleting a missing key is fine; deleting an existing one reports it.
pub fn delete_missing_is_not_an_error(b: &dyn Backend) {
    let key = k("del/a");
    assert!(!b.delete(&key).unwrap());
    b.put(&key, b"x").unwrap();
    assert!(b.delete(&key).unwrap());
    assert!(b.get(&key).unwrap_err().is_not_found());
}

/// `delete_prefix` removes a whole subtree and nothing beside it.
pub fn delete_prefix_removes_everything_below(b: &dyn Backend) {
    b.put(&k("dp/x/a"), b"1").unwrap();
    b.put(&k("dp/x/b/c"), b"2").unwrap();
    b.put(&k("dp/xy"), b"3").unwrap();
    assert!(b.delete_prefix(&k("dp/x")).unwrap());
    assert!(!b.delete_prefix(&k("dp/x")).unwrap());
    assert!(b.list(&k("dp/x"), None, 100).unwrap().is_empty());
    assert_eq!(b.get(&k("dp/xy")).unwrap(), b"3");
}

/// Listing gives sorted immediate children, resumable after a name.
pub fn listing_is_sorted_and_paged(b: &dyn Backend) {
    for name in ["c", "a", "b/inner", "e", "d"] {
        b.put(&k(&format!("ls/{name}")), b"x").unwrap();
    }
    assert_eq!(b.list(&k("ls"), None, 100).unwrap(), ["a", "b", "c", "d", "e"]);
    assert_eq!(b.list(&k("ls"), None, 2).unwrap(), ["a", "b"]);
    assert_eq!(b.list(&k("ls"), Some("b"), 2).unwrap(), ["c", "d"]);
    assert!(b.list(&k("ls"), Some("e"), 2).unwrap().is_empty());
    assert!(b.list(&k("ls-missing"), None, 2).unwrap().is_empty());
}

/// A staged object grows by appends and moves into place whole.
pub fn staged_writer_appends_and_renames(b: &dyn Backend) {
    let staged = k("stage/upload/data");
    let mut w = b.writer(&staged).unwrap();
    w.write_all(b"abc").unwrap();
    assert_eq!(w.commit().unwrap(), 3);
    let mut w = b.writer(&staged).unwrap();
    assert_eq!(w.size(), 3, "reopening continues at the end");
    w.write_all(b"def").unwrap();
    w.commit().unwrap();
    let target = k("stage/final/data");
    b.rename(&staged, &target).unwrap();
    assert_eq!(b.get(&target).unwrap(), b"abcdef");
    assert!(b.get(&staged).unwrap_err().is_not_found());
    assert!(b.rename(&staged, &target).unwrap_err().is_not_found());
}

/// Pruning removes empty folders only.
pub fn prune_keeps_non_empty_folders(b: &dyn Backend) {
    b.put(&k("prune/keep/a"), b"x").unwrap();
    b.put(&k("prune/gone/a/b"), b"x").unwrap();
    b.delete(&k("prune/gone/a/b")).unwrap();
    b.prune_empty(&k("prune")).unwrap();
    assert_eq!(b.list(&k("prune"), None, 10).unwrap(), ["keep"]);
    assert_eq!(b.get(&k("prune/keep/a")).unwrap(), b"x");
}

/// Removing an empty folder never touches one that holds something.
pub fn remove_empty_folder_is_not_recursive(b: &dyn Backend) {
    b.put(&k("ref/full/a"), b"x").unwrap();
    assert!(!b.remove_empty_folder(&k("ref/full")).unwrap());
    assert!(!b.remove_empty_folder(&k("ref")).unwrap());
    assert_eq!(b.get(&k("ref/full/a")).unwrap(), b"x");
    assert!(!b.remove_empty_folder(&k("ref/missing")).unwrap());
    b.delete(&k("ref/full/a")).unwrap();
    b.remove_empty_folder(&k("ref/full")).unwrap();
    assert!(b.list(&k("ref"), None, 10).unwrap().is_empty());
}

/// Keys that try to leave the root cannot be built at all.
pub fn keys_cannot_leave_the_root() {
    for bad in ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "a\\..\\b"] {
        assert!(Key::new(bad).is_err(), "{bad:?}");
    }
}

/// For local backends: fails when a temporary file was left behind under `root`.
pub fn assert_no_temp_files(root: &Path) {
    let tmp = root.join(crate::layout::TMP_DIR);
    let left: Vec<_> =
        std::fs::read_dir(&tmp).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}
