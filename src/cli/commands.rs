//! The commands: each reads the source, reads the bucket, plans, and then
//! prints, applies or reports drift.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use super::merge::merge_file;
use super::output::{write_stdout, Output};
use super::{
    ApplyArgs, ChangeArgs, Cli, Command, ExitCode, ForceUnlockArgs, PlanArgs, PlanFormat, SyncArgs,
};
use crate::apply::{self, ApplyError, ApplyOptions, ApplyReport};
use crate::config::{self, ConfigError, Credentials, FileConfig, Settings, Target, TargetKind};
use crate::manifest::{self, DesiredOptions, DesiredState, ManifestError};
use crate::markdown::{self, NormalizeOptions};
use crate::plan::{self, ArchiveContext, Plan, PlanError, PlanOptions, PlanSource};
use crate::remote::lock::{self, HeldLock, LockError, LockOptions};
use crate::remote::state::{self, ActualState};
use crate::remote::{Remote, RemoteError, RequestPolicy};
use crate::rules::{RuleError, Rules};
use crate::source::{self, SelectOptions, Selector, SourceError};

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Limits(#[from] crate::limits::LimitError),
    #[error("the bucket changed while this apply waited for the lock, so the confirmed plan no longer holds and nothing was applied; run apply again")]
    BucketChanged,
    #[error("interrupted: requests in flight finished and the state manifest records them; run apply again to converge")]
    Interrupted,
    #[error("invalid rules: {0}")]
    Rules(#[from] RuleError),
    #[error("cannot read plan file {path}: {message}")]
    PlanFile { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the saved plan no longer matches, so nothing was applied:\n  {}\napply it with the options it was made with, or make a new plan with `r2sync plan --out FILE`", reasons.join("\n  "))]
    StalePlan { reasons: Vec<String> },
    #[error("the plan comes from the work tree, not a commit, so it would publish uncommitted changes; commit them, or pass --allow-dirty")]
    Dirty,
    #[error("stdin is not a terminal, so apply cannot ask for confirmation; pass --yes or a saved plan file")]
    NeedsConfirmation,
    #[error("apply cancelled; nothing was changed")]
    Cancelled,
    #[error(
        "apply failed for {count} of {total} changes (listed above); run apply again to converge"
    )]
    ApplyFailed { count: usize, total: usize },
    #[error("{} already exists; pass --force to overwrite", paths.join(" and "))]
    Exists { paths: Vec<String> },
    #[error(transparent)]
    Archive(#[from] super::archive::ArchiveError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl CliError {
    /// Returns the process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Interrupted => ExitCode::Interrupted,
            _ => ExitCode::Failure,
        }
    }
}

