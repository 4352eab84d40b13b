//! The supernet and the gradient search: a one-hot supernet is the fixed network, θ gets a
//! gradient through every decision, the latency term pulls θ toward cheaper options, and a
//! killed search resumes to the same θ.

mod common;

use common::module;
use spacetune::backends::data::Dataset;
use spacetune::backends::search::{self, LatencyCosts, LossKind, Mode, SearchConfig};
use spacetune::backends::torch::TchNet;
use spacetune::backends::weights::{random_input, Weights};
use spacetune::ir::{Module, Shape, Supernet};
use spacetune::pass::{evaluate, supernet};
use tch::{nn, Tensor};

/// Architectures to cut out of a space's supernet: random points of the space (several
/// decisions off their default at once), then every SSBN.
fn architectures(m: &Module, s: u32) -> Vec<Vec<u32>> {
    let mut out = evaluate::sample(&m.checked[s as usize], 6, 7);
    out.extend(m.networks_of(s).map(|(_, n)| n.choices.clone()));
    out
}

/// For every architecture: the supernet cut there is `expand`'s network node for node, and
/// the supernet's forward with one-hot gates equals that network's forward run alone with
/// the weights cut from the supernet's.
fn one_hot_is_fixed(file: &str, at_most: usize) {
    let m = module(file);
    let sn = supernet::build(&m, 0).unwrap();
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let weights = Weights::random(&sn.graph, 3);
    let net = TchNet::new(&vs.root(), &sn.graph, &weights).unwrap();
    let s = sn.graph.shapes[0];
    let x =
        Tensor::from_slice(&random_input(s, 2, 5)).view([2, s.c as i64, s.h as i64, s.w as i64]);
    let archs = architectures(&m, 0);
    assert!(archs.len() > 2, "{file} has choices");
    for choices in archs.iter().take(at_most) {
        supernet::same_as_expand(&m, &m.checked[0], &sn, choices).unwrap();
        let (graph, origin) = sn.fixed(choices);
        let fixed_vs = nn::VarStore::new(tch::Device::Cpu);
        let fixed = TchNet::new(
            &fixed_vs.root(),
            &graph,
            &search::cut_weights(&weights, &origin),
        )
        .unwrap();
        let want = tch::no_grad(|| fixed.forward_t(&x, false));
        let got = tch::no_grad(|| search::one_hot_forward(&sn, &net, &x, choices, false));
        assert_eq!(want.size(), got.size());
        let diff = (&want - &got).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{file}: the network computes something");
        assert_eq!(
            diff, 0.0,
            "{file} {choices:?}: supernet and fixed network differ"
        );
    }
}

#[test]
fn one_hot_supernet_is_the_fixed_network_for_layer_spaces() {
    one_hot_is_fixed("examples/bbssp_cifar_mobile.space", 40);
}

#[test]
fn one_hot_supernet_is_the_fixed_network_for_tied_cell_edges() {
    one_hot_is_fixed("examples/nb201.space", 12);
}

#[test]
fn one_hot_supernet_is_the_fixed_network_for_a_value_choice() {
    one_hot_is_fixed("tests/in/width_choice.space", 40);
}

#[test]
fn a_value_choice_mixes_whole_networks_and_edges_are_tied() {
    let m = module("tests/in/width_choice.space");
    let sn = supernet::build(&m, 0).unwrap();
    let last = sn.mixes.last().unwrap();
    assert_eq!(
        last.node as usize,
        sn.graph.nodes.len() - 1,
        "the output is a mix"
    );
    assert_eq!(last.terms.len(), 3, "one network per width");
    let m = module("examples/nb201.space");
    let sn = supernet::build(&m, 0).unwrap();
    // 6 tied edges × 15 cells: 90 places, 15 per decision.
    assert_eq!(sn.mixes.len(), 90);
    for d in 0..6u32 {
        let places = sn.mixes.iter().filter(|x| x.terms[0][0].0 == d).count();
        assert_eq!(places, 15, "decision {d}");
    }
}

