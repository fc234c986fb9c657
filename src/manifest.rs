//! The desired state: every object the bucket should contain for one commit,
//! with its exact body, headers, user metadata and fingerprint.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::markdown::{self, FrontMatterMode, MarkdownError};
use crate::source::{self, Repo, SourceError, SourceFile};

/// Content-Type of every uploaded document.
pub const MARKDOWN_CONTENT_TYPE: &str = "text/markdown; charset=utf-8";

/// User metadata names (sent as `x-amz-meta-<name>`).
pub const META_HASH: &str = "r2sync-hash";
pub const META_BODY: &str = "r2sync-body";
pub const META_HEADERS: &str = "r2sync-headers";
pub const META_PATH: &str = "r2sync-path";
pub const META_TITLE: &str = "r2sync-title";
/// The target prefix the object was written for, with a leading slash
/// (`/` for the bucket root), so that a target never claims objects that
/// another target below or above it wrote.
pub const META_PREFIX: &str = "r2sync-prefix";

/// Longest title kept in metadata, in bytes, so that the user metadata of
/// one object stays well inside the 2 KiB that S3 allows.
const MAX_TITLE_BYTES: usize = 512;

/// What identifies an object's content: a combined hash and the hashes of
/// its parts, so that a difference can be explained (content, headers or
/// metadata). Each is a blake3 hash in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Hash of the body, headers and user metadata together.
    pub hash: String,
    /// Hash of the body alone.
    pub body: String,
    /// Hash of the HTTP headers r2sync sets (Content-Type).
    pub headers: String,
}

/// One object of the desired state.
#[derive(Clone, Debug)]
pub struct DesiredObject {
    pub key: String,
    /// Path of the source file from the top of the repository.
    pub source_path: String,
    pub body: Bytes,
    pub content_type: String,
    /// User metadata without the fingerprint entries.
    pub metadata: BTreeMap<String, String>,
    pub fingerprint: Fingerprint,
}

impl DesiredObject {
    /// Builds an object and computes its fingerprint.
    pub fn new(
        key: String,
        source_path: String,
        body: Bytes,
        content_type: String,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        let fingerprint = fingerprint(&body, &content_type, &metadata);
        DesiredObject {
            key,
            source_path,
            body,
            content_type,
            metadata,
            fingerprint,
        }
    }

    /// The user metadata sent with the object, fingerprint included.
    pub fn metadata_with_fingerprint(&self) -> BTreeMap<String, String> {
        let mut all = self.metadata.clone();
        all.insert(META_HASH.into(), self.fingerprint.hash.clone());
        all.insert(META_BODY.into(), self.fingerprint.body.clone());
        all.insert(META_HEADERS.into(), self.fingerprint.headers.clone());
        all
    }
}

/// Computes the fingerprint of an object from exactly what is uploaded.
pub fn fingerprint(
    body: &[u8],
    content_type: &str,
    metadata: &BTreeMap<String, String>,
) -> Fingerprint {
    let body_hash = blake3::hash(body);
    let headers_hash = hash_fields([("content-type", content_type)]);
    let metadata_hash = hash_fields(
        metadata
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );

    let mut combined = blake3::Hasher::new();
    combined.update(b"r2sync fingerprint v1\n");
    combined.update(body_hash.as_bytes());
    combined.update(headers_hash.as_bytes());
    combined.update(metadata_hash.as_bytes());

    Fingerprint {
        hash: combined.finalize().to_hex().to_string(),
        body: body_hash.to_hex().to_string(),
        headers: headers_hash.to_hex().to_string(),
    }
}

/// Hashes name/value pairs with separators that cannot occur in header
/// names, so that no two different lists hash alike.
fn hash_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    for (name, value) in fields {
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    }
    hasher.finalize()
}

/// Settings that shape the desired state.
#[derive(Clone, Debug)]
pub struct DesiredOptions {
    /// Key prefix inside the bucket, without a trailing slash; may be empty.
    pub prefix: String,
    pub front_matter: FrontMatterMode,
}

