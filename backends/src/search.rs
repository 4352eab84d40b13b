//! The gradient search over a supernet on the CPU: architecture logits θ per decision,
//! Gumbel-softmax mixing (FBNet, BBSSP) or ProxylessNAS binary gates (one path per step
//! for the weights, two for θ), weights by SGD on one split and θ by Adam on another,
//! alternating, after a warm-up of weights alone on uniformly sampled paths. Every random
//! draw comes from spacetune's own generator seeded by (seed, epoch, step), and the
//! optimisers are written out here so that their state is saved whole: a search killed
//! after any epoch resumes from its checkpoint and ends where an uninterrupted one does.

use crate::data::Dataset;
use crate::torch::TchNet;
use crate::train::{batch, check_fit, hits};
use crate::weights::{Rng, Weights};
use crate::{BackendError, Result};
use serde::{Deserialize, Serialize};
pub use spacetune_ir::SearchEpoch as EpochLog;
use spacetune_ir::{Handle, Supernet};
use std::path::{Path, PathBuf};
use tch::{nn, Kind, Tensor};

/// How the options of a decision are mixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every option runs, weighed by a Gumbel-softmax sample of θ (FBNet, BBSSP).
    Gumbel,
    /// ProxylessNAS binary gates: the weights train one sampled path per decision, θ two;
    /// memory grows with the paths run, not with the options.
    Proxyless,
}

/// How the expected latency enters the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// BBSSP / aw_nas: `CE · α · E[LAT]^β` (latency in ms).
    Mul,
    /// FBNet: `CE · α · log(E[LAT])^β`, latency in µs so the logarithm stays positive for
    /// sub-millisecond networks.
    Log,
    /// ProxylessNAS: `CE + α · E[LAT]` (latency in ms). In the two multiplicative forms α
    /// only scales the loss, which Adam does not see; here it weighs latency against error.
    Add,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    pub mode: Mode,
    /// Epochs in all, the warm-up included.
    pub epochs: usize,
    /// Epochs of weights only, on uniformly sampled paths.
    pub warmup: usize,
    pub batch: usize,
    /// Weights: SGD, cosine-decayed from `lr` over all epochs.
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// θ: Adam.
    pub arch_lr: f64,
    pub arch_weight_decay: f64,
    /// Gumbel-softmax temperature at the first epoch after the warm-up, and its decay per
    /// epoch.
    pub tau: f64,
    pub tau_decay: f64,
    pub loss: LossKind,
    pub alpha: f64,
    pub beta: f64,
    /// Latency below this costs nothing (the expected latency is clamped up to it).
    pub target_ms: Option<f64>,
    /// Paths per decision in θ's steps in proxyless mode.
    pub paths: usize,
    pub seed: u64,
    pub threads: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            mode: Mode::Gumbel,
            epochs: 10,
            warmup: 2,
            batch: 64,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            arch_lr: 0.01,
            arch_weight_decay: 5e-4,
            tau: 5.0,
            tau_decay: 0.956,
            loss: LossKind::Mul,
            alpha: 0.2,
            beta: 0.6,
            target_ms: None,
            paths: 2,
            seed: 0,
            threads: 2,
        }
    }
}

impl SearchConfig {
    /// The temperature of epoch `epoch` (0-based).
    pub fn temperature(&self, epoch: usize) -> f64 {
        self.tau
            * self
                .tau_decay
                .powi(epoch.saturating_sub(self.warmup) as i32)
    }
}

/// The latency of every option of every decision: `E[LAT] = fixed + Σ_d Σ_j p_dj·rows[d][j]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyCosts {
    pub fixed_ms: f64,
    pub rows: Vec<Vec<f64>>,
}

impl LatencyCosts {
    /// The predicted latency of one architecture.
    pub fn of(&self, choices: &[u32]) -> f64 {
        self.fixed_ms
            + self
                .rows
                .iter()
                .zip(choices)
                .map(|(r, &c)| r[c as usize])
                .sum::<f64>()
    }
}

/// What the search prices an architecture by.
pub trait LatencyModel {
    /// The cost of every option, where the model is additive over decisions: E[LAT] is
    /// then exact and differentiable in θ.
    fn table(&self) -> Option<&LatencyCosts> {
        None
    }
    /// The latency of one whole architecture (ms), or why there is none.
    fn latency(&self, choices: &[u32]) -> std::result::Result<f64, String>;
}

