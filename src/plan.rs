//! The planner: a pure comparison of the desired state with the actual
//! state, and the plan document that `plan --out` saves and `apply` reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{DeleteMode, Settings};
use crate::manifest::{DesiredState, Fingerprint};
use crate::remote::state::{ActualState, ManifestStatus, Ownership, StateEntry};

pub const PLAN_FORMAT: &str = "r2sync-plan";
pub const PLAN_VERSION: u32 = 1;

/// The action planned for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Archive,
    Delete,
    /// Removal of an archived copy older than `--archive-keep-days`.
    Prune,
}

/// The reason an existing object is updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The body differs.
    Content,
    /// The body is the same but Content-Type differs.
    Headers,
    /// Body and headers are the same but user metadata differs.
    Metadata,
    /// The object lost its r2sync metadata: someone replaced it.
    Replaced,
    /// An object r2sync did not write is taken over (`--adopt`).
    Adopt,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Content => "content",
            Reason::Headers => "headers",
            Reason::Metadata => "metadata",
            Reason::Replaced => "replaced outside r2sync",
            Reason::Adopt => "adopt",
        })
    }
}

/// One planned change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<Reason>,
    /// Source path of the document written (creates and updates).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_path: Option<String>,
    /// Size of the body written, or of the object removed.
    pub bytes: u64,
    /// Fingerprint hash of what is written (creates and updates).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hash: Option<String>,
    /// ETag of the object when planned; `None` means the key was absent.
    pub remote_etag: Option<String>,
    /// Key of the archived copy (archives only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub archive_key: Option<String>,
}

/// Counts per action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub archive: usize,
    pub delete: usize,
    /// Archived copies removed by the retention period.
    #[serde(default)]
    pub prune: usize,
    pub unchanged: usize,
    pub unmanaged: usize,
}

/// The origin of the plan's documents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSource {
    pub repo: String,
    pub reference: String,
    /// The commit read, or for a work tree preview the commit at HEAD.
    pub commit: String,
    /// The documents come from the work tree, uncommitted changes included.
    #[serde(default)]
    pub worktree: bool,
}

/// A complete plan, as printed with `--json` and saved with `--out`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub source: PlanSource,
    pub settings: Settings,
    pub settings_fingerprint: String,
    pub changes: Vec<Change>,
    pub summary: Summary,
    /// Keys under the prefix that r2sync did not write; never touched.
    pub unmanaged: Vec<String>,
    /// Whether applying writes the state manifest.
    pub manifest_write: bool,
    pub warnings: Vec<String>,
}

impl Plan {
    /// Wraps a comparison into a plan document.
    pub fn new(
        diff: Diff,
        source: PlanSource,
        settings: Settings,
        created_at: DateTime<Utc>,
    ) -> Self {
        let summary = summarize(&diff);
        Plan {
            format: PLAN_FORMAT.to_string(),
            version: PLAN_VERSION,
            created_at,
            source,
            settings_fingerprint: settings.fingerprint(),
            settings,
            changes: diff.changes,
            summary,
            unmanaged: diff.unmanaged,
            manifest_write: diff.manifest_write,
            warnings: diff.warnings,
        }
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// Planner options that are not part of the desired state.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub delete_mode: DeleteMode,
    pub max_deletes: usize,
    pub adopt: bool,
    pub archive_context: ArchiveContext,
    /// Archived copies older than this many days are pruned.
    pub archive_keep_days: Option<u32>,
    /// The time the retention period counts back from.
    pub now: DateTime<Utc>,
}

/// What the archive key depends on.
#[derive(Clone, Debug)]
pub struct ArchiveContext {
    pub prefix: String,
    pub internal_prefix: String,
    pub archive_prefix: Option<String>,
    /// UTC time of the plan, as `YYYYMMDDTHHMMSSZ`.
    pub stamp: String,
}

/// Format of the time stamp folder of archived copies.
pub const ARCHIVE_STAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Builds `<archive base>/<stamp>/<key below the prefix>`.
pub fn archive_key(context: &ArchiveContext, key: &str) -> String {
    let relative = key
        .strip_prefix(&context.prefix)
        .map(|rest| rest.trim_start_matches('/'))
        .unwrap_or(key);
    format!("{}/{}/{relative}", archive_base(context), context.stamp)
}

/// Returns the folder of the archived copies, without a trailing slash.
pub fn archive_base(context: &ArchiveContext) -> String {
    match &context.archive_prefix {
        Some(prefix) => prefix.trim_end_matches('/').to_string(),
        None => format!("{}/archive", context.internal_prefix),
    }
}

/// One archived copy of a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArchivedCopy {
    /// Key of the copy.
    pub key: String,
    /// Key the document had when it was archived.
    pub original: String,
    pub archived_at: DateTime<Utc>,
    pub size: u64,
}

