//! Data sets and training: the readers read real files and reject broken ones, inputs are
//! adapted explicitly, training learns, and a seed fixes the result.

mod common;

use common::module;
use spacetune::backends::data::{Dataset, Split, FASHION_MNIST_DIR};
use spacetune::backends::torch::TchNet;
use spacetune::backends::train::{self, accuracy, TrainConfig};
use spacetune::backends::weights::Weights;
use spacetune::ir::{Graph, Shape};
use std::path::Path;

#[test]
fn fashion_mnist_test_set_reads() {
    let d = Dataset::fashion_mnist(Path::new(FASHION_MNIST_DIR), Split::Test).unwrap();
    assert_eq!(d.len(), 10_000);
    assert_eq!(d.shape, Shape::new(1, 28, 28));
    assert_eq!(d.images.len(), 10_000 * 784);
    let mut counts = [0; 10];
    for &l in &d.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [1000; 10], "the test set is balanced");
    let mean = d.images.iter().map(|&x| x as f64).sum::<f64>() / d.images.len() as f64;
    assert!((0.2..0.4).contains(&mean), "mean pixel {mean}");
}

#[test]
fn cifar10_binary_format_reads_and_rejects_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::cifar10(dir.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no test_batch.bin in the directory"), "{err}");
    let mut bytes = Vec::new();
    for i in 0..10_000u32 {
        bytes.push((i % 10) as u8);
        bytes.extend((0..3072).map(|p| (p % 256) as u8));
    }
    std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    let d = Dataset::cifar10(dir.path(), Split::Test).unwrap();
    assert_eq!(d.len(), 10_000);
    assert_eq!(d.shape, Shape::new(3, 32, 32));
    assert_eq!(d.labels[..7], [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(d.images[1], 1.0 / 255.0);
    assert_eq!(d.images[3072 + 255], 1.0);

    // Cut inside a record and at a record boundary: both are truncations.
    for cut in [1, 3073] {
        std::fs::write(
            dir.path().join("test_batch.bin"),
            &bytes[..bytes.len() - cut],
        )
        .unwrap();
        let err = Dataset::cifar10(dir.path(), Split::Test)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test_batch.bin") && err.contains("truncated"),
            "{err}"
        );
    }
    let err = Dataset::cifar10(&dir.path().join("nowhere"), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nowhere") && err.contains("no such directory"),
        "{err}"
    );
    let err = Dataset::cifar10(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data_batch_1.bin"), "{err}");
}

#[test]
fn adapting_pads_and_repeats_channels_and_says_so() {
    let d = Dataset::synthetic(4, Shape::new(1, 28, 28), 2, 1);
    let (a, how) = d.adapt(Shape::new(3, 32, 32)).unwrap();
    let how = how.unwrap();
    assert!(
        how.contains("repeated 3×") && how.contains("zero-padded 28x28 → 32x32"),
        "{how}"
    );
    assert_eq!(a.images.len(), 4 * 3 * 32 * 32);
    // Pixel (0, 0) of the original sits at (2, 2), in all three channels; the border is 0.
    let at = |c: usize, y: usize, x: usize| a.images[c * 1024 + y * 32 + x];
    for c in 0..3 {
        assert_eq!(at(c, 2, 2), d.images[0]);
        assert_eq!(at(c, 0, 0), 0.0);
    }
    let rgb = Dataset::synthetic(2, Shape::new(3, 8, 8), 2, 1);
    let err = rgb.adapt(Shape::new(2, 8, 8)).unwrap_err().to_string();
    assert!(err.contains("channels 3 → 2"), "{err}");
    let (same, how) = d.adapt(d.shape).unwrap();
    assert!(how.is_none());
    assert_eq!(same.images, d.images);
}

#[test]
fn splits_are_disjoint_seeded_and_complete() {
    let d = Dataset::synthetic(100, Shape::new(1, 4, 4), 4, 3);
    let (train, val) = d.split(20, 9);
    assert_eq!((train.len(), val.len()), (80, 20));
    let (train2, val2) = d.split(20, 9);
    assert_eq!(val.labels, val2.labels);
    assert_eq!(train.images, train2.images);
    let (_, other) = d.split(20, 10);
    assert_ne!(other.images, val.images, "another seed, another split");
}

fn fixed_graph() -> Graph {
    let m = module("tests/in/fixed_network.space");
    m.networks[spacetune::ir::Handle::new(0)].graph.pruned()
}

/// Trains the fixed network on a synthetic set; returns validation accuracy and the weights.
fn run(seed: u64) -> (f64, Weights) {
    let graph = fixed_graph();
    let data = Dataset::synthetic(600, graph.shapes[0], 10, 5);
    let (train_set, val) = data.split(200, 1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), &graph, &Weights::random(&graph, seed)).unwrap();
    let before = accuracy(&net, &val, 100).unwrap();
    let cfg = TrainConfig {
        epochs: 3,
        batch: 32,
        lr: 0.05,
        seed,
        ..TrainConfig::default()
    };
    let mut steps = 0;
    let report = train::train(&net, &vs, &train_set, &cfg, |_, _, _| steps += 1).unwrap();
    assert_eq!(report.steps, steps);
    assert_eq!(steps, 3 * 400usize.div_ceil(32));
    let after = accuracy(&net, &val, 100).unwrap();
    assert!(after > 0.8, "accuracy {before} → {after}");
    assert!(
        after > before + 0.3,
        "training did not help: {before} → {after}"
    );
    (after, net.weights())
}

#[test]
fn training_learns_and_is_deterministic() {
    let (a, wa) = run(7);
    let (b, wb) = run(7);
    assert_eq!(a, b);
    assert_eq!(wa, wb, "same seed, same weights");
    let (_, wc) = run(8);
    assert_ne!(wa, wc);
}

#[test]
fn checkpoints_round_trip_in_safetensors() {
    let graph = fixed_graph();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), &graph, &Weights::random(&graph, 1)).unwrap();
    train::save(&vs, &path).unwrap();
    let mut vs2 = tch::nn::VarStore::new(tch::Device::Cpu);
    let net2 = TchNet::new(&vs2.root(), &graph, &Weights::random(&graph, 2)).unwrap();
    assert_ne!(net.weights(), net2.weights());
    train::load(&mut vs2, &path).unwrap();
    assert_eq!(net.weights(), net2.weights());
}