impl LatencyModel for LatencyCosts {
    fn table(&self) -> Option<&LatencyCosts> {
        Some(self)
    }
    fn latency(&self, choices: &[u32]) -> std::result::Result<f64, String> {
        Ok(self.of(choices))
    }
}

/// Architectures drawn from softmax(θ) per θ step to estimate E[LAT] under a model that is
/// not additive (and per epoch, more, for the curve).
const LATENCY_SAMPLES: usize = 16;
const CURVE_SAMPLES: usize = 64;

/// What a search made.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub theta: Vec<Vec<f64>>,
    /// argmax θ per decision.
    pub choices: Vec<u32>,
    pub epochs: Vec<EpochLog>,
    /// Epochs taken from the checkpoint rather than run.
    pub resumed: usize,
    /// The supernet's weights at the end.
    pub weights: Weights,
}

/// The search's mutable state: what a checkpoint holds.
struct State {
    vs: nn::VarStore,
    net: TchNet,
    /// Trainable weights by name (sorted) and their momentum buffers.
    names: Vec<String>,
    params: Vec<Tensor>,
    /// The supernet node each weight belongs to.
    owners: Vec<usize>,
    momentum: Vec<Tensor>,
    theta: Vec<Tensor>,
    adam_m: Vec<Tensor>,
    adam_v: Vec<Tensor>,
    adam_t: i64,
    logs: Vec<EpochLog>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    config: SearchConfig,
    adam_t: i64,
    logs: Vec<EpochLog>,
}

/// Which options may run per decision, and each option's gate (a [k] tensor).
struct Gates {
    active: Vec<Vec<bool>>,
    values: Vec<Tensor>,
}