/// The complete desired state of one commit.
#[derive(Debug, Default)]
pub struct DesiredState {
    pub objects: BTreeMap<String, DesiredObject>,
    /// Problems in documents that did not stop the build.
    pub warnings: Vec<String>,
}

impl DesiredState {
    pub fn total_bytes(&self) -> u64 {
        self.objects
            .values()
            .map(|object| object.body.len() as u64)
            .sum()
    }
}

/// Errors while building the desired state.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Markdown(#[from] MarkdownError),
    #[error("{path}: key {key:?} is not a valid object key ({reason}); rename the file")]
    InvalidKey {
        path: String,
        key: String,
        reason: String,
    },
}

/// Joins the prefix and the path below the root into an object key.
pub fn object_key(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_string()
    } else {
        format!("{prefix}/{path}")
    }
}

/// Reads and normalizes every selected file. `on_file` is called after each
/// file, for progress reporting.
pub fn build(
    repo: &Repo,
    files: &[SourceFile],
    options: &DesiredOptions,
    mut on_file: impl FnMut(),
) -> Result<DesiredState, ManifestError> {
    let mut state = DesiredState::default();
    for file in files {
        let raw = source::read_blob(repo, file)?;
        let mut document = markdown::normalize(&file.repo_path, &raw, options.front_matter)?;
        state.warnings.append(&mut document.warnings);

        let key = object_key(&options.prefix, &file.path);
        if let Err(err) = object_store::path::Path::parse(&key) {
            return Err(ManifestError::InvalidKey {
                path: file.repo_path.clone(),
                key,
                reason: err.to_string(),
            });
        }

        let mut metadata = BTreeMap::new();
        metadata.insert(META_PATH.to_string(), file.repo_path.clone());
        metadata.insert(
            META_TITLE.to_string(),
            truncate_utf8(&document.title, MAX_TITLE_BYTES),
        );
        metadata.insert(META_PREFIX.to_string(), prefix_metadata(&options.prefix));

        let object = DesiredObject::new(
            key.clone(),
            file.repo_path.clone(),
            Bytes::from(document.body),
            MARKDOWN_CONTENT_TYPE.to_string(),
            metadata,
        );
        state.objects.insert(key, object);
        on_file();
    }
    Ok(state)
}

/// The value of the prefix metadata for a target prefix.
pub fn prefix_metadata(prefix: &str) -> String {
    format!("/{prefix}")
}

fn truncate_utf8(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(title: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(META_TITLE.to_string(), title.to_string())])
    }

    #[test]
    fn fingerprint_separates_parts() {
        let base = fingerprint(b"body", MARKDOWN_CONTENT_TYPE, &metadata("T"));
        let other_body = fingerprint(b"body2", MARKDOWN_CONTENT_TYPE, &metadata("T"));
        let other_type = fingerprint(b"body", "text/plain", &metadata("T"));
        let other_meta = fingerprint(b"body", MARKDOWN_CONTENT_TYPE, &metadata("U"));

        assert_ne!(base.body, other_body.body);
        assert_eq!(base.headers, other_body.headers);
        assert_eq!(base.body, other_type.body);
        assert_ne!(base.headers, other_type.headers);
        assert_eq!(base.body, other_meta.body);
        assert_eq!(base.headers, other_meta.headers);
        assert_ne!(base.hash, other_meta.hash);
    }

    #[test]
    fn fingerprint_is_stable() {
        let first = fingerprint(b"same", MARKDOWN_CONTENT_TYPE, &metadata("T"));
        let second = fingerprint(b"same", MARKDOWN_CONTENT_TYPE, &metadata("T"));
        assert_eq!(first, second);
    }

    #[test]
    fn key_joins_prefix() {
        assert_eq!(object_key("", "a/b.md"), "a/b.md");
        assert_eq!(object_key("docs", "a/b.md"), "docs/a/b.md");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_utf8("ééé", 3), "é");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
