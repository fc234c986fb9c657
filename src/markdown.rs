//! Normalization of one Markdown document into the exact bytes to upload.
//!
//! The rules, in order: drop a leading UTF-8 byte order mark, reject text
//! that is not UTF-8, turn CRLF and lone CR line endings into LF, then split
//! off front matter that starts on the very first line. Everything after the
//! closing delimiter line is kept byte for byte.

use gray_matter::engine::{Engine, JSON, TOML};
use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The treatment of front matter in the uploaded body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FrontMatterMode {
    /// Remove the front matter block from the uploaded body.
    #[default]
    Strip,
    /// Upload the original bytes unchanged, front matter included.
    Keep,
}

/// Front matter syntax, named by its delimiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontMatterFormat {
    /// `---` lines around YAML.
    Yaml,
    /// `+++` lines around TOML.
    Toml,
    /// A leading JSON object.
    Json,
}

impl std::fmt::Display for FrontMatterFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrontMatterFormat::Yaml => "YAML",
            FrontMatterFormat::Toml => "TOML",
            FrontMatterFormat::Json => "JSON",
        })
    }
}

/// A document ready to upload, with what was derived from it.
#[derive(Debug)]
pub struct Document {
    /// The bytes to upload.
    pub body: Vec<u8>,
    /// Parsed front matter, or `None` when the document has none.
    pub front_matter: Option<serde_json::Value>,
    /// Title from front matter, else the first level-1 heading, else the file stem.
    pub title: String,
    /// Problems that did not stop normalization, each naming the path.
    pub warnings: Vec<String>,
}

/// Reasons a document cannot be normalized.
#[derive(Debug, thiserror::Error)]
pub enum MarkdownError {
    #[error("{path}: not valid UTF-8 at byte {offset} (line {line}); convert the file to UTF-8")]
    InvalidUtf8 {
        path: String,
        offset: usize,
        line: usize,
    },
    #[error("{path}: invalid {format} front matter: {message}; fix the front matter or remove it")]
    FrontMatter {
        path: String,
        format: FrontMatterFormat,
        message: String,
    },
    #[error("{path}: {format} front matter must be a mapping of keys to values, found {found}")]
    FrontMatterNotMapping {
        path: String,
        format: FrontMatterFormat,
        found: &'static str,
    },
}

/// Normalizes one document read from `path` (used in messages and as the
/// title fallback).
pub fn normalize(path: &str, raw: &[u8], mode: FrontMatterMode) -> Result<Document, MarkdownError> {
    // The byte order mark carries no content, so it never reaches the bucket.
    let without_bom = raw.strip_prefix(UTF8_BOM).unwrap_or(raw);

    let text = std::str::from_utf8(without_bom).map_err(|err| {
        let offset = err.valid_up_to() + (raw.len() - without_bom.len());
        let line = 1 + raw[..offset].iter().filter(|&&byte| byte == b'\n').count();
        MarkdownError::InvalidUtf8 {
            path: path.to_string(),
            offset,
            line,
        }
    })?;
    let text = normalize_line_endings(text);

    // Front matter is recognized only at the very start of the document.
    let mut warnings = Vec::new();
    let split = split_front_matter(&text);
    if split.is_none() && opens_front_matter(&text) {
        warnings.push(format!(
            "{path}: front matter is never closed, so it is uploaded as body text; add the closing delimiter line"
        ));
    }
    let front_matter = match &split {
        Some(block) => Some(parse_front_matter(path, block, &mut warnings)?),
        None => None,
    };
    let body_start = split.as_ref().map_or(0, |block| block.body_start);
    let markdown_body = &text[body_start..];

    let title = front_matter
        .as_ref()
        .and_then(|matter| matter.get("title"))
        .and_then(title_from_value)
        .or_else(|| first_h1(markdown_body))
        .unwrap_or_else(|| file_stem(path));

    let body = match mode {
        FrontMatterMode::Strip => markdown_body.as_bytes().to_vec(),
        FrontMatterMode::Keep => text.into_bytes(),
    };

    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    Ok(Document {
        body,
        front_matter,
        title,
        warnings,
    })
}

/// Turns CRLF and lone CR into LF and leaves every other byte alone.
fn normalize_line_endings(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_string();
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// The location of a front matter block inside the normalized text.
struct FrontMatterBlock<'a> {
    format: FrontMatterFormat,
    /// The text between the delimiters (or the JSON object itself).
    matter: &'a str,
    /// Byte offset where the body starts, after the closing delimiter line.
    body_start: usize,
}

