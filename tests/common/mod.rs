//! Shared helpers for the integration tests: the S3 servers started by
//! `tests/run.sh`, a store client that is independent of r2sync's own code,
//! Git repositories built with the git command line, and running the binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use assert_cmd::cargo::CommandCargoExt;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutPayload};

/// One S3-compatible server described by `R2SYNC_TEST_<NAME>_*` variables.
#[derive(Clone, Debug)]
pub struct Server {
    pub name: String,
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// Whether the server enforces If-Match and If-None-Match on PUT.
    pub conditional_writes: bool,
}

/// The servers listed in `R2SYNC_TEST_SERVERS`. When none are configured the
/// caller skips, unless `R2SYNC_TEST_REQUIRE_SERVERS=1` (set by tests/run.sh)
/// makes that a failure.
pub fn servers() -> Vec<Server> {
    let names = std::env::var("R2SYNC_TEST_SERVERS").unwrap_or_default();
    let servers: Vec<Server> = names
        .split_whitespace()
        .map(|name| {
            let upper = name.to_ascii_uppercase();
            let var = |field: &str| {
                let key = format!("R2SYNC_TEST_{upper}_{field}");
                std::env::var(&key).unwrap_or_else(|_| {
                    panic!("{key} is not set; start the servers with tests/run.sh")
                })
            };
            Server {
                name: name.to_string(),
                endpoint: var("ENDPOINT"),
                bucket: var("BUCKET"),
                access_key_id: var("ACCESS_KEY_ID"),
                secret_access_key: var("SECRET_ACCESS_KEY"),
                region: var("REGION"),
                conditional_writes: var("CONDITIONAL_WRITES") == "1",
            }
        })
        .collect();
    if servers.is_empty() {
        assert!(
            std::env::var("R2SYNC_TEST_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "R2SYNC_TEST_REQUIRE_SERVERS=1 but R2SYNC_TEST_SERVERS is empty"
        );
        eprintln!(
            "skipping: no S3 test servers configured; run the suite with `bash tests/run.sh`"
        );
    }
    servers
}

/// A unique key prefix for one test on one server.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t/{test}-{}-{nanos:x}", std::process::id())
}

/// A store client for checking the bucket independently of r2sync.
pub struct Bucket {
    pub server: Server,
    pub store: Arc<dyn ObjectStore>,
}

/// An object as the independent client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub etag: Option<String>,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

impl Bucket {
    pub fn new(server: &Server) -> Self {
        let store = AmazonS3Builder::new()
            .with_endpoint(&server.endpoint)
            .with_bucket_name(&server.bucket)
            .with_region(&server.region)
            .with_access_key_id(&server.access_key_id)
            .with_secret_access_key(&server.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .build()
            .expect("test store client");
        Bucket {
            server: server.clone(),
            store: Arc::new(store),
        }
    }

    /// Every key under `prefix`, r2sync's internal folder included.
    pub async fn list(&self, prefix: &str) -> BTreeMap<String, ListedObject> {
        let prefix = StorePath::parse(prefix).unwrap();
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| {
                (
                    meta.location.to_string(),
                    ListedObject {
                        etag: meta.e_tag,
                        size: meta.size,
                        last_modified: meta.last_modified,
                    },
                )
            })
            .try_collect()
            .await
            .expect("listing the test bucket")
    }

    /// Keys under `prefix` outside r2sync's internal folder.
    pub async fn document_keys(&self, prefix: &str) -> Vec<String> {
        let internal = format!("{prefix}/.r2sync/");
        self.list(prefix)
            .await
            .into_keys()
            .filter(|key| !key.starts_with(&internal))
            .collect()
    }

    /// Headers and user metadata of one object, from a HEAD request.
    pub async fn attributes(&self, key: &str) -> object_store::Attributes {
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        self.store
            .get_opts(&StorePath::parse(key).unwrap(), options)
            .await
            .unwrap_or_else(|err| panic!("HEAD {key}: {err}"))
            .attributes
    }

    /// User metadata of one object, as sent by the server.
    pub async fn metadata(&self, key: &str) -> BTreeMap<String, String> {
        self.attributes(key)
            .await
            .iter()
            .filter_map(|(attribute, value)| match attribute {
                object_store::Attribute::Metadata(name) => {
                    Some((name.to_string(), value.to_string()))
                }
                _ => None,
            })
            .collect()
    }

