//! Resolved settings: the target, credentials from the environment, and the
//! options that shape a plan.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::markdown::FrontMatterMode;
use crate::rules::RuleSpec;

/// Name of the configuration file read from the current directory when
/// `--config` is not given.
pub const CONFIG_FILE: &str = "r2sync.toml";

/// Region used for R2, which accepts `auto` (and treats empty and
/// `us-east-1` the same way).
pub const R2_REGION: &str = "auto";

/// Errors in settings, each naming the option or variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --target {target:?}: {message}; use r2://BUCKET/PREFIX, s3://BUCKET/PREFIX, file:///ABSOLUTE/DIR or file://./RELATIVE/DIR")]
    Target { target: String, message: String },
    #[error("invalid {option} {value:?}: {message}")]
    Option {
        option: &'static str,
        value: String,
        message: String,
    },
    #[error("target {target} needs an endpoint: set R2_ACCOUNT_ID (or CLOUDFLARE_ACCOUNT_ID), or pass --endpoint")]
    MissingR2Endpoint { target: String },
    #[error("target {target} needs credentials: set {variables} in the environment or in .env")]
    MissingCredentials {
        target: String,
        variables: &'static str,
    },
    #[error("invalid --endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
}

/// The kind of destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// Cloudflare R2 through its S3 API.
    R2 { bucket: String },
    /// Any S3-compatible store.
    S3 { bucket: String },
    /// A local directory, for trying r2sync without a server.
    Local { dir: PathBuf },
}

/// A parsed `--target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    /// Key prefix without leading or trailing slashes; may be empty.
    pub prefix: String,
}

impl Target {
    /// Parses `r2://BUCKET/PREFIX`, `s3://BUCKET/PREFIX`,
    /// `file:///ABSOLUTE/DIR` or `file://./RELATIVE/DIR`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let invalid = |message: &str| ConfigError::Target {
            target: text.to_string(),
            message: message.to_string(),
        };

        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(invalid("the scheme is missing"));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            // A host part (file://name/dir) is almost always a typo for a
            // path, so only absolute and ./ or ../ relative paths are taken.
            if !(rest.starts_with('/')
                || rest.starts_with("./")
                || rest.starts_with("../")
                || rest == ".")
            {
                return Err(invalid(
                    "a file target needs an absolute path or one starting with ./",
                ));
            }
            return Ok(Target {
                kind: TargetKind::Local {
                    dir: crate::remote::absolute_dir(std::path::Path::new(rest)),
                },
                prefix: String::new(),
            });
        }

        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("the bucket name is missing"));
        }
        let prefix = normalize_key_prefix(prefix, "--target prefix")
            .map_err(|err| invalid(&err.to_string()))?;

        let bucket = bucket.to_string();
        let kind = match scheme.as_str() {
            "r2" => TargetKind::R2 { bucket },
            "s3" => TargetKind::S3 { bucket },
            other => return Err(invalid(&format!("unknown scheme {other:?}"))),
        };
        Ok(Target { kind, prefix })
    }
}

/// Trims slashes from a key prefix and rejects empty, `.` and `..`
/// segments and control characters, which object keys cannot round-trip.
pub fn normalize_key_prefix(prefix: &str, option: &'static str) -> Result<String, ConfigError> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let invalid = |message: &str| ConfigError::Option {
        option,
        value: prefix.to_string(),
        message: message.to_string(),
    };
    if trimmed
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(invalid("it has an empty, `.` or `..` segment"));
    }
    if trimmed.chars().any(|character| character.is_control()) {
        return Err(invalid("it contains a control character"));
    }
    Ok(trimmed.to_string())
}

