//! The actual state: the bucket's listing joined with the state manifest that
//! r2sync keeps under the prefix, with object metadata as the ground truth.
//!
//! A listed key whose ETag and size match its manifest entry is known without
//! a request. Any other key is resolved with a HEAD request, so a lost or
//! corrupt manifest costs requests, never a re-upload.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Listed, Remote, RemoteError};
use crate::manifest::{self, Fingerprint, META_BODY, META_HASH, META_HEADERS, META_PREFIX};

pub const STATE_FORMAT: &str = "r2sync-state";
pub const STATE_VERSION: u32 = 1;
/// Name of the state manifest inside the internal folder.
pub const STATE_FILE: &str = "state.json";

/// The state manifest object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateManifest {
    pub format: String,
    pub version: u32,
    /// Commit of the last apply that wrote to the bucket.
    pub commit: String,
    /// Repository of that commit, with credentials removed.
    pub repo: String,
    pub written_at: DateTime<Utc>,
    pub objects: BTreeMap<String, StateEntry>,
}

/// The record of one object r2sync wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    #[serde(flatten)]
    pub fingerprint: Fingerprint,
    pub etag: Option<String>,
    pub size: u64,
}

/// Whether the state manifest could be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ManifestStatus {
    Missing,
    Invalid { reason: String },
    Loaded,
}

/// The writer of an object, as far as r2sync can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// Written by r2sync: in the manifest or carrying its metadata.
    Managed,
    /// Neither in the manifest nor carrying r2sync metadata.
    Unmanaged,
}

/// One object under the prefix.
#[derive(Clone, Debug)]
pub struct ActualObject {
    pub etag: Option<String>,
    pub size: u64,
    pub ownership: Ownership,
    /// `None` when the object has no r2sync metadata (replaced by someone else).
    pub fingerprint: Option<Fingerprint>,
}

/// Everything known about the bucket under the prefix.
#[derive(Clone, Debug)]
pub struct ActualState {
    pub objects: BTreeMap<String, ActualObject>,
    pub manifest_status: ManifestStatus,
    pub manifest: Option<StateManifest>,
    /// ETag of the manifest object when it was read.
    pub manifest_etag: Option<String>,
    /// HEAD requests needed to resolve keys the manifest did not vouch for.
    pub head_requests: usize,
    /// The archive folder's listing, when retention needs it (empty
    /// otherwise).
    pub archived: Vec<Listed>,
}

/// A listed object with its HEAD result (`None` when it vanished) and, when
/// its body had to be verified, the blake3 hash of the body.
type Resolved = (Listed, Option<super::ObjectHead>, Option<String>);

/// Key of the state manifest for a remote.
pub fn manifest_key(remote: &Remote) -> String {
    format!("{}/{STATE_FILE}", remote.internal_prefix())
}

