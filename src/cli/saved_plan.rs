//! Applying a saved plan: options come from the plan unless given again,
//! and the plan is rejected when the commit, an option or a key it touches
//! moved.

use std::path::Path;

use super::commands::{prepare, resolve_settings, CliError, Prepared, Reading};
use super::output::Output;
use super::{ApplyArgs, ChangeArgs, SyncArgs};
use crate::config::{self, FileConfig};
use crate::plan::{self, Plan};
use crate::source;

/// Loads a saved plan and checks that the source commit, the settings and
/// the remote state of every key it touches are as they were. Options not
/// given on the command line, through the environment or by the
/// configuration file come from the plan.
pub(super) async fn load_saved_plan(
    path: &Path,
    args: &ApplyArgs,
    file: &FileConfig,
    given: &[String],
    output: &Output,
) -> Result<(Prepared, Plan), CliError> {
    let plan_error = |message: String| CliError::PlanFile {
        path: path.to_path_buf(),
        message,
    };
    let plan = read_plan(path)?;
    if plan.format != plan::PLAN_FORMAT || plan.version != plan::PLAN_VERSION {
        return Err(plan_error(format!(
            "format {:?} version {} is not a plan this r2sync reads ({} version {})",
            plan.format,
            plan.version,
            plan::PLAN_FORMAT,
            plan::PLAN_VERSION
        )));
    }

    // Settings first: they decide what the source and remote mean.
    let (sync, change) = settings_from_plan(&plan, args, given);
    let file = &file_for_plan(&plan, file);
    let (settings, _, _) = resolve_settings(&sync, Some(&change), file)?;
    let mut reasons: Vec<String> = plan
        .settings
        .differences(&settings)
        .into_iter()
        .map(|difference| format!("configuration changed: {difference}"))
        .collect();
    if plan.source.reference != sync.reference {
        reasons.push(format!(
            "configuration changed: ref: {:?} -> {:?}",
            plan.source.reference, sync.reference
        ));
    }
    if !reasons.is_empty() {
        return Err(CliError::StalePlan { reasons });
    }

    // The ref must still point at the planned commit. A work tree plan has
    // no commit; its documents are checked by their hashes below.
    let cache_dir = sync
        .cache_dir
        .clone()
        .unwrap_or_else(source::default_cache_dir);
    let repo = source::open(&sync.repo, &cache_dir)?;
    if !plan.source.worktree {
        let current = source::resolve_commit(&repo, &plan.source.reference)?.to_string();
        if current != plan.source.commit {
            return Err(CliError::StalePlan {
                reasons: vec![format!(
                    "source moved: {} was {} when planned, now {}",
                    plan.source.reference,
                    plan::short_commit(&plan.source.commit),
                    plan::short_commit(&current)
                )],
            });
        }
    }
    drop(repo);

    // Every key the plan touches must be as the plan saw it.
    let reading = Reading {
        commit: Some(&plan.source.commit),
        create_target: true,
        verify: false,
    };
    let prepared = prepare(&sync, Some(&change), file, output, reading).await?;
    for change in plan
        .changes
        .iter()
        .filter(|change| change.action != plan::Action::Prune)
    {
        let now = prepared
            .actual
            .objects
            .get(&change.key)
            .and_then(|object| object.etag.clone());
        let existed = prepared.actual.objects.contains_key(&change.key);
        let planned_absent = change.action == plan::Action::Create;
        if planned_absent && existed {
            reasons.push(format!(
                "remote changed: {} was created since the plan was made",
                change.key
            ));
        } else if !planned_absent && !existed {
            reasons.push(format!(
                "remote changed: {} was removed since the plan was made",
                change.key
            ));
        } else if !planned_absent && now != change.remote_etag {
            reasons.push(format!(
                "remote changed: {} (ETag {} when planned, now {})",
                change.key,
                change.remote_etag.as_deref().unwrap_or("none"),
                now.as_deref().unwrap_or("none")
            ));
        }
    }
    if !reasons.is_empty() {
        return Err(CliError::StalePlan { reasons });
    }
    output.status(format!(
        "Saved plan {} is still valid. {}",
        path.display(),
        plan::summary_line(&plan.summary)
    ));
    Ok((prepared, plan))
}

/// Reads a saved plan file.
pub(super) fn read_plan(path: &Path) -> Result<Plan, CliError> {
    let plan_error = |message: String| CliError::PlanFile {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|err| plan_error(err.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|err| plan_error(err.to_string()))
}

/// Fills every option that was not given explicitly from the saved plan.
fn settings_from_plan(plan: &Plan, args: &ApplyArgs, given: &[String]) -> (SyncArgs, ChangeArgs) {
    let given = |id: &str| given.iter().any(|explicit| explicit == id);
    let mut sync = args.sync.clone();
    let mut change = args.change.clone();
    let saved = &plan.settings;

    if !given("repo") {
        sync.repo = saved.repo.clone();
    }
    if !given("reference") {
        sync.reference = plan.source.reference.clone();
    }
    if !given("root") {
        sync.root = saved.root.clone();
    }
    if !given("include") {
        sync.include = saved.include.clone();
    }
    if !given("exclude") {
        sync.exclude = saved.exclude.clone();
    }
    if !given("target") {
        sync.target = saved.target.clone();
    }
    if !given("endpoint") {
        sync.endpoint = saved.endpoint.clone();
    }
    if !given("front_matter") {
        sync.front_matter = saved.front_matter;
    }
    if !given("delete_mode") {
        change.delete_mode = saved.delete_mode;
    }
    if !given("archive_prefix") {
        change.archive_prefix = saved.archive_prefix.clone();
    }
    if !given("catalog") {
        sync.catalog = saved.catalog.clone();
    }
    if !given("skip_drafts") {
        sync.skip_drafts = saved.skip_drafts;
    }
    if !given("skip_invalid_paths") {
        sync.skip_invalid_paths = saved.skip_invalid_paths;
    }
    if !given("skip_lfs") {
        sync.skip_lfs = saved.skip_lfs;
    }
    if !given("worktree") {
        sync.worktree = plan.source.worktree;
    }
    if !given("fallback_encoding") {
        sync.fallback_encoding = saved.fallback_encoding.clone();
    }
    if !given("max_document_size") {
        sync.max_document_size = Some(saved.max_document_size);
    }
    if !given("max_metadata_bytes") {
        sync.max_metadata_bytes = Some(saved.max_metadata_bytes);
    }
    (sync, change)
}

/// The configuration file to apply a saved plan with: the file itself when
/// one was found (so that a changed file is noticed), else the plan's rules
/// and front matter mapping.
fn file_for_plan(plan: &Plan, file: &FileConfig) -> FileConfig {
    if file.source.is_some() {
        return file.clone();
    }
    FileConfig {
        rules: plan.settings.rules.clone(),
        front_matter: config::FrontMatterConfig {
            mode: None,
            metadata: plan.settings.front_matter_metadata.clone(),
        },
        ..Default::default()
    }
}
