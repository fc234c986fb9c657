//! The desired state: every object the bucket should contain for one commit,
//! with its exact body, headers, user metadata and fingerprint.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::markdown::{self, Heading, MarkdownError, NormalizeOptions};
use crate::remote::metadata;
use crate::rules::{self, Rules};
use crate::source::{self, Repo, SourceError, SourceFile};

/// Content-Type of every uploaded document unless a rule sets another.
pub const MARKDOWN_CONTENT_TYPE: &str = "text/markdown; charset=utf-8";
/// Content-Type of the catalog object (JSON Lines).
pub const CATALOG_CONTENT_TYPE: &str = "application/x-ndjson; charset=utf-8";

/// User metadata names (sent as `x-amz-meta-<name>`).
pub const META_HASH: &str = "r2sync-hash";
pub const META_BODY: &str = "r2sync-body";
pub const META_HEADERS: &str = "r2sync-headers";
pub const META_PATH: &str = "r2sync-path";
pub const META_TITLE: &str = "r2sync-title";
pub const META_DESCRIPTION: &str = "r2sync-description";
pub const META_WORDS: &str = "r2sync-words";
/// The target prefix the object was written for, with a leading slash
/// (`/` for the bucket root), so that a target never claims objects that
/// another target below or above it wrote.
pub const META_PREFIX: &str = "r2sync-prefix";

/// Default limit of user metadata per object, in bytes: the S3 limit
/// (names plus values). R2 allows 8 KiB.
pub const DEFAULT_MAX_METADATA_BYTES: usize = 2048;

/// Maximum title and description length kept in metadata, in bytes before
/// encoding, so that the default limit leaves room for mapped fields.
const MAX_TITLE_BYTES: usize = 512;
const MAX_DESCRIPTION_BYTES: usize = 256;

/// What identifies an object's content: a combined hash and the hashes of
/// its parts, so that a difference can be explained (content, headers or
/// metadata). Each is a blake3 hash in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Hash of the body, headers and user metadata together.
    pub hash: String,
    /// Hash of the body alone.
    pub body: String,
    /// Hash of the HTTP headers r2sync sets.
    pub headers: String,
}

/// One object of the desired state.
#[derive(Clone, Debug)]
pub struct DesiredObject {
    pub key: String,
    /// Path of the source file from the top of the repository.
    pub source_path: String,
    pub body: Bytes,
    /// HTTP headers by lowercase name; `content-type` is always present.
    pub headers: BTreeMap<String, String>,
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
        headers: BTreeMap<String, String>,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        let fingerprint = fingerprint(&body, &headers, &metadata);
        DesiredObject {
            key,
            source_path,
            body,
            headers,
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

/// Headers with only a Content-Type.
pub fn content_type_headers(content_type: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("content-type".to_string(), content_type.to_string())])
}

/// Computes the fingerprint of an object from exactly what is uploaded.
pub fn fingerprint(
    body: &[u8],
    headers: &BTreeMap<String, String>,
    metadata: &BTreeMap<String, String>,
) -> Fingerprint {
    fingerprint_from_parts(&blake3::hash(body).to_hex(), headers, metadata)
}

