//! `berth copy`: every object of one storage root written to another, key for key, so an
//! operator can move a registry from a disk onto a bucket (or back) and serve it there.
//!
//! Both roots are locked for the whole copy (no server may write to either meanwhile). Objects
//! are copied on as many threads as the slower store asks for; small ones are read whole, large
//! ones streamed through a staged object and renamed into place, so no blob is ever held in
//! memory. Never deletes anything at the destination; copying again overwrites what it copied.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use berth_storage::{Backend, BackendExt, Key, layout};

use crate::cli::CopyArgs;
use crate::config::FileConfig;

/// Objects up to this size are read whole; larger ones are streamed.
const WHOLE: u64 = 32 << 20;
/// Where a streamed object is staged at the destination before its rename.
const STAGING: &str = "berth/copy-staging";

pub fn run(a: CopyArgs) -> anyhow::Result<()> {
    let from_file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let root = a.root.clone().or_else(|| std::env::var("BERTH_ROOT").ok().filter(|v| !v.is_empty()).map(PathBuf::from));
    let from = from_file.storage(root, true)?;
    let to = FileConfig::load(&a.to_config)?.storage(None, true)?;
    if !from.holds_a_root() {
        bail!("{} is not a registry storage root", from.describe());
    }
    if from.describe() == to.describe() {
        bail!("{} is both the source and the destination", from.describe());
    }
    let me = format!("berth copy (pid {})", std::process::id());
    let _locks = [&from, &to]
        .map(|s| match s.lock(&me).with_context(|| format!("locking {}", s.describe()))? {
            Ok(lock) => Ok(lock),
            Err(holder) => Err(anyhow!("{holder} is using {}; stop it first", s.describe())),
        })
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let src = from.open().with_context(|| format!("opening {}", from.describe()))?;
    let dst = to.open().with_context(|| format!("opening {}", to.describe()))?;

    let started = Instant::now();
    let keys = objects(&*src).with_context(|| format!("listing {}", from.describe()))?;
    let workers = src.parallelism().max(dst.parallelism()).min(keys.len().max(1));
    let (next, bytes, done) = (AtomicUsize::new(0), AtomicU64::new(0), AtomicUsize::new(0));
    let staged = AtomicUsize::new(0);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(key) = keys.get(i) else { return Ok(()) };
                        let n = copy_one(&src, &dst, key, &staged).with_context(|| format!("copying {key}"))?;
                        bytes.fetch_add(n, Ordering::Relaxed);
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if d.is_multiple_of(10_000) {
                            eprintln!("copied {d} of {} objects", keys.len());
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("a copy thread panicked"))??;
        }
        Ok(())
    })?;
    println!(
        "copied {} objects ({} bytes) from {} to {} in {:.1} s",
        keys.len(),
        bytes.load(Ordering::Relaxed),
        from.describe(),
        to.describe(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every object key in the store, except its lock and lease (they belong to the process holding
/// them) and leftovers of an earlier copy.
fn objects(store: &dyn Backend) -> anyhow::Result<Vec<Key>> {
    let skip = |k: &str| k == layout::LOCK_FILE || k == layout::LEASE || k.starts_with(STAGING);
    let mut out = Vec::new();
    for top in ["docker", "berth"] {
        let top = Key::new(top)?;
        if let Some(all) = store.list_objects(&top)? {
            for (rel, _) in all {
                out.push(Key::new(format!("{top}/{rel}"))?);
            }
            continue;
        }
        // A store without a recursive listing: walk it, folder by folder.
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            for name in store.list_all(&dir)? {
                let child = Key::new(format!("{dir}/{name}"))?;
                if store.any_below(&child)? {
                    stack.push(child);
                } else if store.exists(&child)? {
                    out.push(child);
                }
            }
        }
    }
    out.retain(|k| !skip(k.as_str()));
    Ok(out)
}

/// Copies one object; returns its size.
fn copy_one(src: &Arc<dyn Backend>, dst: &Arc<dyn Backend>, key: &Key, staged: &AtomicUsize) -> anyhow::Result<u64> {
    let (mut reader, size) = src.open(key, 0)?;
    if size <= WHOLE {
        let mut data = Vec::with_capacity(size as usize);
        reader.read_to_end(&mut data)?;
        dst.put(key, &data)?;
        return Ok(data.len() as u64);
    }
    let tmp = Key::new(format!("{STAGING}/{}-{}", std::process::id(), staged.fetch_add(1, Ordering::Relaxed)))?;
    dst.delete(&tmp)?;
    let mut w = dst.writer(&tmp)?;
    let mut buf = vec![0u8; 8 << 20];
    let mut copied = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])?;
        copied += n as u64;
    }
    w.commit()?;
    if copied != size {
        dst.delete(&tmp)?;
        bail!("read {copied} bytes of {size}");
    }
    dst.rename(&tmp, key)?;
    Ok(copied)
}