/// Runs the parsed command and returns the exit code.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let explicit = cli.explicit;
    let json_logs = cli.log_format == super::LogFormat::Json;

    match cli.command {
        Command::Plan(mut args) => {
            let file = FileConfig::load(args.sync.config.as_deref())?;
            merge_file(&mut args.sync, Some(&mut args.change), &file, &explicit)?;
            let machine = args.json || args.format != PlanFormat::Text;
            let output = Output::new(cli.quiet, cli.no_progress, machine, json_logs);
            runtime.block_on(plan_command(&args, &file, &output))
        }
        Command::Apply(mut args) => {
            // A saved plan names the [targets.NAME] table it was made for,
            // which decides what the configuration file contributes.
            if let Some(path) = &args.plan_file {
                if !explicit.iter().any(|id| id == "target_name") {
                    if let Ok(saved) = super::saved_plan::read_plan(path) {
                        args.sync.target_name = saved.settings.target_name;
                    }
                }
            }
            let file = FileConfig::load(args.sync.config.as_deref())?;
            let mut given = merge_file(&mut args.sync, Some(&mut args.change), &file, &explicit)?;
            merge_lock(&mut args.lock, &file, &explicit);
            given.extend(explicit);
            let output = Output::new(cli.quiet, cli.no_progress, args.json, json_logs);
            runtime.block_on(apply_command(&args, &file, &given, &output))
        }
        Command::SyncCloudflareR2(alias) => {
            let mut args = ApplyArgs {
                plan_file: None,
                sync: alias.sync,
                change: alias.change,
                lock: alias.lock,
                yes: true,
                json: false,
                allow_dirty: false,
            };
            let file = FileConfig::load(args.sync.config.as_deref())?;
            let mut given = merge_file(&mut args.sync, Some(&mut args.change), &file, &explicit)?;
            merge_lock(&mut args.lock, &file, &explicit);
            given.extend(explicit);
            let output = Output::new(cli.quiet, cli.no_progress, false, json_logs);
            runtime.block_on(apply_command(&args, &file, &given, &output))
        }
        Command::Check(mut args) => {
            let file = FileConfig::load(args.sync.config.as_deref())?;
            merge_file(&mut args.sync, None, &file, &explicit)?;
            let output = Output::new(cli.quiet, cli.no_progress, args.json, json_logs);
            runtime.block_on(super::check::check_command(&args, &file, &output))
        }
        Command::Doctor(mut args) => {
            let file = FileConfig::load(args.sync.config.as_deref())?;
            merge_file(&mut args.sync, None, &file, &explicit)?;
            runtime.block_on(super::doctor::run(&args))
        }
        Command::Archive(super::ArchiveCommand::Ls(mut args)) => {
            super::archive::merge_archive_options(
                &mut args.sync,
                &mut args.archive_prefix,
                &explicit,
            )?;
            runtime.block_on(super::archive::ls_command(&args))
        }
        Command::Restore(mut args) => {
            let file = super::archive::merge_archive_options(
                &mut args.sync,
                &mut args.archive_prefix,
                &explicit,
            )?;
            merge_lock(&mut args.lock, &file, &explicit);
            runtime.block_on(super::archive::restore_command(&args))
        }
        Command::ForceUnlock(mut args) => {
            let file = FileConfig::load(args.sync.config.as_deref())?;
            merge_file(&mut args.sync, None, &file, &explicit)?;
            runtime.block_on(force_unlock_command(&args))
        }
        Command::Init(args) => super::init::run(&args),
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut command, "r2sync", &mut script);
            write_stdout(&String::from_utf8_lossy(&script));
            Ok(ExitCode::Success)
        }
        Command::Man(args) => {
            let command = <Cli as clap::CommandFactory>::command();
            match &args.dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .and_then(|()| clap_mangen::generate_to(command, dir))
                        .map_err(|source| CliError::Write {
                            path: dir.clone(),
                            source,
                        })?;
                    eprintln!("Wrote manual pages to {}", dir.display());
                }
                None => {
                    let mut page = Vec::new();
                    clap_mangen::Man::new(command)
                        .render(&mut page)
                        .map_err(|source| CliError::Write {
                            path: "stdout".into(),
                            source,
                        })?;
                    write_stdout(&String::from_utf8_lossy(&page));
                }
            }
            Ok(ExitCode::Success)
        }
    }
}

/// Takes `lock-timeout` from the configuration file unless it was given.
pub(super) fn merge_lock(lock: &mut super::LockArgs, file: &FileConfig, explicit: &[String]) {
    if !explicit.iter().any(|id| id == "lock_timeout") {
        if let Some(seconds) = file.lock_timeout {
            lock.lock_timeout = seconds;
        }
    }
}

/// Source, target and both states, ready for planning.
pub(super) struct Prepared {
    pub(super) settings: Settings,
    pub(super) source: PlanSource,
    pub(super) desired: DesiredState,
    pub(super) remote: Remote,
    pub(super) actual: ActualState,
    pub(super) concurrency: usize,
}

/// Resolves endpoint, region and keys for `target` from the options and
/// the environment.
pub(super) fn resolve_credentials(
    args: &SyncArgs,
    target: &Target,
) -> Result<Credentials, CliError> {
    let lookup = |name: &str| std::env::var(name).ok();
    Ok(Credentials::resolve_in(
        target,
        args.endpoint.as_deref(),
        args.jurisdiction,
        args.region.as_deref(),
        &lookup,
    )?)
}

/// Timeouts and retries for requests, from the options.
pub(super) fn request_policy(args: &SyncArgs) -> RequestPolicy {
    RequestPolicy {
        retries: args.retries,
        timeout: Duration::from_secs(args.timeout.max(1)),
        retry_timeout: Duration::from_secs(args.retry_timeout.max(1)),
        max_backoff: Duration::from_secs(args.max_backoff),
        multipart_threshold: args.multipart_threshold,
        part_size: usize::try_from(args.part_size).unwrap_or(usize::MAX),
    }
}

