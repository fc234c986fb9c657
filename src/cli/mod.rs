//! Command-line interface: argument definitions and the commands.

mod archive;
mod check;
mod commands;
mod doctor;
mod init;
mod merge;
mod output;
mod saved_plan;

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{DeleteMode, Jurisdiction};
use crate::markdown::FrontMatterMode;

pub use commands::{run, CliError};

/// Default target when none is given: a directory in the current one, so
/// that a first run needs no server and no credentials.
pub const DEFAULT_TARGET: &str = "file://./r2sync-bucket";

/// Process exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Success; for `check` and `plan --detailed-exitcode`, also "no changes".
    Success = 0,
    /// An error.
    Failure = 1,
    /// `check` found drift, or `plan --detailed-exitcode` found changes.
    Changes = 2,
    /// Interrupted by Ctrl-C (SIGINT) after finishing requests in flight.
    Interrupted = 130,
}

/// Publish the Markdown of a Git commit to Cloudflare R2 or any
/// S3-compatible bucket: plan shows what would change, apply converges the
/// bucket, check detects drift.
#[derive(Debug, Parser)]
#[command(name = "r2sync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log more: -v info, -vv debug, -vvv trace. RUST_LOG overrides this.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Print only errors and the requested data.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Never show a progress bar.
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Log format on stderr: text for people, or json with one object per
    /// event (action, key, bytes, latency, attempt) and a final summary.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "R2SYNC_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Ids of the options given on the command line or through the
    /// environment, which win over the configuration file and a saved plan.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Plan output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// Lines like `terraform plan`.
    Text,
    /// The versioned plan document, as saved with --out.
    Json,
    /// Markdown for a pull-request comment or $GITHUB_STEP_SUMMARY.
    Markdown,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute and print the plan: what apply would change.
    Plan(PlanArgs),
    /// Converge the bucket: plan (or read a saved plan), confirm, execute.
    Apply(ApplyArgs),
    /// Detect drift: exit 0 when the bucket matches the commit, 2 when not.
    Check(CheckArgs),
    /// The same as `apply --yes` (for any target), for scripts that expect this name.
    #[command(name = "sync-cloudflare-r2")]
    SyncCloudflareR2(SyncAlias),
    /// Write a commented r2sync.toml and .env.example, then print the next steps.
    Init(InitArgs),
    /// List the archived copies that soft deletes left.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Bring an archived copy of a document back to its key.
    Restore(RestoreArgs),
    /// Remove a stale apply lock left by a run that was killed.
    #[command(name = "force-unlock")]
    ForceUnlock(ForceUnlockArgs),
    /// Check an endpoint and bucket: credentials, listing, writes,
    /// conditional writes, copy, bulk delete and awkward keys.
    Doctor(DoctorArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout, or write one page per
    /// command into a directory.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write r2sync.1 and a page per subcommand (r2sync-plan.1, ...) here.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write the files into.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,

    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub sync: SyncArgs,

    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// List archived copies, oldest first: time, size, original key, copy key.
    Ls(ArchiveLsArgs),
}

#[derive(Debug, Args)]
pub struct ArchiveLsArgs {
    /// Only copies of this key (or path below the target prefix).
    pub key: Option<String>,

    /// Key prefix of the archived copies (default: PREFIX/.r2sync/archive).
    #[arg(long, value_name = "KEY_PREFIX")]
    pub archive_prefix: Option<String>,

    /// Print the copies as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub sync: SyncArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Key of the document (or its path below the target prefix).
    pub key: String,

    /// Restore the newest copy archived at or before this time
    /// (20260102T030405Z or 2026-01-02T03:04:05Z); default: the newest.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,

    /// Replace the object if the key exists.
    #[arg(long)]
    pub overwrite: bool,

    /// Key prefix of the archived copies (default: PREFIX/.r2sync/archive).
    #[arg(long, value_name = "KEY_PREFIX")]
    pub archive_prefix: Option<String>,

