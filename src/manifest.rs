//! The desired state: every object the bucket should contain for one commit,
//! with its exact body, headers, user metadata and fingerprint.

mod document;
mod parallel;
mod user_metadata;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::markdown::{Heading, MarkdownError, NormalizeOptions};
use crate::rules::Rules;
use crate::source::{self, Repo, SourceError, SourceFile};

pub use user_metadata::UserMetadata;

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
    /// Objects with the same headers share one map.
    pub headers: Arc<BTreeMap<String, String>>,
    /// User metadata without the fingerprint entries.
    pub metadata: UserMetadata,
    pub fingerprint: Fingerprint,
}

impl DesiredObject {
    /// Builds an object and computes its fingerprint.
    pub fn new(
        key: String,
        source_path: String,
        body: Bytes,
        headers: impl Into<Arc<BTreeMap<String, String>>>,
        metadata: impl Into<UserMetadata>,
    ) -> Self {
        let headers = headers.into();
        let mut metadata = metadata.into();
        metadata.shrink_to_fit();
        let fingerprint = fingerprint(&body, headers.iter(), &metadata);
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
        let mut all = self.metadata.to_map();
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
/// `headers` and `metadata` are name/value pairs in name order, such as a
/// `&BTreeMap<String, String>` or a `&UserMetadata`.
pub fn fingerprint<HeaderName, HeaderValue, MetadataName, MetadataValue>(
    body: &[u8],
    headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    metadata: impl IntoIterator<Item = (MetadataName, MetadataValue)>,
) -> Fingerprint
where
    HeaderName: AsRef<str>,
    HeaderValue: AsRef<str>,
    MetadataName: AsRef<str>,
    MetadataValue: AsRef<str>,
{
    fingerprint_from_parts(&blake3::hash(body).to_hex(), headers, metadata)
}

/// Computes a fingerprint from the hex blake3 hash of a body and the
/// headers and user metadata of an object (fingerprint entries in the
/// metadata are ignored), for objects whose body is known by its hash.
/// Both are name/value pairs in name order.
pub fn fingerprint_from_parts<HeaderName, HeaderValue, MetadataName, MetadataValue>(
    body_hash: &str,
    headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    metadata: impl IntoIterator<Item = (MetadataName, MetadataValue)>,
) -> Fingerprint
where
    HeaderName: AsRef<str>,
    HeaderValue: AsRef<str>,
    MetadataName: AsRef<str>,
    MetadataValue: AsRef<str>,
{
    let headers_hash = hash_fields(headers);
    let metadata_hash = hash_fields(
        metadata
            .into_iter()
            .filter(|(name, _)| ![META_HASH, META_BODY, META_HEADERS].contains(&name.as_ref())),
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
fn hash_fields(
    fields: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    for (name, value) in fields {
        let (name, value) = (name.as_ref(), value.as_ref());
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
/// file is read, for progress reporting.
///
/// Files are read on the calling thread and normalized on one worker thread
/// per available core. The result, warnings and errors included, is the
/// same as if the files were handled one by one in order.
pub fn build(
    repo: &Repo,
    files: &[SourceFile],
    options: &DesiredOptions,
    mut on_file: impl FnMut(),
) -> Result<DesiredState, ManifestError> {
    let header_sets = (0..parallel::worker_count(files.len()))
        .map(|_| document::HeaderSets::default())
        .collect();
    let mut assembly = Assembly::with_capacity(files.len());
    parallel::map_in_order(
        files,
        |file| {
            let raw = source::read_blob(repo, file)?;
            on_file();
            Ok::<_, ManifestError>(raw)
        },
        header_sets,
        |header_sets, file, raw| document::prepare(file, raw, options, header_sets),
        |file, outcome| {
            assembly.add(file, outcome);
            Ok(())
        },
    )?;
    assembly.finish(options)
}

/// The parts of the desired state that depend on more than one file,
/// filled in file order.
struct Assembly {
    /// Accepted objects by key, in file order.
    entries: Vec<(String, DesiredObject)>,
    /// Folded key to the index in `entries` of the object that claimed it.
    claims: HashMap<String, usize>,
    catalog: Vec<CatalogLine>,
    /// Problems in documents are collected, so that one run reports them all.
    errors: Vec<ManifestError>,
    warnings: Vec<String>,
    skipped_drafts: Vec<String>,
}

impl Assembly {
    fn with_capacity(files: usize) -> Self {
        Assembly {
            entries: Vec::with_capacity(files),
            claims: HashMap::with_capacity(files),
            catalog: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            skipped_drafts: Vec::new(),
        }
    }

    fn add(&mut self, file: &SourceFile, outcome: document::FileOutcome) {
        self.warnings.extend(outcome.warnings);
        let prepared = match outcome.result {
            document::FileResult::Skipped => return,
            document::FileResult::Draft => {
                self.skipped_drafts.push(file.repo_path.clone());
                return;
            }
            document::FileResult::Failed(err) => {
                self.errors.push(err);
                return;
            }
            document::FileResult::Object(prepared) => *prepared,
        };

        if let Err(err) =
            self.check_claim(&prepared.folded_key, &prepared.object.key, &file.repo_path)
        {
            self.errors.push(err);
            return;
        }
        self.claims.insert(prepared.folded_key, self.entries.len());
        // An object over the metadata limit keeps its claim, so that a later
        // file with the same key is reported too. The build fails anyway.
        if let Some(err) = prepared.oversize {
            self.errors.push(err);
        } else if let Some(line) = prepared.catalog {
            self.catalog.push(line);
        }
        self.entries
            .push((prepared.object.key.clone(), prepared.object));
    }

    /// Fails when an earlier object claimed the same key, exactly or up to
    /// case and Unicode normalization.
    fn check_claim(&self, folded_key: &str, key: &str, path: &str) -> Result<(), ManifestError> {
        match self.claims.get(folded_key) {
            Some(&index) => {
                let (first_key, first) = &self.entries[index];
                Err(key_collision(&first.source_path, first_key, path, key))
            }
            None => Ok(()),
        }
    }

    fn finish(mut self, options: &DesiredOptions) -> Result<DesiredState, ManifestError> {
        for rule in options.rules.unused() {
            self.warnings
                .push(format!("{rule} matches no document; check its glob"));
        }
        match self.errors.len() {
            0 => {}
            1 => return Err(self.errors.remove(0)),
            _ => {
                return Err(ManifestError::Documents {
                    errors: self.errors,
                })
            }
        }
        let catalog_key = options
            .catalog
            .as_ref()
            .map(|catalog_key| object_key(&options.prefix, catalog_key));
        let catalog_claim = match &catalog_key {
            Some(key) => self.check_claim(&fold_key(key), key, "(catalog)"),
            None => Ok(()),
        };
        drop(self.claims);

        // Collecting sorts the entries (they usually are sorted already) and
        // fills every node of the map, which inserting one by one does not.
        let mut state = DesiredState {
            objects: self.entries.into_iter().collect(),
            warnings: self.warnings,
            skipped_drafts: self.skipped_drafts,
        };
        if options.local_target {
            check_file_folder_collisions(&state)?;
        }
        if let Some(key) = catalog_key {
            catalog_claim?;
            state.objects.insert(
                key.clone(),
                catalog_object(key, &options.prefix, self.catalog),
            );
        }
        Ok(state)
    }
}

/// Folds a key by Unicode normalization (NFC) and letter case, so that keys
/// that collide on case-insensitive file systems and sites fold alike.
fn fold_key(key: &str) -> String {
    if key.is_ascii() {
        return key.to_ascii_lowercase();
    }
    key.nfc().flat_map(char::to_lowercase).collect()
}

/// Builds the collision error for `path`, whose key `key` folds like
/// `first_key` of `first`, an earlier path.
fn key_collision(first: &str, first_key: &str, path: &str, key: &str) -> ManifestError {
    let same_nfc = |a: &str, b: &str| a.nfc().eq(b.nfc());
    let how = if first_key != key {
        " (keys that differ only in letter case collide on case-insensitive file systems and sites)"
    } else if first != path && same_nfc(first, path) {
        " (the names differ only in Unicode normalization, NFC and NFD)"
    } else {
        ""
    };
    ManifestError::KeyCollision {
        first: first.to_string(),
        second: path.to_string(),
        first_key: first_key.to_string(),
        key: key.to_string(),
        how,
    }
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

    /// Claims `key` for `path` the way the build does.
    fn claim(assembly: &mut Assembly, key: &str, path: &str) -> Result<(), ManifestError> {
        let folded = fold_key(key);
        assembly.check_claim(&folded, key, path)?;
        assembly.claims.insert(folded, assembly.entries.len());
        let object = DesiredObject::new(
            key.to_string(),
            path.to_string(),
            Bytes::new(),
            markdown(),
            metadata("T"),
        );
        assembly.entries.push((key.to_string(), object));
        Ok(())
    }

    #[test]
    fn collisions_name_both_paths() {
        let mut assembly = Assembly::with_capacity(4);
        claim(&mut assembly, "docs/Guide.md", "Guide.md").unwrap();
        let err = claim(&mut assembly, "docs/guide.md", "guide.md")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Guide.md and guide.md"), "{err}");
        assert!(err.contains("case"), "{err}");

        // NFD "é" folds onto NFC "é".
        claim(&mut assembly, "docs/caf\u{e9}.md", "nfc").unwrap();
        let err = claim(&mut assembly, "docs/cafe\u{301}.md", "nfd")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nfc and nfd"), "{err}");
    }
}
