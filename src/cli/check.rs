//! `r2sync check`: drift between the bucket and the commit, for CI.

use serde::Serialize;

use super::commands::{make_plan, prepare, print_json, CliError, Reading};
use super::output::{write_stdout, Output};
use super::{CheckArgs, ExitCode};
use crate::config::FileConfig;
use crate::plan;

/// One difference between the bucket and the commit, as `check` reports it.
#[derive(Serialize)]
struct Drift<'a> {
    key: &'a str,
    problem: String,
}

#[derive(Serialize)]
struct CheckResult<'a> {
    format: &'static str,
    version: u32,
    commit: &'a str,
    target: &'a str,
    in_sync: bool,
    drift: Vec<Drift<'a>>,
}

pub(super) async fn check_command(
    args: &CheckArgs,
    file: &FileConfig,
    output: &Output,
) -> Result<ExitCode, CliError> {
    let reading = Reading {
        verify: true,
        ..Default::default()
    };
    let prepared = prepare(&args.sync, None, file, output, reading).await?;
    // Drift is reported whatever its size, and a foreign object in a
    // desired key is drift too.
    let plan = make_plan(&prepared, usize::MAX, true, None)?;

    let drift: Vec<Drift> = plan
        .changes
        .iter()
        .map(|change| Drift {
            key: &change.key,
            problem: match change.action {
                plan::Action::Create => "missing from the bucket".to_string(),
                plan::Action::Update if change.reason == Some(plan::Reason::Adopt) => {
                    "exists but was not written by r2sync (apply needs --adopt to replace it)"
                        .to_string()
                }
                plan::Action::Update => format!(
                    "differs from the commit ({})",
                    change
                        .reason
                        .map(|reason| reason.to_string())
                        .unwrap_or_default()
                ),
                plan::Action::Archive | plan::Action::Delete | plan::Action::Prune => {
                    "in the bucket but not in the commit".to_string()
                }
            },
        })
        .collect();
    let in_sync = drift.is_empty();
    tracing::info!(
        event = "summary",
        in_sync,
        drift = drift.len(),
        "check finished"
    );

    if args.json {
        print_json(&CheckResult {
            format: "r2sync-check",
            version: 1,
            commit: &plan.source.commit,
            target: &plan.settings.target,
            in_sync,
            drift,
        });
    } else if in_sync {
        output.status(format!(
            "In sync: {} matches {} ({} objects).",
            plan.settings.target,
            plan::short_commit(&plan.source.commit),
            plan.summary.unchanged
        ));
    } else {
        write_stdout(&format!(
            "Drift: {} differs from {} in {} {}:\n",
            plan.settings.target,
            plan::short_commit(&plan.source.commit),
            drift.len(),
            if drift.len() == 1 { "key" } else { "keys" }
        ));
        for item in &drift {
            write_stdout(&format!("  {}: {}\n", item.key, item.problem));
        }
        output.status("Run `r2sync apply --verify` with the same options to repair it.");
    }

    Ok(if in_sync {
        ExitCode::Success
    } else {
        ExitCode::Changes
    })
}