/// Reads the listing and the manifest, then resolves the keys the manifest
/// does not vouch for with up to `concurrency` HEAD requests at a time.
///
/// With `verify` (used by `check`), every object is read with HEAD, and its
/// fingerprint is computed from the headers and metadata it actually has,
/// not from the fingerprint it claims. Bodies are hashed with a GET unless
/// the manifest recorded the object with the same ETag and size.
pub async fn read_actual(
    remote: &Remote,
    concurrency: usize,
    verify: bool,
) -> Result<ActualState, RemoteError> {
    let listed = remote.list().await?;
    let internal = format!("{}/", remote.internal_prefix());
    let manifest_key = manifest_key(remote);

    // Split the listing into documents and r2sync's folders: its own and
    // those of other targets nested below this prefix.
    let mut objects_listed = Vec::with_capacity(listed.len());
    let mut manifest_listed = None;
    for entry in listed {
        if entry.key == manifest_key {
            manifest_listed = Some(entry);
        } else if !entry.key.starts_with(&internal) && !is_internal_key(&entry.key) {
            objects_listed.push(entry);
        }
    }
    let own_prefix = manifest::prefix_metadata(remote.prefix());

    let (manifest_status, manifest, manifest_etag) = match manifest_listed {
        None => (ManifestStatus::Missing, None, None),
        Some(_) => load_manifest(remote, &manifest_key).await?,
    };
    let entries = manifest.as_ref().map(|manifest| &manifest.objects);

    // Keys the manifest vouches for need no request.
    let mut objects = BTreeMap::new();
    let mut unresolved = Vec::new();
    for entry in objects_listed {
        // A key object_store cannot name was written by someone else and
        // can be neither read nor removed through it.
        if !super::http::is_addressable(&entry.key) {
            tracing::warn!("{}: this key cannot be read through the S3 client library, so r2sync leaves it alone as unmanaged", entry.key);
            objects.insert(
                entry.key.clone(),
                ActualObject {
                    etag: entry.etag.clone(),
                    size: entry.size,
                    ownership: Ownership::Unmanaged,
                    fingerprint: None,
                },
            );
            continue;
        }
        let vouched = entries
            .and_then(|entries| entries.get(&entry.key))
            .filter(|known| {
                known.size == entry.size && known.etag.is_some() && known.etag == entry.etag
            });
        match vouched {
            Some(known) if !verify => {
                objects.insert(
                    entry.key.clone(),
                    ActualObject {
                        etag: entry.etag.clone(),
                        size: entry.size,
                        ownership: Ownership::Managed,
                        fingerprint: Some(known.fingerprint.clone()),
                    },
                );
            }
            _ => unresolved.push(entry),
        }
    }

    // The rest are resolved from their own metadata.
    let head_requests = unresolved.len();
    let entries = &entries;
    if head_requests > 0 {
        tracing::info!(
            keys = head_requests,
            manifest = ?manifest_status,
            "reading metadata of {head_requests} objects the state manifest does not cover"
        );
    }
    let resolved: Vec<Result<Resolved, RemoteError>> =
        futures::stream::iter(unresolved.into_iter().map(|entry| async move {
            let recorded = entries.and_then(|entries| entries.get(&entry.key));
            let Some(head) = remote.head(&entry.key).await? else {
                return Ok((entry, None, None));
            };
            let unchanged_since_written = recorded.is_some_and(|known| {
                known.etag.is_some() && known.etag == entry.etag && known.size == entry.size
            });

            // An object that changed since r2sync recorded it but still
            // carries r2sync metadata was edited with the metadata kept (a
            // local file edited in place, or a copy with metadata), so the
            // body decides. Verification hashes every body r2sync cannot
            // vouch for.
            let body_hash = if unchanged_since_written {
                recorded.map(|known| known.fingerprint.body.clone())
            } else if verify || (recorded.is_some() && head.metadata.contains_key(META_BODY)) {
                match remote.get(&entry.key).await? {
                    Some((body, _)) => Some(blake3::hash(&body).to_hex().to_string()),
                    None => return Ok((entry, None, None)),
                }
            } else {
                None
            };
            Ok((entry, Some(head), body_hash))
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;

    for result in resolved {
        let (entry, head, body_hash) = result?;
        // A key that vanished between listing and HEAD is simply absent.
        let Some(head) = head else { continue };
        let in_manifest = entries.is_some_and(|entries| entries.contains_key(&entry.key));
        // Metadata written for another target's prefix is not ours.
        let mut fingerprint = fingerprint_from_metadata(&head.metadata)
            .filter(|_| head.metadata.get(META_PREFIX) == Some(&own_prefix));
        if let (Some(claimed), Some(actual_body)) = (fingerprint.as_mut(), body_hash) {
            if verify {
                // Recompute from what the object has, not what it claims.
                *claimed =
                    manifest::fingerprint_from_parts(&actual_body, &head.headers, &head.metadata);
            } else if claimed.body != actual_body {
                tracing::info!(key = %entry.key, "body differs from its r2sync metadata");
                claimed.body = actual_body;
                claimed.hash = String::new();
            }
        }
        let ownership = if fingerprint.is_some() || in_manifest {
            Ownership::Managed
        } else {
            Ownership::Unmanaged
        };
        objects.insert(
            entry.key.clone(),
            ActualObject {
                etag: head.etag.or(entry.etag),
                size: head.size,
                ownership,
                fingerprint,
            },
        );
    }

    Ok(ActualState {
        objects,
        manifest_status,
        manifest,
        manifest_etag,
        head_requests,
        archived: Vec::new(),
    })
}

async fn load_manifest(
    remote: &Remote,
    key: &str,
) -> Result<(ManifestStatus, Option<StateManifest>, Option<String>), RemoteError> {
    let Some((bytes, etag)) = remote.get(key).await? else {
        return Ok((ManifestStatus::Missing, None, None));
    };
    match parse_manifest(&bytes) {
        Ok(manifest) => Ok((ManifestStatus::Loaded, Some(manifest), etag)),
        Err(reason) => {
            tracing::warn!(key, %reason, "state manifest is invalid; reading object metadata instead");
            Ok((ManifestStatus::Invalid { reason }, None, etag))
        }
    }
}

fn parse_manifest(bytes: &Bytes) -> Result<StateManifest, String> {
    let manifest: StateManifest = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
    if manifest.format != STATE_FORMAT {
        return Err(format!(
            "format is {:?}, expected {STATE_FORMAT:?}",
            manifest.format
        ));
    }
    if manifest.version != STATE_VERSION {
        return Err(format!(
            "version {} is not supported (expected {STATE_VERSION}); upgrade r2sync",
            manifest.version
        ));
    }
    Ok(manifest)
}

/// Tells whether a key lies in an r2sync folder (`.../.r2sync/...`) of any
/// target, which no target manages as a document.
pub fn is_internal_key(key: &str) -> bool {
    key.split('/').any(|segment| segment == super::INTERNAL_DIR)
}

/// Reads r2sync's fingerprint from user metadata, if all parts are there.
pub fn fingerprint_from_metadata(metadata: &BTreeMap<String, String>) -> Option<Fingerprint> {
    Some(Fingerprint {
        hash: metadata.get(META_HASH)?.clone(),
        body: metadata.get(META_BODY)?.clone(),
        headers: metadata.get(META_HEADERS)?.clone(),
    })
}

/// Writes the state manifest and returns its ETag.
pub async fn write_manifest(
    remote: &Remote,
    manifest: &StateManifest,
) -> Result<Option<String>, RemoteError> {
    let body = serde_json::to_vec_pretty(manifest).expect("state manifest serializes");
    remote
        .put_internal(
            &manifest_key(remote),
            Bytes::from(body),
            super::Condition::None,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_with_other_format_is_invalid() {
        let bytes = Bytes::from_static(br#"{"format":"x","version":1,"commit":"","repo":"","written_at":"2026-01-01T00:00:00Z","objects":{}}"#);
        assert!(parse_manifest(&bytes).unwrap_err().contains("format"));
    }

    #[test]
    fn truncated_manifest_is_invalid() {
        let bytes = Bytes::from_static(br#"{"format":"r2sync-state","#);
        assert!(parse_manifest(&bytes).is_err());
    }

    #[test]
    fn nested_internal_folders_are_internal() {
        assert!(is_internal_key("site/.r2sync/state.json"));
        assert!(is_internal_key(".r2sync/archive/x/a.md"));
        assert!(!is_internal_key("site/r2sync/a.md"));
        assert!(!is_internal_key("site/.r2sync.md"));
    }

    #[test]
    fn fingerprint_needs_all_parts() {
        let mut metadata = BTreeMap::from([
            (META_HASH.to_string(), "h".to_string()),
            (META_BODY.to_string(), "b".to_string()),
        ]);
        assert!(fingerprint_from_metadata(&metadata).is_none());
        metadata.insert(META_HEADERS.to_string(), "x".to_string());
        assert_eq!(fingerprint_from_metadata(&metadata).unwrap().hash, "h");
    }
}
