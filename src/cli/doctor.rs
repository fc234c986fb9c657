//! `r2sync doctor`: probes an endpoint and bucket with the requests r2sync
//! makes, under `PREFIX/.r2sync/doctor/`, and removes its probes afterwards.

use std::collections::BTreeMap;

use serde::Serialize;

use super::commands::{request_policy, resolve_credentials, CliError};
use super::output::write_stdout;
use super::{DoctorArgs, ExitCode};
use crate::config::Target;
use crate::manifest::content_type_headers;
use crate::remote::{Condition, Remote, RemoteError};

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    /// The server works, but without a guarantee r2sync relies on.
    Warning,
    Failed,
    /// Not run because an earlier check failed.
    Skipped,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
}

/// A key whose characters URL handling tends to mangle.
const AWKWARD_NAME: &str = "a b+c%41 é.md";

pub async fn run(args: &DoctorArgs) -> Result<ExitCode, CliError> {
    let target = Target::parse(&args.sync.target)?;
    let credentials = resolve_credentials(&args.sync, &target)?;
    let policy = request_policy(&args.sync);
    let remote = Remote::connect(&target, &credentials, &policy, true)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let base = format!("{}/doctor/{stamp}", remote.internal_prefix());

    let checks = probe(&remote, &base).await;
    cleanup(&remote, &base).await;

    if args.json {
        let json = serde_json::json!({
            "format": "r2sync-doctor",
            "version": 1,
            "target": target.to_string(),
            "endpoint": credentials.endpoint,
            "checks": checks,
        });
        write_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&json).expect("doctor output serializes")
        ));
    } else {
        write_stdout(&format!(
            "Target {} (endpoint {})\n",
            target,
            credentials.endpoint.as_deref().unwrap_or("local directory")
        ));
        for check in &checks {
            let status = match check.status {
                Status::Ok => "ok",
                Status::Warning => "WARNING",
                Status::Failed => "FAILED",
                Status::Skipped => "skipped",
            };
            write_stdout(&format!(
                "  {:<34} {:<8} {}\n",
                check.name, status, check.detail
            ));
        }
    }

    let failed = checks.iter().any(|check| check.status == Status::Failed);
    Ok(if failed {
        ExitCode::Failure
    } else {
        ExitCode::Success
    })
}

/// Runs the checks in order; a failure of a basic check skips the rest.
async fn probe(remote: &Remote, base: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut push = |name, result: Result<(Status, String), String>| {
        let (status, detail) = result.unwrap_or_else(|message| (Status::Failed, message));
        checks.push(Check {
            name,
            status,
            detail,
        });
        status
    };

    // One list request checks the credentials, the bucket and listing.
    let listed = remote.list().await;
    let list_status = push(
        "credentials, bucket and listing",
        listed
            .map(|objects| {
                (
                    Status::Ok,
                    format!("{} objects under the prefix", objects.len()),
                )
            })
            .map_err(|err| err.to_string()),
    );
    if list_status == Status::Failed {
        for name in SKIPPED_AFTER_LIST {
            push(
                name,
                Ok((Status::Skipped, "the bucket cannot be listed".into())),
            );
        }
        return checks;
    }

    // A put with headers and non-ASCII metadata, read back with HEAD.
    let probe_key = format!("{base}/probe.md");
    let headers = content_type_headers("text/markdown; charset=utf-8");
    let metadata = BTreeMap::from([("r2sync-doctor".to_string(), "Grüße ☕".to_string())]);
    let put = remote
        .put(
            &probe_key,
            "probe\n".into(),
            &headers,
            &metadata,
            Condition::Absent,
        )
        .await;
    let put_status = push(
        "put with metadata",
        verify_put(remote, &probe_key, &metadata, put).await,
    );
    if put_status == Status::Failed {
        for name in &SKIPPED_AFTER_LIST[1..] {
            push(name, Ok((Status::Skipped, "put failed".into())));
        }
        return checks;
    }

    // Conditional create: a second If-None-Match: * must be rejected.
    let again = remote
        .put(
            &probe_key,
            "again\n".into(),
            &headers,
            &metadata,
            Condition::Absent,
        )
        .await;
    push(
        "conditional create enforced",
        Ok(conditional_result(again, "If-None-Match: *")),
    );

    // Conditional update: If-Match with a wrong ETag must be rejected.
    let stale = remote
        .put(
            &probe_key,
            "stale\n".into(),
            &headers,
            &metadata,
            Condition::Matches("0".repeat(32)),
        )
        .await;
    push(
        "conditional update enforced",
        Ok(conditional_result(stale, "If-Match")),
    );

    // Copy keeps headers and metadata.
    let copy_key = format!("{base}/copy.md");
    let copy = match remote.copy(&probe_key, &copy_key).await {
        Ok(()) => compare_heads(remote, &probe_key, &copy_key).await,
        Err(err) => Err(err.to_string()),
    };
    push("copy keeps metadata", copy);

    // A key with a space, `+`, `%` and non-ASCII round-trips through listing.
    let awkward_key = format!("{base}/{AWKWARD_NAME}");
    let awkward = match remote
        .put(
            &awkward_key,
            "awkward\n".into(),
            &headers,
            &BTreeMap::new(),
            Condition::None,
        )
        .await
    {
        Ok(_) => match remote.list().await {
            Ok(listed) if listed.iter().any(|object| object.key == awkward_key) => {
                Ok((Status::Ok, format!("{AWKWARD_NAME:?} listed unchanged")))
            }
            Ok(listed) => {
                let seen: Vec<&str> = listed
                    .iter()
                    .filter(|object| object.key.starts_with(base))
                    .map(|object| object.key.as_str())
                    .collect();
                Err(format!("listed as {seen:?}, expected {awkward_key:?}"))
            }
            Err(err) => Err(err.to_string()),
        },
        Err(err) => Err(err.to_string()),
    };
    push("awkward key round-trips", awkward);

    // Bulk delete of every probe.
    let keys = vec![probe_key, copy_key, awkward_key];
    let results = remote.delete_many(&keys).await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|(key, result)| result.err().map(|err| format!("{key}: {err}")))
        .collect();
    push(
        "bulk delete",
        if failures.is_empty() {
            Ok((Status::Ok, format!("{} keys in one request", keys.len())))
        } else {
            Err(failures.join("; "))
        },
    );
    checks
}

