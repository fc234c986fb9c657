//! plan, apply and check against the real S3 servers started by tests/run.sh.
//! Each test runs once per configured server, under its own key prefix.

mod common;

use common::{run, run_expect, writes, Fixture};
use std::process::Stdio;

/// Keys with characters that URL and path handling tends to mangle.
const AWKWARD_PATHS: &[&str] = &[
    "guide/getting started.md",
    "guide/c++ & more.md",
    "guide/100% done.md",
    "guide/café/naïve.md",
    "guide/日本語.md",
];

#[test]
fn apply_converges_and_second_run_writes_nothing() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "converge");
        fx.repo.write("README.md", "# Project\n\nIntro.\n");
        fx.repo.write(
            "guide/intro.md",
            "---\ntitle: Introduction\n---\nBody text.\n",
        );
        fx.repo.write(
            "guide/title.md",
            "---\ntitle: \"Résumé ☕ über alles\"\n---\nx\n",
        );
        for path in AWKWARD_PATHS {
            fx.repo.write(path, format!("# {path}\n"));
        }
        fx.repo.write("image.png", [0u8, 1, 2]);
        fx.repo.commit("first");

        let first = fx.apply_json(&[]);
        assert_eq!(first["created"], 8, "{}: {first}", server.name);

        // The listing contains exactly the Markdown files, keys unchanged.
        let mut expected: Vec<String> = ["README.md", "guide/intro.md", "guide/title.md"]
            .iter()
            .chain(AWKWARD_PATHS)
            .map(|path| fx.key(path))
            .collect();
        expected.sort();
        let keys = runtime.block_on(fx.bucket.document_keys(&fx.prefix));
        assert_eq!(keys, expected, "{}", server.name);

        // Headers, metadata and body are what normalization produced.
        let intro = fx.key("guide/intro.md");
        assert_eq!(
            runtime.block_on(fx.bucket.content_type(&intro)).as_deref(),
            Some("text/markdown; charset=utf-8")
        );
        assert_eq!(runtime.block_on(fx.bucket.get(&intro)), b"Body text.\n");
        let metadata = runtime.block_on(fx.bucket.metadata(&intro));
        assert_eq!(metadata["r2sync-title"], "Introduction", "{}", server.name);
        assert_eq!(metadata["r2sync-path"], "guide/intro.md");
        assert_eq!(metadata["r2sync-hash"].len(), 64);

        // A non-ASCII title survives the trip as RFC 2047 encoded words.
        let title_metadata = runtime.block_on(fx.bucket.metadata(&fx.key("guide/title.md")));
        assert_eq!(
            r2sync::remote::metadata::decode(&title_metadata["r2sync-title"]),
            "Résumé ☕ über alles",
            "{}",
            server.name
        );

        // The second apply changes nothing at all, the manifest included.
        let before = runtime.block_on(fx.bucket.list(&fx.prefix));
        let second = fx.apply_json(&[]);
        assert_eq!(writes(&second), 0, "{}: {second}", server.name);
        // Nothing to do costs the listing and the manifest read, no more.
        let requests: u64 = second["requests"]
            .as_object()
            .unwrap()
            .values()
            .map(|count| count.as_u64().unwrap())
            .sum();
        assert_eq!(requests, 2, "{}: {second}", server.name);
        let after = runtime.block_on(fx.bucket.list(&fx.prefix));
        assert_eq!(before, after, "{}", server.name);

        // check agrees, and plan reports no changes through its exit code.
        run_expect(&mut fx.cmd("check", &[]), 0);
        run_expect(&mut fx.cmd("plan", &["--detailed-exitcode"]), 0);

        // A commit that touches no selected file writes nothing either.
        fx.repo.write("image.png", [3u8, 4, 5]);
        fx.repo.commit("image only");
        let third = fx.apply_json(&[]);
        assert_eq!(writes(&third), 0, "{}: {third}", server.name);
        assert_eq!(
            runtime.block_on(fx.bucket.list(&fx.prefix)),
            after,
            "{}",
            server.name
        );
    }
}

