//! Benchmark: parse + check + expand time for every example, written as JSON to
//! `target/bench/frontend.json`. Run with `cargo bench --bench frontend`.

use spacetune::{compile, Options};
use std::path::{Path, PathBuf};
use std::time::Instant;

const REPEATS: usize = 15;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(&root).expect("repository root");
    let mut files: Vec<PathBuf> = std::fs::read_dir("examples")
        .expect("examples/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "space"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    println!(
        "{:<40} {:>9} {:>10} {:>10} {:>10}",
        "example", "networks", "min ms", "median ms", "µs/net"
    );
    for file in &files {
        let mut times = Vec::with_capacity(REPEATS);
        let mut networks = 0;
        for _ in 0..REPEATS {
            let t = Instant::now();
            let m = compile(Path::new(file), Options::default())
                .result
                .expect("examples compile");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            networks = m.networks.len();
        }
        times.sort_by(f64::total_cmp);
        let (min, median) = (times[0], times[REPEATS / 2]);
        let per_net = median * 1e3 / networks as f64;
        println!(
            "{:<40} {networks:>9} {min:>10.2} {median:>10.2} {per_net:>10.1}",
            file.display()
        );
        rows.push(serde_json::json!({
            "example": file.display().to_string(),
            "networks": networks,
            "repeats": REPEATS,
            "min_ms": min,
            "median_ms": median,
            "us_per_network": per_net,
        }));
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let json =
        serde_json::json!({ "benchmark": "frontend: parse + check + expand", "results": rows });
    std::fs::write(
        out.join("frontend.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .expect("write");
    println!("wrote target/bench/frontend.json");
}
