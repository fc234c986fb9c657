//! `r2sync apply` killed with SIGKILL at random points of runs that create,
//! update, archive and delete. After each kill, removing the lock it left
//! and applying again must converge, with no archived copy and no desired
//! document lost.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{run_expect, Fixture, GitRepo, ListedObject};

/// Kills of a running apply per server.
const KILLS: usize = 30;

/// Upper bound of kill attempts, because an apply may finish before its kill.
const MAX_ATTEMPTS: usize = 80;

const SEED: u64 = 0x005e_ed0f_c4a5;

/// A seeded SplitMix64 generator, so that a failing run can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a number from `low` up to, but not including, `high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }
}

fn write_page(repo: &GitRepo, path: &str, version: &str) {
    let body = format!("{version} text of {path}. ").repeat(10);
    repo.write(
        path,
        format!("---\ntitle: {path}\n---\n# {path}\n\n{body}\n"),
    );
}

/// Builds four commits whose transitions, applied in a cycle, create,
/// update, archive and delete. The first has 150 pages. The second updates
/// 50, removes 25 and adds 20. The third updates 50 more, removes 15 and
/// renames 10. The fourth removes the added pages and updates every page.
/// Returns the commits with the Markdown paths of each.
fn build_history(repo: &GitRepo) -> Vec<(String, BTreeSet<String>)> {
    let page = |index: usize| format!("pages/page-{index:03}.md");
    let mut paths: BTreeSet<String> = BTreeSet::new();
    let mut history = Vec::new();

    for index in 0..150 {
        write_page(repo, &page(index), "v1");
        paths.insert(page(index));
    }
    history.push((repo.commit("150 pages"), paths.clone()));

    for index in 0..50 {
        write_page(repo, &page(index), "v2");
    }
    for index in 125..150 {
        repo.remove(&page(index));
        paths.remove(&page(index));
    }
    for index in 0..20 {
        let path = format!("extra/new-{index:02}.md");
        write_page(repo, &path, "v1");
        paths.insert(path);
    }
    history.push((repo.commit("update, remove, add"), paths.clone()));

    for index in 50..100 {
        write_page(repo, &page(index), "v3");
    }
    for index in 0..15 {
        repo.remove(&page(index));
        paths.remove(&page(index));
    }
    std::fs::create_dir_all(repo.path().join("moved")).unwrap();
    for index in 100..110 {
        let moved = format!("moved/page-{index:03}.md");
        repo.git(&["mv", &page(index), &moved]);
        paths.remove(&page(index));
        paths.insert(moved);
    }
    history.push((repo.commit("update, remove, rename"), paths.clone()));

    for index in 0..20 {
        let path = format!("extra/new-{index:02}.md");
        repo.remove(&path);
        paths.remove(&path);
    }
    for path in paths.clone() {
        write_page(repo, &path, "v4");
    }
    history.push((
        repo.commit("remove the new pages, update all"),
        paths.clone(),
    ));
    history
}

/// Names the phase of the apply in which a kill landed, judged from what
/// changed in the bucket.
fn kill_phase(
    before: &BTreeMap<String, ListedObject>,
    after: &BTreeMap<String, ListedObject>,
    prefix: &str,
) -> &'static str {
    let internal = format!("{prefix}/.r2sync/");
    let archive = format!("{prefix}/.r2sync/archive/");
    let manifest = format!("{prefix}/.r2sync/state.json");
    let lock = format!("{prefix}/.r2sync/lock.json");
    let is_document = |key: &String| !key.starts_with(&internal);

    let written = after
        .iter()
        .filter(|(key, object)| is_document(key) && before.get(*key) != Some(object))
        .count();
    let removed = before
        .keys()
        .filter(|key| is_document(key) && !after.contains_key(*key))
        .count();
    let copied = after
        .keys()
        .filter(|key| key.starts_with(&archive) && !before.contains_key(*key))
        .count();
    let manifest_written = before.get(&manifest) != after.get(&manifest);

    if manifest_written && after.contains_key(&lock) {
        "after the manifest write, before the lock release"
    } else if manifest_written {
        "after the lock release"
    } else if removed > 0 {
        "deletes"
    } else if copied > 0 {
        "archive copies"
    } else if written > 0 {
        "uploads"
    } else if after.contains_key(&lock) {
        "lock held, before the first write"
    } else {
        "before the lock (reading, listing, planning)"
    }
}

