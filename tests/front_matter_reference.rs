//! Differential test: r2sync's front matter split and values against
//! python-frontmatter (PyYAML and the toml package) on every document of
//! the real corpora. Differences that are expected are listed, with the
//! reason for each, in docs/front-matter.md. This test allows the same list.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use r2sync::markdown::{normalize, NormalizeOptions};
use serde_json::Value;

/// Checks out `bundle` into a temporary directory.
fn checkout(bundle: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("git")
        .args(["-c", "init.defaultBranch=main", "clone", "-q"])
        .arg(bundle)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// Runs the reference parser, or returns `None` when python-frontmatter is
/// missing outside CI.
fn reference(dir: &Path) -> Option<BTreeMap<String, Value>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/front_matter.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            std::env::var_os("CI").is_none() && stderr.contains("No module named 'frontmatter'"),
            "reference parser failed: {stderr}"
        );
        eprintln!("skipping: python-frontmatter is not installed (pip install python-frontmatter)");
        return None;
    }
    let records = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            (record["path"].as_str().unwrap().to_string(), record)
        })
        .collect();
    Some(records)
}

/// Makes values comparable: PyYAML reads YAML 1.1, so `yes`, `no`, `on` and
/// `off` become booleans there and stay strings in r2sync (YAML 1.2), and
/// it reads dates as dates, which the reference script writes in ISO 8601
/// like the text r2sync keeps. Both differences are documented.
fn comparable(value: &Value) -> Value {
    match value {
        Value::String(text) => match text.as_str() {
            "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => Value::Bool(true),
            "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => Value::Bool(false),
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(comparable).collect()),
        Value::Object(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, value)| (key.clone(), comparable(value)))
                .collect(),
        ),
        Value::Number(number) if number.is_f64() => {
            // PyYAML writes 1.0 where YAML 1.2 parsers keep 1.0 as well;
            // compare floats by value.
            serde_json::json!(number.as_f64().unwrap())
        }
        _ => value.clone(),
    }
}

/// Compares every document of every commit of a corpus and returns the
/// number of documents compared.
fn compare_corpus(name: &str) -> Option<usize> {
    let bundle = common::corpus(name)?;
    let dir = checkout(&bundle);
    let output = Command::new("git")
        .args(["rev-list", "--reverse", "HEAD"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let commits: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!commits.is_empty());

    let mut compared = 0;
    for commit in &commits {
        let status = Command::new("git")
            .args(["checkout", "-q", commit])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        compared += compare_checkout(&format!("{name} at {}", &commit[..12]), dir.path())?;
    }
    Some(compared)
}

fn compare_checkout(name: &str, dir: &Path) -> Option<usize> {
    let expected = reference(dir)?;
    assert!(
        !expected.is_empty(),
        "{name}: the reference parser read no files"
    );

    let mut problems = Vec::new();
    let mut leading_blank = 0;
    for (path, record) in &expected {
        let raw = std::fs::read(dir.join(path)).unwrap();
        let document = match normalize(path, &raw, &NormalizeOptions::default()) {
            Ok(document) => document,
            Err(err) => {
                problems.push(format!(
                    "{path}: r2sync failed ({err}), reference: {record}"
                ));
                continue;
            }
        };
        // Documented difference: python-frontmatter strips the text before
        // looking for the opening delimiter; r2sync reads front matter only
        // on the first line, so a leading blank line makes it body text.
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_start_matches('\u{feff}');
        if document.front_matter.is_none()
            && text.starts_with(['\n', '\r', ' ', '\t'])
            && ["---", "+++"]
                .iter()
                .any(|delimiter| text.trim_start().starts_with(delimiter))
        {
            leading_blank += 1;
            continue;
        }

        if let Some(error) = record.get("error") {
            problems.push(format!(
                "{path}: reference failed ({error}), r2sync parsed it"
            ));
            continue;
        }

        // The split point: python-frontmatter strips the whole text first,
        // so bodies are compared without surrounding whitespace.
        let body = String::from_utf8(document.body).unwrap();
        if body.trim() != record["body"].as_str().unwrap().trim() {
            problems.push(format!("{path}: the body differs"));
        }

        let ours = comparable(
            &document
                .front_matter
                .unwrap_or(Value::Object(Default::default())),
        );
        let theirs = comparable(&record["front_matter"]);
        if ours != theirs {
            problems.push(format!(
                "{path}: front matter differs\n  r2sync:    {ours}\n  reference: {theirs}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{name}: {} of {} documents differ:\n{}",
        problems.len(),
        expected.len(),
        problems.join("\n")
    );
    if leading_blank > 0 {
        eprintln!("{name}: {leading_blank} documents with a blank line before the front matter (a documented difference)");
    }
    Some(expected.len())
}

#[test]
fn hugo_docs_agree_with_python_frontmatter() {
    if let Some(count) = compare_corpus("hugo-docs.bundle") {
        eprintln!("hugo-docs: {count} documents agree");
    }
}

#[test]
fn tldr_agrees_with_python_frontmatter() {
    if let Some(count) = compare_corpus("tldr.bundle") {
        eprintln!("tldr: {count} documents agree");
    }
}