/// Resolves settings from the arguments (already layered over the
/// configuration file) and the file's rules and front matter mapping.
/// `check` passes no change options and gets the defaults.
pub(super) fn resolve_settings(
    args: &SyncArgs,
    change: Option<&ChangeArgs>,
    file: &FileConfig,
) -> Result<(Settings, Target, Credentials), CliError> {
    let target = Target::parse(&args.target)?;
    let credentials = resolve_credentials(args, &target)?;
    let include = if args.include.is_empty() {
        source::DEFAULT_INCLUDE
            .iter()
            .map(|glob| glob.to_string())
            .collect()
    } else {
        args.include.clone()
    };
    let archive_prefix = match change.and_then(|change| change.archive_prefix.as_deref()) {
        Some(prefix) => Some(config::normalize_key_prefix(prefix, "--archive-prefix")?),
        None => None,
    };
    let catalog = match args.catalog.as_ref() {
        Some(key) => {
            Some(config::normalize_key_prefix(key, "--catalog")?).filter(|key| !key.is_empty())
        }
        None => None,
    };
    let fallback_encoding = args.fallback_encoding.clone();
    if let Some(label) = &fallback_encoding {
        if markdown::encoding_for_label(label).is_none() {
            return Err(ConfigError::Option {
                option: "--fallback-encoding",
                value: label.clone(),
                message:
                    "not an encoding label; use a WHATWG label such as windows-1252 or shift_jis"
                        .into(),
            }
            .into());
        }
    }

    let settings = Settings {
        repo: source::redact_url(&args.repo),
        root: config::normalize_root(&args.root)?,
        include,
        exclude: args.exclude.clone(),
        target: target.to_string(),
        endpoint: credentials.endpoint.clone(),
        front_matter: args.front_matter,
        delete_mode: change.map(|change| change.delete_mode).unwrap_or_default(),
        archive_prefix,
        catalog,
        target_name: args.target_name.clone(),
        skip_drafts: args.skip_drafts,
        skip_invalid_paths: args.skip_invalid_paths,
        skip_lfs: args.skip_lfs,
        fallback_encoding,
        max_document_size: args
            .max_document_size
            .unwrap_or(markdown::DEFAULT_MAX_DOCUMENT_BYTES),
        max_metadata_bytes: args
            .max_metadata_bytes
            .unwrap_or(manifest::DEFAULT_MAX_METADATA_BYTES),
        front_matter_metadata: file.front_matter.metadata.clone(),
        rules: file.rules.clone(),
    };
    Ok((settings, target, credentials))
}

/// Options of how `prepare` reads the source and the bucket.
#[derive(Clone, Copy, Default)]
pub(super) struct Reading<'a> {
    /// Commit to read instead of resolving `--ref` (a saved plan's).
    pub(super) commit: Option<&'a str>,
    /// Create a missing local target directory (apply).
    pub(super) create_target: bool,
    /// Compute every object's fingerprint from what it has (check).
    pub(super) verify: bool,
}

