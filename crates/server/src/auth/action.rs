//! What a request needs: the one place that turns a method and a path into the rights it takes
//! (Docker's actions, with delete as a right of its own, plus Berth's admin right). Uses the
//! same route parsers as the handlers, so no request can reach a handler by a path this module
//! read differently.

use std::collections::HashMap;
use std::fmt;

use axum::http::Method;
use berth_oci::RepoName;

use crate::admin::route::Endpoint as AdminEndpoint;
use crate::v2::route::Endpoint;

/// A right on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload blobs, push manifests and tags.
    Push,
    /// Delete a tag, a manifest or a layer link.
    Delete,
}

impl Action {
    /// The name in tokens, challenges and the `access:` section.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// Reads an action name; `*` is every action.
    pub fn parse_list(s: &str) -> Option<Vec<Action>> {
        match s {
            "pull" => Some(vec![Action::Pull]),
            "push" => Some(vec![Action::Push]),
            "delete" => Some(vec![Action::Delete]),
            "*" => Some(vec![Action::Pull, Action::Push, Action::Delete]),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, metrics, an unknown path (answered 404 by the router).
    Nothing,
    /// Being someone the registry accepts (`GET /v2/`, which clients use to log in).
    Login,
    /// The catalog: answered with only the repositories the caller may pull (`registry:catalog:*`
    /// in a token).
    Catalog,
    /// An admin listing: answered with only what the caller may pull.
    Listing,
    /// These rights on a repository.
    Repository(RepoName, Vec<Action>),
    /// Pull on a cross-repository mount's source; without it the request is a plain upload.
    MountSource(RepoName),
    /// Berth's admin right: repository deletes, restores, trash purges, GC, and a trash entry
    /// (whose repository is known only once it is read; the handler checks pull on it then).
    Admin,
}

fn repo(name: RepoName, actions: &[Action]) -> Vec<Need> {
    vec![Need::Repository(name, actions.to_vec())]
}

/// What `method` on `path` (with query `q`) needs. A path the routers reject needs nothing:
/// it is answered 4xx without touching anything.
pub fn needs(method: &Method, path: &str, q: &HashMap<String, String>) -> Vec<Need> {
    use Action::*;
    if path == "/v2" || path == "/v2/" {
        return vec![Need::Login];
    }
    if path == "/v2/_catalog" {
        return vec![Need::Catalog];
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        let Ok(Some(ep)) = crate::v2::route::parse(rest) else { return vec![Need::Login] };
        let read = matches!(*method, Method::GET | Method::HEAD);
        return match ep {
            Endpoint::Blob(n, _) if read => repo(n, &[Pull]),
            Endpoint::Blob(n, _) => repo(n, &[Delete]),
            Endpoint::UploadStart(n) => {
                let mut v = repo(n, &[Push]);
                // A mount also reads the source repository.
                if let Some(from) = q.get("mount").and(q.get("from")).and_then(|f| f.parse::<RepoName>().ok()) {
                    v.push(Need::MountSource(from));
                }
                v
            }
            Endpoint::Upload(n, _) => repo(n, &[Push]),
            Endpoint::Manifest(n, _) | Endpoint::ManifestInvalid(n, _) if read => repo(n, &[Pull]),
            Endpoint::Manifest(n, _) | Endpoint::ManifestInvalid(n, _) if *method == Method::DELETE => {
                repo(n, &[Delete])
            }
            Endpoint::Manifest(n, _) | Endpoint::ManifestInvalid(n, _) => repo(n, &[Push]),
            Endpoint::Tags(n) | Endpoint::Referrers(n, _) => repo(n, &[Pull]),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/") {
        let Ok(Some(ep)) = crate::admin::route::parse(rest) else { return vec![Need::Login] };
        let read = *method == Method::GET;
        return match ep {
            AdminEndpoint::Repositories | AdminEndpoint::Trash | AdminEndpoint::Audit if read => vec![Need::Listing],
            AdminEndpoint::Usage if read => match q.get("repository").and_then(|r| r.parse::<RepoName>().ok()) {
                Some(n) => repo(n, &[Pull]),
                None => vec![Need::Listing],
            },
            AdminEndpoint::Repository(n) if read => repo(n, &[Pull]),
            AdminEndpoint::Repository(n) if *method == Method::DELETE => {
                if ["tag", "digest", "blob"].iter().any(|k| q.contains_key(*k)) {
                    repo(n, &[Delete])
                } else {
                    vec![Need::Admin]
                }
            }
            // A trash entry's repository is known once it is read: admins only.
            _ => vec![Need::Admin],
        };
    }
    vec![Need::Nothing]
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn n(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn needs_table() {
        use Action::*;
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let none = q(&[]);
        type Case = (Method, String, HashMap<String, String>, Vec<Need>);
        let cases: Vec<Case> = vec![
            (Method::GET, "/v2/".into(), none.clone(), vec![Need::Login]),
            (Method::GET, "/v2/_catalog".into(), none.clone(), vec![Need::Catalog]),
            (Method::GET, format!("/v2/a/b/blobs/{D}"), none.clone(), repo(n("a/b"), &[Pull])),
            (Method::HEAD, format!("/v2/a/manifests/{D}"), none.clone(), repo(n("a"), &[Pull])),
            (Method::DELETE, format!("/v2/a/blobs/{D}"), none.clone(), repo(n("a"), &[Delete])),
            (Method::DELETE, "/v2/a/manifests/v1".into(), none.clone(), repo(n("a"), &[Delete])),
            (Method::PUT, "/v2/a/manifests/v1".into(), none.clone(), repo(n("a"), &[Push])),
            (Method::POST, "/v2/a/blobs/uploads/".into(), none.clone(), repo(n("a"), &[Push])),
            (
                Method::POST,
                "/v2/a/blobs/uploads/".into(),
                q(&[("mount", D), ("from", "b/c")]),
                vec![Need::Repository(n("a"), vec![Push]), Need::MountSource(n("b/c"))],
            ),
            (Method::PATCH, "/v2/a/blobs/uploads/x-1".into(), none.clone(), repo(n("a"), &[Push])),
            (Method::GET, "/v2/a/tags/list".into(), none.clone(), repo(n("a"), &[Pull])),
            (Method::GET, "/api/repositories".into(), none.clone(), vec![Need::Listing]),
            (Method::GET, "/api/repositories/a/b".into(), none.clone(), repo(n("a/b"), &[Pull])),
            (Method::DELETE, "/api/repositories/a".into(), q(&[("tag", "v1")]), repo(n("a"), &[Delete])),
            (Method::DELETE, "/api/repositories/a".into(), none.clone(), vec![Need::Admin]),
            (Method::GET, "/api/usage".into(), q(&[("repository", "a")]), repo(n("a"), &[Pull])),
            (Method::POST, "/api/gc".into(), none.clone(), vec![Need::Admin]),
            (Method::POST, "/api/restore".into(), q(&[("repository", "a")]), vec![Need::Admin]),
            (Method::DELETE, "/api/trash".into(), none.clone(), vec![Need::Admin]),
            (Method::GET, "/api/trash/20261123T150102Z-0a1b2c3d".into(), none.clone(), vec![Need::Admin]),
            (Method::GET, "/api/audit".into(), none.clone(), vec![Need::Listing]),
            (Method::GET, "/metrics".into(), none.clone(), vec![Need::Nothing]),
            (Method::GET, "/v2/A/tags/list".into(), none.clone(), vec![Need::Login]),
        ];
        for (m, p, q, want) in cases {
            assert_eq!(needs(&m, &p, &q), want, "{m} {p}");
        }
    }
}
