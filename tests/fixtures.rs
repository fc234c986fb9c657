//! Every case in fixtures/markdown: `NAME.md` is normalized as a file named
//! `NAME.md`, and `NAME.expected.json` states the expected body bytes,
//! derived values, warnings or error.

use std::path::Path;

use r2sync::markdown::{normalize, FrontMatterMode, NormalizeOptions};
use serde_json::Value;

fn check_case(name: &str, raw: &[u8], expected: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut options = NormalizeOptions::default();
    if expected["options"]["front_matter"] == "keep" {
        options.front_matter = FrontMatterMode::Keep;
    }

    let path = format!("{name}.md");
    let document = match normalize(&path, raw, &options) {
        Ok(document) => document,
        Err(err) => {
            let message = err.to_string();
            match expected["error"].as_array() {
                Some(needles) => {
                    for needle in needles {
                        let needle = needle.as_str().unwrap();
                        if !message.contains(needle) {
                            problems.push(format!("error {message:?} lacks {needle:?}"));
                        }
                    }
                }
                None => problems.push(format!("unexpected error: {message}")),
            }
            return problems;
        }
    };
    if !expected["error"].is_null() {
        problems.push("expected an error, got a document".into());
        return problems;
    }

    if let Some(body) = expected["body"].as_str() {
        if document.body != body.as_bytes() {
            problems.push(format!(
                "body {:?}, expected {body:?}",
                String::from_utf8_lossy(&document.body)
            ));
        }
    }
    if let Some(title) = expected["title"].as_str() {
        if document.title != title {
            problems.push(format!("title {:?}, expected {title:?}", document.title));
        }
    }
    if let Some(front_matter) = expected.get("front_matter") {
        let actual = document.front_matter.clone().unwrap_or(Value::Null);
        // A case states either every field or only the fields it checks.
        let matches = match (front_matter, &actual) {
            (Value::Object(want), Value::Object(have)) => {
                want.iter().all(|(key, value)| have.get(key) == Some(value))
            }
            (want, have) => want == have,
        };
        if !matches {
            problems.push(format!("front matter {actual}, expected {front_matter}"));
        }
    }
    if let Some(description) = expected["description"].as_str() {
        if document.description.as_deref() != Some(description) {
            problems.push(format!(
                "description {:?}, expected {description:?}",
                document.description
            ));
        }
    }
    if let Some(words) = expected["word_count"].as_u64() {
        if document.word_count as u64 != words {
            problems.push(format!(
                "word count {}, expected {words}",
                document.word_count
            ));
        }
    }
    if let Some(headings) = expected.get("headings") {
        let actual = serde_json::to_value(&document.headings).unwrap();
        if &actual != headings {
            problems.push(format!("headings {actual}, expected {headings}"));
        }
    }
    let needles = expected["warnings"].as_array().cloned().unwrap_or_default();
    for needle in &needles {
        let needle = needle.as_str().unwrap();
        if !document
            .warnings
            .iter()
            .any(|warning| warning.contains(needle))
        {
            problems.push(format!(
                "no warning contains {needle:?}: {:?}",
                document.warnings
            ));
        }
    }
    if needles.is_empty() && !document.warnings.is_empty() {
        problems.push(format!("unexpected warnings: {:?}", document.warnings));
    }
    problems
}

#[test]
fn markdown_fixtures_match_expectations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/markdown");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".expected.json").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 29,
        "only {} fixtures found in {}",
        names.len(),
        dir.display()
    );

    let mut failures = Vec::new();
    for name in &names {
        let raw = std::fs::read(dir.join(format!("{name}.md"))).unwrap();
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        for problem in check_case(name, &raw, &expected) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