/// Reads the commit into the desired state and the bucket into the actual
/// state.
pub(super) async fn prepare(
    args: &SyncArgs,
    change: Option<&ChangeArgs>,
    file: &FileConfig,
    output: &Output,
    reading: Reading<'_>,
) -> Result<Prepared, CliError> {
    let Reading {
        commit,
        create_target,
        verify,
    } = reading;
    let (settings, target, credentials) = resolve_settings(args, change, file)?;
    let started = Instant::now();

    // A bucket is read while the documents are built: the listing waits on
    // the network, one page after another, and the build on the CPU. A
    // local directory is read afterwards, so that a failed build leaves no
    // new directory behind.
    let policy = request_policy(args);
    let concurrency = args.concurrency as usize;
    let early = match target.kind {
        TargetKind::Local { .. } => None,
        _ => {
            let remote = Remote::connect(&target, &credentials, &policy, create_target)?;
            let reader = remote.clone();
            let task = tokio::spawn(async move {
                let listing_started = Instant::now();
                let actual = state::read_actual(&reader, concurrency, verify).await;
                (actual, listing_started.elapsed())
            });
            Some((remote, task))
        }
    };

    // Desired state, from the Git object database.
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(source::default_cache_dir);
    let repo = source::open(&args.repo, &cache_dir)?;
    let selector = Selector::new(&settings.include, &settings.exclude)?;
    let (commit, selection) = if args.worktree {
        // A preview of the work tree; HEAD (if any) only labels the plan.
        let head = source::resolve_commit(&repo, "HEAD")
            .map(|oid| oid.to_string())
            .unwrap_or_default();
        (
            head,
            source::select_worktree_files(&repo, &settings.root, &selector)?,
        )
    } else {
        let commit = match commit {
            Some(commit) => source::resolve_commit(&repo, commit)?,
            None => source::resolve_commit(&repo, &args.reference)?,
        };
        let options = SelectOptions {
            skip_invalid_paths: settings.skip_invalid_paths,
        };
        let selection = source::select_files(&repo, commit, &settings.root, &selector, options)?;
        (commit.to_string(), selection)
    };
    let files = &selection.files;
    let noun = if files.len() == 1 {
        "document"
    } else {
        "documents"
    };
    if args.worktree {
        output.status(format!(
            "Reading {} {noun} from the work tree of {} (uncommitted changes included)",
            files.len(),
            repo.display
        ));
    } else {
        output.status(format!(
            "Reading {} {noun} from {} at {} ({})",
            files.len(),
            repo.display,
            args.reference,
            plan::short_commit(&commit)
        ));
    }
    let options = DesiredOptions {
        prefix: target.prefix.clone(),
        normalize: NormalizeOptions {
            front_matter: settings.front_matter,
            fallback_encoding: settings
                .fallback_encoding
                .as_deref()
                .and_then(markdown::encoding_for_label),
            max_bytes: settings.max_document_size,
        },
        rules: Rules::new(&settings.rules)?,
        front_matter_metadata: settings.front_matter_metadata.clone(),
        skip_drafts: settings.skip_drafts,
        max_metadata_bytes: settings.max_metadata_bytes,
        catalog: settings.catalog.clone(),
        local_target: matches!(target.kind, TargetKind::Local { .. }),
        skip_lfs: settings.skip_lfs,
    };
    let bar = output.progress(files.len() as u64, "normalizing");
    let mut desired = manifest::build(&repo, files, &options, || bar.inc(1))?;
    desired.warnings.splice(0..0, selection.warnings);
    bar.finish_and_clear();
    crate::limits::check(
        &desired,
        &crate::limits::UploadLimits {
            multipart_threshold: args.multipart_threshold,
            part_size: args.part_size,
        },
    )?;
    if !desired.skipped_drafts.is_empty() {
        let count = desired.skipped_drafts.len();
        output.status(format!(
            "Skipped {count} {}.",
            if count == 1 { "draft" } else { "drafts" }
        ));
    }
    tracing::info!(
        documents = desired.objects.len(),
        bytes = desired.total_bytes(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "built desired state"
    );

    // Actual state, from the listing, the manifest and metadata.
    let (remote, actual, listing_elapsed) = match early {
        Some((remote, task)) => {
            let (actual, elapsed) = task
                .await
                .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
            (remote, actual, elapsed)
        }
        None => {
            let remote = Remote::connect(&target, &credentials, &policy, create_target)?;
            if let Some(note) = remote.note() {
                output.status(note);
            }
            let listing_started = Instant::now();
            let actual = state::read_actual(&remote, concurrency, verify).await;
            (remote, actual, listing_started.elapsed())
        }
    };
    let mut actual = actual?;
    if change.is_some_and(|change| change.archive_keep_days.is_some()) {
        let base = plan::archive_base(&archive_context(&remote, &settings, ""));
        actual.archived = remote.list_under(&base).await?;
    }
    tracing::info!(
        objects = actual.objects.len(),
        head_requests = actual.head_requests,
        elapsed_ms = listing_elapsed.as_millis() as u64,
        "read actual state of {remote}"
    );

    let source = PlanSource {
        repo: repo.display.clone(),
        reference: args.reference.clone(),
        commit,
        worktree: args.worktree,
    };
    Ok(Prepared {
        settings,
        source,
        desired,
        remote,
        actual,
        concurrency: args.concurrency as usize,
    })
}

/// Builds the archive location of the target. `stamp` names the folder
/// of this run's copies.
pub(super) fn archive_context(remote: &Remote, settings: &Settings, stamp: &str) -> ArchiveContext {
    ArchiveContext {
        prefix: remote.prefix().to_string(),
        internal_prefix: remote.internal_prefix(),
        archive_prefix: settings.archive_prefix.clone(),
        stamp: stamp.to_string(),
    }
}

/// Makes the plan with the change options of plan and apply.
pub(super) fn plan_with(prepared: &Prepared, change: &ChangeArgs) -> Result<Plan, CliError> {
    make_plan(
        prepared,
        change.max_deletes,
        change.adopt,
        change.archive_keep_days,
    )
}

/// Compares the states and wraps the result into a plan document.
pub(super) fn make_plan(
    prepared: &Prepared,
    max_deletes: usize,
    adopt: bool,
    archive_keep_days: Option<u32>,
) -> Result<Plan, CliError> {
    let created_at = Utc::now();
    let options = PlanOptions {
        delete_mode: prepared.settings.delete_mode,
        max_deletes,
        adopt,
        archive_context: archive_context(
            &prepared.remote,
            &prepared.settings,
            &created_at.format(plan::ARCHIVE_STAMP_FORMAT).to_string(),
        ),
        archive_keep_days,
        now: created_at,
    };
    let diff = plan::diff(&prepared.desired, &prepared.actual, &options)?;
    Ok(Plan::new(
        diff,
        prepared.source.clone(),
        prepared.settings.clone(),
        created_at,
    ))
}

async fn plan_command(
    args: &PlanArgs,
    file: &FileConfig,
    output: &Output,
) -> Result<ExitCode, CliError> {
    let reading = Reading {
        verify: args.change.verify,
        ..Default::default()
    };
    let prepared = prepare(&args.sync, Some(&args.change), file, output, reading).await?;
    let plan = plan_with(&prepared, &args.change)?;

    if let Some(path) = &args.out {
        let json = serde_json::to_vec_pretty(&plan).expect("plan serializes");
        std::fs::write(path, json).map_err(|source| CliError::Write {
            path: path.clone(),
            source,
        })?;
        output.status(format!(
            "Saved plan to {}; apply it with `r2sync apply {}`",
            path.display(),
            path.display()
        ));
    }

    tracing::info!(
        event = "summary",
        create = plan.summary.create,
        update = plan.summary.update,
        archive = plan.summary.archive,
        delete = plan.summary.delete,
        unchanged = plan.summary.unchanged,
        unmanaged = plan.summary.unmanaged,
        "plan finished"
    );
    let format = if args.json {
        PlanFormat::Json
    } else {
        args.format
    };
    match format {
        PlanFormat::Json => print_json(&plan),
        PlanFormat::Markdown => write_stdout(&plan::render_markdown(&plan)),
        PlanFormat::Text => write_stdout(&plan::render(&plan, output.color())),
    }

    if args.detailed_exitcode && plan.has_changes() {
        return Ok(ExitCode::Changes);
    }
    Ok(ExitCode::Success)
}

async fn apply_command(
    args: &ApplyArgs,
    file: &FileConfig,
    given: &[String],
    output: &Output,
) -> Result<ExitCode, CliError> {
    // Plan now, or load a saved plan and prove it still holds.
    let (prepared, plan) = match &args.plan_file {
        Some(path) => super::saved_plan::load_saved_plan(path, args, file, given, output).await?,
        None => {
            let prepared = prepare(
                &args.sync,
                Some(&args.change),
                file,
                output,
                Reading {
                    create_target: true,
                    verify: args.change.verify,
                    ..Default::default()
                },
            )
            .await?;
            let plan = plan_with(&prepared, &args.change)?;
            (prepared, plan)
        }
    };

    if plan.source.worktree && !args.allow_dirty {
        return Err(CliError::Dirty);
    }

    if !plan.has_changes() && !plan.manifest_write {
        if args.json {
            print_json(&ApplyResult::new(&plan, &ApplyReport::default()));
        } else {
            output.status(plan::summary_line(&plan.summary));
        }
        return Ok(ExitCode::Success);
    }

    // A plan made here is shown and confirmed; a saved plan was reviewed
    // when it was made.
    if args.plan_file.is_none() {
        if !args.json && !output.quiet() {
            write_stdout(&plan::render(&plan, output.color()));
        }
        if !args.yes && plan.has_changes() {
            confirm()?;
        }
    }

    // Only one apply at a time: take the target's lock, then make sure the
    // plan still holds.
    let cancel = Arc::new(AtomicBool::new(false));
    let held = take_lock(args, &prepared, &plan, &cancel, output).await?;
    let (prepared, plan) = match recheck_after_lock(args, prepared, plan, &held, output).await {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            release_lock(held.lock, output).await;
            return Ok(ExitCode::Success);
        }
        Err(err) => {
            release_lock(held.lock, output).await;
            return Err(err);
        }
    };

    // Ctrl-C stops new writes; requests in flight finish and the manifest
    // records them before the lock is released.
    let interrupt = tokio::spawn({
        let cancel = cancel.clone();
        let quiet = output.quiet();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.store(true, Ordering::Relaxed);
                if !quiet {
                    eprintln!(
                        "Interrupted: finishing requests in flight, then releasing the lock."
                    );
                }
            }
        }
    });

    let started = Instant::now();
    let bar = output.progress(plan.changes.len() as u64, "applying");
    let result = apply::execute(
        &plan,
        &prepared.desired,
        &prepared.actual,
        &prepared.remote,
        &ApplyOptions {
            concurrency: prepared.concurrency,
            cancel: cancel.clone(),
        },
        &|| bar.inc(1),
    )
    .await;
    bar.finish_and_clear();
    interrupt.abort();
    let lost = held.lock.is_lost();
    release_lock(held.lock, output).await;
    let report = result?;
    tracing::info!(
        created = report.created,
        updated = report.updated,
        archived = report.archived,
        deleted = report.deleted,
        writes = report.writes.total(),
        bytes = report.bytes_uploaded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        failed = report.failures.len(),
        event = "summary",
        "apply finished"
    );

    if args.json {
        print_json(&ApplyResult::new(&plan, &report));
    }
    let (skipped, failures): (Vec<_>, Vec<_>) = report.failures.iter().partition(|failure| {
        failure.error == apply::NOT_ATTEMPTED || failure.error == apply::CANCELLED
    });
    if !skipped.is_empty() {
        let why = if cancel.load(Ordering::Relaxed) {
            "the apply was interrupted"
        } else {
            "a key changed on the remote"
        };
        output.error(format!(
            "{} other changes were not attempted because {why}",
            skipped.len()
        ));
    }
    for failure in failures {
        if failure.error.contains(&failure.key) {
            output.error(&failure.error);
        } else {
            output.error(format!("{}: {}", failure.key, failure.error));
        }
    }
    if let Some(reason) = &report.stopped {
        output.error(format!("stopped early: {reason}"));
    }
    output.status(format!(
        "Applied {}: {} created, {} updated, {} archived, {} deleted{} ({} uploaded, {} write {}) in {:.1}s.",
        plan::short_commit(&plan.source.commit),
        report.created,
        report.updated,
        report.archived,
        report.deleted,
        if report.pruned > 0 {
            format!(", {} archived {} pruned", report.pruned, if report.pruned == 1 { "copy" } else { "copies" })
        } else {
            String::new()
        },
        plan::human_bytes(report.bytes_uploaded),
        report.writes.total(),
        if report.writes.total() == 1 { "request" } else { "requests" },
        started.elapsed().as_secs_f64()
    ));

    if cancel.load(Ordering::Relaxed) && !lost {
        return Err(CliError::Interrupted);
    }
    if !report.succeeded() {
        return Err(CliError::ApplyFailed {
            count: report.failures.len(),
            total: plan.changes.len(),
        });
    }
    Ok(ExitCode::Success)
}

