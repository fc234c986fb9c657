//! Credentials never appear in r2sync's output. Every subcommand runs at
//! trace level, with text and with JSON logs, and with a secret access key,
//! a session token and a Git token in its environment. Neither stdout nor
//! stderr may contain any of them.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use common::{FaultProxy, GitRepo, Server};

const SESSION_TOKEN: &str = "session-token-QpX93mZk7Lw2";
const GIT_TOKEN: &str = "git-token-Vb81Hq4TzN0r";
const WRONG_GIT_TOKEN: &str = "wrong-git-token-Ha27Ue5S";
const GIT_USER: &str = "docs-bot";
/// moto accepts any key pair, so its secret can be as distinctive as the
/// tokens.
const MOTO_SECRET: &str = "moto-secret-Jd62Kx0PfRt5";

/// Logging options of the two passes: text and JSON, both at trace level.
const LOG_OPTIONS: [&[&str]; 2] = [&["-vvv"], &["--log-format", "json", "-vvv"]];

/// A `git http-backend` server on 127.0.0.1 (tests/servers/git_http.py)
/// that requires a token. It stops when dropped.
struct GitHttpServer {
    child: std::process::Child,
    port: u16,
}

impl GitHttpServer {
    fn start(root: &Path, token: &str) -> Self {
        let port = common::free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/git_http.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(port.to_string())
            .arg(token)
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

/// Returns a lock object as a killed apply would leave it.
fn stale_lock(id: &str) -> String {
    serde_json::json!({
        "format": "r2sync-lock",
        "id": id,
        "holder": "ci@runner (pid 4242)",
        "operation": "apply",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "created_at": "2026-01-01T00:00:00Z",
        "renewed_at": "2026-01-01T00:00:00Z",
        "expires_at": "2099-01-01T00:00:00Z",
    })
    .to_string()
}

/// One command of the scenario, the exit code it must end with, and
/// whether it logs at trace level (a failed Git fetch stops before any
/// trace event).
struct Step {
    name: &'static str,
    command: Command,
    code: i32,
    traced: bool,
}

#[test]
fn no_credential_in_any_output() {
    let runtime = common::runtime();
    for server in common::servers() {
        // moto gets a distinctive secret and a session token. Garage checks
        // signatures, so it keeps its own key pair and gets no token.
        let is_moto = server.name == "moto";
        let server = if is_moto {
            Server {
                secret_access_key: MOTO_SECRET.to_string(),
                ..server
            }
        } else {
            server
        };
        let session_token = is_moto.then_some(SESSION_TOKEN);
        let mut forbidden = vec![
            server.secret_access_key.clone(),
            GIT_TOKEN.to_string(),
            WRONG_GIT_TOKEN.to_string(),
        ];
        // HTTP Basic authentication sends the Git token in base64.
        for token in [GIT_TOKEN, WRONG_GIT_TOKEN] {
            forbidden.push(
                base64::engine::general_purpose::STANDARD.encode(format!("{GIT_USER}:{token}")),
            );
        }
        forbidden.extend(session_token.map(str::to_string));

        // A repository served over HTTP that needs the Git token: a first
        // commit, then one that removes a document, so that apply archives.
        let repo = GitRepo::new();
        repo.write("a.md", "# A\n");
        repo.write("guide/b.md", "# B\n\nSoon archived.\n");
        let first = repo.commit("first");
        repo.remove("guide/b.md");
        let second = repo.commit("second");
        let served = tempfile::tempdir().unwrap();
        let bare = served.path().join("docs.git");
        repo.git(&["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);
        let git_server = GitHttpServer::start(served.path(), GIT_TOKEN);
        let url = format!("http://127.0.0.1:{}/docs.git", git_server.port);

        // A proxy that replies to every request with 500, for a failing apply.
        let proxy = FaultProxy::start(&server.endpoint, &["--rate", "1", "--faults", "500"]);
        let through_proxy = proxy.server(&server);

        for log_flags in LOG_OPTIONS {
            let bucket = common::Bucket::new(&server);
            let prefix = common::unique_prefix("secrets");
            let workdir = tempfile::tempdir().unwrap();
            let cache = workdir.path().join("cache");
            // `subcommand` may have words separated by spaces, as `archive ls`.
            let command = |via: &Server, subcommand: &str, args: &[&str]| {
                let mut command = common::r2sync(Some(via), workdir.path());
                command
                    .args(log_flags)
                    .args(subcommand.split(' '))
                    .args(["--repo", &url, "--target", &common::target(via, &prefix)])
                    .arg("--cache-dir")
                    .arg(&cache)
                    .args(args)
                    .env("R2SYNC_GIT_TOKEN", GIT_TOKEN)
                    .env("R2SYNC_GIT_USERNAME", GIT_USER)
                    .env("GIT_TERMINAL_PROMPT", "0")
                    .env("HOME", workdir.path());
                if let Some(token) = session_token {
                    command.env("AWS_SESSION_TOKEN", token);
                }
                command
            };

            let mut wrong_token = command(&server, "plan", &["--ref", &first]);
            wrong_token.env("R2SYNC_GIT_TOKEN", WRONG_GIT_TOKEN);
            let steps = vec![
                Step {
                    name: "doctor",
                    command: command(&server, "doctor", &[]),
                    code: 0,
                    traced: true,
                },
                Step {
                    name: "plan",
                    command: command(&server, "plan", &["--ref", &first]),
                    code: 0,
                    traced: true,
                },
                Step {
                    name: "apply",
                    command: command(&server, "apply", &["--yes", "--ref", &first]),
                    code: 0,
                    traced: true,
                },
                Step {
                    name: "check",
                    command: command(&server, "check", &["--ref", &first]),
                    code: 0,
                    traced: true,
                },
                Step {
                    name: "apply that archives",
                    command: command(&server, "apply", &["--yes", "--json", "--ref", &second]),
                    code: 0,
                    traced: true,
                },
                Step {
                    name: "archive ls",
                    command: command(&server, "archive ls", &[]),
                    code: 0,
                    traced: true,
                },
                Step {
                    name: "restore",
                    command: command(&server, "restore", &["guide/b.md"]),
                    code: 0,
                    traced: true,
                },
                Step {
                    name: "check with drift",
                    command: command(&server, "check", &["--ref", &second]),
                    code: 2,
                    traced: true,
                },
                Step {
                    name: "apply through a failing proxy",
                    command: command(
                        &through_proxy,
                        "apply",
                        &[
                            "--yes",
                            "--ref",
                            &first,
                            "--retries",
                            "1",
                            "--max-backoff",
                            "1",
                        ],
                    ),
                    code: 1,
                    traced: true,
                },
                Step {
                    name: "force-unlock with a wrong id",
                    command: command(&server, "force-unlock", &["0000000000000000"]),
                    code: 1,
                    traced: true,
                },
                Step {
                    name: "force-unlock",
                    command: command(&server, "force-unlock", &["feedc0de00000001"]),
                    code: 0,
                    traced: true,
                },
                Step {
                    name: "plan with a wrong Git token",
                    command: wrong_token,
                    code: 1,
                    traced: false,
                },
            ];

            let format = log_flags.join(" ");
            for mut step in steps {
                if step.name == "force-unlock with a wrong id" {
                    let lock_key = format!("{prefix}/.r2sync/lock.json");
                    runtime.block_on(
                        bucket.put_plain(&lock_key, stale_lock("feedc0de00000001").as_bytes()),
                    );
                }
                let label = format!("{} {} ({format})", server.name, step.name);
                let result = common::run(&mut step.command);
                assert_eq!(
                    result.code, step.code,
                    "{label}\n--- stdout\n{}\n--- stderr\n{}",
                    result.stdout, result.stderr
                );

                // The run logged at trace level, so the check covers the
                // most detailed output. The failed fetch did try the token.
                let trace_marker = if log_flags.len() == 1 {
                    "TRACE"
                } else {
                    "\"level\":\"TRACE\""
                };
                if step.traced {
                    assert!(
                        result.stderr.contains(trace_marker),
                        "{label}: no trace output:\n{}",
                        result.stderr
                    );
                } else {
                    assert!(
                        result
                            .stderr
                            .contains("HTTPS token from R2SYNC_GIT_TOKEN (rejected)"),
                        "{label}:\n{}",
                        result.stderr
                    );
                }
                for secret in &forbidden {
                    assert!(
                        !result.stdout.contains(secret.as_str()),
                        "{label}: {secret} on stdout"
                    );
                    assert!(
                        !result.stderr.contains(secret.as_str()),
                        "{label}: {secret} on stderr"
                    );
                }
            }
        }
    }
}
