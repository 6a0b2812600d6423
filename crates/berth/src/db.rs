//! `berth db migrate|status|import`: the schema of the database several replicas share, and
//! the metadata index filled from the bucket.

use anyhow::{Context, bail};

use std::sync::Mutex;
use std::time::Instant;

use berth_registry::ReindexProgress;

use crate::cli::{DbAction, DbArgs, Where};
use crate::client::Admin;
use crate::config::FileConfig;

pub fn run(args: DbArgs) -> anyhow::Result<()> {
    let Some(path) = &args.config else { bail!("give the config file with the database section (--config FILE)") };
    let file = FileConfig::load(path)?;
    let Some(config) = file.database()? else { bail!("{} has no database section with enabled: true", path.display()) };
    if let DbAction::Import { json } = args.action {
        return import(&args, json);
    }
    let db = berth_db::Db::connect(&config).with_context(|| format!("connecting to {}", config.describe()))?;
    match args.action {
        DbAction::Import { .. } => unreachable!("handled above"),
        DbAction::Migrate => {
            let applied = db.migrate()?;
            if applied.is_empty() {
                println!("{}: the schema is current (version {})", config.describe(), berth_db::latest_schema());
            }
            for m in applied {
                println!("{}: applied migration {} ({})", config.describe(), m.version, m.name);
            }
        }
        DbAction::Status => match db.schema_state()? {
            berth_db::SchemaState::Empty => {
                bail!("{}: no Berth schema; run `berth db migrate`", config.describe())
            }
            berth_db::SchemaState::At { version, latest } if version == latest => {
                println!("{}: schema version {version}, current", config.describe())
            }
            berth_db::SchemaState::At { version, latest } if version < latest => {
                bail!(
                    "{}: schema version {version}, this Berth needs {latest}; run `berth db migrate`",
                    config.describe()
                )
            }
            berth_db::SchemaState::At { version, latest } => bail!(
                "{}: schema version {version} is newer than this Berth knows ({latest}); upgrade Berth",
                config.describe()
            ),
        },
    }
    Ok(())
}

/// `berth db import`: lists the bucket named by the config file's storage section and makes
/// the metadata index agree with it, with replicas serving it or not.
fn import(args: &DbArgs, json: bool) -> anyhow::Result<()> {
    let w =
        Where { url: None, root: None, config: args.config.clone(), user: None, password_stdin: false, cacert: None };
    let admin = Admin::open_maybe_empty(&w)?;
    let Admin::Local { reg, .. } = &admin else { unreachable!("opened directly") };
    let started = Instant::now();
    let last = Mutex::new(Instant::now());
    let progress = |p: ReindexProgress| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        let line = match p {
            ReindexProgress::Repositories { done, total } if done == total || last.elapsed().as_secs() >= 2 => {
                format!("repositories: {done}/{total}")
            }
            ReindexProgress::Blobs { folders, total, blobs } if folders == total || last.elapsed().as_secs() >= 2 => {
                format!("blob folders: {folders}/{total} ({blobs} blobs)")
            }
            ReindexProgress::Index => "writing the index".to_owned(),
            _ => return,
        };
        *last = Instant::now();
        eprintln!("import: {line} ({:.0} s)", started.elapsed().as_secs_f64());
    };
    let diff = reg.index_reconcile(true, &progress)?.expect("a registry with a database has an index");
    if json {
        crate::commands::print_json(&diff)?;
        return Ok(());
    }
    let listed: Vec<String> = diff.listed.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("listed: {}", listed.join(", "));
    for (kind, missing, extra, changed) in &diff.kinds {
        println!("{kind}: {missing} added, {extra} removed, {changed} re-pointed");
    }
    println!("the metadata index is ready ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
