//! Time of `plan::diff` over a generated desired state of 100,000 objects
//! against three actual states. The first is an empty bucket, where every
//! object is created. The second is a bucket in sync with a current state
//! manifest, where nothing changes. The third is a mixed bucket where some
//! objects changed, some sources were removed and some objects belong to
//! someone else. Building the states is not timed. Prints a Markdown table.
//!
//! Run with `cargo bench --bench plan_diff`. `PLAN_BENCH_OBJECTS` sets the
//! number of objects (default 100000).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use common::{format_duration, measure};
use r2sync::config::DeleteMode;
use r2sync::manifest::{
    content_type_headers, DesiredObject, DesiredState, MARKDOWN_CONTENT_TYPE, META_PATH,
    META_PREFIX, META_TITLE, META_WORDS,
};
use r2sync::plan::{self, ArchiveContext, PlanOptions};
use r2sync::remote::state::{
    ActualObject, ActualState, ManifestStatus, Ownership, StateEntry, StateManifest,
};

fn desired_object(index: usize) -> DesiredObject {
    let key = format!("docs/section{}/page{index}.md", index / 1000);
    let body = format!("# Page {index}\n\nGenerated document number {index}.\n");
    DesiredObject::new(
        key,
        format!("content/section{}/page{index}.md", index / 1000),
        Bytes::from(body),
        content_type_headers(MARKDOWN_CONTENT_TYPE),
        BTreeMap::from([
            (META_PATH.to_string(), format!("content/page{index}.md")),
            (META_TITLE.to_string(), format!("Page {index}")),
            (META_PREFIX.to_string(), "/docs".to_string()),
            (META_WORDS.to_string(), "6".to_string()),
        ]),
    )
}

fn managed(object: &DesiredObject, index: usize) -> ActualObject {
    ActualObject {
        etag: Some(format!("\"etag-{index}\"")),
        size: object.body.len() as u64,
        ownership: Ownership::Managed,
        fingerprint: Some(object.fingerprint.clone()),
    }
}

fn actual_state(objects: BTreeMap<String, ActualObject>, with_manifest: bool) -> ActualState {
    let manifest = with_manifest.then(|| StateManifest {
        format: "r2sync-state".into(),
        version: 1,
        commit: "0".repeat(40),
        repo: "bench".into(),
        written_at: Utc::now(),
        objects: objects
            .iter()
            .filter_map(|(key, object)| {
                Some((
                    key.clone(),
                    StateEntry {
                        fingerprint: object.fingerprint.clone()?,
                        etag: object.etag.clone(),
                        size: object.size,
                    },
                ))
            })
            .collect(),
    });
    ActualState {
        objects,
        manifest_status: if with_manifest {
            ManifestStatus::Loaded
        } else {
            ManifestStatus::Missing
        },
        manifest,
        manifest_etag: None,
        head_requests: 0,
        archived: Vec::new(),
    }
}

/// Builds a bucket where every 20th object has another body and every 20th
/// (offset by 10) another title. Every 50th desired key is absent, 1 in 50
/// listed objects has no source any more and 1 in 100 belongs to someone else.
fn mixed_state(desired: &DesiredState) -> ActualState {
    let mut objects = BTreeMap::new();
    for (index, (key, object)) in desired.objects.iter().enumerate() {
        if index % 50 == 25 {
            continue;
        }
        let mut actual = managed(object, index);
        if index % 20 == 0 {
            let mut changed = object.clone();
            changed.body = Bytes::from(format!("old body {index}"));
            actual = managed(
                &DesiredObject::new(
                    changed.key,
                    changed.source_path,
                    changed.body,
                    changed.headers,
                    changed.metadata,
                ),
                index,
            );
        } else if index % 20 == 10 {
            let mut metadata = object.metadata.clone();
            metadata.insert(META_TITLE, format!("Old title {index}"));
            let changed = DesiredObject::new(
                object.key.clone(),
                object.source_path.clone(),
                object.body.clone(),
                object.headers.clone(),
                metadata,
            );
            actual = managed(&changed, index);
        }
        objects.insert(key.clone(), actual);
        if index % 50 == 0 {
            objects.insert(format!("{key}.removed"), managed(object, index));
        }
        if index % 100 == 0 {
            objects.insert(
                format!("{key}.foreign"),
                ActualObject {
                    etag: Some("\"foreign\"".into()),
                    size: 10,
                    ownership: Ownership::Unmanaged,
                    fingerprint: None,
                },
            );
        }
    }
    actual_state(objects, true)
}

fn main() {
    let count: usize = std::env::var("PLAN_BENCH_OBJECTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);

    let desired = DesiredState {
        objects: (0..count)
            .map(desired_object)
            .map(|object| (object.key.clone(), object))
            .collect(),
        ..Default::default()
    };
    let in_sync: BTreeMap<String, ActualObject> = desired
        .objects
        .iter()
        .enumerate()
        .map(|(index, (key, object))| (key.clone(), managed(object, index)))
        .collect();
    let cases = [
        ("empty bucket", actual_state(BTreeMap::new(), false)),
        ("in sync, manifest current", actual_state(in_sync, true)),
        ("mixed changes", mixed_state(&desired)),
    ];
    let options = PlanOptions {
        delete_mode: DeleteMode::Archive,
        max_deletes: usize::MAX,
        adopt: false,
        archive_context: ArchiveContext {
            prefix: "docs".into(),
            internal_prefix: "docs/.r2sync".into(),
            archive_prefix: None,
            stamp: "20260101T000000Z".into(),
        },
        archive_keep_days: None,
        now: chrono::Utc::now(),
    };

    println!("| actual state | objects listed | changes | best | median | runs |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, actual) in &cases {
        let changes = plan::diff(&desired, actual, &options)
            .expect("the plan succeeds")
            .changes
            .len();
        let timing = measure(Duration::from_secs(3), 5, || {
            plan::diff(&desired, actual, &options).expect("the plan succeeds")
        });
        println!(
            "| {name} | {} | {changes} | {} | {} | {} |",
            actual.objects.len(),
            format_duration(timing.best),
            format_duration(timing.median),
            timing.runs
        );
    }
}
