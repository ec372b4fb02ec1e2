//! Work in parallel, deliver in order: the one helper behind every
//! pipeline stage that hands out pieces to the rayon pool and must pass
//! their results on in the order it read them (`wal push` sealing a
//! segment's pieces, `wal fetch` opening them, backup's packer sealing a
//! batch of chunks, restore opening the blobs of a fetched range).
//!
//! # Why a scope and a channel, not `par_iter().collect()`
//! A collect waits for the whole input before anything comes out. The
//! stages above read their input piece by piece on the calling thread
//! (a file, a pack, a stream) and have serial work to do with each result
//! (write it into a pack, hash it, hand it to PostgreSQL). With [`in_order`]
//! the caller submits a piece as soon as it has read it and takes back, in
//! order, whatever is finished between reads, so reading, the parallel work
//! and the serial consumer overlap. Jobs borrow from the caller (a slot of a
//! window, a slice of a fetched range): they run in a rayon scope that ends
//! before [`in_order`] returns.
//!
//! # Bounds
//! Every submitted result is held until it is taken, so the window of work
//! in flight is the caller's input, and each caller's input is already a
//! bounded buffer: a WAL window (`wal::window`), a backup batch, one
//! fetched range of a pack.

use std::collections::BTreeMap;
use std::sync::mpsc;

/// A job's result, or its panic, to be resumed on the taking thread.
type Outcome<T> = std::thread::Result<T>;

/// Results of jobs run on the pool, taken back in submission order. Made by
/// [`in_order`].
pub(crate) struct Ordered<'o, 's, T> {
    scope: &'o rayon::Scope<'s>,
    tx: mpsc::Sender<(usize, Outcome<T>)>,
    rx: &'o mpsc::Receiver<(usize, Outcome<T>)>,
    waiting: BTreeMap<usize, Outcome<T>>,
    submitted: usize,
    taken: usize,
}

/// Runs `body` with an [`Ordered`] whose jobs run on the rayon pool. Returns
/// once `body` has and every job it submitted has finished (also when
/// `body` returns early, e.g. with an error: results not taken are dropped).
/// A panicking job panics the thread that takes its result, or this call
/// once every job has finished if none does.
///
/// Blocks the calling thread, which must not be one of the pool's: its
/// jobs would wait behind the blocked thread (a deadlock on a one-thread
/// pool). On a tokio worker, call it within `tokio::task::block_in_place`.
pub(crate) fn in_order<'s, T, R>(body: impl FnOnce(&mut Ordered<'_, 's, T>) -> R) -> R
where
    T: Send + 's,
{
    assert!(rayon::current_thread_index().is_none(), "in_order waits for the pool: never call it on a pool thread");
    let (tx, rx) = mpsc::channel();
    let (r, untaken) = rayon::in_place_scope(|scope| {
        let mut ordered = Ordered { scope, tx, rx: &rx, waiting: BTreeMap::new(), submitted: 0, taken: 0 };
        let r = body(&mut ordered);
        (r, std::mem::take(&mut ordered.waiting))
    });
    // Every job has finished: a panic among the results nobody took is
    // this call's.
    if let Some(panic) = untaken.into_values().chain(rx.try_iter().map(|(_, o)| o)).find_map(Result::err) {
        std::panic::resume_unwind(panic);
    }
    r
}

impl<'s, T: Send + 's> Ordered<'_, 's, T> {
    /// Runs `job` on the pool as the next piece.
    pub(crate) fn spawn(&mut self, job: impl FnOnce() -> T + Send + 's) {
        let i = self.submitted;
        self.submitted += 1;
        let tx = self.tx.clone();
        self.scope.spawn(move |_| {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            // The receiver outlives every job: a result nobody takes is
            // still looked at for a panic when the scope has ended.
            let _ = tx.send((i, outcome));
        });
    }

    /// The next piece's result, computed on this thread (for example the
    /// last piece of a window, which this thread would otherwise only wait
    /// for).
    pub(crate) fn put(&mut self, t: T) {
        self.waiting.insert(self.submitted, Ok(t));
        self.submitted += 1;
    }

    /// The next result in order if it is finished; never waits.
    pub(crate) fn try_next(&mut self) -> Option<T> {
        while let Ok((i, r)) = self.rx.try_recv() {
            self.waiting.insert(i, r);
        }
        self.take()
    }

    /// The next result in order, waiting for it; `None` once every
    /// submitted piece has been taken.
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Option<T> {
        if self.taken == self.submitted {
            return None;
        }
        loop {
            if let Some(t) = self.take() {
                return Some(t);
            }
            // This struct holds a sender, so the channel never closes; each
            // spawned job sends exactly once, its panic included.
            let (i, r) = self.rx.recv().expect("a sender is held");
            self.waiting.insert(i, r);
        }
    }

