//! Normalization of one Markdown document into the exact bytes to upload,
//! and what is derived from it.
//!
//! The rules, in order. Decode the bytes: UTF-8 without its byte order
//! mark, UTF-16 when a byte order mark declares it, or a declared fallback
//! encoding. Turn CRLF and lone CR line endings into LF. Split off front
//! matter that starts on the very first line. Everything after the closing
//! delimiter line is kept byte for byte.

mod derive;
mod encoding;
mod front_matter;

pub use derive::{count_words, Heading};
pub use encoding::encoding_for_label;
pub use front_matter::FrontMatterFormat;

use std::borrow::Cow;

use encoding_rs::Encoding;
use serde::{Deserialize, Serialize};

/// Default maximum size of one document, in bytes.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// The treatment of front matter in the uploaded body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FrontMatterMode {
    /// Remove the front matter block from the uploaded body.
    #[default]
    Strip,
    /// Upload the committed bytes unchanged (byte order mark, line endings
    /// and front matter included) when they are UTF-8.
    Keep,
}

/// Settings of normalization.
#[derive(Clone, Copy, Debug)]
pub struct NormalizeOptions {
    pub front_matter: FrontMatterMode,
    /// Encoding for files that are not UTF-8; `None` makes them an error.
    pub fallback_encoding: Option<&'static Encoding>,
    /// Larger files are an error.
    pub max_bytes: usize,
}

impl Default for NormalizeOptions {
    fn default() -> Self {
        NormalizeOptions {
            front_matter: FrontMatterMode::Strip,
            fallback_encoding: None,
            max_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
        }
    }
}

/// A document ready to upload, with what was derived from it.
#[derive(Debug)]
pub struct Document {
    /// The bytes to upload.
    pub body: Vec<u8>,
    /// Parsed front matter, or `None` when the document has none.
    pub front_matter: Option<serde_json::Value>,
    /// Front matter `title`, else the first level-1 heading, else the file
    /// name without extension.
    pub title: String,
    /// Every heading of the body, in document order.
    pub headings: Vec<Heading>,
    /// Front matter `description` or `summary`, else the first paragraph.
    pub description: Option<String>,
    /// Words in the body; CJK characters count one each.
    pub word_count: usize,
    /// Problems that did not stop normalization, each naming the path.
    pub warnings: Vec<String>,
}

/// Reasons a document cannot be normalized.
#[derive(Debug, thiserror::Error)]
pub enum MarkdownError {
    #[error("{path}: not valid UTF-8 at byte {offset} (line {line}); convert the file to UTF-8 or pass --fallback-encoding (for example windows-1252)")]
    InvalidUtf8 {
        path: String,
        offset: usize,
        line: usize,
    },
    #[error("{path}: invalid {encoding} after its byte order mark; convert the file to UTF-8")]
    InvalidUtf16 {
        path: String,
        encoding: &'static str,
    },
    #[error(
        "{path}: NUL character at byte {offset} (line {line}); remove it, Markdown files are text"
    )]
    Nul {
        path: String,
        offset: usize,
        line: usize,
    },
    #[error("{path}: {size} bytes is more than the maximum document size of {max} bytes; raise --max-document-size or exclude the file")]
    TooLarge {
        path: String,
        size: usize,
        max: usize,
    },
    #[error("{path}: invalid {format} front matter: {message}; fix the front matter or remove it")]
    FrontMatter {
        path: String,
        format: FrontMatterFormat,
        message: String,
    },
    #[error("{path}: {format} front matter must be a mapping of keys to values, found {found} at line {line}; write `key: value` lines (a space after each colon)")]
    FrontMatterNotMapping {
        path: String,
        format: FrontMatterFormat,
        found: &'static str,
        line: usize,
    },
}