#[test]
fn updates_name_reasons_and_archive_keeps_copies() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "reasons");
        fx.repo
            .write("body.md", "---\ntitle: Body\n---\nold body\n");
        fx.repo
            .write("title.md", "---\ntitle: Old title\n---\nsame body\n");
        fx.repo
            .write("gone.md", "---\ntitle: Gone\n---\nto be archived\n");
        fx.repo.write("same.md", "unchanged\n");
        fx.repo.commit("first");
        fx.apply_json(&[]);
        let gone_metadata = runtime.block_on(fx.bucket.metadata(&fx.key("gone.md")));

        fx.repo
            .write("body.md", "---\ntitle: Body\n---\nnew body\n");
        fx.repo
            .write("title.md", "---\ntitle: New title\n---\nsame body\n");
        fx.repo.remove("gone.md");
        fx.repo.commit("second");

        let planned = run_expect(&mut fx.cmd("plan", &["--json", "--detailed-exitcode"]), 2);
        let plan: serde_json::Value = serde_json::from_str(&planned.stdout).unwrap();
        assert_eq!(plan["format"], "r2sync-plan");
        assert_eq!(plan["version"], 1);
        let changes: Vec<(String, String, String)> = plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|change| {
                (
                    change["key"].as_str().unwrap().to_string(),
                    change["action"].as_str().unwrap().to_string(),
                    change["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            vec![
                (fx.key("body.md"), "update".into(), "content".into()),
                (fx.key("title.md"), "update".into(), "metadata".into()),
                (fx.key("gone.md"), "archive".into(), "".into()),
            ],
            "{}",
            server.name
        );
        assert_eq!(plan["summary"]["unchanged"], 1);

        let result = fx.apply_json(&[]);
        assert_eq!(result["updated"], 2, "{result}");
        assert_eq!(result["archived"], 1, "{result}");

        // The archived copy keeps body and metadata; the original is gone.
        let listing = runtime.block_on(fx.bucket.list(&fx.prefix));
        let archive_prefix = format!("{}/.r2sync/archive/", fx.prefix);
        let archived: Vec<&String> = listing
            .keys()
            .filter(|key| key.starts_with(&archive_prefix) && key.ends_with("/gone.md"))
            .collect();
        assert_eq!(archived.len(), 1, "{}: {listing:?}", server.name);
        assert_eq!(
            runtime.block_on(fx.bucket.get(archived[0])),
            b"to be archived\n"
        );
        assert_eq!(
            runtime.block_on(fx.bucket.metadata(archived[0])),
            gone_metadata
        );
        assert!(!listing.contains_key(&fx.key("gone.md")));

        assert_eq!(writes(&fx.apply_json(&[])), 0);
    }
}

#[test]
fn max_deletes_and_delete_mode() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "deletes");
        for index in 0..4 {
            fx.repo
                .write(&format!("doc{index}.md"), format!("# Doc {index}\n"));
        }
        fx.repo.commit("four");
        fx.apply_json(&[]);
        for index in 1..4 {
            fx.repo.remove(&format!("doc{index}.md"));
        }
        fx.repo.commit("one left");

        // Three removals exceed a limit of two: rejected, nothing changes.
        let before = runtime.block_on(fx.bucket.list(&fx.prefix));
        let rejected = run_expect(&mut fx.cmd("apply", &["--yes", "--max-deletes", "2"]), 1);
        assert!(
            rejected.stderr.contains("--max-deletes"),
            "{}",
            rejected.stderr
        );
        assert_eq!(runtime.block_on(fx.bucket.list(&fx.prefix)), before);

        // Plain deletes leave no archive behind.
        let result = fx.apply_json(&["--delete-mode", "delete"]);
        assert_eq!(result["deleted"], 3, "{result}");
        let listing = runtime.block_on(fx.bucket.list(&fx.prefix));
        assert!(
            listing.keys().all(|key| !key.contains("/archive/")),
            "{listing:?}"
        );
        assert_eq!(
            runtime.block_on(fx.bucket.document_keys(&fx.prefix)),
            vec![fx.key("doc0.md")]
        );
    }
}

