//! The fusion effect, seen from outside: a conv→bn→relu chain costs less than the sum of
//! its ops timed alone on a fusing backend (sim, ort with optimisations, tvm's default
//! pipeline), and fusion is what makes the difference (the non-fusing configuration of the
//! same backend saves less).

mod common;

use spacetune::backends::measure::{measure_together, Protocol};
use spacetune::backends::{lookup, Backend, Options};
use spacetune::ir::{Graph, Network, Prim, Region, Shape};

/// The layers of a MobileNet block where fusion matters most: a pointwise conv and a
/// depthwise conv, each on a large feature map (element-wise passes are not negligible).
#[derive(Clone, Copy)]
enum Layer {
    Pointwise,
    Depthwise,
}

impl Layer {
    fn input(self) -> Shape {
        match self {
            Layer::Pointwise => Shape::new(16, 112, 112),
            Layer::Depthwise => Shape::new(32, 112, 112),
        }
    }
    fn conv(self) -> Prim {
        let (out, k, groups) = match self {
            Layer::Pointwise => (16, 1, 1),
            Layer::Depthwise => (32, 3, 32),
        };
        Prim::Conv {
            out,
            k,
            stride: 1,
            pad: k / 2,
            groups,
            dilation: 1,
        }
    }
}

fn chain(input: Shape, id: &str, ops: &[Prim]) -> Network {
    let mut g = Graph::with_input(input);
    let mut last = spacetune::ir::Handle::new(0);
    for op in ops {
        last = g.push(op.clone(), &[last], Region::Layer(0)).unwrap();
    }
    Network::fixed(id, g)
}

/// (chain, sum of the ops alone), each net of the per-call cost of an empty network, ms.
/// All five networks are timed interleaved, so machine-speed drift hits them alike.
fn chain_and_parts(backend: &dyn Backend, layer: Layer) -> (f64, f64) {
    let (x, conv) = (layer.input(), layer.conv());
    let nets = [
        // The per-call cost: a network that does next to nothing (one value copied).
        chain(Shape::new(1, 1, 1), "empty", &[Prim::Identity]),
        chain(x, "conv", std::slice::from_ref(&conv)),
        chain(x, "bn", &[Prim::BatchNorm]),
        chain(x, "relu", &[Prim::Relu]),
        chain(x, "chain", &[conv.clone(), Prim::BatchNorm, Prim::Relu]),
    ];
    let lowered: Vec<_> = nets.iter().map(|n| backend.lower(n).unwrap()).collect();
    let t: Vec<f64> = measure_together(backend, &lowered, &Protocol::default())
        .unwrap()
        .iter()
        .map(|l| l.p10_ms)
        .collect();
    println!(
        "{} empty/conv/bn/relu/chain ms: {t:.4?}",
        backend.fingerprint()
    );
    (t[4] - t[0], t[1] + t[2] + t[3] - 3.0 * t[0])
}

fn backend(name: &str, pairs: &[&str]) -> Box<dyn Backend> {
    let pairs: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
    lookup(name, &Options::parse(&pairs).unwrap()).unwrap()
}

fn compare(name: &str, fusing: &[&str], plain: &[&str]) {
    for layer in [Layer::Pointwise, Layer::Depthwise] {
        compare_on(name, fusing, plain, layer);
    }
}

fn compare_on(name: &str, fusing: &[&str], plain: &[&str], layer: Layer) {
    let _quiet = common::timing();
    let (fused_chain, fused_parts) = chain_and_parts(backend(name, fusing).as_ref(), layer);
    let (plain_chain, plain_parts) = chain_and_parts(backend(name, plain).as_ref(), layer);
    let name = format!("{name} {}", layer.conv());
    let saved = |c: f64, p: f64| 1.0 - c / p;
    println!(
        "{name} {fusing:?}: chain {fused_chain:.4} ms vs parts {fused_parts:.4} ms (saves {:.1}%)",
        100.0 * saved(fused_chain, fused_parts)
    );
    println!(
        "{name} {plain:?}: chain {plain_chain:.4} ms vs parts {plain_parts:.4} ms (saves {:.1}%)",
        100.0 * saved(plain_chain, plain_parts)
    );
    assert!(
        fused_chain < 0.9 * fused_parts,
        "{name}: no fusion effect (chain {fused_chain} ms, parts {fused_parts} ms)"
    );
    assert!(
        saved(fused_chain, fused_parts) > saved(plain_chain, plain_parts),
        "{name}: the fusing configuration saves no more than the plain one"
    );
}

#[test]
fn sim_fuses_conv_bn_relu() {
    compare("sim", &[], &["fuse=off"]);
}

#[test]
fn ort_fuses_conv_bn_relu() {
    compare("ort", &["opt=all"], &["opt=disabled"]);
}

#[cfg(feature = "tvm")]
#[test]
fn tvm_fuses_conv_bn_relu() {
    let dir = tempfile::tempdir().unwrap();
    let cache = format!("cache={}", dir.path().display());
    compare("tvm", &[&cache], &[&cache, "pipeline=plain"]);
}