/// Finds front matter at the start of `text`. A block whose closing
/// delimiter never comes is not front matter, so the text stays body.
fn split_front_matter(text: &str) -> Option<FrontMatterBlock<'_>> {
    let first_line_end = text.find('\n').unwrap_or(text.len());
    let first_line = text[..first_line_end].trim_end_matches([' ', '\t']);

    let (format, delimiter) = match first_line {
        "---" => (FrontMatterFormat::Yaml, "---"),
        "+++" => (FrontMatterFormat::Toml, "+++"),
        _ if text.starts_with('{') => return split_json_front_matter(text),
        _ => return None,
    };

    // Walk the lines after the opening delimiter until the first line that is
    // exactly the delimiter, allowing trailing spaces or tabs.
    let matter_start = (first_line_end + 1).min(text.len());
    let mut line_start = matter_start;
    while line_start < text.len() {
        let line_end = text[line_start..]
            .find('\n')
            .map_or(text.len(), |offset| line_start + offset);
        let line = text[line_start..line_end].trim_end_matches([' ', '\t']);
        if line == delimiter {
            let body_start = (line_end + 1).min(text.len());
            return Some(FrontMatterBlock {
                format,
                matter: &text[matter_start..line_start],
                body_start,
            });
        }
        line_start = line_end + 1;
    }
    None
}

fn opens_front_matter(text: &str) -> bool {
    let first_line = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches([' ', '\t']);
    first_line == "---" || first_line == "+++"
}

/// Reads a leading JSON object with serde_json's streaming reader, which
/// reports exactly where the object ends.
fn split_json_front_matter(text: &str) -> Option<FrontMatterBlock<'_>> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde::de::IgnoredAny>();
    match stream.next() {
        Some(Ok(_)) => {
            let end = stream.byte_offset();
            // The rest of the line after the object belongs to the delimiter.
            let line_end = text[end..]
                .find('\n')
                .map_or(text.len(), |offset| end + offset + 1);
            Some(FrontMatterBlock {
                format: FrontMatterFormat::Json,
                matter: &text[..end],
                body_start: line_end.min(text.len()),
            })
        }
        // A body that merely starts with `{` is body text.
        _ => None,
    }
}

/// Parses front matter text with gray_matter's engine for its syntax and
/// requires a mapping at the top level.
fn parse_front_matter(
    path: &str,
    block: &FrontMatterBlock<'_>,
    warnings: &mut Vec<String>,
) -> Result<serde_json::Value, MarkdownError> {
    if block.matter.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }

    let invalid = |message: String| MarkdownError::FrontMatter {
        path: path.to_string(),
        format: block.format,
        message,
    };
    let value = match block.format {
        FrontMatterFormat::Yaml => parse_yaml(path, block.matter, warnings).map_err(invalid)?,
        FrontMatterFormat::Toml | FrontMatterFormat::Json => {
            let parsed = if block.format == FrontMatterFormat::Toml {
                TOML::parse(block.matter)
            } else {
                JSON::parse(block.matter)
            };
            let pod =
                parsed.map_err(|err| invalid(tidy_engine_error(&err.to_string(), block.format)))?;
            pod.deserialize::<serde_json::Value>()
                .map_err(|err| invalid(err.to_string()))?
        }
    };
    match value {
        serde_json::Value::Object(_) => Ok(value),
        // Front matter holding only comments is an empty mapping.
        serde_json::Value::Null => Ok(serde_json::Value::Object(Default::default())),
        other => Err(MarkdownError::FrontMatterNotMapping {
            path: path.to_string(),
            format: block.format,
            found: json_kind(&other),
        }),
    }
}

/// Parses YAML front matter with a libyaml-based parser (YAML 1.2 core
/// schema, through serde_yaml_ng). gray_matter's own YAML engine rejects
/// flow sequences whose closing bracket sits at column 1, which Hugo and
/// other generators accept and real documentation uses. Scalars that look
/// like dates stay strings.
///
/// A key repeated in one mapping keeps its last value, as in Hugo and
/// PyYAML, with a warning naming the key, because published documentation
/// contains such repeats.
fn parse_yaml(
    path: &str,
    matter: &str,
    warnings: &mut Vec<String>,
) -> Result<serde_json::Value, String> {
    let strict: Result<serde_yaml_ng::Value, _> = serde_yaml_ng::from_str(matter);
    let error = match strict {
        Ok(value) => return Ok(yaml_to_json(value)),
        Err(error) => error,
    };
    let message = match error.location() {
        // The opening delimiter line sits above the parsed text.
        Some(location) => format!(
            "{} (line {}, column {})",
            strip_location(&error.to_string()),
            location.line() + 1,
            location.column()
        ),
        None => error.to_string(),
    };
    if !message.contains("duplicate entry") {
        return Err(message);
    }

    // serde_json's map keeps the last value of a repeated key.
    let lenient: serde_json::Value =
        serde_yaml_ng::from_str(matter).map_err(|_| message.clone())?;
    warnings.push(format!(
        "{path}: front matter repeats a key, so the last value wins: {message}"
    ));
    Ok(lenient)
}

