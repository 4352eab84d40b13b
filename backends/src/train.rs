//! Training and evaluation of a [`TchNet`] on a [`Dataset`], on the CPU: SGD with momentum
//! and weight decay, a cosine learning-rate schedule, seeded and deterministic (batch order
//! from spacetune's own generator, libtorch seeded, fixed thread count). Checkpoints are
//! the VarStore in safetensors.

use crate::data::Dataset;
use crate::torch::TchNet;
use crate::weights::Rng;
use crate::{BackendError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, nn::OptimizerConfig, Kind, Tensor};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate; the cosine schedule decays it to 0 over all steps.
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 1,
            batch: 128,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            seed: 0,
            threads: 2,
        }
    }
}

/// What a training run did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    pub steps: usize,
    /// Mean training loss of each epoch.
    pub epoch_loss: Vec<f64>,
    pub seconds: f64,
}

/// Images `indices` of `data` as one N×C×H×W tensor, and their labels.
pub(crate) fn batch(data: &Dataset, indices: &[usize]) -> (Tensor, Tensor) {
    let per = data.shape.elements() as usize;
    let mut pixels = Vec::with_capacity(indices.len() * per);
    for &i in indices {
        pixels.extend_from_slice(&data.images[i * per..(i + 1) * per]);
    }
    let s = data.shape;
    let x = Tensor::from_slice(&pixels).view([
        indices.len() as i64,
        s.c as i64,
        s.h as i64,
        s.w as i64,
    ]);
    let labels: Vec<i64> = indices.iter().map(|&i| data.labels[i]).collect();
    (x, Tensor::from_slice(&labels))
}

pub(crate) fn check_fit(net: &TchNet, data: &Dataset) -> Result<()> {
    let input = net.graph().shapes[0];
    let out = *net.graph().shapes.last().expect("a graph has an output");
    if input != data.shape {
        return Err(BackendError::Unsupported(format!(
            "{} images are {}, the network takes {input} (adapt the data set first)",
            data.name, data.shape
        )));
    }
    if out.elements() as usize != data.classes {
        return Err(BackendError::Unsupported(format!(
            "the network has {} outputs, {} has {} classes",
            out.elements(),
            data.name,
            data.classes
        )));
    }
    Ok(())
}

/// Trains every trainable variable of `vs` (the network's) on `data`; `on_step` sees
/// (step, total steps, loss) for progress bars.
pub fn train(
    net: &TchNet,
    vs: &nn::VarStore,
    data: &Dataset,
    cfg: &TrainConfig,
    mut on_step: impl FnMut(usize, usize, f64),
) -> Result<TrainReport> {
    check_fit(net, data)?;
    if data.is_empty() || cfg.batch == 0 {
        return Err(BackendError::Unsupported("nothing to train on".into()));
    }
    let start = std::time::Instant::now();
    tch::manual_seed(cfg.seed as i64);
    tch::set_num_threads(cfg.threads as i32);
    let sgd = nn::Sgd {
        momentum: cfg.momentum,
        dampening: 0.0,
        wd: cfg.weight_decay,
        nesterov: false,
    };
    let mut opt = sgd
        .build(vs, cfg.lr)
        .map_err(|e| BackendError::Runtime(e.to_string()))?;
    let per_epoch = data.len().div_ceil(cfg.batch);
    let total = per_epoch * cfg.epochs;
    let mut step = 0;
    let mut epoch_loss = Vec::with_capacity(cfg.epochs);
    let classes = data.classes as i64;
    for epoch in 0..cfg.epochs {
        let order =
            Rng::new(cfg.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9)).permutation(data.len());
        let mut sum = 0.0;
        for chunk in order.chunks(cfg.batch) {
            let lr =
                0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos());
            opt.set_lr(lr);
            let (x, y) = batch(data, chunk);
            let logits = net.forward_t(&x, true).view([chunk.len() as i64, classes]);
            let loss = logits.cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
            let l = loss.double_value(&[]);
            if !l.is_finite() {
                return Err(BackendError::Runtime(format!(
                    "training diverged at step {step} (loss {l}); lower the learning rate"
                )));
            }
            sum += l;
            step += 1;
            on_step(step, total, l);
        }
        epoch_loss.push(sum / per_epoch as f64);
    }
    Ok(TrainReport {
        steps: step,
        epoch_loss,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// How many rows of `logits` (N×classes) have their largest entry at the label.
pub(crate) fn hits(logits: &Tensor, labels: &Tensor) -> i64 {
    logits
        .argmax(-1, false)
        .eq_tensor(labels)
        .to_kind(Kind::Int64)
        .sum(Kind::Int64)
        .int64_value(&[])
}

/// Re-estimates every batch norm's running statistics from `data` with the weights as they
/// are now: the plain mean over its batches, not training's moving average, and no weight
/// changes. A fine-tuning of a few steps leaves a fresh layer's statistics near their
/// initial (0, 1), so in inference mode the network computes something other than what it
/// was trained to; one-shot NAS re-estimates them before scoring a sub-network for the
/// same reason (SPOS, OFA).
pub fn recalibrate_batch_norm(net: &mut TchNet, data: &Dataset, batch_size: usize) -> Result<()> {
    check_fit(net, data)?;
    if data.is_empty() {
        return Err(BackendError::Unsupported(
            "no images to estimate the batch-norm statistics on".into(),
        ));
    }
    let momentum = net.momentum;
    let all: Vec<usize> = (0..data.len()).collect();
    tch::no_grad(|| {
        for (k, chunk) in all.chunks(batch_size.max(1)).enumerate() {
            // 1/(k+1): after batch k the running figure is the mean of batches 0..=k.
            net.momentum = 1.0 / (k + 1) as f64;
            let (x, _) = batch(data, chunk);
            let _ = net.forward_t(&x, true);
        }
    });
    net.momentum = momentum;
    Ok(())
}

/// Top-1 accuracy in [0, 1], in inference mode.
pub fn accuracy(net: &TchNet, data: &Dataset, batch_size: usize) -> Result<f64> {
    Ok(evaluate(net, data, batch_size)?.1)
}

/// Mean cross-entropy and top-1 accuracy in [0, 1], in inference mode.
pub fn evaluate(net: &TchNet, data: &Dataset, batch_size: usize) -> Result<(f64, f64)> {
    check_fit(net, data)?;
    let classes = data.classes as i64;
    let (mut correct, mut ce) = (0i64, 0.0);
    let all: Vec<usize> = (0..data.len()).collect();
    tch::no_grad(|| {
        for chunk in all.chunks(batch_size.max(1)) {
            let (x, y) = batch(data, chunk);
            let logits = net.forward_t(&x, false).view([chunk.len() as i64, classes]);
            correct += hits(&logits, &y);
            ce += logits.cross_entropy_for_logits(&y).double_value(&[]) * chunk.len() as f64;
        }
    });
    let n = data.len().max(1) as f64;
    Ok((ce / n, correct as f64 / n))
}

/// Saves every variable (weights and batch-norm statistics) as safetensors.
pub fn save(vs: &nn::VarStore, path: &Path) -> Result<()> {
    vs.save(path)
        .map_err(|e| BackendError::Runtime(format!("saving {}: {e}", path.display())))
}

/// Loads a checkpoint written by [`save`] into a VarStore of the same network.
pub fn load(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    vs.load(path)
        .map_err(|e| BackendError::Runtime(format!("loading {}: {e}", path.display())))
}
