//! The store: every measurement, accuracy, fusion verdict and checkpoint a run makes, and
//! the work queues that let several workers share a run. SQLite (a file, the embedded
//! default) or PostgreSQL (`postgres://...`, for workers on several machines), one schema.
//!
//! Every result is committed as soon as it exists, so a killed run loses nothing finished.
//! A fingerprint is stored as its JSON and keyed by a digest of it: a row written before a
//! field joined the fingerprint (the protocol, the runtime as loaded) stays in the store
//! under its old key, unread, and the network is measured again.

mod postgres;
mod sqlite;

pub use self::postgres::Postgres;
pub use self::sqlite::Sqlite;

use crate::{Fingerprint, Latency, Lowered, Result};
use sha2::{Digest, Sha256};
use spacetune_ir::PairRule;
use std::time::Duration;

/// What a store keeps. Implementations are safe to share between threads (a lease's
/// heartbeat renews it while the work runs) and between processes (the work queues).
pub trait Store: Send + Sync {
    /// Where the store is, for messages (a path, or a URL without its password).
    fn location(&self) -> String;

    /// A successful stored measurement; failures are not returned, so they are retried.
    /// A corrupt stored per-layer profile is an error, not a missing one.
    fn get(&self, f: &Fingerprint, hash: &str) -> Result<Option<Latency>>;
    fn put(
        &self,
        f: &Fingerprint,
        lowered: &Lowered,
        result: &std::result::Result<Latency, String>,
    ) -> Result<()>;
    /// Rows (successes and failures) stored under `f`.
    fn count(&self, f: &Fingerprint) -> Result<usize>;

    /// A recorded accuracy for a network under a training task (data set, budget, seed —
    /// the caller's canonical description).
    fn accuracy(&self, task: &str, hash: &str) -> Result<Option<f64>>;
    /// How long the recorded accuracy of a network under a task took to make, in seconds.
    fn accuracy_seconds(&self, task: &str, hash: &str) -> Result<Option<f64>>;
    fn put_accuracy(&self, a: &Accuracy<'_>) -> Result<()>;
    /// Accuracies recorded, under every task.
    fn accuracy_count(&self) -> Result<usize>;

    /// Records the fusion test of an op pair under `f`, replacing an earlier one at the
    /// same place. Verdicts at other places stay: each holds for the place it was tested at.
    fn put_fusion_pair(&self, f: &Fingerprint, verdict: &PairRule) -> Result<()>;
    /// Forgets every fusion-test verdict stored under `f` (before testing afresh).
    fn clear_fusion_pairs(&self, f: &Fingerprint) -> Result<()>;
    /// Every fusion-test verdict stored under `f`, ordered by pair and place.
    fn fusion_pairs(&self, f: &Fingerprint) -> Result<Vec<PairRule>>;

    /// Bytes kept under a key (a trained SSBN_0's weights), for every worker to read.
    fn put_blob(&self, key: &str, bytes: &[u8]) -> Result<()>;
    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Adds `items` to `queue` in this order, keeping any already there (done or not).
    fn enqueue(&self, queue: &str, items: &[String]) -> Result<()>;
    /// The first item of `queue` that is neither done nor held under a live lease, now held
    /// by `worker` for `lease`; `None` when there is none to take.
    fn claim(&self, queue: &str, worker: &str, lease: Duration) -> Result<Option<String>>;
    /// Extends `worker`'s lease on `item`; false when the worker no longer holds it.
    fn renew(&self, queue: &str, item: &str, worker: &str, lease: Duration) -> Result<bool>;
    /// Marks `item` done (whoever holds it; the holder is kept as the one who did it), or
    /// gives it back for another to take.
    fn finish(&self, queue: &str, item: &str, done: bool) -> Result<()>;
    fn queue_state(&self, queue: &str) -> Result<QueueState> {
        Ok(self
            .queues(queue)?
            .into_iter()
            .find(|(name, _)| name == queue)
            .map_or_else(QueueState::default, |(_, s)| s))
    }
    /// Every queue whose name starts with `prefix`, with its state, by name.
    fn queues(&self, prefix: &str) -> Result<Vec<(String, QueueState)>>;
}

/// One accuracy as recorded.
pub struct Accuracy<'a> {
    pub task: &'a str,
    pub hash: &'a str,
    pub id: &'a str,
    pub key: &'a str,
    pub accuracy: f64,
    pub seconds: f64,
}

/// A queue's items by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    pub total: usize,
    pub done: usize,
    /// Held under a lease that has not expired.
    pub held: usize,
    /// Claims made on its items, lapsed ones included (`total` when each item was taken
    /// once; more where a worker died or failed).
    pub claims: usize,
    /// Distinct workers that finished its items.
    pub workers: usize,
}

impl QueueState {
    pub fn finished(&self) -> bool {
        self.done == self.total
    }
}

/// Opens (creating if missing) the store at `location`: a `postgres://` or `postgresql://`
/// URL, else a SQLite file. An error names the store (a URL without its password).
pub fn open(location: &str) -> Result<Box<dyn Store>> {
    let opened: Result<Box<dyn Store>> =
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            Postgres::open(location).map(|s| Box::new(s) as Box<dyn Store>)
        } else {
            Sqlite::open(std::path::Path::new(location)).map(|s| Box::new(s) as Box<dyn Store>)
        };
    opened.map_err(|e| {
        let mut why = match e {
            crate::BackendError::Store(why) => why,
            crate::BackendError::Sqlite(e) => e.to_string(),
            e => e.to_string(),
        };
        // SQLite says "disk I/O error" when it cannot create its journal on a full disk.
        if let Some(free) =
            free_bytes(std::path::Path::new(location)).filter(|_| !location.contains("://"))
        {
            if free < 1 << 20 {
                why += &format!(" (the disk holding it has {free} bytes free)");
            }
        }
        crate::BackendError::Store(format!(
            "opening {}: {why}",
            postgres::without_password(location)
        ))
    })
}

/// Bytes free to this process on the file system of `path`'s folder (`None`: a URL, or it
/// cannot tell).
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` a buffer statvfs fills on success.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The key a fingerprint's rows are stored under, and the description kept beside it.
fn fingerprint_key(f: &Fingerprint) -> Result<(String, String)> {
    if f.protocol.is_none() {
        return Err(crate::BackendError::Unkeyed(f.to_string()));
    }
    let description = serde_json::to_string(f).expect("fingerprints serialise");
    let digest = Sha256::digest(description.as_bytes());
    let id: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Ok((id, description))
}

fn per_layer_json(l: Option<&Latency>) -> Option<String> {
    l.and_then(|l| l.per_layer.as_ref())
        .map(|p| serde_json::to_string(p).expect("per-layer times serialise"))
}

fn parse_per_layer(hash: &str, json: &str) -> Result<Vec<spacetune_ir::LayerTime>> {
    serde_json::from_str(json).map_err(|e| {
        crate::BackendError::Runtime(format!(
            "the stored per-layer profile of network {hash} is corrupt ({e}): {json}"
        ))
    })
}

fn parse_verdict(json: &str) -> Result<PairRule> {
    serde_json::from_str(json).map_err(|e| {
        crate::BackendError::Runtime(format!(
            "a stored fusion verdict does not parse ({e}): {json}"
        ))
    })
}

/// A short content digest (16 hex digits): of a training key, a queue's items, a run.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who this process is, for leases: host, process id and a random tag.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}:{}:{nanos:08x}", std::process::id())
}