#[test]
fn killed_applies_recover() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "crash");
        let history = build_history(&fx.repo);
        let mut random = Random(SEED);

        // The kill delays span a whole uninterrupted apply to the same
        // commit, measured on another prefix of the same server, first from
        // an empty prefix and then around the cycle.
        let calibration = Fixture::new(&server, "crash-calibration");
        let calibration_history = build_history(&calibration.repo);
        let mut full_ms = Vec::new();
        for target in (0..history.len()).chain([0]) {
            let commit = &calibration_history[target].0;
            let started = Instant::now();
            run_expect(
                &mut calibration.cmd("apply", &["--yes", "--ref", commit]),
                0,
            );
            full_ms.push(started.elapsed().as_millis() as u64);
        }
        let full_ms_to = |attempt: usize| match attempt {
            0 => full_ms[0],
            _ if attempt.is_multiple_of(history.len()) => full_ms[history.len()],
            _ => full_ms[attempt % history.len()],
        };

        let test_started = Instant::now();
        let mut kills = 0;
        let mut finished_first = 0;
        let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
        let mut archive_seen: BTreeSet<String> = BTreeSet::new();
        let mut current: Option<usize> = None;
        for attempt in 0..MAX_ATTEMPTS {
            if kills >= KILLS {
                break;
            }
            let target = attempt % history.len();
            let (commit, paths) = &history[target];
            let label = format!("{} attempt {attempt} (commit {target})", server.name);
            let before = runtime.block_on(fx.bucket.list(&fx.prefix));

            // Half of the delays cover the whole run, the other half its
            // end, where the archive copies, deletes and manifest write are.
            let full = full_ms_to(attempt);
            let delay_ms = if random.next().is_multiple_of(2) {
                random.between(0, full * 13 / 10)
            } else {
                random.between(full * 6 / 10, full * 11 / 10)
            };
            let mut child = fx
                .cmd("apply", &["--yes", "--ref", commit, "--no-progress"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            let running = child.try_wait().unwrap().is_none();
            // Child::kill sends SIGKILL on Unix.
            child.kill().unwrap();
            let status = child.wait().unwrap();
            let after = runtime.block_on(fx.bucket.list(&fx.prefix));
            if running {
                kills += 1;
                *phases
                    .entry(kill_phase(&before, &after, &fx.prefix))
                    .or_default() += 1;
            } else {
                assert!(
                    status.success(),
                    "{label}: apply failed on its own: {status}"
                );
                finished_first += 1;
            }

            // A manifest, whichever run wrote it, is whole JSON.
            let manifest_key = fx.manifest_key();
            if after.contains_key(&manifest_key) {
                let bytes = runtime.block_on(fx.bucket.get(&manifest_key));
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .unwrap_or_else(|err| panic!("{label}: manifest does not parse: {err}"));
            }

            // The killed run's lock stays until force-unlock removes it.
            let lock_key = fx.key(".r2sync/lock.json");
            if after.contains_key(&lock_key) {
                let lock: serde_json::Value =
                    serde_json::from_slice(&runtime.block_on(fx.bucket.get(&lock_key))).unwrap();
                let id = lock["id"].as_str().unwrap();
                let removed = run_expect(&mut fx.cmd("force-unlock", &[id]), 0);
                assert!(removed.stderr.contains(id), "{label}: {}", removed.stderr);
            }

            // A new apply converges without waiting, and check agrees.
            run_expect(
                &mut fx.cmd("apply", &["--yes", "--ref", commit, "--lock-timeout", "0"]),
                0,
            );
            run_expect(&mut fx.cmd("check", &["--ref", commit]), 0);

            // Exactly the commit's documents are in place.
            let listing = runtime.block_on(fx.bucket.list(&fx.prefix));
            let documents: BTreeSet<String> = runtime
                .block_on(fx.bucket.document_keys(&fx.prefix))
                .into_iter()
                .collect();
            let expected: BTreeSet<String> = paths.iter().map(|path| fx.key(path)).collect();
            assert_eq!(
                documents, expected,
                "{label}: documents differ from the commit"
            );

            // No archived copy is ever lost, each new one is whole, and each
            // document the step removed has one.
            let archive_root = fx.key(".r2sync/archive/");
            let archive_now: BTreeSet<String> = listing
                .keys()
                .filter(|key| key.starts_with(&archive_root))
                .cloned()
                .collect();
            let lost: Vec<&String> = archive_seen.difference(&archive_now).collect();
            assert!(
                lost.is_empty(),
                "{label}: archived copies disappeared: {lost:?}"
            );
            for key in archive_now.difference(&archive_seen) {
                let metadata = runtime.block_on(fx.bucket.metadata(key));
                let body = runtime.block_on(fx.bucket.get(key));
                assert_eq!(
                    Some(&blake3::hash(&body).to_hex().to_string()),
                    metadata.get("r2sync-body"),
                    "{label}: archived copy {key} is not whole"
                );
            }
            if let Some(previous) = current {
                for path in history[previous].1.difference(paths) {
                    let archived = archive_now.iter().any(|key| {
                        key.strip_prefix(&archive_root)
                            .and_then(|rest| rest.split_once('/'))
                            .is_some_and(|(_stamp, original)| original == path)
                    });
                    assert!(
                        archived,
                        "{label}: {path} was removed without an archived copy"
                    );
                }
            }
            archive_seen = archive_now;

            // The manifest lists exactly the documents, each in the bucket.
            let manifest: serde_json::Value =
                serde_json::from_slice(&runtime.block_on(fx.bucket.get(&manifest_key))).unwrap();
            assert_eq!(
                manifest["commit"].as_str(),
                Some(commit.as_str()),
                "{label}"
            );
            let recorded: BTreeSet<String> = manifest["objects"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            for key in &recorded {
                assert!(
                    listing.contains_key(key),
                    "{label}: manifest lists missing {key}"
                );
            }
            assert_eq!(
                recorded, documents,
                "{label}: manifest and documents differ"
            );
            current = Some(target);
        }

        eprintln!(
            "{}: {kills} kills ({finished_first} applies finished before their kill) in {:.0} s, \
             full applies {full_ms:?} ms, {} archived copies kept; kills by phase: {phases:?}",
            server.name,
            test_started.elapsed().as_secs_f64(),
            archive_seen.len()
        );
        assert!(
            kills >= KILLS,
            "{}: only {kills} kills in {MAX_ATTEMPTS} attempts",
            server.name
        );
        assert!(
            phases.contains_key("uploads"),
            "{}: no kill during uploads",
            server.name
        );
        assert!(
            phases.contains_key("archive copies") || phases.contains_key("deletes"),
            "{}: no kill during archive copies or deletes",
            server.name
        );
    }
}
