//! Operations features: init, completions, the man page, Markdown plans,
//! JSON logs, the examples, and doctor against the real S3 servers.

mod common;

use std::path::Path;

use common::{run_expect, Fixture, GitRepo};

#[test]
fn init_writes_starter_files_once() {
    let repo = GitRepo::new();
    repo.write("a.md", "# A\n");
    repo.commit("first");

    let first = run_expect(common::r2sync(None, repo.path()).arg("init"), 0);
    assert!(first.stderr.contains("Next steps"), "{}", first.stderr);
    assert!(repo.path().join("r2sync.toml").is_file());
    assert!(repo.path().join(".env.example").is_file());

    // The starter file is valid as written: plan runs with it.
    run_expect(common::r2sync(None, repo.path()).arg("plan"), 0);

    let again = run_expect(common::r2sync(None, repo.path()).arg("init"), 1);
    assert!(
        again.stderr.contains("already exists; pass --force"),
        "{}",
        again.stderr
    );
    run_expect(
        common::r2sync(None, repo.path()).args(["init", "--force"]),
        0,
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let result = run_expect(
            common::r2sync(None, dir.path()).args(["completions", shell]),
            0,
        );
        assert!(
            result.stdout.contains("sync-cloudflare-r2"),
            "{shell}: {}",
            result.stdout.len()
        );
        assert!(result.stdout.contains("detailed-exitcode"), "{shell}");
    }
    let pages = dir.path().join("man");
    run_expect(
        common::r2sync(None, dir.path())
            .args(["man", "--dir"])
            .arg(&pages),
        0,
    );
    for page in [
        "r2sync.1",
        "r2sync-plan.1",
        "r2sync-apply.1",
        "r2sync-check.1",
        "r2sync-doctor.1",
    ] {
        assert!(pages.join(page).is_file(), "{page} missing");
    }
    let man = run_expect(common::r2sync(None, dir.path()).arg("man"), 0);

    // A reader that is gone (here before the first write) ends the output
    // quietly, with success.
    let binary = assert_cmd::cargo::cargo_bin("r2sync");
    let piped = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; sleep 0; '{}' man | true",
            binary.display()
        ))
        .output()
        .unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    assert!(man.stdout.contains("r2sync"));
}

#[test]
fn markdown_plan_and_json_logs() {
    let repo = GitRepo::new();
    repo.write("docs/a.md", "# A\n");
    repo.write("docs/b.md", "# B\n");
    repo.commit("first");
    let out = tempfile::tempdir().unwrap();
    let target = format!("file://{}", out.path().display());

    let markdown = run_expect(
        common::r2sync(None, repo.path())
            .args(["plan", "--format", "markdown", "--target", &target]),
        0,
    );
    assert!(
        markdown.stdout.starts_with("### r2sync plan"),
        "{}",
        markdown.stdout
    );
    assert!(
        markdown
            .stdout
            .contains("| + | `docs/a.md` | create (4 B) |"),
        "{}",
        markdown.stdout
    );

    let apply = run_expect(
        common::r2sync(None, repo.path()).args([
            "--log-format",
            "json",
            "apply",
            "--yes",
            "--target",
            &target,
        ]),
        0,
    );
    let events: Vec<serde_json::Value> = apply
        .stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    let puts: Vec<&serde_json::Value> = events
        .iter()
        .filter(|event| event["fields"]["action"] == "put")
        .collect();
    assert_eq!(puts.len(), 2, "{events:?}");
    assert_eq!(puts[0]["span"]["bytes"], 4);
    assert!(puts[0]["fields"]["latency_ms"].is_u64());
    let summary = events
        .iter()
        .find(|event| event["fields"]["event"] == "summary")
        .expect("a summary event");
    assert_eq!(summary["fields"]["created"], 2);
    assert!(summary["fields"]["elapsed_ms"].is_u64());
}

/// Lines of an example that run r2sync, without the leading `run:` or path.
fn r2sync_commands(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|line| {
            let start = line.find("r2sync ")?;
            let before = &line[..start];
            // Only invocations: at the start of a command, after a path or
            // `&&`, not names such as `r2sync-sync.timer`.
            if !(before.trim().is_empty()
                || before.ends_with('/')
                || before.trim_end().ends_with("&&")
                || before.trim_end().ends_with("run:")
                || before.trim_end().ends_with("ExecStart=/usr/local/bin/"))
            {
                return None;
            }
            let words: Vec<String> = line[start..]
                .split_whitespace()
                .take_while(|word| !matches!(*word, "|" | "||" | ">" | ">>" | "&&" | "2>&1"))
                .map(str::to_string)
                .collect();
            Some(words)
        })
        .collect()
}

