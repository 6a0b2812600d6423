//! Berth's GC against CNCF Distribution's `registry garbage-collect --delete-untagged`, on
//! identical copies of one root.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use berth_oci::Digest;

use crate::clients::copy;
use crate::harness::{Berth, Distribution, cli_ok, distribution_bin, run};
use crate::image::{Layout, standard};

fn blobs(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let base = root.join("docker/registry/v2/blobs/sha256");
    for p in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        for b in std::fs::read_dir(p.path()).into_iter().flatten().flatten() {
            if b.path().join("data").is_file() {
                out.insert(format!("sha256:{}", b.file_name().to_string_lossy()));
            }
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// The digests an image in a layout reaches: the manifest, its config and layers, and for an
/// index its children's.
pub(crate) fn closure(l: &Layout, d: &Digest, out: &mut BTreeSet<String>) {
    out.insert(d.to_string());
    let m: serde_json::Value = serde_json::from_slice(&l.read(d)).unwrap();
    for c in m["manifests"].as_array().into_iter().flatten() {
        closure(l, &c["digest"].as_str().unwrap().parse().unwrap(), out);
    }
    for b in m["config"]
        .as_object()
        .into_iter()
        .chain(m["layers"].as_array().into_iter().flatten().filter_map(|v| v.as_object()))
    {
        out.insert(b["digest"].as_str().unwrap().to_owned());
    }
}

#[test]
fn gc_removes_what_distribution_removes_except_the_children_of_kept_indexes() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let a = standard(&work.path().join("a"), 130);
    let b = standard(&work.path().join("b"), 131);
    let c = standard(&work.path().join("c"), 132);
    {
        // Deletes final (no trash), so both collectors see the same layout.
        let berth = Berth::start_on(&root, Some("trash:\n  retention: 0\ngc:\n  interval: off\n"));
        let (h, url) = (&berth.addr, berth.url(""));
        let push = |src: &Layout, name: &str, to: &str, all: bool| {
            copy(
                &format!("oci:{}:{name}", src.dir.display()),
                &format!("docker://{h}/{to}"),
                if all { &["--all"] } else { &[] },
            );
        };
        push(&a.layout, "img", "gc/one:v1", false);
        push(&a.layout, "img", "gc/one:v2", false);
        push(&b.layout, "multi", "gc/multi:v1", true);
        push(&c.layout, "img", "gc/three:v1", false);
        push(&a.layout, "img", "gc/copy:v1", false);
        push(&c.layout, "multi", "gc/gone:v1", true);
        cli_ok(&["rm", "gc/one:v1", "--url", &url]); // v2 keeps the image
        cli_ok(&["rm", "gc/three:v1", "--url", &url]); // leaves an untagged manifest
        cli_ok(&["rm", "gc/copy", "--yes", "--url", &url]);
        cli_ok(&["rm", "gc/gone:v1", "--url", &url]); // an untagged index
    }
    let (for_dist, for_berth) = (work.path().join("dist-root"), work.path().join("berth-root"));
    copy_tree(&root, &for_dist);
    copy_tree(&root, &for_berth);

    let cfg = work.path().join("gc.yml");
    std::fs::write(&cfg, format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n", for_dist.display()))
        .unwrap();
    run(Command::new(distribution_bin()).args(["garbage-collect", "--delete-untagged"]).arg(&cfg));
    cli_ok(&["gc", "--root", &for_berth.display().to_string(), "--grace", "0s", "--untagged", "0s"]);

    let (left_dist, left_berth) = (blobs(&for_dist), blobs(&for_berth));
    let mut expected = BTreeSet::new();
    closure(&a.layout, &a.image.digest, &mut expected);
    closure(&b.layout, &b.index.digest, &mut expected);
    assert_eq!(left_berth, expected, "Berth keeps exactly what the remaining tags reach");
    let mut children = BTreeSet::new();
    closure(&b.layout, &b.image.digest, &mut children);
    closure(&b.layout, &b.arm64.digest, &mut children);
    assert!(
        left_dist.is_subset(&left_berth),
        "Distribution keeps nothing Berth removes: {:?}",
        left_dist.difference(&left_berth).collect::<Vec<_>>()
    );
    let only_berth: BTreeSet<String> = left_berth.difference(&left_dist).cloned().collect();
    assert!(
        !only_berth.is_empty() && only_berth.is_subset(&children),
        "the difference is the index's children: {only_berth:?}"
    );

    // Berth serves every remaining tag, the multi-platform one whole.
    let berth = Berth::start_on(&for_berth, None);
    for (tag, all) in [("gc/one:v2", false), ("gc/multi:v1", true)] {
        let out = Layout::new(&work.path().join(format!("pull-{}", tag.replace([':', '/'], "-"))));
        copy(
            &format!("docker://{}/{tag}", berth.addr),
            &format!("oci:{}:x", out.dir.display()),
            if all { &["--all"] } else { &[] },
        );
    }
    drop(berth);
    // Distribution broke it: the platform images of gc/multi:v1 are gone from its copy.
    let dist = Distribution::start(&for_dist, true);
    let broken = crate::clients::skopeo()
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/gc/multi:v1", dist.addr))
        .arg(format!("oci:{}:x", work.path().join("dist-pull").display()))
        .output()
        .unwrap();
    assert!(!broken.status.success(), "Distribution 2.8's GC was expected to break the multi-platform image");
}
