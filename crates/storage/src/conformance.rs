//! The backend conformance suite: the [`Backend`] contract as executable checks.
//!
//! Every backend runs [`run_all`] against a real instance (the filesystem backend in a temp
//! dir; an object store against a real server the test command starts). Each check uses its
//! own key prefix so the suite can run on a store that holds other data.

use std::io::Read;
use std::path::Path;

use crate::backend::Backend;
use crate::ext::BackendExt;
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
    staged_objects_read_back_across_parts_and_list_as_themselves(b);
    large_staged_objects_assemble_whole(b);
    large_objects_rename_whole(b);
    listing_orders_names_not_keys(b);
    many_keys_page_and_delete_in_batches(b);
    bulk_deletes_and_recursive_listings(b);
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
        let e = b.get(&key).map(|_| ()).unwrap_err();
        assert!(e.is_not_found(), "get {key}: {e}");
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
    assert_eq!(b.rename(&staged, &target).unwrap(), 6, "rename returns the size it moved");
    assert_eq!(b.get(&target).unwrap(), b"abcdef");
    assert!(b.get(&staged).unwrap_err().is_not_found());
    assert!(b.rename(&staged, &target).unwrap_err().is_not_found());
    // A plain object can be appended to: it is where a staged one starts.
    let plain = k("stage/plain/log");
    b.put(&plain, b"one\n").unwrap();
    let mut w = b.writer(&plain).unwrap();
    assert_eq!(w.size(), 4);
    w.write_all(b"two\n").unwrap();
    w.commit().unwrap();
    assert_eq!(b.get(&plain).unwrap(), b"one\ntwo\n");
    assert_eq!(b.stat(&plain).unwrap().size, 8);
    assert!(b.delete(&plain).unwrap());
    assert!(!b.exists(&plain).unwrap());
}

/// Deterministic bytes that differ at every position of a part.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(seed as u32 % 32) as u8 ^ seed).collect()
}

fn read_from(b: &dyn Backend, key: &Key, offset: u64) -> Vec<u8> {
    let (mut r, _) = b.open(key, offset).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    got
}

/// A staged object written by several writers reads back whole (and from any offset), says
/// its size, and lists as one child, whatever the store keeps it as.
pub fn staged_objects_read_back_across_parts_and_list_as_themselves(b: &dyn Backend) {
    let staged = k("parts/upload/data");
    let mut all = Vec::new();
    for (i, len) in [3usize, 70_000, 1, 250_000].into_iter().enumerate() {
        let chunk = pattern(len, i as u8 + 1);
        let mut w = b.writer(&staged).unwrap();
        assert_eq!(w.size(), all.len() as u64, "a writer starts at the end");
        w.write_all(&chunk).unwrap();
        assert_eq!(w.commit().unwrap(), (all.len() + len) as u64);
        all.extend(chunk);
    }
    assert_eq!(b.get(&staged).unwrap(), all);
    assert_eq!(b.stat(&staged).unwrap().size, all.len() as u64);
    for offset in [0usize, 2, 3, 69_999, 70_004, all.len() - 1, all.len()] {
        assert_eq!(read_from(b, &staged, offset as u64), &all[offset..], "from {offset}");
    }
    b.put(&k("parts/upload/startedat"), b"now").unwrap();
    assert_eq!(b.list(&k("parts/upload"), None, 10).unwrap(), ["data", "startedat"]);
    assert!(b.delete(&staged).unwrap());
    assert!(b.get(&staged).unwrap_err().is_not_found());
    assert_eq!(b.list(&k("parts/upload"), None, 10).unwrap(), ["startedat"]);
}

/// Staged objects of several MiB, written in large and in small appends, move into place whole.
pub fn large_staged_objects_assemble_whole(b: &dyn Backend) {
    // One writer, 12 MiB in 1 MiB writes, then a small append by another.
    let big = k("assemble/big/data");
    let mut all = Vec::new();
    let mut w = b.writer(&big).unwrap();
    for i in 0..12u8 {
        let chunk = pattern(1 << 20, i);
        w.write_all(&chunk).unwrap();
        all.extend(chunk);
    }
    w.commit().unwrap();
    let mut w = b.writer(&big).unwrap();
    w.write_all(b"tail").unwrap();
    w.commit().unwrap();
    all.extend_from_slice(b"tail");
    let target = k("assemble/blob-a");
    assert_eq!(b.rename(&big, &target).unwrap(), all.len() as u64);
    assert!(b.get(&target).unwrap() == all, "the big staged object moved whole");
    assert!(b.get(&big).unwrap_err().is_not_found());
    // Many small appends (each a request of a chunked upload) adding up to 6 MiB.
    let small = k("assemble/small/data");
    let mut all = Vec::new();
    for i in 0..3u8 {
        let chunk = pattern(2 << 20, 40 + i);
        let mut w = b.writer(&small).unwrap();
        w.write_all(&chunk).unwrap();
        w.commit().unwrap();
        all.extend(chunk);
    }
    let target = k("assemble/blob-b");
    assert_eq!(b.rename(&small, &target).unwrap(), all.len() as u64);
    assert!(b.get(&target).unwrap() == all, "small appends moved whole");
    assert!(b.list(&k("assemble/small"), None, 10).unwrap().is_empty(), "nothing left behind");
}

