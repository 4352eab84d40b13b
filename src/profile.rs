//! `spacetune profile`: the pipeline up to the `profile` pass (BBSSP's accuracy
//! profiling), then the accuracies as a CSV and a per-space summary.

use crate::measure::{stem, BackendArgs, World};
use crate::workers;
use anyhow::{Context, Result};
use clap::Args;
use spacetune::backends::proxy::Proxy;
use spacetune::ir::Module;
use spacetune::pass::ctx::{AccuracyFrom, Budget, Method, TrainSpec};
use spacetune::pass::fidelity::Report;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Peak learning rate of each fine-tuning [default: --lr]
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// Re-estimate every batch norm's statistics from the fine-tuning images before scoring
    /// a fine-tuned SSBN, instead of the moving averages fine-tuning left (plain BBSSP):
    /// after a few steps a fresh layer's statistics are still near their initial (0, 1)
    #[arg(long)]
    pub recompute_bn_stats: bool,
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
    /// Seconds a worker's claim on a network lasts without its heartbeat: a killed
    /// worker's network goes to another worker after this
    #[arg(long, default_value_t = 60.0)]
    pub lease: f64,
    /// How each SSBN gets its accuracy: finetune (BBSSP: from SSBN_0's weights), scratch
    /// (trained from random initialisation on SSBN_0's budget), or a zero-cost proxy at
    /// initialisation, synflow or naswot (seconds per SSBN; ranks, not accuracies)
    #[arg(long, default_value = "finetune")]
    pub accuracy_source: String,
}

impl TrainArgs {
    /// The budget named by `--budget`.
    pub fn budget(&self) -> Result<Budget> {
        Budget::named(&self.budget)
            .with_context(|| format!("unknown budget `{}` (tiny, small, full)", self.budget))
    }

    /// The accuracy source named by `--accuracy-source`.
    pub fn method(&self) -> Result<Method> {
        Method::named(&self.accuracy_source).with_context(|| {
            format!(
                "unknown accuracy source `{}` ({})",
                self.accuracy_source,
                Method::NAMES
            )
        })
    }

    /// The training spec, with SSBN_0 checkpoints in `dir`; its sizes checked, not yet the
    /// data.
    pub fn spec(&self, dir: &Path) -> Result<TrainSpec> {
        let p = self.budget()?.profile;
        let spec = TrainSpec {
            dataset: self.dataset.clone(),
            train_subset: self.train_subset.unwrap_or(p.train_subset),
            validation: self.validation.unwrap_or(p.validation),
            epochs: self.epochs.unwrap_or(p.epochs),
            finetune_epochs: self.finetune_epochs,
            finetune_subset: self.finetune_subset.unwrap_or(p.finetune_subset),
            finetune_lr: self.finetune_lr,
            recalibrate_bn: self.recompute_bn_stats,
            batch: self.batch,
            lr: self.lr,
            seed: self.seed,
            threads: self.threads,
            base_only: self.base_only,
            lease: std::time::Duration::try_from_secs_f64(self.lease)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow::anyhow!("--lease {} is not a positive number of seconds", self.lease)
                })?,
            checkpoints: dir.to_path_buf(),
            method: self.method()?,
            sample: None,
        };
        spec.check().map_err(anyhow::Error::msg)?;
        Ok(spec)
    }
}

/// Checks `spec` and its data set before anything is measured or trained.
pub fn preflight(spec: &TrainSpec) -> Result<()> {
    spacetune::pass::profile::preflight(spec)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("profile: {e}"))
}

#[derive(Args)]
pub struct ProfileArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub train: TrainArgs,
    /// Where latencies come from (the pipeline measures before it profiles)
    #[command(flatten)]
    pub on: BackendArgs,
    /// Train every SSBN from random initialisation (the ground truth of `profile-eval`);
    /// the same as `--accuracy-source scratch`
    #[arg(long, conflicts_with = "proxy")]
    pub from_scratch: bool,
    /// A zero-cost proxy instead of training (synflow, naswot); the same as
    /// `--accuracy-source NAME`
    #[arg(long)]
    pub proxy: Option<String>,
    /// Only SSBN_0 and this many other SSBNs of each space, stratified over its decisions
    /// (seeded by --seed); selection needs every SSBN, so `select` cannot use the result
    #[arg(long)]
    pub sample: Option<usize>,
    /// Only this space (by name)
    #[arg(long)]
    pub space: Option<String>,
    #[arg(long, default_value = "spacetune-out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub sharing: crate::workers::SharingArgs,
}

impl ProfileArgs {
    /// The training spec with `--from-scratch`, `--proxy` and `--sample` applied.
    pub fn spec(&self) -> Result<TrainSpec> {
        let mut spec = self.train.spec(&self.on.local_dir())?;
        let alias = match (&self.proxy, self.from_scratch) {
            (Some(p), _) => Some(
                Method::named(p)
                    .filter(|m| matches!(m, Method::Proxy(_)))
                    .with_context(|| format!("unknown proxy `{p}` (synflow, naswot)"))?,
            ),
            (None, true) => Some(Method::Scratch),
            (None, false) => None,
        };
        if let Some(method) = alias {
            if self.train.accuracy_source != "finetune" && method != spec.method {
                anyhow::bail!(
                    "--accuracy-source {} contradicts --{}",
                    self.train.accuracy_source,
                    if self.from_scratch {
                        "from-scratch"
                    } else {
                        "proxy"
                    }
                );
            }
            spec.method = method;
        }
        spec.sample = self.sample.map(|n| (n, self.train.seed));
        spec.check().map_err(anyhow::Error::msg)?;
        preflight(&spec)?;
        Ok(spec)
    }
}

