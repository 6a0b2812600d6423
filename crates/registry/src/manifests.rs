//! Manifests: validated on push, stored as blobs, linked into a repository by a revision link,
//! served byte for byte.
//!
//! A push is accepted only when everything it references is already in the repository
//! (invariant I1); it is written blob first, then revision link, then tag, so a crash at any
//! point leaves at worst an untagged manifest, never a tag naming missing content (I5).
//! Never converts a manifest: the digest a client sees is the digest of the bytes pushed.

use std::sync::Arc;

use berth_oci::manifest::Manifest;
use berth_oci::{Algorithm, Digest, Reference, RepoName};
use berth_storage::{StorageError, layout};
use bytes::Bytes;

use crate::Registry;
use crate::error::{RegistryError, Result, storage};
use crate::graph::{Change, Node, Reached, walk};

/// A manifest as stored, with what Berth could read from it.
#[derive(Debug)]
pub struct StoredManifest {
    /// Its digest (verified against the bytes when loaded).
    pub digest: Digest,
    /// The media type to serve it with.
    pub media_type: String,
    /// The exact bytes pushed.
    pub bytes: Bytes,
    /// The parsed manifest; `None` if the stored bytes are not a manifest Berth understands.
    pub manifest: Option<Manifest>,
}

impl StoredManifest {
    /// `bytes`, stored under `digest`, with what Berth can read from them.
    pub fn parsed(digest: Digest, bytes: Bytes) -> StoredManifest {
        let (media_type, manifest) = match Manifest::parse_stored(&bytes) {
            Ok(m) => (m.media_type.clone(), Some(m)),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "stored manifest is not one Berth understands; serving it as is");
                ("application/octet-stream".to_owned(), None)
            }
        };
        StoredManifest { digest, media_type, bytes, manifest }
    }
}

/// What a successful manifest push produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its `subject`, for the `OCI-Subject` header.
    pub subject: Option<Digest>,
}

impl Registry {
    /// The manifest `reference` names in `name`.
    pub fn manifest_get(&self, name: &RepoName, reference: &Reference) -> Result<Arc<StoredManifest>> {
        if let Reference::Tag(_) = reference {
            self.repo_sync(name);
        }
        let generation = self.push_times.generation();
        let (digest, remembered) = match reference {
            Reference::Tag(t) => match self.push_times.resolved(name, t) {
                Some(d) => (Some(d), true),
                None => (self.tag_get(name, t)?, false),
            },
            Reference::Digest(d) => (Some(d.clone()), false),
        };
        let found = match digest {
            Some(d) if remembered || self.revision_exists(name, &d)? => {
                let m = self.load_manifest(&d)?;
                if let (Reference::Tag(t), Some(_), false) = (reference, &m, remembered) {
                    self.push_times.remember(name, t, &d, generation);
                }
                m
            }
            _ => None,
        };
        match found {
            Some(m) => Ok(m),
            None => Err(self.manifest_unknown(name, reference)),
        }
    }

    /// Validates and stores a manifest under a tag or its digest.
    pub fn manifest_put(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest> {
        let limit = self.config().max_manifest_bytes;
        if bytes.len() > limit {
            return Err(RegistryError::SizeInvalid {
                reason: format!("the manifest has {} bytes; the limit is {limit}", bytes.len()),
                too_large: true,
            });
        }
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of(algorithm, &bytes);
        if let Reference::Digest(d) = reference
            && d != &digest
        {
            return Err(RegistryError::DigestInvalid {
                reason: format!("the manifest's digest is {digest}, not {d} as in the URL"),
            });
        }
        let manifest = Manifest::parse_for_put(&bytes, content_type)?;
        let node = Node::of(bytes.len() as u64, &manifest);
        let _inflight = self.inflight()?;
        // Touch everything the image reaches (an index's platform images and their blobs too)
        // before checking that it exists (see `touched`): a GC running now either keeps it all
        // or has removed something, which the check then sees.
        let reach = self.stored_reach(&digest, Some(&node))?;
        self.touch(reach.iter())?;
        let _guard = self.repo_lock(name)?;
        let sizes = match self.check_complete(name, &digest, &node) {
            Ok(s) => s,
            Err(e) => {
                if let RegistryError::ManifestBlobUnknown { digests } = &e {
                    // Nothing to protect; keep client input from growing the touched set.
                    self.coord.forget(digests);
                }
                return Err(e);
            }
        };

        self.store().put_if_absent(&layout::blob_data(&digest), &bytes).map_err(storage)?;
        self.announcing(name, || {
            self.put_revision(name, &digest)?;
            if let Some(s) = &node.subject {
                self.link_referrer(name, s, &digest)?;
            }
            if let Reference::Tag(t) = reference {
                self.tag_set(name, t, &digest)?;
            }
            Ok(())
        })?;
        let subject = node.subject.clone();
        self.graph.note(Change::PutManifest {
            repo: name.clone(),
            digest: digest.clone(),
            node,
            sizes,
            tag: match reference {
                Reference::Tag(t) => Some(t.clone()),
                Reference::Digest(_) => None,
            },
        });
        self.manifests.insert(Arc::new(StoredManifest {
            digest: digest.clone(),
            media_type: manifest.media_type.clone(),
            bytes,
            manifest: Some(manifest),
        }));
        self.catalog_added(name);
        self.repo_changed(name, true)?;
        Ok(PutManifest { digest, subject })
    }

    /// What the stored manifest `d` references, if its bytes are there and readable.
    pub(crate) fn stored_node(&self, d: &Digest) -> Result<Option<Box<Node<Digest>>>> {
        Ok(self
            .load_manifest(d)?
            .and_then(|m| m.manifest.as_ref().map(|p| Box::new(Node::of(m.bytes.len() as u64, p)))))
    }

    /// Every digest the manifest `d` reaches in the blob store (itself included), as far as
    /// the manifests can be read; `top` stands for `d` when it is not stored yet.
    pub(crate) fn stored_reach(&self, d: &Digest, top: Option<&Node<Digest>>) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        walk([d.clone()], |r, _| {
            let (Reached::Manifest(m) | Reached::Blob(m)) = r;
            out.push(m.clone());
            match r {
                Reached::Manifest(m) if m == d && top.is_some() => Ok(top.cloned().map(Box::new)),
                Reached::Manifest(m) => self.stored_node(m),
                Reached::Blob(_) => Ok(None),
            }
        })?;
        Ok(out)
    }