    #[command(flatten)]
    pub lock: LockArgs,

    #[command(flatten)]
    pub sync: SyncArgs,
}

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    /// The lock id, as printed by the apply that waits for it.
    pub id: String,

    #[command(flatten)]
    pub sync: SyncArgs,
}

/// Options of the apply lock.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// How long to wait for another apply's lock on the target before
    /// failing, in seconds.
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECONDS",
        env = "R2SYNC_LOCK_TIMEOUT"
    )]
    pub lock_timeout: u64,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options shared by every command: the source, the target and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Repository: a local path (bare or not), a bundle file, or a URL that
    /// git can fetch (https://, ssh://, file://), cached under --cache-dir.
    #[arg(long, default_value = ".", env = "R2SYNC_REPO")]
    pub repo: String,

    /// Branch, tag or commit to publish.
    #[arg(long = "ref", default_value = "HEAD", env = "R2SYNC_REF")]
    pub reference: String,

    /// Subdirectory of the repository whose contents map to keys.
    #[arg(long, default_value = "", env = "R2SYNC_ROOT")]
    pub root: String,

    /// Glob of files to publish, matched below --root, case-insensitively
    /// (repeatable; default: *.md and *.markdown).
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,

    /// Glob of files to leave out (repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// A [targets.NAME] table of the configuration file to use.
    #[arg(long, value_name = "NAME", env = "R2SYNC_TARGET_NAME")]
    pub target_name: Option<String>,

    /// Destination: r2://BUCKET/PREFIX, s3://BUCKET/PREFIX, or a local
    /// directory as file:///ABSOLUTE/DIR or file://./RELATIVE/DIR.
    #[arg(long, default_value = DEFAULT_TARGET, env = "R2SYNC_TARGET")]
    pub target: String,

    /// S3 endpoint URL; for r2:// targets the default comes from R2_ACCOUNT_ID.
    #[arg(long, env = "R2SYNC_ENDPOINT")]
    pub endpoint: Option<String>,

    /// Region to sign requests for (default: AWS_REGION, else us-east-1;
    /// always auto for r2:// targets).
    #[arg(long)]
    pub region: Option<String>,

    /// R2 jurisdiction of the bucket, which selects its endpoint host.
    #[arg(long, value_enum, env = "R2_JURISDICTION")]
    pub jurisdiction: Option<Jurisdiction>,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,

    /// Strip front matter from uploaded bodies, or keep it.
    #[arg(long, value_enum, default_value_t = FrontMatterMode::Strip)]
    pub front_matter: FrontMatterMode,

    /// Retries per request on throttling (429, 503), other 5xx and
    /// connection errors, with exponential backoff.
    #[arg(long, default_value_t = 10)]
    pub retries: usize,

    /// Timeout of one attempt of a request, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,

    /// Time limit of one request with all its retries, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub retry_timeout: u64,

    /// Maximum pause between retries, in seconds. Pauses start at 100 ms
    /// and double, with jitter.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub max_backoff: u64,

    /// Bodies larger than this many bytes are uploaded in parts.
    #[arg(long, default_value_t = 8 * 1024 * 1024, value_name = "BYTES")]
    pub multipart_threshold: u64,

    /// Size of each part of a multipart upload (all parts but the last are
    /// this size; at least 5 MiB).
    #[arg(long, default_value_t = 8 * 1024 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(5 * 1024 * 1024..=5 * 1024 * 1024 * 1024))]
    pub part_size: u64,

    /// Cache directory for repositories fetched from URLs.
    #[arg(long, env = "R2SYNC_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Read the documents from the work tree, uncommitted changes included,
    /// to preview them; apply needs --allow-dirty for such a plan.
    #[arg(long)]
    pub worktree: bool,

    /// Configuration file with rules and defaults (default: ./r2sync.toml if present).
    #[arg(long, value_name = "FILE", env = "R2SYNC_CONFIG")]
    pub config: Option<PathBuf>,

    /// Encoding for files that are not UTF-8, as a WHATWG label such as
    /// windows-1252; without it such files are an error.
    #[arg(long, value_name = "LABEL")]
    pub fallback_encoding: Option<String>,

    /// Largest document accepted, in bytes [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub max_document_size: Option<usize>,

    /// Limit of user metadata per object, names plus values, in bytes
    /// [default: 2048, the S3 limit; R2 allows 8192].
    #[arg(long, value_name = "BYTES")]
    pub max_metadata_bytes: Option<usize>,

    /// Leave out documents whose front matter has `draft: true`.
    #[arg(long)]
    pub skip_drafts: bool,

    /// Skip paths that are not valid UTF-8 (with a warning) instead of failing.
    #[arg(long)]
    pub skip_invalid_paths: bool,

    /// Skip Git LFS pointer files (with a warning) instead of failing; their
    /// content is not in the repository.
    #[arg(long)]
    pub skip_lfs: bool,

    /// Keep a catalog object (JSON Lines, one line per document) at this key
    /// below the target prefix.
    #[arg(long, value_name = "KEY")]
    pub catalog: Option<String>,
}

