//! Building the desired state of repositories with more files than one
//! worker chunk: results, warnings and errors must come out in path order,
//! as if the files were handled one by one.

mod common;

use common::GitRepo;
use r2sync::manifest::{self, DesiredOptions, ManifestError};
use r2sync::source::{self, Selector};

/// Files in the test repository: enough for many chunks of work.
const FILES: usize = 700;

fn build(repo: &GitRepo) -> Result<manifest::DesiredState, ManifestError> {
    let cache = tempfile::tempdir().unwrap();
    let opened = source::open(repo.path().to_str().unwrap(), cache.path()).unwrap();
    let commit = source::resolve_commit(&opened, "HEAD").unwrap();
    let selector = Selector::new(&common::default_include(), &[]).unwrap();
    let files = source::select_files(&opened, commit, "", &selector, Default::default())
        .unwrap()
        .files;
    let mut progress = 0;
    let state = manifest::build(&opened, &files, &DesiredOptions::default(), || {
        progress += 1
    });
    if state.is_ok() {
        assert_eq!(progress, files.len());
    }
    state
}

/// Writes `FILES` documents; every 100th one opens front matter that it
/// never closes, which is a warning naming the file.
fn write_documents(repo: &GitRepo) {
    for index in 0..FILES {
        let path = format!("docs/page{index:04}.md");
        if index % 100 == 7 {
            repo.write(&path, format!("---\ntitle: open {index}\n"));
        } else {
            repo.write(&path, format!("# Page {index}\n\nText of page {index}.\n"));
        }
    }
}

#[test]
fn warnings_follow_path_order() {
    let repo = GitRepo::new();
    write_documents(&repo);
    repo.commit("documents");

    let state = build(&repo).unwrap();
    assert_eq!(state.objects.len(), FILES);
    let warned: Vec<&str> = state
        .warnings
        .iter()
        .map(|warning| warning.split(':').next().unwrap())
        .collect();
    let expected: Vec<String> = (0..FILES)
        .filter(|index| index % 100 == 7)
        .map(|index| format!("docs/page{index:04}.md"))
        .collect();
    assert_eq!(warned, expected);
    assert!(
        state.warnings[0].contains("never closed"),
        "{:?}",
        state.warnings
    );

    let page = &state.objects["docs/page0500.md"];
    assert_eq!(&page.body[..], b"# Page 500\n\nText of page 500.\n");
    assert_eq!(page.metadata.get("r2sync-title"), Some("Page 500"));
}

#[test]
fn errors_follow_path_order() {
    let repo = GitRepo::new();
    write_documents(&repo);
    // Invalid UTF-8 late and early in the file list, and a key that
    // differs only in letter case from another one in the middle.
    repo.write("docs/page0650.md", b"caf\xE9\n");
    repo.write("docs/page0003.md", b"caf\xE9\n");
    repo.write("docs/PAGE0300.md", "# Shouting\n");
    repo.commit("broken documents");

    let err = build(&repo).unwrap_err();
    let ManifestError::Documents { errors } = &err else {
        panic!("expected several document errors, got {err}");
    };
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert!(
        messages[0].starts_with("docs/page0003.md: not valid UTF-8"),
        "{messages:#?}"
    );
    assert!(
        messages[1].contains("docs/PAGE0300.md and docs/page0300.md"),
        "{messages:#?}"
    );
    assert!(
        messages[2].starts_with("docs/page0650.md: not valid UTF-8"),
        "{messages:#?}"
    );
}

#[test]
fn repeated_builds_are_identical() {
    let repo = GitRepo::new();
    write_documents(&repo);
    repo.commit("documents");

    let first = build(&repo).unwrap();
    let second = build(&repo).unwrap();
    let fingerprints = |state: &manifest::DesiredState| -> Vec<(String, String)> {
        state
            .objects
            .iter()
            .map(|(key, object)| (key.clone(), object.fingerprint.hash.clone()))
            .collect()
    };
    assert_eq!(fingerprints(&first), fingerprints(&second));
    assert_eq!(first.warnings, second.warnings);
}
