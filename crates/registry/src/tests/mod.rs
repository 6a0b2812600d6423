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

/// Uploads `data` into `repo` (monolithic); returns its digest.
pub(crate) fn upload(reg: &Registry, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    reg.blob_put(&name(repo), &d, &mut body(&[data])).unwrap();
    d
}

/// An OCI image manifest naming a config and layers, each `(digest, size)`.
pub(crate) fn manifest_json(config: (&Digest, usize), layers: &[(&Digest, usize)]) -> String {
    let l: Vec<String> = layers
        .iter()
        .map(|(d, n)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        config.0,
        config.1,
        l.join(",")
    )
}

/// An OCI index of `children`, each `(digest, architecture)` (`""`: no platform).
pub(crate) fn index_json(children: &[(&Digest, &str)]) -> String {
    let entries: Vec<String> = children
        .iter()
        .map(|(d, arch)| {
            let platform = if arch.is_empty() {
                String::new()
            } else {
                format!(r#","platform":{{"architecture":"{arch}","os":"linux"}}"#)
            };
            format!(r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1{platform}}}"#)
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    )
}

/// What [`image`] pushed.
pub(crate) struct Pushed {
    /// The manifest's digest.
    pub digest: Digest,
    /// The layers' digests, in order.
    pub layers: Vec<Digest>,
    /// Manifest + config + distinct layers, in bytes.
    pub total: u64,
    /// Manifest + config, in bytes.
    pub manifest_and_config: u64,
}

/// Uploads `config` and `layers` (same bytes = same blob) into `repo` and pushes the manifest
/// naming them under `tag`: the one image builder of these tests.
pub(crate) fn image(reg: &Registry, repo: &str, tag_name: &str, config: &[u8], layers: &[&[u8]]) -> Pushed {
    let descs: Vec<(Digest, usize)> = layers.iter().map(|l| (upload(reg, repo, l), l.len())).collect();
    let c = upload(reg, repo, config);
    let refs: Vec<(&Digest, usize)> = descs.iter().map(|(d, n)| (d, *n)).collect();
    let m = manifest_json((&c, config.len()), &refs);
    let put = reg.manifest_put(&name(repo), &tag(tag_name), None, Bytes::from(m.clone())).unwrap();
    let distinct: std::collections::BTreeSet<&&[u8]> = layers.iter().collect();
    let mc = (m.len() + config.len()) as u64;
    Pushed {
        digest: put.digest,
        layers: descs.into_iter().map(|(d, _)| d).collect(),
        total: mc + distinct.iter().map(|l| l.len() as u64).sum::<u64>(),
        manifest_and_config: mc,
    }
}

/// One layer and a config shared by every image pushed this way; returns the manifest digest
/// and the layer digest.
pub(crate) fn push_image(reg: &Registry, repo: &str, tag_name: &str, layer: &[u8]) -> (Digest, Digest) {
    let p = image(reg, repo, tag_name, br#"{"architecture":"amd64","os":"linux"}"#, &[layer]);
    (p.digest, p.layers[0].clone())
}