/// The lock an apply holds, and how it was taken.
struct Held {
    lock: HeldLock,
    /// Whether another run held the lock (or an expired claim was replaced),
    /// so the bucket may have changed since planning.
    waited: bool,
}

/// Takes the target's apply lock, waiting up to --lock-timeout.
async fn take_lock(
    args: &ApplyArgs,
    prepared: &Prepared,
    plan: &Plan,
    cancel: &Arc<AtomicBool>,
    output: &Output,
) -> Result<Held, CliError> {
    let options = LockOptions {
        timeout: Duration::from_secs(args.lock.lock_timeout),
        ttl: lock::DEFAULT_TTL,
        operation: "apply".into(),
        commit: plan.source.commit.clone(),
        on_loss: Some(cancel.clone()),
    };
    let on_wait = |holder: &lock::LockInfo| {
        output.status(format!(
            "Waiting up to {} s for the {holder}",
            args.lock.lock_timeout
        ));
    };
    let acquired = lock::acquire(&prepared.remote, &options, &on_wait).await?;
    if !acquired.conditional_writes {
        output.warn(format!(
            "{} ignores conditional writes, so r2sync cannot guarantee that only one apply runs at a time on it",
            prepared.remote
        ));
    }
    if let Some(expired) = &acquired.took_over {
        output.warn(format!("Replaced an expired {expired}"));
    }
    Ok(Held {
        waited: acquired.waited || acquired.took_over.is_some(),
        lock: acquired.lock,
    })
}

