//! [`PgIndex`]: the registry's [`MetaIndex`] read from PostgreSQL (the tables of migration
//! 0003), and its reconciliation with a listing of the bucket.
//!
//! The rows are written by `watch` as the bucket is written; this module reads them and, for
//! `berth db import` and `fsck`, brings them in line with a listing. It never writes the bucket.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, RepoName};
use berth_registry::{
    IndexDiff, IndexedBlob, IndexedManifest, IndexedRepo, MetaIndex, RegistryError, Result, StoreSnapshot,
};
use postgres::GenericClient;

use crate::error::DbError;
use crate::pool::Db;

/// How long before a listing began a row must have been written for a reconciliation to
/// remove it when the listing lacks it. A row is written just before its link; a younger row
/// may be a link the listing went past before it landed. No link write takes this long.
pub const RECONCILE_MARGIN: Duration = Duration::from_secs(600);

/// Rows per statement when loading a listing.
const BATCH: usize = 5000;

/// The metadata index in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgIndex {
    db: Db,
}

impl PgIndex {
    /// The index in `db` (migrated).
    pub fn new(db: Db) -> PgIndex {
        PgIndex { db }
    }
}

fn unavailable(e: DbError) -> RegistryError {
    RegistryError::Unavailable { reason: e.to_string() }
}

fn pg<T>(r: std::result::Result<T, DbError>) -> Result<T> {
    r.map_err(unavailable)
}

fn age(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default()
}

/// Parses what the index holds, skipping (and logging) what does not parse: rows are written
/// from keys that parsed, so this is only a guard.
fn parse<T: std::str::FromStr>(s: &str) -> Option<T> {
    let v = s.parse().ok();
    if v.is_none() {
        tracing::warn!(value = s, "unreadable value in the metadata index; ignored");
    }
    v
}

impl MetaIndex for PgIndex {
    fn ready(&self) -> Result<bool> {
        pg((|| Ok(self.db.conn()?.query_one("SELECT ready FROM index_state WHERE id = 1", &[])?.get(0)))())
    }