/// Reads an archive key back into the copy it names, or `None` for a key
/// that r2sync did not put there.
pub fn parse_archived(context: &ArchiveContext, key: &str, size: u64) -> Option<ArchivedCopy> {
    let rest = key
        .strip_prefix(&archive_base(context))?
        .strip_prefix('/')?;
    let (stamp, relative) = rest.split_once('/')?;
    let archived_at = chrono::NaiveDateTime::parse_from_str(stamp, ARCHIVE_STAMP_FORMAT)
        .ok()?
        .and_utc();
    Some(ArchivedCopy {
        key: key.to_string(),
        original: crate::manifest::object_key(&context.prefix, relative),
        archived_at,
        size,
    })
}

/// Conditions that stop planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the plan removes {count} objects, more than --max-deletes {max}; check --root and --include, or raise --max-deletes")]
    TooManyDeletes { count: usize, max: usize },
    #[error("{} that r2sync did not write would be overwritten: {}; remove {} or pass --adopt", count_noun(keys.len(), "object"), preview(keys), if keys.len() == 1 { "it" } else { "them" })]
    Unmanaged { keys: Vec<String> },
}

fn count_noun(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn preview(keys: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = keys
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        let _ = write!(text, " and {} more", keys.len() - SHOWN);
    }
    text
}

/// The outcome of a comparison, before it is wrapped into a [`Plan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub changes: Vec<Change>,
    pub unchanged: usize,
    pub unmanaged: Vec<String>,
    pub manifest_write: bool,
    pub warnings: Vec<String>,
}

