//! Command-line arguments. Flags override environment variables, which override the config
//! file, which overrides the defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Berth, a container image registry that makes deleting safe.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registry (the /v2 API, the admin API, /metrics and /healthz).
    Serve(ServeArgs),
    /// List repositories, or the tags of one.
    Ls(LsArgs),
    /// Show space use: total, shared, and what a delete would free.
    Du(DuArgs),
    /// Delete a tag (REPO:TAG), an image (REPO@DIGEST) or a repository (REPO), into the trash.
    Rm(RmArgs),
    /// List the trash, or purge entries from it.
    Trash(TrashArgs),
    /// Restore a trash entry (ID), the newest entry holding a tag (REPO:TAG), or a repository.
    Restore(RestoreArgs),
    /// Collect garbage: remove what no tag, trash entry or recent push reaches, and report it.
    Gc(GcArgs),
    /// Run the retention policies (`retention:` in the config): which tags go, per repository,
    /// with the rule that kept or dropped each, and what it frees. One trash entry per
    /// repository, so one restore undoes a run there.
    Retention(RetentionArgs),
    /// Check a storage root: broken images, dangling links, corrupt content, stale uploads.
    Fsck(FsckArgs),
    /// Add, change or remove users of an htpasswd file (bcrypt), as auth.htpasswd reads it.
    User(UserArgs),
    /// The PostgreSQL database several replicas share: apply migrations, show where it stands.
    Db(DbArgs),
    /// Copy a storage root, object for object, to another storage (a filesystem root onto an
    /// S3 bucket, or back), in Distribution's layout. Neither may be served meanwhile.
    Copy(CopyArgs),
}

/// `berth db`
#[derive(Debug, Args)]
pub struct DbArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: DbAction,
    /// Config file whose `database:` section names the database.
    #[arg(long, short = 'c', global = true, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `berth db <action>`
#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Apply every migration the database lacks (safe to run from several replicas at once).
    Migrate,
    /// Show the schema version and whether it is the one this Berth needs.
    Status,
    /// Fill the metadata index from the bucket (Distribution's or Berth's), or bring it back
    /// in line with it. Safe while replicas serve the bucket; until it has run once, GC,
    /// accounting and the catalog list the bucket.
    Import {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `berth copy`
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Config file whose `storage:` section names where to copy to.
    #[arg(long, value_name = "FILE")]
    pub to_config: PathBuf,
    /// Storage root to copy from [env: BERTH_ROOT] [default: ./data].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Config file whose `storage:` section names where to copy from.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

/// `berth user`
#[derive(Debug, Args)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: UserAction,
    /// The htpasswd file [default: auth.htpasswd.path of --config].
    #[arg(long, global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Config file naming the htpasswd file (auth.htpasswd.path).
    #[arg(long, short = 'c', global = true, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `berth user <action>`
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user, or set the password of one (asked for twice, or read from stdin).
    Add {
        /// The user name (no `:`, no spaces).
        name: String,
        /// Read the password from stdin's first line.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user.
    Rm {
        /// The user name.
        name: String,
    },
}

/// `berth retention`
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Report what would go; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only repositories this glob matches (`team/**`); all by default.
    #[arg(value_name = "REPO-PATTERN")]
    pub repository: Option<String>,
    #[command(flatten)]
    pub r#where: Where,
}

/// `berth gc`
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Report what would go (blobs, manifests, repositories, uploads, bytes); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep unreferenced blobs younger than this or touched within it, e.g. 1h, 0s [default: gc.grace, 1h].
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Untagged manifests: `keep`, or collect once untagged longer than AGE, e.g. 24h, 0s
    /// [default: gc.untagged, 24h].
    #[arg(long, value_name = "AGE|keep")]
    pub untagged: Option<String>,
    /// With a database: list the bucket instead of reading the metadata index, which also
    /// finds blobs the index never learnt (a replica killed between storing a blob and
    /// recording it).
    #[arg(long)]
    pub list_storage: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub r#where: Where,
}

