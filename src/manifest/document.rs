//! One selected file into one desired object: the part of building the
//! desired state that needs no other file, so it runs on worker threads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use unicode_normalization::UnicodeNormalization;

use super::{
    content_type_headers, object_key, prefix_metadata, CatalogLine, DesiredObject, DesiredOptions,
    ManifestError, UserMetadata, MARKDOWN_CONTENT_TYPE, META_BODY, META_DESCRIPTION, META_HASH,
    META_HEADERS, META_PATH, META_PREFIX, META_TITLE, META_WORDS,
};
use crate::markdown;
use crate::remote::metadata;
use crate::rules;
use crate::source::{self, SourceFile};

/// Maximum title and description length kept in metadata, in bytes before
/// encoding, so that the default limit leaves room for mapped fields.
const MAX_TITLE_BYTES: usize = 512;
const MAX_DESCRIPTION_BYTES: usize = 256;

/// The outcome of one file, with the warnings about it in the order they
/// were found.
pub(super) struct FileOutcome {
    pub(super) warnings: Vec<String>,
    pub(super) result: FileResult,
}

pub(super) enum FileResult {
    /// Left out, with a warning that gives the reason.
    Skipped,
    /// Left out because its front matter sets `draft: true`.
    Draft,
    Failed(ManifestError),
    Object(Box<PreparedObject>),
}

/// A desired object before its key is checked against the other files.
pub(super) struct PreparedObject {
    pub(super) object: DesiredObject,
    /// The key folded by case and Unicode normalization.
    pub(super) folded_key: String,
    /// The user metadata is over the limit. This is reported after the key
    /// is claimed, so that a later file with the same key still collides.
    pub(super) oversize: Option<ManifestError>,
    pub(super) catalog: Option<CatalogLine>,
}

/// Header maps already in use, so that objects with equal headers share
/// one map. Most documents have the same headers, and a map costs hundreds
/// of bytes.
#[derive(Default)]
pub(super) struct HeaderSets {
    /// The headers of documents that no rule gives headers.
    markdown: Option<Arc<BTreeMap<String, String>>>,
    shared: HashMap<BTreeMap<String, String>, Arc<BTreeMap<String, String>>>,
}

impl HeaderSets {
    /// Returns the headers of a document: Markdown's Content-Type, then
    /// what the rules set.
    fn headers(&mut self, from_rules: BTreeMap<String, String>) -> Arc<BTreeMap<String, String>> {
        if from_rules.is_empty() {
            let markdown = self
                .markdown
                .get_or_insert_with(|| Arc::new(content_type_headers(MARKDOWN_CONTENT_TYPE)));
            return Arc::clone(markdown);
        }
        let mut headers = content_type_headers(MARKDOWN_CONTENT_TYPE);
        headers.extend(from_rules);
        self.share(headers)
    }

    fn share(&mut self, headers: BTreeMap<String, String>) -> Arc<BTreeMap<String, String>> {
        if let Some(shared) = self.shared.get(&headers) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(headers.clone());
        self.shared.insert(headers, Arc::clone(&shared));
        shared
    }
}

/// Normalizes one file read as `raw` and derives its key, headers and
/// metadata.
pub(super) fn prepare(
    file: &SourceFile,
    raw: Vec<u8>,
    options: &DesiredOptions,
    header_sets: &mut HeaderSets,
) -> FileOutcome {
    let mut warnings = Vec::new();
    let result = prepare_object(file, &raw, options, header_sets, &mut warnings);
    FileOutcome { warnings, result }
}

