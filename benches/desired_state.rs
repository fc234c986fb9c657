//! Time of building the desired state, split into its phases, to show what
//! a cache of normalized documents could save.
//!
//! The phases are listing the files of the commit, reading every blob on
//! one thread, normalizing every document on one thread, and the whole
//! parallel build. The last row is a lower bound for loading such a cache:
//! reading one file that contains every body and title, length-prefixed,
//! and slicing it into per-document buffers. Each time is the best of
//! three. Prints a Markdown table.
//!
//! Run with `DESIRED_BENCH_REPO=/path/to/repo cargo bench --bench
//! desired_state`. Without the variable, a repository of 20,000 generated
//! documents is built with `git fast-import`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::format_duration;
use r2sync::manifest::{self, DesiredOptions};
use r2sync::markdown::{self, NormalizeOptions};
use r2sync::source::{self, Selector};

/// Returns the best time of three calls and the last call's result.
fn best_of_three<T>(mut routine: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut result = None;
    for _ in 0..3 {
        let started = Instant::now();
        result = Some(std::hint::black_box(routine()));
        best = best.min(started.elapsed());
    }
    (best, result.expect("three runs"))
}

/// Creates a repository of `count` documents with front matter, a heading,
/// a paragraph and a list, in folders of 1,000.
fn generate_repository(dir: &Path, count: usize) {
    let status = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git init failed");
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
    for index in 0..count {
        let content = format!(
            "---\ntitle: Page {index}\ntags: [bench]\n---\n\n# Page {index}\n\n\
             This page describes *feature {index}* and links to [the index](/).\n\n\
             - one item\n- another item with `code`\n"
        );
        writeln!(
            stream,
            "M 100644 inline section{}/page{index}.md",
            index / 1000
        )
        .unwrap();
        writeln!(stream, "data {}\n{content}", content.len()).unwrap();
    }
    drop(stream);
    assert!(child.wait().unwrap().success(), "git fast-import failed");
}

fn main() {
    let generated = tempfile::tempdir().unwrap();
    let repository = match std::env::var("DESIRED_BENCH_REPO") {
        Ok(path) => path,
        Err(_) => {
            generate_repository(generated.path(), 20_000);
            generated.path().to_str().unwrap().to_string()
        }
    };

    let repo = source::open(&repository, &std::env::temp_dir()).unwrap();
    let commit = source::resolve_commit(&repo, "HEAD").unwrap();
    let include: Vec<String> = source::DEFAULT_INCLUDE
        .iter()
        .map(|glob| glob.to_string())
        .collect();
    let selector = Selector::new(&include, &[]).unwrap();
    let (select_time, files) = best_of_three(|| {
        source::select_files(&repo, commit, "", &selector, Default::default())
            .unwrap()
            .files
    });

    let (read_time, raws) = best_of_three(|| {
        files
            .iter()
            .map(|file| source::read_blob(&repo, file).unwrap())
            .collect::<Vec<Vec<u8>>>()
    });
    let bytes_read: usize = raws.iter().map(Vec::len).sum();

    let options = NormalizeOptions::default();
    let (normalize_time, _) = best_of_three(|| {
        files
            .iter()
            .zip(&raws)
            .filter_map(|(file, raw)| markdown::normalize(&file.repo_path, raw, &options).ok())
            .map(|document| document.body.len())
            .sum::<usize>()
    });
    drop(raws);

    let (build_time, state) = best_of_three(|| {
        manifest::build(&repo, &files, &DesiredOptions::default(), || {}).unwrap()
    });

    // The lower bound for loading a cache of normalized documents.
    let cache_file = tempfile::NamedTempFile::new().unwrap();
    let mut cached = Vec::new();
    for object in state.objects.values() {
        let title = object.metadata.get(manifest::META_TITLE).unwrap_or("");
        for part in [&object.body[..], title.as_bytes()] {
            cached.extend_from_slice(&(part.len() as u32).to_le_bytes());
            cached.extend_from_slice(part);
        }
    }
    std::fs::write(cache_file.path(), &cached).unwrap();
    let (load_time, parts) = best_of_three(|| {
        let data = Bytes::from(std::fs::read(cache_file.path()).unwrap());
        let mut parts = Vec::new();
        let mut offset = 0;
        while offset < data.len() {
            let len = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
            parts.push(data.slice(offset + 4..offset + 4 + len));
            offset += 4 + len;
        }
        parts
    });

    println!(
        "{} documents, {bytes_read} bytes, {} worker threads available",
        files.len(),
        std::thread::available_parallelism().map_or(1, |count| count.get())
    );
    println!();
    println!("| phase | time (best of 3) |");
    println!("|---|---:|");
    println!(
        "| list files of the commit | {} |",
        format_duration(select_time)
    );
    println!(
        "| read every blob, 1 thread | {} |",
        format_duration(read_time)
    );
    println!(
        "| normalize every document, 1 thread | {} |",
        format_duration(normalize_time)
    );
    println!(
        "| build the desired state, parallel | {} |",
        format_duration(build_time)
    );
    println!(
        "| load {} cached bodies and titles ({} bytes) | {} |",
        parts.len() / 2,
        cached.len(),
        format_duration(load_time)
    );
}