/// Normalizes `--root`: `./docs/`, `docs/` and `docs` are the same
/// directory, and `..` cannot leave the repository.
pub fn normalize_root(root: &str) -> Result<String, ConfigError> {
    let mut parts = Vec::new();
    for segment in root.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                return Err(ConfigError::Option {
                    option: "--root",
                    value: root.to_string(),
                    message: "`..` is not allowed; give a directory inside the repository".into(),
                })
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, bucket) = match &self.kind {
            TargetKind::R2 { bucket } => ("r2", bucket.as_str()),
            TargetKind::S3 { bucket } => ("s3", bucket.as_str()),
            TargetKind::Local { dir } => return write!(f, "file://{}", dir.display()),
        };
        if self.prefix.is_empty() {
            write!(f, "{scheme}://{bucket}")
        } else {
            write!(f, "{scheme}://{bucket}/{}", self.prefix)
        }
    }
}

/// A secret string that never shows in `Debug` or `Display` output.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for handing to the store client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Endpoint, region and keys for an S3 or R2 target.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

/// Reads the first variable of `names` that is set and not empty.
fn first_env(names: &[&str], lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    names
        .iter()
        .filter_map(|name| lookup(name))
        .find(|value| !value.trim().is_empty())
}

impl Credentials {
    /// Resolves endpoint, region and keys for `target` from `--endpoint`
    /// and the environment (read through `lookup`).
    pub fn resolve(
        target: &Target,
        endpoint_flag: Option<&str>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::resolve_in(target, endpoint_flag, None, None, lookup)
    }

    /// Like [`Credentials::resolve`], for an R2 account in a jurisdiction,
    /// and with `--region` winning over the environment for S3 targets (R2
    /// always signs for `auto`).
    pub fn resolve_in(
        target: &Target,
        endpoint_flag: Option<&str>,
        jurisdiction: Option<Jurisdiction>,
        region_flag: Option<&str>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        if let TargetKind::Local { .. } = target.kind {
            return Ok(Credentials::default());
        }

        let (endpoint, region) = match &target.kind {
            TargetKind::R2 { .. } => {
                let endpoint = match endpoint_flag {
                    Some(endpoint) => endpoint.to_string(),
                    None => match first_env(&["R2_ENDPOINT"], lookup) {
                        Some(endpoint) => endpoint,
                        None => {
                            let account =
                                first_env(&["R2_ACCOUNT_ID", "CLOUDFLARE_ACCOUNT_ID"], lookup)
                                    .ok_or_else(|| ConfigError::MissingR2Endpoint {
                                        target: target.to_string(),
                                    })?;
                            match jurisdiction {
                                Some(jurisdiction) => format!(
                                    "https://{}.{}.r2.cloudflarestorage.com",
                                    account.trim(),
                                    jurisdiction.host_label()
                                ),
                                None => {
                                    format!("https://{}.r2.cloudflarestorage.com", account.trim())
                                }
                            }
                        }
                    },
                };
                (Some(endpoint), R2_REGION.to_string())
            }
            _ => {
                let endpoint = endpoint_flag
                    .map(str::to_string)
                    .or_else(|| first_env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"], lookup));
                let region = region_flag
                    .map(str::to_string)
                    .or_else(|| first_env(&["AWS_REGION", "AWS_DEFAULT_REGION"], lookup))
                    .unwrap_or_else(|| "us-east-1".to_string());
                (endpoint, region)
            }
        };

        if let Some(endpoint) = &endpoint {
            let parsed = url::Url::parse(endpoint).map_err(|err| ConfigError::Endpoint {
                endpoint: endpoint.clone(),
                message: match err {
                    url::ParseError::RelativeUrlWithoutBase => {
                        "the scheme is missing; write it as http://HOST:PORT or https://HOST"
                            .to_string()
                    }
                    other => other.to_string(),
                },
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::Endpoint {
                    endpoint: endpoint.clone(),
                    message: "the scheme must be http or https".into(),
                });
            }
        }

        // Without explicit keys object_store would fall back to instance
        // metadata services, so missing keys are an error here.
        let access_key_id = first_env(&["R2_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"], lookup);
        let secret_access_key =
            first_env(&["R2_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"], lookup);
        let (Some(access_key_id), Some(secret_access_key)) = (access_key_id, secret_access_key)
        else {
            let variables = match target.kind {
                TargetKind::R2 { .. } => {
                    "R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                }
                _ => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY)",
            };
            return Err(ConfigError::MissingCredentials {
                target: target.to_string(),
                variables,
            });
        };
        let session_token = first_env(&["AWS_SESSION_TOKEN"], lookup).map(Secret::new);

        Ok(Credentials {
            endpoint,
            region,
            access_key_id: Some(access_key_id),
            secret_access_key: Some(Secret::new(secret_access_key)),
            session_token,
        })
    }
}

/// The treatment of a managed object whose source file is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Copy the object under the archive prefix, then delete it.
    #[default]
    Archive,
    /// Delete the object.
    Delete,
}

