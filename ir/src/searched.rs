//! Side tables of the last passes: what the search found (`search`), the network it chose,
//! emitted, retrained and measured (`emit`), and the baselines of the same run beside it
//! (`compare`).

use crate::space_info::Network;
use serde::{Deserialize, Serialize};

/// One epoch of a search, as its curves show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchEpoch {
    pub epoch: usize,
    /// Weights only, on uniformly sampled paths.
    pub warmup: bool,
    /// Mean loss of θ's steps (of the weight steps during the warm-up).
    pub loss: f64,
    /// Mean cross-entropy of the weight steps.
    pub ce: f64,
    /// Accuracy on the weight steps' batches as they were trained on.
    pub train_accuracy: f64,
    /// E[LAT] under softmax(θ) at the epoch's end (predicted, ms).
    pub expected_ms: f64,
    /// The predicted latency of argmax θ at the epoch's end (ms).
    pub argmax_ms: f64,
    pub temperature: f64,
    /// Mean entropy of softmax(θ) over the decisions with a choice (nats).
    pub entropy: f64,
    pub seconds: f64,
    /// The process's peak resident memory since the search started, at the epoch's end
    /// (bytes; 0 where the system does not report it).
    #[serde(default)]
    pub peak_bytes: u64,
}

/// `search`'s side table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Searched {
    /// The space searched, and whether it was the reduced one (`reduced`) or the winning
    /// space whole (`full`).
    pub space: String,
    pub on: String,
    /// gumbel or proxyless.
    pub mode: String,
    /// The latency table the loss used (naive, corrected).
    pub predictor: String,
    /// Every setting of the search, as the checkpoint key.
    pub settings: String,
    /// θ per decision of the searched space.
    pub theta: Vec<Vec<f64>>,
    /// argmax θ.
    pub choices: Vec<u32>,
    pub key: String,
    /// The predictor's latency of the chosen network (ms).
    pub predicted_ms: f64,
    pub epochs: Vec<SearchEpoch>,
    /// Epochs taken from a checkpoint rather than run in this process.
    pub resumed: usize,
    /// Where the supernet's final weights are (safetensors).
    pub weights: String,
    /// The epochs' wall time summed (a resumed search counts the epochs it took over).
    pub seconds: f64,
}

impl Searched {
    /// The peak resident memory of the search (bytes), where the system reported it.
    pub fn peak_bytes(&self) -> Option<u64> {
        self.epochs
            .iter()
            .map(|e| e.peak_bytes)
            .max()
            .filter(|&b| b > 0)
    }
}

/// A network trained from scratch and measured: the chosen one or a baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// `chosen`, `ssbn0`, `random-reduced`, `random-full`, ...
    pub name: String,
    pub key: String,
    /// Test accuracy after retraining from scratch on the budget, or why there is none.
    pub test_accuracy: Result<f64, String>,
    /// Measured whole on the backend (ms), or why there is none.
    pub measured_ms: Result<f64, String>,
    /// The search predictor's latency (ms), where the network is in the searched space.
    pub predicted_ms: Option<f64>,
    /// Wall time of what found it (the search's epochs, or the random draw's trainings),
    /// seconds.
    pub search_seconds: f64,
    /// Peak resident memory of what found it (bytes), where it was measured.
    pub peak_bytes: Option<u64>,
    pub train_seconds: f64,
    /// How it was found, in a line (the search's mode and space, the random draw's size).
    pub detail: String,
}

/// `emit`'s side table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chosen {
    pub network: Network,
    /// The files written: the fixed `.space`, IR JSON, ONNX, weights.
    pub files: Vec<String>,
    /// The chosen network first, then the baselines.
    pub outcomes: Vec<Outcome>,
}