/// Runs the search, the weights trained on the first data set and θ on the second; with `checkpoints`, saves the state after every epoch there and
/// resumes from what is there (a directory per configuration is the caller's business:
/// a checkpoint of another configuration is refused, not silently continued).
pub fn search(
    sn: &Supernet,
    init: &Weights,
    costs: &dyn LatencyModel,
    (weights_data, arch_data): (&Dataset, &Dataset),
    cfg: &SearchConfig,
    checkpoints: Option<&Path>,
    mut on_epoch: impl FnMut(&EpochLog),
) -> Result<Outcome> {
    if costs.table().is_some_and(|t| {
        t.rows.len() != sn.options.len()
            || t.rows
                .iter()
                .zip(&sn.options)
                .any(|(r, &k)| r.len() != k as usize)
    }) {
        return Err(BackendError::Unsupported(
            "the latency table does not have one entry per option of every decision".into(),
        ));
    }
    if weights_data.is_empty() || arch_data.is_empty() || cfg.batch == 0 {
        return Err(BackendError::Unsupported("nothing to search on".into()));
    }
    if cfg.warmup > cfg.epochs {
        return Err(BackendError::Unsupported(format!(
            "the warm-up ({} epochs) is longer than the search ({} epochs)",
            cfg.warmup, cfg.epochs
        )));
    }
    tch::set_num_threads(cfg.threads as i32);
    tch::manual_seed(cfg.seed as i64);
    let mut st = State::new(sn, init)?;
    check_fit(&st.net, weights_data)?;
    check_fit(&st.net, arch_data)?;
    let mut resumed = 0;
    if let Some(dir) = checkpoints {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        if st.load(dir, cfg)? {
            resumed = st.logs.len();
        }
    }
    let per_epoch = weights_data.len().div_ceil(cfg.batch);
    let total = per_epoch * cfg.epochs;
    let classes = weights_data.classes as i64;
    for epoch in resumed..cfg.epochs {
        let start = std::time::Instant::now();
        let warmup = epoch < cfg.warmup;
        let tau = cfg.temperature(epoch);
        let mut rng = Rng::new(cfg.seed ^ (epoch as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let order = rng.permutation(weights_data.len());
        let arch_order = rng.permutation(arch_data.len());
        let mut arch_batches = arch_order.chunks(cfg.batch).cycle();
        let (mut loss_sum, mut ce_sum, mut correct, mut seen, mut arch_steps) =
            (0.0, 0.0, 0i64, 0usize, 0usize);
        for (i, chunk) in order.chunks(cfg.batch).enumerate() {
            let step = epoch * per_epoch + i;
            let lr =
                0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos());
            // Weights.
            let gates = if warmup {
                st.uniform_path(&mut rng)
            } else {
                match cfg.mode {
                    Mode::Gumbel => st.gumbel(&mut rng, tau, false),
                    Mode::Proxyless => st.sampled_paths(&mut rng, 1, false),
                }
            };
            let (x, y) = batch(weights_data, chunk);
            let logits = st
                .forward(sn, &x, &gates)
                .view([chunk.len() as i64, classes]);
            let ce = logits.cross_entropy_for_logits(&y);
            st.sgd_step(&ce, lr, cfg, |n| taken(&sn.guards[n], &gates));
            let l = ce.double_value(&[]);
            if !l.is_finite() {
                return Err(BackendError::Runtime(format!(
                    "the search diverged at epoch {epoch}, step {i} (loss {l}); lower the learning rate"
                )));
            }
            ce_sum += l;
            correct += hits(&logits, &y);
            seen += chunk.len();
            if warmup {
                loss_sum += l;
                continue;
            }
            // θ, on the other split.
            let arch_chunk = arch_batches.next().expect("a cycled split never ends");
            let gates = match cfg.mode {
                Mode::Gumbel => st.gumbel(&mut rng, tau, true),
                Mode::Proxyless => st.sampled_paths(&mut rng, cfg.paths, true),
            };
            let (x, y) = batch(arch_data, arch_chunk);
            let logits = st
                .forward(sn, &x, &gates)
                .view([arch_chunk.len() as i64, classes]);
            let ce = logits.cross_entropy_for_logits(&y);
            let loss = total_loss(&ce, &st.expected(costs, &mut rng)?, cfg);
            let pairs: Vec<Vec<usize>> = gates
                .active
                .iter()
                .map(|a| (0..a.len()).filter(|&o| a[o]).collect())
                .collect();
            st.adam_step(&loss, cfg, (cfg.mode == Mode::Proxyless).then_some(&pairs));
            loss_sum += loss.double_value(&[]);
            arch_steps += 1;
        }
        let probs = st.probabilities();
        let choices = argmax(&probs);
        let log = EpochLog {
            epoch,
            warmup,
            loss: loss_sum / if warmup { per_epoch } else { arch_steps.max(1) } as f64,
            ce: ce_sum / per_epoch as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            expected_ms: expected_value(costs, &probs, cfg.seed ^ epoch as u64)?,
            argmax_ms: costs.latency(&choices).map_err(BackendError::Runtime)?,
            temperature: tau,
            entropy: mean_entropy(&probs),
            seconds: start.elapsed().as_secs_f64(),
            peak_bytes: crate::memory::peak_bytes().unwrap_or(0),
        };
        on_epoch(&log);
        st.logs.push(log);
        if let Some(dir) = checkpoints {
            st.save(dir, cfg)?;
        }
    }
    let theta: Vec<Vec<f64>> = st.theta.iter().map(to_vec).collect();
    let probs = st.probabilities();
    Ok(Outcome {
        choices: argmax(&probs),
        theta,
        resumed,
        weights: st.net.weights(),
        epochs: std::mem::take(&mut st.logs),
    })
}

/// d loss / d θ of one θ step at θ = 0 on the first batch of `data`, per decision.
pub fn arch_gradient(
    sn: &Supernet,
    init: &Weights,
    costs: &dyn LatencyModel,
    data: &Dataset,
    cfg: &SearchConfig,
) -> Result<Vec<Vec<f64>>> {
    tch::set_num_threads(cfg.threads as i32);
    let st = State::new(sn, init)?;
    check_fit(&st.net, data)?;
    let mut rng = Rng::new(cfg.seed);
    let gates = match cfg.mode {
        Mode::Gumbel => st.gumbel(&mut rng, cfg.tau, true),
        Mode::Proxyless => st.sampled_paths(&mut rng, cfg.paths, true),
    };
    let chunk: Vec<usize> = (0..cfg.batch.min(data.len())).collect();
    let (x, y) = batch(data, &chunk);
    let logits = st
        .forward(sn, &x, &gates)
        .view([chunk.len() as i64, data.classes as i64]);
    let loss = total_loss(
        &logits.cross_entropy_for_logits(&y),
        &st.expected(costs, &mut rng)?,
        cfg,
    );
    loss.backward();
    Ok(st.theta.iter().map(|t| to_vec(&t.grad())).collect())
}

/// E[LAT] under `probs`: exact for a table, else the mean over seeded draws.
fn expected_value(model: &dyn LatencyModel, probs: &[Vec<f64>], seed: u64) -> Result<f64> {
    if let Some(t) = model.table() {
        return Ok(t.fixed_ms
            + probs
                .iter()
                .zip(&t.rows)
                .map(|(p, r)| p.iter().zip(r).map(|(p, c)| p * c).sum::<f64>())
                .sum::<f64>());
    }
    let mut rng = Rng::new(seed ^ 0x1a7e_5eed);
    let mut sum = 0.0;
    for _ in 0..CURVE_SAMPLES {
        sum += model
            .latency(&draw(probs, &mut rng))
            .map_err(BackendError::Runtime)?;
    }
    Ok(sum / CURVE_SAMPLES as f64)
}

/// One architecture drawn from `probs`, each decision independently.
fn draw(probs: &[Vec<f64>], rng: &mut Rng) -> Vec<u32> {
    probs
        .iter()
        .map(|p| {
            let u = uniform(rng);
            let mut acc = 0.0;
            for (j, &x) in p.iter().enumerate() {
                acc += x;
                if u < acc {
                    return j as u32;
                }
            }
            p.len() as u32 - 1
        })
        .collect()
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.detach().to_kind(Kind::Double)).expect("a 1-d tensor converts")
}

