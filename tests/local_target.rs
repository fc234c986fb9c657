//! The `file://` target: the whole job with no server and no credentials.

mod common;

use common::{run_expect, GitRepo};

#[test]
fn default_target_works_without_credentials() {
    let repo = GitRepo::new();
    repo.write(
        "docs/guide.md",
        "---\ntitle: Guide\n---\n# Guide\n\nText.\n",
    );
    repo.write("docs/a b+c%41.md", "# Awkward\n");
    repo.write("notes.txt", "not markdown");
    repo.commit("first");

    // Run inside the repository, as the README's first command does.
    let result = run_expect(
        common::r2sync(None, repo.path()).args(["apply", "--yes"]),
        0,
    );
    assert!(
        result.stdout.contains("+ docs/guide.md"),
        "{}",
        result.stdout
    );

    let bucket = repo.path().join("r2sync-bucket");
    assert_eq!(
        std::fs::read_to_string(bucket.join("docs/guide.md")).unwrap(),
        "# Guide\n\nText.\n"
    );
    assert!(
        bucket.join("docs/a b+c%41.md").is_file(),
        "key written with its exact name"
    );
    assert!(!bucket.join("notes.txt").exists());
    assert!(bucket.join(".r2sync/state.json").is_file());

    // Nothing to do the second time, and check agrees.
    let second = run_expect(
        common::r2sync(None, repo.path()).args(["apply", "--yes", "--json"]),
        0,
    );
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
    let result = run_expect(
        common::r2sync(None, dir.path()).args(["plan", "--bogus"]),
        1,
    );
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
    assert!(
        result.stderr.contains("R2_ACCESS_KEY_ID"),
        "{}",
        result.stderr
    );
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
            common::r2sync(None, holder.path()).args([
                "plan", "--repo", source, "--root", "site", "--target", &target,
            ]),
            0,
        );
        assert!(
            result.stdout.contains("+ page.md"),
            "{source}: {}",
            result.stdout
        );
        assert!(
            !result.stdout.contains("other.md"),
            "{source}: {}",
            result.stdout
        );
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
    let plan: serde_json::Value =
        serde_json::from_str(&result.stdout).expect("stdout is only JSON");
    assert_eq!(plan["summary"]["create"], 80);
    assert!(
        !result.stderr.contains('\r'),
        "progress output on a pipe: {:?}",
        result.stderr
    );
}

#[test]
fn failed_put_blocks_removals() {
    let repo = GitRepo::new();
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let apply = |extra: &[&str]| {
        let mut cmd = common::r2sync(None, repo.path());
        cmd.args(["apply", "--yes", "--target", &target])
            .args(extra);
        cmd
    };
    repo.write("keep.md", "# Keep\n");
    repo.write("old.md", "# Old\n");
    repo.commit("first");
    run_expect(&mut apply(&[]), 0);

    // A file where a new document's directory must go makes its upload fail
    // with an I/O error rather than a precondition failure.
    repo.remove("old.md");
    repo.write("blocked/page.md", "# Blocked\n");
    repo.write("fine.md", "# Fine\n");
    repo.commit("second");
    std::fs::write(out.path().join("blocked"), "in the way").unwrap();

    let failed = run_expect(&mut apply(&[]), 1);
    assert!(
        failed.stderr.contains("error: put blocked/page.md: "),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("apply failed for 1 of 3 changes"),
        "{}",
        failed.stderr
    );
    assert!(
        out.path().join("fine.md").is_file(),
        "other uploads still happen"
    );
    assert!(
        out.path().join("old.md").is_file(),
        "removals wait for every upload"
    );

    // Once the obstacle is gone, a rerun converges.
    std::fs::remove_file(out.path().join("blocked")).unwrap();
    run_expect(&mut apply(&[]), 0);
    assert_eq!(
        std::fs::read_to_string(out.path().join("blocked/page.md")).unwrap(),
        "# Blocked\n"
    );
    assert!(!out.path().join("old.md").exists());
    run_expect(
        common::r2sync(None, repo.path()).args(["check", "--target", &target]),
        0,
    );
}

