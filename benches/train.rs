//! Benchmark: training throughput of spacetune's tch model against the same model in
//! PyTorch (same libtorch 2.13, same batch, same threads, same optimiser), as a ratio in one
//! run; JSON in `target/bench/train.json`. Goal ≥ 1.0.
//!
//! The PyTorch side needs the full torch wheel (the CUDA-free libtorch spacetune links is not
//! importable from Python): it is opt-in, `bash scripts/bench-torch.sh` installs it into its
//! own venv and runs this benchmark. Without it, only the tch side is reported.

use spacetune::backends::data::Dataset;
use spacetune::backends::torch::TchNet;
use spacetune::backends::train::{self, TrainConfig};
use spacetune::backends::weights::Weights;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const SPACE: &str = "examples/bbssp_cifar_mobile.space";
const BATCH: usize = 64;
const STEPS: usize = 30;
const THREADS: usize = 2;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(&root).expect("repository root");
    let m = spacetune::compile(Path::new(SPACE), Default::default())
        .result
        .expect("the example compiles");
    let mut rows = Vec::new();
    let python = std::env::var("SPACETUNE_TORCH_PYTHON").ok();
    for id in ["mobile-0", "mobile-0-8"] {
        let graph = m.network(id).unwrap().graph.pruned();
        let data = Dataset::synthetic(BATCH * (STEPS + 5), graph.shapes[0], 10, 1);
        let cfg = TrainConfig {
            epochs: 1,
            batch: BATCH,
            threads: THREADS,
            ..TrainConfig::default()
        };
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let net = TchNet::new(&vs.root(), &graph, &Weights::random(&graph, 0)).unwrap();
        // The first five steps warm up (as on the PyTorch side); the rest are timed.
        let mut t0 = None;
        let start = Instant::now();
        train::train(&net, &vs, &data, &cfg, |step, _, _| {
            if step == 5 {
                t0 = Some(start.elapsed());
            }
        })
        .unwrap();
        let seconds = (start.elapsed() - t0.unwrap()).as_secs_f64();
        let tch_ips = (BATCH * STEPS) as f64 / seconds;
        let mut row = serde_json::json!({
            "network": id, "batch": BATCH, "steps": STEPS, "threads": THREADS,
            "tch_images_per_second": tch_ips,
        });
        println!("{id}: tch {tch_ips:.0} images/s");
        if let Some(py) = &python {
            let dir = tempfile::tempdir().unwrap();
            let g = dir.path().join("graph.json");
            std::fs::write(&g, serde_json::to_string(&graph).unwrap()).unwrap();
            let out = Command::new(py)
                .arg("benches/py/torch_train.py")
                .arg(&g)
                .args([BATCH.to_string(), STEPS.to_string(), THREADS.to_string()])
                .output()
                .expect("python runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let py_ips = v["images_per_second"].as_f64().unwrap();
            println!(
                "{id}: PyTorch {py_ips:.0} images/s, ratio {:.3}",
                tch_ips / py_ips
            );
            row["pytorch"] = v;
            row["ratio"] = (tch_ips / py_ips).into();
        }
        rows.push(row);
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let json = serde_json::json!({
        "benchmark": "training throughput, tch vs PyTorch",
        "pytorch": python.is_some(),
        "results": rows,
    });
    std::fs::write(
        out.join("train.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!("wrote target/bench/train.json");
}
