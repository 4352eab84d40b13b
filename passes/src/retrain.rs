//! Training a fixed network from scratch and testing it — the chosen network, SSBN_0 and
//! every baseline go through this one function, so their figures are comparable — with the
//! result kept beside the search checkpoints, so a rerun does not train it again.

use crate::ctx::{outside, SearchSpec};
use crate::search::{splits, test_split, train_split};
use sha2::{Digest, Sha256};
use spacetune_backends::data::Dataset;
use spacetune_backends::network_hash;
use spacetune_backends::search as engine;
use spacetune_backends::torch::TchNet;
use spacetune_backends::train::{self, TrainConfig};
use spacetune_backends::weights::Weights;
use spacetune_ir::*;
use std::path::Path;

/// A network trained from scratch and tested.
pub struct Retrained {
    /// The pruned graph a backend runs, and its trained weights.
    pub graph: Graph,
    pub weights: Weights,
    /// Mean cross-entropy and top-1 accuracy on the test set given.
    pub ce: f64,
    pub accuracy: f64,
    /// Wall time of the training and the test (of the run that did it, when cached).
    pub seconds: f64,
    /// Read from the cache rather than trained now.
    pub cached: bool,
}

/// The budget's retraining: the same images, test set and settings for every network.
pub struct Retraining {
    pub pool: Dataset,
    pub test: Dataset,
    pub cfg: TrainConfig,
    cache: std::path::PathBuf,
}

impl Retraining {
    /// The retraining of `spec`'s budget for networks taking `input`.
    pub fn new(spec: &SearchSpec, input: Shape) -> Result<Retraining, Diagnostics> {
        let (train_set, _) = train_split(spec, input).map_err(|e| outside("training data", e))?;
        let test = test_split(spec, input).map_err(|e| outside("test data", e))?;
        // Drawn as the search's weight split is (one image held out), so the retraining
        // pool of a budget is the same images from run to run.
        let (pool, _) = splits(&train_set, spec.budget.retrain_images, 1, spec.config.seed);
        let cfg = TrainConfig {
            epochs: spec.budget.retrain_epochs,
            batch: spec.budget.batch,
            lr: spec.config.lr,
            seed: spec.config.seed,
            threads: spec.config.threads,
            ..TrainConfig::default()
        };
        Ok(Retraining {
            pool,
            test,
            cfg,
            cache: spec.checkpoints.clone(),
        })
    }

    pub fn run(&self, net: &Network) -> Result<Retrained, Diagnostics> {
        retrain(net, &self.pool, &self.test, &self.cfg, Some(&self.cache))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    ce: f64,
    accuracy: f64,
    seconds: f64,
}

/// Trains `net` from seeded random weights on `train_set` and tests it on `test`; with
/// `cache`, the result is kept there under a key of the network, the data and the settings.
pub fn retrain(
    net: &Network,
    train_set: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
    cache: Option<&Path>,
) -> Result<Retrained, Diagnostics> {
    let graph = net.graph.pruned();
    let key = serde_json::json!({
        "network": network_hash(&graph, 1),
        "config": cfg,
        "train": [&train_set.name, train_set.len(), fingerprint(train_set)],
        "test": [&test.name, test.len(), fingerprint(test)],
    })
    .to_string();
    let digest: String = Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let files = cache.map(|dir| {
        (
            dir.join(format!("retrain-{digest}.json")),
            dir.join(format!("retrain-{digest}.safetensors")),
        )
    });
    if let Some((record, weights)) = &files {
        if let Some(r) = load(&graph, record, weights) {
            return Ok(r);
        }
    }
    let start = std::time::Instant::now();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let tch_net = TchNet::new(&vs.root(), &graph, &Weights::random(&graph, cfg.seed))
        .map_err(|e| outside(&format!("building {}", net.id), e))?;
    train::train(&tch_net, &vs, train_set, cfg, |_, _, _| {})
        .map_err(|e| outside(&format!("training {}", net.id), e))?;
    let (ce, accuracy) = train::evaluate(&tch_net, test, 256)
        .map_err(|e| outside(&format!("testing {}", net.id), e))?;
    let r = Retrained {
        weights: tch_net.weights(),
        graph,
        ce,
        accuracy,
        seconds: start.elapsed().as_secs_f64(),
        cached: false,
    };
    if let Some((record, weights)) = &files {
        let rec = Record {
            ce,
            accuracy,
            seconds: r.seconds,
        };
        let dir = record.parent().expect("a file in a directory");
        let bytes = serde_json::to_vec(&rec).expect("a record serialises");
        std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(record, bytes))
            .map_err(|e| outside(&format!("writing {}", record.display()), e))?;
        engine::save_weights(&r.weights, weights)
            .map_err(|e| outside(&format!("writing {}", weights.display()), e))?;
    }
    Ok(r)
}

/// A cheap digest of which images a data set holds (their labels and a sample of pixels),
/// so that two subsets of the same size do not share a cache entry.
fn fingerprint(d: &Dataset) -> String {
    let mut h = Sha256::new();
    for l in &d.labels {
        h.update(l.to_le_bytes());
    }
    for p in d.images.iter().step_by(97) {
        h.update(p.to_le_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A cached result, if both its files are there and the weights fit the graph; anything
/// else is trained again.
fn load(graph: &Graph, record: &Path, weights: &Path) -> Option<Retrained> {
    let rec: Record = serde_json::from_slice(&std::fs::read(record).ok()?).ok()?;
    let w = engine::load_weights(weights).ok()?;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    TchNet::new(&vs.root(), graph, &w).ok()?;
    Some(Retrained {
        graph: graph.clone(),
        weights: w,
        ce: rec.ce,
        accuracy: rec.accuracy,
        seconds: rec.seconds,
        cached: true,
    })
}
