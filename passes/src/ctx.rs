//! The driver's context: everything a pass may reach outside the source — the backend, the
//! measurement store, the protocol, where accuracies come from, the user's knobs, progress
//! reporting. The command line builds one and hands it to the pass manager; pure passes
//! never look at it, so a compile without one runs the front end exactly as before.

use crate::Diagnostics;
use spacetune_backends::{
    measure::{Drift, Protocol},
    store::Store,
    Backend, Fingerprint,
};
use spacetune_ir::{Diagnostic, Module};
use std::path::PathBuf;

/// What the passes after `expand` may use. Every field is optional in spirit: a pass that
/// needs something missing fails with a diagnostic saying what to give it.
pub struct Ctx<'a> {
    pub backend: Option<&'a dyn Backend>,
    /// The measurement store: latencies, accuracies, fusion verdicts.
    pub store: Option<&'a dyn Store>,
    pub protocol: Protocol,
    /// The scale factors chunks got so far (see [`Drift`]): by default the process's, one
    /// history however many contexts a command makes.
    pub drift: &'a Drift,
    /// Only this space (by name); all when `None`.
    pub space: Option<String>,
    /// Independent measurements of every SSBN averaged into the corrected table (the
    /// first is the measure pass's own).
    pub replicate: usize,
    pub accuracy: Option<AccuracyFrom>,
    /// Selection knobs given on the command line (they override the file's `select` line).
    pub select: SelectOverrides,
    /// How `search` searches and `emit` retrains; `None`: the pipeline ends at `reduce`.
    pub search: Option<SearchSpec>,
    pub progress: &'a dyn Progress,
    /// Other processes to share the profile's work with, started when it begins (not
    /// before: they would train while this one times).
    pub sharing: Option<&'a dyn Sharing>,
}

/// How the profile's work is shared with other processes.
pub trait Sharing {
    /// Starts the other workers (once; later calls return the same). `Some`: they do all
    /// the work (a Slurm job array), and this process only waits for them.
    fn begin(&self) -> Result<Option<&dyn Others>, String>;
}

/// Other processes working on this run, as the one waiting for them sees them.
pub trait Others {
    /// `Err` saying why once they have all ended (their queue's work left undone).
    fn check(&self) -> Result<(), String>;
}

/// The gradient search's settings, data and budget, and where its outputs go.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSpec {
    pub dataset: String,
    pub budget: Budget,
    /// Mode, loss, α, β, target, seed and threads; the epochs and batch come from the budget.
    pub config: spacetune_backends::search::SearchConfig,
    /// The latency table the loss reads: `naive` or `corrected`.
    pub predictor: String,
    /// Search the winning space whole instead of its reduced space (a baseline).
    pub full: bool,
    /// Run the baselines after `emit` (`compare`): random search in the reduced and the
    /// whole space, and the gradient search on the whole space.
    pub baselines: bool,
    /// Architectures each random search trains; `None`: as many as fit in the search's
    /// wall time (compute-matched).
    pub random_k: Option<usize>,
    /// Checkpoints (a directory per search key) and the emitted files.
    pub checkpoints: PathBuf,
    pub out: PathBuf,
}

/// How much data and how many epochs a search and the chosen network's retraining get.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Budget {
    pub name: String,
    /// Training-split images for the weights and for θ (disjoint).
    pub weights_images: usize,
    pub arch_images: usize,
    pub epochs: usize,
    pub warmup: usize,
    pub batch: usize,
    /// Retraining from scratch: images, epochs; test images the accuracy is measured on.
    pub retrain_images: usize,
    pub retrain_epochs: usize,
    pub test_images: usize,
    /// The profile's training sizes, where the command line does not give them. Not part
    /// of a search's key: the profile reaches the search only through the reduced space.
    #[serde(skip)]
    pub profile: ProfileBudget,
}

/// How much the profile trains: SSBN_0 on `train_subset` for `epochs`, every other SSBN
/// fine-tuned on `finetune_subset`, all scored on `validation` held-out images.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProfileBudget {
    pub train_subset: usize,
    pub validation: usize,
    pub epochs: usize,
    pub finetune_subset: usize,
}

impl Budget {
    /// `tiny` (a smoke run), `small` (the README's main job), `full`.
    pub fn named(name: &str) -> Option<Budget> {
        let b = |w, a, e, wu, ri, re, t, (ts, v, pe, f)| Budget {
            name: name.to_string(),
            weights_images: w,
            arch_images: a,
            epochs: e,
            warmup: wu,
            batch: 64,
            retrain_images: ri,
            retrain_epochs: re,
            test_images: t,
            profile: ProfileBudget {
                train_subset: ts,
                validation: v,
                epochs: pe,
                finetune_subset: f,
            },
        };
        Some(match name {
            "tiny" => b(256, 256, 3, 1, 512, 1, 500, (512, 200, 1, 128)),
            "small" => b(3000, 1500, 8, 2, 6000, 3, 2000, (6000, 500, 3, 256)),
            "full" => b(30000, 15000, 40, 8, 60000, 30, 10000, (6000, 1000, 3, 2000)),
            _ => return None,
        })
    }
}