    fn repos(&self) -> Result<Vec<IndexedRepo>> {
        pg((|| {
            let mut c = self.db.conn()?;
            // One read of each table, in one snapshot: a push between two reads must not
            // show its tag without its manifest.
            let mut t = c.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).start()?;
            let mut repos: BTreeMap<String, IndexedRepo> = BTreeMap::new();
            // The repository a row names, added on its first row; `None` (row skipped) for a
            // name that does not parse.
            fn repo<'a>(repos: &'a mut BTreeMap<String, IndexedRepo>, name: &str) -> Option<&'a mut IndexedRepo> {
                if !repos.contains_key(name) {
                    let parsed: RepoName = parse(name)?;
                    let empty = IndexedRepo {
                        name: parsed,
                        tags: Vec::new(),
                        revisions: Vec::new(),
                        layers: Vec::new(),
                        uploads: Vec::new(),
                    };
                    repos.insert(name.to_owned(), empty);
                }
                repos.get_mut(name)
            }
            for row in t.query("SELECT repo, tag, digest FROM index_tags ORDER BY repo, tag", &[])? {
                if let (Some(tag), Some(d)) = (parse(row.get(1)), parse::<Digest>(row.get(2)))
                    && let Some(r) = repo(&mut repos, row.get(0))
                {
                    r.tags.push((tag, d));
                }
            }
            let sql = "SELECT repo, digest, extract(epoch FROM now() - at)::float8 FROM index_revisions";
            for row in t.query(sql, &[])? {
                if let Some(d) = parse::<Digest>(row.get(1))
                    && let Some(r) = repo(&mut repos, row.get(0))
                {
                    r.revisions.push((d, age(row.get(2))));
                }
            }
            for row in t.query("SELECT repo, digest FROM index_layers", &[])? {
                if let Some(d) = parse::<Digest>(row.get(1))
                    && let Some(r) = repo(&mut repos, row.get(0))
                {
                    r.layers.push(d);
                }
            }
            for row in t.query("SELECT repo, id FROM index_uploads", &[])? {
                if let Some(id) = parse(row.get(1))
                    && let Some(r) = repo(&mut repos, row.get(0))
                {
                    r.uploads.push(id);
                }
            }
            t.commit()?;
            Ok(repos.into_values().collect())
        })())
    }

    fn repository_names(&self) -> Result<Vec<String>> {
        pg((|| {
            let sql = "SELECT repo FROM index_tags UNION SELECT repo FROM index_revisions ORDER BY 1";
            Ok(self.db.conn()?.query(sql, &[])?.iter().map(|r| r.get::<_, String>(0)).collect())
        })())
    }

    fn holding(&self, names: &[RepoName]) -> Result<Vec<bool>> {
        pg((|| {
            let wanted: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            let sql = "SELECT repo FROM index_tags WHERE repo = ANY($1) \
                       UNION SELECT repo FROM index_revisions WHERE repo = ANY($1)";
            let rows = self.db.conn()?.query(sql, &[&wanted])?;
            let held: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
            Ok(wanted.iter().map(|n| held.contains(*n)).collect())
        })())
    }

    fn manifests(&self) -> Result<Vec<IndexedManifest>> {
        pg((|| {
            let sql = "SELECT digest, size, blobs, children, subject FROM index_manifests";
            let rows = self.db.conn()?.query(sql, &[])?;
            let digests = |v: Vec<String>| v.iter().filter_map(|s| parse::<Digest>(s)).collect::<Vec<_>>();
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    Some(IndexedManifest {
                        digest: parse(r.get(0))?,
                        size: r.get::<_, i64>(1) as u64,
                        blobs: digests(r.get(2)),
                        children: digests(r.get(3)),
                        subject: r.get::<_, Option<&str>>(4).and_then(parse),
                    })
                })
                .collect())
        })())
    }

    fn add_manifests(&self, manifests: &[IndexedManifest]) -> Result<()> {
        pg((|| {
            let mut c = self.db.conn()?;
            insert_manifests(&mut *c, manifests)
        })())
    }

    fn blobs(&self) -> Result<Vec<IndexedBlob>> {
        pg((|| {
            let sql = "SELECT digest, size, extract(epoch FROM now() - at)::float8 FROM index_blobs";
            let rows = self.db.conn()?.query(sql, &[])?;
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    Some(IndexedBlob { digest: parse(r.get(0))?, size: r.get::<_, i64>(1) as u64, age: age(r.get(2)) })
                })
                .collect())
        })())
    }

    fn now(&self) -> Result<SystemTime> {
        pg((|| Ok(self.db.conn()?.query_one("SELECT now()", &[])?.get(0)))())
    }

    fn reconcile(&self, store: &StoreSnapshot, since: SystemTime, apply: bool) -> Result<IndexDiff> {
        pg((|| {
            let mut c = self.db.conn()?;
            let mut t = c.transaction()?;
            load(&mut t, store)?;
            let cutoff = since.checked_sub(RECONCILE_MARGIN).unwrap_or(SystemTime::UNIX_EPOCH);
            let diff = compare(&mut t, cutoff)?;
            if apply {
                repair(&mut t, cutoff)?;
                insert_manifests(&mut t, &store.manifests)?;
                t.execute("UPDATE index_state SET ready = true, imported_at = now() WHERE id = 1", &[])?;
                t.commit()?;
            } else {
                drop(t);
                if lacks_links(&diff) {
                    tracing::warn!("the metadata index lacks links storage has; GC lists storage until it is repaired");
                    c.execute("UPDATE index_state SET ready = false WHERE id = 1", &[])?;
                }
            }
            Ok(diff)
        })())
    }
}

/// Whether the index lacks a tag or a manifest the store has (or has a tag pointing
/// elsewhere): GC through it could then remove what an image uses.
fn lacks_links(diff: &IndexDiff) -> bool {
    diff.kinds.iter().any(|(k, missing, _, changed)| (k == "tags" || k == "revisions") && missing + changed > 0)
}

fn insert_manifests(c: &mut impl GenericClient, manifests: &[IndexedManifest]) -> std::result::Result<(), DbError> {
    let join = |v: &[Digest]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    for chunk in manifests.chunks(BATCH) {
        let digests: Vec<String> = chunk.iter().map(|m| m.digest.to_string()).collect();
        let sizes: Vec<i64> = chunk.iter().map(|m| m.size as i64).collect();
        let blobs: Vec<String> = chunk.iter().map(|m| join(&m.blobs)).collect();
        let children: Vec<String> = chunk.iter().map(|m| join(&m.children)).collect();
        let subjects: Vec<Option<String>> = chunk.iter().map(|m| m.subject.as_ref().map(|s| s.to_string())).collect();
        c.execute(
            "INSERT INTO index_manifests (digest, size, blobs, children, subject)
             SELECT d, s, string_to_array(b, ','), string_to_array(ch, ','), su
             FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[]) AS g(d, s, b, ch, su)
             ON CONFLICT (digest) DO NOTHING",
            &[&digests, &sizes, &blobs, &children, &subjects],
        )?;
    }
    Ok(())
}