/// A small search problem: the mobile space's supernet on synthetic 1×28×28 data would be
/// too slow for a test, so a two-layer file of its own.
const SMALL: &str = r#"
input 1x12x12
classes 4
block c(k) {
    conv(out, k=k, stride=stride) | bn | relu
}
space s {
    candidates {
        c(k) for k in [1, 3, 5]
    }
    default c(3)
}
skeleton {
    stem conv(8, k=3) | bn | relu
    search out=[8, 8] stride=[1, 2]
    head bn | relu | gap | linear(classes)
}
"#;

fn small() -> (Module, Supernet) {
    let c = spacetune::compile_str("small.space", SMALL, None, Default::default());
    let m = common::expect_ok(c, "small");
    let sn = supernet::build(&m, 0).unwrap();
    (m, sn)
}

fn data(n: usize, seed: u64) -> Dataset {
    Dataset::synthetic(n, Shape::new(1, 12, 12), 4, seed)
}

fn config(mode: Mode) -> SearchConfig {
    SearchConfig {
        mode,
        epochs: 4,
        warmup: 1,
        batch: 32,
        threads: 1,
        ..SearchConfig::default()
    }
}

/// k=5 is 9× dearer than k=1 per layer.
fn costs() -> LatencyCosts {
    LatencyCosts {
        fixed_ms: 0.5,
        rows: vec![vec![0.1, 0.3, 0.9], vec![0.1, 0.3, 0.9]],
    }
}

#[test]
fn every_decision_gets_a_finite_non_zero_gradient() {
    let (_, sn) = small();
    for mode in [Mode::Gumbel, Mode::Proxyless] {
        let g = search::arch_gradient(
            &sn,
            &Weights::random(&sn.graph, 1),
            &costs(),
            &data(64, 1),
            &config(mode),
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        for (d, row) in g.iter().enumerate() {
            assert!(
                row.iter().all(|x| x.is_finite()),
                "{mode:?} decision {d}: {row:?}"
            );
            assert!(
                row.iter().any(|x| *x != 0.0),
                "{mode:?} decision {d}: {row:?}"
            );
        }
    }
}

/// The expected latency of the final θ, for a loss weighing latency by `alpha`.
fn expected_after(loss: LossKind, alpha: f64, beta: f64, target: Option<f64>) -> f64 {
    let (_, sn) = small();
    let cfg = SearchConfig {
        loss,
        alpha,
        beta,
        target_ms: target,
        arch_lr: 0.05,
        ..config(Mode::Gumbel)
    };
    let out = search::search(
        &sn,
        &Weights::random(&sn.graph, 1),
        &costs(),
        (&data(256, 1), &data(256, 2)),
        &cfg,
        None,
        |_| {},
    )
    .unwrap();
    out.epochs.last().unwrap().expected_ms
}

#[test]
fn more_latency_weight_moves_theta_to_cheaper_options() {
    // Additive (ProxylessNAS) loss: α weighs latency against error.
    let e: Vec<f64> = [0.0, 0.05, 0.2]
        .iter()
        .map(|&a| expected_after(LossKind::Add, a, 1.0, None))
        .collect();
    assert!(e[0] > e[1] && e[1] > e[2], "E[LAT] by α: {e:?}");
    // Multiplicative (BBSSP) loss: the exponent β is the trade-off (α only scales it).
    // Beyond β ≈ 1 the factor E^β shrinks so fast as θ gets cheaper that Adam's memory of
    // the early, larger gradients stalls θ: the range where it is monotone is the useful one.
    let e: Vec<f64> = [0.0, 0.3, 0.6]
        .iter()
        .map(|&b| expected_after(LossKind::Mul, 0.2, b, None))
        .collect();
    assert!(e[0] > e[1] && e[1] > e[2], "E[LAT] by β: {e:?}");
    // A target above every architecture's latency switches the latency term off.
    let free = expected_after(LossKind::Add, 5.0, 1.0, Some(10.0));
    let none = expected_after(LossKind::Add, 0.0, 1.0, None);
    assert!((free - none).abs() < 1e-9, "{free} vs {none}");
}

#[test]
fn a_killed_search_resumes_to_the_same_theta() {
    let (_, sn) = small();
    let init = Weights::random(&sn.graph, 1);
    for mode in [Mode::Gumbel, Mode::Proxyless] {
        let cfg = config(mode);
        let run = |dir: Option<&std::path::Path>, stop_after: Option<usize>| {
            let mut seen = 0;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                search::search(
                    &sn,
                    &init,
                    &costs(),
                    (&data(128, 1), &data(128, 2)),
                    &cfg,
                    dir,
                    |_| {
                        seen += 1;
                        if Some(seen) == stop_after {
                            panic!("killed");
                        }
                    },
                )
            }));
            r.ok().map(|o| o.unwrap())
        };
        let whole = run(None, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Killed inside epoch 3's callback: its checkpoint is not written, epochs 0–1 are.
        assert!(run(Some(dir.path()), Some(3)).is_none());
        let resumed = run(Some(dir.path()), None).unwrap();
        assert_eq!(resumed.resumed, 2, "{mode:?}");
        assert_eq!(resumed.theta, whole.theta, "{mode:?}");
        assert_eq!(resumed.choices, whole.choices);
        assert_eq!(untimed(&resumed.epochs), untimed(&whole.epochs));
    }
}

