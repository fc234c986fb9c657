//! End to end on real documentation: the 11 commits of the hugo-docs corpus,
//! applied in order with `--root content` to each S3 server.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{run_expect, Bucket};
use futures::StreamExt;

/// Commit ids of the bundle's main branch, oldest first.
fn commits(clone: &std::path::Path) -> Vec<String> {
    let output = Command::new("git")
        .args(["rev-list", "--reverse", "main"])
        .current_dir(clone)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Markdown files under `content/` at `commit`, per `git ls-tree`, mapped
/// to keys: an expectation computed without r2sync's code.
fn expected_keys(clone: &std::path::Path, commit: &str, prefix: &str) -> Vec<String> {
    let output = Command::new("git")
        .args([
            "-c",
            "core.quotePath=false",
            "ls-tree",
            "-r",
            "--name-only",
            commit,
            "content/",
        ])
        .current_dir(clone)
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut keys: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|path| {
            let lower = path.to_lowercase();
            lower.ends_with(".md") || lower.ends_with(".markdown")
        })
        .map(|path| format!("{prefix}/{}", path.strip_prefix("content/").unwrap()))
        .collect();
    keys.sort();
    keys
}

/// Desired fingerprints per key, from r2sync's library at `commit`.
fn desired_hashes(
    bundle: &std::path::Path,
    commit: &str,
    prefix: &str,
) -> BTreeMap<String, (String, String)> {
    common::desired_state(bundle, commit, "content", prefix)
        .objects
        .into_iter()
        .map(|(key, object)| (key, (object.fingerprint.hash, object.fingerprint.body)))
        .collect()
}

#[test]
fn hugo_docs_history_converges_on_every_server() {
    let Some(bundle) = common::corpus("hugo-docs.bundle") else {
        return;
    };
    let clone = tempfile::tempdir().unwrap();
    let status = Command::new("git")
        .args(["-c", "init.defaultBranch=main", "clone", "-q", "--bare"])
        .arg(&bundle)
        .arg(clone.path())
        .status()
        .unwrap();
    assert!(status.success());
    let history = commits(clone.path());
    assert_eq!(history.len(), 11, "the corpus has 11 commits");

    let runtime = common::runtime();
    for server in common::servers() {
        let bucket = Bucket::new(&server);
        let prefix = common::unique_prefix("hugo");
        let workdir = tempfile::tempdir().unwrap();
        let target = common::target(&server, &prefix);
        let command = |subcommand: &str, commit: &str, args: &[&str]| {
            let mut command = common::r2sync(Some(&server), workdir.path());
            command
                .arg(subcommand)
                .arg("--repo")
                .arg(&bundle)
                .args(["--ref", commit, "--root", "content", "--target", &target])
                .args(args);
            command
        };

        for (step, commit) in history.iter().enumerate() {
            let started = std::time::Instant::now();
            run_expect(
                &mut command("apply", commit, &["--yes", "--concurrency", "32"]),
                0,
            );

            // The listing equals the desired keys exactly.
            let keys = runtime.block_on(bucket.document_keys(&prefix));
            assert_eq!(
                keys,
                expected_keys(clone.path(), commit, &prefix),
                "{} step {step}: listing differs",
                server.name
            );

            // Every object's hash metadata matches the desired state.
            let desired = desired_hashes(&bundle, commit, &prefix);
            let metadata: Vec<(String, BTreeMap<String, String>)> = runtime.block_on(
                futures::stream::iter(keys.iter().cloned())
                    .map(|key| {
                        let bucket = &bucket;
                        async move {
                            let metadata = bucket.metadata(&key).await;
                            (key, metadata)
                        }
                    })
                    .buffer_unordered(32)
                    .collect(),
            );
            for (key, metadata) in &metadata {
                assert_eq!(
                    metadata.get("r2sync-hash"),
                    Some(&desired[key].0),
                    "{} step {step}: hash of {key}",
                    server.name
                );
            }

            // A fresh plan is empty and check agrees.
            run_expect(&mut command("plan", commit, &["--detailed-exitcode"]), 0);
            run_expect(&mut command("check", commit, &[]), 0);
            eprintln!(
                "{} step {step}: {} documents in {:.1}s",
                server.name,
                keys.len(),
                started.elapsed().as_secs_f64()
            );
        }

        // At the last commit, every body hashes to its metadata.
        let last = history.last().unwrap();
        let desired = desired_hashes(&bundle, last, &prefix);
        for (key, (_, body_hash)) in desired.iter().take(200) {
            let body = runtime.block_on(bucket.get(key));
            assert_eq!(
                &blake3::hash(&body).to_hex().to_string(),
                body_hash,
                "body of {key}"
            );
        }

        // A change behind r2sync's back is drift, named by key.
        let victim = desired.keys().nth(desired.len() / 2).unwrap().clone();
        runtime.block_on(bucket.put_plain(&victim, b"edited outside r2sync\n"));
        let drift = run_expect(&mut command("check", last, &[]), 2);
        assert!(drift.stdout.contains(&victim), "{}", drift.stdout);
        assert!(drift.stdout.contains("in 1 key:"), "{}", drift.stdout);
    }
}
