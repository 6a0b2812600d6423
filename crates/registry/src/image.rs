//! What one manifest is, for a person looking at it: its config summary (created, platform,
//! entrypoint, labels), its layers with how many manifests use each, an index's platform
//! images, its referrers, and the tags on it. The web UI's image page reads it.
//!
//! Reads only: the manifest, its config blob (up to [`CONFIG_MAX`]), the referrers index and
//! the in-memory graph; never changes storage.

use std::collections::BTreeMap;
use std::io::Read;

use berth_oci::{Digest, Reference, RepoName, Tag};

use crate::Registry;
use crate::error::{RegistryError, Result};
use crate::referrers::Referrer;

/// The largest config blob read for a summary; a bigger one is summarised as unreadable.
pub const CONFIG_MAX: u64 = 1 << 20;

/// A manifest, summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its own size in bytes.
    pub size: u64,
    /// Whether it is an index (a multi-platform image) rather than an image manifest.
    pub is_index: bool,
    /// Its `artifactType`, if it is an artifact (a signature, an SBOM, …).
    pub artifact_type: Option<String>,
    /// What its config says, when it is an image whose config could be read.
    pub config: Option<ConfigSummary>,
    /// Its config blob, then its layers (empty for an index).
    pub blobs: Vec<BlobInfo>,
    /// An index's platform images.
    pub children: Vec<Child>,
    /// The manifest it refers to, if it is a referrer itself.
    pub subject: Option<Digest>,
    /// Manifests in the repository naming it as their subject.
    pub referrers: Vec<Referrer>,
    /// Tags of the repository that point at it.
    pub tags: Vec<Tag>,
}

/// One blob of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its media type, as the manifest says.
    pub media_type: String,
    /// Its size, as the manifest says.
    pub size: u64,
    /// How many manifests in the registry reference it (this one included).
    pub used_by: usize,
}

/// One platform image of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// Its digest.
    pub digest: Digest,
    /// `os/architecture[/variant]`, if the index says.
    pub platform: Option<String>,
    /// Its size, as the index says.
    pub size: u64,
}

/// The parts of an image config a person looks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSummary {
    /// `created`, as written.
    pub created: Option<String>,
    /// `os/architecture[/variant]`.
    pub platform: Option<String>,
    /// `config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
    /// `config.Labels`.
    pub labels: BTreeMap<String, String>,
}

fn platform(os: &str, arch: &str, variant: Option<&str>) -> Option<String> {
    if os.is_empty() && arch.is_empty() {
        return None;
    }
    Some(match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

/// Config media types of runnable images (OCI and Docker).
const IMAGE_CONFIGS: &[&str] =
    &["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

impl ConfigSummary {
    /// Reads an image config; `None` when it is not JSON (an artifact's config may be anything).
    fn parse(bytes: &[u8]) -> Option<ConfigSummary> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        let list = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_owned)).collect()
        };
        let c = &v["config"];
        Some(ConfigSummary {
            created: s(&v["created"]),
            platform: platform(
                v["os"].as_str().unwrap_or(""),
                v["architecture"].as_str().unwrap_or(""),
                v["variant"].as_str(),
            ),
            entrypoint: list(&c["Entrypoint"]),
            cmd: list(&c["Cmd"]),
            labels: c["Labels"]
                .as_object()
                .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
                .unwrap_or_default(),
        })
    }
}

impl Registry {
    /// The manifest `digest` of `name`, summarised.
    pub fn image(&self, name: &RepoName, digest: &Digest) -> Result<ImageInfo> {
        let stored = self.manifest_get(name, &Reference::Digest(digest.clone()))?;
        let m = stored.manifest.as_ref();
        let is_index = m.is_some_and(|m| m.kind.is_index());
        let mut blobs: Vec<BlobInfo> = m
            .map(|m| m.config.iter().chain(m.layers.iter()))
            .into_iter()
            .flatten()
            .map(|d| BlobInfo { digest: d.digest.clone(), media_type: d.media_type.clone(), size: d.size, used_by: 0 })
            .collect();
        let uses = self.with_graph(|g, _| {
            let wanted: Vec<Option<u32>> = blobs.iter().map(|b| g.id(&b.digest)).collect();
            let mut uses = vec![0usize; blobs.len()];
            for id in 0..g.len() as u32 {
                if let Some(node) = g.node(id) {
                    for (i, w) in wanted.iter().enumerate() {
                        if w.is_some_and(|w| node.blobs.contains(&w)) {
                            uses[i] += 1;
                        }
                    }
                }
            }
            uses
        })?;
        for (b, n) in blobs.iter_mut().zip(uses) {
            b.used_by = n;
        }
        let config = match m.and_then(|m| m.config.as_ref()) {
            Some(c) if !is_index && c.size <= CONFIG_MAX => self.read_config(name, &c.digest),
            _ => None,
        };
        let children = m
            .map(|m| {
                m.manifests
                    .iter()
                    .map(|c| Child {
                        digest: c.digest.clone(),
                        platform: c
                            .platform
                            .as_ref()
                            .and_then(|p| platform(&p.os, &p.architecture, p.variant.as_deref())),
                        size: c.size,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tags = self.with_graph(|g, _| {
            let id = g.id(digest);
            g.repos
                .get(name)
                .map(|r| r.tags.iter().filter(|(_, d)| Some(**d) == id).map(|(t, _)| t.clone()).collect::<Vec<Tag>>())
                .unwrap_or_default()
        })?;
        Ok(ImageInfo {
            digest: stored.digest.clone(),
            media_type: stored.media_type.clone(),
            size: stored.bytes.len() as u64,
            is_index,
            // An image's config type is what the referrers API reports for it, but it does not
            // make the image an artifact.
            artifact_type: m
                .and_then(|m| m.effective_artifact_type())
                .filter(|t| !IMAGE_CONFIGS.contains(t))
                .map(str::to_owned),
            config,
            blobs,
            children,
            subject: m.and_then(|m| m.subject.as_ref()).map(|s| s.digest.clone()),
            referrers: self.referrers(name, digest, None)?,
            tags,
        })
    }

    /// The summary of a config blob, if it is linked, small and JSON.
    fn read_config(&self, name: &RepoName, digest: &Digest) -> Option<ConfigSummary> {
        let blob = match self.blob_open(name, digest, 0) {
            Ok(b) => b,
            Err(RegistryError::BlobUnknown { .. }) => return None,
            Err(e) => {
                tracing::warn!(%name, %digest, error = %e, "cannot read an image config");
                return None;
            }
        };
        let mut bytes = Vec::new();
        blob.reader.take(CONFIG_MAX).read_to_end(&mut bytes).ok()?;
        ConfigSummary::parse(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_summarised_and_odd_ones_are_not_an_error() {
        let c = ConfigSummary::parse(
            br#"{"created":"2026-11-30T10:00:00Z","os":"linux","architecture":"arm64","variant":"v8",
                "config":{"Entrypoint":["/bin/app"],"Cmd":["--serve"],"Labels":{"org.opencontainers.image.source":"x","n":1}}}"#,
        )
        .unwrap();
        assert_eq!(c.platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!((c.entrypoint, c.cmd), (vec!["/bin/app".to_owned()], vec!["--serve".to_owned()]));
        assert_eq!(c.labels.len(), 1, "non-string labels are left out");
        assert_eq!(ConfigSummary::parse(b"{}").unwrap(), ConfigSummary::default());
        assert_eq!(ConfigSummary::parse(b"\x00binary"), None);
    }
}