/// Options that decide what happens to objects, for plan and apply.
#[derive(Debug, Clone, Args)]
pub struct ChangeArgs {
    /// What happens to objects whose source file is gone.
    #[arg(long, value_enum, default_value_t = DeleteMode::Archive)]
    pub delete_mode: DeleteMode,

    /// Where archived objects go (default: PREFIX/.r2sync/archive).
    #[arg(long, value_name = "KEY_PREFIX")]
    pub archive_prefix: Option<String>,

    /// Prune archived copies older than this many days in the same plan
    /// (default: keep them forever).
    #[arg(long, value_name = "DAYS")]
    pub archive_keep_days: Option<u32>,

    /// Reject a plan that archives or deletes more objects than this.
    #[arg(long, default_value_t = 256)]
    pub max_deletes: usize,

    /// Overwrite objects that exist at a desired key but were not written by r2sync.
    #[arg(long)]
    pub adopt: bool,

    /// Read every object's headers and metadata instead of trusting the
    /// state manifest, as check does. This finds and repairs edits that
    /// kept the ETag, such as metadata-only changes.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub sync: SyncArgs,

    #[command(flatten)]
    pub change: ChangeArgs,

    /// Save the plan to FILE for a later `r2sync apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Print the plan as versioned JSON on stdout (the same as --format json).
    #[arg(long)]
    pub json: bool,

    /// Output format of the plan.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,

    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `r2sync plan --out`; without it, plan first.
    pub plan_file: Option<PathBuf>,

    #[command(flatten)]
    pub sync: SyncArgs,

    #[command(flatten)]
    pub change: ChangeArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Apply a plan made from the work tree (--worktree), which may publish
    /// uncommitted changes.
    #[arg(long)]
    pub allow_dirty: bool,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub sync: SyncArgs,

    /// Print the drift report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SyncAlias {
    #[command(flatten)]
    pub sync: SyncArgs,

    #[command(flatten)]
    pub change: ChangeArgs,

    #[command(flatten)]
    pub lock: LockArgs,
}

/// Parses the command line and records, for `apply`, which options were
/// given rather than defaulted.
pub fn parse() -> Result<Cli, clap::Error> {
    let mut matches = Cli::command().try_get_matches()?;

    // Read the value sources before the values are moved out of the matches.
    let explicit: Vec<String> = match matches.subcommand() {
        Some((_, sub)) => sub
            .ids()
            .filter(|id| {
                matches!(
                    sub.value_source(id.as_str()),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(|id| id.to_string())
            .collect(),
        None => Vec::new(),
    };

    let mut cli = Cli::from_arg_matches_mut(&mut matches)?;
    cli.explicit = explicit;
    Ok(cli)
}