    /// I1: refuses a manifest (`d`, referencing `top`) that names anything the repository does
    /// not hold: its blobs (linked and present), its child manifests (with a revision link and
    /// present), and, so that an index is only accepted whole, everything those children
    /// name. Returns the size of what the manifest names directly.
    fn check_complete(&self, name: &RepoName, d: &Digest, top: &Node<Digest>) -> Result<Vec<(Digest, u64)>> {
        let mut missing: Vec<Digest> = Vec::new();
        let mut sizes = Vec::new();
        // A set, not the lists: a manifest may name tens of thousands of layers.
        let direct: std::collections::HashSet<&Digest> = top.blobs.iter().chain(top.children.iter()).collect();
        walk([d.clone()], |r, _| {
            let (linked, x) = match r {
                Reached::Manifest(m) if m == d => return Ok(Some(Box::new(top.clone()))),
                Reached::Manifest(m) => (self.revision_exists(name, m)?, m),
                Reached::Blob(b) => (self.layer_linked(name, b)?, b),
            };
            let Some(size) = self.blob_size(x)?.filter(|_| linked) else {
                missing.push(x.clone());
                return Ok(None);
            };
            if direct.contains(x) {
                sizes.push((x.clone(), size));
            }
            match r {
                Reached::Manifest(m) => self.stored_node(m),
                Reached::Blob(_) => Ok(None),
            }
        })?;
        if missing.is_empty() { Ok(sizes) } else { Err(RegistryError::ManifestBlobUnknown { digests: missing }) }
    }

    /// Reads a manifest from the blob store, verifying its bytes against its digest (I3).
    pub(crate) fn load_manifest(&self, d: &Digest) -> Result<Option<Arc<StoredManifest>>> {
        self.load_manifest_with(d, true)
    }

    /// Like [`Registry::load_manifest`]; with `remember` false a manifest not already cached is
    /// read without filling the cache (GC reads every manifest once and must not hold them all).
    pub(crate) fn load_manifest_with(&self, d: &Digest, remember: bool) -> Result<Option<Arc<StoredManifest>>> {
        if let Some(m) = self.manifests.get(d) {
            return Ok(Some(m));
        }
        let key = layout::blob_data(d);
        let Some(bytes) = self.read_small(&key)? else { return Ok(None) };
        let actual = Digest::of(d.algorithm(), &bytes);
        if &actual != d {
            tracing::error!(digest = %d, %actual, "stored manifest does not match its digest");
            return Err(storage(StorageError::Io {
                key,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("content hashes to {actual}")),
            }));
        }
        let stored = Arc::new(StoredManifest::parsed(d.clone(), bytes));
        if remember {
            self.manifests.insert(stored.clone());
        }
        Ok(Some(stored))
    }

    /// Reads a blob that may be a manifest: `None` when it is absent or larger than any
    /// manifest Berth accepts (an index may name any blob as a child; reading a layer of
    /// gigabytes into memory to find out it is not a manifest would let one PUT exhaust memory).
    fn read_small(&self, key: &berth_storage::Key) -> Result<Option<Bytes>> {
        use std::io::Read;
        let limit = self.config().max_manifest_bytes as u64;
        let (reader, size) = match self.store().open(key, 0) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        if size > limit {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(size as usize);
        reader
            .take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| storage(StorageError::Io { key: key.clone(), source: e }))?;
        Ok((buf.len() as u64 <= limit).then(|| Bytes::from(buf)))
    }

    /// `NameUnknown` when the repository does not exist, else `ManifestUnknown`.
    pub(crate) fn manifest_unknown(&self, name: &RepoName, reference: &Reference) -> RegistryError {
        match self.repo_exists(name) {
            Ok(false) => RegistryError::NameUnknown { name: name.clone() },
            _ => RegistryError::ManifestUnknown { name: name.clone(), reference: reference.to_string() },
        }
    }
}