#[test]
fn zero_selected_files_never_delete() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "empty-source");
        fx.repo.write("docs/a.md", "# A\n");
        fx.repo.commit("one");
        fx.apply_json(&[]);

        let result = run_expect(&mut fx.cmd("plan", &["--include", "*.txt"]), 0);
        assert!(
            result.stdout.contains("source selects no files"),
            "{}",
            result.stdout
        );
        fx.apply_json(&["--include", "*.txt"]);
        assert_eq!(
            runtime.block_on(fx.bucket.document_keys(&fx.prefix)),
            vec![fx.key("docs/a.md")]
        );
    }
}

#[test]
fn unmanaged_objects_are_never_touched() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "unmanaged");
        fx.repo.write("a.md", "# A\n");
        fx.repo.commit("one");
        runtime.block_on(fx.bucket.put_plain(&fx.key("logo.png"), b"png"));
        runtime.block_on(fx.bucket.put_plain(&fx.key("a.md"), b"written by hand"));

        // A foreign object at a desired key stops the plan.
        let rejected = run_expect(&mut fx.cmd("apply", &["--yes"]), 1);
        assert!(
            rejected.stderr.contains(&fx.key("a.md")),
            "{}",
            rejected.stderr
        );
        assert!(rejected.stderr.contains("--adopt"), "{}", rejected.stderr);
        assert_eq!(
            runtime.block_on(fx.bucket.get(&fx.key("a.md"))),
            b"written by hand"
        );

        // With --adopt it is taken over; the other foreign object stays.
        let result = fx.apply_json(&["--adopt"]);
        assert_eq!(result["updated"], 1, "{result}");
        assert_eq!(runtime.block_on(fx.bucket.get(&fx.key("a.md"))), b"# A\n");
        let plan = run_expect(&mut fx.cmd("plan", &[]), 0);
        assert!(
            plan.stdout.contains(&format!("? {}", fx.key("logo.png"))),
            "{}",
            plan.stdout
        );

        // Removing every source file still leaves the foreign object.
        fx.repo.remove("a.md");
        fx.repo.write("b.md", "# B\n");
        fx.repo.commit("two");
        fx.apply_json(&["--delete-mode", "delete"]);
        assert_eq!(runtime.block_on(fx.bucket.get(&fx.key("logo.png"))), b"png");
    }
}

#[test]
fn lost_or_corrupt_manifest_costs_no_uploads() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "manifest");
        for index in 0..5 {
            fx.repo
                .write(&format!("doc{index}.md"), format!("# Doc {index}\n"));
        }
        fx.repo.commit("five");
        fx.apply_json(&[]);

        // Lost: metadata vouches for every object, only the manifest is rewritten.
        runtime.block_on(fx.bucket.delete(&fx.manifest_key()));
        let result = fx.apply_json(&[]);
        assert_eq!(result["writes"]["put"], 0, "{}: {result}", server.name);
        assert_eq!(result["writes"]["manifest"], 1, "{result}");
        assert_eq!(writes(&fx.apply_json(&[])), 0);

        // Corrupt: the same.
        runtime.block_on(fx.bucket.put_plain(&fx.manifest_key(), b"{not json"));
        let result = fx.apply_json(&[]);
        assert_eq!(result["writes"]["put"], 0, "{result}");
        assert_eq!(result["writes"]["manifest"], 1, "{result}");
        assert_eq!(writes(&fx.apply_json(&[])), 0);
        run_expect(&mut fx.cmd("check", &[]), 0);
    }
}

