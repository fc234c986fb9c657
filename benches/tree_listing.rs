//! Time and memory of listing the selected files of large trees.
//!
//! Builds repositories of 10,000 and 100,000 files with `git fast-import`
//! (one Markdown file in ten), then lists the Markdown files and, for
//! comparison, every file. Each case runs in a child process so that its
//! peak memory is its own. Prints a Markdown table.
//!
//! Run with `cargo bench --bench tree_listing`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use r2sync::source::{self, Selector};

/// Peak and current resident memory of this process, in KiB, from
/// /proc/self/status (Linux).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Creates a repository with `files` files in folders of 100, one in ten
/// ending in `.md`.
fn build_repository(dir: &Path, files: usize) {
    let run = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    run(&["init", "-q", "-b", "main"]);

    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = std::io::BufWriter::new(child.stdin.take().unwrap());
    writeln!(stream, "commit refs/heads/main").unwrap();
    writeln!(
        stream,
        "committer Bench <bench@example.invalid> 1700000000 +0000"
    )
    .unwrap();
    writeln!(stream, "data 5\nbench").unwrap();
    for index in 0..files {
        let extension = if index % 10 == 0 { "md" } else { "txt" };
        let content = format!("# Page {index}\n");
        writeln!(
            stream,
            "M 100644 inline dir{}/file{index}.{extension}",
            index / 100
        )
        .unwrap();
        writeln!(stream, "data {}\n{content}", content.len()).unwrap();
    }
    drop(stream);
    assert!(child.wait().unwrap().success());
}

/// Lists the selection three times in this process and prints one line:
/// files selected, best time in ms, peak memory above the start in KiB.
fn run_case(repository: &Path, include: &str) {
    let (_, start_rss) = memory_kib();
    let repo = source::open(repository.to_str().unwrap(), &std::env::temp_dir()).unwrap();
    let commit = source::resolve_commit(&repo, "HEAD").unwrap();
    let selector = Selector::new(&[include.to_string()], &[]).unwrap();
    let mut best = Duration::MAX;
    let mut selected = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let selection =
            source::select_files(&repo, commit, "", &selector, Default::default()).unwrap();
        best = best.min(started.elapsed());
        selected = selection.files.len();
    }
    let (peak, _) = memory_kib();
    println!(
        "{selected} {:.1} {}",
        best.as_secs_f64() * 1000.0,
        peak.saturating_sub(start_rss)
    );
}

fn main() {
    // A child process runs one case.
    if let (Ok(repository), Ok(include)) = (
        std::env::var("TREE_BENCH_REPO"),
        std::env::var("TREE_BENCH_INCLUDE"),
    ) {
        run_case(Path::new(&repository), &include);
        return;
    }

    println!(
        "| files in tree | include | files selected | time (best of 3) | peak memory above start |"
    );
    println!("|---:|---|---:|---:|---:|");
    let exe = std::env::current_exe().unwrap();
    for files in [10_000, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        build_repository(dir.path(), files);
        for include in ["*.md", "*"] {
            let output = Command::new(&exe)
                .env("TREE_BENCH_REPO", dir.path())
                .env("TREE_BENCH_INCLUDE", include)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let line = String::from_utf8(output.stdout).unwrap();
            let fields: Vec<&str> = line.split_whitespace().collect();
            println!(
                "| {files} | `{include}` | {} | {} ms | {} KiB |",
                fields[0], fields[1], fields[2]
            );
        }
    }
}
