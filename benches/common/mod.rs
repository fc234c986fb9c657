//! Timing helpers shared by the micro-benchmarks (no harness crate).

// Each benchmark uses a part of these helpers.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Best and median time of one call to `routine`.
pub struct Timing {
    pub best: Duration,
    pub median: Duration,
    pub runs: usize,
}

/// Calls `routine` until `budget` has passed (at least `min_runs` times and
/// at most 10,000 times) after one warm-up call, and returns the best and
/// median time of a call.
pub fn measure<T>(budget: Duration, min_runs: usize, mut routine: impl FnMut() -> T) -> Timing {
    std::hint::black_box(routine());
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < min_runs || (started.elapsed() < budget && times.len() < 10_000) {
        let call_started = Instant::now();
        std::hint::black_box(routine());
        times.push(call_started.elapsed());
    }
    times.sort();
    Timing {
        best: times[0],
        median: times[times.len() / 2],
        runs: times.len(),
    }
}

/// Formats a duration in ns, µs, ms or s.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos() as f64;
    if nanos < 1_000.0 {
        format!("{nanos:.0} ns")
    } else if nanos < 1_000_000.0 {
        format!("{:.1} µs", nanos / 1_000.0)
    } else if nanos < 1_000_000_000.0 {
        format!("{:.1} ms", nanos / 1_000_000.0)
    } else {
        format!("{:.2} s", nanos / 1_000_000_000.0)
    }
}
