//! r2sync behind tests/servers/fault_proxy.py, which replies to a share of
//! the requests with S3 errors, throttling, connection resets or stalls, or
//! applies the Cloudflare R2 rules that the local servers lack. Every
//! scenario must end with the bucket equal to the commit.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run, run_expect, Bucket, FaultProxy, Fixture, GitRepo, Server};
use serde_json::json;

/// Upper bound of apply runs until one exits 0. With every fault kind on a
/// fifth of the requests, about one in twelve conditional puts, lock writes
/// and bulk deletes meets a reset or stall, which r2sync does not retry.
/// So, as an estimate, one run in six fails even with little left to do.
const MAX_RUNS: usize = 20;

/// One `apply --json` run and its parsed report, when it printed one.
struct ApplyRun {
    code: i32,
    stdout: String,
    stderr: String,
    report: Option<serde_json::Value>,
    seconds: f64,
}

impl ApplyRun {
    /// Returns the HTTP requests the run sent, retries included, by method.
    fn requests(&self) -> BTreeMap<String, u64> {
        let Some(report) = &self.report else {
            return BTreeMap::new();
        };
        report["requests"]
            .as_object()
            .map(|requests| {
                requests
                    .iter()
                    .map(|(method, count)| (method.clone(), count.as_u64().unwrap()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn run_apply(command: &mut Command) -> ApplyRun {
    let started = Instant::now();
    let result = run(command);
    let report = serde_json::from_str(&result.stdout).ok();
    ApplyRun {
        code: result.code,
        stdout: result.stdout,
        stderr: result.stderr,
        report,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Checks that a failed run exits 1 and names each failed key on stderr.
fn assert_failure_reported(attempt: &ApplyRun, label: &str) {
    assert_eq!(
        attempt.code, 1,
        "{label}: a failed apply must exit 1\n--- stdout\n{}\n--- stderr\n{}",
        attempt.stdout, attempt.stderr
    );
    match &attempt.report {
        Some(report) => {
            let failures = report["failures"].as_array().unwrap();
            assert!(
                !failures.is_empty(),
                "{label}: apply exited 1 with no failure in its report: {report}"
            );
            for failure in failures {
                let key = failure["key"].as_str().unwrap();
                assert!(
                    attempt.stderr.contains(key),
                    "{label}: failed key {key} is not named on stderr:\n{}",
                    attempt.stderr
                );
            }
        }
        // Errors before the first write (listing, lock) print no report.
        None => assert!(
            attempt.stderr.contains("error:"),
            "{label}: apply exited 1 without an error message:\n{}",
            attempt.stderr
        ),
    }
}

/// Runs the apply from `make` until it exits 0, at most MAX_RUNS times, and
/// returns every run. Each failed run must exit 1 and name its failed keys.
fn apply_until_converged(make: impl Fn() -> Command, label: &str) -> Vec<ApplyRun> {
    let mut runs = Vec::new();
    for number in 1..=MAX_RUNS {
        let attempt = run_apply(&mut make());
        if attempt.code == 0 {
            if let Some(report) = &attempt.report {
                assert_eq!(
                    report["failures"].as_array().map(Vec::len),
                    Some(0),
                    "{label}: apply exited 0 with failures: {report}"
                );
            }
            runs.push(attempt);
            return runs;
        }
        assert_failure_reported(&attempt, &format!("{label} run {number}"));
        runs.push(attempt);
    }
    let summary: Vec<String> = runs.iter().map(describe_failed_run).collect();
    panic!(
        "{label}: apply did not converge in {MAX_RUNS} runs:\n{}\n--- last stderr\n{}",
        summary.join("\n"),
        runs.last().unwrap().stderr
    );
}

/// Formats one line about a failed run: its duration, how many error lines
/// it printed and the first of them.
fn describe_failed_run(attempt: &ApplyRun) -> String {
    let errors: Vec<&str> = attempt
        .stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    format!(
        "  failed run ({:.1} s, {} errors): {}",
        attempt.seconds,
        errors.len(),
        errors.first().unwrap_or(&"(no error line)")
    )
}

/// Builds `r2sync SUBCOMMAND --repo REPO --target TARGET ARGS...` for the
/// fixture's repository and prefix, sent to `server` (the proxy, usually).
fn command_via(fx: &Fixture, server: &Server, subcommand: &str, args: &[&str]) -> Command {
    let mut command = common::r2sync(Some(server), fx.workdir.path());
    command
        .arg(subcommand)
        .arg("--repo")
        .arg(fx.repo.path())
        .arg("--target")
        .arg(common::target(server, &fx.prefix))
        .args(args);
    command
}

/// Writes pages `pages/page-NNN.md` with front matter and a body of a few
/// hundred bytes that depends on `version`.
fn write_pages(repo: &GitRepo, indexes: std::ops::Range<usize>, version: &str) {
    for index in indexes {
        let body = format!("{version} text of page {index}. ").repeat(12);
        repo.write(
            &format!("pages/page-{index:03}.md"),
            format!("---\ntitle: Page {index}\n---\n# Page {index}\n\n{body}\n"),
        );
    }
}

fn lock_key(prefix: &str) -> String {
    format!("{prefix}/.r2sync/lock.json")
}

/// Polls the bucket until `key` exists. Fails if `child` ends first or
/// after 30 s.
fn wait_for_key(
    bucket: &Bucket,
    runtime: &tokio::runtime::Runtime,
    prefix: &str,
    key: &str,
    child: &mut common::Spawned,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if runtime.block_on(bucket.list(prefix)).contains_key(key) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("apply ended ({status}) before {key} appeared");
        }
        assert!(Instant::now() < deadline, "{key} never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Decodes the `%XX` escapes of a request path.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&path[index + 1..index + 3], 16) {
                decoded.push(byte);
                index += 3;
                continue;
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8(decoded).unwrap()
}

/// Document keys under `prefix` that got one of `faults` on a PUT, from the
/// proxy's request log. Copies (PUT with a copy source) look the same in
/// the log, but their keys lie below `.r2sync/` and are left out.
fn faulted_puts(log: &str, bucket: &str, prefix: &str, faults: &[&str]) -> BTreeSet<String> {
    let bucket_path = format!("/{bucket}/");
    let internal = format!("{prefix}/.r2sync/");
    log.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (method, target, outcome) = (fields.next()?, fields.next()?, fields.next()?);
            if method != "PUT" || !faults.iter().any(|kind| outcome == format!("fault={kind}")) {
                return None;
            }
            let path = target.split('?').next()?;
            let key = percent_decode(path.strip_prefix(&bucket_path)?);
            (key.starts_with(&format!("{prefix}/")) && !key.starts_with(&internal)).then_some(key)
        })
        .collect()
}

/// Total of a JSON object of counters.
fn total(counters: &serde_json::Value) -> u64 {
    counters
        .as_object()
        .map(|counters| counters.values().filter_map(|count| count.as_u64()).sum())
        .unwrap_or(0)
}

/// Sums the request counters of several runs.
fn sum_requests(runs: &[ApplyRun]) -> BTreeMap<String, u64> {
    let mut sum = BTreeMap::new();
    for attempt in runs {
        for (method, count) in attempt.requests() {
            *sum.entry(method).or_default() += count;
        }
    }
    sum
}

// ---- Convergence of the hugo-docs history under random faults ----

/// Commit ids of the bundle's main branch, oldest first.
fn corpus_commits(clone: &Path) -> Vec<String> {
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
/// to keys under `prefix`.
fn corpus_keys(clone: &Path, commit: &str, prefix: &str) -> BTreeSet<String> {
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
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|path| {
            let lower = path.to_lowercase();
            lower.ends_with(".md") || lower.ends_with(".markdown")
        })
        .map(|path| format!("{prefix}/{}", path.strip_prefix("content/").unwrap()))
        .collect()
}

/// Archived copies under `prefix`, by key below the prefix: the path after
/// `.r2sync/archive/STAMP/`.
fn archived_copies(
    listing: &BTreeMap<String, common::ListedObject>,
    prefix: &str,
) -> BTreeMap<String, Vec<String>> {
    let root = format!("{prefix}/.r2sync/archive/");
    let mut copies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in listing.keys() {
        if let Some((_stamp, path)) = key
            .strip_prefix(&root)
            .and_then(|rest| rest.split_once('/'))
        {
            copies
                .entry(path.to_string())
                .or_default()
                .push(key.clone());
        }
    }
    copies
}

/// Fails unless the body of `key` hashes to its `r2sync-body` metadata,
/// so the object was stored whole.
fn assert_body_whole(bucket: &Bucket, runtime: &tokio::runtime::Runtime, key: &str) {
    let metadata = runtime.block_on(bucket.metadata(key));
    let body = runtime.block_on(bucket.get(key));
    assert_eq!(
        Some(&blake3::hash(&body).to_hex().to_string()),
        metadata.get("r2sync-body"),
        "{key}: body does not match its r2sync-body hash"
    );
}

/// Commits of the corpus synced in turn: the first (755 documents), the
/// fifth (104 of those documents removed or renamed, 307 added), and the
/// last. Each lock left by a lost response costs 60 s, so all 11 commits
/// take several minutes.
const STEPS: [usize; 3] = [0, 4, 10];

#[test]
fn hugo_history_converges_under_faults() {
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
    let history = corpus_commits(clone.path());
    assert_eq!(history.len(), 11, "the corpus has 11 commits");

    let runtime = common::runtime();
    for (index, server) in common::servers().into_iter().enumerate() {
        let seed = (17 + index).to_string();
        // Every fault kind on a fifth of the requests. Stalls last 3 s and
        // r2sync gives up on an attempt after 2 s, so a stall costs little.
        let proxy = FaultProxy::start(
            &server.endpoint,
            &["--rate", "0.2", "--seed", &seed, "--stall-seconds", "3"],
        );
        let through_proxy = proxy.server(&server);
        let bucket = Bucket::new(&server);
        let prefix = common::unique_prefix("faults-hugo");
        let workdir = tempfile::tempdir().unwrap();
        let command = |via: &Server, subcommand: &str, commit: &str, args: &[&str]| {
            let mut command = common::r2sync(Some(via), workdir.path());
            command
                .arg(subcommand)
                .arg("--repo")
                .arg(clone.path())
                .args(["--ref", commit, "--root", "content"])
                .arg("--target")
                .arg(common::target(via, &prefix))
                .args(args);
            command
        };

        let started = Instant::now();
        let mut previous_keys = BTreeSet::new();
        let mut archive_seen: BTreeSet<String> = BTreeSet::new();
        let mut lock_waits = 0;
        for step in STEPS {
            let commit = &history[step];
            let label = format!("{} step {step}", server.name);
            proxy.reset_stats();
            let log_start = proxy.request_log().len();
            let runs = apply_until_converged(
                || {
                    command(
                        &through_proxy,
                        "apply",
                        commit,
                        &[
                            "--yes",
                            "--json",
                            "--timeout",
                            "2",
                            "--max-backoff",
                            "2",
                            // A lost response to the lock's create leaves a
                            // lock that expires after 60 s.
                            "--lock-timeout",
                            "120",
                        ],
                    )
                },
                &label,
            );
            lock_waits += runs
                .iter()
                .filter(|attempt| attempt.stderr.contains("Waiting up to"))
                .count();

            // The bucket, read directly, is exactly the commit.
            run_expect(&mut command(&server, "check", commit, &[]), 0);
            let keys = corpus_keys(clone.path(), commit, &prefix);
            let listed: BTreeSet<String> = runtime
                .block_on(bucket.document_keys(&prefix))
                .into_iter()
                .collect();
            assert_eq!(
                listed, keys,
                "{label}: document keys differ from the commit"
            );

            // Every document whose upload met a fault and that the commit
            // still has is whole.
            let log = proxy.request_log();
            let faulted = faulted_puts(
                &log[log_start..],
                &server.bucket,
                &prefix,
                &[
                    "reset-before",
                    "reset-after",
                    "stall",
                    "500",
                    "503",
                    "429",
                    "429-retry-after",
                ],
            );
            for key in faulted.intersection(&keys) {
                assert_body_whole(&bucket, &runtime, key);
            }

            // Removed documents have an archived copy, and no copy seen
            // before has gone.
            let listing = runtime.block_on(bucket.list(&prefix));
            let copies = archived_copies(&listing, &prefix);
            for removed in previous_keys.difference(&keys) {
                let path = removed.strip_prefix(&format!("{prefix}/")).unwrap();
                assert!(
                    copies.contains_key(path),
                    "{label}: {removed} was removed without an archived copy"
                );
            }
            let archive_now: BTreeSet<String> = copies.values().flatten().cloned().collect();
            let lost: Vec<&String> = archive_seen.difference(&archive_now).collect();
            assert!(
                lost.is_empty(),
                "{label}: archived copies disappeared: {lost:?}"
            );
            let stats = proxy.stats();
            eprintln!(
                "{label}: {} documents, {} archived copies, {} runs ({} s each), \
                 r2sync requests {:?}, proxy requests {} with faults {}, {} faulted uploads checked",
                keys.len(),
                archive_now.len(),
                runs.len(),
                runs.iter().map(|attempt| format!("{:.1}", attempt.seconds)).collect::<Vec<_>>().join("/"),
                sum_requests(&runs),
                stats["requests_total"],
                stats["faults"],
                faulted.intersection(&keys).count(),
            );
            for attempt in runs.iter().filter(|attempt| attempt.code != 0) {
                eprintln!("{}", describe_failed_run(attempt));
            }
            previous_keys = keys;
            archive_seen = archive_now;
        }
        eprintln!(
            "{}: {} commits converged in {:.0} s; {lock_waits} runs waited for a lock left by an earlier run",
            server.name,
            STEPS.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

// ---- Lost responses ----

/// Keys that r2sync confirmed with HEAD after a failed put, from its
/// `-v` log lines `put KEY reported "...", but the object is in place`.
fn confirmed_keys(stderr: &str) -> BTreeSet<String> {
    stderr
        .lines()
        .filter(|line| line.contains("but the object is in place as planned"))
        .filter_map(|line| {
            let end = line.find(" reported \"")?;
            let start = line[..end].rfind("put ")? + "put ".len();
            Some(line[start..end].to_string())
        })
        .collect()
}

#[test]
fn lost_put_responses_count_as_written() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "faults-ambiguous");
        write_pages(&fx.repo, 0..300, "first");
        let first = fx.repo.commit("first");
        write_pages(&fx.repo, 0..300, "second");
        let second = fx.repo.commit("second");

        // Every faulted request reaches the server, and only its response is
        // replaced by a connection reset.
        let proxy = FaultProxy::start(
            &server.endpoint,
            &["--faults", "reset-after", "--rate", "0", "--seed", "5"],
        );
        let through_proxy = proxy.server(&server);
        for (commit, counter) in [(&first, "created"), (&second, "updated")] {
            let label = format!("{} {counter}", server.name);
            let log_start = proxy.request_log().len();
            let mut child = common::spawn(command_via(
                &fx,
                &through_proxy,
                "apply",
                &[
                    "--yes",
                    "--json",
                    "-v",
                    "--ref",
                    commit,
                    "--concurrency",
                    "4",
                    "--retries",
                    "10",
                ],
            ));

            // Faults start once the lock is held, so that they hit the
            // document uploads and not the lock's own create.
            wait_for_key(
                &fx.bucket,
                &runtime,
                &fx.prefix,
                &lock_key(&fx.prefix),
                &mut child,
            );
            proxy.configure(json!({"rate": 0.3}));
            let output = child.wait_with_output().unwrap();
            proxy.configure(json!({"rate": 0.0}));
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(0), "{label}:\n{stderr}");
            let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(report["failures"], json!([]), "{label}");
            assert_eq!(report[counter], 300, "{label}: {report}");

            // Each upload whose response was lost was confirmed by HEAD.
            let reset = faulted_puts(
                &proxy.request_log()[log_start..],
                &server.bucket,
                &fx.prefix,
                &["reset-after"],
            );
            let confirmed = confirmed_keys(&stderr);
            assert!(!reset.is_empty(), "{label}: no upload lost its response");
            assert!(
                !confirmed.is_empty(),
                "{label}: no upload was confirmed by HEAD"
            );
            let unexpected: Vec<&String> = confirmed.difference(&reset).collect();
            assert!(
                unexpected.is_empty(),
                "{label}: confirmed without a lost response: {unexpected:?}"
            );
            let desired = common::desired_state(fx.repo.path(), commit, "", &fx.prefix);
            for key in &reset {
                let metadata = runtime.block_on(fx.bucket.metadata(key));
                assert_eq!(
                    metadata.get("r2sync-hash"),
                    Some(&desired.objects[key].fingerprint.hash),
                    "{label}: {key}"
                );
            }
            eprintln!(
                "{label}: {} uploads lost their response, {} confirmed by HEAD, requests {}",
                reset.len(),
                confirmed.len(),
                report["requests"]
            );

            // The manifest recorded the confirmed ETags, so a direct apply has
            // nothing to write, and check agrees.
            run_expect(&mut fx.cmd("check", &["--ref", commit]), 0);
            let again = fx.apply_json(&["--ref", commit]);
            assert_eq!(common::writes(&again), 0, "{label}: {again}");
        }
    }
}

#[test]
fn lost_lock_response_leaves_no_lock() {
    let runtime = common::runtime();
    for server in common::servers() {
        let proxy = FaultProxy::start(
            &server.endpoint,
            &["--faults", "reset-after", "--rate", "0.5"],
        );
        let through_proxy = proxy.server(&server);
        let mut tested = false;
        for seed in 0..40 {
            let fx = Fixture::new(&server, "faults-lock-loss");
            write_pages(&fx.repo, 0..3, "only");
            fx.repo.commit("only");
            proxy.configure(json!({"seed": seed}));
            let log_start = proxy.request_log().len();
            let attempt = run(&mut command_via(
                &fx,
                &through_proxy,
                "apply",
                &["--yes", "--lock-timeout", "0", "--retries", "10"],
            ));

            // Only a run whose lock create reached the server and lost its
            // response tests this.
            let lock_path = format!("/{}/{} ", server.bucket, lock_key(&fx.prefix));
            let lost = proxy.request_log()[log_start..].lines().any(|line| {
                line.starts_with(&format!("PUT {lock_path}")) && line.contains("fault=reset-after")
            });
            if !lost {
                continue;
            }
            tested = true;

            let listing = runtime.block_on(fx.bucket.list(&fx.prefix));
            assert!(
                attempt.code == 0 || !listing.contains_key(&lock_key(&fx.prefix)),
                "{}: apply exited {} after the response to its lock create was lost, and \
                 left that lock in the bucket, so every apply waits until it expires\n{}",
                server.name,
                attempt.code,
                attempt.stderr
            );
            let next = run(&mut fx.cmd("apply", &["--yes", "--lock-timeout", "0"]));
            assert_eq!(
                next.code, 0,
                "{}: the next apply failed:\n{}",
                server.name, next.stderr
            );
            break;
        }
        assert!(
            tested,
            "{}: no lock create lost its response in 40 runs",
            server.name
        );
    }
}

/// Polls the proxy's request log from `start` until a line matches, for at
/// most `limit`.
fn wait_for_log_line(
    proxy: &FaultProxy,
    start: usize,
    limit: Duration,
    matches: impl Fn(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if proxy.request_log()[start..].lines().any(&matches) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn lost_renewal_response_keeps_the_lock() {
    let runtime = common::runtime();
    // Only a server that enforces If-Match can reject the next renewal.
    for server in common::servers()
        .into_iter()
        .filter(|server| server.conditional_writes)
    {
        let fx = Fixture::new(&server, "faults-renewal");
        write_pages(&fx.repo, 0..300, "only");
        let commit = fx.repo.commit("only");
        let proxy = FaultProxy::start(&server.endpoint, &["--rate", "0"]);
        let through_proxy = proxy.server(&server);
        let mut child = common::spawn(command_via(
            &fx,
            &through_proxy,
            "apply",
            &[
                "--yes",
                "--concurrency",
                "1",
                "--retries",
                "1000",
                "--max-backoff",
                "1",
                "--retry-timeout",
                "300",
            ],
        ));

        // As soon as the lock is taken, throttling every request keeps the
        // apply running, retrying about once a second, past two renewals
        // (every 20 s).
        let lock_put = format!("PUT /{}/{} ", server.bucket, lock_key(&fx.prefix));
        let locked = wait_for_log_line(&proxy, 0, Duration::from_secs(30), |line| {
            line.starts_with(&lock_put) && line.split_whitespace().nth(2) == Some("200")
        });
        let log_start = proxy.request_log().len();
        proxy.configure(json!({"faults": ["429"], "rate": 1.0}));
        let locked_at = Instant::now();
        assert!(locked, "{}: the apply took no lock", server.name);
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}: the apply ended",
            server.name
        );

        // The first renewal, retried after 429, reaches the server, but its
        // response is lost.
        let first = wait_for_log_line(&proxy, log_start, Duration::from_secs(40), |line| {
            line.starts_with(&lock_put) && line.contains("fault=429")
        });
        let log_start = proxy.request_log().len();
        proxy.configure(json!({"faults": ["reset-after"]}));
        let lost = wait_for_log_line(&proxy, log_start, Duration::from_secs(10), |line| {
            line.starts_with(&lock_put) && line.contains("fault=reset-after")
        });
        let log_start = proxy.request_log().len();
        proxy.configure(json!({"faults": ["429"]}));
        assert!(
            first,
            "{}: no renewal in {:?}",
            server.name,
            locked_at.elapsed()
        );
        assert!(lost, "{}: the renewal was not reset", server.name);

        // After the unclear outcome r2sync reads the lock back to see whose
        // it is; once that read has been throttled, every request goes
        // through again.
        let lock_get = format!("GET /{}/{} ", server.bucket, lock_key(&fx.prefix));
        let read_back = wait_for_log_line(&proxy, log_start, Duration::from_secs(40), |line| {
            line.starts_with(&lock_get) && line.contains("fault=429")
        });
        proxy.configure(json!({"rate": 0.0}));
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            read_back,
            "{}: the lock was not read back:\n{stderr}",
            server.name
        );

        // The lock is still this run's own, so the apply finishes and removes it.
        assert!(
            !stderr.contains("lost lock"),
            "{}: r2sync took its own renewal for another run's lock:\n{stderr}",
            server.name
        );
        assert_eq!(output.status.code(), Some(0), "{}:\n{stderr}", server.name);
        let listing = runtime.block_on(fx.bucket.list(&fx.prefix));
        assert!(
            !listing.contains_key(&lock_key(&fx.prefix)),
            "{}: the apply left its lock:\n{stderr}",
            server.name
        );
        run_expect(&mut fx.cmd("check", &["--ref", &commit]), 0);
    }
}

#[test]
fn throttling_with_retry_after_converges() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "faults-throttle");
        write_pages(&fx.repo, 0..300, "only");
        let commit = fx.repo.commit("only");
        let proxy = FaultProxy::start(
            &server.endpoint,
            &[
                "--faults",
                "429-retry-after",
                "--rate",
                "0.5",
                "--seed",
                "9",
            ],
        );
        let through_proxy = proxy.server(&server);
        let label = format!("{} throttled", server.name);
        let runs = apply_until_converged(
            || command_via(&fx, &through_proxy, "apply", &["--yes", "--json", "-v"]),
            &label,
        );

        let stats = proxy.stats();
        let throttled = stats["faults"]["429-retry-after"].as_u64().unwrap();
        assert!(throttled > 0, "{label}: no request was throttled: {stats}");

        // Retries are logged by the S3 client with the status and counted in
        // the report, so r2sync counts as many requests as the proxy saw.
        let retry_lines: usize = runs
            .iter()
            .map(|attempt| {
                attempt
                    .stderr
                    .lines()
                    .filter(|line| line.contains("429") && line.contains("retry "))
                    .count()
            })
            .sum();
        assert!(
            retry_lines > 0,
            "{label}: no retry in the log:\n{}",
            runs[0].stderr
        );
        let requests = sum_requests(&runs);
        if runs.iter().all(|attempt| attempt.report.is_some()) {
            assert_eq!(
                requests.values().sum::<u64>(),
                stats["requests_total"].as_u64().unwrap(),
                "{label}: r2sync counted {requests:?}, the proxy {stats}"
            );
        }
        eprintln!(
            "{label}: {} runs, {throttled} responses 429 with Retry-After, {retry_lines} retries logged, \
             r2sync requests {requests:?}, proxy requests {}",
            runs.len(),
            stats["requests_total"]
        );

        run_expect(&mut fx.cmd("check", &["--ref", &commit]), 0);
        let keys = runtime.block_on(fx.bucket.document_keys(&fx.prefix));
        assert_eq!(keys.len(), 300, "{label}");
    }
}

// ---- Cloudflare R2 emulation ----

#[test]
fn r2_if_match_on_missing_key_recovers() {
    let runtime = common::runtime();
    // moto enforces If-Match, but Garage would write the object anyway.
    for server in common::servers()
        .into_iter()
        .filter(|server| server.conditional_writes)
    {
        let mut tested = false;
        for _ in 0..3 {
            let fx = Fixture::new(&server, "faults-r2-412");
            write_pages(&fx.repo, 0..300, "first");
            let first = fx.repo.commit("first");
            write_pages(&fx.repo, 0..300, "second");
            let second = fx.repo.commit("second");
            run_expect(&mut fx.cmd("apply", &["--yes", "--ref", &first]), 0);

            // While the updates run one at a time, the last page is deleted
            // behind r2sync's back, so its update meets a missing key.
            let proxy = FaultProxy::start(&server.endpoint, &["--r2"]);
            let through_proxy = proxy.server(&server);
            let mut child = common::spawn(command_via(
                &fx,
                &through_proxy,
                "apply",
                &["--yes", "--ref", &second, "--concurrency", "1"],
            ));
            wait_for_key(
                &fx.bucket,
                &runtime,
                &fx.prefix,
                &lock_key(&fx.prefix),
                &mut child,
            );
            let victim = fx.key("pages/page-299.md");
            runtime.block_on(fx.bucket.delete(&victim));
            let output = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let answered_412 = proxy
                .request_log()
                .lines()
                .any(|line| line.starts_with(&format!("PUT /{}/{victim} r2=412", server.bucket)));
            if output.status.code() == Some(0) && !answered_412 {
                eprintln!(
                    "{}: the update of {victim} ran before the delete; again",
                    server.name
                );
                continue;
            }
            tested = true;

            // R2 returns 412, and r2sync names the key and stops.
            assert!(
                answered_412,
                "{}: no 412 for {victim}:\n{}",
                server.name,
                proxy.request_log()
            );
            assert_eq!(output.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains(&victim), "{stderr}");
            assert!(stderr.contains("precondition failed"), "{stderr}");

            // The next apply creates the missing page and ends. The one after
            // has nothing to do.
            let again = run_apply(&mut command_via(
                &fx,
                &through_proxy,
                "apply",
                &["--yes", "--json", "--ref", &second],
            ));
            assert_eq!(again.code, 0, "{}", again.stderr);
            let report = again.report.unwrap();
            assert_eq!(report["created"], 1, "{report}");
            assert_eq!(report["updated"], 0, "{report}");
            run_expect(&mut fx.cmd("check", &["--ref", &second]), 0);
            let last = fx.apply_json(&["--ref", &second]);
            assert_eq!(common::writes(&last), 0, "{last}");
            break;
        }
        assert!(
            tested,
            "{}: the delete never came before the update",
            server.name
        );
    }
}

#[test]
fn r2_throttles_rewrites_within_a_second() {
    for server in common::servers() {
        let fx = Fixture::new(&server, "faults-r2-429");
        let mut commits = Vec::new();
        for version in ["first", "second", "third"] {
            write_pages(&fx.repo, 0..20, version);
            commits.push(fx.repo.commit(version));
        }
        let proxy = FaultProxy::start(&server.endpoint, &["--r2"]);
        let through_proxy = proxy.server(&server);
        // Ten retries pause at least 1 s in all, because no pause is shorter
        // than 100 ms, so they outlast R2's window. The default five pause
        // at least 0.5 s and can give up inside it.
        let apply = |commit: &str| {
            run_apply(&mut command_via(
                &fx,
                &through_proxy,
                "apply",
                &["--yes", "--json", "--ref", commit, "--retries", "10"],
            ))
        };

        // A second apply right after the first rewrites the lock and every
        // page within a second. R2 throttles these writes, and r2sync retries
        // until they go through.
        let first = apply(&commits[0]);
        assert_eq!(first.code, 0, "{}", first.stderr);
        let second = apply(&commits[1]);
        let throttled = proxy.stats()["r2"]["429"].as_u64().unwrap();
        assert!(throttled > 0, "{}: nothing was throttled", server.name);
        assert_eq!(
            second.code, 0,
            "{}: the apply failed on {throttled} throttled writes:\n{}",
            server.name, second.stderr
        );
        run_expect(&mut fx.cmd("check", &["--ref", &commits[1]]), 0);

        // One apply writes each key once: the lock at its start (and on
        // renewal every 20 s), each page, then the manifest. So an apply
        // more than a second after the last one is never throttled.
        std::thread::sleep(Duration::from_millis(1100));
        proxy.reset_stats();
        let third = apply(&commits[2]);
        assert_eq!(third.code, 0, "{}", third.stderr);
        let stats = proxy.stats();
        assert_eq!(stats["r2"]["429"], 0, "{}: {stats}", server.name);
        run_expect(&mut fx.cmd("check", &["--ref", &commits[2]]), 0);
        eprintln!(
            "{}: {throttled} writes throttled in the quick second apply, which made {} requests",
            server.name,
            total(&second.report.unwrap()["requests"])
        );
    }
}

/// Sends one unsigned request to the proxy and returns the status line.
fn raw_request(port: u16, method: &str, target: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

#[test]
fn r2sync_never_sends_object_tagging() {
    for server in common::servers() {
        let fx = Fixture::new(&server, "faults-r2-501");
        write_pages(&fx.repo, 0..10, "first");
        let first = fx.repo.commit("first");
        write_pages(&fx.repo, 0..5, "second");
        for index in 5..10 {
            fx.repo.remove(&format!("pages/page-{index:03}.md"));
        }
        let second = fx.repo.commit("second");
        let proxy = FaultProxy::start(&server.endpoint, &["--r2"]);
        let through_proxy = proxy.server(&server);

        // Creates, updates, archive copies and deletes. The pause keeps the
        // second apply out of R2's one-write-per-second window for the keys
        // the first one wrote.
        for commit in [&first, &second] {
            std::thread::sleep(Duration::from_millis(1100));
            let attempt = run_apply(&mut command_via(
                &fx,
                &through_proxy,
                "apply",
                &["--yes", "--json", "--ref", commit],
            ));
            assert_eq!(attempt.code, 0, "{}", attempt.stderr);
        }
        let stats = proxy.stats();
        assert!(stats["requests"]["PUT"].as_u64().unwrap() >= 15, "{stats}");
        assert_eq!(stats["r2"]["501"], 0, "{}: {stats}", server.name);

        // The counter does count a tagging request.
        let status = raw_request(
            proxy.port,
            "GET",
            &format!("/{}/{}?tagging", server.bucket, fx.key("pages/page-000.md")),
        );
        assert!(status.contains(" 501 "), "{status}");
        assert_eq!(proxy.stats()["r2"]["501"], 1);
    }
}