#[test]
fn a_mismatched_data_set_is_a_clear_error() {
    let graph = fixed_graph();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), &graph, &Weights::random(&graph, 1)).unwrap();
    let cifar_like = Dataset::synthetic(8, Shape::new(3, 32, 32), 10, 1);
    let err = accuracy(&net, &cifar_like, 4).unwrap_err().to_string();
    assert!(err.contains("adapt the data set"), "{err}");
}

/// Re-estimated statistics are the plain mean over the batches of each batch's mean and
/// unbiased variance, whatever the moving averages held before, computed here from the
/// pixels themselves.
#[test]
fn batch_norm_statistics_are_recomputed_from_the_images() {
    let m = module("tests/spaces/bn_first.space");
    let graph = m.networks[spacetune::ir::Handle::new(0)].graph.pruned();
    let data = Dataset::synthetic(64, graph.shapes[0], 3, 11);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut net = TchNet::new(&vs.root(), &graph, &Weights::random(&graph, 4)).unwrap();
    let bn = graph
        .nodes
        .iter()
        .find(|(_, n)| n.op == spacetune::ir::Prim::BatchNorm)
        .unwrap()
        .0
        .index();
    let stat = |net: &TchNet, what: &str| net.weights().get(bn, what).unwrap().data.clone();
    let before = stat(&net, "running_mean");
    train::recalibrate_batch_norm(&mut net, &data, 16).unwrap();
    assert_eq!(net.momentum, 0.1, "training's momentum is put back");

    let (c, hw) = (2, 16);
    let per = c * hw;
    let (mut mean, mut var) = (vec![0.0f64; c], vec![0.0f64; c]);
    for b in 0..4 {
        for ch in 0..c {
            let xs: Vec<f64> = (b * 16..(b + 1) * 16)
                .flat_map(|i| &data.images[i * per + ch * hw..i * per + (ch + 1) * hw])
                .map(|&x| f64::from(x))
                .collect();
            let mu = xs.iter().sum::<f64>() / xs.len() as f64;
            let v = xs.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
            mean[ch] += mu / 4.0;
            var[ch] += v / 4.0;
        }
    }
    let after = (stat(&net, "running_mean"), stat(&net, "running_var"));
    for ch in 0..c {
        assert!(
            (f64::from(after.0[ch]) - mean[ch]).abs() < 1e-5,
            "{after:?} {mean:?}"
        );
        assert!(
            (f64::from(after.1[ch]) - var[ch]).abs() < 1e-5,
            "{after:?} {var:?}"
        );
        assert!(
            (f64::from(before[ch]) - mean[ch]).abs() > 1e-3,
            "the test moves them"
        );
    }
}