    pub async fn content_type(&self, key: &str) -> Option<String> {
        self.attributes(key)
            .await
            .get(&object_store::Attribute::ContentType)
            .map(|value| value.to_string())
    }

    pub async fn get(&self, key: &str) -> Vec<u8> {
        self.store
            .get(&StorePath::parse(key).unwrap())
            .await
            .unwrap_or_else(|err| panic!("GET {key}: {err}"))
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    /// Writes an object with no r2sync metadata, as another tool would.
    pub async fn put_plain(&self, key: &str, body: &[u8]) {
        self.store
            .put(
                &StorePath::parse(key).unwrap(),
                PutPayload::from(body.to_vec()),
            )
            .await
            .unwrap_or_else(|err| panic!("PUT {key}: {err}"));
    }

    /// Rewrites an object with the given headers and user metadata, as a
    /// tool that copies metadata would.
    pub async fn put_with(&self, key: &str, body: &[u8], attributes: object_store::Attributes) {
        let options = object_store::PutOptions {
            attributes,
            ..Default::default()
        };
        self.store
            .put_opts(
                &StorePath::parse(key).unwrap(),
                PutPayload::from(body.to_vec()),
                options,
            )
            .await
            .unwrap_or_else(|err| panic!("PUT {key}: {err}"));
    }

    pub async fn delete(&self, key: &str) {
        self.store
            .delete(&StorePath::parse(key).unwrap())
            .await
            .unwrap_or_else(|err| panic!("DELETE {key}: {err}"));
    }
}

/// The r2sync binary with the server's credentials in its environment and
/// no other AWS or R2 settings inherited.
pub fn r2sync(server: Option<&Server>, workdir: &Path) -> Command {
    let mut command = Command::cargo_bin("r2sync").unwrap();
    command.current_dir(workdir);
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_")
            || name.starts_with("R2_")
            || name.starts_with("R2SYNC_")
            || name == "CLOUDFLARE_ACCOUNT_ID"
            || name == "RUST_LOG"
        {
            command.env_remove(name);
        }
    }
    if let Some(server) = server {
        command
            .env("R2_ACCESS_KEY_ID", &server.access_key_id)
            .env("R2_SECRET_ACCESS_KEY", &server.secret_access_key)
            .env("AWS_REGION", &server.region)
            .env("R2SYNC_ENDPOINT", &server.endpoint);
    }
    command.env("NO_COLOR", "1");
    // tests/run.sh runs the suite once more with trace logs, so that every
    // scenario shows whether a secret leaks into the most verbose output.
    // `run` scans the output of each command.
    if trace_mode() {
        command.arg("-vvv");
    }
    command
}

/// Tells whether the commands run with `-vvv` (`R2SYNC_TEST_TRACE=1`).
pub fn trace_mode() -> bool {
    std::env::var("R2SYNC_TEST_TRACE").as_deref() == Ok("1")
}

/// Secrets of the configured servers, which no output may contain.
fn secrets() -> Vec<String> {
    servers_quiet()
        .into_iter()
        .map(|server| server.secret_access_key)
        // moto accepts any secret; one this short could occur by chance.
        .filter(|secret| secret.len() >= 12)
        .collect()
}

/// Returns the configured servers, without the skip message of [`servers`].
fn servers_quiet() -> Vec<Server> {
    if std::env::var("R2SYNC_TEST_SERVERS")
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        return Vec::new();
    }
    servers()
}

/// Fails when `output` contains a server's secret access key.
pub fn assert_no_secret(output: &str, what: &str) {
    for secret in secrets() {
        assert!(
            !output.contains(&secret),
            "{what} contains a secret access key:\n{output}"
        );
    }
}

/// `s3://BUCKET/PREFIX` for a server.
pub fn target(server: &Server, prefix: &str) -> String {
    format!("s3://{}/{prefix}", server.bucket)
}

/// Output of a finished command.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(command: &mut Command) -> Run {
    let output = command.output().expect("running r2sync");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert_no_secret(&run.stdout, "stdout");
    assert_no_secret(&run.stderr, "stderr");
    run
}