#[test]
fn bad_input_stops_plan_and_writes_nothing() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "bad-input");
        fx.repo.write("good.md", "# Good\n");
        fx.repo.commit("good");
        fx.apply_json(&[]);
        let before = runtime.block_on(fx.bucket.list(&fx.prefix));

        let cases: [(&str, &[u8], &[&str]); 2] = [
            (
                "latin1.md",
                b"# Caf\xE9\n",
                &["latin1.md", "not valid UTF-8", "byte 5"],
            ),
            (
                "front.md",
                b"---\ntitle: ok\nlist:\n  - a\n - b\n---\nbody\n",
                &["front.md", "invalid YAML front matter", "line 5"],
            ),
        ];
        for (path, content, expected) in cases {
            fx.repo.write("good.md", "# Good, edited\n");
            fx.repo.write(path, content);
            fx.repo.commit(path);
            let result = run_expect(&mut fx.cmd("apply", &["--yes"]), 1);
            for needle in expected {
                assert!(
                    result.stderr.contains(needle),
                    "{needle:?} missing in {}",
                    result.stderr
                );
            }
            assert_eq!(
                runtime.block_on(fx.bucket.list(&fx.prefix)),
                before,
                "{}",
                server.name
            );
            fx.repo.remove(path);
        }
    }
}

#[test]
fn saved_plan_is_rejected_when_anything_moved() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "saved-plan");
        fx.repo.write("a.md", "# A\n");
        fx.repo.write("b.md", "# B\n");
        fx.repo.commit("one");
        fx.apply_json(&[]);
        let plan_path = fx.workdir.path().join("plan.json");
        let plan_arg = plan_path.to_str().unwrap();

        // Source moved: a new commit after planning.
        fx.repo.write("a.md", "# A2\n");
        fx.repo.commit("two");
        run_expect(&mut fx.cmd("plan", &["--out", plan_arg]), 0);
        fx.repo.write("a.md", "# A3\n");
        fx.repo.commit("three");
        let moved = run_expect(&mut fx.cmd("apply", &[plan_arg]), 1);
        assert!(moved.stderr.contains("source moved"), "{}", moved.stderr);

        // Configuration changed: another front matter mode.
        run_expect(&mut fx.cmd("plan", &["--out", plan_arg]), 0);
        let changed = run_expect(
            &mut fx.cmd("apply", &[plan_arg, "--front-matter", "keep"]),
            1,
        );
        assert!(
            changed
                .stderr
                .contains("configuration changed: front_matter"),
            "{}",
            changed.stderr
        );

        // Remote changed: the key the plan updates was rewritten.
        let before = runtime.block_on(fx.bucket.get(&fx.key("b.md")));
        runtime.block_on(
            fx.bucket
                .put_plain(&fx.key("a.md"), b"edited in the bucket"),
        );
        let remote = run_expect(&mut fx.cmd("apply", &[plan_arg]), 1);
        assert!(
            remote.stderr.contains("remote changed"),
            "{}",
            remote.stderr
        );
        assert!(remote.stderr.contains(&fx.key("a.md")), "{}", remote.stderr);
        assert_eq!(
            runtime.block_on(fx.bucket.get(&fx.key("a.md"))),
            b"edited in the bucket"
        );
        assert_eq!(runtime.block_on(fx.bucket.get(&fx.key("b.md"))), before);

        // A plan that is still valid applies without a prompt, and the plan
        // supplies every option that is not repeated.
        run_expect(
            &mut fx.cmd("plan", &["--out", plan_arg, "--exclude", "drafts/**"]),
            0,
        );
        let mut apply = common::r2sync(Some(&server), fx.workdir.path());
        apply.args(["apply", plan_arg]).stdin(Stdio::null());
        let applied = run_expect(&mut apply, 0);
        assert!(
            applied.stderr.contains("is still valid"),
            "{}",
            applied.stderr
        );
        assert_eq!(runtime.block_on(fx.bucket.get(&fx.key("a.md"))), b"# A3\n");
        assert_eq!(writes(&fx.apply_json(&[])), 0);
    }
}

