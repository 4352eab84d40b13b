//! Benchmark: SSBNs profiled per minute by 1, 2 and 4 local workers sharing a store, SQLite
//! and PostgreSQL (a server of the bench's own), and through a one-node Slurm array of the
//! bench's own (as root, like tests/workers.rs); written as JSON to `target/bench/workers.json`
//! with each figure's ratio to one worker on the same store. Run with
//! `cargo bench --bench workers`.

#[path = "../tests/common/postgres.rs"]
mod postgres;
#[path = "../tests/common/slurm.rs"]
mod slurm;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const FILE: &str = "examples/bbssp_cifar_mobile.space";
/// SSBN_0 and this many sampled SSBNs of the space.
const SAMPLE: usize = 24;

/// A profile at a small budget on synthetic data (one thread per worker), on a fresh store.
fn profile(db: &str, dir: &Path, extra: &[&str], slurm: Option<&slurm::Cluster>) -> f64 {
    let t = Instant::now();
    let mut c = Command::new(env!("CARGO_BIN_EXE_spacetune"));
    if let Some(cluster) = slurm {
        c.env("SLURM_CONF", cluster.conf());
    }
    let out = c
        .arg("profile")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(FILE))
        .args(["--dataset", "synthetic", "--train-subset", "512"])
        .args([
            "--validation",
            "128",
            "--epochs",
            "1",
            "--finetune-subset",
            "256",
        ])
        .args([
            "--threads",
            "1",
            "--sample",
            &SAMPLE.to_string(),
            "--db",
            db,
            "--out",
        ])
        .arg(dir.join("out"))
        .args(extra)
        .current_dir(dir)
        .output()
        .expect("spacetune runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn main() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).expect("repository root");
    let ssbns = (SAMPLE + 1) as f64;
    let mut rows = Vec::new();
    println!(
        "{:<10} {:>8} {:>10} {:>12} {:>8}",
        "store", "workers", "seconds", "SSBNs/min", "ratio"
    );
    for store in ["sqlite", "postgres"] {
        let mut one = None;
        for workers in [1usize, 2, 4] {
            let dir = tempfile::tempdir().unwrap();
            let server = (store == "postgres").then(postgres::Server::start);
            let db = match &server {
                Some(s) => s.url(),
                None => dir.path().join("m.db").display().to_string(),
            };
            let seconds = profile(&db, dir.path(), &["--workers", &workers.to_string()], None);
            let per_minute = ssbns * 60.0 / seconds;
            let ratio = per_minute / *one.get_or_insert(per_minute);
            println!("{store:<10} {workers:>8} {seconds:>10.1} {per_minute:>12.1} {ratio:>8.2}");
            rows.push(serde_json::json!({
                "store": store, "workers": workers, "seconds": seconds,
                "ssbns_per_minute": per_minute, "ratio_to_one_worker": ratio,
            }));
        }
    }
    // The same through a one-node Slurm array (PostgreSQL): this process only waits.
    let cluster = slurm::Cluster::start();
    let mut one = None;
    for workers in [1usize, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let server = postgres::Server::start();
        let array = workers.to_string();
        let seconds = profile(
            &server.url(),
            dir.path(),
            &["--slurm", "--array", &array],
            Some(&cluster),
        );
        let per_minute = ssbns * 60.0 / seconds;
        let ratio = per_minute / *one.get_or_insert(per_minute);
        let store = "slurm+pg";
        println!("{store:<10} {workers:>8} {seconds:>10.1} {per_minute:>12.1} {ratio:>8.2}");
        rows.push(serde_json::json!({
            "store": store, "workers": workers, "seconds": seconds,
            "ssbns_per_minute": per_minute, "ratio_to_one_worker": ratio,
        }));
    }
    drop(cluster);
    let json = serde_json::json!({
        "file": FILE, "ssbns": ssbns, "threads_per_worker": 1,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "rows": rows,
    });
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write(
        "target/bench/workers.json",
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("written to target/bench/workers.json");
}
