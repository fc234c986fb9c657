//! The remote side: the bucket (or local directory) that r2sync converges,
//! reached through object_store, and the actual state read from it.

pub mod http;
pub mod lock;
pub mod metadata;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::config::{Credentials, Target, TargetKind};

/// Name of the folder under the target prefix where r2sync keeps its state
/// manifest and archived documents. Keys below it are never planned.
pub const INTERNAL_DIR: &str = ".r2sync";

/// Folder at the top of a local target that contains the headers and
/// metadata of each file, because a plain file system has no place for them.
const LOCAL_METADATA_DIR: &str = ".r2sync-meta";

/// Errors of the remote stage, each naming the key or target involved.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "{key}: changed on the remote since it was planned (precondition failed); run plan again"
    )]
    Precondition { key: String },
    #[error("{key}: was created on the remote since it was planned; run plan again")]
    AlreadyExists { key: String },
    #[error(
        "cannot list {target}: {source}{cause}; check the bucket name, --endpoint, --region and the credentials"
    )]
    List {
        target: String,
        #[source]
        source: object_store::Error,
        /// The innermost cause, such as "Connection refused", when the
        /// message above does not already show it.
        cause: String,
    },
    #[error("{operation} {key}: {source}")]
    Store {
        operation: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("invalid object key {key:?}: {source}")]
    InvalidKey {
        key: String,
        #[source]
        source: object_store::path::Error,
    },
    #[error("cannot set up target {target}: {message}")]
    Setup { target: String, message: String },
    #[error("delete {key}: {message}")]
    Delete { key: String, message: String },
    #[error("{key}: invalid local metadata file: {message}")]
    LocalMetadata { key: String, message: String },
}

/// Timeouts and retries for requests to the store.
#[derive(Clone, Debug)]
pub struct RequestPolicy {
    /// Retries of one request after throttling, 5xx and connection errors.
    pub retries: usize,
    /// Time limit of one attempt.
    pub timeout: Duration,
    /// Time limit of one request with all its retries.
    pub retry_timeout: Duration,
    /// Maximum pause between two attempts. Pauses start at 100 ms and
    /// double, with jitter.
    pub max_backoff: Duration,
    /// Bodies larger than this many bytes go up in a multipart upload.
    pub multipart_threshold: u64,
    /// Size of every part of a multipart upload but the last; R2 rejects
    /// parts of unequal size.
    pub part_size: usize,
}

/// Smallest part S3 and R2 accept, except for the last one.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Maximum number of parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// Largest body of a single PutObject on R2 (5 GiB minus 5 MiB); AWS
/// allows 5 GiB.
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024 - 5 * 1024 * 1024;

impl Default for RequestPolicy {
    fn default() -> Self {
        RequestPolicy {
            retries: 10,
            timeout: Duration::from_secs(30),
            retry_timeout: Duration::from_secs(120),
            max_backoff: Duration::from_secs(15),
            multipart_threshold: 8 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
        }
    }
}

/// An object as the listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// ETag without quotes, when the store reports one.
    pub etag: Option<String>,
}

/// An object's headers and user metadata, as a HEAD request returns them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectHead {
    pub etag: Option<String>,
    pub size: u64,
    /// The headers r2sync sets (content-type, cache-control,
    /// content-disposition, content-language), by lowercase name.
    pub headers: BTreeMap<String, String>,
    /// User metadata with RFC 2047 words decoded.
    pub metadata: BTreeMap<String, String>,
}

/// A write precondition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Unconditional write.
    None,
    /// Only if no object exists (`If-None-Match: *`).
    Absent,
    /// Only if the current ETag matches (`If-Match`).
    Matches(String),
}

#[derive(Clone, Debug)]
enum Backend {
    S3(Arc<dyn ObjectStore>),
    /// A directory; headers and metadata live in side files.
    Local(Arc<LocalFileSystem>),
    /// A directory that does not exist yet, read as empty by plan and check.
    LocalMissing(PathBuf),
}

/// A connected target: a store and the key prefix r2sync manages in it.
/// Cloning is cheap and shares the connection pool.
#[derive(Clone, Debug)]
pub struct Remote {
    backend: Backend,
    prefix: String,
    display: String,
    multipart_threshold: u64,
    part_size: usize,
}

/// Strips the quotes (and a weak marker) that servers put around ETags.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim_start_matches("W/").trim_matches('"').to_string()
}