    /// Hands each finished result, in order, to `f`; never waits. Stops at
    /// `f`'s first error.
    pub(crate) fn take_ready<E>(&mut self, mut f: impl FnMut(T) -> Result<(), E>) -> Result<(), E> {
        while let Some(t) = self.try_next() {
            f(t)?;
        }
        Ok(())
    }

    /// Hands every result not taken yet, in order, to `f`, waiting for
    /// each. Stops at `f`'s first error.
    pub(crate) fn take_all<E>(&mut self, mut f: impl FnMut(T) -> Result<(), E>) -> Result<(), E> {
        while let Some(t) = self.next() {
            f(t)?;
        }
        Ok(())
    }

    fn take(&mut self) -> Option<T> {
        let r = self.waiting.remove(&self.taken)?;
        self.taken += 1;
        match r {
            Ok(t) => Some(t),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_come_back_in_submission_order_whatever_order_they_finish_in() {
        let got: Vec<usize> = in_order(|o| {
            for i in 0..64usize {
                // Earlier pieces take longer, so they finish last.
                o.spawn(move || {
                    std::thread::sleep(Duration::from_micros(((64 - i) * 50) as u64));
                    i
                });
            }
            std::iter::from_fn(|| o.next()).collect()
        });
        assert_eq!(got, (0..64).collect::<Vec<_>>());
    }

    #[test]
    fn pieces_put_inline_take_their_place_among_spawned_ones() {
        let got: Vec<&str> = in_order(|o| {
            o.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                "a"
            });
            o.put("b");
            o.spawn(|| "c");
            // "b" is done but must wait for "a".
            assert_eq!(o.try_next(), None);
            std::iter::from_fn(|| o.next()).collect()
        });
        assert_eq!(got, ["a", "b", "c"]);
    }

    #[test]
    fn taking_stops_at_the_consumers_first_error() {
        let mut seen = Vec::new();
        let r: Result<(), usize> = in_order(|o| {
            for i in 0..6usize {
                o.spawn(move || i);
            }
            o.take_all(|i| {
                seen.push(i);
                if i == 3 {
                    Err(i)
                } else {
                    Ok(())
                }
            })
        });
        assert_eq!(r, Err(3));
        assert_eq!(seen, [0, 1, 2, 3]);
    }

    #[test]
    fn jobs_borrow_from_the_caller_and_write_disjoint_slots() {
        let mut buf = vec![0u8; 1024];
        let input: Vec<u8> = (0..=255).cycle().take(1024).collect();
        let sums: Vec<u32> = in_order(|o| {
            let mut rest: &mut [u8] = &mut buf;
            for piece in input.chunks(100) {
                let (slot, tail) = std::mem::take(&mut rest).split_at_mut(piece.len());
                rest = tail;
                o.spawn(move || {
                    slot.copy_from_slice(piece);
                    piece.iter().map(|&b| u32::from(b)).sum()
                });
            }
            std::iter::from_fn(|| o.next()).collect()
        });
        assert_eq!(buf, input);
        let want: Vec<u32> = input.chunks(100).map(|c| c.iter().map(|&b| u32::from(b)).sum()).collect();
        assert_eq!(sums, want);
    }

    #[test]
    fn a_caller_that_stops_early_still_waits_for_its_jobs() {
        let done = std::sync::atomic::AtomicUsize::new(0);
        let first = in_order(|o| {
            for _ in 0..8 {
                let done = &done;
                o.spawn(move || {
                    std::thread::sleep(Duration::from_millis(5));
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                });
            }
            o.next().map(|_| ())
        });
        assert_eq!(first, Some(()));
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 8);
    }

    #[test]
    #[should_panic(expected = "piece 3 failed")]
    fn a_panic_nobody_took_panics_the_call_once_its_jobs_are_done() {
        let _: Result<(), ()> = in_order(|o| {
            for i in 0..6 {
                o.spawn(move || {
                    std::thread::sleep(Duration::from_millis(2));
                    assert_ne!(i, 3, "piece 3 failed");
                    i
                });
            }
            // Stops at once, as a consumer's error would.
            Err(())
        });
    }

    #[test]
    #[should_panic(expected = "never call it on a pool thread")]
    fn calling_from_a_pool_thread_is_refused_instead_of_deadlocking() {
        rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| in_order(|o| o.put(1)));
    }

    #[test]
    #[should_panic(expected = "piece 2 failed")]
    fn a_panicking_job_panics_the_taker_instead_of_hanging_it() {
        in_order(|o| {
            for i in 0..4 {
                o.spawn(move || {
                    assert_ne!(i, 2, "piece 2 failed");
                    i
                });
            }
            while o.next().is_some() {}
        });
    }
}
