//! The PostgreSQL store (`--db postgres://user@host:port/db`): the SQLite store's tables
//! on a server, so workers on several machines share one run. Work is claimed with
//! `SELECT ... FOR UPDATE SKIP LOCKED`: a worker never waits on, nor takes, an item
//! another is claiming.

use super::{Accuracy, QueueState, Store};
use crate::{BackendError, Fingerprint, Latency, Lowered, Result};
use postgres::{Client, NoTls};
use spacetune_ir::PairRule;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub struct Postgres {
    client: Mutex<Client>,
    location: String,
}

/// The schema, by version: a store at version k runs the migrations after k, each in one
/// transaction with the version's bump.
const MIGRATIONS: &[&str] = &["
CREATE TABLE fingerprints (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL
);
CREATE TABLE measurements (
    fingerprint TEXT NOT NULL REFERENCES fingerprints(id),
    network_hash TEXT NOT NULL,
    network_id TEXT NOT NULL,
    p10_ms DOUBLE PRECISION, median_ms DOUBLE PRECISION, mean_ms DOUBLE PRECISION,
    var_ms2 DOUBLE PRECISION,
    count BIGINT, noisy BOOLEAN, per_layer TEXT,
    failure TEXT,
    unscaled BOOLEAN NOT NULL DEFAULT false,
    measured_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (fingerprint, network_hash)
);
CREATE TABLE accuracies (
    task TEXT NOT NULL,
    network_hash TEXT NOT NULL,
    network_id TEXT NOT NULL,
    arch_key TEXT NOT NULL,
    accuracy DOUBLE PRECISION NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    measured_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (task, network_hash)
);
CREATE TABLE fusion_verdicts (
    fingerprint TEXT NOT NULL REFERENCES fingerprints(id),
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    place TEXT NOT NULL,
    verdict TEXT NOT NULL,
    measured_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (fingerprint, a, b, place)
);
CREATE TABLE blobs (
    key TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);
CREATE TABLE work (
    queue TEXT NOT NULL,
    item TEXT NOT NULL,
    seq BIGINT NOT NULL,
    worker TEXT,
    expires TIMESTAMPTZ,
    done BOOLEAN NOT NULL DEFAULT false,
    attempts BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, item)
);
"];

impl From<postgres::Error> for BackendError {
    fn from(e: postgres::Error) -> BackendError {
        // The server's own message (a full disk, a lost connection) rather than "db error".
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => e.to_string(),
        };
        BackendError::Store(message)
    }
}

impl Postgres {
    pub fn open(url: &str) -> Result<Postgres> {
        let location = without_password(url);
        let fail = |e: postgres::Error| {
            let why = std::error::Error::source(&e).map_or(String::new(), |s| format!(" ({s})"));
            BackendError::Store(format!("{e}{why}"))
        };
        let config: postgres::Config = url.parse().map_err(fail)?;
        let mut config = config;
        config.connect_timeout(Duration::from_secs(10));
        let mut client = config.connect(NoTls).map_err(fail)?;
        migrate(&mut client)?;
        Ok(Postgres {
            client: Mutex::new(client),
            location,
        })
    }

    fn client(&self) -> MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queues matching `condition` (on parameter $1 = `value`), with their states.
    fn queues_where(&self, condition: &str, value: &str) -> Result<Vec<(String, QueueState)>> {
        let rows = self.client().query(
            &format!(
                "SELECT queue, COUNT(*), COUNT(*) FILTER (WHERE done),
                        COUNT(*) FILTER (WHERE NOT done AND worker IS NOT NULL
                                         AND expires >= clock_timestamp()),
                        SUM(attempts)::BIGINT,
                        COUNT(DISTINCT worker) FILTER (WHERE done)
                 FROM work WHERE {condition} GROUP BY queue ORDER BY queue"
            ),
            &[&value],
        )?;
        let n = |r: &postgres::Row, i: usize| r.get::<_, i64>(i) as usize;
        Ok(rows
            .iter()
            .map(|r| {
                let state = QueueState {
                    total: n(r, 1),
                    done: n(r, 2),
                    held: n(r, 3),
                    claims: n(r, 4),
                    workers: n(r, 5),
                };
                (r.get(0), state)
            })
            .collect())
    }

    fn key(client: &mut Client, f: &Fingerprint) -> Result<String> {
        let (id, description) = super::fingerprint_key(f)?;
        client.execute(
            "INSERT INTO fingerprints (id, description) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&id, &description],
        )?;
        Ok(id)
    }
}