/// Runs and requires `expected` as the exit code, showing the output if not.
pub fn run_expect(command: &mut Command, expected: i32) -> Run {
    let result = run(command);
    assert_eq!(
        result.code, expected,
        "exit code {} (expected {expected})\n--- stdout\n{}\n--- stderr\n{}",
        result.code, result.stdout, result.stderr
    );
    result
}

/// A Git repository in a temporary directory, driven by the git command line.
pub struct GitRepo {
    pub dir: tempfile::TempDir,
}

impl GitRepo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = GitRepo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "Test Author"]);
        repo.git(&["config", "user.email", "author@example.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("running git");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    pub fn remove(&self, path: &str) {
        self.git(&["rm", "-q", path]);
    }

    /// Commits everything and returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

/// Returns the path of a corpus bundle beside the repository, or `None` with
/// a message when it is absent. Under CI (`CI` set) a missing corpus is a
/// failure, so that the end-to-end tests cannot pass by skipping.
pub fn corpus(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("corpora")
        .join(name);
    if path.is_file() {
        Some(path)
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "corpus {} not found, and CI requires it",
            path.display()
        );
        eprintln!("skipping: corpus {} not found", path.display());
        None
    }
}

/// One test's setup on one server: a repository, a prefix, a working
/// directory, and a client for checking the bucket.
pub struct Fixture {
    pub server: Server,
    pub bucket: Bucket,
    pub prefix: String,
    pub repo: GitRepo,
    pub workdir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(server: &Server, test: &str) -> Self {
        Fixture {
            server: server.clone(),
            bucket: Bucket::new(server),
            prefix: unique_prefix(test),
            repo: GitRepo::new(),
            workdir: tempfile::tempdir().unwrap(),
        }
    }

    /// `r2sync SUBCOMMAND --repo REPO --target TARGET ARGS...`
    pub fn cmd(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut command = r2sync(Some(&self.server), self.workdir.path());
        command
            .arg(subcommand)
            .arg("--repo")
            .arg(self.repo.path())
            .arg("--target")
            .arg(target(&self.server, &self.prefix))
            .args(args);
        command
    }

    pub fn key(&self, path: &str) -> String {
        format!("{}/{path}", self.prefix)
    }

    pub fn manifest_key(&self) -> String {
        format!("{}/.r2sync/state.json", self.prefix)
    }

    /// Runs `apply --yes --json` and returns the parsed result.
    pub fn apply_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--yes", "--json"];
        all.extend_from_slice(args);
        let result = run_expect(&mut self.cmd("apply", &all), 0);
        serde_json::from_str(&result.stdout)
            .unwrap_or_else(|err| panic!("apply --json output: {err}\n{}", result.stdout))
    }
}

/// Total write requests reported by `apply --json`.
pub fn writes(result: &serde_json::Value) -> u64 {
    let writes = &result["writes"];
    ["put", "copy", "delete", "manifest"]
        .iter()
        .map(|name| {
            writes[name]
                .as_u64()
                .unwrap_or_else(|| panic!("writes.{name} missing in {result}"))
        })
        .sum()
}