/// The configuration file (`r2sync.toml`). Every key is optional. A flag
/// or environment variable wins over the file, and a `[targets.NAME]`
/// table chosen with `--target-name` wins over the top level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub repo: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub root: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub target: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub jurisdiction: Option<Jurisdiction>,
    pub concurrency: Option<u16>,
    pub retries: Option<usize>,
    pub timeout: Option<u64>,
    pub retry_timeout: Option<u64>,
    pub max_backoff: Option<u64>,
    pub lock_timeout: Option<u64>,
    pub multipart_threshold: Option<u64>,
    pub part_size: Option<u64>,
    pub archive_keep_days: Option<u32>,
    pub cache_dir: Option<PathBuf>,
    pub delete_mode: Option<DeleteMode>,
    pub archive_prefix: Option<String>,
    pub max_deletes: Option<usize>,
    /// Key of the catalog object below the prefix.
    pub catalog: Option<String>,
    pub skip_drafts: Option<bool>,
    pub skip_invalid_paths: Option<bool>,
    pub skip_lfs: Option<bool>,
    pub fallback_encoding: Option<String>,
    pub max_document_size: Option<usize>,
    pub max_metadata_bytes: Option<usize>,
    #[serde(default)]
    pub front_matter: FrontMatterConfig,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Named targets, chosen with `--target-name`.
    #[serde(default)]
    pub targets: std::collections::BTreeMap<String, TargetConfig>,
    /// The file this was read from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A `[targets.NAME]` table: where one environment publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetConfig {
    pub target: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub jurisdiction: Option<Jurisdiction>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub root: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub delete_mode: Option<DeleteMode>,
    pub archive_prefix: Option<String>,
    pub max_deletes: Option<usize>,
    pub catalog: Option<String>,
    pub concurrency: Option<u16>,
}

/// The `[front-matter]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FrontMatterConfig {
    /// `strip` (default) or `keep`, as `--front-matter`.
    pub mode: Option<FrontMatterMode>,
    /// Front matter field name to user metadata name.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// R2 jurisdictions with their own endpoint host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Jurisdiction {
    /// European Union: <ACCOUNT>.eu.r2.cloudflarestorage.com
    Eu,
    /// FedRAMP: <ACCOUNT>.fedramp.r2.cloudflarestorage.com
    Fedramp,
}

impl Jurisdiction {
    fn host_label(self) -> &'static str {
        match self {
            Jurisdiction::Eu => "eu",
            Jurisdiction::Fedramp => "fedramp",
        }
    }
}