/// Runs the migrations the store has not seen, one transaction each; an advisory lock keeps
/// two workers starting at once from running the same one twice.
fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock(5951102)", &[])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let version: i64 = tx
        .query_opt("SELECT version FROM schema_version", &[])?
        .map_or(0, |r| r.get(0));
    if version == 0 {
        tx.execute("INSERT INTO schema_version VALUES (0)", &[])?;
    }
    for (k, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE schema_version SET version = $1", &[&(k as i64 + 1)])?;
    }
    if version as usize > MIGRATIONS.len() {
        return Err(BackendError::Store(format!(
            "the store's schema is version {version}, newer than this spacetune's ({}): upgrade spacetune",
            MIGRATIONS.len()
        )));
    }
    tx.commit()?;
    Ok(())
}

/// `url` with any password replaced, for messages.
pub(super) fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

impl Store for Postgres {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn get(&self, f: &Fingerprint, hash: &str) -> Result<Option<Latency>> {
        let mut c = self.client();
        let key = Self::key(&mut c, f)?;
        let Some(r) = c.query_opt(
            "SELECT p10_ms, median_ms, mean_ms, var_ms2, count, noisy, unscaled, per_layer
             FROM measurements
             WHERE fingerprint = $1 AND network_hash = $2 AND failure IS NULL",
            &[&key, &hash],
        )?
        else {
            return Ok(None);
        };
        let per_layer: Option<String> = r.get(7);
        Ok(Some(Latency {
            p10_ms: r.get(0),
            median_ms: r.get(1),
            mean_ms: r.get(2),
            var_ms2: r.get(3),
            count: r.get::<_, i64>(4) as u32,
            noisy: r.get(5),
            unscaled: r.get(6),
            per_layer: per_layer
                .map(|json| super::parse_per_layer(hash, &json))
                .transpose()?,
        }))
    }

    fn put(
        &self,
        f: &Fingerprint,
        lowered: &Lowered,
        result: &std::result::Result<Latency, String>,
    ) -> Result<()> {
        let mut c = self.client();
        let key = Self::key(&mut c, f)?;
        let (l, failure) = match result {
            Ok(l) => (Some(l), None),
            Err(e) => (None, Some(e.as_str())),
        };
        c.execute(
            "INSERT INTO measurements
             (fingerprint, network_hash, network_id, p10_ms, median_ms, mean_ms, var_ms2,
              count, noisy, per_layer, failure, unscaled)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (fingerprint, network_hash) DO UPDATE SET
              network_id = EXCLUDED.network_id, p10_ms = EXCLUDED.p10_ms,
              median_ms = EXCLUDED.median_ms, mean_ms = EXCLUDED.mean_ms,
              var_ms2 = EXCLUDED.var_ms2, count = EXCLUDED.count, noisy = EXCLUDED.noisy,
              per_layer = EXCLUDED.per_layer, failure = EXCLUDED.failure,
              unscaled = EXCLUDED.unscaled, measured_at = now()",
            &[
                &key,
                &lowered.hash,
                &lowered.id,
                &l.map(|l| l.p10_ms),
                &l.map(|l| l.median_ms),
                &l.map(|l| l.mean_ms),
                &l.map(|l| l.var_ms2),
                &l.map(|l| i64::from(l.count)),
                &l.map(|l| l.noisy),
                &super::per_layer_json(l),
                &failure,
                &l.is_some_and(|l| l.unscaled),
            ],
        )?;
        Ok(())
    }

