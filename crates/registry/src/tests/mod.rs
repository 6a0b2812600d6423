//! Registry tests on a real filesystem in a temp dir, through the public API only. Helpers
//! here; the cases in one module per area, each test named after what it proves.

mod core;
mod delete;
mod gc;
mod tidy;

use std::sync::Arc;

use berth_oci::{Digest, Reference, RepoName, Tag};
use berth_storage::{FsBackend, FsOptions};
use bytes::Bytes;

use crate::{Chunk, Config, Registry};

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub reg: Registry,
}

pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    Fixture { dir, reg }
}

/// A second registry on the same root: what a restart looks like.
pub(crate) fn open(root: &std::path::Path) -> Registry {
    open_with(root, Config::default())
}

pub(crate) fn open_with(root: &std::path::Path, config: Config) -> Registry {
    Registry::new(Arc::new(FsBackend::open(root, FsOptions { fsync: false }).unwrap()), config)
}

pub(crate) fn name(s: &str) -> RepoName {
    s.parse().unwrap()
}

pub(crate) fn tag(s: &str) -> Reference {
    Reference::Tag(s.parse::<Tag>().unwrap())
}

pub(crate) fn body(parts: &[&[u8]]) -> impl Iterator<Item = Chunk> {
    parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect::<Vec<_>>().into_iter()
}

/// Pushes config + one layer + manifest; returns the manifest digest and the layer digest.
pub(crate) fn push_image(reg: &Registry, repo: &str, tag_name: &str, layer: &[u8]) -> (Digest, Digest) {
    let n = name(repo);
    let l = Digest::sha256_of(layer);
    reg.blob_put(&n, &l, &mut body(&[layer])).unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let c = Digest::sha256_of(config);
    reg.blob_put(&n, &c, &mut body(&[config])).unwrap();
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let put = reg.manifest_put(&n, &tag(tag_name), None, Bytes::from(m)).unwrap();
    (put.digest, l)
}