#[test]
fn apply_without_terminal_needs_yes() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "needs-yes");
        fx.repo.write("a.md", "# A\n");
        fx.repo.commit("one");
        let mut apply = fx.cmd("apply", &[]);
        let result = run_expect(apply.stdin(Stdio::null()), 1);
        assert!(result.stderr.contains("--yes"), "{}", result.stderr);
        assert!(runtime.block_on(fx.bucket.list(&fx.prefix)).is_empty());

        // The script-friendly alias applies without asking.
        let mut alias = fx.cmd("sync-cloudflare-r2", &[]);
        run_expect(alias.stdin(Stdio::null()), 0);
        assert_eq!(
            runtime.block_on(fx.bucket.document_keys(&fx.prefix)),
            vec![fx.key("a.md")]
        );
    }
}

#[test]
fn check_reports_drift_by_key() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "drift");
        fx.repo.write("a.md", "# A\n");
        fx.repo.write("b.md", "# B\n");
        fx.repo.commit("one");
        fx.apply_json(&[]);
        run_expect(&mut fx.cmd("check", &[]), 0);

        runtime.block_on(
            fx.bucket
                .put_plain(&fx.key("a.md"), b"changed behind r2sync's back"),
        );
        runtime.block_on(fx.bucket.delete(&fx.key("b.md")));
        let result = run_expect(&mut fx.cmd("check", &[]), 2);
        assert!(
            result
                .stdout
                .contains(&format!("{}: differs", fx.key("a.md"))),
            "{}",
            result.stdout
        );
        assert!(
            result
                .stdout
                .contains(&format!("{}: missing", fx.key("b.md"))),
            "{}",
            result.stdout
        );

        let json = run_expect(&mut fx.cmd("check", &["--json"]), 2);
        let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(report["in_sync"], false);
        assert_eq!(report["drift"].as_array().unwrap().len(), 2);

        // apply repairs the drift.
        fx.apply_json(&[]);
        run_expect(&mut fx.cmd("check", &[]), 0);

        // A metadata edit that keeps the body and r2sync's own entries is
        // drift too: check computes fingerprints from what objects have.
        let key = fx.key("a.md");
        let mut attributes = runtime.block_on(fx.bucket.attributes(&key));
        attributes.insert(
            object_store::Attribute::Metadata("r2sync-title".into()),
            "Edited title".into(),
        );
        let body = runtime.block_on(fx.bucket.get(&key));
        runtime.block_on(fx.bucket.put_with(&key, &body, attributes));
        let result = run_expect(&mut fx.cmd("check", &[]), 2);
        assert!(
            result
                .stdout
                .contains(&format!("{key}: differs from the commit (metadata)")),
            "{}: {}",
            server.name,
            result.stdout
        );
        // The ETag did not change, so only a verifying apply detects it.
        let repaired = fx.apply_json(&["--verify"]);
        assert_eq!(repaired["updated"], 1, "{}: {repaired}", server.name);
        run_expect(&mut fx.cmd("check", &[]), 0);
    }
}

#[test]
fn listing_follows_pagination() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "pages");
        for index in 0..1_100 {
            fx.repo.write(
                &format!("d{}/n{index}.md", index % 10),
                format!("# {index}\n"),
            );
        }
        fx.repo.commit("many");
        let result = fx.apply_json(&["--concurrency", "32"]);
        assert_eq!(result["created"], 1_100, "{result}");
        assert_eq!(
            runtime.block_on(fx.bucket.document_keys(&fx.prefix)).len(),
            1_100
        );
        assert_eq!(writes(&fx.apply_json(&[])), 0);
    }
}