/// Connects r2sync's own store client to `target` on `server`.
pub fn connect(server: &Server, target: &r2sync::config::Target) -> r2sync::remote::Remote {
    let lookup = |name: &str| match name {
        "R2_ACCESS_KEY_ID" => Some(server.access_key_id.clone()),
        "R2_SECRET_ACCESS_KEY" => Some(server.secret_access_key.clone()),
        "AWS_REGION" => Some(server.region.clone()),
        _ => None,
    };
    let credentials =
        r2sync::config::Credentials::resolve(target, Some(&server.endpoint), &lookup).unwrap();
    let policy = r2sync::remote::RequestPolicy {
        retries: 1,
        timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    r2sync::remote::Remote::connect(target, &credentials, &policy, true).unwrap()
}

/// Builds the desired state of `commit` with r2sync's library, using the
/// default include globs.
pub fn desired_state(
    repo: &Path,
    commit: &str,
    root: &str,
    prefix: &str,
) -> r2sync::manifest::DesiredState {
    let cache = tempfile::tempdir().unwrap();
    let repo = r2sync::source::open(repo.to_str().unwrap(), cache.path()).unwrap();
    let oid = r2sync::source::resolve_commit(&repo, commit).unwrap();
    let selector = r2sync::source::Selector::new(&default_include(), &[]).unwrap();
    let files = r2sync::source::select_files(&repo, oid, root, &selector, Default::default())
        .unwrap()
        .files;
    let options = r2sync::manifest::DesiredOptions {
        prefix: prefix.to_string(),
        ..Default::default()
    };
    r2sync::manifest::build(&repo, &files, &options, || {}).unwrap()
}

pub fn default_include() -> Vec<String> {
    r2sync::source::DEFAULT_INCLUDE
        .iter()
        .map(|glob| glob.to_string())
        .collect()
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago, for a test
/// server to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---- Fault-injecting proxy ----
// Added for tests/faults.rs and tests/secrets.rs.

/// A tests/servers/fault_proxy.py process on 127.0.0.1 in front of one
/// server, with its request log in a temporary directory. Dropping it kills
/// the process.
pub struct FaultProxy {
    child: std::process::Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (an `http://127.0.0.1:PORT`
    /// URL) with extra options such as `["--rate", "0.2"]`, and waits until
    /// it listens.
    pub fn start(upstream: &str, options: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/fault_proxy.py");
        let stderr = std::fs::File::create(dir.path().join("proxy.stderr")).unwrap();
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--upstream")
            .arg(upstream)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(dir.path().join("requests.log"))
            .args(options)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting python3 tests/servers/fault_proxy.py");

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            if let Some(port) = port {
                return FaultProxy { child, port, dir };
            }
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.path().join("proxy.stderr"));
                panic!(
                    "fault_proxy.py exited with {status}: {}",
                    log.unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fault_proxy.py wrote no port within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Returns `upstream` as reached through the proxy: same bucket and
    /// credentials, the proxy's endpoint.
    pub fn server(&self, upstream: &Server) -> Server {
        Server {
            endpoint: self.endpoint(),
            ..upstream.clone()
        }
    }

    /// Returns the counters of `GET /__proxy/stats`: requests by method,
    /// faults by kind and R2 emulation responses by status.
    pub fn stats(&self) -> serde_json::Value {
        self.control("GET", "/__proxy/stats", "")
    }

    /// Changes settings through `POST /__proxy/config`, such as
    /// `{"rate": 0.3}`, and returns the new settings.
    pub fn configure(&self, changes: serde_json::Value) -> serde_json::Value {
        self.control("POST", "/__proxy/config", &changes.to_string())
    }

    /// Sets every counter to zero.
    pub fn reset_stats(&self) {
        self.control("POST", "/__proxy/reset", "");
    }

    /// Returns the request log, one line per request with method, target,
    /// status or fault, and latency.
    pub fn request_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default()
    }

    /// Sends one control request over a new connection and returns the
    /// JSON body, failing unless the status is 200.
    fn control(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))
            .expect("connecting to fault_proxy.py");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, json) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("invalid response from fault_proxy.py: {response}"));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "{method} {path} on fault_proxy.py: {response}"
        );
        serde_json::from_str(json).unwrap_or_else(|err| panic!("{method} {path}: {err}: {json}"))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Commands running in the background ----

/// A command started in the background whose output is read while it runs,
/// so that a full pipe (trace logs fill one quickly) never stalls it.
pub struct Spawned {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

/// Starts `command` with its output collected by two threads.
pub fn spawn(mut command: Command) -> Spawned {
    use std::io::Read;

    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting r2sync");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    Spawned {
        child,
        stdout,
        stderr,
    }
}

impl Spawned {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits for the exit and returns the whole output, checked for secrets.
    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        let status = self.child.wait()?;
        let output = std::process::Output {
            status,
            stdout: self.stdout.join().expect("stdout reader"),
            stderr: self.stderr.join().expect("stderr reader"),
        };
        assert_no_secret(&String::from_utf8_lossy(&output.stdout), "stdout");
        assert_no_secret(&String::from_utf8_lossy(&output.stderr), "stderr");
        Ok(output)
    }
}
