//! `spacetune profile`: the pipeline up to the `profile` pass (BBSSP's accuracy
//! profiling), then the accuracies as a CSV and a per-space summary.

use crate::measure::{stem, BackendArgs};
use anyhow::{Context, Result};
use clap::Args;
use spacetune::ir::Module;
use spacetune::pass::ctx::{Budget, TrainSpec};
use std::path::{Path, PathBuf};

/// The data set and the training budget. Sizes left out come from `--budget`.
#[derive(Args, Clone)]
pub struct TrainArgs {
    /// fashion-mnist (Debian's files), cifar10:DIR (the binary format), or synthetic
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// tiny, small or full: the profile's training sizes (unless given below), and the
    /// search's data and epochs and the retraining's
    #[arg(long, default_value = "small")]
    pub budget: String,
    /// Training examples used (a seeded subset of the training split) [tiny 512, small
    /// 6000, full 6000]
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Validation examples, held out of the training split [tiny 200, small 500, full 1000]
    #[arg(long)]
    pub validation: Option<usize>,
    /// Epochs of SSBN_0's training [tiny 1, small 3, full 3]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Epochs of each SSBN's fine-tuning
    #[arg(long, default_value_t = 1)]
    pub finetune_epochs: usize,
    /// Examples each fine-tuning sees (a subset of the training subset) [tiny 128, small
    /// 256, full 2000]
    #[arg(long)]
    pub finetune_subset: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Train and evaluate SSBN_0 only (e.g. to see how much the seed moves its accuracy)
    #[arg(long)]
    pub base_only: bool,
}

impl TrainArgs {
    /// The budget named by `--budget`.
    pub fn budget(&self) -> Result<Budget> {
        Budget::named(&self.budget)
            .with_context(|| format!("unknown budget `{}` (tiny, small, full)", self.budget))
    }

    /// The training spec, with SSBN_0 checkpoints beside the database `db`.
    pub fn spec(&self, db: &Path) -> Result<TrainSpec> {
        let p = self.budget()?.profile;
        Ok(TrainSpec {
            dataset: self.dataset.clone(),
            train_subset: self.train_subset.unwrap_or(p.train_subset),
            validation: self.validation.unwrap_or(p.validation),
            epochs: self.epochs.unwrap_or(p.epochs),
            finetune_epochs: self.finetune_epochs,
            finetune_subset: self.finetune_subset.unwrap_or(p.finetune_subset),
            batch: self.batch,
            lr: self.lr,
            seed: self.seed,
            threads: self.threads,
            base_only: self.base_only,
            checkpoints: db.parent().map(Path::to_path_buf).unwrap_or_default(),
        })
    }
}

#[derive(Args)]
pub struct ProfileArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub train: TrainArgs,
    /// Where latencies come from (the pipeline measures before it profiles)
    #[command(flatten)]
    pub on: BackendArgs,
    /// Only this space (by name)
    #[arg(long)]
    pub space: Option<String>,
    #[arg(long, default_value = "spacetune-out")]
    pub out: PathBuf,
}

/// Writes `<out>/<stem>.accuracy.csv` and prints the per-space summary.
/// `seconds`: how long the profile took, where the caller timed it alone.
pub fn print_profiled(m: &Module, file: &Path, out: &Path, seconds: Option<f64>) -> Result<()> {
    let table = m.accuracies.as_ref().context("nothing was profiled")?;
    for note in &table.notes {
        println!("{note}");
    }
    let rows: Vec<(&str, &str, &str, f64)> = table
        .results
        .iter()
        .map(|(&h, t)| {
            let n = &m.networks[h];
            let space = m.checked[n.space as usize].name.as_str();
            (space, n.id.as_str(), n.key.as_str(), t.accuracy)
        })
        .collect();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("{}.accuracy.csv", stem(file)));
    let mut w = csv::Writer::from_path(&path)?;
    w.write_record(["space", "id", "key", "accuracy"])?;
    for (s, id, key, acc) in &rows {
        // In full (the shortest text that reads back as the same number): `select
        // --accuracy` must rank exactly what the profile measured.
        w.write_record([*s, *id, *key, acc.to_string().as_str()])?;
    }
    w.flush()?;
    println!("wrote {}", path.display());
    summarise(&rows, seconds);
    let reused = table.results.values().filter(|t| t.cached).count();
    println!(
        "{} networks: {} profiled now, {reused} from the database",
        rows.len(),
        rows.len() - reused
    );
    Ok(())
}

fn summarise(rows: &[(&str, &str, &str, f64)], seconds: Option<f64>) {
    let mut spaces: Vec<&str> = rows.iter().map(|r| r.0).collect();
    spaces.dedup();
    println!(
        "{:<10} {:>6} {:>9} {:>8} {:>8} {:>8}",
        "space", "ssbns", "ssbn_0", "min", "mean", "max"
    );
    for s in spaces {
        let accs: Vec<f64> = rows.iter().filter(|r| r.0 == s).map(|r| r.3).collect();
        let base = rows.iter().find(|r| r.0 == s).map_or(f64::NAN, |r| r.3);
        let min = accs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = accs.iter().copied().fold(0.0, f64::max);
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        println!(
            "{s:<10} {:>6} {base:>9.4} {min:>8.4} {mean:>8.4} {max:>8.4}",
            accs.len()
        );
    }
    if let Some(seconds) = seconds {
        println!("profiled in {seconds:.1} s");
    }
}
