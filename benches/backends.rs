//! Benchmark of the backends, written as JSON to `target/bench/backends.json`
//! (`cargo bench --bench backends`; or some sections: `-- throughput pin drift alike overhead`):
//! - throughput: networks measured per minute on the BBSSP CIFAR Mobile space, per backend
//!   (fresh cache; TVM's figure includes compiling, on a subset);
//! - test-retest: the same SSBNs measured twice, the relative difference per network, for
//!   the protocol's p10 and, for comparison, the median;
//! - the pin: ORT's throughput and test-retest with the timing thread pinned (the default)
//!   and unpinned, alternating, as ratios;
//! - the drift criterion: the same, retiming chunks scaled far from the typical factor (the
//!   default) against keeping them;
//! - alike bridges: the same, holding later chunks to bridges from the first chunk (the
//!   default) against the anchor's;
//! - overhead: spacetune's in-process timing of SSBN_0 against the runtime's own Python timer
//!   for the same model (ORT: an `InferenceSession.run` loop; TVM: `time_evaluator`), as
//!   the ratio of p10s. Target ≤ 1.05.

use spacetune::backends::measure::{measure_all, measure_one, Drift, Protocol};
use spacetune::backends::pin::Pin;
use spacetune::backends::store::Sqlite;
use spacetune::backends::tvm::Tvm;
use spacetune::backends::{lookup, Backend, Latency, Lowered, Options};
use spacetune::ir::{Handle, Module, Network};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const SPACE: &str = "examples/bbssp_cifar_mobile.space";
/// TVM compiles every network (seconds each): it is timed on the first few SSBNs.
const TVM_SUBSET: usize = 8;
/// Alternations of spacetune's timer and the runtime's in the overhead comparison.
const PAIRS: usize = 7;

fn backend(name: &str, pairs: &[String]) -> Box<dyn Backend> {
    lookup(name, &Options::parse(pairs).unwrap()).unwrap()
}

/// Measures `nets` with a fresh cache; returns the latencies and the wall time in seconds.
fn run(b: &dyn Backend, nets: &[&Network]) -> (Vec<Latency>, f64) {
    run_under(b, nets, &Protocol::default())
}

fn run_under(b: &dyn Backend, nets: &[&Network], protocol: &Protocol) -> (Vec<Latency>, f64) {
    let start = Instant::now();
    let lowered: Vec<Lowered> = nets.iter().map(|n| b.lower(n).unwrap()).collect();
    let cache = Sqlite::in_memory().unwrap();
    let outcomes = measure_all(
        b,
        &lowered,
        Some(&lowered[0]),
        protocol,
        &cache,
        &Drift::default(),
        |_| {},
    )
    .unwrap();
    let latencies = outcomes.into_iter().map(|o| o.latency.unwrap()).collect();
    (latencies, start.elapsed().as_secs_f64())
}

/// Measures the second half of `nets` as a later batch on the scale the first half set —
/// the reference and two bridges cached, as in the latency evaluation's batches — with the
/// first half measured beforehand (untimed); the second half's latencies and wall time.
fn later_batch(b: &dyn Backend, nets: &[&Network], protocol: &Protocol) -> (Vec<Latency>, f64) {
    let lowered: Vec<Lowered> = nets.iter().map(|n| b.lower(n).unwrap()).collect();
    let (first, second) = lowered.split_at(lowered.len() / 2);
    let cache = Sqlite::in_memory().unwrap();
    let drift = Drift::default();
    let reference = Some(&first[0]);
    measure_all(b, first, reference, protocol, &cache, &drift, |_| {}).unwrap();
    let start = Instant::now();
    let batch: Vec<Lowered> = first[..3].iter().chain(second).cloned().collect();
    let outcomes = measure_all(b, &batch, reference, protocol, &cache, &drift, |_| {}).unwrap();
    let latencies = outcomes[3..]
        .iter()
        .map(|o| o.latency.clone().unwrap())
        .collect();
    (latencies, start.elapsed().as_secs_f64())
}

/// Relative test-retest differences |a − b| / mean, summarised.
fn retest(a: &[f64], b: &[f64]) -> serde_json::Value {
    let mut d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / ((x + y) / 2.0))
        .collect();
    d.sort_by(f64::total_cmp);
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    serde_json::json!({
        "mean_pct": 100.0 * mean,
        "median_pct": 100.0 * d[d.len() / 2],
        "p90_pct": 100.0 * d[(d.len() * 9) / 10],
        "max_pct": 100.0 * d[d.len() - 1],
    })
}