async fn release_lock(lock: HeldLock, output: &Output) {
    if let Err(err) = lock.release().await {
        output.warn(format!(
            "cannot release the apply lock ({err}); it expires by itself within {} s",
            lock::DEFAULT_TTL.as_secs()
        ));
    }
}

/// Makes sure the plan still describes the bucket now that the lock is
/// held. When the state manifest is as it was when planning and no other
/// run held the lock, nothing can have changed through r2sync, and one
/// HEAD request proves it. Otherwise the bucket is read again: an
/// unchanged plan goes ahead; a changed one replaces the plan with --yes
/// and stops the apply otherwise. `None` means nothing is left to do.
async fn recheck_after_lock(
    args: &ApplyArgs,
    prepared: Prepared,
    plan: Plan,
    held: &Held,
    output: &Output,
) -> Result<Option<(Prepared, Plan)>, CliError> {
    let manifest_key = state::manifest_key(&prepared.remote);
    let manifest_now = prepared
        .remote
        .head(&manifest_key)
        .await?
        .and_then(|head| head.etag);
    if !held.waited && manifest_now == prepared.actual.manifest_etag {
        return Ok(Some((prepared, plan)));
    }

    tracing::info!("reading the bucket again: another apply ran since planning");
    let mut prepared = prepared;
    prepared.actual =
        state::read_actual(&prepared.remote, prepared.concurrency, args.change.verify).await?;
    let fresh = plan_with(&prepared, &args.change)?;
    if same_changes(&plan, &fresh) {
        return Ok(Some((prepared, plan)));
    }
    if args.plan_file.is_some() || !args.yes {
        return Err(CliError::BucketChanged);
    }
    output.status("The bucket changed while this apply waited for the lock; planned again.");
    if !fresh.has_changes() && !fresh.manifest_write {
        output.status(plan::summary_line(&fresh.summary));
        return Ok(None);
    }
    if !args.json && !output.quiet() {
        write_stdout(&plan::render(&fresh, output.color()));
    }
    Ok(Some((prepared, fresh)))
}