impl FileConfig {
    /// Reads `path`, or `r2sync.toml` in the current directory when `path`
    /// is `None` and that file exists.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let path = match path {
            Some(path) => path.to_path_buf(),
            None => {
                let default = PathBuf::from(CONFIG_FILE);
                if !default.is_file() {
                    return Ok(FileConfig::default());
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let mut config: FileConfig = toml::from_str(&text).map_err(|err| ConfigError::File {
            path: path.clone(),
            message: err.to_string().trim_end().to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::File {
            path: path.clone(),
            message,
        })?;
        config.source = Some(path.clone());
        tracing::info!(path = %path.display(), rules = config.rules.len(), "read configuration file {}", path.display());
        Ok(config)
    }

    /// Checks what the TOML types cannot: metadata names, rules, the
    /// fallback encoding, and metadata names claimed twice.
    fn validate(&self) -> Result<(), String> {
        for name in self.front_matter.metadata.values() {
            crate::rules::validate_metadata_name(name)
                .map_err(|message| format!("[front-matter.metadata]: {message}"))?;
        }
        crate::rules::Rules::new(&self.rules).map_err(|err| err.to_string())?;
        if let Some(label) = &self.fallback_encoding {
            if crate::markdown::encoding_for_label(label).is_none() {
                return Err(format!(
                    "fallback-encoding {label:?} is not an encoding label; use a WHATWG label such as windows-1252"
                ));
            }
        }

        // A name set by both a rule and the front matter mapping would
        // silently lose one of the two values.
        for (index, rule) in self.rules.iter().enumerate() {
            for name in rule.metadata.keys() {
                if let Some((field, _)) = self
                    .front_matter
                    .metadata
                    .iter()
                    .find(|(_, mapped)| *mapped == name)
                {
                    return Err(format!(
                        "metadata name {name:?} is set by rule {} (match = {:?}) and mapped from front matter field {field:?}; rename one",
                        index + 1,
                        rule.pattern
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The settings that shape the desired state and the plan. A saved plan
/// stores them, and `apply` rejects the plan when they differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Repository, with credentials removed from a URL.
    pub repo: String,
    pub root: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub target: String,
    pub endpoint: Option<String>,
    pub front_matter: FrontMatterMode,
    pub delete_mode: DeleteMode,
    pub archive_prefix: Option<String>,
    /// Key of the catalog object below the prefix.
    pub catalog: Option<String>,
    /// The `[targets.NAME]` table the target came from.
    #[serde(default)]
    pub target_name: Option<String>,
    pub skip_drafts: bool,
    #[serde(default)]
    pub skip_invalid_paths: bool,
    #[serde(default)]
    pub skip_lfs: bool,
    /// WHATWG label of the encoding for files that are not UTF-8.
    pub fallback_encoding: Option<String>,
    pub max_document_size: usize,
    pub max_metadata_bytes: usize,
    /// Front matter field name to user metadata name.
    pub front_matter_metadata: std::collections::BTreeMap<String, String>,
    pub rules: Vec<RuleSpec>,
}

impl Settings {
    /// Settings for `repo` and `target` with every other option at its
    /// default, as the command line has them without flags.
    pub fn with_defaults(repo: &str, target: &str) -> Self {
        Settings {
            repo: repo.to_string(),
            root: String::new(),
            include: crate::source::DEFAULT_INCLUDE
                .iter()
                .map(|glob| glob.to_string())
                .collect(),
            exclude: Vec::new(),
            target: target.to_string(),
            endpoint: None,
            front_matter: FrontMatterMode::default(),
            delete_mode: DeleteMode::default(),
            archive_prefix: None,
            catalog: None,
            target_name: None,
            skip_drafts: false,
            skip_invalid_paths: false,
            skip_lfs: false,
            fallback_encoding: None,
            max_document_size: crate::markdown::DEFAULT_MAX_DOCUMENT_BYTES,
            max_metadata_bytes: crate::manifest::DEFAULT_MAX_METADATA_BYTES,
            front_matter_metadata: Default::default(),
            rules: Vec::new(),
        }
    }

    /// Returns a blake3 hash of the settings, to tell at a glance whether two match.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).expect("settings serialize");
        blake3::hash(&json).to_hex().to_string()
    }

    /// Lists the settings that differ from `other`, as `name: old -> new`.
    pub fn differences(&self, other: &Settings) -> Vec<String> {
        let mine = serde_json::to_value(self).expect("settings serialize");
        let theirs = serde_json::to_value(other).expect("settings serialize");
        let (serde_json::Value::Object(mine), serde_json::Value::Object(theirs)) = (mine, theirs)
        else {
            return Vec::new();
        };
        mine.iter()
            .filter(|(name, value)| theirs.get(*name) != Some(value))
            .map(|(name, value)| {
                let new = theirs.get(name).cloned().unwrap_or(serde_json::Value::Null);
                describe_change(name, value, &new)
            })
            .collect()
    }
}

/// Describes one changed setting; for lists, only the entries that differ.
fn describe_change(name: &str, old: &serde_json::Value, new: &serde_json::Value) -> String {
    if let (serde_json::Value::Array(old), serde_json::Value::Array(new)) = (old, new) {
        let mut parts = Vec::new();
        for index in 0..old.len().max(new.len()) {
            match (old.get(index), new.get(index)) {
                (Some(before), Some(after)) if before != after => {
                    parts.push(format!("entry {}: {before} -> {after}", index + 1))
                }
                (Some(before), None) => {
                    parts.push(format!("entry {} removed: {before}", index + 1))
                }
                (None, Some(after)) => parts.push(format!("entry {} added: {after}", index + 1)),
                _ => {}
            }
        }
        return format!("{name}: {}", parts.join("; "));
    }
    format!("{name}: {old} -> {new}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn parses_r2_target() {
        let target = Target::parse("r2://docs-bucket/site/en/").unwrap();
        assert_eq!(
            target.kind,
            TargetKind::R2 {
                bucket: "docs-bucket".into()
            }
        );
        assert_eq!(target.prefix, "site/en");
        assert_eq!(target.to_string(), "r2://docs-bucket/site/en");
    }

    #[test]
    fn parses_s3_target_without_prefix() {
        let target = Target::parse("s3://b").unwrap();
        assert_eq!(target.prefix, "");
    }

    #[test]
    fn rejects_bad_targets() {
        for text in [
            "gs://b/p",
            "s3:///p",
            "s3://b/a/../c",
            "file://",
            "file:/tmp/x",
            "bucket1",
            "file://host/dir",
        ] {
            let err = Target::parse(text).unwrap_err().to_string();
            assert!(err.contains(text), "{err}");
        }
    }

    #[test]
    fn root_is_normalized() {
        assert_eq!(normalize_root("./content/").unwrap(), "content");
        assert_eq!(normalize_root("a//b").unwrap(), "a/b");
        assert_eq!(normalize_root("").unwrap(), "");
        assert!(normalize_root("../x").is_err());
    }

    #[test]
    fn archive_prefix_is_checked() {
        assert_eq!(
            normalize_key_prefix("/old/", "--archive-prefix").unwrap(),
            "old"
        );
        assert!(normalize_key_prefix("../escape", "--archive-prefix").is_err());
    }

    #[test]
    fn local_target_is_absolute() {
        let target = Target::parse("file://./out").unwrap();
        let TargetKind::Local { dir } = target.kind else {
            panic!("expected a local target");
        };
        assert!(dir.is_absolute());
    }

    #[test]
    fn r2_endpoint_from_account_id() {
        let target = Target::parse("r2://b/p").unwrap();
        let lookup = env(&[
            ("CLOUDFLARE_ACCOUNT_ID", "abc123"),
            ("R2_ACCESS_KEY_ID", "id"),
            ("R2_SECRET_ACCESS_KEY", "secret"),
        ]);
        let credentials = Credentials::resolve(&target, None, &lookup).unwrap();
        assert_eq!(
            credentials.endpoint.as_deref(),
            Some("https://abc123.r2.cloudflarestorage.com")
        );
        assert_eq!(credentials.region, "auto");
    }

    #[test]
    fn r2_jurisdiction_endpoint() {
        let target = Target::parse("r2://b").unwrap();
        let lookup = env(&[
            ("R2_ACCOUNT_ID", "abc123"),
            ("R2_ACCESS_KEY_ID", "id"),
            ("R2_SECRET_ACCESS_KEY", "secret"),
        ]);
        let eu =
            Credentials::resolve_in(&target, None, Some(Jurisdiction::Eu), None, &lookup).unwrap();
        assert_eq!(
            eu.endpoint.as_deref(),
            Some("https://abc123.eu.r2.cloudflarestorage.com")
        );
        let fedramp =
            Credentials::resolve_in(&target, None, Some(Jurisdiction::Fedramp), None, &lookup)
                .unwrap();
        assert_eq!(
            fedramp.endpoint.as_deref(),
            Some("https://abc123.fedramp.r2.cloudflarestorage.com")
        );
    }

    #[test]
    fn r2_keys_win_over_aws_keys() {
        let target = Target::parse("s3://b").unwrap();
        let lookup = env(&[
            ("R2_ACCESS_KEY_ID", "r2-id"),
            ("R2_SECRET_ACCESS_KEY", "r2-secret"),
            ("AWS_ACCESS_KEY_ID", "aws-id"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
        ]);
        let credentials =
            Credentials::resolve(&target, Some("http://127.0.0.1:9"), &lookup).unwrap();
        assert_eq!(credentials.access_key_id.as_deref(), Some("r2-id"));
        assert_eq!(credentials.secret_access_key.unwrap().expose(), "r2-secret");
    }

    #[test]
    fn missing_credentials_name_variables() {
        let target = Target::parse("r2://b").unwrap();
        let lookup = env(&[("R2_ACCOUNT_ID", "a")]);
        let err = Credentials::resolve(&target, None, &lookup)
            .unwrap_err()
            .to_string();
        assert!(err.contains("R2_ACCESS_KEY_ID"), "{err}");
    }

    #[test]
    fn missing_account_names_variable() {
        let target = Target::parse("r2://b").unwrap();
        let err = Credentials::resolve(&target, None, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("R2_ACCOUNT_ID"), "{err}");
    }

    #[test]
    fn config_file_rejects_unknown_keys_with_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r2sync.toml");
        std::fs::write(
            &path,
            "catalog = \"c.jsonl\"\n\n[[rules]]\nmatch = \"**\"\ncache-contrl = \"x\"\n",
        )
        .unwrap();
        let err = FileConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("r2sync.toml"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("cache-contrl"), "{err}");
    }

    #[test]
    fn config_file_rejects_a_name_claimed_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r2sync.toml");
        std::fs::write(
            &path,
            "[front-matter.metadata]\nauthor = \"author\"\n\n[[rules]]\nmatch = \"**\"\nmetadata = { author = \"x\" }\n",
        )
        .unwrap();
        let err = FileConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("r2sync.toml"), "{err}");
        assert!(err.contains("\"author\" is set by rule 1"), "{err}");
    }

    #[test]
    fn changed_lists_name_the_entry() {
        let old =
            serde_json::json!([{"match": "a"}, {"match": "b", "cache-control": "max-age=300"}]);
        let new =
            serde_json::json!([{"match": "a"}, {"match": "b", "cache-control": "max-age=301"}]);
        let text = describe_change("rules", &old, &new);
        assert!(text.starts_with("rules: entry 2: "), "{text}");
        assert!(!text.contains("entry 1"), "{text}");
    }

    #[test]
    fn config_file_reads_rules_and_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custom.toml");
        std::fs::write(
            &path,
            "skip-drafts = true\n[front-matter.metadata]\nauthor = \"author\"\n[[rules]]\nmatch = \"blog/**\"\nextension = \".html\"\nindex-to-directory = true\n",
        )
        .unwrap();
        let config = FileConfig::load(Some(&path)).unwrap();
        assert_eq!(config.skip_drafts, Some(true));
        assert_eq!(config.front_matter.metadata["author"], "author");
        assert_eq!(
            config.rules[0].extension,
            Some(crate::rules::KeyExtension::Replace(".html".into()))
        );
        assert_eq!(config.rules[0].index_to_directory, Some(true));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let credentials = Credentials {
            secret_access_key: Some(Secret::new("hunter2".into())),
            ..Default::default()
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
