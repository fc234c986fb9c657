//! Per-path rules from the configuration file: ordered glob matches that set
//! HTTP headers, extra metadata and the key mapping of the documents they
//! match. Every matching rule applies in order, so a later rule overrides
//! a field an earlier one set.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

/// HTTP headers a rule may set, by their lowercase names.
pub const RULE_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "content-disposition",
    "content-language",
];

/// The key mapping of a source path. In the configuration file it is
/// `"keep"`, `"drop"`, or the new extension such as `".html"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeyExtension {
    /// `guide/intro.md` stays `guide/intro.md`.
    #[default]
    Keep,
    /// `guide/intro.md` becomes `guide/intro`.
    Drop,
    /// `guide/intro.md` becomes `guide/intro` plus the given extension.
    Replace(String),
}

impl TryFrom<String> for KeyExtension {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "keep" => Ok(KeyExtension::Keep),
            "drop" => Ok(KeyExtension::Drop),
            _ if text.starts_with('.') && text.len() > 1 && !text.contains('/') => Ok(KeyExtension::Replace(text)),
            _ => Err(format!(
                "extension {text:?} must be \"keep\", \"drop\", or a new extension such as \".html\""
            )),
        }
    }
}

impl From<KeyExtension> for String {
    fn from(extension: KeyExtension) -> String {
        match extension {
            KeyExtension::Keep => "keep".into(),
            KeyExtension::Drop => "drop".into(),
            KeyExtension::Replace(extension) => extension,
        }
    }
}

/// One `[[rules]]` table of the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleSpec {
    /// Glob matched against the path below the root, case-insensitively.
    #[serde(rename = "match")]
    pub pattern: String,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    /// Extra user metadata, by name.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `"keep"`, `"drop"`, or a new extension such as `".html"`.
    pub extension: Option<KeyExtension>,
    /// Map `dir/index.md` and `dir/_index.md` to the key `dir`.
    pub index_to_directory: Option<bool>,
}

/// The rules' result for one path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Headers by lowercase name.
    pub headers: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub extension: KeyExtension,
    pub index_to_directory: bool,
}

/// Errors in rules, naming the rule by its position and pattern.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("rule {index} (match = {pattern:?}): invalid glob: {source}")]
    Glob {
        index: usize,
        pattern: String,
        source: globset::Error,
    },
    #[error("rule {index} (match = {pattern:?}): {message}")]
    Invalid {
        index: usize,
        pattern: String,
        message: String,
    },
}

/// Compiled rules, in the order of the file, with how often each matched.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<(GlobMatcher, RuleSpec)>,
    matches: Vec<std::sync::atomic::AtomicUsize>,
}

impl Clone for Rules {
    fn clone(&self) -> Self {
        Rules {
            rules: self.rules.clone(),
            matches: self.rules.iter().map(|_| Default::default()).collect(),
        }
    }
}

impl Rules {
    pub fn new(specs: &[RuleSpec]) -> Result<Self, RuleError> {
        let mut rules = Vec::with_capacity(specs.len());
        for (position, spec) in specs.iter().enumerate() {
            let index = position + 1;
            let invalid = |message: String| RuleError::Invalid {
                index,
                pattern: spec.pattern.clone(),
                message,
            };
            let matcher = GlobBuilder::new(&spec.pattern)
                .case_insensitive(true)
                .build()
                .map_err(|source| RuleError::Glob {
                    index,
                    pattern: spec.pattern.clone(),
                    source,
                })?
                .compile_matcher();
            for name in spec.metadata.keys() {
                validate_metadata_name(name).map_err(&invalid)?;
            }
            let header_values = [
                &spec.content_type,
                &spec.cache_control,
                &spec.content_disposition,
                &spec.content_language,
            ];
            for value in header_values.into_iter().flatten() {
                if !value.bytes().all(|byte| (b' '..=b'~').contains(&byte)) {
                    return Err(invalid(format!(
                        "header value {value:?} must be printable ASCII"
                    )));
                }
            }
            rules.push((matcher, spec.clone()));
        }
        let matches = rules.iter().map(|_| Default::default()).collect();
        Ok(Rules { rules, matches })
    }

    /// Describes the rules that matched no path since they were compiled.
    pub fn unused(&self) -> Vec<String> {
        self.rules
            .iter()
            .zip(&self.matches)
            .enumerate()
            .filter(|(_, (_, count))| count.load(std::sync::atomic::Ordering::Relaxed) == 0)
            .map(|(index, ((_, spec), _))| {
                format!("rule {} (match = {:?})", index + 1, spec.pattern)
            })
            .collect()
    }

    /// Applies every rule that matches `path`, in order.
    pub fn resolve(&self, path: &str) -> Resolved {
        let mut resolved = Resolved::default();
        for ((matcher, spec), count) in self.rules.iter().zip(&self.matches) {
            if !matcher.is_match(path) {
                continue;
            }
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let headers = [
                ("content-type", &spec.content_type),
                ("cache-control", &spec.cache_control),
                ("content-disposition", &spec.content_disposition),
                ("content-language", &spec.content_language),
            ];
            for (name, value) in headers {
                if let Some(value) = value {
                    resolved.headers.insert(name.to_string(), value.clone());
                }
            }
            resolved.metadata.extend(
                spec.metadata
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone())),
            );
            if let Some(extension) = &spec.extension {
                resolved.extension = extension.clone();
            }
            if let Some(index) = spec.index_to_directory {
                resolved.index_to_directory = index;
            }
        }
        resolved
    }
}

