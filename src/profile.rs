//! `spacetune profile`: BBSSP's accuracy profiling. Train SSBN_0 of every space on the data
//! set; fine-tune each SSBN_(i,j) from SSBN_0's weights with only the swapped layer
//! re-initialised; record validation accuracy in the measurement database, so a killed run
//! continues where it stopped.

use anyhow::{bail, Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};
use spacetune::backends::{
    cache::Cache,
    data::{Dataset, Split, FASHION_MNIST_DIR},
    network_hash,
    torch::TchNet,
    train::{self, TrainConfig},
    weights::{transfer, Weights},
};
use spacetune::ir::{DecisionKind, Module, Network, Region, Ssbn};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct ProfileArgs {
    pub file: PathBuf,
    /// fashion-mnist (Debian's files), cifar10:DIR (the binary format), or synthetic
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Training examples used (a seeded subset of the training split)
    #[arg(long, default_value_t = 6000)]
    pub train_subset: usize,
    /// Validation examples, held out of the training split
    #[arg(long, default_value_t = 1000)]
    pub validation: usize,
    /// Epochs of SSBN_0's training
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Epochs of each SSBN's fine-tuning
    #[arg(long, default_value_t = 1)]
    pub finetune_epochs: usize,
    /// Examples each fine-tuning sees (a subset of the training subset)
    #[arg(long, default_value_t = 2000)]
    pub finetune_subset: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Only this space (by name)
    #[arg(long)]
    pub space: Option<String>,
    /// Train and evaluate SSBN_0 only (e.g. to see how much the seed moves its accuracy)
    #[arg(long)]
    pub base_only: bool,
    #[arg(long, default_value = ".spacetune/measurements.db")]
    pub db: PathBuf,
    #[arg(long, default_value = "spacetune-out")]
    pub out: PathBuf,
}

fn load_data(spec: &str, split: Split, seed: u64) -> Result<Dataset> {
    Ok(match spec {
        "fashion-mnist" => Dataset::fashion_mnist(Path::new(FASHION_MNIST_DIR), split)?,
        "synthetic" => Dataset::synthetic(
            if split == Split::Train { 4000 } else { 1000 },
            spacetune::ir::Shape::new(1, 28, 28),
            10,
            seed ^ (split == Split::Test) as u64,
        ),
        other => match other.strip_prefix("cifar10:") {
            Some(dir) => Dataset::cifar10(Path::new(dir), split)?,
            None => bail!("unknown data set `{other}` (fashion-mnist, cifar10:DIR or synthetic)"),
        },
    })
}

/// The region a decision's swapped block lives in: layer i for layer decisions; named
/// choices span many places, so nothing is re-initialised for them.
fn fresh_region(m: &Module, net: &Network) -> Option<Region> {
    let Ssbn::Swap { decision, .. } = net.ssbn else {
        return None;
    };
    let info = &m.checked[net.space as usize];
    let d = &info.decisions[spacetune::ir::Handle::new(decision as usize)];
    match d.kind {
        DecisionKind::Layer(i) => Some(Region::Layer(i)),
        DecisionKind::Named => None,
    }
}

