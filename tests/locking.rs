//! The apply lock on real servers: overlapping applies, stale and expired
//! locks, force-unlock, Ctrl-C, and the warning on servers that ignore
//! conditional writes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{run, run_expect, Fixture};

/// Writes `count` documents of a few kilobytes, so that an apply of them
/// takes a moment on a local server.
fn write_documents(fx: &Fixture, count: usize, version: &str) {
    for index in 0..count {
        let body = format!(
            "# Page {index}\n\n{}\n",
            format!("{version} text. ").repeat(200)
        );
        fx.repo.write(&format!("docs/page-{index:03}.md"), body);
    }
}

fn lock_key(fx: &Fixture) -> String {
    fx.key(".r2sync/lock.json")
}

/// Polls until the lock object exists (or fails after 30 s).
fn wait_for_lock(fx: &Fixture, runtime: &tokio::runtime::Runtime, child: &mut common::Spawned) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = runtime.block_on(fx.bucket.list(&fx.prefix));
        if listed.contains_key(&lock_key(fx)) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the first apply ended ({status}) before its lock was seen");
        }
        assert!(Instant::now() < deadline, "the lock object never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `check` at `commit` and returns its exit code.
fn check_at(fx: &Fixture, commit: &str) -> i32 {
    run(&mut fx.cmd("check", &["--ref", commit])).code
}

#[test]
fn lock_second_apply_refused() {
    let runtime = common::runtime();
    // Exclusion needs a server that enforces conditional writes.
    for server in common::servers()
        .into_iter()
        .filter(|server| server.conditional_writes)
    {
        let fx = Fixture::new(&server, "lock-second");
        write_documents(&fx, 300, "first");
        let first = fx.repo.commit("first");
        write_documents(&fx, 300, "second");
        fx.repo.write("docs/extra.md", "# Extra\n");
        let second = fx.repo.commit("second");

        // The first apply runs with one request at a time, so it holds the
        // lock long enough for the second to meet it.
        let mut holder =
            common::spawn(fx.cmd("apply", &["--yes", "--ref", &first, "--concurrency", "1"]));
        wait_for_lock(&fx, &runtime, &mut holder);
        let refused = run_expect(
            &mut fx.cmd("apply", &["--yes", "--ref", &second, "--lock-timeout", "0"]),
            1,
        );
        assert!(
            refused.stderr.contains("lock.json is held"),
            "{}",
            refused.stderr
        );
        assert!(refused.stderr.contains("(apply of "), "{}", refused.stderr);
        assert!(
            refused.stderr.contains("r2sync force-unlock"),
            "{}",
            refused.stderr
        );
        let output = holder.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );

        // The bucket is exactly the first commit, and the lock is gone.
        assert_eq!(check_at(&fx, &first), 0);
        assert_eq!(check_at(&fx, &second), 2);
        let listed = runtime.block_on(fx.bucket.list(&fx.prefix));
        assert!(!listed.contains_key(&lock_key(&fx)), "lock left behind");
    }
}

#[test]
fn lock_two_applies_one_commit() {
    let runtime = common::runtime();
    for server in common::servers()
        .into_iter()
        .filter(|server| server.conditional_writes)
    {
        let fx = Fixture::new(&server, "lock-race");
        write_documents(&fx, 150, "alpha");
        fx.repo.write("only-alpha.md", "# Alpha\n");
        let alpha = fx.repo.commit("alpha");
        fx.repo.remove("only-alpha.md");
        write_documents(&fx, 150, "beta");
        fx.repo.write("only-beta.md", "# Beta\n");
        let beta = fx.repo.commit("beta");

        // Both start together and wait for each other as long as needed.
        let a = common::spawn(fx.cmd("apply", &["--yes", "--ref", &alpha, "--concurrency", "2"]));
        let b = common::spawn(fx.cmd("apply", &["--yes", "--ref", &beta, "--concurrency", "2"]));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        for output in [&a, &b] {
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }

        // Never a mix: one commit's check passes, the other's fails.
        let at_alpha = check_at(&fx, &alpha);
        let at_beta = check_at(&fx, &beta);
        assert!(
            (at_alpha, at_beta) == (0, 2) || (at_alpha, at_beta) == (2, 0),
            "check exit codes alpha {at_alpha}, beta {at_beta}"
        );
        let keys = runtime.block_on(fx.bucket.document_keys(&fx.prefix));
        let has_alpha = keys.contains(&fx.key("only-alpha.md"));
        let has_beta = keys.contains(&fx.key("only-beta.md"));
        assert!(
            has_alpha != has_beta,
            "both or neither marker present: {has_alpha} {has_beta}"
        );
        let listed = runtime.block_on(fx.bucket.list(&fx.prefix));
        assert!(!listed.contains_key(&lock_key(&fx)), "lock left behind");
    }
}