/// Computes a fingerprint from the hex blake3 hash of a body and the
/// headers and user metadata of an object (fingerprint entries in the
/// metadata are ignored), for objects whose body is known by its hash.
pub fn fingerprint_from_parts(
    body_hash: &str,
    headers: &BTreeMap<String, String>,
    metadata: &BTreeMap<String, String>,
) -> Fingerprint {
    let headers_hash = hash_fields(
        headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    let metadata_hash = hash_fields(
        metadata
            .iter()
            .filter(|(name, _)| ![META_HASH, META_BODY, META_HEADERS].contains(&name.as_str()))
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );

    let mut combined = blake3::Hasher::new();
    combined.update(b"r2sync fingerprint v1\n");
    combined.update(body_hash.as_bytes());
    combined.update(headers_hash.as_bytes());
    combined.update(metadata_hash.as_bytes());

    Fingerprint {
        hash: combined.finalize().to_hex().to_string(),
        body: body_hash.to_string(),
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
    pub normalize: NormalizeOptions,
    pub rules: Rules,
    /// Front matter field name to user metadata name.
    pub front_matter_metadata: BTreeMap<String, String>,
    /// Leave out documents whose front matter sets `draft: true`.
    pub skip_drafts: bool,
    /// Limit of user metadata per object, names plus values as sent, in bytes.
    pub max_metadata_bytes: usize,
    /// Key of the catalog object below the prefix, if one is kept.
    pub catalog: Option<String>,
    /// The target is a local directory, where a key cannot be both a file
    /// and the folder of other keys.
    pub local_target: bool,
    /// Skip Git LFS pointer files instead of failing on them.
    pub skip_lfs: bool,
}

impl Default for DesiredOptions {
    fn default() -> Self {
        DesiredOptions {
            prefix: String::new(),
            normalize: NormalizeOptions::default(),
            rules: Rules::default(),
            front_matter_metadata: BTreeMap::new(),
            skip_drafts: false,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            catalog: None,
            local_target: false,
            skip_lfs: false,
        }
    }
}

/// The complete desired state of one commit.
#[derive(Debug, Default)]
pub struct DesiredState {
    pub objects: BTreeMap<String, DesiredObject>,
    /// Problems in documents that did not stop the build.
    pub warnings: Vec<String>,
    /// Source paths left out because their front matter sets `draft: true`.
    pub skipped_drafts: Vec<String>,
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
    #[error("{first} and {second} map to the same key{}{how}; rename one, exclude one, or change the rules", if first_key == key { format!(" {key:?}") } else { format!("s {first_key:?} and {key:?}") })]
    KeyCollision {
        first: String,
        second: String,
        first_key: String,
        key: String,
        how: &'static str,
    },
    #[error("{path}: key {key:?} is also the folder of {other:?}, which a local directory cannot hold; change the rules or use an S3 target")]
    FileFolderCollision {
        path: String,
        key: String,
        other: String,
    },
    #[error("{} documents cannot be published:\n  {}\nfix them, or leave them out with --exclude 'GLOB'", errors.len(), list_errors(errors))]
    Documents { errors: Vec<ManifestError> },
    #[error("{path}: is a Git LFS pointer, and the document itself is not in the repository; publish it from a checkout with the content, or pass --skip-lfs")]
    LfsPointer { path: String },
    #[error("{path}: user metadata is {size} bytes, more than the limit of {max}; shorten the mapped front matter fields or raise --max-metadata-bytes (R2 allows 8192)")]
    MetadataTooLarge {
        path: String,
        size: usize,
        max: usize,
    },
}

/// Errors listed one per line, at most this many.
const MAX_LISTED_ERRORS: usize = 20;

fn list_errors(errors: &[ManifestError]) -> String {
    let mut lines: Vec<String> = errors
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(|err| err.to_string())
        .collect();
    if errors.len() > MAX_LISTED_ERRORS {
        lines.push(format!("and {} more", errors.len() - MAX_LISTED_ERRORS));
    }
    lines.join("\n  ")
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
    // Case- and normalization-folded key to the source path that claimed it.
    let mut claimed: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut catalog = Vec::new();
    // Problems in documents are collected, so that one run reports them all.
    let mut errors = Vec::new();

    for file in files {
        let raw = source::read_blob(repo, file)?;
        on_file();

        // An LFS pointer stands for content stored elsewhere, which r2sync
        // cannot read from the repository.
        if source::is_lfs_pointer(&raw) {
            if options.skip_lfs {
                state.warnings.push(format!(
                    "{}: Git LFS pointer skipped; its content is not in the repository",
                    file.repo_path
                ));
            } else {
                errors.push(ManifestError::LfsPointer {
                    path: file.repo_path.clone(),
                });
            }
            continue;
        }
        let mut document = match markdown::normalize(&file.repo_path, &raw, &options.normalize) {
            Ok(document) => document,
            Err(err) => {
                errors.push(err.into());
                continue;
            }
        };
        state.warnings.append(&mut document.warnings);

        if options.skip_drafts {
            if let Some(text) = draft_lookalike(document.front_matter.as_ref()) {
                state.warnings.push(format!(
                    "{}: draft: {text} is not the boolean true, so the document is published; write draft: true",
                    file.repo_path
                ));
            }
        }
        if options.skip_drafts && is_draft(document.front_matter.as_ref()) {
            tracing::info!(path = %file.repo_path, "skipping draft");
            state.skipped_drafts.push(file.repo_path.clone());
            continue;
        }

        // The key: rules map the path, and keys are NFC, as R2 stores them.
        let resolved = options.rules.resolve(&file.path);
        let key: String = object_key(&options.prefix, &rules::map_path(&file.path, &resolved))
            .nfc()
            .collect();
        if let Err(err) = object_store::path::Path::parse(&key) {
            errors.push(ManifestError::InvalidKey {
                path: file.repo_path.clone(),
                key,
                reason: err.to_string(),
            });
            continue;
        }
        if let Err(err) = claim_key(&mut claimed, &key, &file.repo_path) {
            errors.push(err);
            continue;
        }

        // Headers: Markdown by default, then the rules.
        let mut headers = content_type_headers(MARKDOWN_CONTENT_TYPE);
        headers.extend(resolved.headers);

        // Metadata: what r2sync derives, mapped front matter, then the rules.
        let mut user_metadata = BTreeMap::new();
        user_metadata.insert(META_PATH.to_string(), file.repo_path.clone());
        user_metadata.insert(
            META_TITLE.to_string(),
            truncate_utf8(&document.title, MAX_TITLE_BYTES),
        );
        user_metadata.insert(META_PREFIX.to_string(), prefix_metadata(&options.prefix));
        user_metadata.insert(META_WORDS.to_string(), document.word_count.to_string());
        if let Some(description) = &document.description {
            user_metadata.insert(
                META_DESCRIPTION.to_string(),
                truncate_utf8(description, MAX_DESCRIPTION_BYTES),
            );
        }
        if let Some(matter) = &document.front_matter {
            for (field, name) in &options.front_matter_metadata {
                if let Some(value) = matter.get(field).and_then(metadata_text) {
                    user_metadata.insert(name.clone(), value);
                }
            }
        }
        user_metadata.extend(resolved.metadata);

        let object = DesiredObject::new(
            key.clone(),
            file.repo_path.clone(),
            Bytes::from(std::mem::take(&mut document.body)),
            headers,
            user_metadata,
        );
        if let Err(err) = check_metadata_size(&object, options.max_metadata_bytes) {
            errors.push(err);
            continue;
        }

        if options.catalog.is_some() {
            catalog.push(CatalogLine {
                key: key.clone(),
                path: file.repo_path.clone(),
                title: document.title.clone(),
                headings: std::mem::take(&mut document.headings),
                word_count: document.word_count,
                description: document.description.clone(),
                front_matter: document.front_matter.take(),
                body_hash: object.fingerprint.body.clone(),
            });
        }
        state.objects.insert(key, object);
    }

    for rule in options.rules.unused() {
        state
            .warnings
            .push(format!("{rule} matches no document; check its glob"));
    }
    match errors.len() {
        0 => {}
        1 => return Err(errors.remove(0)),
        _ => return Err(ManifestError::Documents { errors }),
    }
    if options.local_target {
        check_file_folder_collisions(&state)?;
    }
    if let Some(catalog_key) = &options.catalog {
        let key = object_key(&options.prefix, catalog_key);
        claim_key(&mut claimed, &key, "(catalog)")?;
        state
            .objects
            .insert(key.clone(), catalog_object(key, &options.prefix, catalog));
    }
    Ok(state)
}

/// Records `key` for `path`, or fails when another path already claimed the
/// same key, exactly or up to case and Unicode normalization.
fn claim_key(
    claimed: &mut BTreeMap<String, (String, String)>,
    key: &str,
    path: &str,
) -> Result<(), ManifestError> {
    let folded: String = key.nfc().flat_map(char::to_lowercase).collect();
    if let Some((first, first_key)) = claimed.get(&folded) {
        let same_nfc = |a: &str, b: &str| a.nfc().eq(b.nfc());
        let how = if first_key != key {
            " (keys that differ only in letter case collide on case-insensitive file systems and sites)"
        } else if first != path && same_nfc(first, path) {
            " (the names differ only in Unicode normalization, NFC and NFD)"
        } else {
            ""
        };
        return Err(ManifestError::KeyCollision {
            first: first.clone(),
            second: path.to_string(),
            first_key: first_key.clone(),
            key: key.to_string(),
            how,
        });
    }
    claimed.insert(folded, (path.to_string(), key.to_string()));
    Ok(())
}

fn check_file_folder_collisions(state: &DesiredState) -> Result<(), ManifestError> {
    // The first key at or after `key/` in key order is inside that folder
    // if any key is.
    for (key, object) in &state.objects {
        let folder = format!("{key}/");
        let next = state.objects.range(folder.clone()..).next();
        if let Some((child, _)) = next.filter(|(child, _)| child.starts_with(&folder)) {
            return Err(ManifestError::FileFolderCollision {
                path: object.source_path.clone(),
                key: key.clone(),
                other: child.clone(),
            });
        }
    }
    Ok(())
}

/// Fails when the user metadata, as it would be sent, exceeds the limit.
fn check_metadata_size(object: &DesiredObject, max: usize) -> Result<(), ManifestError> {
    let size: usize = object
        .metadata_with_fingerprint()
        .iter()
        .map(|(name, value)| name.len() + metadata::encode(value).len())
        .sum();
    if size > max {
        return Err(ManifestError::MetadataTooLarge {
            path: object.source_path.clone(),
            size,
            max,
        });
    }
    Ok(())
}

/// Returns the text of a `draft` value that reads like "true" but is not the
/// boolean (`yes`, `on` and `"true"` are strings in YAML 1.2).
fn draft_lookalike(front_matter: Option<&serde_json::Value>) -> Option<String> {
    let draft = front_matter?.get("draft")?.as_str()?;
    matches!(
        draft.to_ascii_lowercase().as_str(),
        "true" | "yes" | "on" | "y"
    )
    .then(|| draft.to_string())
}

fn is_draft(front_matter: Option<&serde_json::Value>) -> bool {
    front_matter
        .and_then(|matter| matter.get("draft"))
        .is_some_and(|draft| draft == &serde_json::Value::Bool(true))
}

/// The text of a front matter value in metadata: strings as written,
/// numbers and booleans as parsed, lists of scalars joined with ", ", and
/// anything else as JSON.
fn metadata_text(value: &serde_json::Value) -> Option<String> {
    let scalar = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        serde_json::Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    };
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
            Some(parts.unwrap_or_else(|| vec![value.to_string()]).join(", "))
        }
        serde_json::Value::Object(_) => Some(value.to_string()),
        other => scalar(other),
    }
}

