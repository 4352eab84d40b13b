//! `spacetune search` / `run` to the end: the search settings as flags, then what the
//! search and emit passes made — the curves as CSV, everything as JSON, and a table of the
//! chosen network beside the baselines.

use crate::measure::stem;
use crate::profile::TrainArgs;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use spacetune::backends::search::{LossKind, Mode, SearchConfig};
use spacetune::ir::Module;
use spacetune::pass::ctx::SearchSpec;
use std::path::Path;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    Gumbel,
    Proxyless,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LossArg {
    /// BBSSP / aw_nas: CE · α · E[LAT]^β
    Mul,
    /// FBNet: CE · α · log(E[LAT] in µs)^β
    Log,
    /// ProxylessNAS: CE + α · E[LAT]
    Add,
}

/// The gradient search's settings.
#[derive(Args, Clone)]
pub struct SearchArgs {
    /// gumbel (every option runs, Gumbel-softmax weights) or proxyless (binary gates)
    #[arg(long, value_enum, default_value = "gumbel")]
    pub mode: ModeArg,
    /// The latency table of the loss: corrected (BBSSP) or naive
    #[arg(long, default_value = "corrected")]
    pub predictor: String,
    #[arg(long, value_enum, default_value = "mul")]
    pub loss: LossArg,
    #[arg(long, default_value_t = 0.2)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.6)]
    pub beta: f64,
    /// Expected latency below this many ms costs nothing
    #[arg(long, value_name = "MS")]
    pub latency_target: Option<f64>,
    /// Search the winning space whole rather than its reduced space
    #[arg(long)]
    pub search_full: bool,
    /// Skip the baselines (random search in the reduced and whole space, the gradient
    /// search on the whole space); SSBN_0 is retrained either way
    #[arg(long)]
    pub no_baselines: bool,
    /// Architectures each random search trains (default: as many as the gradient
    /// search's wall time pays for)
    #[arg(long, value_name = "K")]
    pub random_k: Option<usize>,
}

impl SearchArgs {
    /// The search's spec: data, seed, threads and learning rate as the training has them.
    pub fn spec(&self, train: &TrainArgs, dir: &Path, out: &Path) -> Result<SearchSpec> {
        let (seed, threads, lr) = (train.seed, train.threads, train.lr);
        Ok(SearchSpec {
            dataset: train.dataset.clone(),
            budget: train.budget()?,
            config: SearchConfig {
                mode: match self.mode {
                    ModeArg::Gumbel => Mode::Gumbel,
                    ModeArg::Proxyless => Mode::Proxyless,
                },
                loss: match self.loss {
                    LossArg::Mul => LossKind::Mul,
                    LossArg::Log => LossKind::Log,
                    LossArg::Add => LossKind::Add,
                },
                alpha: self.alpha,
                beta: self.beta,
                target_ms: self.latency_target,
                seed,
                threads,
                lr,
                ..SearchConfig::default()
            },
            predictor: self.predictor.clone(),
            full: self.search_full,
            baselines: !self.no_baselines,
            random_k: self.random_k,
            checkpoints: dir.to_path_buf(),
            out: out.to_path_buf(),
        })
    }
}

/// Writes `<out>/<stem>.search.csv` (the curves) and `<out>/<stem>.search.json`, and
/// prints θ's choice and, after `emit`, the chosen network beside the baselines.
pub fn print_searched(m: &Module, file: &Path, out: &Path) -> Result<()> {
    let x = m.searched.as_ref().context("nothing was searched")?;
    std::fs::create_dir_all(out)?;
    let stem = stem(file);
    let csv_path = out.join(format!("{stem}.search.csv"));
    let mut w = csv::Writer::from_path(&csv_path)?;
    w.write_record([
        "epoch",
        "warmup",
        "loss",
        "ce",
        "train_accuracy",
        "expected_ms",
        "argmax_ms",
        "temperature",
        "entropy",
        "seconds",
    ])?;
    for e in &x.epochs {
        w.write_record([
            e.epoch.to_string(),
            e.warmup.to_string(),
            e.loss.to_string(),
            e.ce.to_string(),
            e.train_accuracy.to_string(),
            e.expected_ms.to_string(),
            e.argmax_ms.to_string(),
            e.temperature.to_string(),
            e.entropy.to_string(),
            e.seconds.to_string(),
        ])?;
    }
    w.flush()?;
    let json_path = out.join(format!("{stem}.search.json"));
    let json = serde_json::json!({ "searched": x, "chosen": m.chosen });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    println!(
        "search: {} space {} ({} mode, {} table), {} epochs in {:.1} s{}",
        x.on,
        x.space,
        x.mode,
        x.predictor,
        x.epochs.len(),
        x.seconds,
        if x.resumed > 0 {
            format!(" ({} from a checkpoint)", x.resumed)
        } else {
            String::new()
        }
    );
    println!("chosen: {} (predicted {:.3} ms)", x.key, x.predicted_ms);
    if let Some(c) = &m.chosen {
        println!(
            "{:<15} {:>9} {:>12} {:>13} {:>9} {:>9} {:>8}  key",
            "network", "test acc", "measured ms", "predicted ms", "search s", "peak MiB", "train s"
        );
        for o in &c.outcomes {
            let show = |r: &Result<f64, String>, digits: usize| match r {
                Ok(v) => format!("{v:.digits$}"),
                Err(_) => "failed".into(),
            };
            println!(
                "{:<15} {:>9} {:>12} {:>13} {:>9.1} {:>9} {:>8.1}  {}",
                o.name,
                show(&o.test_accuracy, 4),
                show(&o.measured_ms, 3),
                o.predicted_ms.map_or("-".into(), |p| format!("{p:.3}")),
                o.search_seconds,
                o.peak_bytes.map_or("-".into(), |b| format!(
                    "{:.0}",
                    b as f64 / (1u64 << 20) as f64
                )),
                o.train_seconds,
                o.key
            );
        }
        for o in &c.outcomes {
            println!("  {}: {}", o.name, o.detail);
            for r in [&o.test_accuracy, &o.measured_ms] {
                if let Err(e) = r {
                    println!("  {}: {e}", o.name);
                }
            }
        }
        for f in &c.files {
            println!("wrote {f}");
        }
    }
    println!("wrote {}", csv_path.display());
    println!("wrote {}", json_path.display());
    Ok(())
}
