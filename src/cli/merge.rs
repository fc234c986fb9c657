//! Layering of options: a flag or environment variable wins over the
//! configuration file, a `[targets.NAME]` table wins over the file's top
//! level, and the file wins over the built-in defaults.

use super::commands::CliError;
use super::{ChangeArgs, SyncArgs};
use crate::config::{ConfigError, FileConfig, TargetConfig};

/// Fills every option that was not given explicitly from the configuration
/// file and returns the ids of the options it filled.
pub fn merge_file(
    sync: &mut SyncArgs,
    change: Option<&mut ChangeArgs>,
    file: &FileConfig,
    explicit: &[String],
) -> Result<Vec<String>, CliError> {
    let section = match &sync.target_name {
        Some(name) => Some(file.targets.get(name).ok_or_else(|| ConfigError::Option {
            option: "--target-name",
            value: name.clone(),
            message: if file.targets.is_empty() {
                "the configuration file defines no [targets.NAME] tables".to_string()
            } else {
                let names: Vec<&str> = file.targets.keys().map(String::as_str).collect();
                format!(
                    "no such [targets.{name}] table; defined: {}",
                    names.join(", ")
                )
            },
        })?),
        None => None,
    };

    let mut filled = Vec::new();
    let mut fill = |id: &str, found: bool| {
        if found {
            filled.push(id.to_string());
        }
    };
    let given = |id: &str| explicit.iter().any(|explicit| explicit == id);

    // Each option: skipped when given explicitly, else the target table's
    // value, else the top-level value, else the default stays. `wrap` is
    // `Some` for options that are themselves optional.
    macro_rules! layer {
        ($id:literal, $field:expr, $value:expr, $wrap:expr) => {
            if !given($id) {
                let value = $value;
                fill($id, value.is_some());
                if let Some(value) = value {
                    $field = $wrap(value);
                }
            }
        };
    }
    let from_section = |pick: fn(&TargetConfig) -> Option<String>| section.and_then(pick);
    let same = |value| value;

    layer!("repo", sync.repo, file.repo.clone(), same);
    layer!(
        "reference",
        sync.reference,
        from_section(|t| t.reference.clone()).or(file.reference.clone()),
        same
    );
    layer!(
        "root",
        sync.root,
        from_section(|t| t.root.clone()).or(file.root.clone()),
        same
    );
    layer!(
        "include",
        sync.include,
        section
            .and_then(|t| t.include.clone())
            .or(file.include.clone()),
        |globs: Vec<String>| globs
    );
    layer!(
        "exclude",
        sync.exclude,
        section
            .and_then(|t| t.exclude.clone())
            .or(file.exclude.clone()),
        |globs: Vec<String>| globs
    );
    layer!(
        "target",
        sync.target,
        from_section(|t| t.target.clone()).or(file.target.clone()),
        same
    );
    layer!(
        "endpoint",
        sync.endpoint,
        from_section(|t| t.endpoint.clone()).or(file.endpoint.clone()),
        Some
    );
    layer!(
        "region",
        sync.region,
        from_section(|t| t.region.clone()).or(file.region.clone()),
        Some
    );
    layer!(
        "jurisdiction",
        sync.jurisdiction,
        section.and_then(|t| t.jurisdiction).or(file.jurisdiction),
        Some
    );
    layer!(
        "concurrency",
        sync.concurrency,
        section.and_then(|t| t.concurrency).or(file.concurrency),
        |value: u16| value
    );
    layer!("retries", sync.retries, file.retries, |value: usize| value);
    layer!("timeout", sync.timeout, file.timeout, |value: u64| value);
    layer!(
        "retry_timeout",
        sync.retry_timeout,
        file.retry_timeout,
        |value: u64| value
    );
    layer!(
        "max_backoff",
        sync.max_backoff,
        file.max_backoff,
        |value: u64| value
    );
    layer!(
        "multipart_threshold",
        sync.multipart_threshold,
        file.multipart_threshold,
        |value: u64| value
    );
    layer!("part_size", sync.part_size, file.part_size, |value: u64| {
        value
    });
    layer!("cache_dir", sync.cache_dir, file.cache_dir.clone(), Some);
    layer!(
        "front_matter",
        sync.front_matter,
        file.front_matter.mode,
        |mode| mode
    );
    layer!(
        "catalog",
        sync.catalog,
        from_section(|t| t.catalog.clone()).or(file.catalog.clone()),
        Some
    );
    layer!(
        "skip_drafts",
        sync.skip_drafts,
        file.skip_drafts,
        |value: bool| value
    );
    layer!(
        "skip_invalid_paths",
        sync.skip_invalid_paths,
        file.skip_invalid_paths,
        |value: bool| value
    );
    layer!("skip_lfs", sync.skip_lfs, file.skip_lfs, |value: bool| {
        value
    });
    layer!(
        "fallback_encoding",
        sync.fallback_encoding,
        file.fallback_encoding.clone(),
        Some
    );
    layer!(
        "max_document_size",
        sync.max_document_size,
        file.max_document_size,
        Some
    );
    layer!(
        "max_metadata_bytes",
        sync.max_metadata_bytes,
        file.max_metadata_bytes,
        Some
    );

    if let Some(change) = change {
        layer!(
            "delete_mode",
            change.delete_mode,
            section.and_then(|t| t.delete_mode).or(file.delete_mode),
            |mode| mode
        );
        layer!(
            "archive_prefix",
            change.archive_prefix,
            from_section(|t| t.archive_prefix.clone()).or(file.archive_prefix.clone()),
            Some
        );
        layer!(
            "archive_keep_days",
            change.archive_keep_days,
            file.archive_keep_days,
            Some
        );
        layer!(
            "max_deletes",
            change.max_deletes,
            section.and_then(|t| t.max_deletes).or(file.max_deletes),
            |value: usize| value
        );
    }
    Ok(filled)
}
