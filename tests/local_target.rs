//! The `file://` target: the whole job with no server and no credentials.

mod common;

use common::{run_expect, GitRepo};

#[test]
fn default_target_works_without_credentials() {
    let repo = GitRepo::new();
    repo.write("docs/guide.md", "---\ntitle: Guide\n---\n# Guide\n\nText.\n");
    repo.write("docs/a b+c%41.md", "# Awkward\n");
    repo.write("notes.txt", "not markdown");
    repo.commit("first");

    // Run inside the repository, as the README's first command does.
    let result = run_expect(common::r2sync(None, repo.path()).args(["apply", "--yes"]), 0);
    assert!(result.stdout.contains("+ docs/guide.md"), "{}", result.stdout);

    let bucket = repo.path().join("r2sync-bucket");
    assert_eq!(
        std::fs::read_to_string(bucket.join("docs/guide.md")).unwrap(),
        "# Guide\n\nText.\n"
    );
    assert!(bucket.join("docs/a b+c%41.md").is_file(), "key written with its exact name");
    assert!(!bucket.join("notes.txt").exists());
    assert!(bucket.join(".r2sync/state.json").is_file());

    // Nothing to do the second time, and check agrees.
    let second = run_expect(common::r2sync(None, repo.path()).args(["apply", "--yes", "--json"]), 0);
    let report: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(common::writes(&report), 0, "{report}");
    run_expect(common::r2sync(None, repo.path()).arg("check"), 0);
}

#[test]
fn check_and_detailed_exitcode_on_local_target() {
    let repo = GitRepo::new();
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    repo.write("a.md", "# A\n");
    repo.commit("first");
    let args = |command: &str| {
        let mut cmd = common::r2sync(None, repo.path());
        cmd.args([command, "--target", &target]);
        cmd
    };

    run_expect(args("plan").arg("--detailed-exitcode"), 2);
    run_expect(&mut args("check"), 2);
    run_expect(args("apply").arg("--yes"), 0);
    run_expect(args("plan").arg("--detailed-exitcode"), 0);

    // Editing the published file is drift.
    std::fs::write(out.path().join("a.md"), "edited\n").unwrap();
    let drift = run_expect(&mut args("check"), 2);
    assert!(drift.stdout.contains("a.md"), "{}", drift.stdout);
}

#[test]
fn usage_errors_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let result = run_expect(common::r2sync(None, dir.path()).args(["plan", "--bogus"]), 1);
    assert!(result.stderr.contains("--bogus"), "{}", result.stderr);
    run_expect(common::r2sync(None, dir.path()).arg("--help"), 0);
}

#[test]
fn missing_credentials_are_named() {
    let repo = GitRepo::new();
    repo.write("a.md", "# A\n");
    repo.commit("first");
    let result = run_expect(
        common::r2sync(None, repo.path()).args(["plan", "--target", "r2://bucket/docs"]),
        1,
    );
    assert!(result.stderr.contains("R2_ACCOUNT_ID"), "{}", result.stderr);

    let result = run_expect(
        common::r2sync(None, repo.path())
            .args(["plan", "--target", "r2://bucket/docs"])
            .env("R2_ACCOUNT_ID", "0123abcd"),
        1,
    );
    assert!(result.stderr.contains("R2_ACCESS_KEY_ID"), "{}", result.stderr);
}

#[test]
fn bundle_and_bare_repositories_are_sources() {
    let repo = GitRepo::new();
    repo.write("site/page.md", "# Page\n");
    repo.write("other.md", "# Other\n");
    repo.commit("first");
    let holder = tempfile::tempdir().unwrap();

    let bundle = holder.path().join("repo.bundle");
    repo.git(&["bundle", "create", bundle.to_str().unwrap(), "--all"]);
    let bare = holder.path().join("bare.git");
    repo.git(&["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);

    for source in [bundle.to_str().unwrap(), bare.to_str().unwrap()] {
        let out = tempfile::tempdir().unwrap();
        let target = format!("file://{}", out.path().display());
        let result = run_expect(
            common::r2sync(None, holder.path()).args(["plan", "--repo", source, "--root", "site", "--target", &target]),
            0,
        );
        assert!(result.stdout.contains("+ page.md"), "{source}: {}", result.stdout);
        assert!(!result.stdout.contains("other.md"), "{source}: {}", result.stdout);
    }
}

#[test]
fn progress_bar_never_in_json_or_pipes() {
    let repo = GitRepo::new();
    for index in 0..80 {
        repo.write(&format!("p{index}.md"), format!("# {index}\n"));
    }
    repo.commit("many");
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let result = run_expect(
        common::r2sync(None, repo.path()).args(["plan", "--json", "--target", &target]),
        0,
    );
    let plan: serde_json::Value = serde_json::from_str(&result.stdout).expect("stdout is only JSON");
    assert_eq!(plan["summary"]["create"], 80);
    assert!(!result.stderr.contains('\r'), "progress output on a pipe: {:?}", result.stderr);
}

#[test]
fn failed_put_blocks_removals() {
    let repo = GitRepo::new();
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let apply = |extra: &[&str]| {
        let mut cmd = common::r2sync(None, repo.path());
        cmd.args(["apply", "--yes", "--target", &target]).args(extra);
        cmd
    };
    repo.write("keep.md", "# Keep\n");
    repo.write("old.md", "# Old\n");
    repo.commit("first");
    run_expect(&mut apply(&[]), 0);

    // A directory where a new document must go makes its upload fail.
    repo.remove("old.md");
    repo.write("blocked.md", "# Blocked\n");
    repo.write("fine.md", "# Fine\n");
    repo.commit("second");
    std::fs::create_dir_all(out.path().join("blocked.md/inside")).unwrap();

    let failed = run_expect(&mut apply(&[]), 1);
    assert!(failed.stderr.contains("blocked.md"), "{}", failed.stderr);
    assert!(failed.stderr.contains("apply failed for 1 of 3 changes"), "{}", failed.stderr);
    assert!(out.path().join("fine.md").is_file(), "other uploads still happen");
    assert!(out.path().join("old.md").is_file(), "removals wait for every upload");

    // Once the obstacle is gone, a rerun converges.
    std::fs::remove_dir_all(out.path().join("blocked.md")).unwrap();
    run_expect(&mut apply(&[]), 0);
    assert_eq!(std::fs::read_to_string(out.path().join("blocked.md")).unwrap(), "# Blocked\n");
    assert!(!out.path().join("old.md").exists());
    run_expect(common::r2sync(None, repo.path()).args(["check", "--target", &target]), 0);
}