const SKIPPED_AFTER_LIST: [&str; 6] = [
    "put with metadata",
    "conditional create enforced",
    "conditional update enforced",
    "copy keeps metadata",
    "awkward key round-trips",
    "bulk delete",
];

async fn verify_put(
    remote: &Remote,
    key: &str,
    metadata: &BTreeMap<String, String>,
    put: Result<Option<String>, RemoteError>,
) -> Result<(Status, String), String> {
    put.map_err(|err| err.to_string())?;
    let head = remote
        .head(key)
        .await
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("{key} is missing right after the put"))?;
    let found = head.metadata.get("r2sync-doctor");
    if found != metadata.get("r2sync-doctor") {
        return Err(format!("metadata came back as {found:?}"));
    }
    Ok((
        Status::Ok,
        "Content-Type and non-ASCII metadata read back".into(),
    ))
}

/// Grades a conditional write: a rejection is what r2sync needs, and an
/// accepted write means the server ignores the header.
fn conditional_result(
    result: Result<Option<String>, RemoteError>,
    header: &str,
) -> (Status, String) {
    match result {
        Err(RemoteError::AlreadyExists { .. } | RemoteError::Precondition { .. }) => {
            (Status::Ok, format!("{header} rejected the write"))
        }
        Ok(_) => (
            Status::Warning,
            format!("the server ignores {header}: run one apply at a time (for example with a CI concurrency group)"),
        ),
        Err(err) => (Status::Failed, err.to_string()),
    }
}

async fn compare_heads(
    remote: &Remote,
    original: &str,
    copy: &str,
) -> Result<(Status, String), String> {
    let original = remote.head(original).await.map_err(|err| err.to_string())?;
    let copy = remote.head(copy).await.map_err(|err| err.to_string())?;
    match (original, copy) {
        (Some(original), Some(copy))
            if original.metadata == copy.metadata && original.headers == copy.headers =>
        {
            Ok((Status::Ok, "Content-Type and metadata copied".into()))
        }
        (_, None) => Err("the copy is missing".into()),
        (original, copy) => Err(format!("original {original:?}, copy {copy:?}")),
    }
}

/// Removes whatever the probes left, also after a failure.
async fn cleanup(remote: &Remote, base: &str) {
    let leftover: Vec<String> = match remote.list().await {
        Ok(listed) => listed
            .into_iter()
            .map(|object| object.key)
            .filter(|key| key.starts_with(base))
            .collect(),
        Err(_) => return,
    };
    if !leftover.is_empty() {
        for (key, result) in remote.delete_many(&leftover).await {
            if let Err(err) = result {
                eprintln!("warning: could not remove probe {key}: {err}");
            }
        }
    }
}