/// Normalizes one document read from `path` (used in messages and as the
/// title fallback).
pub fn normalize(
    path: &str,
    raw: &[u8],
    options: &NormalizeOptions,
) -> Result<Document, MarkdownError> {
    if raw.len() > options.max_bytes {
        return Err(MarkdownError::TooLarge {
            path: path.to_string(),
            size: raw.len(),
            max: options.max_bytes,
        });
    }
    let decoded = encoding::decode(path, raw, options.fallback_encoding)?;
    let text = normalize_line_endings(decoded);

    // Front matter is recognized only at the very start of the document.
    let mut warnings = Vec::new();
    let split = front_matter::split_front_matter(&text);
    if split.is_none() && front_matter::opens_front_matter(&text) {
        warnings.push(format!(
            "{path}: front matter is never closed, so it is uploaded as body text; add the closing delimiter line"
        ));
    } else if split.is_none() && front_matter::opens_front_matter(text.trim_start()) {
        warnings.push(format!(
            "{path}: blank lines precede the front matter delimiter, so the block is uploaded as body text; remove them"
        ));
    }
    if let Some(trailing) = split.as_ref().and_then(|block| block.trailing_text) {
        warnings.push(format!(
            "{path}: text after the JSON front matter on its last line is dropped: {trailing:?}; move it to the next line"
        ));
    }
    let front_matter = match &split {
        Some(block) => Some(front_matter::parse_front_matter(
            path,
            block,
            &mut warnings,
        )?),
        None => None,
    };
    let body_start = split.as_ref().map_or(0, |block| block.body_start);
    let markdown_body = &text[body_start..];

    // Derived facts come from the body only.
    let derived = derive::analyze(markdown_body);
    let matter_text = |name: &str| {
        front_matter
            .as_ref()
            .and_then(|matter| matter.get(name))
            .and_then(text_from_value)
    };
    let title = matter_text("title")
        .or_else(|| derived.first_h1().map(str::to_string))
        .unwrap_or_else(|| file_stem(path));
    let description = matter_text("description")
        .or_else(|| matter_text("summary"))
        .or_else(|| derived.first_paragraph.clone());

    // Keep mode uploads the committed bytes when they are UTF-8. Text in
    // another encoding is uploaded as normalized UTF-8, to match Content-Type.
    let body = match options.front_matter {
        FrontMatterMode::Strip => markdown_body.as_bytes().to_vec(),
        FrontMatterMode::Keep if std::str::from_utf8(raw).is_ok() => raw.to_vec(),
        FrontMatterMode::Keep => text.into_owned().into_bytes(),
    };

    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    Ok(Document {
        body,
        front_matter,
        title,
        headings: derived.headings,
        description,
        word_count: derived.word_count,
        warnings,
    })
}

