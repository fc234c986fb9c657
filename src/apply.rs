//! Executing a plan: conditional puts with bounded concurrency, then
//! archives and deletes, then the state manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;

use crate::manifest::DesiredState;
use crate::plan::{self, Action, Change, Plan};
use crate::remote::state::{
    self, ActualState, ManifestStatus, StateEntry, StateManifest, STATE_FORMAT, STATE_VERSION,
};
use crate::remote::{Condition, Remote, RemoteError};

/// The error recorded for changes skipped after a precondition failure.
pub const NOT_ATTEMPTED: &str = "not attempted because another key changed on the remote";

/// The error recorded for changes skipped after a cancel (Ctrl-C, or a
/// lost lock).
pub const CANCELLED: &str = "not attempted because the apply was interrupted";

/// Errors that make a plan impossible to execute at all.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the plan writes {key}, but the source has no such document; make a new plan")]
    MissingDocument { key: String },
    #[error("the plan writes {key} with hash {planned}, but the source now gives {current}; make a new plan")]
    HashMismatch {
        key: String,
        planned: String,
        current: String,
    },
}

/// One key that could not be written or removed.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub key: String,
    pub action: Action,
    pub error: String,
}

/// Requests that changed the bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriteCounts {
    pub put: usize,
    pub copy: usize,
    pub delete: usize,
    pub manifest: usize,
}

impl WriteCounts {
    pub fn total(&self) -> usize {
        self.put + self.copy + self.delete + self.manifest
    }
}

/// The outcome of an apply.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApplyReport {
    pub created: usize,
    pub updated: usize,
    pub archived: usize,
    pub deleted: usize,
    /// Archived copies removed by the retention period.
    pub pruned: usize,
    pub bytes_uploaded: u64,
    pub writes: WriteCounts,
    pub failures: Vec<Failure>,
    /// Set when a precondition failure stopped the apply early.
    pub stopped: Option<String>,
}

impl ApplyReport {
    pub fn succeeded(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Rounds of bulk deletes for keys the server did not confirm.
const DELETE_ROUNDS: usize = 3;

/// The result of one put: the new ETag, if the server sent one.
type PutOutcome = Result<Option<String>, RemoteError>;

/// Execution settings.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    pub concurrency: usize,
    /// When set, no further write starts; requests in flight finish and the
    /// state manifest records what was written.
    pub cancel: Arc<AtomicBool>,
}

/// Executes `plan`. Per-key failures are collected in the report; an
/// `Err` means nothing was written.
pub async fn execute(
    plan: &Plan,
    desired: &DesiredState,
    actual: &ActualState,
    remote: &Remote,
    options: &ApplyOptions,
    on_step: &(dyn Fn() + Sync),
) -> Result<ApplyReport, ApplyError> {
    // Every document the plan writes must be the one that was planned.
    let writes: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|change| matches!(change.action, Action::Create | Action::Update))
        .collect();
    for change in &writes {
        let object =
            desired
                .objects
                .get(&change.key)
                .ok_or_else(|| ApplyError::MissingDocument {
                    key: change.key.clone(),
                })?;
        if change.hash.as_deref() != Some(object.fingerprint.hash.as_str()) {
            return Err(ApplyError::HashMismatch {
                key: change.key.clone(),
                planned: change.hash.clone().unwrap_or_default(),
                current: object.fingerprint.hash.clone(),
            });
        }
    }

    let mut report = ApplyReport::default();
    let mut written: BTreeMap<String, StateEntry> = BTreeMap::new();