/// Compares desired and actual state. Pure: no I/O.
pub fn diff(
    desired: &DesiredState,
    actual: &ActualState,
    options: &PlanOptions,
) -> Result<Diff, PlanError> {
    let mut result = Diff {
        warnings: desired.warnings.clone(),
        ..Default::default()
    };
    let mut conflicts = Vec::new();

    // Creates and updates, in key order.
    for (key, object) in &desired.objects {
        let write = |action, reason| Change {
            key: key.clone(),
            action,
            reason,
            source_path: Some(object.source_path.clone()),
            bytes: object.body.len() as u64,
            hash: Some(object.fingerprint.hash.clone()),
            remote_etag: actual
                .objects
                .get(key)
                .and_then(|existing| existing.etag.clone()),
            archive_key: None,
        };
        match actual.objects.get(key) {
            None => result.changes.push(write(Action::Create, None)),
            Some(existing) if existing.ownership == Ownership::Unmanaged => {
                if options.adopt {
                    result
                        .changes
                        .push(write(Action::Update, Some(Reason::Adopt)));
                } else {
                    conflicts.push(key.clone());
                }
            }
            Some(existing) => match &existing.fingerprint {
                Some(current) if current.hash == object.fingerprint.hash => result.unchanged += 1,
                Some(current) => {
                    let reason = update_reason(current, &object.fingerprint);
                    result.changes.push(write(Action::Update, Some(reason)));
                }
                None => result
                    .changes
                    .push(write(Action::Update, Some(Reason::Replaced))),
            },
        }
    }
    if !conflicts.is_empty() {
        return Err(PlanError::Unmanaged { keys: conflicts });
    }

    // Removals of managed objects whose source is gone.
    let stale: Vec<(&String, &crate::remote::state::ActualObject)> = actual
        .objects
        .iter()
        .filter(|(key, object)| {
            object.ownership == Ownership::Managed && !desired.objects.contains_key(*key)
        })
        .collect();
    if desired.objects.is_empty() {
        let hint = if desired.skipped_drafts.is_empty() {
            "check --root and --include".to_string()
        } else {
            format!(
                "all {} selected documents are drafts",
                desired.skipped_drafts.len()
            )
        };
        result.warnings.push(format!(
            "the source selects no files, so nothing is removed ({} managed objects kept); {hint}",
            stale.len()
        ));
    } else {
        if stale.len() > options.max_deletes {
            return Err(PlanError::TooManyDeletes {
                count: stale.len(),
                max: options.max_deletes,
            });
        }
        for (key, object) in stale {
            let (action, archive_to) = match options.delete_mode {
                DeleteMode::Archive => (
                    Action::Archive,
                    Some(archive_key(&options.archive_context, key)),
                ),
                DeleteMode::Delete => (Action::Delete, None),
            };
            result.changes.push(Change {
                key: key.clone(),
                action,
                reason: None,
                source_path: None,
                bytes: object.size,
                hash: None,
                remote_etag: object.etag.clone(),
                archive_key: archive_to,
            });
        }
    }

    // Archived copies past the retention period.
    if let Some(days) = options.archive_keep_days {
        let cutoff = options.now - chrono::Duration::days(i64::from(days));
        for listed in &actual.archived {
            let Some(copy) = parse_archived(&options.archive_context, &listed.key, listed.size)
            else {
                continue;
            };
            if copy.archived_at < cutoff {
                result.changes.push(Change {
                    key: copy.key,
                    action: Action::Prune,
                    reason: None,
                    source_path: None,
                    bytes: copy.size,
                    hash: None,
                    remote_etag: listed.etag.clone(),
                    archive_key: None,
                });
            }
        }
    }

    result.unmanaged = actual
        .objects
        .iter()
        .filter(|(key, object)| {
            object.ownership == Ownership::Unmanaged && !desired.objects.contains_key(*key)
        })
        .map(|(key, _)| key.clone())
        .collect();

    result.manifest_write = !result.changes.is_empty() || !manifest_is_current(desired, actual);
    Ok(result)
}

fn update_reason(current: &Fingerprint, desired: &Fingerprint) -> Reason {
    if current.body != desired.body {
        Reason::Content
    } else if current.headers != desired.headers {
        Reason::Headers
    } else {
        Reason::Metadata
    }
}

/// The manifest is current when it has exactly one entry per desired key,
/// each matching what the listing and metadata show.
fn manifest_is_current(desired: &DesiredState, actual: &ActualState) -> bool {
    let nothing_to_record = desired.objects.is_empty()
        && actual
            .objects
            .values()
            .all(|object| object.ownership == Ownership::Unmanaged);
    if actual.manifest_status == ManifestStatus::Missing && nothing_to_record {
        return true;
    }
    if actual.manifest_status != ManifestStatus::Loaded {
        return false;
    }
    let Some(manifest) = &actual.manifest else {
        return false;
    };
    expected_entries(desired, actual) == manifest.objects
}

/// Manifest entries describing the desired objects that are already in place.
pub fn expected_entries(
    desired: &DesiredState,
    actual: &ActualState,
) -> BTreeMap<String, StateEntry> {
    desired
        .objects
        .iter()
        .filter_map(|(key, object)| {
            let existing = actual.objects.get(key)?;
            let current = existing.fingerprint.as_ref()?;
            (current.hash == object.fingerprint.hash).then(|| {
                (
                    key.clone(),
                    StateEntry {
                        fingerprint: current.clone(),
                        etag: existing.etag.clone(),
                        size: existing.size,
                    },
                )
            })
        })
        .collect()
}

