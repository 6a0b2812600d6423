//! Just enough manifest parsing to validate a push and to know what a manifest references.
//!
//! The bytes a client pushed are what Berth stores and serves; this module never re-serialises
//! a manifest, because any change of bytes would change its digest. It reads the fields that
//! matter to a registry: the media type, the config, layers and child manifests (the content
//! that must exist before a push is accepted and that GC must keep), the `subject` (for the
//! referrers API), `artifactType` and annotations.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::ParseError;
use crate::media;

/// The manifest formats Berth recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OCI image manifest (or an artifact manifest in that format).
    OciManifest,
    /// OCI image index.
    OciIndex,
    /// Docker image manifest, schema 2.
    DockerManifest,
    /// Docker manifest list.
    DockerList,
    /// Docker schema 1, only ever found on disk in an old Distribution root.
    DockerV1,
}

impl Kind {
    /// Whether children are manifests (`manifests`) rather than blobs (`config` and `layers`).
    pub fn is_index(self) -> bool {
        matches!(self, Kind::OciIndex | Kind::DockerList)
    }

    fn from_media_type(mt: &str) -> Option<Kind> {
        Some(match mt {
            media::OCI_MANIFEST => Kind::OciManifest,
            media::OCI_INDEX => Kind::OciIndex,
            media::DOCKER_MANIFEST => Kind::DockerManifest,
            media::DOCKER_LIST => Kind::DockerList,
            media::DOCKER_V1 | media::DOCKER_V1_SIGNED => Kind::DockerV1,
            _ => return None,
        })
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v8`), if any.
    pub variant: Option<String>,
}

/// A content descriptor: what a manifest says about a piece of content it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Where foreign content can be fetched from instead of the registry.
    pub urls: Vec<String>,
    /// Platform of an index entry.
    pub platform: Option<Platform>,
    /// Artifact type of the referenced manifest, if declared.
    pub artifact_type: Option<String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A parsed manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The format.
    pub kind: Kind,
    /// The media type to serve it with (`Content-Type`).
    pub media_type: String,
    /// The config blob of an image manifest.
    pub config: Option<Descriptor>,
    /// The layer blobs of an image manifest (for schema 1, its `fsLayers`, with size 0).
    pub layers: Vec<Descriptor>,
    /// The child manifests of an index.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 `subject`).
    pub subject: Option<Descriptor>,
    /// The declared artifact type.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
    fs_layers: Option<Vec<RawFsLayer>>,
    signatures: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    urls: Option<Vec<String>>,
    platform: Option<RawPlatform>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawPlatform {
    architecture: Option<String>,
    os: Option<String>,
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFsLayer {
    blob_sum: String,
}

fn invalid(msg: impl Into<String>) -> ParseError {
    ParseError::Manifest(msg.into())
}

impl Manifest {
    /// Validates a manifest a client is pushing with the given `Content-Type`.
    ///
    /// Refuses what a registry must not store: non-JSON, a `mediaType` that contradicts the
    /// `Content-Type`, a missing config or child list, malformed descriptors, and schema 1
    /// (deprecated; CNCF Distribution 2.8 refuses it as well).
    pub fn parse_for_put(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ParseError> {
        let raw = parse_raw(bytes)?;
        let declared = raw.media_type.as_deref().map(media::essence);
        let given = content_type.map(media::essence).filter(|ct| !ct.is_empty());
        let given_kind = given.as_deref().and_then(Kind::from_media_type);
        if let (Some(d), Some(g)) = (&declared, &given)
            && given_kind.is_some()
            && d != g
        {
            return Err(invalid(format!("its mediaType {d:?} contradicts the Content-Type {g:?}")));
        }
        if schema_version(&raw) == Some(1) || given_kind == Some(Kind::DockerV1) {
            return Err(invalid("Docker schema 1 manifests are deprecated and not accepted"));
        }
        let kind = match (&declared, given_kind) {
            (Some(d), _) => {
                Kind::from_media_type(d).ok_or_else(|| invalid(format!("unsupported manifest media type {d:?}")))?
            }
            (None, Some(k)) => k,
            (None, None) => match &given {
                Some(g) if g != "application/json" && g != "application/octet-stream" => {
                    return Err(invalid(format!("unsupported manifest media type {g:?}")));
                }
                _ => infer_kind(&raw)?,
            },
        };
        if schema_version(&raw) != Some(2) {
            return Err(invalid("schemaVersion must be 2"));
        }
        build(raw, kind, true)
    }

    /// Reads a manifest already in storage, to learn its media type and references.
    ///
    /// Lenient: it accepts what an older registry may have written (schema 1, missing media
    /// types), because refusing to serve stored content helps nobody.
    pub fn parse_stored(bytes: &[u8]) -> Result<Manifest, ParseError> {
        let raw = parse_raw(bytes)?;
        if schema_version(&raw) == Some(1) || raw.fs_layers.is_some() {
            let media_type = if raw.signatures.is_some() { media::DOCKER_V1_SIGNED } else { media::DOCKER_V1 };
            let mut layers = Vec::new();
            for l in raw.fs_layers.unwrap_or_default() {
                let digest = Digest::parse(&l.blob_sum).map_err(|e| invalid(e.to_string()))?;
                if !layers.iter().any(|d: &Descriptor| d.digest == digest) {
                    layers.push(Descriptor {
                        media_type: String::new(),
                        digest,
                        size: 0,
                        urls: vec![],
                        platform: None,
                        artifact_type: None,
                        annotations: BTreeMap::new(),
                    });
                }
            }
            return Ok(Manifest {
                kind: Kind::DockerV1,
                media_type: media_type.to_owned(),
                config: None,
                layers,
                manifests: vec![],
                subject: None,
                artifact_type: None,
                annotations: BTreeMap::new(),
            });
        }
        let kind = match raw.media_type.as_deref().map(media::essence) {
            Some(d) => match Kind::from_media_type(&d) {
                Some(k) => k,
                None => infer_kind(&raw)?,
            },
            None => infer_kind(&raw)?,
        };
        build(raw, kind, false)
    }

    /// Every digest this manifest needs to be whole: config and layers, or child manifests.
    /// Foreign layers that carry `urls` are left out, since the registry does not hold them.
    pub fn references(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| !media::is_foreign_layer(&l.media_type) || l.urls.is_empty()))
    }

    /// The artifact type the referrers API reports: `artifactType`, else the config's media
    /// type (OCI distribution spec 1.1, "Listing Referrers").
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref().or(match self.kind {
            Kind::OciManifest | Kind::DockerManifest => self.config.as_ref().map(|c| c.media_type.as_str()),
            _ => None,
        })
    }
}

fn parse_raw(bytes: &[u8]) -> Result<RawManifest, ParseError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(invalid("a manifest is a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("malformed field: {e}")))
}

fn schema_version(raw: &RawManifest) -> Option<i64> {
    raw.schema_version.as_ref().and_then(|v| v.as_i64())
}

fn infer_kind(raw: &RawManifest) -> Result<Kind, ParseError> {
    match (&raw.manifests, &raw.config) {
        (Some(_), None) => Ok(Kind::OciIndex),
        (None, Some(_)) => Ok(Kind::OciManifest),
        (Some(_), Some(_)) => Err(invalid("a manifest has either manifests or a config, not both")),
        (None, None) => Err(invalid("neither an image manifest (no config) nor an index (no manifests)")),
    }
}

fn build(raw: RawManifest, kind: Kind, strict: bool) -> Result<Manifest, ParseError> {
    let media_type = match kind {
        Kind::OciManifest => media::OCI_MANIFEST,
        Kind::OciIndex => media::OCI_INDEX,
        Kind::DockerManifest => media::DOCKER_MANIFEST,
        Kind::DockerList => media::DOCKER_LIST,
        Kind::DockerV1 => media::DOCKER_V1,
    }
    .to_owned();
    let (config, layers, manifests) = if kind.is_index() {
        if strict && raw.config.is_some() {
            return Err(invalid("an index has no config"));
        }
        let manifests = raw.manifests.ok_or_else(|| invalid("an index needs a manifests array"))?;
        (None, vec![], descriptors(manifests, "manifests")?)
    } else {
        if strict && raw.manifests.is_some() {
            return Err(invalid("an image manifest has no manifests array"));
        }
        let config = raw.config.ok_or_else(|| invalid("an image manifest needs a config descriptor"))?;
        let layers = match raw.layers {
            Some(l) => descriptors(l, "layers")?,
            None if strict => return Err(invalid("an image manifest needs a layers array")),
            None => vec![],
        };
        (Some(descriptor(config, "config")?), layers, vec![])
    };
    let subject = raw.subject.map(|s| descriptor(s, "subject")).transpose()?;
    if let Some(at) = &raw.artifact_type
        && strict
        && !at.contains('/')
    {
        return Err(invalid(format!("artifactType {at:?} is not a media type")));
    }
    Ok(Manifest {
        kind,
        media_type,
        config,
        layers,
        manifests,
        subject,
        artifact_type: raw.artifact_type,
        annotations: raw.annotations.unwrap_or_default(),
    })
}

fn descriptors(raw: Vec<RawDescriptor>, field: &str) -> Result<Vec<Descriptor>, ParseError> {
    raw.into_iter().enumerate().map(|(i, d)| descriptor(d, &format!("{field}[{i}]"))).collect()
}

fn descriptor(raw: RawDescriptor, field: &str) -> Result<Descriptor, ParseError> {
    let media_type =
        raw.media_type.filter(|m| !m.is_empty()).ok_or_else(|| invalid(format!("{field} has no mediaType")))?;
    let digest = raw.digest.ok_or_else(|| invalid(format!("{field} has no digest")))?;
    let digest = Digest::parse(&digest).map_err(|e| invalid(format!("{field}: {e}")))?;
    let size = raw.size.ok_or_else(|| invalid(format!("{field} has no size")))?;
    let size = u64::try_from(size).map_err(|_| invalid(format!("{field} has a negative size")))?;
    Ok(Descriptor {
        media_type,
        digest,
        size,
        urls: raw.urls.unwrap_or_default(),
        platform: raw.platform.map(|p| Platform {
            architecture: p.architecture.unwrap_or_default(),
            os: p.os.unwrap_or_default(),
            variant: p.variant,
        }),
        artifact_type: raw.artifact_type,
        annotations: raw.annotations.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(mt: Option<&str>) -> String {
        let mt = mt.map(|m| format!(r#""mediaType":"{m}","#)).unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":10}}]}}"#
        )
    }

    /// (bytes, content type, expected kind or the substring of the error)
    fn check_put(bytes: &str, ct: Option<&str>, want: Result<Kind, &str>) {
        let got = Manifest::parse_for_put(bytes.as_bytes(), ct);
        match (want, got) {
            (Ok(k), Ok(m)) => assert_eq!(m.kind, k, "{bytes}"),
            (Err(needle), Err(e)) => assert!(e.to_string().contains(needle), "{e} lacks {needle:?}"),
            (want, got) => panic!("{bytes} with {ct:?}: wanted {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn put_table() {
        check_put(&image(Some(media::OCI_MANIFEST)), Some(media::OCI_MANIFEST), Ok(Kind::OciManifest));
        check_put(&image(None), Some(media::OCI_MANIFEST), Ok(Kind::OciManifest));
        check_put(&image(None), None, Ok(Kind::OciManifest));
        check_put(&image(Some(media::DOCKER_MANIFEST)), Some(media::DOCKER_MANIFEST), Ok(Kind::DockerManifest));
        check_put(&image(Some(media::DOCKER_MANIFEST)), Some("application/json"), Ok(Kind::DockerManifest));
        check_put(&image(Some(media::OCI_MANIFEST)), Some(media::DOCKER_MANIFEST), Err("contradicts"));
        check_put(&image(Some(media::OCI_MANIFEST)), Some(media::OCI_INDEX), Err("contradicts"));
        check_put(&image(None), Some("text/plain"), Err("unsupported manifest media type"));
        check_put("not json", Some(media::OCI_MANIFEST), Err("not valid JSON"));
        check_put("[1,2]", Some(media::OCI_MANIFEST), Err("JSON object"));
        check_put(r#"{"schemaVersion":2,"layers":[]}"#, Some(media::OCI_MANIFEST), Err("needs a config"));
        check_put(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
            None,
            Err("manifests array"),
        );
        check_put(r#"{"schemaVersion":1,"fsLayers":[]}"#, None, Err("schema 1"));
        check_put(&image(None).replace("\"size\":10", "\"size\":-1"), None, Err("negative size"));
        check_put(&image(None).replace(D2, "sha256:xyz"), None, Err("layers[0]"));
        check_put(&image(None).replace("\"schemaVersion\":2", "\"schemaVersion\":3"), None, Err("schemaVersion"));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{D1}","size":5,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST
        );
        check_put(&index, Some(media::OCI_INDEX), Ok(Kind::OciIndex));
        let m = Manifest::parse_for_put(index.as_bytes(), None).unwrap();
        assert_eq!(m.manifests[0].platform.as_ref().unwrap().variant.as_deref(), Some("v8"));
    }

    #[test]
    fn artifact_type_falls_back_to_config_media_type() {
        let m = Manifest::parse_for_put(image(None).as_bytes(), None).unwrap();
        assert_eq!(m.effective_artifact_type(), Some("application/vnd.oci.image.config.v1+json"));
        let with = image(None).replacen('{', r#"{"artifactType":"application/x.sbom","#, 1);
        let m = Manifest::parse_for_put(with.as_bytes(), None).unwrap();
        assert_eq!(m.effective_artifact_type(), Some("application/x.sbom"));
    }

    #[test]
    fn stored_schema1_lists_unique_fs_layers() {
        let s1 = format!(
            r#"{{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[{{"blobSum":"{D1}"}},{{"blobSum":"{D1}"}},{{"blobSum":"{D2}"}}],"signatures":[]}}"#
        );
        let m = Manifest::parse_stored(s1.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::DockerV1);
        assert_eq!(m.media_type, media::DOCKER_V1_SIGNED);
        assert_eq!(m.references().count(), 2);
    }

    #[test]
    fn foreign_layers_with_urls_are_not_required() {
        let with = image(Some(media::DOCKER_MANIFEST)).replace(
            "\"application/vnd.oci.image.layer.v1.tar+gzip\"",
            &format!("\"{}\",\"urls\":[\"https://example.com/l\"]", media::DOCKER_FOREIGN_LAYER),
        );
        let m = Manifest::parse_for_put(with.as_bytes(), None).unwrap();
        assert_eq!(m.references().count(), 1, "only the config is required");
    }
}