fn prepare_object(
    file: &SourceFile,
    raw: &[u8],
    options: &DesiredOptions,
    header_sets: &mut HeaderSets,
    warnings: &mut Vec<String>,
) -> FileResult {
    // An LFS pointer stands for content stored elsewhere, which r2sync
    // cannot read from the repository.
    if source::is_lfs_pointer(raw) {
        if options.skip_lfs {
            warnings.push(format!(
                "{}: Git LFS pointer skipped; its content is not in the repository",
                file.repo_path
            ));
            return FileResult::Skipped;
        }
        return FileResult::Failed(ManifestError::LfsPointer {
            path: file.repo_path.clone(),
        });
    }
    let mut document = match markdown::normalize(&file.repo_path, raw, &options.normalize) {
        Ok(document) => document,
        Err(err) => return FileResult::Failed(err.into()),
    };
    warnings.append(&mut document.warnings);

    if options.skip_drafts {
        if let Some(text) = draft_lookalike(document.front_matter.as_ref()) {
            warnings.push(format!(
                "{}: draft: {text} is not the boolean true, so the document is published; write draft: true",
                file.repo_path
            ));
        }
        if is_draft(document.front_matter.as_ref()) {
            tracing::info!(path = %file.repo_path, "skipping draft");
            return FileResult::Draft;
        }
    }

    // The key: rules map the path, and keys are NFC, as R2 stores them.
    let resolved = options.rules.resolve(&file.path);
    let key = nfc(object_key(
        &options.prefix,
        &rules::map_path(&file.path, &resolved),
    ));
    if let Err(err) = object_store::path::Path::parse(&key) {
        return FileResult::Failed(ManifestError::InvalidKey {
            path: file.repo_path.clone(),
            key,
            reason: err.to_string(),
        });
    }
    let folded_key = super::fold_key(&key);

    let headers = header_sets.headers(resolved.headers);

    // Metadata: what r2sync derives (in name order, the fastest to insert),
    // mapped front matter, then the rules.
    let mut user_metadata = UserMetadata::new();
    if let Some(description) = &document.description {
        user_metadata.insert(
            META_DESCRIPTION,
            truncate_utf8(description, MAX_DESCRIPTION_BYTES),
        );
    }
    user_metadata.insert(META_PATH, &file.repo_path);
    user_metadata.insert(META_PREFIX, prefix_metadata(&options.prefix));
    user_metadata.insert(META_TITLE, truncate_utf8(&document.title, MAX_TITLE_BYTES));
    user_metadata.insert(META_WORDS, document.word_count.to_string());
    if let Some(matter) = &document.front_matter {
        for (field, name) in &options.front_matter_metadata {
            if let Some(value) = matter.get(field).and_then(metadata_text) {
                user_metadata.insert(name, value);
            }
        }
    }
    user_metadata.extend(resolved.metadata);

    let object = DesiredObject::new(
        key,
        file.repo_path.clone(),
        Bytes::from(std::mem::take(&mut document.body)),
        headers,
        user_metadata,
    );
    let oversize = check_metadata_size(&object, options.max_metadata_bytes).err();
    let catalog = options.catalog.is_some().then(|| CatalogLine {
        key: object.key.clone(),
        path: file.repo_path.clone(),
        title: document.title.clone(),
        headings: std::mem::take(&mut document.headings),
        word_count: document.word_count,
        description: document.description.clone(),
        front_matter: document.front_matter.take(),
        body_hash: object.fingerprint.body.clone(),
    });
    FileResult::Object(Box::new(PreparedObject {
        object,
        folded_key,
        oversize,
        catalog,
    }))
}

/// Returns `text` in Unicode normalization form C, which ASCII text
/// already is.
fn nfc(text: String) -> String {
    if text.is_ascii() {
        return text;
    }
    text.nfc().collect()
}

/// Fails when the user metadata, as it would be sent (fingerprint entries
/// included, values encoded for headers), exceeds the limit.
fn check_metadata_size(object: &DesiredObject, max: usize) -> Result<(), ManifestError> {
    let fingerprint = &object.fingerprint;
    let sent = [
        (META_HASH, fingerprint.hash.as_str()),
        (META_BODY, fingerprint.body.as_str()),
        (META_HEADERS, fingerprint.headers.as_str()),
    ];
    let replaced = |name: &str| sent.iter().any(|(sent_name, _)| *sent_name == name);
    let size: usize = object
        .metadata
        .iter()
        .filter(|(name, _)| !replaced(name))
        .chain(sent)
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

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_utf8("ééé", 3), "é");
        assert_eq!(truncate_utf8("abc", 10), "abc");
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

    #[test]
    fn metadata_size_counts_what_is_sent() {
        let object = DesiredObject::new(
            "k.md".into(),
            "k.md".into(),
            Bytes::from_static(b"body"),
            content_type_headers(MARKDOWN_CONTENT_TYPE),
            BTreeMap::from([(META_TITLE.to_string(), "caf\u{e9}".to_string())]),
        );
        let expected: usize = object
            .metadata_with_fingerprint()
            .iter()
            .map(|(name, value)| name.len() + metadata::encode(value).len())
            .sum();
        assert!(check_metadata_size(&object, expected).is_ok());
        let err = check_metadata_size(&object, expected - 1).unwrap_err();
        assert!(
            err.to_string().contains(&format!("{expected} bytes")),
            "{err}"
        );
    }
}