#[test]
fn examples_parse_and_match_the_cli() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dir = tempfile::tempdir().unwrap();
    let mut commands = 0;
    for file in [
        "github-actions/publish.yml",
        "github-actions/drift-check.yml",
        "cron/r2sync.cron",
        "systemd/r2sync-sync.service",
    ] {
        let text = std::fs::read_to_string(examples.join(file)).unwrap();
        if file.ends_with(".yml") {
            let workflow: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&text).unwrap_or_else(|err| panic!("{file}: {err}"));
            assert!(workflow.get("jobs").is_some(), "{file} has no jobs");
            assert!(workflow.get("on").is_some(), "{file} has no triggers");
        }

        for words in r2sync_commands(&text) {
            let subcommand = words.get(1).filter(|word| !word.starts_with('-')).cloned();
            let subcommand = subcommand.unwrap_or_else(|| {
                words[1..]
                    .iter()
                    .find(|word| !word.starts_with('-'))
                    .cloned()
                    .unwrap()
            });
            let help = run_expect(
                common::r2sync(None, dir.path()).args([&subcommand, "--help"]),
                0,
            )
            .stdout;
            let global = run_expect(common::r2sync(None, dir.path()).arg("--help"), 0).stdout;
            for flag in words.iter().filter(|word| word.starts_with("--")) {
                let flag = flag.split('=').next().unwrap();
                assert!(
                    help.contains(flag) || global.contains(flag),
                    "{file}: `r2sync {subcommand}` has no option {flag}"
                );
            }
            commands += 1;
        }
    }
    assert!(
        commands >= 6,
        "only {commands} r2sync commands found in the examples"
    );
}

#[test]
fn doctor_checks_each_server_and_cleans_up() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "doctor");
        let result = run_expect(&mut fx.cmd("doctor", &["--json"]), 0);
        let report: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
        let checks = report["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 7, "{report}");
        for check in checks {
            let name = check["name"].as_str().unwrap();
            let status = check["status"].as_str().unwrap();
            let expected = if name.starts_with("conditional") && !server.conditional_writes {
                "warning"
            } else {
                "ok"
            };
            assert_eq!(
                status, expected,
                "{}: {name}: {}",
                server.name, check["detail"]
            );
        }
        assert!(
            runtime.block_on(fx.bucket.list(&fx.prefix)).is_empty(),
            "{}: doctor left objects behind",
            server.name
        );
    }
}

#[test]
fn json_logs_number_attempts_on_servers() {
    for server in common::servers() {
        let fx = Fixture::new(&server, "json-logs");
        fx.repo.write("a.md", "# A\n");
        fx.repo.commit("one");
        let mut command = common::r2sync(Some(&server), fx.workdir.path());
        command
            .args(["--log-format", "json", "apply", "--yes", "--repo"])
            .arg(fx.repo.path())
            .args(["--target", &common::target(&server, &fx.prefix)]);
        let result = run_expect(&mut command, 0);
        let put = result
            .stderr
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .find(|event| event["fields"]["action"] == "put")
            .expect("a put event");
        assert_eq!(put["fields"]["attempt"], 1, "{}: {put}", server.name);
        assert_eq!(put["span"]["key"], fx.key("a.md"));
        assert_eq!(put["span"]["bytes"], 4);
    }
}

#[test]
fn secret_scan_catches_leaks() {
    // The scan that every command's output goes through must notice a
    // secret, or the trace-level pass of the suite proves nothing.
    for server in common::servers() {
        if server.secret_access_key.len() < 12 {
            continue;
        }
        let leaked = format!("header x-secret: {} end", server.secret_access_key);
        let caught = std::panic::catch_unwind(|| common::assert_no_secret(&leaked, "output"));
        assert!(
            caught.is_err(),
            "{}: the scan missed the secret",
            server.name
        );
        common::assert_no_secret("nothing to see", "output");
    }
}
