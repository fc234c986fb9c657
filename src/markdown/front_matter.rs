//! Front matter: found only at the very start of a document, in YAML
//! (`---` lines), TOML (`+++` lines) or JSON (a leading object).

use gray_matter::engine::{Engine, JSON, TOML};

use super::MarkdownError;

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

/// The location of a front matter block inside the normalized text.
pub(super) struct FrontMatterBlock<'a> {
    format: FrontMatterFormat,
    /// The text between the delimiters (or the JSON object itself).
    matter: &'a str,
    /// Byte offset where the body starts, after the closing delimiter line.
    pub(super) body_start: usize,
    /// Text after a JSON object on its closing line, which is dropped.
    pub(super) trailing_text: Option<&'a str>,
}

/// Finds front matter at the start of `text`. A block whose closing
/// delimiter never comes is not front matter, so the text stays body.
pub(super) fn split_front_matter(text: &str) -> Option<FrontMatterBlock<'_>> {
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
                trailing_text: None,
            });
        }
        line_start = line_end + 1;
    }
    None
}

pub(super) fn opens_front_matter(text: &str) -> bool {
    let first_line = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches([' ', '\t']);
    first_line == "---" || first_line == "+++"
}

/// Reads a leading JSON object with serde_json's streaming reader, which
/// reports exactly where the object ends.
///
/// The text is JSON front matter when `{` is followed (after whitespace) by
/// `"` or `}`, so a body that opens with a Hugo shortcode (`{{<`) stays
/// body text. Invalid JSON front matter is returned whole, so that parsing
/// it reports the error with its line and column.
fn split_json_front_matter(text: &str) -> Option<FrontMatterBlock<'_>> {
    let after_brace = text[1..].trim_start();
    if !(after_brace.starts_with('"') || after_brace.starts_with('}')) {
        return None;
    }

    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde::de::IgnoredAny>();
    match stream.next() {
        Some(Ok(_)) => {
            let end = stream.byte_offset();
            // The rest of the line after the object belongs to the delimiter.
            let line_end = text[end..]
                .find('\n')
                .map_or(text.len(), |offset| end + offset + 1);
            let trailing = text[end..line_end].trim();
            Some(FrontMatterBlock {
                format: FrontMatterFormat::Json,
                matter: &text[..end],
                body_start: line_end.min(text.len()),
                trailing_text: (!trailing.is_empty()).then_some(trailing),
            })
        }
        _ => Some(FrontMatterBlock {
            format: FrontMatterFormat::Json,
            matter: text,
            body_start: text.len(),
            trailing_text: None,
        }),
    }
}

/// Parses front matter text with gray_matter's engine for its syntax and
/// requires a mapping at the top level.
pub(super) fn parse_front_matter(
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
            // The value starts on the line after the opening delimiter,
            // or on the first line for JSON.
            line: if block.format == FrontMatterFormat::Json {
                1
            } else {
                2
            },
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