impl Default for Ctx<'_> {
    fn default() -> Self {
        Ctx {
            backend: None,
            store: None,
            protocol: Protocol::default(),
            drift: Drift::process(),
            space: None,
            replicate: 1,
            accuracy: None,
            select: SelectOverrides::default(),
            search: None,
            progress: &Quiet,
            sharing: None,
        }
    }
}

/// Where `profile` gets accuracies.
#[derive(Clone, Debug)]
pub enum AccuracyFrom {
    /// Train SSBN_0 and fine-tune every other SSBN from it (BBSSP).
    Train(TrainSpec),
    /// A CSV with `key` and `accuracy` columns (and optionally `space`), e.g. a tabular
    /// benchmark or an earlier profile.
    Table(PathBuf),
}

/// The data set and training budget of a profile.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSpec {
    /// fashion-mnist, cifar10:DIR or synthetic.
    pub dataset: String,
    pub train_subset: usize,
    pub validation: usize,
    pub epochs: usize,
    pub finetune_epochs: usize,
    pub finetune_subset: usize,
    /// Peak learning rate of fine-tuning (`None`: SSBN_0's `lr`).
    pub finetune_lr: Option<f64>,
    /// After fine-tuning, re-estimate every batch norm's statistics from the fine-tuning
    /// images (off, the default: the moving averages fine-tuning left, as plain BBSSP).
    pub recalibrate_bn: bool,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    pub threads: usize,
    /// Train and evaluate SSBN_0 only.
    pub base_only: bool,
    /// Where SSBN_0 checkpoints go (a directory per training key is made inside).
    pub checkpoints: PathBuf,
    /// How each SSBN gets its accuracy.
    pub method: Method,
    /// How long a worker's claim on a network lasts without its heartbeat (a killed
    /// worker's network goes to another after this).
    pub lease: std::time::Duration,
    /// Only (n, seed): SSBN_0 and n other SSBNs of each space, stratified over its
    /// decisions, drawn with the seed (a fidelity sample; selection needs every SSBN). Its
    /// own seed, so profiles at other training seeds see the same networks.
    pub sample: Option<(usize, u64)>,
}

/// How the profile gives an SSBN its accuracy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// BBSSP: fine-tuned from SSBN_0's weights with the swapped decision re-initialised.
    #[default]
    Finetune,
    /// Trained from random initialisation on SSBN_0's budget (the ground truth).
    Scratch,
    /// A zero-cost proxy at initialisation (a score, ranked; not an accuracy).
    Proxy(spacetune_backends::proxy::Proxy),
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Finetune => "finetune",
            Method::Scratch => "scratch",
            Method::Proxy(p) => p.name(),
        }
    }

    /// `finetune`, `scratch`, `synflow` or `naswot`.
    pub fn named(name: &str) -> Option<Method> {
        match name {
            "finetune" => Some(Method::Finetune),
            "scratch" => Some(Method::Scratch),
            _ => spacetune_backends::proxy::Proxy::named(name).map(Method::Proxy),
        }
    }

    pub const NAMES: &'static str = "finetune, scratch, synflow, naswot";

    /// What `spacetune profile` calls its CSV: `<stem>.accuracy.csv` for BBSSP's
    /// fine-tuning (what `select` reads by default), `<stem>.<name>.csv` for the others.
    pub fn csv_stem(self) -> &'static str {
        match self {
            Method::Finetune => "accuracy",
            other => other.name(),
        }
    }

    /// The method whose profile made `source` (a table counts as fine-tuned).
    pub fn of(source: &spacetune_ir::AccuracySource) -> Method {
        use spacetune_ir::AccuracySource as S;
        match source {
            S::Profile { .. } | S::Table { .. } => Method::Finetune,
            S::Scratch { .. } => Method::Scratch,
            S::Proxy { proxy, .. } => Method::named(proxy).unwrap_or_default(),
        }
    }
}

