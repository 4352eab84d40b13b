//! Side tables of the passes that learn from outside the source: latencies (`measure`),
//! accuracies (`profile`) and the selection (`select`), each keyed by [`Handle<Network>`];
//! and what the fusion test learns of a backend (pair verdicts, the rules they make).

use crate::arena::Handle;
use crate::network::Region;
use crate::space_info::{Decision, Network, SpaceInfo};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The latency of one network, with the statistics of the protocol that produced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// The figure of merit: the median over windows of each window's 10th percentile (see
    /// the backends' measurement protocol), scaled to the run's reference.
    pub p10_ms: f64,
    pub median_ms: f64,
    pub mean_ms: f64,
    pub var_ms2: f64,
    pub count: u32,
    /// The samples disagree more than the protocol accepts.
    pub noisy: bool,
    /// Timed in a chunk whose scale could not be estimated (the drift reference and every
    /// bridge failed to run): on that chunk's own scale, not the run's.
    #[serde(default)]
    pub unscaled: bool,
    pub per_layer: Option<Vec<LayerTime>>,
}

impl Latency {
    /// A latency the backend computed or reported itself, with no spread.
    pub fn exact(ms: f64) -> Latency {
        Latency {
            p10_ms: ms,
            median_ms: ms,
            mean_ms: ms,
            var_ms2: 0.0,
            count: 1,
            noisy: false,
            unscaled: false,
            per_layer: None,
        }
    }

    /// Multiplies every time by `factor` (a drift correction).
    pub fn scale(&mut self, factor: f64) {
        self.p10_ms *= factor;
        self.median_ms *= factor;
        self.mean_ms *= factor;
        self.var_ms2 *= factor * factor;
        if let Some(layers) = &mut self.per_layer {
            for l in layers {
                l.ms *= factor;
            }
        }
    }
}

/// Time spent in one part of the network (a searchable layer, a fixed part, a cell).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerTime {
    pub region: Region,
    pub ms: f64,
}

/// One network's measurement: what the backend ran (its content hash), whether the store
/// already had it, and the latency or why there is none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timed {
    pub hash: String,
    pub cached: bool,
    pub result: Result<Latency, String>,
}

/// `measure`'s side table: the networks measured on one backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    /// The backend fingerprint the latencies belong to, as text.
    pub backend: String,
    pub results: BTreeMap<Handle<Network>, Timed>,
}

impl LatencyTable {
    /// The figure of merit of a network measured without failure.
    pub fn ms(&self, n: Handle<Network>) -> Option<f64> {
        self.results.get(&n)?.result.as_ref().ok().map(|l| l.p10_ms)
    }
}

/// Where the accuracies came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccuracySource {
    /// Trained here: SSBN_0 trained, every other SSBN fine-tuned from it. `task` is the
    /// training key (data set, subsets, budgets, seed) the store files them under.
    Profile { task: String, task_id: String },
    /// Trained here, every SSBN from random initialisation on SSBN_0's budget: the ground
    /// truth fine-tuning is scored against.
    Scratch { task: String, task_id: String },
    /// A zero-cost proxy computed at initialisation; each `accuracy` is the network's
    /// percentile rank by score among those scored (0 the lowest, 1 the highest), not an
    /// accuracy, and the raw scores are in `scores`.
    Proxy {
        proxy: String,
        task: String,
        task_id: String,
    },
    /// Read from a table (a tabular benchmark, an earlier run).
    Table { path: String },
}

/// One network's accuracy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    /// Validation accuracy in [0, 1] (for a proxy: the percentile rank of its score).
    pub accuracy: f64,
    /// Taken from the store (or the table), not trained in this run.
    pub cached: bool,
}

/// `profile`'s side table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccuracyTable {
    pub source: AccuracySource,
    pub results: BTreeMap<Handle<Network>, Trained>,
    /// Notes on how the data was adapted to each space's input, in space order.
    pub notes: Vec<String>,
    /// A proxy's raw scores (higher predicted better), where `results` holds their ranks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<Handle<Network>, f64>,
}

