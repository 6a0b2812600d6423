//! `berth db migrate|status`: the schema of the database several replicas share.

use anyhow::{Context, bail};

use crate::cli::{DbAction, DbArgs};
use crate::config::FileConfig;

pub fn run(args: DbArgs) -> anyhow::Result<()> {
    let Some(path) = &args.config else { bail!("give the config file with the database section (--config FILE)") };
    let file = FileConfig::load(path)?;
    let Some(config) = file.database()? else { bail!("{} has no database section with enabled: true", path.display()) };
    let db = berth_db::Db::connect(&config).with_context(|| format!("connecting to {}", config.describe()))?;
    match args.action {
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