fn argmax(probs: &[Vec<f64>]) -> Vec<u32> {
    probs
        .iter()
        .map(|p| {
            // The first of equal maxima: a decision whose θ never moved keeps option 0's
            // place deterministically.
            let mut best = 0;
            for (j, &x) in p.iter().enumerate() {
                if x > p[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

fn mean_entropy(probs: &[Vec<f64>]) -> f64 {
    let with_choice: Vec<&Vec<f64>> = probs.iter().filter(|p| p.len() > 1).collect();
    if with_choice.is_empty() {
        return 0.0;
    }
    with_choice
        .iter()
        .map(|p| {
            -p.iter()
                .filter(|&&x| x > 0.0)
                .map(|x| x * x.ln())
                .sum::<f64>()
        })
        .sum::<f64>()
        / with_choice.len() as f64
}

/// The loss of θ's step: the cross-entropy and the expected latency combined as `cfg` says.
pub fn total_loss(ce: &Tensor, expected_ms: &Tensor, cfg: &SearchConfig) -> Tensor {
    let lat = match cfg.target_ms {
        Some(t) => expected_ms.clamp_min(t),
        None => expected_ms.shallow_clone(),
    };
    match cfg.loss {
        LossKind::Mul => ce * (lat.pow_tensor_scalar(cfg.beta) * cfg.alpha),
        LossKind::Log => ce * ((lat * 1000.0).log().pow_tensor_scalar(cfg.beta) * cfg.alpha),
        LossKind::Add => ce + lat * cfg.alpha,
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Runtime(format!("{}: {e}", path.display()))
}

impl State {
    fn new(sn: &Supernet, init: &Weights) -> Result<State> {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = TchNet::new(&vs.root(), &sn.graph, init)?;
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let momentum = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let (names, params): (Vec<String>, Vec<Tensor>) = vars.into_iter().unzip();
        let owners = names
            .iter()
            .map(|n| {
                n.strip_prefix('n')
                    .and_then(|r| r.split('.').next())
                    .and_then(|i| i.parse().ok())
                    .expect("TchNet names its variables n<node>.<what>")
            })
            .collect();
        let theta: Vec<Tensor> = sn
            .options
            .iter()
            .map(|&k| {
                Tensor::zeros([k as i64], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true)
            })
            .collect();
        let adam_m = theta.iter().map(|t| t.zeros_like().detach()).collect();
        let adam_v = theta.iter().map(|t| t.zeros_like().detach()).collect();
        Ok(State {
            vs,
            net,
            names,
            params,
            owners,
            momentum,
            theta,
            adam_m,
            adam_v,
            adam_t: 0,
            logs: Vec::new(),
        })
    }

    fn probabilities(&self) -> Vec<Vec<f64>> {
        tch::no_grad(|| {
            self.theta
                .iter()
                .map(|t| to_vec(&t.softmax(0, Kind::Float)))
                .collect()
        })
    }

    /// E[LAT] under softmax(θ), differentiable in θ: exactly for a table; otherwise the
    /// mean latency of architectures drawn from softmax(θ), whose gradient is the score
    /// function's, (1/n) Σ_i (LAT_i − b_i) ∇ log p(a_i), with b_i the mean of the other
    /// draws (a baseline that keeps it unbiased and cuts its variance). Why not
    /// straight-through: a non-additive model has no per-option value to pass a gradient
    /// through, and the score function needs nothing of the model but its latencies.
    fn expected(&self, model: &dyn LatencyModel, rng: &mut Rng) -> Result<Tensor> {
        if let Some(t) = model.table() {
            return Ok(self.expected_table(t));
        }
        let probs = self.probabilities();
        let log_p: Vec<Tensor> = self
            .theta
            .iter()
            .map(|t| t.log_softmax(0, Kind::Float))
            .collect();
        let mut lats = Vec::with_capacity(LATENCY_SAMPLES);
        let mut scores = Vec::with_capacity(LATENCY_SAMPLES);
        for _ in 0..LATENCY_SAMPLES {
            let a = draw(&probs, rng);
            lats.push(model.latency(&a).map_err(BackendError::Runtime)?);
            let terms: Vec<Tensor> = log_p
                .iter()
                .zip(&a)
                .map(|(l, &j)| l.get(j as i64))
                .collect();
            scores.push(Tensor::stack(&terms, 0).sum(Kind::Float));
        }
        let n = LATENCY_SAMPLES as f64;
        let total: f64 = lats.iter().sum();
        let mut estimate = Tensor::from((total / n) as f32);
        for (lat, score) in lats.iter().zip(&scores) {
            let baseline = (total - lat) / (n - 1.0);
            estimate += (score - score.detach()) * ((lat - baseline) / n);
        }
        Ok(estimate)
    }

    fn expected_table(&self, costs: &LatencyCosts) -> Tensor {
        let terms: Vec<Tensor> = self
            .theta
            .iter()
            .zip(&costs.rows)
            .map(|(t, row)| {
                let row: Vec<f32> = row.iter().map(|&x| x as f32).collect();
                (t.softmax(0, Kind::Float) * Tensor::from_slice(&row)).sum(Kind::Float)
            })
            .collect();
        Tensor::stack(&terms, 0).sum(Kind::Float) + costs.fixed_ms
    }

    fn forward(&self, sn: &Supernet, x: &Tensor, gates: &Gates) -> Tensor {
        mixed_forward(sn, &self.net, x, true, gates)
    }

    /// One option per decision, uniformly, at weight 1 (warm-up).
    fn uniform_path(&self, rng: &mut Rng) -> Gates {
        let picks: Vec<usize> = self
            .theta
            .iter()
            .map(|t| rng.below(t.size()[0] as u64) as usize)
            .collect();
        let sizes: Vec<usize> = self.theta.iter().map(|t| t.size()[0] as usize).collect();
        one_hot(&sizes, &picks)
    }

    /// Gumbel-softmax weights over every option; with `grad`, differentiable in θ.
    fn gumbel(&self, rng: &mut Rng, tau: f64, grad: bool) -> Gates {
        let mut values = Vec::with_capacity(self.theta.len());
        for t in &self.theta {
            let k = t.size()[0] as usize;
            let noise: Vec<f32> = (0..k)
                .map(|_| {
                    let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                    -(-u.ln()).ln() as f32
                })
                .collect();
            let logits = if grad { t.shallow_clone() } else { t.detach() };
            values.push(((logits + Tensor::from_slice(&noise)) / tau).softmax(0, Kind::Float));
        }
        Gates {
            active: self
                .theta
                .iter()
                .map(|t| vec![true; t.size()[0] as usize])
                .collect(),
            values,
        }
    }

    /// ProxylessNAS binary gates: `n` options per decision drawn from softmax(θ) without
    /// replacement; one of them (drawn from θ renormalised over them) is taken. With
    /// `grad`, the gates are `hard − p.detach() + p` over the drawn options, so the forward
    /// runs the taken path only in value and θ's gradient is ProxylessNAS's
    /// `Σ_j ∂L/∂g_j · p_j(δ_ij − p_i)` restricted to the drawn options.
    fn sampled_paths(&self, rng: &mut Rng, n: usize, grad: bool) -> Gates {
        let probs = self.probabilities();
        let mut active = Vec::with_capacity(probs.len());
        let mut values = Vec::with_capacity(probs.len());
        for (t, p) in self.theta.iter().zip(&probs) {
            let k = p.len();
            let mut left: Vec<usize> = (0..k).collect();
            let mut drawn = Vec::new();
            while drawn.len() < n.min(k) {
                let total: f64 = left.iter().map(|&j| p[j]).sum();
                let mut u = uniform(rng) * total;
                let mut at = left.len() - 1;
                for (pos, &j) in left.iter().enumerate() {
                    if u < p[j] {
                        at = pos;
                        break;
                    }
                    u -= p[j];
                }
                drawn.push(left.remove(at));
            }
            drawn.sort_unstable();
            let mut on = vec![false; k];
            for &j in &drawn {
                on[j] = true;
            }
            let sel = Tensor::from_slice(&drawn.iter().map(|&j| j as i64).collect::<Vec<_>>());
            let logits = if grad { t.shallow_clone() } else { t.detach() };
            let p_sel = logits.index_select(0, &sel).softmax(0, Kind::Float);
            let renormalised = to_vec(&p_sel);
            let mut u = uniform(rng);
            let mut taken = drawn.len() - 1;
            for (pos, &q) in renormalised.iter().enumerate() {
                if u < q {
                    taken = pos;
                    break;
                }
                u -= q;
            }
            let mut hard = vec![0f32; drawn.len()];
            hard[taken] = 1.0;
            let gate_sel = Tensor::from_slice(&hard) - p_sel.detach() + &p_sel;
            let gate = Tensor::zeros([k as i64], (Kind::Float, tch::Device::Cpu))
                .index_add(0, &sel, &gate_sel);
            active.push(on);
            values.push(gate);
        }
        Gates { active, values }
    }

    /// SGD with momentum and weight decay on the weights of the nodes that `ran`: a path
    /// that did not run this step is left alone (no decay, no momentum), as ProxylessNAS
    /// leaves the paths it did not sample. Which ran is decided by the gates, not by
    /// whether a gradient is defined, so a resumed search updates exactly what an
    /// uninterrupted one does.
    fn sgd_step(
        &mut self,
        loss: &Tensor,
        lr: f64,
        cfg: &SearchConfig,
        ran: impl Fn(usize) -> bool,
    ) {
        for p in self.params.iter_mut() {
            p.zero_grad();
        }
        loss.backward();
        tch::no_grad(|| {
            for ((p, buf), &owner) in self
                .params
                .iter_mut()
                .zip(&mut self.momentum)
                .zip(&self.owners)
            {
                let g = p.grad();
                if !ran(owner) || !g.defined() {
                    continue;
                }
                let g = g + &*p * cfg.weight_decay;
                let _ = buf.g_mul_scalar_(cfg.momentum).g_add_(&g);
                let _ = p.g_sub_(&(&*buf * lr));
            }
        });
        for t in self.theta.iter_mut() {
            t.zero_grad();
        }
    }

    /// Adam on θ; in proxyless mode, the drawn options' logits are shifted afterwards so
    /// their total probability mass is what it was (ProxylessNAS's rescaling), leaving the
    /// options that were not drawn where they stood.
    fn adam_step(&mut self, loss: &Tensor, cfg: &SearchConfig, drawn: Option<&Vec<Vec<usize>>>) {
        for t in self.theta.iter_mut() {
            t.zero_grad();
        }
        for p in self.params.iter_mut() {
            p.zero_grad();
        }
        let before: Option<Vec<f64>> = drawn.map(|d| {
            self.theta
                .iter()
                .zip(d)
                .map(|(t, s)| logsumexp(&to_vec(t), s))
                .collect()
        });
        loss.backward();
        self.adam_t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let c1 = 1.0 - b1.powi(self.adam_t as i32);
        let c2 = 1.0 - b2.powi(self.adam_t as i32);
        tch::no_grad(|| {
            for ((t, m), v) in self
                .theta
                .iter_mut()
                .zip(&mut self.adam_m)
                .zip(&mut self.adam_v)
            {
                let g = t.grad();
                if !g.defined() {
                    continue;
                }
                let g = g + &*t * cfg.arch_weight_decay;
                let _ = m.g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = v.g_mul_scalar_(b2).g_add_(&(&g * &g * (1.0 - b2)));
                let update = (&*m / c1) / ((&*v / c2).sqrt() + eps) * cfg.arch_lr;
                let _ = t.g_sub_(&update);
            }
            if let (Some(before), Some(drawn)) = (before, drawn) {
                for ((t, s), lse) in self.theta.iter_mut().zip(drawn).zip(before) {
                    let shift = lse - logsumexp(&to_vec(t), s);
                    let idx = Tensor::from_slice(&s.iter().map(|&j| j as i64).collect::<Vec<_>>());
                    let add =
                        Tensor::full([s.len() as i64], shift, (Kind::Float, tch::Device::Cpu));
                    let _ = t.index_add_(0, &idx, &add);
                }
            }
        });
        for p in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    fn file(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("search.safetensors"), dir.join("search.json"))
    }

    /// Saves everything the next epoch depends on; the JSON, written last, is what marks
    /// a checkpoint complete.
    fn save(&self, dir: &Path, cfg: &SearchConfig) -> Result<()> {
        let (tensors, meta) = Self::file(dir);
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (name, t) in self.vs.variables() {
            named.push((format!("var/{name}"), t.detach()));
        }
        for (name, b) in self.names.iter().zip(&self.momentum) {
            named.push((format!("momentum/{name}"), b.shallow_clone()));
        }
        for (d, ((t, m), v)) in self
            .theta
            .iter()
            .zip(&self.adam_m)
            .zip(&self.adam_v)
            .enumerate()
        {
            named.push((format!("theta/{d}"), t.detach()));
            named.push((format!("adam_m/{d}"), m.shallow_clone()));
            named.push((format!("adam_v/{d}"), v.shallow_clone()));
        }
        let tmp = tensors.with_extension("safetensors.tmp");
        Tensor::write_safetensors(&named, &tmp).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &tensors).map_err(|e| io(&tensors, e))?;
        let text = serde_json::to_string_pretty(&Meta {
            config: cfg.clone(),
            adam_t: self.adam_t,
            logs: self.logs.clone(),
        })
        .map_err(|e| io(&meta, e))?;
        let tmp = meta.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &meta).map_err(|e| io(&meta, e))
    }

    /// Loads a checkpoint of this configuration if there is one; `false` when there is none.
    fn load(&mut self, dir: &Path, cfg: &SearchConfig) -> Result<bool> {
        let (tensors, meta) = Self::file(dir);
        if !meta.exists() {
            return Ok(false);
        }
        let text = std::fs::read_to_string(&meta).map_err(|e| io(&meta, e))?;
        let m: Meta = serde_json::from_str(&text).map_err(|e| io(&meta, e))?;
        if m.config != *cfg {
            return Err(BackendError::Unsupported(format!(
                "{} holds a search with other settings; remove it or search elsewhere",
                dir.display()
            )));
        }
        let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&tensors)
            .map_err(|e| io(&tensors, e))?
            .into_iter()
            .collect();
        let get = |key: String| {
            saved
                .get(&key)
                .ok_or_else(|| io(&tensors, format!("the checkpoint has no `{key}`")))
        };
        tch::no_grad(|| -> Result<()> {
            for (name, mut t) in self.vs.variables() {
                t.copy_(get(format!("var/{name}"))?);
            }
            for (name, b) in self.names.iter().zip(&mut self.momentum) {
                b.copy_(get(format!("momentum/{name}"))?);
            }
            for (d, ((t, am), av)) in self
                .theta
                .iter_mut()
                .zip(&mut self.adam_m)
                .zip(&mut self.adam_v)
                .enumerate()
            {
                t.copy_(get(format!("theta/{d}"))?);
                am.copy_(get(format!("adam_m/{d}"))?);
                av.copy_(get(format!("adam_v/{d}"))?);
            }
            Ok(())
        })?;
        self.adam_t = m.adam_t;
        self.logs = m.logs;
        Ok(true)
    }
}

/// Whether every option of `term` may run under `gates`.
fn taken(term: &[(u32, u32)], gates: &Gates) -> bool {
    term.iter()
        .all(|&(d, o)| gates.active[d as usize][o as usize])
}

fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn logsumexp(x: &[f64], over: &[usize]) -> f64 {
    let max = over.iter().map(|&j| x[j]).fold(f64::NEG_INFINITY, f64::max);
    max + over.iter().map(|&j| (x[j] - max).exp()).sum::<f64>().ln()
}

/// Gates taking option `picks[d]` of every decision (of `sizes[d]` options) at weight 1.
fn one_hot(sizes: &[usize], picks: &[usize]) -> Gates {
    let mut active = Vec::with_capacity(picks.len());
    let mut values = Vec::with_capacity(picks.len());
    for (&k, &j) in sizes.iter().zip(picks) {
        let mut on = vec![false; k];
        on[j] = true;
        let v: Vec<f32> = (0..k).map(|o| if o == j { 1.0 } else { 0.0 }).collect();
        active.push(on);
        values.push(Tensor::from_slice(&v));
    }
    Gates { active, values }
}

/// The supernet's forward: only the nodes of options the gates let run, each mix the sum
/// of its running inputs weighed by the product of their options' gates.
fn mixed_forward(sn: &Supernet, net: &TchNet, x: &Tensor, train: bool, gates: &Gates) -> Tensor {
    let taken = |term: &[(u32, u32)]| taken(term, gates);
    net.forward_with(
        x,
        train,
        |i| taken(&sn.guards[i]),
        |i, values| {
            let mix = sn.mix_at(i)?;
            let node = &sn.graph.nodes[Handle::new(i)];
            let mut acc: Option<Tensor> = None;
            for (term, input) in mix.terms.iter().zip(&node.inputs) {
                if !taken(term) {
                    continue;
                }
                let value = values[input.index()].as_ref().expect("a taken option ran");
                let weight = term
                    .iter()
                    .map(|&(d, o)| gates.values[d as usize].get(o as i64))
                    .reduce(|a, b| a * b)
                    .expect("a term names an option");
                let y = value * weight;
                acc = Some(match acc {
                    Some(a) => a + y,
                    None => y,
                });
            }
            Some(acc.expect("every mix has a taken option"))
        },
    )
}

/// The supernet's output for fixed gates: option `choices[d]` of every decision at weight 1
/// and only its nodes run — the fixed network's forward, computed by the supernet (tests
/// hold the two equal).
pub fn one_hot_forward(
    sn: &Supernet,
    net: &TchNet,
    x: &Tensor,
    choices: &[u32],
    train: bool,
) -> Tensor {
    let sizes: Vec<usize> = sn.options.iter().map(|&k| k as usize).collect();
    let picks: Vec<usize> = choices.iter().map(|&c| c as usize).collect();
    mixed_forward(sn, net, x, train, &one_hot(&sizes, &picks))
}

/// The weights of the network [`Supernet::fixed`] cut out, from the supernet's:
/// `origin[i]` is the supernet node of node i.
pub fn cut_weights(supernet: &Weights, origin: &[usize]) -> Weights {
    let mut out = Weights::default();
    for (i, &from) in origin.iter().enumerate() {
        let prefix = format!("n{from}.");
        for (name, p) in supernet.params.range(prefix.clone()..) {
            let Some(suffix) = name.strip_prefix(&prefix) else {
                break;
            };
            out.params.insert(format!("n{i}.{suffix}"), p.clone());
        }
    }
    out
}

/// Writes weights as safetensors (names as in [`Weights`]).
pub fn save_weights(w: &Weights, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = w
        .params
        .iter()
        .map(|(k, p)| (k.clone(), Tensor::from_slice(&p.data).reshape(&p.dims)))
        .collect();
    Tensor::write_safetensors(&named, path).map_err(|e| io(path, e))
}

/// Reads weights written by [`save_weights`].
pub fn load_weights(path: &Path) -> Result<Weights> {
    let mut w = Weights::default();
    for (name, t) in Tensor::read_safetensors(path).map_err(|e| io(path, e))? {
        let data = Vec::<f32>::try_from(&t.to_kind(Kind::Float).flatten(0, -1))
            .map_err(|e| io(path, e))?;
        w.params.insert(
            name,
            crate::weights::Param {
                dims: t.size(),
                data,
            },
        );
    }
    Ok(w)
}