/// Compares the changes of two plans, ignoring the time stamp in archive keys.
fn same_changes(a: &Plan, b: &Plan) -> bool {
    let strip = |plan: &Plan| -> Vec<plan::Change> {
        plan.changes
            .iter()
            .cloned()
            .map(|mut change| {
                change.archive_key = None;
                change
            })
            .collect()
    };
    strip(a) == strip(b)
}

/// `r2sync force-unlock ID`.
async fn force_unlock_command(args: &ForceUnlockArgs) -> Result<ExitCode, CliError> {
    let target = Target::parse(&args.sync.target)?;
    let credentials = resolve_credentials(&args.sync, &target)?;
    let remote = Remote::connect(&target, &credentials, &request_policy(&args.sync), false)?;
    let removed = lock::force_unlock(&remote, &args.id).await?;
    eprintln!("Removed {removed}.");
    Ok(ExitCode::Success)
}

/// The JSON printed by `apply --json`.
#[derive(Serialize)]
struct ApplyResult<'a> {
    format: &'static str,
    version: u32,
    commit: &'a str,
    target: &'a str,
    planned: &'a plan::Summary,
    #[serde(flatten)]
    report: &'a ApplyReport,
    /// HTTP requests of the whole run (listing and reads included), by method.
    requests: std::collections::BTreeMap<String, u64>,
}

impl<'a> ApplyResult<'a> {
    fn new(plan: &'a Plan, report: &'a ApplyReport) -> Self {
        ApplyResult {
            format: "r2sync-apply",
            version: 1,
            commit: &plan.source.commit,
            target: &plan.settings.target,
            planned: &plan.summary,
            report,
            requests: crate::remote::http::request_counts(),
        }
    }
}

fn confirm() -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NeedsConfirmation);
    }
    eprint!("Apply these changes? Only 'yes' is accepted: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|_| CliError::Cancelled)?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(CliError::Cancelled)
    }
}

pub(super) fn print_json(value: &impl Serialize) {
    let json = serde_json::to_string_pretty(value).expect("output serializes");
    write_stdout(&format!("{json}\n"));
}