/// `spacetune profile`: the profile pass (shared with workers when asked), then the
/// table; with `--worker-only`, this process is one of the workers.
pub fn command(args: &ProfileArgs, dump: Option<&str>) -> Result<ExitCode> {
    let world = World::open(&args.on)?;
    let mut cx = world.ctx();
    cx.space = args.space.clone();
    cx.accuracy = Some(AccuracyFrom::Train(args.spec()?));
    if args.sharing.worker_only {
        let Some(m) = crate::load_with(&args.file, Some("expand"), dump, None)? else {
            return Ok(ExitCode::FAILURE);
        };
        workers::profile_only(&m, &cx, &args.spec()?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let start = std::time::Instant::now();
    let helpers = workers::Lazy::new(&args.sharing, world.store.as_ref(), &args.on, &args.file);
    cx.sharing = Some(&helpers);
    let loaded = crate::load_with(&args.file, Some("profile"), dump, Some(cx));
    helpers.join();
    let Some(m) = loaded? else {
        return Ok(ExitCode::FAILURE);
    };
    let seconds = start.elapsed().as_secs_f64();
    print_profiled(&m, &args.file, &args.out, Some(seconds))?;
    Ok(ExitCode::SUCCESS)
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
    let path = out.join(format!(
        "{}.{}.csv",
        stem(file),
        Method::of(&table.source).csv_stem()
    ));
    let mut w = csv::Writer::from_path(&path)?;
    let mut header = vec!["space", "id", "key", "accuracy"];
    if !table.scores.is_empty() {
        header.push("score");
    }
    w.write_record(&header)?;
    for (h, (s, id, key, acc)) in table.results.keys().zip(&rows) {
        // In full (the shortest text that reads back as the same number): `select
        // --accuracy` must rank exactly what the profile measured.
        let mut record = vec![
            s.to_string(),
            id.to_string(),
            key.to_string(),
            acc.to_string(),
        ];
        if let Some(score) = table.scores.get(h) {
            record.push(score.to_string());
        }
        w.write_record(&record)?;
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

#[derive(Args)]
pub struct EvalArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub train: TrainArgs,
    /// Where the store is (the pipeline stops at `expand`; nothing is timed)
    #[command(flatten)]
    pub on: BackendArgs,
    /// SSBNs of each space (besides SSBN_0) trained from scratch, stratified over its
    /// decisions and drawn with --seed
    #[arg(long, default_value_t = 20)]
    pub sample: usize,
    /// Zero-cost proxies scored beside fine-tuning (repeatable)
    #[arg(long = "proxy", default_values_t = ["synflow".to_string(), "naswot".to_string()])]
    pub proxies: Vec<String>,
    /// Only this space (by name)
    #[arg(long)]
    pub space: Option<String>,
    /// Train the ground truth a second time (the next seed, same sample): ranked against
    /// the first it is the noise floor of every tau; the sources are ranked against the two
    /// seeds' mean, and the truth's seed noise is split from the networks' own differences
    /// (doubles the run)
    #[arg(long)]
    pub truth_repeat: bool,
    #[arg(long, default_value = "spacetune-out")]
    pub out: PathBuf,
}

impl EvalArgs {
    pub fn spec(&self) -> Result<(TrainSpec, Vec<Proxy>)> {
        let mut spec = self.train.spec(&self.on.local_dir())?;
        spec.sample = Some((self.sample, self.train.seed));
        spec.check().map_err(anyhow::Error::msg)?;
        preflight(&spec)?;
        let proxies = self
            .proxies
            .iter()
            .map(|p| {
                Proxy::named(p).with_context(|| format!("unknown proxy `{p}` (synflow, naswot)"))
            })
            .collect::<Result<_>>()?;
        Ok((spec, proxies))
    }
}

/// Prints the fidelity table and writes it as JSON.
pub fn print_fidelity(report: &Report, file: &Path, out: &Path) -> Result<()> {
    println!(
        "{:<8} {:<26} {:<20} {:>4} {:>7} {:>17} {:>7} {:>8} {:>5} {:>9}",
        "space", "source", "against", "n", "tau", "tau 95% CI", "rho", "tau/dec", "top3", "s/SSBN"
    );
    for r in &report.rows {
        let f = &r.fidelity;
        println!(
            "{:<8} {:<26} {:<20} {:>4} {:>7.3} {:>17} {:>7.3} {:>8} {:>5} {:>9.2}",
            r.space,
            r.source,
            r.against,
            f.networks,
            f.tau,
            format!("[{:.3}, {:.3}]", f.tau_low, f.tau_high),
            f.rho,
            format!("{:.3}/{}", f.within_tau, f.within_decisions),
            format!("{}/3", f.top3_in_top10),
            r.seconds_per_ssbn
        );
    }
    println!("tau/dec: mean Kendall tau within a decision (its SSBNs with SSBN_0) / decisions with >= 3; top3: the truth's top 3 among the source's top 10");
    for n in &report.truth_noise {
        println!(
            "truth, {}: {} SSBNs at two seeds; spread {:.2} points, seed noise {:.2} per run, \
             the networks' own {:.2}; reliability {:.2} for one run, {:.2} for the mean{}",
            n.space,
            n.networks,
            100.0 * n.spread,
            100.0 * n.seed_noise,
            100.0 * n.between,
            n.reliability,
            n.reliability_mean,
            if n.between == 0.0 {
                " (the seed accounts for every difference: nothing can be shown to rank)"
            } else {
                ""
            }
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("{}.fidelity.json", stem(file)));
    std::fs::write(&path, serde_json::to_string_pretty(report)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
