//! Benchmark: the gradient search on a space whole vs on a reduced space of the same
//! skeleton (BBSSP's claim: less search time and memory), and ProxylessNAS's binary gates
//! vs Gumbel-softmax on the whole space. Each configuration runs in a process of its own
//! (peak RSS only grows within a process); wall time per search epoch, peak RSS and the
//! supernet's parameter bytes are written as JSON to `target/bench/search.json`, with the
//! ratios. Run with `cargo bench --bench search [-- FILE IMAGES]`.

use spacetune::backends::data::Dataset;
use spacetune::backends::search::{self, LatencyCosts, Mode, SearchConfig};
use spacetune::backends::weights::Weights;
use spacetune::ir::{Module, Shape, Supernet};
use spacetune::pass::{reduce, supernet, PassManager};
use spacetune::{compile, Options};
use std::path::{Path, PathBuf};

/// (name, reduced, mode).
const CONFIGS: &[(&str, bool, Mode)] = &[
    ("gumbel-full", false, Mode::Gumbel),
    ("gumbel-reduced", true, Mode::Gumbel),
    ("proxyless-full", false, Mode::Proxyless),
];

fn module(file: &Path) -> Module {
    compile(file, Options::default())
        .result
        .expect("the file compiles")
}

/// The space searched: the file's first space whole, or cut to its default and the first
/// two other options of every decision (BBSSP's selection keeps 2–4 per layer on the
/// CIFAR file; which ones changes the time per option, not the scaling).
fn space(m: &Module, reduced: bool) -> (Module, u32) {
    if !reduced {
        return (m.clone(), 0);
    }
    let info = &m.checked[0];
    let keep: Vec<Vec<u32>> = info
        .decisions
        .values()
        .map(|d| {
            let mut k: Vec<u32> = std::iter::once(d.default)
                .chain(
                    (0..d.options.len() as u32)
                        .filter(|&o| o != d.default)
                        .take(2),
                )
                .collect();
            k.sort_unstable();
            k
        })
        .collect();
    let mut r = reduce::reduced_module(m, 0, &keep);
    PassManager::default()
        .run(&spacetune::pass::passes(), &mut r)
        .expect("the reduced space checks");
    (r, 0)
}

/// One configuration, in this process: prints one JSON line.
fn child(file: &Path, images: usize, name: &str) {
    let &(_, reduced, mode) = CONFIGS
        .iter()
        .find(|c| c.0 == name)
        .expect("a known config");
    let m = module(file);
    let (tm, s) = space(&m, reduced);
    let sn: Supernet = supernet::build(&tm, s).expect("the supernet builds");
    let costs = LatencyCosts {
        fixed_ms: 0.0,
        rows: sn.options.iter().map(|&k| vec![1.0; k as usize]).collect(),
    };
    let input = sn.graph.shapes[0];
    let data = |seed| {
        Dataset::synthetic(images, Shape::new(1, 28, 28), 10, seed)
            .adapt(input)
            .expect("synthetic data adapts")
            .0
    };
    let (w, a) = (data(1), data(2));
    let cfg = SearchConfig {
        mode,
        epochs: 2,
        warmup: 1,
        batch: 64,
        threads: 2,
        ..SearchConfig::default()
    };
    let init = Weights::random(&sn.graph, 0);
    let param_bytes: usize = init.params.values().map(|p| p.data.len() * 4).sum();
    let out =
        search::search(&sn, &init, &costs, (&w, &a), &cfg, None, |_| {}).expect("the search runs");
    let epoch = &out.epochs[1];
    println!(
        "{}",
        serde_json::json!({
            "name": name,
            "options": sn.options.iter().sum::<u32>(),
            "decisions": sn.options.len(),
            "mixes": sn.mixes.len(),
            "supernet_nodes": sn.graph.nodes.len(),
            "param_bytes": param_bytes,
            "warmup_epoch_s": out.epochs[0].seconds,
            "search_epoch_s": epoch.seconds,
            "peak_rss_kib": spacetune::backends::memory::peak_bytes().unwrap_or(0) / 1024,
        })
    );
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(&root).expect("repository root");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(Path::new(&args[1]), args[2].parse().unwrap(), &args[3]);
        return;
    }
    let file = args
        .first()
        .cloned()
        .unwrap_or("examples/bbssp_cifar_mobile.space".into());
    let images: usize = args
        .get(1)
        .map_or(512, |n| n.parse().expect("IMAGES is a number"));
    let me = std::env::current_exe().expect("the bench binary");
    let mut rows = Vec::new();
    for &(name, _, _) in CONFIGS {
        let out = std::process::Command::new(&me)
            .args(["--child", &file, &images.to_string(), name])
            .output()
            .expect("the bench re-runs itself");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let row: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
                .expect("one JSON line");
        println!(
            "{name:<16} options {:>3}  search epoch {:>8.2} s  peak RSS {:>8} KiB  params {:>10} B",
            row["options"],
            row["search_epoch_s"].as_f64().unwrap(),
            row["peak_rss_kib"],
            row["param_bytes"]
        );
        rows.push(row);
    }
    let ratio = |a: usize, b: usize, key: &str| {
        rows[a][key].as_f64().unwrap() / rows[b][key].as_f64().unwrap()
    };
    let ratios = serde_json::json!({
        "full_over_reduced_time": ratio(0, 1, "search_epoch_s"),
        "full_over_reduced_peak_rss": ratio(0, 1, "peak_rss_kib"),
        "full_over_reduced_params": ratio(0, 1, "param_bytes"),
        "gumbel_over_proxyless_time": ratio(0, 2, "search_epoch_s"),
        "gumbel_over_proxyless_peak_rss": ratio(0, 2, "peak_rss_kib"),
    });
    println!("{}", serde_json::to_string_pretty(&ratios).unwrap());
    std::fs::create_dir_all("target/bench").unwrap();
    let report =
        serde_json::json!({ "file": file, "images": images, "configs": rows, "ratios": ratios });
    std::fs::write(
        "target/bench/search.json",
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("wrote target/bench/search.json");
}