/// Loads the listing into temporary tables (gone at the end of the transaction).
fn load(t: &mut impl GenericClient, store: &StoreSnapshot) -> std::result::Result<(), DbError> {
    t.batch_execute(
        "CREATE TEMP TABLE snap_tags (repo text, tag text, digest text) ON COMMIT DROP;
         CREATE TEMP TABLE snap_revisions (repo text, digest text, age float8) ON COMMIT DROP;
         CREATE TEMP TABLE snap_layers (repo text, digest text) ON COMMIT DROP;
         CREATE TEMP TABLE snap_uploads (repo text, id text) ON COMMIT DROP;
         CREATE TEMP TABLE snap_blobs (digest text, size int8, age float8) ON COMMIT DROP;",
    )?;
    let (mut tags, mut revisions, mut layers, mut uploads) =
        (Rows::default(), Rows::default(), Rows::default(), Rows::default());
    for r in &store.repos {
        let name = r.name.to_string();
        for (tag, d) in &r.tags {
            tags.push(&name, tag.to_string(), Some(d.to_string()), None);
        }
        for (d, a) in &r.revisions {
            revisions.push(&name, d.to_string(), None, Some(a.as_secs_f64()));
        }
        for d in &r.layers {
            layers.push(&name, d.to_string(), None, None);
        }
        for id in &r.uploads {
            uploads.push(&name, id.to_string(), None, None);
        }
    }
    tags.insert(t, "INSERT INTO snap_tags SELECT * FROM unnest($1::text[], $2::text[], $3::text[])", 3)?;
    revisions.insert(t, "INSERT INTO snap_revisions SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])", 4)?;
    layers.insert(t, "INSERT INTO snap_layers SELECT * FROM unnest($1::text[], $2::text[])", 2)?;
    uploads.insert(t, "INSERT INTO snap_uploads SELECT * FROM unnest($1::text[], $2::text[])", 2)?;
    for chunk in store.blobs.chunks(BATCH) {
        let d: Vec<String> = chunk.iter().map(|b| b.digest.to_string()).collect();
        let s: Vec<i64> = chunk.iter().map(|b| b.size as i64).collect();
        let a: Vec<f64> = chunk.iter().map(|b| b.age.as_secs_f64()).collect();
        t.execute("INSERT INTO snap_blobs SELECT * FROM unnest($1::text[], $2::int8[], $3::float8[])", &[&d, &s, &a])?;
    }
    t.batch_execute(
        "CREATE INDEX ON snap_tags (repo, tag); CREATE INDEX ON snap_revisions (repo, digest);
         CREATE INDEX ON snap_layers (repo, digest); CREATE INDEX ON snap_uploads (repo, id);
         CREATE INDEX ON snap_blobs (digest); ANALYZE snap_tags, snap_revisions, snap_layers, snap_uploads, snap_blobs;",
    )?;
    Ok(())
}

/// Columns of a listing's rows, sent as arrays.
#[derive(Default)]
struct Rows {
    repo: Vec<String>,
    key: Vec<String>,
    digest: Vec<String>,
    age: Vec<f64>,
}

impl Rows {
    fn push(&mut self, repo: &str, key: String, digest: Option<String>, age: Option<f64>) {
        self.repo.push(repo.to_owned());
        self.key.push(key);
        self.digest.extend(digest);
        self.age.extend(age);
    }

    /// Inserts with `sql`, taking the repository, the key and (with 3 columns) the digest or
    /// (with 4) the age.
    fn insert(&self, t: &mut impl GenericClient, sql: &str, columns: usize) -> std::result::Result<(), DbError> {
        for start in (0..self.repo.len()).step_by(BATCH) {
            let end = (start + BATCH).min(self.repo.len());
            let (r, k) = (&self.repo[start..end], &self.key[start..end]);
            match columns {
                3 => t.execute(sql, &[&r, &k, &&self.digest[start..end]])?,
                4 => t.execute(sql, &[&r, &k, &&self.age[start..end]])?,
                _ => t.execute(sql, &[&r, &k])?,
            };
        }
        Ok(())
    }
}

/// (kind, index table, listing table, columns that name a row).
const KINDS: [(&str, &str, &str, &str); 4] = [
    ("tags", "index_tags", "snap_tags", "repo, tag, digest"),
    ("revisions", "index_revisions", "snap_revisions", "repo, digest"),
    ("layers", "index_layers", "snap_layers", "repo, digest"),
    ("uploads", "index_uploads", "snap_uploads", "repo, id"),
];

