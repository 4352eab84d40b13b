//! The simulated accelerator: deterministic, fusing, and shaped like the authors' DPU table.

mod common;

use common::{expect_ok, root};
use spacetune::backends::{sim::Sim, Backend, Options, Timing};
use spacetune::ir::{Module, Region};

fn module(file: &str) -> Module {
    let path = root().join(file);
    expect_ok(spacetune::compile(&path, Default::default()), file)
}

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

/// Searchable-layer time summed over layers, as in the authors' table.
fn layers_ms(l: &spacetune::backends::Latency) -> f64 {
    l.per_layer
        .as_ref()
        .unwrap()
        .iter()
        .filter(|t| matches!(t.region, Region::Layer(_)))
        .map(|t| t.ms)
        .sum()
}

/// For each block, Σ over layers of that layer's time when the block sits there (from the
/// SSBN that puts it there): the quantity of the authors' per-block DPU table.
fn block_table(sim: &Sim, m: &Module) -> Vec<(String, f64)> {
    let mut table: Vec<(String, f64)> = Vec::new();
    let layers = m.checked[0].slots.len();
    for i in 0..layers {
        let mut seen = std::collections::BTreeSet::new();
        for net in &m.networks {
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

#[test]
fn print_imagenet_table() {
    let sim = sim(&[]);
    for file in [
        "examples/bbssp_imagenet_vgg.space",
        "examples/bbssp_imagenet_res.space",
        "examples/bbssp_imagenet_mobile.space",
    ] {
        let m = module(file);
        for (b, t) in block_table(&sim, &m) {
            println!("{file} {b} {t:.3}");
        }
    }
}
