//! The SQLite store: one file, the embedded default. Several processes may share it (WAL,
//! a busy timeout; a claim is one immediate transaction).

use super::{Accuracy, QueueState, Store};
use crate::{Fingerprint, Latency, Lowered, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use spacetune_ir::PairRule;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub struct Sqlite {
    conn: Mutex<Connection>,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fingerprints (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS measurements (
    fingerprint TEXT NOT NULL REFERENCES fingerprints(id),
    network_hash TEXT NOT NULL,
    network_id TEXT NOT NULL,
    p10_ms REAL, median_ms REAL, mean_ms REAL, var_ms2 REAL,
    count INTEGER, noisy INTEGER, per_layer TEXT,
    failure TEXT,
    unscaled INTEGER NOT NULL DEFAULT 0,
    measured_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (fingerprint, network_hash)
);
CREATE TABLE IF NOT EXISTS accuracies (
    task TEXT NOT NULL,
    network_hash TEXT NOT NULL,
    network_id TEXT NOT NULL,
    arch_key TEXT NOT NULL,
    accuracy REAL NOT NULL,
    seconds REAL NOT NULL,
    measured_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (task, network_hash)
);
CREATE TABLE IF NOT EXISTS fusion_verdicts (
    fingerprint TEXT NOT NULL REFERENCES fingerprints(id),
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    place TEXT NOT NULL,
    verdict TEXT NOT NULL,
    measured_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (fingerprint, a, b, place)
);
CREATE TABLE IF NOT EXISTS blobs (
    key TEXT PRIMARY KEY,
    bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS work (
    queue TEXT NOT NULL,
    item TEXT NOT NULL,
    seq INTEGER NOT NULL,
    worker TEXT,
    expires REAL,
    done INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, item)
);
";

/// Seconds since the Unix epoch, by the database's clock (every worker's lease is judged
/// by one clock).
const NOW: &str = "((julianday('now') - 2440587.5) * 86400.0)";

/// Brings a store written by an earlier version up to the schema (`PRAGMA user_version`:
/// 1 added `measurements.unscaled`, rows from before were all scaled or said nothing;
/// 2 added `blobs` and `work`, created above).
fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        let has: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('measurements') WHERE name = 'unscaled'",
            [],
            |r| r.get(0),
        )?;
        if has == 0 {
            conn.execute_batch(
                "ALTER TABLE measurements ADD COLUMN unscaled INTEGER NOT NULL DEFAULT 0",
            )?;
        }
    }
    if version < 2 {
        conn.pragma_update(None, "user_version", 2)?;
    }
    Ok(())
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(crate::BackendError::io(format!(
                "creating {}",
                dir.display()
            )))?;
        }
        let conn = Connection::open(path)?;
        Self::init(conn, path.display().to_string())
    }

    pub fn in_memory() -> Result<Sqlite> {
        Self::init(Connection::open_in_memory()?, ":memory:".into())
    }

    fn init(conn: Connection, path: String) -> Result<Sqlite> {
        // WAL: a writer killed mid-run leaves every committed row readable.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Sqlite {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic elsewhere cannot leave a half-done statement: each is its own transaction.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, conn: &Connection, f: &Fingerprint) -> Result<String> {
        let (id, description) = super::fingerprint_key(f)?;
        conn.execute(
            "INSERT OR IGNORE INTO fingerprints (id, description) VALUES (?1, ?2)",
            params![id, description],
        )?;
        Ok(id)
    }

    /// The queues matching `condition` (on parameter ?1 = `value`), with their states.
    fn queues_where(&self, condition: &str, value: &str) -> Result<Vec<(String, QueueState)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT queue, COUNT(*), SUM(done),
                    SUM(done = 0 AND worker IS NOT NULL AND expires >= {NOW}), SUM(attempts),
                    COUNT(DISTINCT CASE WHEN done THEN worker END)
             FROM work WHERE {condition} GROUP BY queue ORDER BY queue"
        ))?;
        let rows = stmt.query_map(params![value], |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|n| n as usize);
            Ok((
                r.get(0)?,
                QueueState {
                    total: n(1)?,
                    done: n(2)?,
                    held: n(3)?,
                    claims: n(4)?,
                    workers: n(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    #[cfg(test)]
    fn execute(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap();
    }
}

impl Store for Sqlite {
    fn location(&self) -> String {
        self.path.clone()
    }

    fn get(&self, f: &Fingerprint, hash: &str) -> Result<Option<Latency>> {
        let conn = self.conn();
        let key = self.key(&conn, f)?;
        let row = conn
            .query_row(
                "SELECT p10_ms, median_ms, mean_ms, var_ms2, count, noisy, unscaled, per_layer
                 FROM measurements
                 WHERE fingerprint = ?1 AND network_hash = ?2 AND failure IS NULL",
                params![key, hash],
                |r| {
                    let latency = Latency {
                        p10_ms: r.get(0)?,
                        median_ms: r.get(1)?,
                        mean_ms: r.get(2)?,
                        var_ms2: r.get(3)?,
                        count: r.get(4)?,
                        noisy: r.get(5)?,
                        unscaled: r.get(6)?,
                        per_layer: None,
                    };
                    Ok((latency, r.get::<_, Option<String>>(7)?))
                },
            )
            .optional()?;
        let Some((mut latency, per_layer)) = row else {
            return Ok(None);
        };
        if let Some(json) = per_layer {
            latency.per_layer = Some(super::parse_per_layer(hash, &json)?);
        }
        Ok(Some(latency))
    }

    fn put(
        &self,
        f: &Fingerprint,
        lowered: &Lowered,
        result: &std::result::Result<Latency, String>,
    ) -> Result<()> {
        let conn = self.conn();
        let key = self.key(&conn, f)?;
        let (l, failure) = match result {
            Ok(l) => (Some(l), None),
            Err(e) => (None, Some(e.as_str())),
        };
        conn.execute(
            "INSERT OR REPLACE INTO measurements
             (fingerprint, network_hash, network_id, p10_ms, median_ms, mean_ms, var_ms2,
              count, noisy, per_layer, failure, unscaled)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                key,
                lowered.hash,
                lowered.id,
                l.map(|l| l.p10_ms),
                l.map(|l| l.median_ms),
                l.map(|l| l.mean_ms),
                l.map(|l| l.var_ms2),
                l.map(|l| l.count),
                l.map(|l| l.noisy),
                super::per_layer_json(l),
                failure,
                l.is_some_and(|l| l.unscaled),
            ],
        )?;
        Ok(())
    }

    fn count(&self, f: &Fingerprint) -> Result<usize> {
        let conn = self.conn();
        let key = self.key(&conn, f)?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM measurements WHERE fingerprint = ?1",
            params![key],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    fn accuracy(&self, task: &str, hash: &str) -> Result<Option<f64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT accuracy FROM accuracies WHERE task = ?1 AND network_hash = ?2",
                params![task, hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn accuracy_seconds(&self, task: &str, hash: &str) -> Result<Option<f64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seconds FROM accuracies WHERE task = ?1 AND network_hash = ?2",
                params![task, hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn put_accuracy(&self, a: &Accuracy<'_>) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO accuracies
             (task, network_hash, network_id, arch_key, accuracy, seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![a.task, a.hash, a.id, a.key, a.accuracy, a.seconds],
        )?;
        Ok(())
    }

    fn accuracy_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM accuracies", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    fn put_fusion_pair(&self, f: &Fingerprint, verdict: &PairRule) -> Result<()> {
        let conn = self.conn();
        let key = self.key(&conn, f)?;
        let json = serde_json::to_string(verdict).expect("a verdict serialises");
        conn.execute(
            "INSERT OR REPLACE INTO fusion_verdicts (fingerprint, a, b, place, verdict)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, verdict.a, verdict.b, verdict.place, json],
        )?;
        Ok(())
    }

    fn clear_fusion_pairs(&self, f: &Fingerprint) -> Result<()> {
        let conn = self.conn();
        let key = self.key(&conn, f)?;
        conn.execute(
            "DELETE FROM fusion_verdicts WHERE fingerprint = ?1",
            params![key],
        )?;
        Ok(())
    }

    fn fusion_pairs(&self, f: &Fingerprint) -> Result<Vec<PairRule>> {
        let conn = self.conn();
        let key = self.key(&conn, f)?;
        let mut stmt = conn.prepare(
            "SELECT verdict FROM fusion_verdicts WHERE fingerprint = ?1 ORDER BY a, b, place",
        )?;
        let rows = stmt.query_map(params![key], |r| r.get::<_, String>(0))?;
        rows.map(|json| super::parse_verdict(&json?)).collect()
    }

    fn put_blob(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO blobs (key, bytes) VALUES (?1, ?2)",
            params![key, bytes],
        )?;
        Ok(())
    }

    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT bytes FROM blobs WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn enqueue(&self, queue: &str, items: &[String]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt =
                tx.prepare("INSERT OR IGNORE INTO work (queue, item, seq) VALUES (?1, ?2, ?3)")?;
            for (seq, item) in items.iter().enumerate() {
                stmt.execute(params![queue, item, seq as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn claim(&self, queue: &str, worker: &str, lease: Duration) -> Result<Option<String>> {
        let mut conn = self.conn();
        // Immediate: the write lock is taken before the read, so two processes never pick
        // the same item (SQLite's stand-in for FOR UPDATE SKIP LOCKED).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let item: Option<String> = tx
            .query_row(
                &format!(
                    "SELECT item FROM work WHERE queue = ?1 AND done = 0
                     AND (worker IS NULL OR expires < {NOW}) ORDER BY seq LIMIT 1"
                ),
                params![queue],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(item) = &item {
            tx.execute(
                &format!(
                    "UPDATE work SET worker = ?3, expires = {NOW} + ?4, attempts = attempts + 1
                     WHERE queue = ?1 AND item = ?2"
                ),
                params![queue, item, worker, lease.as_secs_f64()],
            )?;
        }
        tx.commit()?;
        Ok(item)
    }

    fn renew(&self, queue: &str, item: &str, worker: &str, lease: Duration) -> Result<bool> {
        let n = self.conn().execute(
            &format!(
                "UPDATE work SET expires = {NOW} + ?4
                 WHERE queue = ?1 AND item = ?2 AND worker = ?3 AND done = 0"
            ),
            params![queue, item, worker, lease.as_secs_f64()],
        )?;
        Ok(n == 1)
    }

    fn finish(&self, queue: &str, item: &str, done: bool) -> Result<()> {
        self.conn().execute(
            "UPDATE work SET done = ?3, expires = NULL,
                    worker = CASE WHEN ?3 THEN worker END
             WHERE queue = ?1 AND item = ?2",
            params![queue, item, done],
        )?;
        Ok(())
    }

    fn queues(&self, prefix: &str) -> Result<Vec<(String, QueueState)>> {
        self.queues_where("substr(queue, 1, length(?1)) = ?1", prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Protocol;
    use crate::{BackendError, Latency};

    fn fingerprint() -> Fingerprint {
        Fingerprint {
            backend: "ort".into(),
            runtime: "onnxruntime 1.32.0 (abc)".into(),
            options: Default::default(),
            threads: 1,
            node: None,
            protocol: None,
        }
    }

    fn stored(cache: &Sqlite, f: &Fingerprint, ms: f64) -> Lowered {
        let l = Lowered {
            id: "n".into(),
            hash: "h".into(),
            graph: Default::default(),
            text: String::new(),
            bytes: Vec::new(),
        };
        cache.put(f, &l, &Ok(Latency::exact(ms))).unwrap();
        l
    }

    #[test]
    fn a_quick_protocol_result_is_not_served_to_a_full_protocol_run() {
        let cache = Sqlite::in_memory().unwrap();
        let quick = fingerprint().under(&Protocol::quick());
        let full = fingerprint().under(&Protocol::default());
        let l = stored(&cache, &quick, 1.5);
        assert_eq!(cache.get(&quick, &l.hash).unwrap().unwrap().p10_ms, 1.5);
        assert!(cache.get(&full, &l.hash).unwrap().is_none());
        let tweaked = Protocol {
            window_ms: 7.0,
            ..Protocol::default()
        };
        assert!(cache
            .get(&fingerprint().under(&tweaked), &l.hash)
            .unwrap()
            .is_none());
        assert!(tweaked.label().starts_with("custom@"));
        assert!(Protocol::quick().label().starts_with("quick@"));
        // Another core: the same preset, named as such, under a key of its own.
        let pinned = Protocol {
            pin: crate::pin::Pin::Core(0),
            ..Protocol::quick()
        };
        assert!(pinned.label().starts_with("quick@"), "{}", pinned.label());
        assert!(pinned.label().ends_with(" cpu=0"), "{}", pinned.label());
        assert!(cache
            .get(&fingerprint().under(&pinned), &l.hash)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_corrupt_stored_profile_is_an_error() {
        let cache = Sqlite::in_memory().unwrap();
        let f = fingerprint().under(&Protocol::default());
        let l = stored(&cache, &f, 1.0);
        cache.execute("UPDATE measurements SET per_layer = '[{\"region\": 3'");
        let err = cache.get(&f, &l.hash).unwrap_err().to_string();
        assert!(
            err.contains("per-layer profile of network h is corrupt"),
            "{err}"
        );
    }

    #[test]
    fn a_store_from_before_the_unscaled_flag_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(&SCHEMA.replace("    unscaled INTEGER NOT NULL DEFAULT 0,\n", ""))
            .unwrap();
        drop(old);
        let cache = Sqlite::open(&path).unwrap();
        let f = fingerprint().under(&Protocol::default());
        let l = stored(&cache, &f, 2.0);
        assert!(!cache.get(&f, &l.hash).unwrap().unwrap().unscaled);
        drop(cache);
        Sqlite::open(&path).unwrap(); // a second open does not migrate again
    }

    #[test]
    fn a_queue_hands_each_item_to_one_worker_until_its_lease_lapses() {
        let store = Sqlite::in_memory().unwrap();
        let items: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        store.enqueue("q", &items).unwrap();
        store.enqueue("q", &items[..1]).unwrap(); // again: nothing changes
        let long = Duration::from_secs(60);
        assert_eq!(store.claim("q", "w1", long).unwrap().as_deref(), Some("a"));
        assert_eq!(store.claim("q", "w2", long).unwrap().as_deref(), Some("b"));
        assert!(store.renew("q", "a", "w1", long).unwrap());
        assert!(
            !store.renew("q", "a", "w2", long).unwrap(),
            "w2 does not hold a"
        );
        // Given back (its work failed): the next claim takes it again.
        store.finish("q", "b", false).unwrap();
        assert_eq!(store.claim("q", "w3", long).unwrap().as_deref(), Some("b"));
        store.finish("q", "a", true).unwrap();
        store.finish("q", "b", true).unwrap();
        // A lease that lapses: its item goes to the next worker that asks.
        assert_eq!(
            store
                .claim("q", "w1", Duration::from_millis(1))
                .unwrap()
                .as_deref(),
            Some("c")
        );
        let state = store.queue_state("q").unwrap();
        assert_eq!((state.total, state.done, state.claims), (3, 2, 4));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(store.queue_state("q").unwrap().held, 0);
        assert_eq!(store.claim("q", "w2", long).unwrap().as_deref(), Some("c"));
        assert!(
            !store.renew("q", "c", "w1", long).unwrap(),
            "w1's lease lapsed"
        );
        store.finish("q", "c", true).unwrap();
        assert_eq!(store.claim("q", "w1", long).unwrap(), None);
        let state = store.queue_state("q").unwrap();
        assert!(state.finished());
        assert_eq!((state.claims, state.workers), (5, 3), "{state:?}");
        assert_eq!(store.queues("").unwrap().len(), 1);
        assert!(store.queues("other").unwrap().is_empty());
    }

    #[test]
    fn a_fingerprint_without_its_protocol_is_refused() {
        let cache = Sqlite::in_memory().unwrap();
        let err = cache.get(&fingerprint(), "h").unwrap_err();
        assert!(matches!(err, BackendError::Unkeyed(_)), "{err}");
        assert!(cache.count(&fingerprint()).is_err());
    }
}
