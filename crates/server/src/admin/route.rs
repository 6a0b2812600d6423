//! Splits an `/api/…` path into an [`Endpoint`] with validated names and ids, once, before any
//! handler runs; like `v2::route`, a repository name may have any depth.
//!
//! Never panics on any input: every malformed path is `Ok(None)` (404) or a parse error (4xx).

use berth_oci::RepoName;
use berth_registry::{RegistryError, TrashId};

/// A parsed admin API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `repositories`
    Repositories,
    /// `repositories/<name>`
    Repository(RepoName),
    /// `usage`
    Usage,
    /// `trash`
    Trash,
    /// `trash/<id>`
    TrashEntry(TrashId),
    /// `trash/<id>/restore`
    TrashRestore(TrashId),
    /// `restore`
    Restore,
    /// `gc`
    Gc,
    /// `retention`
    Retention,
    /// `audit`
    Audit,
}

/// Parses the part of the path after `/api/` (a trailing `/` is ignored). `Ok(None)` means no
/// such endpoint.
pub fn parse(path: &str) -> Result<Option<Endpoint>, RegistryError> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let trash_id = |s: &str| s.parse::<TrashId>().map_err(|id| RegistryError::TrashUnknown { id });
    Ok(Some(match path {
        "repositories" => Endpoint::Repositories,
        "usage" => Endpoint::Usage,
        "trash" => Endpoint::Trash,
        "restore" => Endpoint::Restore,
        "gc" => Endpoint::Gc,
        "retention" => Endpoint::Retention,
        "audit" => Endpoint::Audit,
        _ => {
            if let Some(name) = path.strip_prefix("repositories/") {
                Endpoint::Repository(name.parse()?)
            } else if let Some(rest) = path.strip_prefix("trash/") {
                match rest.split_once('/') {
                    None => Endpoint::TrashEntry(trash_id(rest)?),
                    Some((id, "restore")) => Endpoint::TrashRestore(trash_id(id)?),
                    Some(_) => return Ok(None),
                }
            } else {
                return Ok(None);
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let id = "20261123T150102Z-0a1b2c3d";
        let ok: Vec<(String, Endpoint)> = vec![
            ("repositories".into(), Endpoint::Repositories),
            ("repositories/".into(), Endpoint::Repositories),
            ("repositories/a".into(), Endpoint::Repository("a".parse().unwrap())),
            ("repositories/a/b/c/trash".into(), Endpoint::Repository("a/b/c/trash".parse().unwrap())),
            ("repositories/a/b/".into(), Endpoint::Repository("a/b".parse().unwrap())),
            ("usage".into(), Endpoint::Usage),
            ("trash".into(), Endpoint::Trash),
            (format!("trash/{id}"), Endpoint::TrashEntry(id.parse().unwrap())),
            (format!("trash/{id}/restore"), Endpoint::TrashRestore(id.parse().unwrap())),
            ("restore".into(), Endpoint::Restore),
            ("gc".into(), Endpoint::Gc),
            ("retention".into(), Endpoint::Retention),
            ("audit".into(), Endpoint::Audit),
        ];
        for (path, want) in ok {
            assert_eq!(parse(&path).unwrap(), Some(want), "{path}");
        }
        for path in ["", "/", "nope", "repository", format!("trash/{id}/purge").as_str(), "gc/now", "trash/../x"] {
            assert_eq!(parse(path).unwrap(), None, "{path}");
        }
        for path in ["repositories//", "repositories//a", "repositories/A", "repositories/a/../b", "trash/a.b"] {
            assert!(parse(path).is_err(), "{path}");
        }
    }
}
