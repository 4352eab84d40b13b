//! Agreement: the same network with the same weights computes the same outputs on tch, ONNX
//! Runtime and TVM (where it is compiled in), for every block family of the examples.

mod common;

use common::module;
use spacetune::backends::onnx;
use spacetune::backends::onnxrt::{self, Ort};
use spacetune::backends::torch::{calibrated_weights, TchNet};
#[cfg(feature = "tvm")]
use spacetune::backends::tvm::{self, Tvm};
use spacetune::backends::weights::{random_input, Weights};
#[cfg(feature = "tvm")]
use spacetune::backends::{network_hash, Lowered};
use spacetune::ir::{Graph, Handle, Network};

/// Outputs of tch, then of ort and tvm by name, for one network.
type Outputs = (Vec<f32>, Vec<(&'static str, Vec<f32>)>);

fn outputs(graph: &Graph, weights: &Weights, id: &str, dir: &std::path::Path) -> Outputs {
    let s = graph.shape(Handle::new(0));
    let x = random_input(s, 1, 11);
    let dims = [1, s.c as i64, s.h as i64, s.w as i64];

    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), graph, weights).unwrap();
    let input = tch::Tensor::from_slice(&x).view(dims);
    let y = tch::no_grad(|| net.forward_t(&input, false));
    let by_tch = Vec::<f32>::try_from(&y.flatten(0, -1)).unwrap();

    let bytes = onnx::export(graph, weights, 1).unwrap();
    let ort = Ort {
        optimize: true,
        threads: 1,
        seed: 0,
    };
    let udims = dims.map(|d| d as usize);
    let by_ort = onnxrt::infer(&ort, &bytes, udims, x.clone()).unwrap();
    let mut others = vec![("ort", by_ort)];
    others.extend(by_tvm(graph, bytes, id, dir, dims, &x));
    (by_tch, others)
}

#[cfg(not(feature = "tvm"))]
fn by_tvm(
    _: &Graph,
    _: Vec<u8>,
    _: &str,
    _: &std::path::Path,
    _: [i64; 4],
    _: &[f32],
) -> Option<(&'static str, Vec<f32>)> {
    None
}

#[cfg(feature = "tvm")]
fn by_tvm(
    graph: &Graph,
    bytes: Vec<u8>,
    id: &str,
    dir: &std::path::Path,
    dims: [i64; 4],
    x: &[f32],
) -> Option<(&'static str, Vec<f32>)> {
    let tvm = Tvm {
        fuse: true,
        threads: 1,
        seed: 0,
        cache_dir: dir.to_path_buf(),
        jobs: 1,
    };
    let lowered = Lowered {
        id: id.into(),
        hash: format!("agree-{}", network_hash(graph, 1)),
        graph: graph.clone(),
        text: String::new(),
        bytes,
    };
    let main = tvm.load(&tvm.compile(&lowered).unwrap()).unwrap();
    Some(("tvm", tvm::infer(&main, dims, x).unwrap()))
}

