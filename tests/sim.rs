//! The simulated accelerator: deterministic, fusing, and shaped like the authors' DPU table.

mod common;

use common::module;
use spacetune::backends::{sim::Sim, Backend, Options, Timing};
use spacetune::ir::{Module, Origin, Region};

fn sim(pairs: &[&str]) -> Sim {
    let pairs: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
    Sim::from_options(&Options::parse(&pairs).unwrap()).unwrap()
}

fn latency(sim: &Sim, net: &spacetune::ir::Network) -> spacetune::backends::Latency {
    match sim.prepare(&sim.lower(net).unwrap()).unwrap() {
        Timing::Reported(l) => l,
        Timing::Timed(_) => panic!("sim reports its latency"),
    }
}

/// For each block, Σ over layers of that layer's time when the block sits there (from the
/// SSBN that puts it there): the quantity of the authors' per-block DPU table.
fn block_table(sim: &Sim, m: &Module) -> Vec<(String, f64)> {
    let mut table: Vec<(String, f64)> = Vec::new();
    let layers = m.checked[0].slots.len();
    for i in 0..layers {
        let mut seen = std::collections::BTreeSet::new();
        for net in m.networks.values() {
            let token = net.key.split(' ').nth(i).unwrap().to_string();
            if !seen.insert(token.clone()) {
                continue;
            }
            let l = latency(sim, net);
            let t: f64 = l
                .per_layer
                .as_ref()
                .unwrap()
                .iter()
                .filter(|t| t.region == Region::Layer(i as u32))
                .map(|t| t.ms)
                .sum();
            match table.iter_mut().find(|(b, _)| *b == token) {
                Some(e) => e.1 += t,
                None => table.push((token, t)),
            }
        }
    }
    table
}

/// The authors' DPU table (ImageNet skeleton, ms summed over the 12 layers): VGG blocks
/// 0.75–5.6, Res 3.2–5.8, Mobile 1.6–13.7 with k7e6 the slowest. The simulator is not the
/// DPU, but its table must have the same shape: ranges within a factor of 2.5 of the
/// authors' ends, and the depthwise-heavy k7e6 the most expensive block of all.
#[test]
fn imagenet_block_table_has_the_dpu_shape() {
    let sim = sim(&[]);
    let mut slowest = (String::new(), 0.0);
    for (file, lo, hi) in [
        ("examples/bbssp_imagenet_vgg.space", 0.75, 5.6),
        ("examples/bbssp_imagenet_res.space", 3.2, 5.8),
        ("examples/bbssp_imagenet_mobile.space", 1.6, 13.7),
    ] {
        let table = block_table(&sim, &module(file));
        let min = table.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
        let max = table.iter().map(|b| b.1).fold(0.0, f64::max);
        println!("{file}: {min:.2}–{max:.2} ms (DPU {lo}–{hi})");
        for (b, t) in &table {
            println!("  {b} {t:.3}");
            if *t > slowest.1 {
                slowest = (b.clone(), *t);
            }
        }
        for (ours, theirs) in [(min, lo), (max, hi)] {
            let ratio = ours / theirs;
            assert!(
                (1.0 / 2.5..=2.5).contains(&ratio),
                "{file}: {ours:.2} ms against the DPU's {theirs} ms"
            );
        }
    }
    assert_eq!(slowest.0, "mbconv_k7_e6", "slowest block: {slowest:?}");
}