/// Builds a lock object as another process would leave it.
fn foreign_lock(id: &str, expires_at: &str) -> String {
    serde_json::json!({
        "format": "r2sync-lock",
        "id": id,
        "holder": "ci@runner-7 (pid 4242)",
        "operation": "apply",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "created_at": "2026-01-01T00:00:00Z",
        "renewed_at": "2026-01-01T00:00:00Z",
        "expires_at": expires_at,
    })
    .to_string()
}

#[test]
fn lock_stale_until_force_unlock() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "lock-stale");
        fx.repo.write("a.md", "# A\n");
        fx.repo.commit("one");
        runtime.block_on(fx.bucket.put_plain(
            &lock_key(&fx),
            foreign_lock("feedc0de00000001", "2099-01-01T00:00:00Z").as_bytes(),
        ));

        // Waiting is bounded by --lock-timeout and the error names the holder.
        let started = Instant::now();
        let refused = run_expect(&mut fx.cmd("apply", &["--yes", "--lock-timeout", "1"]), 1);
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(
            refused.stderr.contains("feedc0de00000001"),
            "{}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains("ci@runner-7 (pid 4242)"),
            "{}",
            refused.stderr
        );
        assert!(
            runtime
                .block_on(fx.bucket.document_keys(&fx.prefix))
                .is_empty(),
            "nothing may be written without the lock"
        );

        // A wrong id removes nothing; the right one frees the target.
        let wrong = run_expect(&mut fx.cmd("force-unlock", &["0000000000000000"]), 1);
        assert!(
            wrong.stderr.contains("feedc0de00000001"),
            "{}",
            wrong.stderr
        );
        let removed = run_expect(&mut fx.cmd("force-unlock", &["feedc0de00000001"]), 0);
        assert!(
            removed.stderr.contains("Removed lock feedc0de00000001"),
            "{}",
            removed.stderr
        );
        run_expect(&mut fx.cmd("apply", &["--yes"]), 0);
        assert_eq!(
            runtime.block_on(fx.bucket.document_keys(&fx.prefix)),
            vec![fx.key("a.md")]
        );
        let none = run_expect(&mut fx.cmd("force-unlock", &["feedc0de00000001"]), 1);
        assert!(none.stderr.contains("no lock is held"), "{}", none.stderr);
    }
}

#[test]
fn lock_expired_replaced() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "lock-expired");
        fx.repo.write("a.md", "# A\n");
        fx.repo.commit("one");
        runtime.block_on(fx.bucket.put_plain(
            &lock_key(&fx),
            foreign_lock("deadbeef00000002", "2026-01-01T00:01:00Z").as_bytes(),
        ));
        let result = run_expect(&mut fx.cmd("apply", &["--yes", "--lock-timeout", "0"]), 0);
        assert!(
            result
                .stderr
                .contains("Replaced an expired lock deadbeef00000002"),
            "{}",
            result.stderr
        );
        let listed = runtime.block_on(fx.bucket.list(&fx.prefix));
        assert!(!listed.contains_key(&lock_key(&fx)), "lock left behind");

        // The warning about conditional writes matches what the server does.
        let warned = result.stderr.contains("ignores conditional writes");
        assert_eq!(warned, !server.conditional_writes, "{}", result.stderr);
    }
}

#[test]
fn lock_released_on_ctrl_c() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "lock-sigint");
        write_documents(&fx, 400, "v1");
        let commit = fx.repo.commit("one");

        let mut child =
            common::spawn(fx.cmd("apply", &["--yes", "--concurrency", "1", "--no-progress"]));
        wait_for_lock(&fx, &runtime, &mut child);
        // Let some documents go up, then interrupt.
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id().to_string();
        let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(kill.success());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() == Some(0) {
            // The apply finished before the signal arrived; nothing to test.
            eprintln!("{}: apply finished before SIGINT", server.name);
            continue;
        }
        assert_eq!(output.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("interrupted"), "{stderr}");

        // The lock is gone, and the manifest lists only what is in place.
        let listed = runtime.block_on(fx.bucket.list(&fx.prefix));
        assert!(!listed.contains_key(&lock_key(&fx)), "lock left behind");
        let documents = runtime.block_on(fx.bucket.document_keys(&fx.prefix));
        assert!(documents.len() < 400, "interrupted apply wrote everything");
        let manifest: serde_json::Value =
            serde_json::from_slice(&runtime.block_on(fx.bucket.get(&fx.manifest_key()))).unwrap();
        let recorded: Vec<String> = manifest["objects"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(recorded, documents, "manifest and bucket disagree");

        // A new apply converges.
        run_expect(&mut fx.cmd("apply", &["--yes"]), 0);
        assert_eq!(check_at(&fx, &commit), 0);
    }
}
