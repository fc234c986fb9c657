//! An ordered, parallel map over the selected files.
//!
//! The calling thread reads every input, in chunks, and worker threads
//! transform them. Reading stays on one thread because git2's `Repository`
//! is not `Sync`, and because libgit2 handles of one repository share a
//! lock per pack file. When each worker read with its own handle, a third
//! of the workers' context switches in a profile were waits for that lock.
//! The results come back to the calling thread in input order, so the
//! outcome does not depend on scheduling.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{mpsc, Arc, Mutex};

/// Items read and sent to a worker at a time. At a few KiB per document a
/// chunk is a few hundred KiB, and at most two chunks per worker wait in
/// the queue.
const CHUNK_LEN: usize = 64;

/// Returns the number of worker threads for `items` items: one per
/// available core, and no more than there are chunks.
pub(super) fn worker_count(items: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(items.div_ceil(CHUNK_LEN))
        .max(1)
}

/// Reads each item with `read` on the calling thread, transforms it with
/// `work` on `states.len()` worker threads, each owning one of `states`,
/// and hands the results to `consume` on the calling thread in the order
/// of `items`.
///
/// The first error of `read` or `consume` stops reading and is returned,
/// after the workers finish the chunks they have. No later item is
/// consumed. A panic in `work` is propagated.
pub(super) fn map_in_order<Item, Input, Output, State, Error>(
    items: &[Item],
    mut read: impl FnMut(&Item) -> Result<Input, Error>,
    states: Vec<State>,
    work: impl Fn(&mut State, &Item, Input) -> Output + Sync,
    mut consume: impl FnMut(&Item, Output) -> Result<(), Error>,
) -> Result<(), Error>
where
    Item: Sync,
    Input: Send,
    Output: Send,
    State: Send,
{
    assert!(!states.is_empty(), "map_in_order needs at least one worker");

    std::thread::scope(|scope| {
        let (input_sender, input_receiver) =
            mpsc::sync_channel::<(usize, Vec<Input>)>(states.len() * 2);
        // Workers own the receiver, so sending fails instead of blocking
        // forever when every worker has panicked.
        let input_receiver = Arc::new(Mutex::new(input_receiver));
        let (output_sender, output_receiver) = mpsc::channel::<(usize, Vec<Output>)>();
        for mut state in states {
            let input_receiver = Arc::clone(&input_receiver);
            let output_sender = output_sender.clone();
            let work = &work;
            scope.spawn(move || loop {
                // The guard is dropped at the end of this statement, so the
                // lock is not held while working.
                let received = input_receiver
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .recv();
                let Ok((chunk, inputs)) = received else {
                    break;
                };
                let start = chunk * CHUNK_LEN;
                let outputs = inputs
                    .into_iter()
                    .zip(&items[start..])
                    .map(|(input, item)| work(&mut state, item, input))
                    .collect();
                if output_sender.send((chunk, outputs)).is_err() {
                    break;
                }
            });
        }
        drop(input_receiver);
        // The last loop below ends when every worker has dropped its sender.
        drop(output_sender);

        let mut reorder = Reorder {
            next: 0,
            waiting: BTreeMap::new(),
        };
        for (chunk, chunk_items) in items.chunks(CHUNK_LEN).enumerate() {
            let inputs = chunk_items
                .iter()
                .map(&mut read)
                .collect::<Result<Vec<Input>, Error>>()?;
            if input_sender.send((chunk, inputs)).is_err() {
                // Every worker has stopped, which only a panic does, and the
                // scope propagates it.
                break;
            }
            while let Ok((chunk, outputs)) = output_receiver.try_recv() {
                reorder.add(chunk, outputs, items, &mut consume)?;
            }
        }
        drop(input_sender);
        for (chunk, outputs) in output_receiver {
            reorder.add(chunk, outputs, items, &mut consume)?;
        }
        Ok(())
    })
}

/// Chunks that finished early, held until the chunks before them arrive.
struct Reorder<Output> {
    next: usize,
    waiting: BTreeMap<usize, Vec<Output>>,
}

impl<Output> Reorder<Output> {
    fn add<Item, Error>(
        &mut self,
        chunk: usize,
        outputs: Vec<Output>,
        items: &[Item],
        consume: &mut impl FnMut(&Item, Output) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.waiting.insert(chunk, outputs);
        while let Some(outputs) = self.waiting.remove(&self.next) {
            let start = self.next * CHUNK_LEN;
            for (item, output) in items[start..].iter().zip(outputs) {
                consume(item, output)?;
            }
            self.next += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_input_order() {
        let items: Vec<usize> = (0..1000).collect();
        let mut seen = Vec::new();
        let mut reads = 0;
        map_in_order(
            &items,
            |item| {
                reads += 1;
                Ok::<usize, ()>(item * 2)
            },
            vec![0usize; 3],
            |calls, item, doubled| {
                *calls += 1;
                // Uneven work, so chunks finish out of order.
                if item % 97 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                (*item, doubled)
            },
            |item, (echoed, doubled)| {
                assert_eq!(*item, echoed);
                seen.push(doubled);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(reads, items.len());
        let expected: Vec<usize> = items.iter().map(|item| item * 2).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn read_error_stops_before_later_items() {
        let items: Vec<usize> = (0..500).collect();
        let mut consumed = Vec::new();
        let result = map_in_order(
            &items,
            |item| if *item == 300 { Err(*item) } else { Ok(*item) },
            vec![(); 2],
            |_, _, input| input,
            |_, output| {
                consumed.push(output);
                Ok(())
            },
        );
        assert_eq!(result, Err(300));
        assert!(consumed.len() <= 300, "{} consumed", consumed.len());
        assert!(consumed
            .iter()
            .enumerate()
            .all(|(index, item)| index == *item));
    }

    #[test]
    fn consume_error_stops_at_its_item() {
        let items: Vec<usize> = (0..500).collect();
        let mut consumed = Vec::new();
        let result = map_in_order(
            &items,
            |item| Ok(*item),
            vec![(); 2],
            |_, _, input| input,
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
            |item| Ok::<u8, ()>(*item),
            vec![()],
            |_, _, input| input,
            |_, _| {
                consumed += 1;
                Ok(())
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