/// Deterministic, and the profile puts each layer's time where it belongs: an SSBN that
/// swaps layer i's block differs from SSBN_0 in layer i (and, through fusion and hand-over
/// at the boundaries, its neighbours) and in no other layer.
#[test]
fn latency_is_deterministic_and_the_profile_is_local() {
    let m = module("examples/bbssp_cifar_mobile.space");
    let layer = |x: &spacetune::backends::Latency, k: u32| -> f64 {
        let profile = x.per_layer.as_ref().unwrap();
        let of = profile.iter().filter(|t| t.region == Region::Layer(k));
        of.map(|t| t.ms).sum()
    };
    for preset in ["dpu-b4096-zcu102", "npu-systolic-32"] {
        let opt = format!("preset={preset}");
        let (a, b) = (sim(&[&opt]), sim(&[&opt]));
        let base = m
            .networks
            .values()
            .find(|n| n.origin == Origin::Base)
            .unwrap();
        let base_l = latency(&a, base);
        let layers = m.checked[0].slots.len() as u32;
        let mut changed = 0;
        for net in m.networks.values() {
            let (x, y) = (latency(&a, net), latency(&b, net));
            assert_eq!(x, y, "{preset} {}", net.id);
            let Origin::Swap { decision, .. } = net.origin else {
                continue;
            };
            let i = decision.index() as u32;
            for k in (0..layers).filter(|k| k.abs_diff(i) > 1) {
                let (s, b) = (layer(&x, k), layer(&base_l, k));
                assert!(
                    (s - b).abs() < 1e-12,
                    "{preset} {} layer {k}: {s} vs {b}",
                    net.id
                );
            }
            changed += usize::from((layer(&x, i) - layer(&base_l, i)).abs() > 1e-9);
        }
        // A different block costs a different time where it sits.
        let swaps = m.networks.len() - 1;
        assert!(changed * 10 >= swaps * 9, "{preset}: {changed} of {swaps}");
    }
}

/// A DPU-class array with a narrow depthwise path and a systolic NPU are different
/// machines: they price the blocks differently relative to each other (each block's time
/// summed over the layers it sits in, over the cheapest block's). They do rank the Mobile
/// blocks in the same order: the cheapest block is the cheapest on both.
#[test]
fn the_two_presets_price_blocks_differently() {
    let m = module("examples/bbssp_cifar_mobile.space");
    let relative = |preset: &str| -> Vec<(String, f64)> {
        let table = block_table(&sim(&[&format!("preset={preset}")]), &m);
        let cheapest = table.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
        table.into_iter().map(|(b, t)| (b, t / cheapest)).collect()
    };
    let (dpu, npu) = (relative("dpu-b4096-zcu102"), relative("npu-systolic-32"));
    let mut apart: Vec<(String, f64)> = dpu
        .iter()
        .map(|(b, d)| {
            let n = npu.iter().find(|x| &x.0 == b).unwrap().1;
            (b.clone(), n / d)
        })
        .collect();
    apart.sort_by(|a, b| a.1.total_cmp(&b.1));
    println!("npu/dpu relative cost: {apart:.2?}");
    let widest = apart.last().unwrap().1 / apart.first().unwrap().1;
    assert!(widest > 1.5, "the presets price blocks alike: {apart:.2?}");
}

#[test]
fn lowered_kernels_of_a_small_network() {
    let m = module("tests/in/fixed_network.space");
    let sim = sim(&[]);
    let lowered = sim
        .lower(&m.networks[spacetune::ir::Handle::new(0)])
        .unwrap();
    let l = latency(&sim, &m.networks[spacetune::ir::Handle::new(0)]);
    let profile: Vec<String> = l
        .per_layer
        .unwrap()
        .iter()
        .map(|t| format!("{} {:.4} ms", t.region, t.ms))
        .collect();
    snapshot!(
        "sim__fixed_network",
        format!(
            "{}\ntotal {:.4} ms\n{}\n",
            lowered.text,
            l.p10_ms,
            profile.join("\n")
        )
    );
}

#[test]
fn unknown_preset_and_option_are_clear_errors() {
    let err = |pairs: &[&str]| {
        let pairs: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        match Sim::from_options(&Options::parse(&pairs).unwrap()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{pairs:?} accepted"),
        }
    };
    assert!(err(&["preset=tpu"]).contains("dpu-b4096-zcu102"));
    assert!(err(&["clock=1"]).contains("has no option `clock`"));
    assert!(err(&["fuse=maybe"]).contains("on or off"));
}