fn python() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".deps/venv/bin/python")
        .display()
        .to_string()
}

fn python_timer(kind: &str, path: &Path, runs: usize, shape: &str) -> f64 {
    let out = Command::new(python())
        .arg("benches/py/runtime_timers.py")
        .arg(kind)
        .arg(path)
        .arg(runs.to_string())
        .env("SPACETUNE_INPUT_SHAPE", shape)
        .env("TVM_NUM_THREADS", "1")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["p10_ms"].as_f64().unwrap()
}

/// spacetune's p10 and the runtime's p10 for the same model, alternating (ours, theirs,
/// ours, ...) so each pair sees the same machine state; the ratio is the median over pairs.
fn overhead(ours: impl Fn() -> f64, theirs: impl Fn() -> f64) -> serde_json::Value {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        a.push(ours());
        b.push(theirs());
    }
    let mut ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    ratios.sort_by(f64::total_cmp);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    serde_json::json!({
        "spacetune_p10_ms": a,
        "runtime_p10_ms": b,
        "pair_ratios": ratios,
        "ratio": ratios[ratios.len() / 2],
        "ratio_of_best": min(&a) / min(&b),
    })
}

/// Networks measured per minute on `all` (TVM: on a subset, compiling included), and for
/// the runtimes that time, the test-retest of a second full run.
fn throughput(all: &[&Network], tvm_cache: &str) -> serde_json::Value {
    let mut rows = Vec::new();
    let mut retests = serde_json::Map::new();
    for (name, opts, nets) in [
        ("sim", vec![], all),
        ("ort", vec![], all),
        ("tch", vec![], all),
        ("tvm", vec![tvm_cache.to_string()], &all[..TVM_SUBSET]),
    ] {
        let b = backend(name, &opts);
        let (first, secs) = run(b.as_ref(), nets);
        let per_minute = nets.len() as f64 / secs * 60.0;
        println!(
            "{name:<4} {} networks in {secs:.1} s: {per_minute:.0} networks/minute",
            nets.len()
        );
        let mut row = serde_json::json!({
            "backend": name,
            "fingerprint": b.fingerprint().to_string(),
            "networks": nets.len(),
            "seconds": secs,
            "networks_per_minute": per_minute,
        });
        if name != "sim" {
            // The retest: a second full run (for TVM the libraries are compiled already, so
            // this run's rate is the one of timing alone).
            let (second, secs2) = run(b.as_ref(), nets);
            row["retest_seconds"] = secs2.into();
            row["networks_per_minute_warm"] = (nets.len() as f64 / secs2 * 60.0).into();
            let p10 = |v: &[Latency]| v.iter().map(|l| l.p10_ms).collect::<Vec<_>>();
            let med = |v: &[Latency]| v.iter().map(|l| l.median_ms).collect::<Vec<_>>();
            let r = serde_json::json!({
                "p10": retest(&p10(&first), &p10(&second)),
                "median": retest(&med(&first), &med(&second)),
                "noisy_flags": first.iter().chain(&second).filter(|l| l.noisy).count(),
            });
            println!("     test-retest {}", r);
            retests.insert(name.to_string(), r);
        }
        rows.push(row);
    }
    serde_json::json!({ "rates": rows, "test_retest": retests })
}

/// ORT under the default protocol against `other`, the same with one setting as it was
/// before (named `before` in the JSON): two runs each way, alternating, so drift hits both
/// alike; throughput and test-retest as ratios of the default's to the other's.
fn versus(all: &[&Network], before: &str, other: Protocol) -> serde_json::Value {
    let ort = backend("ort", &[]);
    versus_by(before, other, |p| run_under(ort.as_ref(), all, p))
}