/// Counts changes per action.
pub fn summarize(diff: &Diff) -> Summary {
    let mut summary = Summary {
        unchanged: diff.unchanged,
        unmanaged: diff.unmanaged.len(),
        ..Default::default()
    };
    for change in &diff.changes {
        match change.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Archive => summary.archive += 1,
            Action::Delete => summary.delete += 1,
            Action::Prune => summary.prune += 1,
        }
    }
    summary
}

/// Formats a byte count for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Renders the plan like `terraform plan`: one line per change with a sign,
/// then a summary line.
pub fn render(plan: &Plan, color: bool) -> String {
    let style =
        |text: String, make: fn(console::StyledObject<String>) -> console::StyledObject<String>| {
            make(console::style(text)).force_styling(color).to_string()
        };

    let mut out = String::new();
    if plan.source.worktree {
        let _ = writeln!(
            out,
            "Plan for the work tree of {} (not a commit; uncommitted changes included) -> {}",
            plan.source.repo, plan.settings.target
        );
    } else {
        let _ = writeln!(
            out,
            "Plan for {} at {} ({}) -> {}",
            plan.source.repo,
            plan.source.reference,
            short_commit(&plan.source.commit),
            plan.settings.target
        );
    }
    for change in &plan.changes {
        let line = match change.action {
            Action::Create => style(
                format!("  + {} ({})", change.key, human_bytes(change.bytes)),
                |s| s.green(),
            ),
            Action::Update => style(
                format!(
                    "  ~ {} ({}, {})",
                    change.key,
                    change
                        .reason
                        .map(|reason| reason.to_string())
                        .unwrap_or_default(),
                    human_bytes(change.bytes)
                ),
                |s| s.yellow(),
            ),
            Action::Archive => style(
                format!(
                    "  > {} (archive to {})",
                    change.key,
                    change.archive_key.as_deref().unwrap_or("?")
                ),
                |s| s.magenta(),
            ),
            Action::Delete => style(format!("  - {}", change.key), |s| s.red()),
            Action::Prune => style(
                format!("  - {} (archived copy past retention)", change.key),
                |s| s.red(),
            ),
        };
        let _ = writeln!(out, "{line}");
    }
    for key in &plan.unmanaged {
        let _ = writeln!(out, "  ? {key} (not written by r2sync; left alone)");
    }
    if plan.manifest_write && !plan.has_changes() {
        let _ = writeln!(
            out,
            "The state manifest will be rewritten; no document changes."
        );
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(out, "{}", summary_line(&plan.summary));
    out
}

/// Changes shown before a Markdown plan folds its table into a
/// collapsed `<details>` block.
const MARKDOWN_OPEN_ROWS: usize = 20;

/// Renders the plan as Markdown for a pull-request comment or a GitHub step
/// summary: a heading with the counts, the source and target, and a table
/// of changes, collapsed when long.
pub fn render_markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### r2sync plan\n");
    let _ = writeln!(out, "{}\n", summary_line(&plan.summary));
    let _ = writeln!(
        out,
        "Source {} at {} (`{}`), target {}.\n",
        markdown_code(&plan.source.repo),
        markdown_code(&plan.source.reference),
        short_commit(&plan.source.commit),
        markdown_code(&plan.settings.target)
    );

    if plan.has_changes() {
        let mut table = String::from("| | key | change |\n|---|---|---|\n");
        for change in &plan.changes {
            let (sign, text) = match change.action {
                Action::Create => ("+", format!("create ({})", human_bytes(change.bytes))),
                Action::Update => (
                    "~",
                    format!(
                        "update: {} ({})",
                        change
                            .reason
                            .map(|reason| reason.to_string())
                            .unwrap_or_default(),
                        human_bytes(change.bytes)
                    ),
                ),
                Action::Archive => (
                    ">",
                    format!(
                        "archive to {}",
                        markdown_code(change.archive_key.as_deref().unwrap_or("?"))
                    ),
                ),
                Action::Delete => ("-", "delete".to_string()),
                Action::Prune => ("-", "prune archived copy".to_string()),
            };
            let _ = writeln!(
                table,
                "| {sign} | {} | {text} |",
                markdown_code(&change.key)
            );
        }
        if plan.changes.len() > MARKDOWN_OPEN_ROWS {
            let _ = writeln!(
                out,
                "<details><summary>{} changes</summary>\n\n{table}\n</details>\n",
                plan.changes.len()
            );
        } else {
            let _ = writeln!(out, "{table}");
        }
    }
    if !plan.unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "{} under the prefix {} not written by r2sync and {} left alone.\n",
            count_noun(plan.unmanaged.len(), "object"),
            if plan.unmanaged.len() == 1 {
                "was"
            } else {
                "were"
            },
            if plan.unmanaged.len() == 1 {
                "is"
            } else {
                "are"
            }
        );
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "> **Warning:** {}\n", warning.replace('\n', " "));
    }
    out
}