fn untimed(epochs: &[search::EpochLog]) -> Vec<search::EpochLog> {
    epochs
        .iter()
        .map(|e| search::EpochLog {
            seconds: 0.0,
            peak_bytes: 0,
            ..e.clone()
        })
        .collect()
}

/// A space small enough to search end to end in a test, on synthetic 1×28×28 data.
const TINY_FILE: &str = r#"
input 1x28x28
classes 10
block c(k) {
    conv(out, k=k, stride=stride) | bn | relu
}
space s {
    candidates {
        c(k) for k in [1, 3, 5]
    }
    default c(3)
}
skeleton {
    stem conv(8, k=3, stride=2) | bn | relu
    search out=[8, 16, 16] stride=[1, 2, 1]
    head gap | linear(classes)
}
"#;

fn cli(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "spacetune {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_tiny_search_emits_a_network_that_checks_and_runs_in_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.space");
    std::fs::write(&file, TINY_FILE).unwrap();
    let (db, out) = (dir.path().join("m.db"), dir.path().join("out"));
    let mut args: Vec<&str> = vec!["search", file.to_str().unwrap(), "--backend", "sim"];
    args.extend(["--db", db.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    args.extend(common::TINY_BUDGET);
    args.extend(["--budget", "tiny"]);
    let first = cli(&args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("loads, and agrees with tch"), "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tiny.search.json")).unwrap())
            .unwrap();
    let chosen = &json["chosen"];
    let outcomes = chosen["outcomes"].as_array().unwrap();
    assert_eq!(outcomes[0]["name"], "chosen");
    assert_eq!(outcomes[1]["name"], "ssbn0");
    for o in outcomes {
        let acc = o["test_accuracy"]["Ok"]
            .as_f64()
            .unwrap_or_else(|| panic!("{o}"));
        assert!((0.0..=1.0).contains(&acc), "{o}");
        assert!(o["measured_ms"]["Ok"].as_f64().unwrap() > 0.0, "{o}");
    }
    assert_eq!(json["searched"]["epochs"].as_array().unwrap().len(), 3);
    // The emitted `.space` is a fixed network that checks, with the chosen key's blocks.
    let space = out.join("s-chosen.space");
    let checked = cli(&["check", space.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&checked.stdout).contains("0 decisions, 1 ssbns"));
    let key = json["searched"]["key"].as_str().unwrap();
    assert!(stdout.contains(&format!("chosen: {key}")), "{stdout}");
    // ONNX Runtime loads the ONNX file as written.
    let bytes = std::fs::read(out.join("s-chosen.onnx")).unwrap();
    let ort = spacetune::backends::onnxrt::Ort::from_options(&Default::default()).unwrap();
    let y =
        spacetune::backends::onnxrt::infer(&ort, &bytes, [1, 1, 28, 28], vec![0.5; 784]).unwrap();
    assert_eq!(y.len(), 10);
    // Run again: the search is served from its checkpoint, nothing is searched anew.
    let again = cli(&args);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("(3 from a checkpoint)"), "{stdout}");
}

