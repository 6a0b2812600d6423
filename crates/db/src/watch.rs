//! [`Indexed`]: a [`Backend`] that keeps the metadata index (see `index`) in step with every
//! write to the store it wraps. Watching the store's writes, rather than the registry's
//! operations, means no way of changing a link can forget the index: pushes, deletes,
//! restores, GC, fsck and copies all go through here.
//!
//! The order of each step is what makes GC through the index safe: a link's row is written
//! **before** the link (a failed write leaves an extra row, never a missing one), and removed
//! **after** the link is gone. Blob rows carry the data's size, so they are written after the
//! data; a blob whose row could not be written is a leak until reconciled, never a break.
//!
//! Failing to write a row before a link fails the write (503 for the client: the database is
//! down, nothing changed). Failing to remove a row after a removal, or to record a blob after
//! its data, is logged and not returned: the store changed, and the row left over is harmless.
//!
//! Reads pass straight through. It never decides what to write, only records what is written.

use std::collections::HashMap;
use std::sync::Arc;

use berth_storage::layout::{self, Scope};
use berth_storage::{Backend, Key, Meta, ObjectReader, ObjectWriter, StorageError};
use postgres::GenericClient;

use crate::error::DbError;
use crate::pool::Db;

type Result<T> = std::result::Result<T, StorageError>;

/// A store whose writes are recorded in the metadata index.
#[derive(Clone)]
pub struct Indexed {
    inner: Arc<dyn Backend>,
    db: Db,
}

impl std::fmt::Debug for Indexed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexed").field("inner", &self.inner).field("db", &self.db).finish()
    }
}

impl Indexed {
    /// `inner`, with its writes recorded in `db`'s metadata index.
    pub fn new(inner: Arc<dyn Backend>, db: Db) -> Indexed {
        Indexed { inner, db }
    }

    /// Writes the row of a link about to be written at `key` with `content` (if `key` is an
    /// indexed link).
    fn before(&self, key: &Key, content: &[u8]) -> Result<()> {
        let row = match layout::scope(key) {
            // A link that holds no digest is not a tag to anyone reading it: nothing to record.
            Scope::Tag(repo, tag) => layout::parse_link(content)
                .map(|d| (TAG_UPSERT, vec![repo.to_string(), tag.to_string(), d.to_string()])),
            Scope::Revision(repo, d) => Some((REVISION_UPSERT, vec![repo.to_string(), d.to_string()])),
            Scope::Layer(repo, d) => Some((LAYER_UPSERT, vec![repo.to_string(), d.to_string()])),
            Scope::Upload(repo, id) => Some((UPLOAD_UPSERT, vec![repo.to_string(), id.to_string()])),
            _ => None,
        };
        let Some((sql, params)) = row else { return Ok(()) };
        let run = || -> std::result::Result<(), DbError> {
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
            self.db.conn()?.execute(sql, &params)?;
            Ok(())
        };
        run().map_err(|e| StorageError::Unavailable {
            key: key.clone(),
            reason: format!("cannot record the write in the metadata index: {e}"),
        })
    }

    /// After a tag's link was written: the rows of what it pointed at before go (they were
    /// kept while the write could still fail, so the old manifest stayed a root).
    fn link_written(&self, key: &Key, content: &[u8]) {
        let Scope::Tag(repo, tag) = layout::scope(key) else { return };
        let Some(d) = layout::parse_link(content) else { return };
        let run = || -> std::result::Result<(), DbError> {
            self.db.conn()?.execute(
                "DELETE FROM index_tags WHERE repo = $1 AND tag = $2 AND digest <> $3",
                &[&repo.as_str(), &tag.as_str(), &d.to_string()],
            )?;
            Ok(())
        };
        if let Err(e) = run() {
            tracing::warn!(repository = %repo, tag = %tag, error = %e, "a tag's old row stays in the metadata index; GC keeps its manifest until the index is reconciled");
        }
    }

    /// Records blob data written at `key` (if it is blob data).
    fn blob_written(&self, key: &Key, size: u64) {
        if let Scope::Blob(d) = layout::scope(key) {
            let run = || -> std::result::Result<(), DbError> {
                self.db.conn()?.execute(BLOB_UPSERT, &[&d.to_string(), &(size as i64)])?;
                Ok(())
            };
            if let Err(e) = run() {
                tracing::warn!(digest = %d, error = %e, "blob stored but not recorded in the metadata index; GC through the index will not collect it until the index is reconciled");
            }
        }
    }