fn check(file: &str, pick: impl Fn(&Network) -> bool, what: &str) {
    let m = module(file);
    let net = m
        .networks
        .values()
        .find(|n| pick(n))
        .unwrap_or_else(|| panic!("{file} has no network for {what}"));
    let graph = net.graph.pruned();
    let weights = calibrated_weights(&graph, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (t, others) = outputs(&graph, &weights, &net.id, dir.path());
    let classes = graph.shapes.last().unwrap().c as usize;
    assert_eq!(t.len(), classes, "{what}: tch output size");
    let scale = t.iter().fold(1f32, |m, x| m.max(x.abs()));
    let mean = t.iter().sum::<f32>() / t.len() as f32;
    let spread = t.iter().map(|x| (x - mean).abs()).fold(0f32, f32::max);
    // Outputs that are all alike would agree trivially.
    assert!(spread > 1e-2, "{what}: degenerate outputs {t:?}");
    for (name, other) in &others {
        assert_eq!(other.len(), t.len(), "{what}: {name} output size");
        let diff = t
            .iter()
            .zip(other.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "{what} ({}): max |tch - {name}| = {diff:.2e} (scale {scale:.2})",
            net.id
        );
        assert!(
            diff <= 1e-4 * scale,
            "{what}: tch and {name} differ by {diff} (outputs of scale {scale})\ntch {t:?}\n{name} {other:?}"
        );
    }
}

#[test]
fn mbconv_with_squeeze_excite_and_every_primitive() {
    check(
        "tests/in/all_ops.space",
        |_| true,
        "MBConv+SE, hswish, shuffle, pools",
    );
}

#[test]
fn mbconv() {
    check(
        "examples/bbssp_cifar_mobile.space",
        |n| n.key.starts_with("mbconv_k7_e6"),
        "MBConv k7 e6",
    );
}

#[test]
fn res_two_branch() {
    check(
        "examples/bbssp_cifar_res.space",
        |n| n.key.contains("res_d4_k5"),
        "Res two-branch",
    );
}

#[test]
fn vgg_stack() {
    check(
        "examples/bbssp_cifar_vgg.space",
        |n| n.key.contains("vgg_ks1-3-3-3"),
        "VGG stack",
    );
}

#[test]
fn preact_stack() {
    check(
        "examples/bbssp_cifar_preact.space",
        |n| n.key.contains("preact_ks3-5"),
        "pre-activation stack",
    );
}

#[test]
fn fbnet_group_conv_and_shuffle() {
    check(
        "examples/fbnet22.space",
        |n| n.key.contains("_g2"),
        "FBNet group conv + shuffle",
    );
}

#[test]
fn nb201_cell_with_pruned_edges() {
    check(
        "examples/nb201.space",
        |n| n.key.starts_with("e01=zero"),
        "NB201 cell, a none edge",
    );
    check(
        "examples/nb201.space",
        |n| n.key.contains("avgpool"),
        "NB201 cell, an avg-pool edge",
    );
}

#[test]
fn darts_style_cell_with_concat() {
    check("tests/in/cell_concat.space", |_| true, "concat cell");
}

#[test]
fn darts_cells_with_reductions() {
    // A factorised reduction on a reduction edge (the shifted branch), the compiler's
    // preprocessing, concatenated cell outputs; then a strided pool and a dilated conv.
    check(
        "examples/darts.space",
        |n| n.key.contains("r02=skip_connect"),
        "DARTS, skip_connect on a reduction edge",
    );
    check(
        "examples/darts.space",
        |n| n.key.contains("r12=avgpool"),
        "DARTS, avg pool on a reduction edge",
    );
    check(
        "examples/darts.space",
        |n| n.key.contains("n23=dil_conv_k5"),
        "DARTS, dilated 5x5 conv",
    );
}

/// What ORT says it runs for an NB201 network with an avg-pool edge: unoptimised, the
/// exported ops one for one; optimised, the convs in its blocked layout (`nchwc`) with
/// their batch norms folded in.
#[test]
fn ort_shows_the_graph_its_optimiser_leaves() {
    use spacetune::backends::Backend;
    use spacetune::ir::Prim;
    let m = module("examples/nb201.space");
    let net = m
        .networks
        .values()
        .find(|n| n.key.contains("avgpool"))
        .expect("an SSBN with an avg-pool edge");
    let ops = |optimize| {
        let ort = Ort {
            optimize,
            threads: 1,
            seed: 0,
        };
        ort.compiled_ops(&ort.lower(net).unwrap()).unwrap().unwrap()
    };
    let graph = net.graph.pruned();
    let exported =
        |f: fn(&Prim) -> bool| graph.nodes.iter().filter(|(_, n)| f(&n.op)).count() as u32;
    let plain = ops(false);
    let bns = exported(|p| matches!(p, Prim::BatchNorm));
    let convs = exported(|p| matches!(p, Prim::Conv { .. }));
    assert!(bns > 10 && convs > 10, "{plain:?}");
    assert_eq!(plain.get("BatchNormalization"), Some(&bns), "{plain:?}");
    let plain_convs: u32 = plain
        .iter()
        .filter(|(k, _)| k.starts_with("Conv "))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(plain_convs, convs, "{plain:?}");
    assert!(plain.contains_key("Conv 3x3"), "{plain:?}");
    assert!(plain.keys().all(|k| !k.contains("nchwc")), "{plain:?}");

    let optimised = ops(true);
    let blocked: u32 = optimised
        .iter()
        .filter(|(k, _)| k.starts_with("com.microsoft.nchwc:Conv "))
        .map(|(_, n)| n)
        .sum();
    // A batch norm that follows no conv becomes a grouped 1×1 conv of the blocked layout.
    assert!(
        blocked >= convs && optimised.keys().all(|k| !k.starts_with("Conv ")),
        "every conv in the blocked layout: {optimised:?}"
    );
    assert!(
        optimised.get("BatchNormalization").copied().unwrap_or(0) < bns / 4,
        "batch norms folded into the convs: {optimised:?}"
    );
}