/// User metadata names must be lowercase header tokens, and the `r2sync-`
/// names belong to r2sync.
pub fn validate_metadata_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
        });
    if !valid {
        return Err(format!(
            "metadata name {name:?} must use only lowercase letters, digits, '-' and '_'"
        ));
    }
    if name.starts_with("r2sync-") {
        return Err(format!("metadata name {name:?} is reserved for r2sync"));
    }
    Ok(())
}

/// Maps a path below the root to the key suffix the rules ask for.
pub fn map_path(path: &str, resolved: &Resolved) -> String {
    let (dir, file) = match path.rsplit_once('/') {
        Some((dir, file)) => (Some(dir), file),
        None => (None, path),
    };
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);

    // `dir/index.md` becomes `dir`; the root index keeps its name, because
    // the key of the prefix itself would lie outside the prefix.
    if resolved.index_to_directory && (stem == "index" || stem == "_index") {
        if let Some(dir) = dir {
            return dir.to_string();
        }
    }

    let name = match &resolved.extension {
        KeyExtension::Keep => file.to_string(),
        KeyExtension::Drop => stem.to_string(),
        KeyExtension::Replace(extension) => format!("{stem}{extension}"),
    };
    match dir {
        Some(dir) => format!("{dir}/{name}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> RuleSpec {
        RuleSpec {
            pattern: pattern.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        let rules = Rules::new(&[
            RuleSpec {
                cache_control: Some("max-age=60".into()),
                content_language: Some("en".into()),
                ..rule("**")
            },
            RuleSpec {
                cache_control: Some("no-store".into()),
                metadata: BTreeMap::from([("team".into(), "blog".into())]),
                ..rule("blog/**")
            },
        ])
        .unwrap();

        let blog = rules.resolve("blog/post.md");
        assert_eq!(blog.headers["cache-control"], "no-store");
        assert_eq!(blog.headers["content-language"], "en");
        assert_eq!(blog.metadata["team"], "blog");

        let guide = rules.resolve("guide/a.md");
        assert_eq!(guide.headers["cache-control"], "max-age=60");
        assert!(guide.metadata.is_empty());
    }

    #[test]
    fn key_mapping() {
        let keep = Resolved::default();
        let drop = Resolved {
            extension: KeyExtension::Drop,
            ..Default::default()
        };
        let html = Resolved {
            extension: KeyExtension::Replace(".html".into()),
            index_to_directory: true,
            ..Default::default()
        };
        assert_eq!(map_path("a/b.md", &keep), "a/b.md");
        assert_eq!(map_path("a/b.md", &drop), "a/b");
        assert_eq!(map_path("a/b.md", &html), "a/b.html");
        assert_eq!(map_path("a/index.md", &html), "a");
        assert_eq!(map_path("a/_index.md", &html), "a");
        assert_eq!(map_path("index.md", &html), "index.html");
    }

    #[test]
    fn extension_parses_from_text() {
        assert_eq!(
            KeyExtension::try_from("drop".to_string()),
            Ok(KeyExtension::Drop)
        );
        assert_eq!(
            KeyExtension::try_from(".html".to_string()),
            Ok(KeyExtension::Replace(".html".into()))
        );
        let err = KeyExtension::try_from("replace".to_string()).unwrap_err();
        assert!(err.contains("\".html\""), "{err}");
    }

    #[test]
    fn unused_rules_are_reported() {
        let rules = Rules::new(&[rule("guide/**"), rule("blog/**")]).unwrap();
        rules.resolve("guide/a.md");
        assert_eq!(
            rules.unused(),
            vec!["rule 2 (match = \"blog/**\")".to_string()]
        );
    }

    #[test]
    fn invalid_rules_name_the_rule() {
        let err = Rules::new(&[rule("a/**"), rule("[")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("rule 2 (match = \"[\")"), "{err}");

        let bad_name = RuleSpec {
            metadata: BTreeMap::from([("Team Name".into(), "x".into())]),
            ..rule("**")
        };
        let err = Rules::new(&[bad_name]).unwrap_err().to_string();
        assert!(err.contains("Team Name"), "{err}");

        let reserved = RuleSpec {
            metadata: BTreeMap::from([("r2sync-hash".into(), "x".into())]),
            ..rule("**")
        };
        assert!(Rules::new(&[reserved])
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }

    #[test]
    fn rules_match_case_insensitively() {
        let rules = Rules::new(&[RuleSpec {
            content_language: Some("de".into()),
            ..rule("de/**")
        }])
        .unwrap();
        assert_eq!(
            rules.resolve("DE/Seite.md").headers["content-language"],
            "de"
        );
    }
}
