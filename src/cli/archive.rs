//! `r2sync archive ls` and `r2sync restore`: the archived copies that soft
//! deletes leave, and bringing one back.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::commands::{print_json, request_policy, resolve_credentials, CliError};
use super::output::write_stdout;
use super::{ArchiveLsArgs, ExitCode, RestoreArgs, SyncArgs};
use crate::config::{self, ConfigError, FileConfig, Target};
use crate::manifest;
use crate::plan::{self, ArchiveContext, ArchivedCopy};
use crate::remote::lock::{self, LockOptions};
use crate::remote::Remote;

/// Errors of the archive commands.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("no archived copy of {key} under {base}; list them with `r2sync archive ls`")]
    NoCopy { key: String, base: String },
    #[error("no archived copy of {key} from {from} or earlier; the oldest is from {oldest}")]
    NoneBefore {
        key: String,
        from: DateTime<Utc>,
        oldest: DateTime<Utc>,
    },
    #[error("{key} exists; pass --overwrite to replace it with the archived copy")]
    Exists { key: String },
    #[error("--from {value:?} is not a time; use 20260102T030405Z or 2026-01-02T03:04:05Z")]
    BadTime { value: String },
}

/// The target and where its archived copies are.
struct Archive {
    remote: Remote,
    context: ArchiveContext,
}

fn open(sync: &SyncArgs, archive_prefix: Option<&str>) -> Result<Archive, CliError> {
    let target = Target::parse(&sync.target)?;
    let credentials = resolve_credentials(sync, &target)?;
    let remote = Remote::connect(&target, &credentials, &request_policy(sync), false)?;
    let archive_prefix = match archive_prefix {
        Some(prefix) => Some(config::normalize_key_prefix(prefix, "--archive-prefix")?),
        None => None,
    };
    let context = ArchiveContext {
        prefix: remote.prefix().to_string(),
        internal_prefix: remote.internal_prefix(),
        archive_prefix,
        stamp: String::new(),
    };
    Ok(Archive { remote, context })
}

/// Loads the configuration file, fills the target options and
/// `--archive-prefix` from it where not given, and returns it.
pub(super) fn merge_archive_options(
    sync: &mut SyncArgs,
    archive_prefix: &mut Option<String>,
    explicit: &[String],
) -> Result<FileConfig, CliError> {
    let file = FileConfig::load(sync.config.as_deref())?;
    super::merge::merge_file(sync, None, &file, explicit)?;
    if archive_prefix.is_none() {
        *archive_prefix = sync
            .target_name
            .as_deref()
            .and_then(|name| file.targets.get(name))
            .and_then(|section| section.archive_prefix.clone())
            .or_else(|| file.archive_prefix.clone());
    }
    Ok(file)
}

/// Lists every archived copy, oldest first, optionally only those of `key`.
async fn copies(archive: &Archive, key: Option<&str>) -> Result<Vec<ArchivedCopy>, CliError> {
    let base = plan::archive_base(&archive.context);
    let requested = key.map(|key| original_key(&archive.context, key));
    let mut copies: Vec<ArchivedCopy> = archive
        .remote
        .list_under(&base)
        .await?
        .into_iter()
        .filter_map(|listed| plan::parse_archived(&archive.context, &listed.key, listed.size))
        .filter(|copy| {
            requested
                .as_ref()
                .is_none_or(|keys| keys.contains(&copy.original))
        })
        .collect();
    copies.sort_by(|a, b| (a.archived_at, &a.original).cmp(&(b.archived_at, &b.original)));
    Ok(copies)
}

/// Returns the keys a user may mean by `key`: itself, and itself below
/// the prefix.
fn original_key(context: &ArchiveContext, key: &str) -> Vec<String> {
    let key = key.trim_start_matches('/');
    vec![key.to_string(), manifest::object_key(&context.prefix, key)]
}

/// `r2sync archive ls [KEY]`.
pub(super) async fn ls_command(args: &ArchiveLsArgs) -> Result<ExitCode, CliError> {
    let archive = open(&args.sync, args.archive_prefix.as_deref())?;
    let copies = copies(&archive, args.key.as_deref()).await?;
    if args.json {
        print_json(&copies);
        return Ok(ExitCode::Success);
    }
    let mut out = String::new();
    for copy in &copies {
        let _ = writeln!(
            out,
            "{}  {:>10}  {}  ({})",
            copy.archived_at.format("%Y-%m-%dT%H:%M:%SZ"),
            plan::human_bytes(copy.size),
            copy.original,
            copy.key
        );
    }
    write_stdout(&out);
    eprintln!(
        "{} archived {} under {}",
        copies.len(),
        if copies.len() == 1 { "copy" } else { "copies" },
        plan::archive_base(&archive.context)
    );
    Ok(ExitCode::Success)
}