fn count(t: &mut impl GenericClient, sql: &str, cutoff: SystemTime) -> std::result::Result<u64, DbError> {
    let params: &[&(dyn postgres::types::ToSql + Sync)] = if sql.contains("$1") { &[&cutoff] } else { &[] };
    Ok(t.query_one(sql, params)?.get::<_, i64>(0) as u64)
}

/// How far the index is from the listing (see [`IndexDiff`]). Extra rows count only when
/// written before `cutoff` (younger ones are writes the listing may have missed).
fn compare(t: &mut impl GenericClient, cutoff: SystemTime) -> std::result::Result<IndexDiff, DbError> {
    let mut diff = IndexDiff::default();
    for (kind, index, snap, cols) in KINDS {
        let missing = count(
            t,
            &format!("SELECT count(*) FROM (SELECT {cols} FROM {snap} EXCEPT SELECT {cols} FROM {index}) x"),
            cutoff,
        )?;
        let extra = count(
            t,
            &format!(
                "SELECT count(*) FROM (SELECT {cols} FROM {index} WHERE at < $1 EXCEPT SELECT {cols} FROM {snap}) x"
            ),
            cutoff,
        )?;
        // A tag pointing elsewhere counts as a missing row (the one it points at) and an extra
        // one (where it pointed); `changed` says how many of the missing are such tags.
        let changed = if kind == "tags" {
            count(
                t,
                "SELECT count(*) FROM snap_tags s WHERE EXISTS (SELECT 1 FROM index_tags i \
                 WHERE i.repo = s.repo AND i.tag = s.tag) AND NOT EXISTS (SELECT 1 FROM index_tags i \
                 WHERE i.repo = s.repo AND i.tag = s.tag AND i.digest = s.digest)",
                cutoff,
            )?
        } else {
            0
        };
        diff.kinds.push((kind.to_owned(), missing - changed, extra, changed));
    }
    let missing = count(
        t,
        "SELECT count(*) FROM (SELECT digest FROM snap_blobs EXCEPT SELECT digest FROM index_blobs) x",
        cutoff,
    )?;
    let extra = count(
        t,
        "SELECT count(*) FROM (SELECT digest FROM index_blobs WHERE at < $1 EXCEPT SELECT digest FROM snap_blobs) x",
        cutoff,
    )?;
    diff.kinds.push(("blobs".to_owned(), missing, extra, 0));
    Ok(diff)
}

/// Makes the index agree with the listing, leaving rows written since `cutoff` alone.
fn repair(t: &mut impl GenericClient, cutoff: SystemTime) -> std::result::Result<(), DbError> {
    t.execute(
        "INSERT INTO index_tags (repo, tag, digest) SELECT repo, tag, digest FROM snap_tags ON CONFLICT DO NOTHING",
        &[],
    )?;
    // A revision's time is its link's: GC's untagged policy counts from it.
    t.execute(
        "INSERT INTO index_revisions (repo, digest, at)
         SELECT repo, digest, now() - make_interval(secs => age) FROM snap_revisions
         ON CONFLICT (repo, digest) DO NOTHING",
        &[],
    )?;
    t.execute(
        "INSERT INTO index_layers (repo, digest) SELECT repo, digest FROM snap_layers ON CONFLICT DO NOTHING",
        &[],
    )?;
    t.execute("INSERT INTO index_uploads (repo, id) SELECT repo, id FROM snap_uploads ON CONFLICT DO NOTHING", &[])?;
    t.execute(
        "INSERT INTO index_blobs (digest, size, at) SELECT digest, size, now() - make_interval(secs => age) FROM snap_blobs
         ON CONFLICT (digest) DO UPDATE SET size = EXCLUDED.size WHERE index_blobs.size <> EXCLUDED.size",
        &[],
    )?;
    for (_, index, snap, cols) in KINDS {
        t.execute(
            &format!(
                "DELETE FROM {index} i WHERE at < $1 AND NOT EXISTS (SELECT 1 FROM {snap} s WHERE ({cols}) = (i.{}))",
                qualified(cols)
            ),
            &[&cutoff],
        )?;
    }
    t.execute(
        "DELETE FROM index_blobs i WHERE at < $1 AND NOT EXISTS (SELECT 1 FROM snap_blobs s WHERE s.digest = i.digest)",
        &[&cutoff],
    )?;
    t.execute(
        "DELETE FROM index_manifests m WHERE NOT EXISTS (SELECT 1 FROM index_blobs b WHERE b.digest = m.digest)",
        &[],
    )?;
    Ok(())
}

/// `repo, tag` → `repo, i.tag` (the second column of the index row, for a row comparison).
fn qualified(cols: &str) -> String {
    cols.split(", ").collect::<Vec<_>>().join(", i.")
}