/// serde_yaml_ng appends " at line L column C" to its messages; the caller
/// adds the position relative to the file instead.
fn strip_location(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

fn yaml_to_json(value: serde_yaml_ng::Value) -> serde_json::Value {
    use serde_yaml_ng::Value as Yaml;
    match value {
        Yaml::Null => serde_json::Value::Null,
        Yaml::Bool(flag) => serde_json::Value::Bool(flag),
        Yaml::Number(number) => serde_json::to_value(&number).unwrap_or(serde_json::Value::Null),
        Yaml::String(text) => serde_json::Value::String(text),
        Yaml::Sequence(items) => {
            serde_json::Value::Array(items.into_iter().map(yaml_to_json).collect())
        }
        Yaml::Mapping(entries) => serde_json::Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (yaml_key(key), yaml_to_json(value)))
                .collect(),
        ),
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// Mapping keys become strings, as in JSON; a non-scalar key is written as YAML.
fn yaml_key(key: serde_yaml_ng::Value) -> String {
    match key {
        serde_yaml_ng::Value::String(text) => text,
        serde_yaml_ng::Value::Bool(flag) => flag.to_string(),
        serde_yaml_ng::Value::Number(number) => number.to_string(),
        serde_yaml_ng::Value::Null => "null".to_string(),
        other => serde_yaml_ng::to_string(&other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Turns a gray_matter engine error into one line. TOML errors span several
/// lines (position, snippet, description) and count lines from the first
/// line after the opening delimiter, so the line number shifts by one.
fn tidy_engine_error(message: &str, format: FrontMatterFormat) -> String {
    let message = message
        .strip_prefix("Deserialize error: ")
        .unwrap_or(message)
        .trim();
    if format != FrontMatterFormat::Toml {
        return message.to_string();
    }

    let description = message
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.contains('|'))
        .unwrap_or(message);
    let position = message
        .lines()
        .next()
        .and_then(|first| first.split_once("at line "))
        .and_then(|(_, rest)| rest.split_once(", column "))
        .and_then(|(line, column)| {
            Some((
                line.trim().parse::<usize>().ok()?,
                column.trim().parse::<usize>().ok()?,
            ))
        });
    match position {
        Some((line, column)) => format!("{description} (line {}, column {column})", line + 1),
        None => description.to_string(),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

fn title_from_value(value: &serde_json::Value) -> Option<String> {
    let title = match value {
        serde_json::Value::String(text) => text.trim().to_string(),
        serde_json::Value::Number(number) => number.to_string(),
        _ => return None,
    };
    (!title.is_empty()).then_some(title)
}

/// Returns the text of the first level-1 heading, with inline markup
/// flattened to its text.
fn first_h1(markdown: &str) -> Option<String> {
    let mut inside = false;
    let mut title = String::new();
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading {
                level: HeadingLevel::H1,
                ..
            }) => inside = true,
            Event::End(TagEnd::Heading(HeadingLevel::H1)) => {
                let trimmed = title.trim();
                if !trimmed.is_empty() {
                    return Some(trimmed.to_string());
                }
                inside = false;
            }
            Event::Text(text) | Event::Code(text) if inside => title.push_str(&text),
            Event::SoftBreak | Event::HardBreak if inside => title.push(' '),
            _ => {}
        }
    }
    None
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
        normalize("docs/page.md", raw.as_bytes(), FrontMatterMode::Strip).unwrap()
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
        let doc = normalize("a.md", raw.as_bytes(), FrontMatterMode::Keep).unwrap();
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
        let err = normalize("bad.md", b"ok\ncaf\xE9\n", FrontMatterMode::Strip).unwrap_err();
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
        let raw = "{not json\n";
        assert_eq!(strip(raw).body, raw.as_bytes());
    }

    fn strip_err(raw: &str) -> String {
        normalize("docs/page.md", raw.as_bytes(), FrontMatterMode::Strip)
            .unwrap_err()
            .to_string()
    }
}