/// BBSSP's trade-off knobs (authors' ImageNet values: thres 0.80, scale 2, λ 0.01, N 60).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectParams {
    pub thres: f64,
    pub scale: f64,
    pub lambda: f64,
    pub n: usize,
}

impl Default for SelectParams {
    fn default() -> Self {
        SelectParams {
            thres: 0.80,
            scale: 2.0,
            lambda: 0.01,
            n: 60,
        }
    }
}

/// One SSBN with its measured figures and cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scored {
    pub network: Handle<Network>,
    pub id: String,
    pub space: String,
    pub key: String,
    pub accuracy: f64,
    pub latency_ms: f64,
    pub cost: f64,
    /// Counted towards its space's picks (the ranked walk reached it before a winner).
    pub picked: bool,
}

/// `select`'s side table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Selection {
    pub params: SelectParams,
    /// Every SSBN, cheapest first.
    pub ranked: Vec<Scored>,
    pub winner: String,
    /// Index of the winning space in [`crate::Module::checked`].
    pub space: u32,
    /// The winner reached N picks (otherwise: the most picks when the list ran out).
    pub reached: bool,
    /// Per decision of the winning space, the options kept (the default always), ascending.
    pub keep: Vec<Vec<u32>>,
    /// Mean latency of the winning space's picked SSBNs.
    pub picked_mean_latency_ms: f64,
}

impl Selection {
    /// Per decision of the winning space (`checked` is the module's), the tokens kept.
    pub fn kept<'m>(
        &self,
        checked: &'m [SpaceInfo],
    ) -> Vec<(Handle<Decision>, &'m Decision, Vec<&'m str>)> {
        let info = &checked[self.space as usize];
        info.decisions
            .iter()
            .zip(&self.keep)
            .map(|((h, d), kept)| {
                let tokens = kept
                    .iter()
                    .map(|&o| d.options[o as usize].token.as_str())
                    .collect();
                (h, d, tokens)
            })
            .collect()
    }
}

/// The fusion test's verdict on one op pair `a → b` at one place (the shapes it was tested
/// at), with the times it rests on (ms, net of the per-call cost: the mean of the middle
/// runs that decided it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRule {
    pub a: String,
    pub b: String,
    pub place: String,
    pub t_a: f64,
    pub t_b: f64,
    pub t_ab: f64,
    pub fused: bool,
    /// How far the saving `T_A + T_B − T_AB` moves between runs (ms): its standard deviation
    /// among a try's runs, the median over the tries (in verdicts stored before runs were
    /// timed apart: how far it moved between a try's two runs; 0 before it was recorded).
    #[serde(default)]
    pub spread_ms: f64,
    /// The saving is within its margin of the threshold (2.5 spreads over √runs):
    /// treated as not fused, and said so.
    #[serde(default)]
    pub undecided: bool,
    /// Tries it took (of three probe runs each; of two in verdicts stored before runs were
    /// timed apart): more than one where the first left it undecided (1 in verdicts stored
    /// before undecided pairs were probed again).
    #[serde(default = "one")]
    pub attempts: u32,
    /// Each run was timed in a process of its own, so the spread is the one between runs
    /// of the tool; false where every run shared one process (and in verdicts stored
    /// before runs were timed apart).
    #[serde(default)]
    pub apart: bool,
}

fn one() -> u32 {
    1
}

/// A backend's fusion rules: ordered pairs `(A, B)` for which A followed by B runs as one
/// kernel. B is an op name (`Prim::name`); A is an op name or a fused chain (`conv+bn`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FusionRules {
    pub fused: BTreeSet<(String, String)>,
}

/// The A of a pair `(zero, B)`: B reading a constant is computed when the network is
/// compiled (constant folding), so it costs nothing when the network runs.
pub const CONSTANT: &str = "zero";

impl FusionRules {
    pub fn fuses(&self, a: &str, b: &str) -> bool {
        self.fused.contains(&(a.to_string(), b.to_string()))
    }

    /// Whether the backend computes what depends on constants alone when it compiles: one
    /// op folded is taken for all (compilers fold whole constant sub-graphs, not op types).
    pub fn folds_constants(&self) -> bool {
        self.fused.iter().any(|(a, _)| a == CONSTANT)
    }
}