    fn count(&self, f: &Fingerprint) -> Result<usize> {
        let mut c = self.client();
        let key = Self::key(&mut c, f)?;
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM measurements WHERE fingerprint = $1",
                &[&key],
            )?
            .get(0);
        Ok(n as usize)
    }

    fn accuracy(&self, task: &str, hash: &str) -> Result<Option<f64>> {
        Ok(self
            .client()
            .query_opt(
                "SELECT accuracy FROM accuracies WHERE task = $1 AND network_hash = $2",
                &[&task, &hash],
            )?
            .map(|r| r.get(0)))
    }

    fn accuracy_seconds(&self, task: &str, hash: &str) -> Result<Option<f64>> {
        Ok(self
            .client()
            .query_opt(
                "SELECT seconds FROM accuracies WHERE task = $1 AND network_hash = $2",
                &[&task, &hash],
            )?
            .map(|r| r.get(0)))
    }

    fn put_accuracy(&self, a: &Accuracy<'_>) -> Result<()> {
        self.client().execute(
            "INSERT INTO accuracies (task, network_hash, network_id, arch_key, accuracy, seconds)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (task, network_hash) DO UPDATE SET
              network_id = EXCLUDED.network_id, arch_key = EXCLUDED.arch_key,
              accuracy = EXCLUDED.accuracy, seconds = EXCLUDED.seconds, measured_at = now()",
            &[&a.task, &a.hash, &a.id, &a.key, &a.accuracy, &a.seconds],
        )?;
        Ok(())
    }

    fn accuracy_count(&self) -> Result<usize> {
        let n: i64 = self
            .client()
            .query_one("SELECT COUNT(*) FROM accuracies", &[])?
            .get(0);
        Ok(n as usize)
    }

    fn put_fusion_pair(&self, f: &Fingerprint, verdict: &PairRule) -> Result<()> {
        let mut c = self.client();
        let key = Self::key(&mut c, f)?;
        let json = serde_json::to_string(verdict).expect("a verdict serialises");
        c.execute(
            "INSERT INTO fusion_verdicts (fingerprint, a, b, place, verdict)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (fingerprint, a, b, place) DO UPDATE SET
              verdict = EXCLUDED.verdict, measured_at = now()",
            &[&key, &verdict.a, &verdict.b, &verdict.place, &json],
        )?;
        Ok(())
    }

    fn clear_fusion_pairs(&self, f: &Fingerprint) -> Result<()> {
        let mut c = self.client();
        let key = Self::key(&mut c, f)?;
        c.execute(
            "DELETE FROM fusion_verdicts WHERE fingerprint = $1",
            &[&key],
        )?;
        Ok(())
    }

    fn fusion_pairs(&self, f: &Fingerprint) -> Result<Vec<PairRule>> {
        let mut c = self.client();
        let key = Self::key(&mut c, f)?;
        c.query(
            "SELECT verdict FROM fusion_verdicts WHERE fingerprint = $1 ORDER BY a, b, place",
            &[&key],
        )?
        .iter()
        .map(|r| super::parse_verdict(r.get(0)))
        .collect()
    }

    fn put_blob(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.client().execute(
            "INSERT INTO blobs (key, bytes) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET bytes = EXCLUDED.bytes",
            &[&key, &bytes],
        )?;
        Ok(())
    }

    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .client()
            .query_opt("SELECT bytes FROM blobs WHERE key = $1", &[&key])?
            .map(|r| r.get(0)))
    }

    fn enqueue(&self, queue: &str, items: &[String]) -> Result<()> {
        let mut c = self.client();
        let mut tx = c.transaction()?;
        let stmt = tx.prepare(
            "INSERT INTO work (queue, item, seq) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )?;
        for (seq, item) in items.iter().enumerate() {
            tx.execute(&stmt, &[&queue, item, &(seq as i64)])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn claim(&self, queue: &str, worker: &str, lease: Duration) -> Result<Option<String>> {
        let mut c = self.client();
        let mut tx = c.transaction()?;
        let row = tx.query_opt(
            "SELECT item FROM work WHERE queue = $1 AND NOT done
             AND (worker IS NULL OR expires < clock_timestamp())
             ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&queue],
        )?;
        let item: Option<String> = row.map(|r| r.get(0));
        if let Some(item) = &item {
            tx.execute(
                "UPDATE work SET worker = $3, attempts = attempts + 1,
                 expires = clock_timestamp() + make_interval(secs => $4)
                 WHERE queue = $1 AND item = $2",
                &[&queue, item, &worker, &lease.as_secs_f64()],
            )?;
        }
        tx.commit()?;
        Ok(item)
    }

    fn renew(&self, queue: &str, item: &str, worker: &str, lease: Duration) -> Result<bool> {
        let n = self.client().execute(
            "UPDATE work SET expires = clock_timestamp() + make_interval(secs => $4)
             WHERE queue = $1 AND item = $2 AND worker = $3 AND NOT done",
            &[&queue, &item, &worker, &lease.as_secs_f64()],
        )?;
        Ok(n == 1)
    }

    fn finish(&self, queue: &str, item: &str, done: bool) -> Result<()> {
        self.client().execute(
            "UPDATE work SET done = $3, expires = NULL,
                    worker = CASE WHEN $3 THEN worker END
             WHERE queue = $1 AND item = $2",
            &[&queue, &item, &done],
        )?;
        Ok(())
    }

    fn queues(&self, prefix: &str) -> Result<Vec<(String, QueueState)>> {
        self.queues_where("starts_with(queue, $1)", prefix)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(
            super::without_password("postgres://me:secret@db:5432/runs"),
            "postgres://me:***@db:5432/runs"
        );
        assert_eq!(
            super::without_password("postgres://me@db/runs"),
            "postgres://me@db/runs"
        );
    }
}