/// `berth fsck`
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Also hash every blob and compare it with its digest.
    #[arg(long)]
    pub verify_content: bool,
    /// Fix what can be fixed without losing acknowledged data.
    #[arg(long)]
    pub repair: bool,
    /// List every piece of debris, not just how much of each kind there is.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub r#where: Where,
}

/// `berth serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (YAML; accepts CNCF Distribution's config.yml keys).
    #[arg(long, short = 'c', env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Storage root [default: ./data, or storage.filesystem.rootdirectory].
    #[arg(long, env = "BERTH_ROOT")]
    pub root: Option<PathBuf>,
    /// Listen address, HOST:PORT or :PORT [default: :5000, or http.addr].
    #[arg(long, env = "BERTH_ADDR")]
    pub addr: Option<String>,
    /// Log level (error, warn, info, debug, trace) [default: info, or log.level].
    #[arg(long, env = "BERTH_LOG")]
    pub log_level: Option<String>,
}

/// Which Berth a management command talks to: a running server (`--url`, or `BERTH_URL`) or a
/// storage root directly while no server runs (`--root`, or `BERTH_ROOT`; default `./data`).
/// A flag beats an environment variable; `--url` and `--root` together are an error.
#[derive(Debug, Args, Clone)]
pub struct Where {
    /// URL of a running Berth, e.g. http://localhost:5000 [env: BERTH_URL].
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Storage root to work on directly while no server runs [env: BERTH_ROOT] [default: ./data].
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Config file for direct mode (trash.retention and the storage root).
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
    /// With --url: sign in as this user (else with what ~/.docker/config.json holds for the host).
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// With --user: read the password from stdin's first line (else it is asked for).
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// With an https URL: trust the CA certificates in this PEM file (else the usual public CAs).
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
}

/// `berth ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// A repository, to list its tags.
    pub repo: Option<String>,
    /// Print JSON: repository names, or tag names, as strings.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub r#where: Where,
}

/// How `berth du` orders its lines.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SortBy {
    /// What deleting would free, largest first.
    Freed,
    /// Total size, largest first.
    Size,
    /// Name.
    Name,
}

/// `berth du`
#[derive(Debug, Args)]
pub struct DuArgs {
    /// A repository, to show its tags.
    pub repo: Option<String>,
    /// Order of the lines.
    #[arg(long, value_enum, default_value = "freed")]
    pub sort: SortBy,
    /// Print JSON with sizes as byte integers.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub r#where: Where,
}

/// `berth rm`
#[derive(Debug, Args)]
pub struct RmArgs {
    /// REPO:TAG (that tag only), REPO@DIGEST (the image and all its tags), or REPO (everything).
    pub target: String,
    /// Show what would be removed and freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (it never widens what is deleted).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Delete even a platform image of a tagged index, or a layer a manifest still uses.
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Delete on any registry through the standard API instead (URL with scheme).
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// With --registry: also delete the other tags that share the digest.
    #[arg(long, requires = "registry")]
    pub all_tags: bool,
    /// With --registry: user name (else from ~/.docker/config.json) [env: BERTH_REGISTRY_USER].
    #[arg(long, requires = "registry")]
    pub username: Option<String>,
    /// With --registry: password or token [env: BERTH_REGISTRY_PASSWORD].
    #[arg(long, requires = "registry")]
    pub password: Option<String>,
    #[command(flatten)]
    pub r#where: Where,
}

/// `berth trash`
#[derive(Debug, Args)]
pub struct TrashArgs {
    /// Purge instead of listing.
    #[command(subcommand)]
    pub action: Option<TrashAction>,
    /// Print JSON: per entry its id, repository, digests and tags.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub r#where: Where,
}

/// `berth trash <action>`
#[derive(Debug, Subcommand)]
pub enum TrashAction {
    /// Remove an entry (or every entry) for good; its content becomes collectable.
    Purge {
        /// The entry; without it, every entry (asks for confirmation unless --yes).
        id: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `berth restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A trash entry id, REPO:TAG (the newest entry holding that tag, with all its tags), or
    /// REPO (the newest delete of that repository).
    pub target: String,
    /// Overwrite tags that were re-pushed since the delete.
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub r#where: Where,
}
