//! Fetching over SSH from an sshd this test starts on 127.0.0.1, with a
//! key file, with ssh-agent, and without credentials.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{run_expect, GitRepo};

const SSHD: &str = "/usr/sbin/sshd";

/// An sshd on 127.0.0.1 that accepts one client key for the current user;
/// it stops when dropped.
struct SshServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn start_sshd(dir: &Path) -> SshServer {
    keygen(&dir.join("host_key"));
    keygen(&dir.join("client_key"));
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    std::fs::create_dir_all("/run/sshd").ok();

    let port = common::free_port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
         PidFile {dir}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    let mut child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Wait until it listens.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return SshServer { child, port };
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("sshd did not start on port {port}");
}

#[test]
fn ssh_fetch_with_key_file_and_agent() {
    if !Path::new(SSHD).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{SSHD} is missing; .ci/run installs openssh-server"
        );
        eprintln!("skipping: {SSHD} is not installed (apt-get install openssh-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start_sshd(dir.path());

    // A bare repository served over SSH, and a home with its host key known.
    let repo = GitRepo::new();
    repo.write("s.md", "# Over SSH\n");
    repo.commit("first");
    let bare = dir.path().join("docs.git");
    repo.git(&["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let host_key = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    std::fs::write(
        home.join(".ssh/known_hosts"),
        format!("[127.0.0.1]:{} {}\n", server.port, host_key.join(" ")),
    )
    .unwrap();

    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        user.trim(),
        server.port,
        bare.display()
    );
    let target = format!("file://{}", dir.path().join("out").display());
    let plan = |cache: &str| {
        let mut cmd = common::r2sync(None, dir.path());
        cmd.args(["plan", "--repo", &url, "--target", &target, "--cache-dir"])
            .arg(dir.path().join(cache))
            .env("HOME", &home)
            .env_remove("SSH_AUTH_SOCK");
        cmd
    };

    // A key file.
    let client_key = dir.path().join("client_key");
    let with_key = run_expect(plan("cache-key").env("R2SYNC_SSH_KEY", &client_key), 0);
    assert!(with_key.stdout.contains("+ s.md"), "{}", with_key.stdout);

    // No key and no agent: the error names what was tried and what to set.
    let denied = run_expect(&mut plan("cache-none"), 1);
    assert!(
        denied.stderr.contains("authentication failed"),
        "{}",
        denied.stderr
    );
    assert!(
        denied.stderr.contains("R2SYNC_SSH_KEY"),
        "{}",
        denied.stderr
    );

    // ssh-agent holding the key.
    let agent = Command::new("ssh-agent").arg("-s").output().unwrap();
    let agent = String::from_utf8(agent.stdout).unwrap();
    let variable = |name: &str| {
        agent
            .split(';')
            .find_map(|part| part.trim().strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let socket = variable("SSH_AUTH_SOCK");
    let agent_pid = variable("SSH_AGENT_PID");
    let added = Command::new("ssh-add")
        .arg("-q")
        .arg(&client_key)
        .env("SSH_AUTH_SOCK", &socket)
        .status()
        .unwrap();
    assert!(added.success());
    let via_agent = common::run(plan("cache-agent").env("SSH_AUTH_SOCK", &socket));
    let _ = Command::new("kill").arg(&agent_pid).status();
    assert_eq!(via_agent.code, 0, "{}", via_agent.stderr);
    assert!(via_agent.stdout.contains("+ s.md"), "{}", via_agent.stdout);

    // An unknown host key is named, with the fix.
    std::fs::write(home.join(".ssh/known_hosts"), "").unwrap();
    let unknown = run_expect(plan("cache-unknown").env("R2SYNC_SSH_KEY", &client_key), 1);
    assert!(unknown.stderr.contains("known_hosts"), "{}", unknown.stderr);
}