/// Turns CRLF and lone CR into LF and leaves every other byte alone.
fn normalize_line_endings(text: Cow<'_, str>) -> Cow<'_, str> {
    if !text.contains('\r') {
        return text;
    }
    Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// Returns the text of a front matter scalar, trimmed and without a stray
/// byte order mark, or `None` for empty values and collections.
fn text_from_value(value: &serde_json::Value) -> Option<String> {
    let text = match value {
        serde_json::Value::String(text) => text.replace('\u{feff}', "").trim().to_string(),
        serde_json::Value::Number(number) => number.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

fn file_stem(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(raw: &str) -> Document {
        normalize("docs/page.md", raw.as_bytes(), &NormalizeOptions::default()).unwrap()
    }

    #[test]
    fn yaml_front_matter_is_stripped() {
        let doc = strip("---\ntitle: Hello\n---\n\nBody\n");
        assert_eq!(doc.body, b"\nBody\n");
        assert_eq!(doc.title, "Hello");
    }

    #[test]
    fn toml_front_matter_is_stripped() {
        let doc = strip("+++\ntitle = \"T\"\n+++\n# H\n");
        assert_eq!(doc.body, b"# H\n");
        assert_eq!(doc.title, "T");
    }

    #[test]
    fn json_front_matter_is_stripped() {
        let doc = strip("{\n  \"title\": \"J\"\n}\nText\n");
        assert_eq!(doc.body, b"Text\n");
        assert_eq!(doc.title, "J");
    }

    #[test]
    fn keep_mode_uploads_front_matter() {
        let raw = "---\ntitle: Hello\n---\nBody\n";
        let options = NormalizeOptions {
            front_matter: FrontMatterMode::Keep,
            ..Default::default()
        };
        let doc = normalize("a.md", raw.as_bytes(), &options).unwrap();
        assert_eq!(doc.body, raw.as_bytes());
        assert_eq!(doc.title, "Hello");
    }

    #[test]
    fn bom_and_line_endings_are_normalized() {
        let doc = strip("\u{feff}---\r\ntitle: X\r\n---\r\nline one\rline two\r\n");
        assert_eq!(doc.body, b"line one\nline two\n");
        assert_eq!(doc.title, "X");
    }

    #[test]
    fn body_keeps_every_other_byte() {
        let body = "\n\n  indented\t tab  \n\n# Heading  \n\n```\n---\n```\n\n---\n\nend";
        let doc = strip(&format!("---\na: 1\n---\n{body}"));
        assert_eq!(doc.body, body.as_bytes());
    }

    #[test]
    fn unclosed_front_matter_stays_body() {
        let raw = "---\ntitle: never closed\n\n# Real title\n";
        let doc = strip(raw);
        assert_eq!(doc.body, raw.as_bytes());
        assert_eq!(doc.title, "Real title");
    }

    #[test]
    fn title_falls_back_to_h1_then_stem() {
        assert_eq!(
            strip("intro\n\n# The *first* `one`\n# second\n").title,
            "The first one"
        );
        assert_eq!(strip("no heading here\n").title, "page");
    }

    #[test]
    fn invalid_utf8_names_offset() {
        let err = normalize("bad.md", b"ok\ncaf\xE9\n", &NormalizeOptions::default()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("bad.md"), "{message}");
        assert!(message.contains("byte 6"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn invalid_yaml_names_line() {
        let err = strip_err("---\ntitle: ok\nbad: [unclosed\n---\nbody\n");
        assert!(err.contains("docs/page.md"), "{err}");
        assert!(err.contains("YAML"), "{err}");
        assert!(err.contains("line "), "{err}");
    }

    #[test]
    fn non_mapping_front_matter_is_rejected() {
        let err = strip_err("---\n- a\n- b\n---\nbody\n");
        assert!(err.contains("must be a mapping"), "{err}");
        assert!(err.contains("a list"), "{err}");
    }

    #[test]
    fn flow_sequence_closing_at_column_one_parses() {
        let doc = strip("---\ntitle: T\naliases: [\n  '/a/',\n]\n---\nbody\n");
        assert_eq!(
            doc.front_matter.unwrap()["aliases"],
            serde_json::json!(["/a/"])
        );
    }

    #[test]
    fn yaml_error_points_at_file_line() {
        let err = strip_err("---\ntitle: ok\nlist:\n  - a\n - b\n---\nbody\n");
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn repeated_yaml_key_keeps_last_value() {
        let doc = strip("---\ntitle: T\naction:\n  related:\n  related:\n    - a\n---\nbody\n");
        assert_eq!(
            doc.front_matter.unwrap()["action"]["related"],
            serde_json::json!(["a"])
        );
    }

    #[test]
    fn invalid_toml_is_one_line_with_position() {
        let err = strip_err("+++\nweight = 1\ntitle = \n+++\nbody\n");
        assert!(err.contains("invalid TOML front matter"), "{err}");
        assert!(err.contains("(line 3, column"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(!err.contains("Deserialize error"), "{err}");
    }

    #[test]
    fn repeated_key_and_unclosed_block_warn() {
        let doc = strip("---\na: 1\na: 2\n---\nbody\n");
        assert_eq!(doc.warnings.len(), 1);
        assert!(
            doc.warnings[0].contains("docs/page.md"),
            "{:?}",
            doc.warnings
        );
        let doc = strip("---\ntitle: open\n");
        assert!(
            doc.warnings[0].contains("never closed"),
            "{:?}",
            doc.warnings
        );
    }

    #[test]
    fn empty_front_matter_is_allowed() {
        let doc = strip("---\n---\n# T\n");
        assert_eq!(doc.body, b"# T\n");
        assert_eq!(doc.title, "T");
    }

    #[test]
    fn comment_only_front_matter_is_empty() {
        let doc = strip("---\n# Do not remove front matter.\n---\n\n## Methods\n");
        assert_eq!(doc.body, b"\n## Methods\n");
        assert_eq!(doc.front_matter, Some(serde_json::json!({})));
    }

    #[test]
    fn brace_body_is_not_front_matter() {
        for raw in ["{not json\n", "{{< shortcode >}}\n\nText\n"] {
            assert_eq!(strip(raw).body, raw.as_bytes());
        }
    }

    #[test]
    fn invalid_json_front_matter_is_an_error() {
        let err = strip_err("{\n  \"title\": \"Roadmap\",\n  \"draft\": true,\n}\nBody\n");
        assert!(err.contains("invalid JSON front matter"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let err = strip_err("{\"title\": \"x\" \"a\": 1}\n");
        assert!(err.contains("invalid JSON front matter"), "{err}");
    }

    fn strip_err(raw: &str) -> String {
        normalize("docs/page.md", raw.as_bytes(), &NormalizeOptions::default())
            .unwrap_err()
            .to_string()
    }
}
