//! podman, daemonless, against Berth: pull an image skopeo pushed, push it back under a new
//! name, and check what arrived. Uses its own storage folder (vfs driver) so it needs no daemon
//! and touches nothing of the machine's.

use std::path::Path;
use std::process::Command;

use crate::clients::{copy, served_digest};
use crate::harness::{Berth, require_tool, run};
use crate::image::standard;

/// `podman` with its own storage folder (vfs driver, no daemon, nothing of the machine's touched).
pub fn podman(store: &Path) -> Command {
    let mut c = Command::new(require_tool("podman", "install it with `apt-get install -y podman`"));
    c.arg("--root").arg(store.join("root")).arg("--runroot").arg(store.join("run")).args([
        "--storage-driver",
        "vfs",
        "--events-backend",
        "file",
        "--cgroup-manager",
        "cgroupfs",
    ]);
    c
}

#[test]
fn podman_pulls_and_pushes() {
    let berth = Berth::start();
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 70);
    let a = &berth.addr;
    copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{a}/pod/img:v1"), &[]);

    let store = work.path().join("podman");
    run(podman(&store).args(["pull", "--tls-verify=false"]).arg(format!("{a}/pod/img:v1")));
    let id = run(podman(&store).args(["images", "--format", "{{.Digest}}"]).arg(format!("{a}/pod/img:v1")));
    assert_eq!(id.trim(), src.image.digest.to_string(), "podman saw the digest that was pushed");

    run(podman(&store)
        .args(["push", "--tls-verify=false"])
        .arg(format!("{a}/pod/img:v1"))
        .arg(format!("docker://{a}/pod/copy:v1")));
    let pushed = served_digest(&format!("{a}/pod/copy:v1"));
    let out = work.path().join("out");
    copy(&format!("docker://{a}/pod/copy:v1"), &format!("oci:{}:copy", out.display()), &[]);
    assert!(out.join("blobs/sha256").join(pushed.hex()).is_file(), "the image podman pushed pulls back whole");

    run(podman(&store).args(["pull", "--tls-verify=false"]).arg(format!("{a}/pod/copy@{pushed}")));
}