/// One line of the catalog.
#[derive(Serialize)]
struct CatalogLine {
    key: String,
    path: String,
    title: String,
    headings: Vec<Heading>,
    word_count: usize,
    description: Option<String>,
    front_matter: Option<serde_json::Value>,
    /// blake3 of the body (the object's `r2sync-body`), so that a change of
    /// headers or metadata alone leaves the catalog as it is.
    body_hash: String,
}

/// Builds the catalog object: one JSON line per document, in key order.
fn catalog_object(key: String, prefix: &str, mut lines: Vec<CatalogLine>) -> DesiredObject {
    lines.sort_by(|a, b| a.key.cmp(&b.key));
    let mut body = Vec::new();
    for line in &lines {
        serde_json::to_writer(&mut body, line).expect("catalog line serializes");
        body.push(b'\n');
    }
    let user_metadata = BTreeMap::from([
        (META_PATH.to_string(), "(catalog)".to_string()),
        (META_PREFIX.to_string(), prefix_metadata(prefix)),
    ]);
    DesiredObject::new(
        key,
        "(catalog)".to_string(),
        Bytes::from(body),
        content_type_headers(CATALOG_CONTENT_TYPE),
        user_metadata,
    )
}

/// Returns the value of the prefix metadata for a target prefix.
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

    fn markdown() -> BTreeMap<String, String> {
        content_type_headers(MARKDOWN_CONTENT_TYPE)
    }

    #[test]
    fn fingerprint_separates_parts() {
        let base = fingerprint(b"body", &markdown(), &metadata("T"));
        let other_body = fingerprint(b"body2", &markdown(), &metadata("T"));
        let other_type = fingerprint(b"body", &content_type_headers("text/plain"), &metadata("T"));
        let other_meta = fingerprint(b"body", &markdown(), &metadata("U"));

        assert_ne!(base.body, other_body.body);
        assert_eq!(base.headers, other_body.headers);
        assert_eq!(base.body, other_type.body);
        assert_ne!(base.headers, other_type.headers);
        assert_eq!(base.body, other_meta.body);
        assert_eq!(base.headers, other_meta.headers);
        assert_ne!(base.hash, other_meta.hash);
    }

    #[test]
    fn fingerprint_ignores_its_own_entries() {
        let object = DesiredObject::new(
            "k".into(),
            "p".into(),
            Bytes::from_static(b"body"),
            markdown(),
            metadata("T"),
        );
        let body_hash = blake3::hash(b"body").to_hex().to_string();
        let recomputed =
            fingerprint_from_parts(&body_hash, &markdown(), &object.metadata_with_fingerprint());
        assert_eq!(recomputed, object.fingerprint);
    }

    #[test]
    fn fingerprint_is_stable() {
        let first = fingerprint(b"same", &markdown(), &metadata("T"));
        let second = fingerprint(b"same", &markdown(), &metadata("T"));
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

    #[test]
    fn collisions_name_both_paths() {
        let mut claimed = BTreeMap::new();
        claim_key(&mut claimed, "docs/Guide.md", "Guide.md").unwrap();
        let err = claim_key(&mut claimed, "docs/guide.md", "guide.md")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Guide.md and guide.md"), "{err}");
        assert!(err.contains("case"), "{err}");

        // NFD "é" folds onto NFC "é".
        claim_key(&mut claimed, "docs/caf\u{e9}.md", "nfc").unwrap();
        let err = claim_key(&mut claimed, "docs/cafe\u{301}.md", "nfd")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nfc and nfd"), "{err}");
    }

    #[test]
    fn metadata_text_keeps_strings_as_written() {
        assert_eq!(
            metadata_text(&serde_json::json!("2024-01-02")).as_deref(),
            Some("2024-01-02")
        );
        assert_eq!(
            metadata_text(&serde_json::json!("no")).as_deref(),
            Some("no")
        );
        assert_eq!(
            metadata_text(&serde_json::json!(["a", "b"])).as_deref(),
            Some("a, b")
        );
        assert_eq!(
            metadata_text(&serde_json::json!(true)).as_deref(),
            Some("true")
        );
        assert_eq!(
            metadata_text(&serde_json::json!({"a": 1})).as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(metadata_text(&serde_json::Value::Null), None);
    }

    #[test]
    fn drafts_need_a_true_boolean() {
        assert!(is_draft(Some(&serde_json::json!({"draft": true}))));
        assert!(!is_draft(Some(&serde_json::json!({"draft": "true"}))));
        assert!(!is_draft(Some(&serde_json::json!({"draft": false}))));
        assert!(!is_draft(None));
    }
}
