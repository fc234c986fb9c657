//! Archived copies: listing them, restoring one, and pruning old ones.

mod common;

use std::process::Command;

use common::{run_expect, Fixture};

/// `r2sync archive ls --target TARGET ARGS...`
fn archive_ls(fx: &Fixture, args: &[&str]) -> Command {
    let mut command = common::r2sync(Some(&fx.server), fx.workdir.path());
    command
        .args(["archive", "ls", "--target"])
        .arg(common::target(&fx.server, &fx.prefix))
        .args(args);
    command
}

#[test]
fn archive_ls_and_restore() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "restore");
        fx.repo.write("guide/a.md", "# A\n\nfirst\n");
        fx.repo.write("b.md", "# B\n");
        fx.repo.commit("one");
        run_expect(&mut fx.cmd("apply", &["--yes"]), 0);
        let original = runtime.block_on(fx.bucket.get(&fx.key("guide/a.md")));
        let original_metadata = runtime.block_on(fx.bucket.metadata(&fx.key("guide/a.md")));

        // Removing the source archives the document.
        fx.repo.remove("guide/a.md");
        fx.repo.commit("two");
        run_expect(&mut fx.cmd("apply", &["--yes"]), 0);
        assert!(!runtime
            .block_on(fx.bucket.document_keys(&fx.prefix))
            .contains(&fx.key("guide/a.md")));

        // archive ls shows the copy, by full key and by path.
        let listed = run_expect(&mut archive_ls(&fx, &["--json"]), 0);
        let copies: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
        let copies = copies.as_array().unwrap();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(copies[0]["original"], fx.key("guide/a.md"));
        let copy_key = copies[0]["key"].as_str().unwrap().to_string();
        assert!(copy_key.starts_with(&format!("{}/.r2sync/archive/", fx.prefix)));
        let by_path = run_expect(&mut archive_ls(&fx, &["guide/a.md"]), 0);
        assert!(by_path.stdout.contains(&copy_key), "{}", by_path.stdout);
        let other = run_expect(&mut archive_ls(&fx, &["b.md"]), 0);
        assert!(other.stdout.is_empty(), "{}", other.stdout);

        // restore brings back the same bytes and metadata, once.
        let restored = run_expect(&mut fx.cmd("restore", &["guide/a.md"]), 0);
        assert!(restored.stderr.contains("Restored"), "{}", restored.stderr);
        assert_eq!(
            runtime.block_on(fx.bucket.get(&fx.key("guide/a.md"))),
            original
        );
        assert_eq!(
            runtime.block_on(fx.bucket.metadata(&fx.key("guide/a.md"))),
            original_metadata
        );
        let again = run_expect(&mut fx.cmd("restore", &["guide/a.md"]), 1);
        assert!(again.stderr.contains("--overwrite"), "{}", again.stderr);
        let missing = run_expect(&mut fx.cmd("restore", &["nope.md"]), 1);
        assert!(
            missing.stderr.contains("no archived copy"),
            "{}",
            missing.stderr
        );
        let early = run_expect(
            &mut fx.cmd("restore", &["guide/a.md", "--from", "2001-01-01T00:00:00Z"]),
            1,
        );
        assert!(
            early.stderr.contains("the oldest is from"),
            "{}",
            early.stderr
        );
    }
}

#[test]
fn archive_retention_prunes_old() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "retention");
        fx.repo.write("a.md", "# A\n");
        fx.repo.write("gone.md", "# Gone\n");
        fx.repo.commit("one");
        run_expect(&mut fx.cmd("apply", &["--yes"]), 0);

        // A copy from years ago, as an earlier run would have left it.
        let old = fx.key(".r2sync/archive/20200101T000000Z/old.md");
        runtime.block_on(fx.bucket.put_plain(&old, b"# Old\n"));

        fx.repo.remove("gone.md");
        fx.repo.commit("two");
        let plan = run_expect(
            &mut fx.cmd("plan", &["--archive-keep-days", "30", "--json"]),
            0,
        );
        let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
        assert_eq!(plan["summary"]["prune"], 1, "{plan}");
        assert_eq!(plan["summary"]["archive"], 1, "{plan}");

        let result = fx.apply_json(&["--archive-keep-days", "30"]);
        assert_eq!(result["pruned"], 1, "{result}");
        assert_eq!(result["archived"], 1, "{result}");
        let keys: Vec<String> = runtime
            .block_on(fx.bucket.list(&fx.prefix))
            .into_keys()
            .collect();
        assert!(!keys.contains(&old), "{keys:?}");
        let archived: Vec<&String> = keys
            .iter()
            .filter(|key| key.contains("/.r2sync/archive/") && key.ends_with("/gone.md"))
            .collect();
        assert_eq!(archived.len(), 1, "the fresh copy stays: {keys:?}");

        // Without the option, old copies are kept.
        let listed = run_expect(&mut archive_ls(&fx, &[]), 0);
        assert!(listed.stdout.contains("gone.md"), "{}", listed.stdout);
        let plan = run_expect(&mut fx.cmd("plan", &["--json"]), 0);
        let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
        assert_eq!(plan["summary"]["prune"], 0, "{plan}");
    }
}
