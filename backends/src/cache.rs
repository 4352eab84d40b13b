//! The measurement cache: SQLite, keyed by backend fingerprint + network content hash.
//! Every result is committed as soon as it exists, so a killed run loses nothing finished.
//!
//! A fingerprint is stored as its JSON and keyed by a digest of it: a row written before a
//! field joined the fingerprint (the protocol, the runtime as loaded) stays in the file
//! under its old key, unread, and the network is measured again.

use crate::{Fingerprint, Latency, Lowered, Result};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use spacetune_ir::PairRule;
use std::path::Path;

pub struct Cache {
    conn: Connection,
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
";

/// Brings a store written by an earlier version up to the schema (`PRAGMA user_version`:
/// 1 added `measurements.unscaled`; rows from before were all scaled or said nothing).
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
        conn.pragma_update(None, "user_version", 1)?;
    }
    Ok(())
}

impl Cache {
    pub fn open(path: &Path) -> Result<Cache> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(crate::BackendError::io(format!(
                "creating {}",
                dir.display()
            )))?;
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn in_memory() -> Result<Cache> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Cache> {
        // WAL: a writer killed mid-run leaves every committed row readable.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Cache { conn })
    }

    fn key(&self, f: &Fingerprint) -> Result<String> {
        if f.protocol.is_none() {
            return Err(crate::BackendError::Unkeyed(f.to_string()));
        }
        let description = serde_json::to_string(f).expect("fingerprints serialise");
        let digest = Sha256::digest(description.as_bytes());
        let id: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        self.conn.execute(
            "INSERT OR IGNORE INTO fingerprints (id, description) VALUES (?1, ?2)",
            params![id, description],
        )?;
        Ok(id)
    }

    /// A successful cached measurement; failures are not returned, so they are retried.
    /// A corrupt stored per-layer profile is an error, not a missing one.
    pub fn get(&self, f: &Fingerprint, hash: &str) -> Result<Option<Latency>> {
        let key = self.key(f)?;
        let row = self
            .conn
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
            latency.per_layer = Some(serde_json::from_str(&json).map_err(|e| {
                crate::BackendError::Runtime(format!(
                    "the stored per-layer profile of network {hash} is corrupt ({e}): {json}"
                ))
            })?);
        }
        Ok(Some(latency))
    }

    pub fn put(
        &self,
        f: &Fingerprint,
        lowered: &Lowered,
        result: &std::result::Result<Latency, String>,
    ) -> Result<()> {
        let key = self.key(f)?;
        let (l, failure) = match result {
            Ok(l) => (Some(l), None),
            Err(e) => (None, Some(e.as_str())),
        };
        let per_layer = l
            .and_then(|l| l.per_layer.as_ref())
            .map(|p| serde_json::to_string(p).expect("per-layer times serialise"));
        self.conn.execute(
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
                per_layer,
                failure,
                l.is_some_and(|l| l.unscaled),
            ],
        )?;
        Ok(())
    }

    /// A recorded accuracy for a network under a training task (data set, budget, seed —
    /// the caller's canonical description).
    pub fn accuracy(&self, task: &str, hash: &str) -> Result<Option<f64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT accuracy FROM accuracies WHERE task = ?1 AND network_hash = ?2",
                params![task, hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// How long the recorded accuracy of a network under a task took to make, in seconds.
    pub fn accuracy_seconds(&self, task: &str, hash: &str) -> Result<Option<f64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seconds FROM accuracies WHERE task = ?1 AND network_hash = ?2",
                params![task, hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn put_accuracy(
        &self,
        task: &str,
        hash: &str,
        id: &str,
        key: &str,
        accuracy: f64,
        seconds: f64,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO accuracies
             (task, network_hash, network_id, arch_key, accuracy, seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![task, hash, id, key, accuracy, seconds],
        )?;
        Ok(())
    }

    /// Accuracies recorded, under every task.
    pub fn accuracy_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM accuracies", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Records the fusion test of an op pair under `f`, replacing an earlier one at the
    /// same place. Verdicts at other places stay: each holds for the place it was tested at.
    pub fn put_fusion_pair(&self, f: &Fingerprint, verdict: &PairRule) -> Result<()> {
        let key = self.key(f)?;
        let json = serde_json::to_string(verdict).expect("a verdict serialises");
        self.conn.execute(
            "INSERT OR REPLACE INTO fusion_verdicts (fingerprint, a, b, place, verdict)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, verdict.a, verdict.b, verdict.place, json],
        )?;
        Ok(())
    }

    /// Forgets every fusion-test verdict stored under `f` (before testing afresh).
    pub fn clear_fusion_pairs(&self, f: &Fingerprint) -> Result<()> {
        let key = self.key(f)?;
        self.conn.execute(
            "DELETE FROM fusion_verdicts WHERE fingerprint = ?1",
            params![key],
        )?;
        Ok(())
    }

    /// Every fusion-test verdict stored under `f`, ordered by pair and place.
    pub fn fusion_pairs(&self, f: &Fingerprint) -> Result<Vec<PairRule>> {
        let key = self.key(f)?;
        let mut stmt = self.conn.prepare(
            "SELECT verdict FROM fusion_verdicts WHERE fingerprint = ?1 ORDER BY a, b, place",
        )?;
        let rows = stmt.query_map(params![key], |r| r.get::<_, String>(0))?;
        rows.map(|json| {
            let json = json?;
            serde_json::from_str(&json).map_err(|e| {
                crate::BackendError::Runtime(format!(
                    "a stored fusion verdict does not parse ({e}): {json}"
                ))
            })
        })
        .collect()
    }

    /// Rows (successes and failures) stored under `f`.
    pub fn count(&self, f: &Fingerprint) -> Result<usize> {
        let key = self.key(f)?;
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM measurements WHERE fingerprint = ?1",
            params![key],
            |r| r.get(0),
        )?;
        Ok(n as usize)
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
            protocol: None,
        }
    }

    fn stored(cache: &Cache, f: &Fingerprint, ms: f64) -> Lowered {
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
        let cache = Cache::in_memory().unwrap();
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
        let cache = Cache::in_memory().unwrap();
        let f = fingerprint().under(&Protocol::default());
        let l = stored(&cache, &f, 1.0);
        cache
            .conn
            .execute("UPDATE measurements SET per_layer = '[{\"region\": 3'", [])
            .unwrap();
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
        let cache = Cache::open(&path).unwrap();
        let f = fingerprint().under(&Protocol::default());
        let l = stored(&cache, &f, 2.0);
        assert!(!cache.get(&f, &l.hash).unwrap().unwrap().unscaled);
        drop(cache);
        Cache::open(&path).unwrap(); // a second open does not migrate again
    }

    #[test]
    fn a_fingerprint_without_its_protocol_is_refused() {
        let cache = Cache::in_memory().unwrap();
        let err = cache.get(&fingerprint(), "h").unwrap_err();
        assert!(matches!(err, BackendError::Unkeyed(_)), "{err}");
        assert!(cache.count(&fingerprint()).is_err());
    }
}