/// An object of several MiB (copied in parts on an object store) renames whole.
pub fn large_objects_rename_whole(b: &dyn Backend) {
    let data = pattern(6 << 20 | 123, 9);
    b.put(&k("mv/a"), &data).unwrap();
    assert_eq!(b.rename(&k("mv/a"), &k("mv/b")).unwrap(), data.len() as u64);
    assert!(b.get(&k("mv/b")).unwrap() == data);
    assert!(b.get(&k("mv/a")).unwrap_err().is_not_found());
}

/// Children sort by name, even where a store's key order differs (`a-b` before `a/…`).
pub fn listing_orders_names_not_keys(b: &dyn Backend) {
    for key in ["order/a/x", "order/a-b", "order/a.c/y", "order/ab", "order/a-"] {
        b.put(&k(key), b"x").unwrap();
    }
    let all = ["a", "a-", "a-b", "a.c", "ab"];
    assert_eq!(b.list(&k("order"), None, 10).unwrap(), all);
    for n in 1..all.len() {
        assert_eq!(b.list(&k("order"), None, n).unwrap(), &all[..n], "the first {n}");
    }
    assert_eq!(b.list(&k("order"), Some("a"), 2).unwrap(), ["a-", "a-b"]);
    assert_eq!(b.list(&k("order"), Some("a.c"), 2).unwrap(), ["ab"]);
}

/// Listings page past a store's page size, and deleting a large folder removes every key.
pub fn many_keys_page_and_delete_in_batches(b: &dyn Backend) {
    let names: Vec<String> = (0..1_100).map(|i| format!("n{i:05}")).collect();
    for n in &names {
        b.put(&k(&format!("many/{n}")), b"x").unwrap();
    }
    assert_eq!(b.list_all(&k("many")).unwrap(), names);
    assert_eq!(b.list(&k("many"), Some("n00998"), 3).unwrap(), ["n00999", "n01000", "n01001"]);
    assert!(b.delete_prefix(&k("many")).unwrap());
    assert!(b.list(&k("many"), None, 10).unwrap().is_empty());
}

/// Bulk deletes remove exactly the keys named (missing ones are fine, staged objects and
/// neighbours stay); a recursive listing, where the store offers one, shows every plain object
/// below the prefix with its size, relative to it, in key order, and nothing staged.
pub fn bulk_deletes_and_recursive_listings(b: &dyn Backend) {
    let keys: Vec<Key> = (0..1_203).map(|i| k(&format!("bulk/{:02x}/{i:05}/data", i % 7))).collect();
    for (i, key) in keys.iter().enumerate() {
        if i % 100 == 0 || i < 3 {
            b.put(key, &vec![7u8; i % 13]).unwrap();
        }
    }
    let mut w = b.writer(&k("bulk/00/staged")).unwrap();
    w.write_all(b"staged").unwrap();
    w.commit().unwrap();
    if let Some(listed) = b.list_objects(&k("bulk")).unwrap() {
        let mut want: Vec<(String, u64)> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 100 == 0 || *i < 3)
            .map(|(i, key)| (key.as_str()["conformance/bulk/".len()..].to_owned(), (i % 13) as u64))
            .collect();
        want.sort();
        let got: Vec<(String, u64)> = listed.iter().map(|(n, m)| (n.clone(), m.size)).collect();
        assert_eq!(got, want, "every plain object, relative, in key order, nothing staged");
        let now = std::time::SystemTime::now();
        assert!(listed.iter().all(|(_, m)| m.modified <= now + std::time::Duration::from_secs(300)));
    }
    b.delete_objects(&keys[..1_202]).unwrap();
    b.delete_objects(&[]).unwrap();
    assert!(b.exists(&keys[1_202]).is_ok_and(|e| !e), "never written: still absent");
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 100 == 0 || *i < 3) {
        assert!(!b.exists(key).unwrap(), "key {i} deleted");
    }
    b.put(&keys[5], b"x").unwrap();
    b.delete_objects(std::slice::from_ref(&keys[5])).unwrap();
    assert!(!b.exists(&keys[5]).unwrap(), "a batch of one");
    assert_eq!(b.get(&k("bulk/00/staged")).unwrap(), b"staged", "staged objects are not plain ones");
    b.delete_prefix(&k("bulk")).unwrap();
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