#[test]
fn secrets_never_reach_output() {
    for server in common::servers() {
        let fx = Fixture::new(&server, "secrets");
        fx.repo.write("a.md", "# A\n");
        fx.repo.commit("one");

        let secret = &server.secret_access_key;
        let runs = [
            run(fx.cmd("plan", &["-vvv"]).env("RUST_LOG", "trace")),
            run(fx.cmd("apply", &["-vvv", "--yes"]).env("RUST_LOG", "trace")),
            run(fx.cmd("check", &["-vvv"]).env("RUST_LOG", "trace")),
            // A rejected secret produces error output too.
            run(fx
                .cmd("plan", &["-vvv"])
                .env("R2_SECRET_ACCESS_KEY", "wrong-secret-value-0123456789")),
        ];
        for result in &runs {
            assert!(!result.stdout.contains(secret.as_str()), "secret in stdout");
            assert!(!result.stderr.contains(secret.as_str()), "secret in stderr");
            assert!(
                !result.stderr.contains("wrong-secret-value-0123456789"),
                "secret in stderr"
            );
        }
        assert_eq!(runs[1].code, 0, "{}", runs[1].stderr);
        assert!(
            runs[1].stderr.contains("TRACE"),
            "trace logging was not enabled"
        );
    }
}

#[test]
fn conditional_writes_reject_stale_etags() {
    let runtime = common::runtime();
    for server in common::servers() {
        if !server.conditional_writes {
            eprintln!(
                "skipping on {}: it ignores If-Match and If-None-Match",
                server.name
            );
            continue;
        }
        let fx = Fixture::new(&server, "conditional");
        let target = r2sync::config::Target::parse(&common::target(&server, &fx.prefix)).unwrap();
        let remote = common::connect(&server, &target);
        let key = fx.key("race.md");
        let metadata = Default::default();
        let headers = r2sync::manifest::content_type_headers("text/markdown");
        use r2sync::remote::{Condition, RemoteError};

        runtime.block_on(async {
            let etag = remote
                .put(&key, "one".into(), &headers, &metadata, Condition::Absent)
                .await
                .unwrap()
                .expect("the server returns an ETag");

            let again = remote
                .put(&key, "two".into(), &headers, &metadata, Condition::Absent)
                .await;
            assert!(
                matches!(again, Err(RemoteError::AlreadyExists { .. })),
                "{again:?}"
            );

            let stale = remote
                .put(
                    &key,
                    "two".into(),
                    &headers,
                    &metadata,
                    Condition::Matches("0".repeat(32)),
                )
                .await;
            assert!(
                matches!(stale, Err(RemoteError::Precondition { .. })),
                "{stale:?}"
            );
            assert_eq!(fx.bucket.get(&key).await, b"one");

            remote
                .put(
                    &key,
                    "three".into(),
                    &headers,
                    &metadata,
                    Condition::Matches(etag),
                )
                .await
                .unwrap();
            assert_eq!(fx.bucket.get(&key).await, b"three");
        });
    }
}

