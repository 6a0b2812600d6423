//! Manifest GET/HEAD (end-3), PUT (end-7) and DELETE (end-9).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::{Reference, RepoName};
use berth_registry::{DeleteRequest, DeleteTarget, RegistryError, StoredManifest};

use super::negotiate::{self, Choice};
use crate::admin::wire::Entry;
use crate::body::{blocking, read_limited};
use crate::error::ApiError;
use crate::headers::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT, hv};
use crate::{AppState, notify};

/// GET or HEAD of a manifest by tag or digest (HEAD bodies are stripped by the middleware).
/// A GET (`pull`) is recorded as a pull of the tag and of the manifests served; a HEAD, which
/// clients send to check what a tag points at, is not.
pub async fn get(
    st: AppState,
    name: RepoName,
    reference: Reference,
    h: &HeaderMap,
    pull: bool,
) -> Result<Response, ApiError> {
    let accept = negotiate::accepted(h);
    let reg = st.registry.clone();
    // What the pull event needs of the request, only when there will be one.
    let noted = st.notify.as_ref().map(|n| {
        let tag = match &reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        (name.clone(), tag, n.include_references())
    });
    let stored: Arc<StoredManifest> = blocking(move || -> Result<_, RegistryError> {
        let m = reg.manifest_get(&name, &reference)?;
        let tag = match &reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        if pull {
            reg.record_pull(&name, tag, &m.digest);
        }
        match negotiate::choose(&m, &accept) {
            Choice::Serve => Ok(m),
            Choice::Child(d) => {
                let child = reg.manifest_get(&name, &Reference::Digest(d))?;
                if pull {
                    reg.record_pull(&name, None, &child.digest);
                }
                Ok(child)
            }
        }
    })
    .await??;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, hv(&stored.media_type));
    headers.insert(header::CONTENT_LENGTH, hv(&stored.bytes.len().to_string()));
    headers.insert(DOCKER_CONTENT_DIGEST.clone(), hv(&stored.digest.to_string()));
    headers.insert(header::ETAG, hv(&format!("\"{}\"", stored.digest)));
    let resp = (StatusCode::OK, headers, Body::from(stored.bytes.clone())).into_response();
    // Distribution announces a HEAD as a pull too.
    let notes = noted.map(|(n, tag, refs)| vec![notify::manifest("pull", &n, &stored, tag.as_ref(), refs)]);
    Ok(notify::attach(resp, notes.unwrap_or_default()))
}

/// PUT of a manifest: validated, stored, tagged.
pub async fn put(
    st: AppState,
    name: RepoName,
    reference: Reference,
    h: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = st.registry.config().max_manifest_bytes;
    let too_large = |n: String| {
        ApiError::from(RegistryError::SizeInvalid {
            reason: format!("the manifest has {n} bytes; the limit is {limit}"),
            too_large: true,
        })
    };
    if let Some(len) = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(len.to_string()));
    }
    let bytes = read_limited(body, limit).await?.ok_or_else(|| too_large("more than that".into()))?;
    let content_type = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let reg = st.registry.clone();
    let n = name.clone();
    let tag = match &reference {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    };
    let pushed = st.notify.is_some().then(|| bytes.clone());
    let put = blocking(move || reg.manifest_put(&n, &reference, content_type.as_deref(), bytes)).await??;
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, hv(&format!("/v2/{name}/manifests/{}", put.digest)));
    headers.insert(DOCKER_CONTENT_DIGEST.clone(), hv(&put.digest.to_string()));
    headers.insert(header::CONTENT_LENGTH, hv("0"));
    if let Some(s) = &put.subject {
        headers.insert(OCI_SUBJECT.clone(), hv(&s.to_string()));
    }
    let resp = (StatusCode::CREATED, headers).into_response();
    let notes = match (&st.notify, pushed) {
        (Some(n), Some(bytes)) => {
            let stored = StoredManifest::parsed(put.digest.clone(), bytes);
            vec![notify::manifest("push", &name, &stored, tag.as_ref(), n.include_references())]
        }
        _ => vec![],
    };
    Ok(notify::attach(resp, notes))
}

/// DELETE of a tag (that tag only, OCI 1.1) or of a digest (the manifest and every tag on it).
/// Both go to the trash. A platform image of a tagged index is refused (409): the /v2 API has
/// no way to say "force", the admin API and the CLI do.
pub async fn delete(
    st: AppState,
    name: RepoName,
    reference: Reference,
    who: Option<String>,
) -> Result<Response, ApiError> {
    st.check_deletes_enabled()?;
    let target = match reference {
        Reference::Tag(t) => DeleteTarget::Tag(name, t),
        Reference::Digest(d) => DeleteTarget::Manifest(name, d),
    };
    let reg = st.registry.clone();
    let done = blocking(move || reg.delete(&DeleteRequest { target, force: false, who })).await??;
    let resp = (StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response();
    let notes = if st.notify.is_some() { notify::deleted(&Entry::new(&done.entry, None)) } else { vec![] };
    Ok(notify::attach(resp, notes))
}