pub fn profile(m: &Module, args: &ProfileArgs) -> Result<()> {
    let cache = Cache::open(&args.db)
        .with_context(|| format!("opening the measurement database {}", args.db.display()))?;
    let full = load_data(&args.dataset, Split::Train, args.seed)?;
    let pool = full.subset(args.train_subset + args.validation, args.seed);
    let (train_raw, val_raw) = pool.split(args.validation, args.seed ^ 1);
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
        threads: args.threads,
        ..TrainConfig::default()
    };
    let finetune = TrainConfig {
        epochs: args.finetune_epochs,
        ..cfg.clone()
    };
    // Everything that changes an accuracy is in the task key.
    let task = serde_json::json!({
        "dataset": args.dataset, "train_subset": args.train_subset,
        "validation": args.validation, "train": cfg, "finetune": finetune,
        "finetune_subset": args.finetune_subset,
    })
    .to_string();
    let task_id: String = Sha256::digest(task.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ckpt_dir = args.db.with_file_name(format!("checkpoints-{task_id}"));
    std::fs::create_dir_all(&ckpt_dir)?;
    println!(
        "profile: {} ({} train, {} validation; SSBN_0 {} epochs, fine-tune {} epoch(s) on {}; batch {}, lr {}, seed {}, {} threads)",
        args.dataset, train_raw.len(), val_raw.len(), cfg.epochs, finetune.epochs,
        args.finetune_subset, cfg.batch, cfg.lr, cfg.seed, cfg.threads
    );
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut reused = 0;
    for (s, info) in m.checked.iter().enumerate() {
        if args.space.as_deref().is_some_and(|n| n != info.name) {
            continue;
        }
        let nets: Vec<&Network> = m
            .networks
            .iter()
            .filter(|n| n.space as usize == s && (!args.base_only || n.ssbn == Ssbn::Base))
            .collect();
        let Some(base) = nets.iter().find(|n| n.ssbn == Ssbn::Base) else {
            continue;
        };
        let base_graph = base.graph.pruned();
        let input = base_graph.shapes[0];
        let (train_set, note) = train_raw.adapt(input)?;
        let (val, _) = val_raw.adapt(input)?;
        if let Some(note) = note {
            println!("space {}: {note}", info.name);
        }
        let tune_set = train_set.subset(args.finetune_subset, args.seed ^ 2);
        let bar = crate::measure::progress_bar(nets.len(), format!("profile {}", info.name));

        // SSBN_0: trained once; its checkpoint is what every fine-tuning starts from.
        let base_hash = network_hash(&base_graph, 1);
        let ckpt = ckpt_dir.join(format!("{base_hash}.safetensors"));
        let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let net0 = TchNet::new(
            &vs.root(),
            &base_graph,
            &Weights::random(&base_graph, args.seed),
        )?;
        if ckpt.exists() {
            train::load(&mut vs, &ckpt)?;
        } else {
            bar.set_message(format!("training {}", base.id));
            train::train(&net0, &vs, &train_set, &cfg, |_, _, _| {})?;
            train::save(&vs, &ckpt)?;
        }
        let base_weights = net0.weights();
        for net in &nets {
            let graph = net.graph.pruned();
            let hash = network_hash(&graph, 1);
            let t = Instant::now();
            let acc = match cache.accuracy(&task, &hash)? {
                Some(a) => {
                    reused += 1;
                    a
                }
                None => {
                    bar.set_message(net.id.clone());
                    let acc = if net.ssbn == Ssbn::Base {
                        train::accuracy(&net0, &val, 256)?
                    } else {
                        let init = Weights::random(&graph, args.seed ^ 3);
                        let (w, _) = transfer(
                            &base_graph,
                            &base_weights,
                            &graph,
                            &init,
                            fresh_region(m, net),
                        );
                        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
                        let tuned = TchNet::new(&vs.root(), &graph, &w)?;
                        train::train(&tuned, &vs, &tune_set, &finetune, |_, _, _| {})?;
                        train::accuracy(&tuned, &val, 256)?
                    };
                    cache.put_accuracy(
                        &task,
                        &hash,
                        &net.id,
                        &net.key,
                        acc,
                        t.elapsed().as_secs_f64(),
                    )?;
                    acc
                }
            };
            bar.inc(1);
            rows.push((info.name.clone(), net.id.clone(), net.key.clone(), acc));
        }
        bar.finish_and_clear();
    }
    write(&args.out, &args.file, &rows)?;
    summarise(&rows, start.elapsed().as_secs_f64());
    println!(
        "{} networks: {} profiled now, {reused} from the database",
        rows.len(),
        rows.len() - reused
    );
    Ok(())
}

fn write(out: &Path, file: &Path, rows: &[(String, String, String, f64)]) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let stem = crate::measure::stem(file);
    let path = out.join(format!("{stem}.accuracy.csv"));
    let mut w = csv::Writer::from_path(&path)?;
    w.write_record(["space", "id", "key", "accuracy"])?;
    for (s, id, key, acc) in rows {
        w.write_record([s.as_str(), id, key, &format!("{acc:.4}")])?;
    }
    w.flush()?;
    println!("wrote {}", path.display());
    Ok(())
}

fn summarise(rows: &[(String, String, String, f64)], seconds: f64) {
    let mut spaces: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
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
    println!("profiled in {seconds:.1} s");
}
