//! Selection: BBSSP's cost function is controllable (more weight on latency, faster picks)
//! and the reduced space it writes is a real `.space` file.

mod common;

use common::module;
use spacetune::backends::{sim::Sim, Backend, Options, Timing};
use spacetune::ir::{dsl, Handle, Module, Network};
use spacetune::pass::reduce::reduced_module;
use spacetune::pass::select::{select, SelectParams};
use std::collections::BTreeMap;

type Table = BTreeMap<Handle<Network>, f64>;

fn all(m: &Module) -> Vec<u32> {
    (0..m.checked.len() as u32).collect()
}

/// Table accuracies: a smooth function of FLOPs (bigger blocks are more accurate), as a
/// tabular benchmark would give; latencies from the simulator.
fn tables(m: &Module) -> (Table, Table) {
    let sim = Sim::from_options(&Options::default()).unwrap();
    let flops: Vec<f64> = m.networks.values().map(|n| n.cost.flops as f64).collect();
    let (lo, hi) = (
        flops.iter().copied().fold(f64::INFINITY, f64::min),
        flops.iter().copied().fold(0.0, f64::max),
    );
    let mut acc = BTreeMap::new();
    let mut lat = BTreeMap::new();
    for (h, n) in m.networks.iter() {
        let f = n.cost.flops as f64;
        acc.insert(h, 0.88 + 0.06 * (f / lo).ln() / (hi / lo).ln());
        let l = match sim.prepare(&sim.lower(n).unwrap()).unwrap() {
            Timing::Reported(l) => l.p10_ms,
            Timing::Timed(_) => unreachable!(),
        };
        lat.insert(h, l);
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
        let s = select(&m, &all(&m), &acc, &lat, &p).unwrap();
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
    let s = select(&m, &all(&m), &acc, &lat, &p).unwrap();
    let space = m.checked.iter().position(|i| i.name == s.winner).unwrap();
    let text = dsl::print_module(&reduced_module(&m, space as u32, &s.keep));
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
    let h = m
        .networks
        .iter()
        .find(|(_, n)| n.id == "mobile-3-4")
        .unwrap()
        .0;
    acc.remove(&h);
    let err = select(&m, &all(&m), &acc, &lat, &SelectParams::default()).unwrap_err();
    assert!(
        err.contains("mobile-3-4") && err.contains("mbconv_k5_e3"),
        "{err}"
    );
}

/// The reduced module of a selection expands to exactly 1 + Σ (kept − 1) SSBNs: decision d
/// offers exactly its kept options (tokens, in order) and every SSBN key is SSBN_0's with
/// at most one decision swapped to a kept option.
fn assert_reduced_exactly(m: &Module, lambda: f64, n: usize) {
    let (acc, lat) = tables(m);
    let p = SelectParams {
        lambda,
        n,
        ..SelectParams::default()
    };
    let s = select(m, &all(m), &acc, &lat, &p).unwrap();
    let info = &m.checked[s.space as usize];
    let text = dsl::print_module(&reduced_module(m, s.space, &s.keep));
    let reduced = common::expect_ok(
        spacetune::compile_str(
            "reduced.space",
            &text,
            Some(&common::root()),
            Default::default(),
        ),
        "the reduced space",
    );
    let want = 1 + s.keep.iter().map(|k| k.len() - 1).sum::<usize>();
    assert_eq!(reduced.networks.len(), want, "{text}");
    let r = &reduced.checked[0];
    let mut keys = std::collections::BTreeSet::new();
    let tokens = |d: &spacetune::ir::Decision, o: u32| d.options[o as usize].token.clone();
    for (((_, d), kept), (_, rd)) in info.decisions.iter().zip(&s.keep).zip(r.decisions.iter()) {
        let got: Vec<String> = rd.options.iter().map(|o| o.token.clone()).collect();
        let kept_tokens: Vec<String> = kept.iter().map(|&o| tokens(d, o)).collect();
        assert_eq!(got, kept_tokens, "decision {}", d.name);
    }
    let base: Vec<String> = m
        .network(&format!("{}-0", info.name))
        .unwrap()
        .key
        .split(' ')
        .map(String::from)
        .collect();
    keys.insert(base.join(" "));
    for (i, ((_, d), kept)) in info.decisions.iter().zip(&s.keep).enumerate() {
        for &o in kept.iter().filter(|&&o| o != d.default) {
            let mut k = base.clone();
            k[i] = m
                .networks
                .values()
                .find(|n| {
                    n.space == s.space
                        && n.origin
                            == spacetune::ir::Origin::Swap {
                                decision: spacetune::ir::Handle::new(i),
                                option: o,
                            }
                })
                .unwrap()
                .key
                .split(' ')
                .nth(i)
                .unwrap()
                .to_string();
            keys.insert(k.join(" "));
        }
    }
    let got: std::collections::BTreeSet<String> =
        reduced.networks.values().map(|n| n.key.clone()).collect();
    assert_eq!(got, keys);
}

#[test]
fn a_reduced_cell_space_keeps_each_edges_own_picks() {
    // Accuracy only (λ 0), six picks: the edges keep different options; written as one
    // shared list they would expand to far more SSBNs than the selection kept.
    let m = module("examples/nb201.space");
    assert_reduced_exactly(&m, 0.0, 6);
}

#[test]
fn a_reduced_layer_space_keeps_each_layers_own_picks() {
    let m = module("examples/bbssp_cifar.space");
    assert_reduced_exactly(&m, 0.05, 30);
}