    /// Removes the rows of what is gone from the store below `keys`.
    fn removed(&self, keys: &[&Key]) {
        let scopes: Vec<Scope> = keys.iter().map(|k| layout::scope(k)).filter(|s| *s != Scope::None).collect();
        if scopes.is_empty() {
            return;
        }
        let run = || -> std::result::Result<(), DbError> {
            let mut conn = self.db.conn()?;
            let mut t = conn.transaction()?;
            remove_rows(&mut t, &scopes)?;
            t.commit()?;
            Ok(())
        };
        if let Err(e) = run() {
            tracing::warn!(error = %e, "removed from storage but not from the metadata index; GC keeps what the rows left over name until the index is reconciled");
        }
    }
}

const TAG_UPSERT: &str = "INSERT INTO index_tags (repo, tag, digest) VALUES ($1, $2, $3)
     ON CONFLICT (repo, tag, digest) DO UPDATE SET at = now()";
const REVISION_UPSERT: &str = "INSERT INTO index_revisions (repo, digest) VALUES ($1, $2)
     ON CONFLICT (repo, digest) DO UPDATE SET at = now()";
const LAYER_UPSERT: &str = "INSERT INTO index_layers (repo, digest) VALUES ($1, $2)
     ON CONFLICT (repo, digest) DO UPDATE SET at = now()";
const UPLOAD_UPSERT: &str = "INSERT INTO index_uploads (repo, id) VALUES ($1, $2)
     ON CONFLICT (repo, id) DO UPDATE SET at = now()";
const BLOB_UPSERT: &str = "INSERT INTO index_blobs (digest, size) VALUES ($1, $2)
     ON CONFLICT (digest) DO UPDATE SET size = EXCLUDED.size, at = now()";

/// The tables of repositories' links, and what their second key column is called.
const LINK_TABLES: [(&str, &str); 4] =
    [("index_tags", "tag"), ("index_revisions", "digest"), ("index_layers", "digest"), ("index_uploads", "id")];

/// Deletes the rows `scopes` cover: single rows in one statement per table, folders one by one.
fn remove_rows(c: &mut impl GenericClient, scopes: &[Scope]) -> std::result::Result<(), DbError> {
    let mut single: HashMap<&str, (Vec<String>, Vec<String>)> = HashMap::new();
    let mut blobs: Vec<String> = Vec::new();
    let mut push = |table: &'static str, repo: String, key: String| {
        let e = single.entry(table).or_default();
        e.0.push(repo);
        e.1.push(key);
    };
    for s in scopes {
        match s {
            Scope::None => {}
            Scope::Blob(d) => blobs.push(d.to_string()),
            Scope::Tag(r, t) => push("index_tags", r.to_string(), t.to_string()),
            Scope::Revision(r, d) => push("index_revisions", r.to_string(), d.to_string()),
            Scope::Layer(r, d) => push("index_layers", r.to_string(), d.to_string()),
            Scope::Upload(r, id) => push("index_uploads", r.to_string(), id.to_string()),
            Scope::Blobs(prefix) => {
                c.execute("DELETE FROM index_blobs WHERE starts_with(digest, $1)", &[prefix])?;
                c.execute("DELETE FROM index_manifests WHERE starts_with(digest, $1)", &[prefix])?;
            }
            Scope::Repositories(path) => {
                for (table, _) in LINK_TABLES {
                    let sql = format!("DELETE FROM {table} WHERE $1 = '' OR repo = $1 OR starts_with(repo, $1 || '/')");
                    c.execute(&sql, &[path])?;
                }
            }
            Scope::Manifests(r) => {
                c.execute("DELETE FROM index_tags WHERE repo = $1", &[&r.as_str()])?;
                c.execute("DELETE FROM index_revisions WHERE repo = $1", &[&r.as_str()])?;
            }
            Scope::Tags(r) => {
                c.execute("DELETE FROM index_tags WHERE repo = $1", &[&r.as_str()])?;
            }
            Scope::Revisions(r, prefix) => {
                c.execute(
                    "DELETE FROM index_revisions WHERE repo = $1 AND starts_with(digest, $2)",
                    &[&r.as_str(), prefix],
                )?;
            }
            Scope::Layers(r, prefix) => {
                c.execute(
                    "DELETE FROM index_layers WHERE repo = $1 AND starts_with(digest, $2)",
                    &[&r.as_str(), prefix],
                )?;
            }
            Scope::Uploads(r) => {
                c.execute("DELETE FROM index_uploads WHERE repo = $1", &[&r.as_str()])?;
            }
        }
    }
    if !blobs.is_empty() {
        c.execute("DELETE FROM index_blobs WHERE digest = ANY($1)", &[&blobs])?;
        c.execute("DELETE FROM index_manifests WHERE digest = ANY($1)", &[&blobs])?;
    }
    for (table, (repos, keys)) in single {
        let column = LINK_TABLES.iter().find(|(t, _)| *t == table).map(|(_, c)| *c).expect("a link table");
        let sql = format!(
            "DELETE FROM {table} t USING unnest($1::text[], $2::text[]) AS g(repo, k)
             WHERE t.repo = g.repo AND t.{column} = g.k"
        );
        c.execute(&sql, &[&repos, &keys])?;
    }
    Ok(())
}