impl TrainSpec {
    /// Which batch-norm statistics a fine-tuned SSBN is scored with, as the profile's
    /// opening line, the run summary and the training key name them.
    pub fn bn_stats(&self) -> &'static str {
        if self.recalibrate_bn {
            "recomputed"
        } else {
            "as fine-tuning left them"
        }
    }

    /// The sizes and rates that cannot train anything, named by their flags.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            (
                "--validation",
                self.validation,
                "every SSBN would score 0 on an empty validation set",
            ),
            (
                "--train-subset",
                self.train_subset,
                "there would be nothing to train on",
            ),
            (
                "--finetune-subset",
                self.finetune_subset,
                "fine-tuning would see no image",
            ),
            ("--epochs", self.epochs, "SSBN_0 would not be trained"),
            ("--batch", self.batch, "there would be no batch"),
            ("--threads", self.threads, "nothing would run"),
        ];
        for (flag, v, why) in positive {
            if v == 0 {
                return Err(format!("{flag} 0: {why}"));
            }
        }
        if self.finetune_subset > self.train_subset {
            return Err(format!(
                "--finetune-subset {} is larger than --train-subset {}: fine-tuning draws from the training subset",
                self.finetune_subset, self.train_subset
            ));
        }
        for (flag, lr) in [("--lr", Some(self.lr)), ("--finetune-lr", self.finetune_lr)] {
            if let Some(lr) = lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
                return Err(format!("{flag} {lr}: the learning rate must be positive"));
            }
        }
        if self.sample.is_some_and(|(n, _)| n == 0) {
            return Err("--sample 0: no SSBN would be profiled".into());
        }
        Ok(())
    }
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            dataset: "fashion-mnist".into(),
            train_subset: 6000,
            validation: 1000,
            epochs: 3,
            finetune_epochs: 1,
            finetune_subset: 2000,
            finetune_lr: None,
            recalibrate_bn: false,
            batch: 64,
            lr: 0.05,
            seed: 0,
            threads: 2,
            base_only: false,
            checkpoints: PathBuf::from(".spacetune"),
            method: Method::Finetune,
            lease: std::time::Duration::from_secs(60),
            sample: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SelectOverrides {
    pub thres: Option<f64>,
    pub scale: Option<f64>,
    pub lambda: Option<f64>,
    pub n: Option<usize>,
}

/// Progress of a stage of work (networks measured, SSBNs trained).
pub trait Progress {
    fn stage(&self, what: &str, len: usize) -> Box<dyn Stage + '_>;
    /// A line worth telling the user now (what was fitted, what data was used).
    fn note(&self, line: &str);
}

pub trait Stage {
    /// One item is done.
    fn tick(&self, item: &str);
    /// What is being worked on now.
    fn working(&self, item: &str);
}

/// No progress output (tests, libraries).
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&self, _: &str, _: usize) -> Box<dyn Stage + '_> {
        Box::new(Quiet)
    }
    fn note(&self, _: &str) {}
}

impl Stage for Quiet {
    fn tick(&self, _: &str) {}
    fn working(&self, _: &str) {}
}

/// A failure outside the source (a backend, the store, the data) as diagnostics.
pub fn outside(doing: &str, e: impl std::fmt::Display) -> Diagnostics {
    Diagnostic::error(format!("{doing}: {e}")).into()
}

impl<'a> Ctx<'a> {
    pub fn backend(&self, pass: &str) -> Result<&'a dyn Backend, Diagnostics> {
        self.backend.ok_or_else(|| {
            Diagnostic::error(format!(
                "the `{pass}` pass needs a backend to measure on (give one with --backend)"
            ))
            .into()
        })
    }
    /// What the pass's measurements are keyed and labelled by: the backend's fingerprint
    /// under this context's protocol.
    pub fn fingerprint(&self, pass: &str) -> Result<Fingerprint, Diagnostics> {
        Ok(self.backend(pass)?.fingerprint().under(&self.protocol))
    }
    pub fn store(&self, pass: &str) -> Result<&'a dyn Store, Diagnostics> {
        self.store.ok_or_else(|| {
            Diagnostic::error(format!(
                "the `{pass}` pass needs a measurement store (--db)"
            ))
            .into()
        })
    }
    /// The spaces to work on: the one called `space`, or all, by index into `checked`.
    pub fn spaces(&self, m: &Module) -> Result<Vec<u32>, Diagnostics> {
        let spaces: Vec<u32> = (0..m.checked.len() as u32)
            .filter(|&s| {
                self.space
                    .as_deref()
                    .is_none_or(|n| m.checked[s as usize].name == n)
            })
            .collect();
        if spaces.is_empty() {
            let known: Vec<&str> = m.checked.iter().map(|i| i.name.as_str()).collect();
            return Err(Diagnostic::error(format!(
                "no space `{}` (spaces: {})",
                self.space.as_deref().unwrap_or(""),
                known.join(", ")
            ))
            .into());
        }
        Ok(spaces)
    }
}