/// A Markdown code span that survives pipes (table cells) and backticks.
fn markdown_code(text: &str) -> String {
    let escaped = text.replace('|', "\\|");
    if escaped.contains('`') {
        format!("`` {escaped} ``")
    } else {
        format!("`{escaped}`")
    }
}

/// Formats the counts as one line ending in a period.
pub fn summary_line(summary: &Summary) -> String {
    if summary.create + summary.update + summary.archive + summary.delete + summary.prune == 0 {
        return format!(
            "No changes. {} unchanged, {} unmanaged.",
            summary.unchanged, summary.unmanaged
        );
    }
    let prune = if summary.prune > 0 {
        let noun = if summary.prune == 1 { "copy" } else { "copies" };
        format!(", {} archived {noun} to prune", summary.prune)
    } else {
        String::new()
    };
    format!(
        "Plan: {} to create, {} to update, {} to archive, {} to delete{prune}; {} unchanged, {} unmanaged.",
        summary.create, summary.update, summary.archive, summary.delete, summary.unchanged, summary.unmanaged
    )
}

pub fn short_commit(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{content_type_headers, DesiredObject, MARKDOWN_CONTENT_TYPE, META_TITLE};
    use crate::remote::state::{ActualObject, StateManifest};
    use bytes::Bytes;

    fn desired_object(key: &str, body: &str, title: &str) -> DesiredObject {
        DesiredObject::new(
            key.to_string(),
            format!("src/{key}"),
            Bytes::from(body.to_string()),
            content_type_headers(MARKDOWN_CONTENT_TYPE),
            BTreeMap::from([(META_TITLE.to_string(), title.to_string())]),
        )
    }

    fn desired(objects: &[DesiredObject]) -> DesiredState {
        DesiredState {
            objects: objects
                .iter()
                .map(|object| (object.key.clone(), object.clone()))
                .collect(),
            ..Default::default()
        }
    }

    fn managed(object: &DesiredObject, etag: &str) -> ActualObject {
        ActualObject {
            etag: Some(etag.to_string()),
            size: object.body.len() as u64,
            ownership: Ownership::Managed,
            fingerprint: Some(object.fingerprint.clone()),
        }
    }

    fn actual(objects: Vec<(&str, ActualObject)>) -> ActualState {
        ActualState {
            objects: objects
                .into_iter()
                .map(|(key, object)| (key.to_string(), object))
                .collect(),
            manifest_status: ManifestStatus::Missing,
            manifest: None,
            manifest_etag: None,
            head_requests: 0,
            archived: Vec::new(),
        }
    }

    fn options(delete_mode: DeleteMode) -> PlanOptions {
        PlanOptions {
            delete_mode,
            max_deletes: 2,
            adopt: false,
            archive_context: ArchiveContext {
                prefix: "docs".into(),
                internal_prefix: "docs/.r2sync".into(),
                archive_prefix: None,
                stamp: "20260101T000000Z".into(),
            },
            archive_keep_days: None,
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn actions(diff: &Diff) -> Vec<(String, Action, Option<Reason>)> {
        diff.changes
            .iter()
            .map(|change| (change.key.clone(), change.action, change.reason))
            .collect()
    }

    #[test]
    fn empty_bucket_creates_everything() {
        let a = desired_object("docs/a.md", "A", "A");
        let diff = diff(
            &desired(&[a]),
            &actual(vec![]),
            &options(DeleteMode::Delete),
        )
        .unwrap();
        assert_eq!(
            actions(&diff),
            vec![("docs/a.md".into(), Action::Create, None)]
        );
        assert!(diff.manifest_write);
    }

    #[test]
    fn update_reasons_name_the_part() {
        let old_body = desired_object("docs/a.md", "old", "T");
        let old_title = desired_object("docs/b.md", "same", "Old");
        let mut old_type = desired_object("docs/c.md", "same", "T");
        old_type.fingerprint = crate::manifest::fingerprint(
            b"same",
            &content_type_headers("text/plain"),
            &old_type.metadata,
        );

        let new = [
            desired_object("docs/a.md", "new", "T"),
            desired_object("docs/b.md", "same", "New"),
            desired_object("docs/c.md", "same", "T"),
        ];
        let state = actual(vec![
            ("docs/a.md", managed(&old_body, "e1")),
            ("docs/b.md", managed(&old_title, "e2")),
            ("docs/c.md", managed(&old_type, "e3")),
        ]);
        let diff = diff(&desired(&new), &state, &options(DeleteMode::Delete)).unwrap();
        assert_eq!(
            actions(&diff),
            vec![
                ("docs/a.md".into(), Action::Update, Some(Reason::Content)),
                ("docs/b.md".into(), Action::Update, Some(Reason::Metadata)),
                ("docs/c.md".into(), Action::Update, Some(Reason::Headers)),
            ]
        );
        assert_eq!(diff.changes[0].remote_etag.as_deref(), Some("e1"));
    }

    #[test]
    fn unchanged_with_current_manifest_writes_nothing() {
        let a = desired_object("docs/a.md", "A", "A");
        let mut state = actual(vec![("docs/a.md", managed(&a, "e1"))]);
        let want = desired(&[a]);
        state.manifest_status = ManifestStatus::Loaded;
        state.manifest = Some(StateManifest {
            format: "r2sync-state".into(),
            version: 1,
            commit: "c".into(),
            repo: "r".into(),
            written_at: Utc::now(),
            objects: expected_entries(&want, &state),
        });
        let diff = diff(&want, &state, &options(DeleteMode::Delete)).unwrap();
        assert!(diff.changes.is_empty());
        assert_eq!(diff.unchanged, 1);
        assert!(!diff.manifest_write);
    }

    #[test]
    fn missing_manifest_is_rewritten_without_uploads() {
        let a = desired_object("docs/a.md", "A", "A");
        let state = actual(vec![("docs/a.md", managed(&a, "e1"))]);
        let diff = diff(&desired(&[a]), &state, &options(DeleteMode::Delete)).unwrap();
        assert!(diff.changes.is_empty());
        assert!(diff.manifest_write);
    }

    #[test]
    fn removed_sources_are_archived() {
        let a = desired_object("docs/a.md", "A", "A");
        let gone = desired_object("docs/sub/gone.md", "G", "G");
        let state = actual(vec![
            ("docs/a.md", managed(&a, "e1")),
            ("docs/sub/gone.md", managed(&gone, "e2")),
        ]);
        let diff = diff(&desired(&[a]), &state, &options(DeleteMode::Archive)).unwrap();
        assert_eq!(diff.changes.len(), 1);
        assert_eq!(diff.changes[0].action, Action::Archive);
        assert_eq!(
            diff.changes[0].archive_key.as_deref(),
            Some("docs/.r2sync/archive/20260101T000000Z/sub/gone.md")
        );
    }

    #[test]
    fn unmanaged_objects_are_listed_not_deleted() {
        let a = desired_object("docs/a.md", "A", "A");
        let foreign = ActualObject {
            etag: Some("x".into()),
            size: 3,
            ownership: Ownership::Unmanaged,
            fingerprint: None,
        };
        let state = actual(vec![
            ("docs/a.md", managed(&a, "e1")),
            ("docs/logo.png", foreign),
        ]);
        let diff = diff(&desired(&[a]), &state, &options(DeleteMode::Delete)).unwrap();
        assert!(diff.changes.is_empty());
        assert_eq!(diff.unmanaged, vec!["docs/logo.png".to_string()]);
    }

    #[test]
    fn unmanaged_key_in_the_way_stops_the_plan() {
        let a = desired_object("docs/a.md", "A", "A");
        let foreign = ActualObject {
            etag: Some("x".into()),
            size: 3,
            ownership: Ownership::Unmanaged,
            fingerprint: None,
        };
        let state = actual(vec![("docs/a.md", foreign)]);
        let err = diff(
            &desired(std::slice::from_ref(&a)),
            &state,
            &options(DeleteMode::Delete),
        )
        .unwrap_err();
        assert!(err.to_string().contains("docs/a.md"), "{err}");

        let mut adopt = options(DeleteMode::Delete);
        adopt.adopt = true;
        let adopted = diff(&desired(&[a]), &state, &adopt).unwrap();
        assert_eq!(adopted.changes[0].reason, Some(Reason::Adopt));
    }

    #[test]
    fn replaced_object_is_updated() {
        let a = desired_object("docs/a.md", "A", "A");
        let mut replaced = managed(&a, "other");
        replaced.fingerprint = None;
        let state = actual(vec![("docs/a.md", replaced)]);
        let diff = diff(&desired(&[a]), &state, &options(DeleteMode::Delete)).unwrap();
        assert_eq!(diff.changes[0].reason, Some(Reason::Replaced));
    }

    #[test]
    fn too_many_deletes_is_rejected() {
        let keep = desired_object("docs/keep.md", "K", "K");
        let objects: Vec<DesiredObject> = (0..3)
            .map(|index| desired_object(&format!("docs/{index}.md"), "x", "x"))
            .collect();
        let state = actual(
            objects
                .iter()
                .map(|object| (object.key.as_str(), managed(object, "e")))
                .collect(),
        );
        let err = diff(&desired(&[keep]), &state, &options(DeleteMode::Delete)).unwrap_err();
        assert!(
            matches!(err, PlanError::TooManyDeletes { count: 3, max: 2 }),
            "{err}"
        );
    }

    #[test]
    fn empty_source_on_empty_bucket_writes_nothing() {
        let diff = diff(&desired(&[]), &actual(vec![]), &options(DeleteMode::Delete)).unwrap();
        assert!(diff.changes.is_empty());
        assert!(!diff.manifest_write);
        assert!(
            diff.warnings[0].contains("selects no files"),
            "{:?}",
            diff.warnings
        );
    }

    #[test]
    fn empty_source_never_deletes() {
        let a = desired_object("docs/a.md", "A", "A");
        let state = actual(vec![("docs/a.md", managed(&a, "e1"))]);
        let diff = diff(&desired(&[]), &state, &options(DeleteMode::Delete)).unwrap();
        assert!(diff.changes.is_empty());
        assert_eq!(diff.warnings.len(), 1);
    }

    #[test]
    fn markdown_plan_folds_long_tables() {
        let objects: Vec<DesiredObject> = (0..25)
            .map(|index| desired_object(&format!("docs/a|{index}.md"), "x", "x"))
            .collect();
        let diff = diff(
            &desired(&objects),
            &actual(vec![]),
            &options(DeleteMode::Delete),
        )
        .unwrap();
        let settings = crate::config::Settings {
            delete_mode: DeleteMode::Delete,
            ..crate::config::Settings::with_defaults(".", "r2://bucket/docs")
        };
        let source = PlanSource {
            repo: ".".into(),
            reference: "main".into(),
            commit: "0123456789abcdef".into(),
            worktree: false,
        };
        let plan = Plan::new(diff, source, settings, Utc::now());
        let markdown = render_markdown(&plan);
        assert!(markdown.contains("Plan: 25 to create"), "{markdown}");
        assert!(
            markdown.contains("<details><summary>25 changes</summary>"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| + | `docs/a\\|0.md` | create (1 B) |"),
            "{markdown}"
        );
    }

    #[test]
    fn summary_line_counts() {
        let summary = Summary {
            create: 1,
            update: 2,
            archive: 3,
            delete: 0,
            prune: 0,
            unchanged: 5,
            unmanaged: 1,
        };
        assert_eq!(
            summary_line(&summary),
            "Plan: 1 to create, 2 to update, 3 to archive, 0 to delete; 5 unchanged, 1 unmanaged."
        );
        let pruning = Summary {
            prune: 4,
            ..Default::default()
        };
        assert_eq!(
            summary_line(&pruning),
            "Plan: 0 to create, 0 to update, 0 to archive, 0 to delete, 4 archived copies to prune; 0 unchanged, 0 unmanaged."
        );
    }

    #[test]
    fn archive_keys_parse_back_to_their_document() {
        let mut context = options(DeleteMode::Archive).archive_context;
        let key = archive_key(&context, "docs/guide/a.md");
        assert_eq!(key, "docs/.r2sync/archive/20260101T000000Z/guide/a.md");
        let copy = parse_archived(&context, &key, 7).unwrap();
        assert_eq!(copy.original, "docs/guide/a.md");
        assert_eq!(copy.archived_at.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(copy.size, 7);

        // A custom archive prefix, and keys that r2sync did not write there.
        context.archive_prefix = Some("attic/".into());
        let key = archive_key(&context, "docs/b.md");
        assert_eq!(key, "attic/20260101T000000Z/b.md");
        assert_eq!(
            parse_archived(&context, &key, 1).unwrap().original,
            "docs/b.md"
        );
        assert!(parse_archived(&context, "attic/notastamp/b.md", 1).is_none());
        assert!(parse_archived(&context, "attic2/20260101T000000Z/b.md", 1).is_none());
    }

    #[test]
    fn retention_prunes_only_copies_older_than_the_period() {
        let a = desired_object("docs/a.md", "# A", "A");
        let listed = |key: &str| crate::remote::Listed {
            key: key.to_string(),
            size: 3,
            etag: Some("e".into()),
        };
        let mut current = actual(vec![("docs/a.md", managed(&a, "e1"))]);
        current.archived = vec![
            listed("docs/.r2sync/archive/20251101T000000Z/old.md"),
            listed("docs/.r2sync/archive/20251202T000001Z/recent.md"),
            listed("docs/.r2sync/archive/not-a-stamp/x.md"),
        ];
        let mut opts = options(DeleteMode::Archive);
        let result = diff(&desired(std::slice::from_ref(&a)), &current, &opts).unwrap();
        assert!(result.changes.is_empty(), "no retention, no pruning");

        // 30 days before 2026-01-01 is 2025-12-02T00:00:00Z.
        opts.archive_keep_days = Some(30);
        let result = diff(&desired(&[a]), &current, &opts).unwrap();
        let pruned: Vec<&str> = result
            .changes
            .iter()
            .map(|change| {
                assert_eq!(change.action, Action::Prune);
                change.key.as_str()
            })
            .collect();
        assert_eq!(pruned, ["docs/.r2sync/archive/20251101T000000Z/old.md"]);
        assert_eq!(summarize(&result).prune, 1);
    }
}