/// [`versus`] with `run` measuring under a protocol: its latencies and wall time.
fn versus_by(
    before: &str,
    other: Protocol,
    run: impl Fn(&Protocol) -> (Vec<Latency>, f64),
) -> serde_json::Value {
    let mut runs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        for (k, p) in [Protocol::default(), other.clone()].iter().enumerate() {
            runs[k].push(run(p));
        }
    }
    let side = |runs: &[(Vec<Latency>, f64)]| {
        let p10 = |v: &[Latency]| v.iter().map(|l| l.p10_ms).collect::<Vec<_>>();
        let secs = runs[0].1 + runs[1].1;
        serde_json::json!({
            "networks_per_minute": 2.0 * runs[0].0.len() as f64 / secs * 60.0,
            "retest_p10": retest(&p10(&runs[0].0), &p10(&runs[1].0)),
        })
    };
    let (now, then) = (side(&runs[0]), side(&runs[1]));
    let ratio = |path: &[&str]| {
        let at = |v: &serde_json::Value| path.iter().fold(v.clone(), |v, k| v[k].clone());
        at(&now).as_f64().unwrap() / at(&then).as_f64().unwrap()
    };
    let v = serde_json::json!({
        "default": now,
        before: then,
        "throughput_ratio": ratio(&["networks_per_minute"]),
        "retest_mean_ratio": ratio(&["retest_p10", "mean_pct"]),
    });
    println!("ort default against {before} {v}");
    v
}

/// spacetune's timing of `base` against the runtimes' own timers (ORT, TVM).
fn overheads(base: &Network, tvm_cache: &str, tmp: &Path) -> serde_json::Value {
    let s = base.graph.shape(Handle::new(0));
    let shape = format!("1,{},{},{}", s.c, s.h, s.w);
    // Longer windows than the default: both sides should time about as many runs.
    let protocol = Protocol {
        min_windows: 8,
        max_windows: 16,
        window_ms: 40.0,
        ..Protocol::default()
    };

    let ort = backend("ort", &[]);
    let lowered = ort.lower(base).unwrap();
    let model = tmp.join("ssbn0.onnx");
    std::fs::write(&model, &lowered.bytes).unwrap();
    let runs = 1500;
    let ort_overhead = overhead(
        || {
            measure_one(ort.as_ref(), &lowered, &protocol)
                .unwrap()
                .p10_ms
        },
        || python_timer("ort", &model, runs, &shape),
    );
    println!("ort overhead {ort_overhead}");

    let tvm = Tvm::from_options(&Options::parse(&[tvm_cache.to_string()]).unwrap()).unwrap();
    let lowered = tvm.lower(base).unwrap();
    let library = tvm.compile(&lowered).unwrap();
    let tvm_overhead = overhead(
        || measure_one(&tvm, &lowered, &protocol).unwrap().p10_ms,
        || python_timer("tvm", &library, 100, &shape),
    );
    println!("tvm overhead {tvm_overhead}");
    serde_json::json!({ "protocol": protocol, "ort": ort_overhead, "tvm": tvm_overhead })
}

/// Every section, or those named on the command line (`cargo bench --bench backends --
/// pin`): all of them write `target/bench/backends.json`, a part `backends.<names>.json`.
fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(&root).expect("repository root");
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let m: Module = spacetune::compile(Path::new(SPACE), Default::default())
        .result
        .expect("the example compiles");
    let all: Vec<&Network> = m.networks.values().collect();
    let tmp = tempfile::tempdir().unwrap();
    let tvm_cache = format!("cache={}", tmp.path().join("tvm").display());
    let mut json = serde_json::json!({
        "benchmark": "backends: throughput, test-retest, the pin, the drift criterion, alike bridges, timing overhead",
        "space": SPACE,
    });
    if wanted("throughput") {
        let t = throughput(&all, &tvm_cache);
        json["throughput"] = t["rates"].clone();
        json["test_retest"] = t["test_retest"].clone();
    }
    if wanted("pin") {
        let unpinned = Protocol {
            pin: Pin::Off,
            ..Protocol::default()
        };
        json["pin"] = versus(&all, "unpinned", unpinned);
    }
    if wanted("drift") {
        // Chunks scaled far from the process's typical factor kept, as before the criterion.
        let blind = Protocol {
            drift: f64::INFINITY,
            ..Protocol::default()
        };
        json["drift"] = versus(&all, "drift_blind", blind);
    }
    if wanted("alike") {
        // Every chunk held to the anchor's bridges, as before bridges like the networks
        // they scale.
        let unalike = Protocol {
            alike: false,
            ..Protocol::default()
        };
        let ort = backend("ort", &[]);
        json["alike"] = versus_by("unalike", unalike, |p| later_batch(ort.as_ref(), &all, p));
    }
    if wanted("overhead") {
        json["overhead"] = overheads(all[0], &tvm_cache, tmp.path());
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let name = match only.is_empty() {
        true => "backends.json".to_string(),
        false => format!("backends.{}.json", only.join("+")),
    };
    std::fs::write(
        out.join(&name),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .expect("write");
    println!("wrote target/bench/{name}");
}