fn parse_key(key: &str) -> Result<Path, RemoteError> {
    Path::parse(key).map_err(|source| RemoteError::InvalidKey {
        key: key.to_string(),
        source,
    })
}

impl Remote {
    /// Connects to `target`. No request is sent until the first operation.
    ///
    /// A local directory that does not exist is created only when
    /// `create_local_dir` is set (by apply); plan and check read it as empty.
    pub fn connect(
        target: &Target,
        credentials: &Credentials,
        policy: &RequestPolicy,
        create_local_dir: bool,
    ) -> Result<Self, RemoteError> {
        let setup_error = |message: String| RemoteError::Setup {
            target: target.to_string(),
            message,
        };

        let backend = match &target.kind {
            TargetKind::Local { dir } if !dir.exists() && !create_local_dir => {
                Backend::LocalMissing(dir.clone())
            }
            TargetKind::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|err| {
                    setup_error(format!("cannot create directory {}: {err}", dir.display()))
                })?;
                let store = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|err| setup_error(err.to_string()))?
                    .with_automatic_cleanup(true);
                Backend::Local(Arc::new(store))
            }
            TargetKind::S3 { bucket } | TargetKind::R2 { bucket } => {
                let endpoint = credentials.endpoint.clone();
                let client_options = ClientOptions::new()
                    .with_timeout(policy.timeout)
                    .with_connect_timeout(policy.timeout.min(Duration::from_secs(10)))
                    .with_allow_http(
                        endpoint
                            .as_deref()
                            .is_some_and(|url| url.starts_with("http://")),
                    );
                let retry = RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100).min(policy.max_backoff),
                        max_backoff: policy.max_backoff,
                        base: 2.0,
                    },
                    max_retries: policy.retries,
                    retry_timeout: policy.retry_timeout,
                };

                // R2 and most S3-compatible servers honour If-Match and
                // If-None-Match on PutObject. R2 rejects object tagging
                // with 501, so tags are never sent.
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(credentials.region.clone())
                    .with_virtual_hosted_style_request(false)
                    .with_conditional_put(S3ConditionalPut::ETagMatch)
                    .with_disable_tagging(true)
                    .with_client_options(client_options)
                    .with_retry(retry)
                    .with_http_connector(http::ObservedConnector::default());
                if let Some(endpoint) = &endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key_id) = &credentials.access_key_id {
                    builder = builder.with_access_key_id(key_id);
                }
                if let Some(secret) = &credentials.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose());
                }
                if let Some(token) = &credentials.session_token {
                    builder = builder.with_token(token.expose());
                }
                let store = builder
                    .build()
                    .map_err(|err| setup_error(err.to_string()))?;
                Backend::S3(Arc::new(store))
            }
        };

        Ok(Remote {
            backend,
            prefix: target.prefix.clone(),
            display: target.to_string(),
            multipart_threshold: policy.multipart_threshold,
            part_size: policy.part_size.max(MIN_PART_SIZE),
        })
    }

    /// Returns the key prefix r2sync manages, without a trailing slash.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Key of the internal folder under the prefix.
    pub fn internal_prefix(&self) -> String {
        crate::manifest::object_key(&self.prefix, INTERNAL_DIR)
    }

    /// A status line worth showing about the target, if any.
    pub fn note(&self) -> Option<String> {
        match &self.backend {
            Backend::LocalMissing(dir) => Some(format!(
                "Target directory {} does not exist yet; apply creates it.",
                dir.display()
            )),
            _ => None,
        }
    }

    fn store(&self) -> Result<Arc<dyn ObjectStore>, RemoteError> {
        match &self.backend {
            Backend::S3(store) => Ok(store.clone()),
            Backend::Local(store) => Ok(store.clone()),
            Backend::LocalMissing(dir) => Err(RemoteError::Setup {
                target: self.display.clone(),
                message: format!("directory {} does not exist", dir.display()),
            }),
        }
    }

    /// Lists every object under the prefix, following pagination.
    pub async fn list(&self) -> Result<Vec<Listed>, RemoteError> {
        self.list_under(&self.prefix).await
    }

    /// Lists every object under `prefix` (a folder, without a trailing
    /// slash), following pagination.
    pub async fn list_under(&self, prefix: &str) -> Result<Vec<Listed>, RemoteError> {
        if let Backend::LocalMissing(_) = self.backend {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let prefix_text = prefix;
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(parse_key(prefix)?)
        };

        let store = self.store()?;
        let mut stream = store.list(prefix.as_ref());
        let mut listed = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|source| RemoteError::List {
                target: self.display.clone(),
                cause: root_cause(&source),
                source,
            })?;
            let key = meta.location.to_string();
            if matches!(self.backend, Backend::Local(_)) && key.starts_with(LOCAL_METADATA_DIR) {
                continue;
            }
            let key = http::decode_marked_key(&key).unwrap_or(key);
            listed.push(Listed {
                key,
                size: meta.size,
                etag: meta.e_tag.as_deref().map(normalize_etag),
            });
        }
        listed.sort_by(|a, b| a.key.cmp(&b.key));

        tracing::debug!(
            prefix = %prefix_text,
            objects = listed.len(),
            latency_ms = started.elapsed().as_millis() as u64,
            "listed {} objects under {:?}", listed.len(), prefix_text
        );
        Ok(listed)
    }

    /// Reads an object's headers and user metadata, or `None` when the
    /// key does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectHead>, RemoteError> {
        if let Backend::LocalMissing(_) = self.backend {
            return Ok(None);
        }
        let span = tracing::debug_span!("head", key);
        async {
            let started = Instant::now();
            let path = parse_key(key)?;
            let options = GetOptions {
                head: true,
                ..Default::default()
            };
            let result = match self.store()?.get_opts(&path, options).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(source) => {
                    return Err(RemoteError::Store {
                        operation: "head",
                        key: key.to_string(),
                        source,
                    })
                }
            };

            let mut head = ObjectHead {
                etag: result.meta.e_tag.as_deref().map(normalize_etag),
                size: result.meta.size,
                ..Default::default()
            };
            match &self.backend {
                Backend::S3(_) => {
                    for (attribute, value) in &result.attributes {
                        match attribute {
                            Attribute::ContentType => {
                                head.headers
                                    .insert("content-type".into(), value.to_string());
                            }
                            Attribute::CacheControl => {
                                head.headers
                                    .insert("cache-control".into(), value.to_string());
                            }
                            Attribute::ContentDisposition => {
                                head.headers
                                    .insert("content-disposition".into(), value.to_string());
                            }
                            Attribute::ContentLanguage => {
                                head.headers
                                    .insert("content-language".into(), value.to_string());
                            }
                            Attribute::Metadata(name) => {
                                head.metadata
                                    .insert(name.to_lowercase(), metadata::decode(value));
                            }
                            _ => {}
                        }
                    }
                }
                Backend::Local(_) | Backend::LocalMissing(_) => {
                    if let Some(side) = self.read_local_metadata(key).await? {
                        head.headers = side.headers;
                        head.metadata = side.metadata;
                    }
                }
            }
            tracing::trace!(
                latency_ms = started.elapsed().as_millis() as u64,
                "head {key}"
            );
            Ok(Some(head))
        }
        .instrument(span)
        .await
    }

    /// Reads a whole object, or `None` when the key does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<(Bytes, Option<String>)>, RemoteError> {
        if let Backend::LocalMissing(_) = self.backend {
            return Ok(None);
        }
        let path = parse_key(key)?;
        let store_error = |source| RemoteError::Store {
            operation: "get",
            key: key.to_string(),
            source,
        };
        let result = match self.store()?.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(store_error(source)),
        };
        let etag = result.meta.e_tag.as_deref().map(normalize_etag);
        let bytes = result.bytes().await.map_err(store_error)?;
        Ok(Some((bytes, etag)))
    }

    /// Writes an object with its HTTP headers (by lowercase name) and user
    /// metadata under the given precondition and returns the new ETag.
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        headers: &BTreeMap<String, String>,
        user_metadata: &BTreeMap<String, String>,
        condition: Condition,
    ) -> Result<Option<String>, RemoteError> {
        let path = parse_key(key)?;
        let bytes = body.len();
        let span = tracing::info_span!("put", key, bytes);
        async {
            // Headers and metadata become object_store attributes.
            let mut attributes = Attributes::new();
            for (name, value) in headers {
                let attribute = header_attribute(name).ok_or_else(|| RemoteError::Setup {
                    target: self.display.clone(),
                    message: format!("header {name:?} cannot be set on objects"),
                })?;
                attributes.insert(attribute, AttributeValue::from(value.clone()));
            }
            for (name, value) in user_metadata {
                attributes.insert(
                    Attribute::Metadata(name.clone().into()),
                    AttributeValue::from(metadata::encode(value)),
                );
            }

            let started = Instant::now();
            let write = async {
                match &self.backend {
                    Backend::S3(store) if bytes as u64 > self.multipart_threshold => {
                        self.put_multipart(store, key, &path, body, attributes, &condition)
                            .await
                    }
                    Backend::S3(store) => {
                        let options = PutOptions {
                            mode: put_mode(&condition),
                            attributes,
                            ..Default::default()
                        };
                        store
                            .put_opts(&path, PutPayload::from(body), options)
                            .await
                            .map(|result| result.e_tag.as_deref().map(normalize_etag))
                    }
                    Backend::Local(store) => {
                        self.put_local(store, key, &path, body, headers, user_metadata, &condition)
                            .await
                    }
                    Backend::LocalMissing(dir) => Err(object_store::Error::NotFound {
                        path: key.to_string(),
                        source: format!("directory {} does not exist", dir.display()).into(),
                    }),
                }
            };
            let (result, attempts) = http::counting_attempts(write).await;
            let attempt = attempts.max(1);
            let latency_ms = started.elapsed().as_millis() as u64;
            match result {
                Ok(etag) => {
                    tracing::info!(
                        action = "put",
                        attempt,
                        latency_ms,
                        "put {key} ({bytes} bytes) in {latency_ms} ms, attempt {attempt}"
                    );
                    Ok(etag)
                }
                Err(source) => {
                    tracing::debug!(attempt, latency_ms, error = %source, "put {key} failed");
                    Err(classify(key, "put", source))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Uploads a large body in parts of equal size (the last one may be
    /// smaller) and aborts the upload on any failure, so that no orphaned
    /// parts keep costing storage.
    async fn put_multipart(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &str,
        path: &Path,
        body: Bytes,
        attributes: Attributes,
        condition: &Condition,
    ) -> Result<Option<String>, object_store::Error> {
        // Multipart uploads take no precondition, so the condition is checked
        // with a HEAD request first.
        // TODO: send the condition with CompleteMultipartUpload, which R2
        // and AWS accept, to close the gap between this check and the write.
        if *condition != Condition::None {
            let current = match store.head(path).await {
                Ok(meta) => Some(meta.e_tag.as_deref().map(normalize_etag)),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(err) => return Err(err),
            };
            let holds = match (condition, &current) {
                (Condition::Absent, None) => true,
                (Condition::Matches(expected), Some(Some(etag))) => etag == expected,
                _ => false,
            };
            if !holds {
                let source = format!("multipart precondition {condition:?} failed").into();
                return Err(match condition {
                    Condition::Absent => object_store::Error::AlreadyExists {
                        path: key.to_string(),
                        source,
                    },
                    _ => object_store::Error::Precondition {
                        path: key.to_string(),
                        source,
                    },
                });
            }
        }

        let options = object_store::PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let mut upload = store.put_multipart_opts(path, options).await?;
        let parts = body.len().div_ceil(self.part_size);
        tracing::debug!(
            parts,
            part_size = self.part_size,
            "multipart upload of {key}"
        );
        let mut outcome = Ok(());
        for index in 0..parts {
            let start = index * self.part_size;
            let end = (start + self.part_size).min(body.len());
            if let Err(err) = upload
                .put_part(PutPayload::from(body.slice(start..end)))
                .await
            {
                outcome = Err(err);
                break;
            }
        }
        let result = match outcome {
            Ok(()) => upload.complete().await,
            Err(err) => Err(err),
        };
        match result {
            Ok(result) => Ok(result.e_tag.as_deref().map(normalize_etag)),
            Err(err) => {
                if let Err(abort) = upload.abort().await {
                    tracing::warn!("cannot abort the multipart upload of {key}: {abort}; a lifecycle rule for incomplete uploads removes its parts");
                }
                Err(err)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_local(
        &self,
        store: &LocalFileSystem,
        key: &str,
        path: &Path,
        body: Bytes,
        headers: &BTreeMap<String, String>,
        user_metadata: &BTreeMap<String, String>,
        condition: &Condition,
    ) -> Result<Option<String>, object_store::Error> {
        // A local directory has a single writer in practice, so the ETag
        // check for an update is read-then-write rather than atomic.
        if let Condition::Matches(expected) = condition {
            let current = store.head(path).await?;
            let current = current.e_tag.as_deref().map(normalize_etag);
            if current.as_deref() != Some(expected.as_str()) {
                return Err(object_store::Error::Precondition {
                    path: key.to_string(),
                    source: format!("ETag is {current:?}, expected {expected:?}").into(),
                });
            }
        }
        let mode = match condition {
            Condition::Absent => PutMode::Create,
            _ => PutMode::Overwrite,
        };
        let result = store
            .put_opts(path, PutPayload::from(body), PutOptions::from(mode))
            .await?;

        let side = LocalMetadata {
            headers: headers.clone(),
            metadata: user_metadata.clone(),
        };
        let side_json = serde_json::to_vec_pretty(&side).expect("metadata serializes");
        store
            .put(&local_metadata_path(key)?, PutPayload::from(side_json))
            .await?;
        Ok(result.e_tag.as_deref().map(normalize_etag))
    }

    async fn read_local_metadata(&self, key: &str) -> Result<Option<LocalMetadata>, RemoteError> {
        let path = local_metadata_path(key).map_err(|source| RemoteError::Store {
            operation: "head",
            key: key.to_string(),
            source,
        })?;
        let bytes = match self.store()?.get(&path).await {
            Ok(result) => result.bytes().await,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(err) => Err(err),
        }
        .map_err(|source| RemoteError::Store {
            operation: "head",
            key: key.to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| RemoteError::LocalMetadata {
                key: key.to_string(),
                message: err.to_string(),
            })
    }

    /// Copies an object with its headers and metadata to `to`.
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), RemoteError> {
        let span = tracing::info_span!("copy", key = from, to);
        async {
            let started = Instant::now();
            let store = self.store()?;
            let copy_error = |source| classify(from, "copy", source);
            let (from_path, to_path) = (parse_key(from)?, parse_key(to)?);
            let (result, attempts) =
                http::counting_attempts(store.copy(&from_path, &to_path)).await;
            result.map_err(copy_error)?;
            if let Backend::Local(_) = self.backend {
                let side_from = local_metadata_path(from).map_err(copy_error)?;
                let side_to = local_metadata_path(to).map_err(copy_error)?;
                match store.copy(&side_from, &side_to).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(err) => return Err(copy_error(err)),
                }
            }
            tracing::info!(
                action = "copy",
                attempt = attempts.max(1),
                latency_ms = started.elapsed().as_millis() as u64,
                "copied {from} to {to}"
            );
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Deletes keys, up to 1,000 per request where the store supports bulk
    /// deletes, and returns the outcome of each key. A key that was already
    /// gone counts as deleted.
    pub async fn delete_many(&self, keys: &[String]) -> Vec<(String, Result<(), RemoteError>)> {
        let started = Instant::now();
        let mut paths = Vec::with_capacity(keys.len() * 2);
        let mut invalid = BTreeMap::new();
        for key in keys {
            match parse_key(key) {
                Ok(path) => paths.push(path),
                Err(err) => {
                    invalid.insert(key.clone(), err);
                }
            }
            // Local targets also drop the side file that contains the metadata.
            if let Backend::Local(_) = self.backend {
                if let Ok(side) = local_metadata_path(key) {
                    paths.push(side);
                }
            }
        }

        // The bulk API reports failures per key, but not every error names
        // its key, so any key not confirmed is a failure with the first
        // error seen.
        let store = match self.store() {
            Ok(store) => store,
            Err(err) => {
                let message = err.to_string();
                return keys
                    .iter()
                    .map(|key| {
                        (
                            key.clone(),
                            Err(RemoteError::Delete {
                                key: key.clone(),
                                message: message.clone(),
                            }),
                        )
                    })
                    .collect();
            }
        };
        let input = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        let results: Vec<_> = store.delete_stream(input).collect().await;
        let mut confirmed = std::collections::BTreeSet::new();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(path) => {
                    confirmed.insert(path.to_string());
                }
                Err(object_store::Error::NotFound { path, .. }) => {
                    confirmed.insert(path);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "delete failed");
                    first_error.get_or_insert(err);
                }
            }
        }

        let first_error = first_error.map(|err| err.to_string());
        let outcomes = keys
            .iter()
            .map(|key| {
                let outcome = if let Some(err) = invalid.remove(key) {
                    Err(err)
                } else if confirmed.contains(key) {
                    Ok(())
                } else {
                    Err(RemoteError::Delete {
                        key: key.clone(),
                        message: first_error
                            .clone()
                            .unwrap_or_else(|| "not confirmed by the server".into()),
                    })
                };
                (key.clone(), outcome)
            })
            .collect();
        tracing::info!(
            action = "delete",
            keys = keys.len(),
            latency_ms = started.elapsed().as_millis() as u64,
            "deleted {} keys",
            keys.len()
        );
        outcomes
    }

    /// Writes a small internal object (the state manifest or the lock)
    /// under `condition` and returns its ETag.
    pub async fn put_internal(
        &self,
        key: &str,
        body: Bytes,
        condition: Condition,
    ) -> Result<Option<String>, RemoteError> {
        let path = parse_key(key)?;
        let store = self.store()?;
        let (result, attempts) = http::counting_attempts(async {
            match &self.backend {
                Backend::Local(local) => {
                    // The local check for an update is read-then-write, as
                    // for documents.
                    if let Condition::Matches(expected) = &condition {
                        let current = match local.head(&path).await {
                            Ok(meta) => meta.e_tag.as_deref().map(normalize_etag),
                            Err(object_store::Error::NotFound { .. }) => None,
                            Err(err) => return Err(err),
                        };
                        if current.as_deref() != Some(expected.as_str()) {
                            return Err(object_store::Error::Precondition {
                                path: key.to_string(),
                                source: format!("ETag is {current:?}, expected {expected:?}")
                                    .into(),
                            });
                        }
                    }
                    let mode = match condition {
                        Condition::Absent => PutMode::Create,
                        _ => PutMode::Overwrite,
                    };
                    store
                        .put_opts(&path, PutPayload::from(body), PutOptions::from(mode))
                        .await
                }
                _ => {
                    let mut options = PutOptions::from(put_mode(&condition));
                    options.attributes.insert(
                        Attribute::ContentType,
                        AttributeValue::from("application/json"),
                    );
                    store.put_opts(&path, PutPayload::from(body), options).await
                }
            }
        })
        .await;
        tracing::debug!(attempt = attempts.max(1), "put {key} (internal)");
        result
            .map(|result| result.e_tag.as_deref().map(normalize_etag))
            .map_err(|source| classify(key, "put", source))
    }

    /// Deletes one internal object. A key that is already gone counts as
    /// deleted.
    pub async fn delete_internal(&self, key: &str) -> Result<(), RemoteError> {
        let path = parse_key(key)?;
        match self.store()?.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(classify(key, "delete", source)),
        }
    }

    /// Tells whether the backend is an S3-compatible server (as opposed to
    /// a local directory).
    pub fn is_s3(&self) -> bool {
        matches!(self.backend, Backend::S3(_))
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

fn put_mode(condition: &Condition) -> PutMode {
    match condition {
        Condition::None => PutMode::Overwrite,
        Condition::Absent => PutMode::Create,
        Condition::Matches(etag) => PutMode::Update(UpdateVersion {
            e_tag: Some(format!("\"{etag}\"")),
            version: None,
        }),
    }
}

/// The innermost source of an error, as ` (cause: ...)`, or nothing when the
/// error's own message already contains it.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    let cause = current.to_string();
    if error.to_string().contains(&cause) {
        String::new()
    } else {
        format!(" (cause: {cause})")
    }
}

/// Maps the precondition outcomes of object_store to their own variants.
fn classify(key: &str, operation: &'static str, source: object_store::Error) -> RemoteError {
    match source {
        object_store::Error::Precondition { .. } => RemoteError::Precondition {
            key: key.to_string(),
        },
        object_store::Error::AlreadyExists { .. } => RemoteError::AlreadyExists {
            key: key.to_string(),
        },
        source => RemoteError::Store {
            operation,
            key: key.to_string(),
            source,
        },
    }
}

/// Headers and metadata of a file in a local target.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LocalMetadata {
    /// HTTP headers by lowercase name.
    headers: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
}

/// The object_store attribute for an HTTP header r2sync may set.
fn header_attribute(name: &str) -> Option<Attribute> {
    match name {
        "content-type" => Some(Attribute::ContentType),
        "cache-control" => Some(Attribute::CacheControl),
        "content-disposition" => Some(Attribute::ContentDisposition),
        "content-language" => Some(Attribute::ContentLanguage),
        _ => None,
    }
}

fn local_metadata_path(key: &str) -> Result<Path, object_store::Error> {
    Path::parse(format!("{LOCAL_METADATA_DIR}/{key}.json")).map_err(Into::into)
}

/// Turns a `file://` target directory into an absolute path.
pub fn absolute_dir(dir: &std::path::Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
