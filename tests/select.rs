//! Selection: BBSSP's cost function is controllable (more weight on latency, faster picks)
//! and the reduced space it writes is a real `.space` file.

mod common;

use common::module;
use spacetune::backends::{sim::Sim, Backend, Options, Timing};
use spacetune::ir::{dsl, Module};
use spacetune::pass::select::{select, SelectParams};
use std::collections::HashMap;

/// Table accuracies: a smooth function of FLOPs (bigger blocks are more accurate), as a
/// tabular benchmark would give; latencies from the simulator.
fn tables(m: &Module) -> (HashMap<String, f64>, HashMap<String, f64>) {
    let sim = Sim::from_options(&Options::default()).unwrap();
    let flops: Vec<f64> = m.networks.iter().map(|n| n.cost.flops as f64).collect();
    let (lo, hi) = (
        flops.iter().copied().fold(f64::INFINITY, f64::min),
        flops.iter().copied().fold(0.0, f64::max),
    );
    let mut acc = HashMap::new();
    let mut lat = HashMap::new();
    for n in &m.networks {
        let f = n.cost.flops as f64;
        acc.insert(n.id.clone(), 0.88 + 0.06 * (f / lo).ln() / (hi / lo).ln());
        let l = match sim.prepare(&sim.lower(n).unwrap()).unwrap() {
            Timing::Reported(l) => l.p10_ms,
            Timing::Timed(_) => unreachable!(),
        };
        lat.insert(n.id.clone(), l);
    }
    (acc, lat)
}

#[test]
fn more_weight_on_latency_picks_faster_networks() {
    let m = module("examples/bbssp_cifar_mobile.space");
    let (acc, lat) = tables(&m);
    let mut means = Vec::new();
    for lambda in [0.0, 0.05, 0.5] {
        let p = SelectParams {
            lambda,
            n: 20,
            ..SelectParams::default()
        };
        let s = select(&m, &acc, &lat, &p).unwrap();
        assert!(s.reached);
        assert_eq!(s.ranked.iter().filter(|r| r.picked).count(), 20);
        println!(
            "λ {lambda}: picked mean latency {:.4} ms",
            s.picked_mean_latency_ms
        );
        means.push(s.picked_mean_latency_ms);
    }
    assert!(
        means.windows(2).all(|w| w[1] < w[0]),
        "mean latency of the picks does not fall as λ grows: {means:?}"
    );
}

#[test]
fn the_reduced_space_parses_checks_and_expands() {
    let m = module("examples/bbssp_cifar.space");
    let (acc, lat) = tables(&m);
    let p = SelectParams {
        lambda: 0.05,
        n: 30,
        ..SelectParams::default()
    };
    let s = select(&m, &acc, &lat, &p).unwrap();
    let space = m.checked.iter().position(|i| i.name == s.winner).unwrap();
    let text = dsl::print_reduced(&m, space as u32, &s.keep);
    let reduced = common::expect_ok(
        spacetune::compile_str("reduced.space", &text, None, Default::default()),
        "the reduced space",
    );
    assert_eq!(reduced.checked.len(), 1);
    assert_eq!(reduced.checked[0].name, s.winner);
    let expected = 1 + s.keep.iter().map(|k| k.len() - 1).sum::<usize>();
    assert_eq!(reduced.networks.len(), expected);
    // Every layer kept its default and the picked blocks, in the original's order.
    let info = &m.checked[space];
    for (((_, d), kept), (_, r)) in info
        .decisions
        .iter()
        .zip(&s.keep)
        .zip(reduced.checked[0].decisions.iter())
    {
        let want: Vec<&str> = kept
            .iter()
            .map(|&o| d.options[o as usize].token.as_str())
            .collect();
        let got: Vec<&str> = r.options.iter().map(|o| o.token.as_str()).collect();
        assert_eq!(got, want, "{}", d.name);
        assert!(kept.contains(&d.default));
    }
    // And printing it again is stable.
    assert_eq!(dsl::print_module(&reduced), text);
}

#[test]
fn a_missing_accuracy_is_named() {
    let m = module("examples/bbssp_cifar_mobile.space");
    let (mut acc, lat) = tables(&m);
    acc.remove("mobile-3-4");
    let err = select(&m, &acc, &lat, &SelectParams::default()).unwrap_err();
    assert!(
        err.contains("mobile-3-4") && err.contains("mbconv_k5_e3"),
        "{err}"
    );
}