/// Whether a write at `key` is a link the index records (its row goes first).
fn is_link(key: &Key) -> bool {
    matches!(layout::scope(key), Scope::Tag(..) | Scope::Revision(..) | Scope::Layer(..) | Scope::Upload(..))
}

impl Backend for Indexed {
    fn get(&self, key: &Key) -> Result<Vec<u8>> {
        self.inner.get(key)
    }

    fn open(&self, key: &Key, offset: u64) -> Result<(ObjectReader, u64)> {
        self.inner.open(key, offset)
    }

    fn stat(&self, key: &Key) -> Result<Meta> {
        self.inner.stat(key)
    }

    fn put(&self, key: &Key, data: &[u8]) -> Result<()> {
        self.before(key, data)?;
        self.inner.put(key, data)?;
        self.link_written(key, data);
        self.blob_written(key, data.len() as u64);
        Ok(())
    }

    fn put_if_absent(&self, key: &Key, data: &[u8]) -> Result<bool> {
        self.before(key, data)?;
        let wrote = self.inner.put_if_absent(key, data)?;
        if wrote {
            self.link_written(key, data);
        }
        self.blob_written(key, data.len() as u64);
        Ok(wrote)
    }

    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>> {
        // A staged link would be visible before its row could be written; links are put whole.
        if is_link(key) {
            return Err(StorageError::InvalidKey {
                key: key.to_string(),
                reason: "a link is written whole (put), never staged, where a metadata index watches the store",
            });
        }
        let inner = self.inner.writer(key)?;
        if !matches!(layout::scope(key), Scope::Blob(_)) {
            return Ok(inner);
        }
        Ok(Box::new(IndexedWriter { inner, key: key.clone(), owner: self.clone() }))
    }

    fn rename(&self, from: &Key, to: &Key) -> Result<u64> {
        let content = if is_link(to) { Some(self.inner.get(from)?) } else { None };
        if let Some(c) = &content {
            self.before(to, c)?;
        }
        let size = self.inner.rename(from, to)?;
        if let Some(c) = &content {
            self.link_written(to, c);
        }
        self.blob_written(to, size);
        self.removed(&[from]);
        Ok(size)
    }

    fn delete(&self, key: &Key) -> Result<bool> {
        let existed = self.inner.delete(key)?;
        self.removed(&[key]);
        Ok(existed)
    }

    fn delete_prefix(&self, prefix: &Key) -> Result<bool> {
        let existed = self.inner.delete_prefix(prefix)?;
        self.removed(&[prefix]);
        Ok(existed)
    }

    fn list(&self, prefix: &Key, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.inner.list(prefix, start_after, limit)
    }

    fn prune_empty(&self, prefix: &Key) -> Result<()> {
        self.inner.prune_empty(prefix)
    }

    fn remove_empty_folder(&self, prefix: &Key) -> Result<bool> {
        self.inner.remove_empty_folder(prefix)
    }

    fn delete_objects(&self, keys: &[Key]) -> Result<()> {
        self.inner.delete_objects(keys)?;
        self.removed(&keys.iter().collect::<Vec<_>>());
        Ok(())
    }

    fn list_objects(&self, prefix: &Key) -> Result<Option<Vec<(String, Meta)>>> {
        self.inner.list_objects(prefix)
    }

    fn has_folders(&self) -> bool {
        self.inner.has_folders()
    }

    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }

    fn requests(&self) -> Option<u64> {
        self.inner.requests()
    }

    fn presigned_get(&self, key: &Key, valid: std::time::Duration) -> Option<String> {
        self.inner.presigned_get(key, valid)
    }
}

/// A staged write to blob data, recorded once committed.
struct IndexedWriter {
    inner: Box<dyn ObjectWriter>,
    key: Key,
    owner: Indexed,
}

impl ObjectWriter for IndexedWriter {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.inner.write_all(buf)
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn commit(self: Box<Self>) -> Result<u64> {
        let size = self.inner.commit()?;
        self.owner.blob_written(&self.key, size);
        Ok(size)
    }
}