#[test]
fn url_source_is_cached_and_fetched() {
    let repo = GitRepo::new();
    repo.write("a.md", "# A\n");
    repo.commit("first");
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.path().display());
    let target = format!("file://{}", out.path().display());
    let plan = || {
        let mut cmd = common::r2sync(None, out.path());
        cmd.args(["plan", "--repo", &url, "--target", &target, "--cache-dir"])
            .arg(cache.path());
        cmd
    };

    let first = run_expect(&mut plan(), 0);
    assert!(first.stdout.contains("+ a.md"), "{}", first.stdout);

    // The next run fetches the new commit into the same mirror.
    repo.write("b.md", "# B\n");
    repo.commit("second");
    let second = run_expect(&mut plan(), 0);
    assert!(second.stdout.contains("+ b.md"), "{}", second.stdout);
    let mirrors = std::fs::read_dir(cache.path().join("repos"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(mirrors, 1);
}

/// Runs r2sync under `script`, which gives it a terminal, typing `answer`.
fn apply_on_terminal(repo: &GitRepo, target: &str, answer: &str) -> common::Run {
    let binary = assert_cmd::cargo::cargo_bin("r2sync");
    let inner = format!(
        "{} apply --repo {} --target {}",
        binary.display(),
        repo.path().display(),
        target
    );
    let mut command = std::process::Command::new("script");
    command
        .args(["-qec", &inner, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("script(1) from util-linux");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    common::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn terminal_apply_asks_for_yes() {
    let repo = GitRepo::new();
    repo.write("a.md", "# A\n");
    repo.commit("first");
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());

    let declined = apply_on_terminal(&repo, &target, "no\n");
    assert_eq!(declined.code, 1, "{}", declined.stdout);
    assert!(
        declined.stdout.contains("Only 'yes' is accepted"),
        "{}",
        declined.stdout
    );
    assert!(
        declined.stdout.contains("apply cancelled"),
        "{}",
        declined.stdout
    );
    assert!(!out.path().join("a.md").exists());

    let accepted = apply_on_terminal(&repo, &target, "yes\n");
    assert_eq!(accepted.code, 0, "{}", accepted.stdout);
    assert!(out.path().join("a.md").is_file());
}

#[test]
fn target_typos_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["file:/tmp/x", "bucket1", "file://relative/dir"] {
        let result = run_expect(
            common::r2sync(None, dir.path()).args(["plan", "--target", target]),
            1,
        );
        assert!(
            result.stderr.contains("invalid --target"),
            "{target}: {}",
            result.stderr
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

#[test]
fn plan_and_check_create_no_directory() {
    let repo = GitRepo::new();
    repo.write("content/a.md", "# A\n");
    repo.commit("first");
    let holder = tempfile::tempdir().unwrap();
    let missing = holder.path().join("not-yet");
    let target = format!("file://{}", missing.display());

    let plan = run_expect(
        common::r2sync(None, repo.path()).args([
            "plan",
            "--root",
            "./content/",
            "--target",
            &target,
        ]),
        0,
    );
    assert!(plan.stdout.contains("+ a.md"), "{}", plan.stdout);
    assert!(
        plan.stderr.contains("does not exist yet"),
        "{}",
        plan.stderr
    );
    run_expect(
        common::r2sync(None, repo.path()).args(["check", "--root", "content", "--target", &target]),
        2,
    );
    assert!(!missing.exists());

    run_expect(
        common::r2sync(None, repo.path())
            .args(["apply", "--yes", "--root", "content", "--target", &target]),
        0,
    );
    assert!(missing.join("a.md").is_file());
}

#[test]
fn document_warnings_reach_plan_json() {
    let repo = GitRepo::new();
    repo.write("dup.md", "---\ntitle: A\ntitle: B\n---\nbody\n");
    repo.write("open.md", "---\ntitle: never closed\n");
    repo.commit("first");
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let result = run_expect(
        common::r2sync(None, repo.path()).args(["plan", "--json", "--target", &target]),
        0,
    );
    let plan: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    let warnings: Vec<&str> = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("dup.md: front matter repeats a key"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with("open.md: front matter is never closed"),
        "{warnings:?}"
    );
}

#[test]
fn encoding_and_size_options() {
    let repo = GitRepo::new();
    repo.write("latin1.md", b"# Caf\xE9\n");
    repo.commit("first");
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let plan = |extra: &[&str]| {
        let mut cmd = common::r2sync(None, repo.path());
        cmd.args(["plan", "--json", "--target", &target])
            .args(extra);
        cmd
    };

    let rejected = run_expect(&mut plan(&[]), 1);
    assert!(
        rejected
            .stderr
            .contains("latin1.md: not valid UTF-8 at byte 5"),
        "{}",
        rejected.stderr
    );

    let decoded = run_expect(&mut plan(&["--fallback-encoding", "windows-1252"]), 0);
    let parsed: serde_json::Value = serde_json::from_str(&decoded.stdout).unwrap();
    assert_eq!(parsed["summary"]["create"], 1);

    let bad_label = run_expect(&mut plan(&["--fallback-encoding", "klingon"]), 1);
    assert!(
        bad_label
            .stderr
            .contains("invalid --fallback-encoding \"klingon\""),
        "{}",
        bad_label.stderr
    );

    let too_large = run_expect(
        &mut plan(&["--fallback-encoding", "latin1", "--max-document-size", "4"]),
        1,
    );
    assert!(
        too_large
            .stderr
            .contains("latin1.md: 7 bytes is more than the maximum document size of 4 bytes"),
        "{}",
        too_large.stderr
    );
}

#[test]
fn decomposed_file_names_become_nfc_keys() {
    let repo = GitRepo::new();
    // "café" with a combining accent (NFD), as macOS file systems write it.
    repo.write("cafe\u{301}.md", "# Café\n");
    repo.commit("first");
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    run_expect(
        common::r2sync(None, repo.path()).args(["apply", "--yes", "--target", &target]),
        0,
    );
    assert!(out.path().join("caf\u{e9}.md").is_file(), "the key is NFC");
    run_expect(
        common::r2sync(None, repo.path()).args(["check", "--target", &target]),
        0,
    );
}

#[test]
fn options_layer_flags_over_env_over_file() {
    let repo = GitRepo::new();
    repo.write("content/a.md", "# A\n");
    repo.write("other/b.md", "# B\n");
    repo.commit("first");
    std::fs::write(
        repo.path().join("r2sync.toml"),
        "root = \"content\"\ntarget = \"file://./from-file\"\n\n[targets.staging]\ntarget = \"file://./staging\"\nroot = \"other\"\n",
    )
    .unwrap();
    let plan = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = common::r2sync(None, repo.path());
        cmd.arg("plan").args(args);
        for (name, value) in env {
            cmd.env(name, value);
        }
        run_expect(&mut cmd, 0).stdout
    };

    // The file beats the defaults.
    let from_file = plan(&[], &[]);
    assert!(
        from_file.contains("from-file") && from_file.contains("+ a.md"),
        "{from_file}"
    );

    // The environment beats the file, and a flag beats the environment.
    let from_env = plan(&[], &[("R2SYNC_TARGET", "file://./from-env")]);
    assert!(from_env.contains("from-env"), "{from_env}");
    let from_flag = plan(
        &["--target", "file://./from-flag"],
        &[("R2SYNC_TARGET", "file://./from-env")],
    );
    assert!(from_flag.contains("from-flag"), "{from_flag}");

    // A named target beats the top level of the file.
    let staging = plan(&["--target-name", "staging"], &[]);
    assert!(
        staging.contains("/staging") && staging.contains("+ b.md"),
        "{staging}"
    );

    let mut unknown = common::r2sync(None, repo.path());
    unknown.args(["plan", "--target-name", "prod"]);
    let result = run_expect(&mut unknown, 1);
    assert!(
        result
            .stderr
            .contains("no such [targets.prod] table; defined: staging"),
        "{}",
        result.stderr
    );
}

#[test]
fn saved_plan_carries_its_configuration() {
    let repo = GitRepo::new();
    repo.write("guide/a.md", "---\ntitle: A\ndraft: false\n---\nText.\n");
    repo.write("guide/b.md", "---\ntitle: B\ndraft: true\n---\nNot yet.\n");
    repo.commit("first");
    let planning = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let config = "skip-drafts = true\ncatalog = \"catalog.jsonl\"\n\n[[rules]]\nmatch = \"guide/**\"\ncache-control = \"max-age=60\"\n";
    std::fs::write(planning.path().join("r2sync.toml"), config).unwrap();
    let plan_path = planning.path().join("plan.json");
    let plan_arg = plan_path.to_str().unwrap();
    let repo_arg = repo.path().to_str().unwrap();

    run_expect(
        common::r2sync(None, planning.path()).args([
            "plan", "--repo", repo_arg, "--target", &target, "--out", plan_arg,
        ]),
        0,
    );

    // A changed configuration file where the plan is applied is noticed.
    std::fs::write(
        planning.path().join("r2sync.toml"),
        config.replace("max-age=60", "max-age=61"),
    )
    .unwrap();
    let changed = run_expect(
        common::r2sync(None, planning.path()).args(["apply", plan_arg]),
        1,
    );
    assert!(
        changed
            .stderr
            .contains("configuration changed: rules: entry 1: "),
        "{}",
        changed.stderr
    );

    // Without a configuration file, everything comes from the plan.
    let applied = run_expect(
        common::r2sync(None, elsewhere.path()).args(["apply", plan_arg]),
        0,
    );
    assert!(
        applied.stderr.contains("is still valid"),
        "{}",
        applied.stderr
    );
    assert!(out.path().join("guide/a.md").is_file());
    assert!(
        !out.path().join("guide/b.md").exists(),
        "the draft stays out"
    );
    assert!(out.path().join("catalog.jsonl").is_file());
    let side: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join(".r2sync-meta/guide/a.md.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(side["headers"]["cache-control"], "max-age=60");
}

#[test]
fn awkward_trees_are_handled() {
    use std::os::unix::ffi::OsStrExt;

    let repo = GitRepo::new();
    repo.write("docs/real.md", "# Real\n");
    repo.write("docs/page.mdx", "# MDX\n");
    std::os::unix::fs::symlink("real.md", repo.path().join("docs/alias.md")).unwrap();
    std::os::unix::fs::symlink("alias.md", repo.path().join("docs/chain.md")).unwrap();
    std::os::unix::fs::symlink("../../outside.md", repo.path().join("docs/escape.md")).unwrap();
    std::os::unix::fs::symlink("missing.md", repo.path().join("docs/dangling.md")).unwrap();
    repo.write(
        "docs/big.md",
        "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n",
    );
    let head = repo.commit("first");
    // A gitlink (submodule entry) pointing at some commit.
    repo.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{head},docs/vendor"),
    ]);
    repo.git(&["commit", "-q", "-m", "submodule"]);
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let plan = |extra: &[&str]| {
        let mut cmd = common::r2sync(None, repo.path());
        cmd.args(["plan", "--json", "--target", &target])
            .args(extra);
        cmd
    };

    // LFS pointers fail by default, naming the file.
    let lfs = run_expect(&mut plan(&[]), 1);
    assert!(
        lfs.stderr.contains("docs/big.md: is a Git LFS pointer"),
        "{}",
        lfs.stderr
    );

    let result = run_expect(&mut plan(&["--skip-lfs"]), 0);
    let parsed: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    let keys: Vec<&str> = parsed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec!["docs/alias.md", "docs/chain.md", "docs/real.md"],
        "links to selected files are followed"
    );
    let warnings = parsed["warnings"].to_string();
    assert!(
        warnings.contains("docs/escape.md: symbolic link to \\\"../../outside.md\\\" skipped"),
        "{warnings}"
    );
    assert!(
        warnings.contains("docs/dangling.md: symbolic link to \\\"missing.md\\\" skipped"),
        "{warnings}"
    );
    assert!(
        warnings.contains("docs/vendor: submodule skipped"),
        "{warnings}"
    );
    assert!(
        warnings.contains("docs/big.md: Git LFS pointer skipped"),
        "{warnings}"
    );

    // A link is published with its target's content.
    run_expect(
        common::r2sync(None, repo.path()).args([
            "apply",
            "--yes",
            "--skip-lfs",
            "--target",
            &target,
        ]),
        0,
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("docs/alias.md")).unwrap(),
        "# Real\n"
    );

    // .mdx is opt-in through --include.
    let mdx = run_expect(
        &mut plan(&["--skip-lfs", "--include", "*.md", "--include", "*.mdx"]),
        0,
    );
    assert!(mdx.stdout.contains("docs/page.mdx"), "{}", mdx.stdout);

    // A path that is not UTF-8 fails with an escaped name, or is skipped.
    let name = std::ffi::OsStr::from_bytes(b"docs/caf\xe9.md");
    std::fs::write(repo.path().join(name), "# Latin-1 name\n").unwrap();
    repo.commit("bad name");
    let failed = run_expect(&mut plan(&["--skip-lfs"]), 1);
    assert!(
        failed.stderr.contains("docs/caf\\xe9.md"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("is not valid UTF-8"),
        "{}",
        failed.stderr
    );
    let skipped = run_expect(&mut plan(&["--skip-lfs", "--skip-invalid-paths"]), 0);
    assert!(
        skipped
            .stdout
            .contains("is not valid UTF-8, so it is skipped"),
        "{}",
        skipped.stdout
    );
}

#[test]
fn empty_repository_and_unknown_ref_are_clear() {
    let repo = GitRepo::new();
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let empty = run_expect(
        common::r2sync(None, repo.path()).args(["plan", "--target", &target]),
        1,
    );
    assert!(
        empty.stderr.contains("cannot resolve ref \"HEAD\""),
        "{}",
        empty.stderr
    );
    assert!(empty.stderr.contains("--ref"), "{}", empty.stderr);

    repo.write("a.md", "# A\n");
    repo.commit("first");
    let unknown = run_expect(
        common::r2sync(None, repo.path()).args(["plan", "--ref", "v9.9", "--target", &target]),
        1,
    );
    assert!(
        unknown.stderr.contains("cannot resolve ref \"v9.9\""),
        "{}",
        unknown.stderr
    );
    let short = repo.git(&["rev-parse", "--short", "HEAD"]);
    run_expect(
        common::r2sync(None, repo.path()).args(["plan", "--ref", &short, "--target", &target]),
        0,
    );
}

#[test]
fn concurrent_runs_share_a_cache() {
    let repo = GitRepo::new();
    for index in 0..50 {
        repo.write(&format!("p{index}.md"), format!("# {index}\n"));
    }
    repo.commit("first");
    let cache = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.path().display());

    // Four runs start at once on an empty cache; each must succeed.
    let children: Vec<_> = (0..4)
        .map(|index| {
            let out = cache.path().join(format!("out{index}"));
            let mut cmd = common::r2sync(None, cache.path());
            cmd.args(["plan", "--json", "--repo", &url, "--cache-dir"])
                .arg(cache.path().join("mirror"))
                .arg("--target")
                .arg(format!("file://{}", out.display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(plan["summary"]["create"], 50);
    }
}

#[test]
fn saved_plan_remembers_its_named_target() {
    let repo = GitRepo::new();
    repo.write("a.md", "# A\n");
    repo.commit("first");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("r2sync.toml"),
        "target = \"file://./top\"\n\n[targets.staging]\ntarget = \"file://./staging\"\n",
    )
    .unwrap();
    let repo_arg = repo.path().to_str().unwrap();
    run_expect(
        common::r2sync(None, work.path()).args([
            "plan",
            "--repo",
            repo_arg,
            "--target-name",
            "staging",
            "--out",
            "plan.json",
        ]),
        0,
    );
    let applied = run_expect(
        common::r2sync(None, work.path()).args(["apply", "plan.json"]),
        0,
    );
    assert!(
        applied.stderr.contains("is still valid"),
        "{}",
        applied.stderr
    );
    assert!(work.path().join("staging/a.md").is_file());
    assert!(!work.path().join("top").exists());
}

#[test]
fn worktree_preview_needs_allow_dirty() {
    let repo = GitRepo::new();
    repo.write("a.md", "# A\n");
    repo.write("gone.md", "# Gone\n");
    repo.commit("first");
    // Uncommitted: an edit, a new file, an ignored file and a deletion.
    repo.write("a.md", "# A, edited\n");
    repo.write("new.md", "# New\n");
    repo.write(".gitignore", "scratch.md\n");
    repo.write("scratch.md", "# Ignored\n");
    std::fs::remove_file(repo.path().join("gone.md")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let run = |args: &[&str]| {
        let mut cmd = common::r2sync(None, repo.path());
        cmd.args(args).args(["--target", &target]);
        cmd
    };

    let plan = run_expect(&mut run(&["plan", "--worktree"]), 0);
    assert!(plan.stdout.contains("work tree"), "{}", plan.stdout);
    assert!(plan.stdout.contains("+ a.md (12 B)"), "{}", plan.stdout);
    assert!(plan.stdout.contains("+ new.md"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("scratch.md"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("gone.md"), "{}", plan.stdout);

    let refused = run_expect(&mut run(&["apply", "--yes", "--worktree"]), 1);
    assert!(
        refused.stderr.contains("--allow-dirty"),
        "{}",
        refused.stderr
    );
    assert!(!out.path().join("a.md").exists());

    run_expect(
        &mut run(&["plan", "--worktree", "--out", "preview.json"]),
        0,
    );
    let saved = run_expect(
        common::r2sync(None, repo.path()).args(["apply", "preview.json"]),
        1,
    );
    assert!(saved.stderr.contains("--allow-dirty"), "{}", saved.stderr);
    run_expect(
        common::r2sync(None, repo.path()).args(["apply", "preview.json", "--allow-dirty"]),
        0,
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("a.md")).unwrap(),
        "# A, edited\n"
    );

    // check compares the bucket with the work tree as well.
    run_expect(&mut run(&["check", "--worktree"]), 0);
}

#[test]
fn refs_tags_and_shallow_clones() {
    let repo = GitRepo::new();
    repo.write("a.md", "# One\n");
    let first = repo.commit("first");
    repo.git(&["tag", "-a", "v1", "-m", "release one"]);
    repo.git(&["tag", "light"]);
    repo.write("a.md", "# Two\n");
    repo.commit("second");
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());
    let plan = |repo_path: &str, reference: &str| {
        let mut cmd = common::r2sync(None, out.path());
        cmd.args([
            "plan", "--json", "--repo", repo_path, "--ref", reference, "--target", &target,
        ]);
        cmd
    };
    let repo_arg = repo.path().to_str().unwrap();

    // Annotated and lightweight tags, full and short ids all name commit one.
    for reference in ["v1", "light", first.as_str(), &first[..8]] {
        let result = run_expect(&mut plan(repo_arg, reference), 0);
        let parsed: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
        assert_eq!(parsed["source"]["commit"], first.as_str(), "{reference}");
    }

    // A detached HEAD works.
    repo.git(&["checkout", "-q", "--detach", "v1"]);
    let detached = run_expect(&mut plan(repo_arg, "HEAD"), 0);
    let parsed: serde_json::Value = serde_json::from_str(&detached.stdout).unwrap();
    assert_eq!(parsed["source"]["commit"], first.as_str());
    repo.git(&["checkout", "-q", "main"]);

    // A shallow clone has the tip's tree but not the older commit.
    let shallow = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("git")
        .args(["clone", "-q", "--depth", "1"])
        .arg(format!("file://{repo_arg}"))
        .arg(shallow.path())
        .status()
        .unwrap();
    assert!(status.success());
    let shallow_arg = shallow.path().to_str().unwrap();
    run_expect(&mut plan(shallow_arg, "HEAD"), 0);
    let missing = run_expect(&mut plan(shallow_arg, &first), 1);
    assert!(
        missing
            .stderr
            .contains(&format!("cannot resolve ref \"{first}\"")),
        "{}",
        missing.stderr
    );
}

/// A `git http-backend` server on 127.0.0.1 that requires `token`; it stops
/// when dropped.
struct GitHttpServer {
    child: std::process::Child,
    port: u16,
}

impl GitHttpServer {
    fn start(root: &std::path::Path, token: &str) -> Self {
        Self::start_with(root, token, &[])
    }

    /// Starts the server. `tls` is empty for HTTP, or contains a
    /// certificate and key file for HTTPS.
    fn start_with(root: &std::path::Path, token: &str, tls: &[&std::path::Path]) -> Self {
        let port = common::free_port();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/git_http.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(port.to_string())
            .arg(token)
            .args(tls)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        GitHttpServer { child, port }
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_token_authenticates_and_stays_secret() {
    let repo = GitRepo::new();
    repo.write("a.md", "# A\n");
    repo.commit("first");
    let served = tempfile::tempdir().unwrap();
    let bare = served.path().join("docs.git");
    repo.git(&["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);

    let token = "tok-3f9c1d2e8a7b6c5d";
    let server = GitHttpServer::start(served.path(), token);
    let url = format!("http://127.0.0.1:{}/docs.git", server.port);
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().join("bucket").display());
    let cache = out.path().join("cache");
    let plan = || {
        let mut cmd = common::r2sync(None, out.path());
        cmd.args([
            "-vvv",
            "plan",
            "--json",
            "--repo",
            &url,
            "--target",
            &target,
            "--cache-dir",
        ])
        .arg(&cache)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", out.path());
        cmd
    };

    // Without a token the error names what was tried and what to set.
    let denied = run_expect(&mut plan(), 1);
    assert!(
        denied.stderr.contains("authentication failed"),
        "{}",
        denied.stderr
    );
    assert!(
        denied.stderr.contains("R2SYNC_GIT_TOKEN"),
        "{}",
        denied.stderr
    );

    // A wrong token is rejected and named as tried, without its value.
    let wrong = run_expect(plan().env("R2SYNC_GIT_TOKEN", "wrong-token-value"), 1);
    assert!(
        wrong.stderr.contains("HTTPS token from R2SYNC_GIT_TOKEN"),
        "{}",
        wrong.stderr
    );
    assert!(
        !wrong.stderr.contains("wrong-token-value"),
        "token in output"
    );

    // The right token works, and appears in no output and no cached file.
    let ok = run_expect(plan().env("R2SYNC_GIT_TOKEN", token), 0);
    assert!(ok.stdout.contains("\"create\": 1"), "{}", ok.stdout);
    assert!(
        !ok.stdout.contains(token) && !ok.stderr.contains(token),
        "token in output"
    );
    for entry in walk(&cache) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes
                .windows(token.len())
                .any(|window| window == token.as_bytes()),
            "token stored in {}",
            entry.display()
        );
    }

    // A git credential helper configured for the user works without the
    // variable.
    std::fs::write(
        out.path().join(".gitconfig"),
        format!("[credential]\n\thelper = \"!f() {{ echo username=helper; echo password={token}; }}; f\"\n"),
    )
    .unwrap();
    let helped = run_expect(&mut plan(), 0);
    assert!(helped.stdout.contains("\"create\": 1"), "{}", helped.stdout);
    assert!(!helped.stderr.contains(token), "token in output");
    std::fs::remove_file(out.path().join(".gitconfig")).unwrap();

    // A token inside the URL works too and is removed from the plan.
    let with_user = format!("http://user:{token}@127.0.0.1:{}/docs.git", server.port);
    let mut cmd = common::r2sync(None, out.path());
    cmd.args([
        "plan",
        "--json",
        "--repo",
        &with_user,
        "--target",
        &target,
        "--cache-dir",
    ])
    .arg(out.path().join("cache2"))
    .env("GIT_TERMINAL_PROMPT", "0");
    let embedded = run_expect(&mut cmd, 0);
    assert!(
        !embedded.stdout.contains(token),
        "token in the plan: {}",
        embedded.stdout
    );
}

/// Lists every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn https_remote_with_a_trusted_certificate() {
    let repo = GitRepo::new();
    repo.write("a.md", "# Over TLS\n");
    repo.commit("first");
    let served = tempfile::tempdir().unwrap();
    repo.git(&[
        "clone",
        "-q",
        "--bare",
        ".",
        served.path().join("docs.git").to_str().unwrap(),
    ]);

    // A self-signed certificate for 127.0.0.1, trusted through SSL_CERT_FILE.
    let cert = served.path().join("cert.pem");
    let key = served.path().join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let token = "tls-token-55aa";
    let server = GitHttpServer::start_with(served.path(), token, &[&cert, &key]);
    let url = format!("https://127.0.0.1:{}/docs.git", server.port);
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().join("bucket").display());
    let plan = |cache: &str| {
        let mut cmd = common::r2sync(None, out.path());
        cmd.args(["plan", "--repo", &url, "--target", &target, "--cache-dir"])
            .arg(out.path().join(cache))
            .env("R2SYNC_GIT_TOKEN", token)
            .env("HOME", out.path());
        cmd
    };

    let trusted = run_expect(plan("trusted").env("SSL_CERT_FILE", &cert), 0);
    assert!(trusted.stdout.contains("+ a.md"), "{}", trusted.stdout);

    // Without trusting the certificate the fetch fails.
    let untrusted = run_expect(plan("untrusted").env("SSL_CERT_FILE", "/dev/null"), 1);
    assert!(
        untrusted.stderr.contains("cannot fetch"),
        "{}",
        untrusted.stderr
    );
}
