//! An ordered, parallel map over the selected files.
//!
//! Worker threads take chunks of items in turn and transform them, each with
//! its own state (git2's `Repository` is not `Sync`, so every worker opens
//! its own handle). The results come back to the calling thread in item
//! order, so the outcome does not depend on scheduling.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// Items a worker takes at a time: enough to make taking a chunk cheap,
/// few enough that the workers finish close together.
const CHUNK_LEN: usize = 64;

/// Returns the number of worker threads for `items` items: one per
/// available core, and no more than there are chunks.
pub(super) fn worker_count(items: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(items.div_ceil(CHUNK_LEN))
        .max(1)
}

/// Transforms each item with `work` on `states.len()` worker threads, each
/// owning one of `states`, and hands the results to `consume` on the
/// calling thread in the order of `items`.
///
/// When `consume` returns an error, the workers stop after their current
/// chunk, no later item is consumed, and the error is returned. A panic in
/// `work` is propagated.
pub(super) fn map_in_order<Item, Output, State, Error>(
    items: &[Item],
    states: Vec<State>,
    work: impl Fn(&mut State, &Item) -> Output + Sync,
    mut consume: impl FnMut(&Item, Output) -> Result<(), Error>,
) -> Result<(), Error>
where
    Item: Sync,
    Output: Send,
    State: Send,
{
    assert!(!states.is_empty(), "map_in_order needs at least one worker");
    let next_chunk = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);

    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::channel::<(usize, Vec<Output>)>();
        for mut state in states {
            let sender = sender.clone();
            let (next_chunk, stop, work) = (&next_chunk, &stop, &work);
            scope.spawn(move || loop {
                let chunk = next_chunk.fetch_add(1, Ordering::Relaxed);
                let start = chunk * CHUNK_LEN;
                if start >= items.len() || stop.load(Ordering::Relaxed) {
                    break;
                }
                let end = (start + CHUNK_LEN).min(items.len());
                let outputs = items[start..end]
                    .iter()
                    .map(|item| work(&mut state, item))
                    .collect();
                if sender.send((chunk, outputs)).is_err() {
                    break;
                }
            });
        }
        // The loop below ends when every worker has dropped its sender.
        drop(sender);

        let mut next = 0;
        let mut waiting: BTreeMap<usize, Vec<Output>> = BTreeMap::new();
        for (chunk, outputs) in receiver {
            waiting.insert(chunk, outputs);
            // Chunks that finished early wait for the chunks before them.
            while let Some(outputs) = waiting.remove(&next) {
                let start = next * CHUNK_LEN;
                for (item, output) in items[start..].iter().zip(outputs) {
                    if let Err(err) = consume(item, output) {
                        stop.store(true, Ordering::Relaxed);
                        return Err(err);
                    }
                }
                next += 1;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_input_order() {
        let items: Vec<usize> = (0..1000).collect();
        let mut seen = Vec::new();
        map_in_order(
            &items,
            vec![0usize; 3],
            |calls, item| {
                *calls += 1;
                // Uneven work, so chunks finish out of order.
                if item % 97 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                (*item, item * 2)
            },
            |item, (echoed, doubled)| {
                assert_eq!(*item, echoed);
                seen.push(doubled);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        let expected: Vec<usize> = items.iter().map(|item| item * 2).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn consume_error_stops_at_its_item() {
        let items: Vec<usize> = (0..500).collect();
        let mut consumed = Vec::new();
        let result = map_in_order(
            &items,
            vec![(); 2],
            |_, item| *item,
            |_, output| {
                if output == 300 {
                    return Err(output);
                }
                consumed.push(output);
                Ok(())
            },
        );
        assert_eq!(result, Err(300));
        let expected: Vec<usize> = (0..300).collect();
        assert_eq!(consumed, expected);
    }

    #[test]
    fn empty_input_consumes_nothing() {
        let items: Vec<u8> = Vec::new();
        let mut consumed = 0;
        map_in_order(
            &items,
            vec![()],
            |_, item| *item,
            |_, _| {
                consumed += 1;
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(consumed, 0);
    }

    #[test]
    fn worker_count_follows_chunks() {
        assert_eq!(worker_count(0), 1);
        assert_eq!(worker_count(CHUNK_LEN), 1);
        assert!(worker_count(CHUNK_LEN * 64) >= 1);
    }
}