#[test]
fn nested_targets_leave_each_other_alone() {
    let runtime = common::runtime();
    for server in common::servers() {
        let outer = Fixture::new(&server, "nested");
        let inner = Fixture {
            server: server.clone(),
            bucket: common::Bucket::new(&server),
            prefix: format!("{}/site", outer.prefix),
            repo: common::GitRepo::new(),
            workdir: tempfile::tempdir().unwrap(),
        };
        inner.repo.write("index.md", "# Site\n");
        inner.repo.write("guide/install.md", "# Install\n");
        inner.repo.commit("site");
        inner.apply_json(&[]);

        outer.repo.write("top.md", "# Top\n");
        outer.repo.commit("outer");
        let planned = run_expect(
            &mut outer.cmd("plan", &["--json", "--delete-mode", "delete"]),
            0,
        );
        let plan: serde_json::Value = serde_json::from_str(&planned.stdout).unwrap();
        let actions: Vec<&str> = plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|change| change["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, vec!["create"], "{}: {plan}", server.name);
        let unmanaged: Vec<&str> = plan["unmanaged"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key.as_str().unwrap())
            .collect();
        assert_eq!(
            unmanaged,
            vec![
                inner.key("guide/install.md").as_str(),
                inner.key("index.md").as_str()
            ],
            "{}",
            server.name
        );

        outer.apply_json(&["--delete-mode", "delete"]);
        run_expect(&mut inner.cmd("check", &[]), 0);
        assert_eq!(
            runtime.block_on(outer.bucket.get(&inner.key("index.md"))),
            b"# Site\n"
        );

        // The inner target does not claim the outer one's objects either.
        inner.repo.remove("index.md");
        inner.repo.commit("drop index");
        let result = inner.apply_json(&["--delete-mode", "delete"]);
        assert_eq!(result["deleted"], 1, "{result}");
        run_expect(&mut outer.cmd("check", &[]), 0);
    }
}

#[test]
fn concurrent_change_stops_apply_cleanly() {
    use r2sync::config::{DeleteMode, Settings, Target};
    use r2sync::plan::{self, ArchiveContext, Plan, PlanOptions, PlanSource};
    use r2sync::remote::state;

    let runtime = common::runtime();
    for server in common::servers() {
        if !server.conditional_writes {
            eprintln!(
                "skipping on {}: it ignores If-Match, so a concurrent change is overwritten",
                server.name
            );
            continue;
        }
        let fx = Fixture::new(&server, "race");
        fx.repo.write("a.md", "# A\n");
        fx.repo.write("gone.md", "# Gone\n");
        fx.repo.commit("one");
        fx.apply_json(&[]);
        fx.repo.write("a.md", "# A2\n");
        fx.repo.remove("gone.md");
        let commit = fx.repo.commit("two");

        // Plan in-process, as apply does.
        let target = Target::parse(&common::target(&server, &fx.prefix)).unwrap();
        let remote = common::connect(&server, &target);
        let desired = common::desired_state(fx.repo.path(), &commit, "", &target.prefix);
        let actual = runtime
            .block_on(state::read_actual(&remote, 4, false))
            .unwrap();
        let options = PlanOptions {
            delete_mode: DeleteMode::Delete,
            max_deletes: 10,
            adopt: false,
            archive_context: ArchiveContext {
                prefix: target.prefix.clone(),
                internal_prefix: remote.internal_prefix(),
                archive_prefix: None,
                stamp: "20260101T000000Z".into(),
            },
            archive_keep_days: None,
            now: chrono::Utc::now(),
        };
        let diff = plan::diff(&desired, &actual, &options).unwrap();
        let settings = Settings {
            endpoint: Some(server.endpoint.clone()),
            delete_mode: DeleteMode::Delete,
            ..Settings::with_defaults("test", &target.to_string())
        };
        let source = PlanSource {
            repo: "test".into(),
            reference: "HEAD".into(),
            commit,
            worktree: false,
        };
        let plan = Plan::new(diff, source, settings, chrono::Utc::now());
        assert_eq!(plan.summary.update, 1);
        assert_eq!(plan.summary.delete, 1);

        // Someone else writes a.md after the plan was made.
        runtime.block_on(fx.bucket.put_plain(&fx.key("a.md"), b"someone else"));
        let report = runtime
            .block_on(r2sync::apply::execute(
                &plan,
                &desired,
                &actual,
                &remote,
                &r2sync::apply::ApplyOptions {
                    concurrency: 4,
                    ..Default::default()
                },
                &|| {},
            ))
            .unwrap();

        // The conflicting write is rejected, nothing is removed, nothing clobbered.
        assert!(!report.succeeded());
        let stopped = report.stopped.as_deref().unwrap_or_default();
        assert!(stopped.contains(&fx.key("a.md")), "{report:?}");
        assert!(stopped.contains("precondition failed"), "{report:?}");
        assert_eq!(report.deleted, 0);
        assert_eq!(
            runtime.block_on(fx.bucket.get(&fx.key("a.md"))),
            b"someone else"
        );
        assert_eq!(
            runtime.block_on(fx.bucket.get(&fx.key("gone.md"))),
            b"# Gone\n"
        );

        // A new plan picks the change up and converges.
        let result = fx.apply_json(&["--delete-mode", "delete"]);
        assert_eq!(result["updated"], 1, "{result}");
        assert_eq!(result["deleted"], 1, "{result}");
        run_expect(&mut fx.cmd("check", &[]), 0);
    }
}