    // Puts run first and concurrently. A precondition failure means someone
    // else changed a key, so no further put starts.
    let stop = AtomicBool::new(false);
    let cancel = &options.cancel;
    let outcomes: Vec<(&Change, Option<PutOutcome>)> = futures::stream::iter(writes)
        .map(|change| {
            let stop = &stop;
            async move {
                if stop.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed) {
                    return (change, None);
                }
                let object = &desired.objects[&change.key];
                let condition = match (change.action, &change.remote_etag) {
                    (Action::Create, _) => Condition::Absent,
                    (_, Some(etag)) => Condition::Matches(etag.clone()),
                    (_, None) => Condition::None,
                };
                let result = remote
                    .put(
                        &change.key,
                        object.body.clone(),
                        &object.headers,
                        &object.metadata_with_fingerprint(),
                        condition,
                    )
                    .await;
                let result = match result {
                    Err(err) => confirm_written(remote, &change.key, object, err).await,
                    ok => ok,
                };
                if matches!(
                    result,
                    Err(RemoteError::Precondition { .. } | RemoteError::AlreadyExists { .. })
                ) {
                    stop.store(true, Ordering::Relaxed);
                }
                on_step();
                (change, Some(result))
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;

    for (change, outcome) in outcomes {
        let Some(result) = outcome else {
            let error = if cancel.load(Ordering::Relaxed) {
                CANCELLED
            } else {
                NOT_ATTEMPTED
            };
            report.failures.push(Failure {
                key: change.key.clone(),
                action: change.action,
                error: error.into(),
            });
            continue;
        };
        report.writes.put += 1;
        match result {
            Ok(etag) => {
                let object = &desired.objects[&change.key];
                written.insert(
                    change.key.clone(),
                    StateEntry {
                        fingerprint: object.fingerprint.clone(),
                        etag,
                        size: object.body.len() as u64,
                    },
                );
                report.bytes_uploaded += object.body.len() as u64;
                match change.action {
                    Action::Create => report.created += 1,
                    _ => report.updated += 1,
                }
            }
            Err(err) => {
                if matches!(
                    err,
                    RemoteError::Precondition { .. } | RemoteError::AlreadyExists { .. }
                ) {
                    report.stopped.get_or_insert_with(|| err.to_string());
                }
                tracing::debug!(key = %change.key, error = %err, "put failed");
                report.failures.push(Failure {
                    key: change.key.clone(),
                    action: change.action,
                    error: err.to_string(),
                });
            }
        }
    }

    // Removals wait until every put succeeded, so a failed run never leaves
    // the bucket with fewer documents than before.
    let removals: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|change| {
            matches!(
                change.action,
                Action::Archive | Action::Delete | Action::Prune
            )
        })
        .collect();
    let mut removed = BTreeSet::new();
    if report.failures.is_empty() && !removals.is_empty() {
        removed = remove(&removals, remote, options, &mut report, on_step).await;
    } else if !removals.is_empty() {
        tracing::warn!(
            removals = removals.len(),
            "skipping archives and deletes because some puts failed"
        );
    }

    // The manifest is written last, from what is now known to be in place.
    let entries = next_manifest_entries(plan, desired, actual, written, &removed);
    let manifest_current = actual.manifest_status == ManifestStatus::Loaded
        && actual
            .manifest
            .as_ref()
            .is_some_and(|manifest| manifest.objects == entries);
    if !manifest_current {
        let manifest = StateManifest {
            format: STATE_FORMAT.to_string(),
            version: STATE_VERSION,
            commit: plan.source.commit.clone(),
            repo: plan.source.repo.clone(),
            written_at: Utc::now(),
            objects: entries,
        };
        report.writes.manifest += 1;
        if let Err(err) = state::write_manifest(remote, &manifest).await {
            tracing::debug!(error = %err, "writing the state manifest failed");
            report.failures.push(Failure {
                key: state::manifest_key(remote),
                action: Action::Update,
                error: format!("{err} (the next run reads object metadata instead)"),
            });
        }
    }

    Ok(report)
}

/// After a failed put, finds out whether the write happened anyway: a
/// response lost to a reset or timeout, or a retry that met its own
/// earlier write (412 on a create), must not count as a failure. The key
/// counts as written when its r2sync hash and size are the ones planned.
async fn confirm_written(
    remote: &Remote,
    key: &str,
    object: &crate::manifest::DesiredObject,
    error: RemoteError,
) -> PutOutcome {
    if matches!(
        error,
        RemoteError::InvalidKey { .. } | RemoteError::Setup { .. }
    ) {
        return Err(error);
    }
    match remote.head(key).await {
        Ok(Some(head))
            if head.size == object.body.len() as u64
                && head.metadata.get(crate::manifest::META_HASH)
                    == Some(&object.fingerprint.hash) =>
        {
            tracing::info!("put {key} reported \"{error}\", but the object is in place as planned");
            Ok(head.etag)
        }
        _ => Err(error),
    }
}

/// Archives (copy, then delete) and deletes. Returns the keys removed.
async fn remove(
    removals: &[&Change],
    remote: &Remote,
    options: &ApplyOptions,
    report: &mut ApplyReport,
    on_step: &(dyn Fn() + Sync),
) -> BTreeSet<String> {
    // An archived object is deleted only after its copy is confirmed.
    let archives: Vec<&Change> = removals
        .iter()
        .copied()
        .filter(|change| change.action == Action::Archive)
        .collect();
    let copies: Vec<(&Change, Result<(), RemoteError>)> = futures::stream::iter(archives)
        .map(|change| async move {
            let to = change.archive_key.as_deref().unwrap_or_default();
            (change, remote.copy(&change.key, to).await)
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;

    let mut to_delete: Vec<(String, Action)> = Vec::new();
    for (change, result) in copies {
        report.writes.copy += 1;
        match result {
            Ok(()) => to_delete.push((change.key.clone(), Action::Archive)),
            Err(err) => report.failures.push(Failure {
                key: change.key.clone(),
                action: Action::Archive,
                error: err.to_string(),
            }),
        }
    }
    // Deletes and pruned archive copies go in the same bulk requests, unless
    // the run was cancelled while copying.
    if options.cancel.load(Ordering::Relaxed) {
        return BTreeSet::new();
    }
    to_delete.extend(
        removals
            .iter()
            .filter(|change| matches!(change.action, Action::Delete | Action::Prune))
            .map(|change| (change.key.clone(), change.action)),
    );
    if to_delete.is_empty() {
        return BTreeSet::new();
    }

    let keys: Vec<String> = to_delete.iter().map(|(key, _)| key.clone()).collect();
    let actions: BTreeMap<String, Action> = to_delete.into_iter().collect();
    report.writes.delete += keys.len().div_ceil(1000);
    let mut outcomes = remote.delete_many(&keys).await;

    // object_store does not retry a bulk delete whose connection dropped, and
    // deleting is idempotent, so unconfirmed keys are sent again.
    for _ in 1..DELETE_ROUNDS {
        let failed: Vec<String> = outcomes
            .iter()
            .filter(|(_, result)| matches!(result, Err(RemoteError::Delete { .. })))
            .map(|(key, _)| key.clone())
            .collect();
        if failed.is_empty() {
            break;
        }
        tracing::info!(
            keys = failed.len(),
            "deleting {} unconfirmed keys again",
            failed.len()
        );
        report.writes.delete += failed.len().div_ceil(1000);
        let mut again: BTreeMap<String, Result<(), RemoteError>> =
            remote.delete_many(&failed).await.into_iter().collect();
        for (key, result) in outcomes.iter_mut() {
            if let Some(retried) = again.remove(key) {
                *result = retried;
            }
        }
    }

    let mut removed = BTreeSet::new();
    for (key, result) in outcomes {
        let action = actions.get(&key).copied().unwrap_or(Action::Delete);
        on_step();
        match result {
            Ok(()) => {
                match action {
                    Action::Archive => report.archived += 1,
                    Action::Prune => report.pruned += 1,
                    _ => report.deleted += 1,
                }
                removed.insert(key);
            }
            Err(err) => report.failures.push(Failure {
                key,
                action,
                error: err.to_string(),
            }),
        }
    }
    removed
}

/// The manifest after this apply: unchanged objects as they were, written
/// objects with their new ETags, and removed objects dropped. Entries of
/// objects whose change failed are kept, so that a managed object never
/// looks foreign to the next run.
fn next_manifest_entries(
    plan: &Plan,
    desired: &DesiredState,
    actual: &ActualState,
    written: BTreeMap<String, StateEntry>,
    removed: &BTreeSet<String>,
) -> BTreeMap<String, StateEntry> {
    let mut entries = plan::expected_entries(desired, actual);
    entries.extend(written);

    let previous = actual.manifest.as_ref().map(|manifest| &manifest.objects);
    for change in &plan.changes {
        if entries.contains_key(&change.key) || removed.contains(&change.key) {
            continue;
        }
        if let Some(old) = previous.and_then(|objects| objects.get(&change.key)) {
            entries.insert(change.key.clone(), old.clone());
        }
    }
    entries
}