/// Parses `--from` as an archive stamp or an RFC 3339 time.
fn parse_time(value: &str) -> Result<DateTime<Utc>, ArchiveError> {
    NaiveDateTime::parse_from_str(value, plan::ARCHIVE_STAMP_FORMAT)
        .map(|time| time.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(value).map(|time| time.with_timezone(&Utc)))
        .map_err(|_| ArchiveError::BadTime {
            value: value.to_string(),
        })
}

/// Picks the newest copy archived at or before `from` (or the newest).
fn pick<'a>(
    copies: &'a [ArchivedCopy],
    key: &str,
    base: &str,
    from: Option<DateTime<Utc>>,
) -> Result<&'a ArchivedCopy, ArchiveError> {
    let oldest = copies.first().ok_or_else(|| ArchiveError::NoCopy {
        key: key.to_string(),
        base: base.to_string(),
    })?;
    match from {
        None => Ok(copies.last().expect("not empty")),
        Some(from) => copies
            .iter()
            .rev()
            .find(|copy| copy.archived_at <= from)
            .ok_or(ArchiveError::NoneBefore {
                key: key.to_string(),
                from,
                oldest: oldest.archived_at,
            }),
    }
}

/// `r2sync restore KEY [--from TIME]`.
pub(super) async fn restore_command(args: &RestoreArgs) -> Result<ExitCode, CliError> {
    let from = args
        .from
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(CliError::Archive)?;
    let archive = open(&args.sync, args.archive_prefix.as_deref())?;
    let base = plan::archive_base(&archive.context);

    // The copies of this key, one document at a time.
    let copies = copies(&archive, Some(&args.key)).await?;
    let mut originals: Vec<&str> = copies.iter().map(|copy| copy.original.as_str()).collect();
    originals.dedup();
    if originals.len() > 1 {
        return Err(ConfigError::Option {
            option: "KEY",
            value: args.key.clone(),
            message: format!(
                "matches archived copies of {}; give the full key",
                originals.join(" and ")
            ),
        }
        .into());
    }
    let copy = pick(&copies, &args.key, &base, from).map_err(CliError::Archive)?;

    // Restoring writes, so it waits for any apply to finish.
    let options = LockOptions {
        timeout: Duration::from_secs(args.lock.lock_timeout),
        ttl: lock::DEFAULT_TTL,
        operation: "restore".into(),
        commit: String::new(),
        on_loss: None,
    };
    let acquired = lock::acquire(&archive.remote, &options, &|holder| {
        eprintln!(
            "Waiting up to {} s for the {holder}",
            args.lock.lock_timeout
        );
    })
    .await?;
    let result = restore_copy(&archive.remote, copy, args.overwrite).await;
    if let Err(err) = acquired.lock.release().await {
        eprintln!("warning: cannot release the lock ({err}); it expires by itself");
    }
    result?;

    eprintln!(
        "Restored {} from the copy archived at {} ({}). Unless its source file is back in the commit, the next apply archives it again.",
        copy.original,
        copy.archived_at.format("%Y-%m-%dT%H:%M:%SZ"),
        copy.key
    );
    Ok(ExitCode::Success)
}

async fn restore_copy(
    remote: &Remote,
    copy: &ArchivedCopy,
    overwrite: bool,
) -> Result<(), CliError> {
    if !overwrite && remote.head(&copy.original).await?.is_some() {
        return Err(CliError::Archive(ArchiveError::Exists {
            key: copy.original.clone(),
        }));
    }
    remote.copy(&copy.key, &copy.original).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(stamp: &str) -> ArchivedCopy {
        ArchivedCopy {
            key: format!("p/.r2sync/archive/{stamp}/a.md"),
            original: "p/a.md".into(),
            archived_at: parse_time(stamp).unwrap(),
            size: 1,
        }
    }

    #[test]
    fn time_both_spellings() {
        assert_eq!(
            parse_time("20260102T030405Z").unwrap(),
            parse_time("2026-01-02T03:04:05Z").unwrap()
        );
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.to_string().contains("20260102T030405Z"), "{err}");
    }

    #[test]
    fn pick_newest_before_time() {
        let copies = [copy("20260101T000000Z"), copy("20260201T000000Z")];
        let newest = pick(&copies, "a.md", "b", None).unwrap();
        assert_eq!(newest.archived_at, copies[1].archived_at);
        let between = pick(
            &copies,
            "a.md",
            "b",
            Some(parse_time("20260115T000000Z").unwrap()),
        );
        assert_eq!(between.unwrap().archived_at, copies[0].archived_at);
        let exact = pick(&copies, "a.md", "b", Some(copies[1].archived_at)).unwrap();
        assert_eq!(exact.archived_at, copies[1].archived_at);
        let err = pick(
            &copies,
            "a.md",
            "b",
            Some(parse_time("20251231T000000Z").unwrap()),
        );
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("the oldest is from 2026-01-01"));
        assert!(pick(&[], "a.md", "b", None).is_err());
    }
}
