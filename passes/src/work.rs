//! Work shared through the store: every process of a run (one, `--workers N` local ones, or
//! a Slurm array's) enqueues the same items and takes them one at a time under a lease that
//! a heartbeat renews while the item is worked on. A worker killed mid-item leaves its lease
//! to expire and another takes the item; nothing finished is lost or done twice.

use crate::ctx::{Others, Stage};
use spacetune_backends::store::Store;
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::Duration;

type Failure = Box<dyn std::error::Error>;

/// One process's part in a run.
pub struct Worker<'a> {
    pub store: &'a dyn Store,
    /// Who holds a lease (host, process id, a random tag).
    pub name: String,
    /// How long a claim lasts without a heartbeat (renewed every third of it).
    pub lease: Duration,
    /// Set when other processes do all the work (a Slurm array): claim nothing, wait.
    pub others: Option<&'a dyn Others>,
}

/// What one queue is, for [`Worker::run`].
pub struct Queue<'a> {
    pub name: &'a str,
    pub items: &'a [String],
    /// Hears of the waiting; with `ticks`, one tick per item done, by anyone.
    pub stage: &'a dyn Stage,
    /// The label of an item's tick (`None`: the queue's items are not the stage's).
    pub ticks: Option<&'a dyn Fn(&str) -> String>,
}

impl Worker<'_> {
    /// Enqueues the queue's items (those already there stay as they are), works on every
    /// one this worker can claim, and returns once the whole queue is done — by this
    /// worker or by others, whose items it takes over when their leases lapse. An item
    /// whose work fails is given back and the error returned.
    pub fn run(
        &self,
        q: &Queue<'_>,
        mut work: impl FnMut(&str) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        self.store.enqueue(q.name, q.items)?;
        // Items shown done on the stage.
        let mut shown = 0;
        let mut waiting = false;
        loop {
            let claimed = match self.others {
                None => self.store.claim(q.name, &self.name, self.lease)?,
                Some(_) => None,
            };
            if let Some(item) = claimed {
                waiting = false;
                match self.heartbeat(q.name, &item, || work(&item)) {
                    Ok(()) => self.store.finish(q.name, &item, true)?,
                    Err(e) => {
                        // Given back so that no one waits out the lease; if even that fails
                        // (the store is full or gone), the lease lapses: the first error is
                        // the one to report.
                        let _ = self.store.finish(q.name, &item, false);
                        return Err(e);
                    }
                }
                if let Some(label) = q.ticks {
                    q.stage.tick(&label(&item));
                    shown += 1;
                }
                continue;
            }
            let state = self.store.queue_state(q.name)?;
            if q.ticks.is_some() {
                for _ in shown..state.done {
                    q.stage.tick("by another worker");
                }
                shown = shown.max(state.done);
            }
            if state.finished() {
                return Ok(());
            }
            if let Some(others) = self.others {
                others.check().map_err(|why| {
                    format!(
                        "{why}: {} of {} items of queue {} are not done (what is done stays in {}; run again to finish)",
                        state.total - state.done,
                        state.total,
                        q.name,
                        self.store.location()
                    )
                })?;
            }
            if !waiting {
                q.stage.working(&format!(
                    "{} of {} with other workers",
                    state.total - state.done,
                    state.total
                ));
                waiting = true;
            }
            std::thread::sleep(self.poll());
        }
    }

    /// How often an idle worker looks for work freed by a lapsed lease.
    fn poll(&self) -> Duration {
        (self.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Runs `f` while a thread renews this worker's lease on `item`.
    fn heartbeat<T>(&self, queue: &str, item: &str, f: impl FnOnce() -> T) -> T {
        let (stop, stopped) = channel::<()>();
        let (store, name, lease) = (self.store, self.name.as_str(), self.lease);
        std::thread::scope(|s| {
            s.spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(lease / 3) {
                    // A lost lease is not fatal here: the item is done at most twice, and
                    // its result stored once.
                    let _ = store.renew(queue, item, name, lease);
                }
            });
            let out = f();
            drop(stop);
            out
        })
    }
}