/// The supernet's weights learn: after the warm-up alone (uniform paths, SGD), the weight
/// steps' accuracy on separable synthetic data is well above chance, and so is the
/// supernet cut at argmax θ, tested on data it did not see.
#[test]
fn the_supernets_weights_learn() {
    let (_, sn) = small();
    for mode in [Mode::Gumbel, Mode::Proxyless] {
        let cfg = SearchConfig {
            epochs: 4,
            warmup: 4,
            ..config(mode)
        };
        let out = search::search(
            &sn,
            &Weights::random(&sn.graph, 1),
            &costs(),
            (&data(512, 1), &data(64, 2)),
            &cfg,
            None,
            |_| {},
        )
        .unwrap();
        let acc: Vec<f64> = out.epochs.iter().map(|e| e.train_accuracy).collect();
        assert!(
            acc[3] > 0.6,
            "{mode:?}: accuracy by epoch {acc:?} (chance 0.25)"
        );
    }
}

/// A latency no table can hold: k=5 in both layers together costs far more than the sum
/// of each alone (as a cell's `zero` edges make an edge's cost depend on the others).
struct Pairwise;

impl search::LatencyModel for Pairwise {
    fn latency(&self, c: &[u32]) -> Result<f64, String> {
        Ok(0.5 + 0.1 * (c[0] + c[1]) as f64 + if c == [2, 2] { 3.0 } else { 0.0 })
    }
}

/// The same table, seen only whole architecture by whole architecture.
struct Opaque(LatencyCosts);

impl search::LatencyModel for Opaque {
    fn latency(&self, c: &[u32]) -> Result<f64, String> {
        Ok(self.0.of(c))
    }
}

/// softmax(θ) of the final θ and its expected latency under `model`, for latency weight α.
fn search_with(model: &dyn search::LatencyModel, alpha: f64) -> (Vec<Vec<f64>>, f64) {
    let (_, sn) = small();
    let cfg = SearchConfig {
        loss: LossKind::Add,
        alpha,
        arch_lr: 0.05,
        ..config(Mode::Gumbel)
    };
    let out = search::search(
        &sn,
        &Weights::random(&sn.graph, 1),
        model,
        (&data(256, 1), &data(256, 2)),
        &cfg,
        None,
        |_| {},
    )
    .unwrap();
    let probs = out
        .theta
        .iter()
        .map(|t| {
            let z: f64 = t.iter().map(|x| x.exp()).sum();
            t.iter().map(|x| x.exp() / z).collect()
        })
        .collect();
    (probs, out.epochs.last().unwrap().expected_ms)
}

#[test]
fn a_latency_that_is_not_additive_moves_theta_by_the_score_function() {
    // Seen whole, the table's latency pulls θ to cheaper options as the exact
    // expectation does.
    let exact: Vec<f64> = [0.0, 0.2]
        .iter()
        .map(|&a| search_with(&costs(), a).1)
        .collect();
    let sampled: Vec<f64> = [0.0, 0.2]
        .iter()
        .map(|&a| search_with(&Opaque(costs()), a).1)
        .collect();
    assert!(exact[1] < exact[0], "exact E[LAT] by α: {exact:?}");
    assert!(sampled[1] < sampled[0], "sampled E[LAT] by α: {sampled:?}");
    // The pairwise model: the dear pair loses probability as α grows.
    let p_pair = |a: f64| {
        let (p, _) = search_with(&Pairwise, a);
        p[0][2] * p[1][2]
    };
    let (free, priced) = (p_pair(0.0), p_pair(0.5));
    assert!(
        priced < free,
        "P(k5, k5): {free} without latency, {priced} with"
    );
}
