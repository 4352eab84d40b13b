//! `profile`: an accuracy for every SSBN. BBSSP's way: train SSBN_0 of every space on the
//! data set, fine-tune each SSBN_(i,j) from SSBN_0's weights with only the swapped layer
//! re-initialised, and record validation accuracy in the store as each is made, so a
//! killed run continues where it stopped. Or read them from a table (a tabular benchmark).

use crate::ctx::{outside, AccuracyFrom, Ctx, Method, Stage, TrainSpec};
use crate::pass::Pass;
use crate::work::{Queue, Worker};
use spacetune_backends::{
    data::{Dataset, Split, FASHION_MNIST_DIR},
    network_hash,
    store::{digest, worker_name, Accuracy, Store},
    torch::TchNet,
    train::{self, TrainConfig},
    weights::{transfer, Fresh, Weights},
};
use spacetune_ir::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

pub struct Profile;

impl Pass for Profile {
    fn name(&self) -> &'static str {
        "profile"
    }
    fn is_pure(&self) -> bool {
        false
    }
    fn run(&self, m: &mut Module, cx: &Ctx<'_>) -> Result<(), Diagnostics> {
        assert!(m.phase >= Phase::Expanded, "profile runs after expand");
        let table = match &cx.accuracy {
            None => {
                return Err(Diagnostic::error(
                    "the `profile` pass needs accuracies: a data set to train on (--dataset) \
                     or a table of them (--accuracy CSV)"
                        .to_string(),
                )
                .into())
            }
            Some(AccuracyFrom::Table(path)) => from_table(m, cx, path)?,
            Some(AccuracyFrom::Train(spec)) => accuracies(m, cx, spec)?,
        };
        m.accuracies = Some(table);
        m.advance(Phase::Profiled);
        Ok(())
    }
}

/// The accuracies `spec` gives the SSBNs of the spaces `cx` works on (the ones in the store
/// served from it, the others made and stored as they are made).
pub fn accuracies(
    m: &Module,
    cx: &Ctx<'_>,
    spec: &TrainSpec,
) -> Result<AccuracyTable, Diagnostics> {
    let store = cx.store("profile")?;
    train_all(m, cx, spec, store).map_err(|e| outside("profiling", e))
}

/// How long the store says each network of `table` took to profile, summed, and how many
/// networks there were.
pub fn seconds(
    m: &Module,
    cx: &Ctx<'_>,
    table: &AccuracyTable,
) -> Result<(f64, usize), Diagnostics> {
    let store = cx.store("profile")?;
    let task = match &table.source {
        AccuracySource::Profile { task, .. }
        | AccuracySource::Scratch { task, .. }
        | AccuracySource::Proxy { task, .. } => task,
        AccuracySource::Table { .. } => return Ok((0.0, table.results.len())),
    };
    let mut total = 0.0;
    for &h in table.results.keys() {
        let hash = network_hash(&m.networks[h].graph.pruned(), 1);
        total += store
            .accuracy_seconds(task, &hash)
            .map_err(|e| outside("reading the store", e))?
            .unwrap_or(0.0);
    }
    Ok((total, table.results.len()))
}

/// Everything that changes an accuracy, as the store's training key, and its short id.
fn task(spec: &TrainSpec) -> (String, String, TrainConfig, TrainConfig) {
    let cfg = TrainConfig {
        epochs: spec.epochs,
        batch: spec.batch,
        lr: spec.lr,
        seed: spec.seed,
        threads: spec.threads,
        ..TrainConfig::default()
    };
    let finetune = TrainConfig {
        epochs: spec.finetune_epochs,
        lr: spec.finetune_lr.unwrap_or(spec.lr),
        ..cfg.clone()
    };
    let task = match spec.method {
        Method::Finetune => {
            let mut key = serde_json::json!({
                "dataset": spec.dataset, "train_subset": spec.train_subset,
                "validation": spec.validation, "train": cfg, "finetune": finetune,
                "finetune_subset": spec.finetune_subset,
                // Weights carried by place in the IR (region, cell edge, op kind, position):
                // accuracies fine-tuned under an older matching are not served.
                "transfer": "place-kind",
            });
            // Only when asked for, so the profiles without it keep their stored figures.
            if spec.recalibrate_bn {
                key["bn_stats"] = spec.bn_stats().into();
            }
            key
        }
        // The same data and validation images as fine-tuning, so the two are comparable.
        Method::Scratch => serde_json::json!({
            "dataset": spec.dataset, "train_subset": spec.train_subset,
            "validation": spec.validation, "train": cfg, "from": "scratch",
        }),
        // NASWOT reads one batch of the training subset; SynFlow reads no data.
        Method::Proxy(p) => serde_json::json!({
            "proxy": p.name(), "init_seed": spec.seed,
            "data": p.reads_data().then(|| serde_json::json!({
                "dataset": spec.dataset, "train_subset": spec.train_subset,
                "validation": spec.validation, "batch": spec.batch,
            })),
        }),
    }
    .to_string();
    let id = digest(task.as_bytes());
    (task, id, cfg, finetune)
}

/// The training and validation images of `spec`, after every check that can fail before
/// training: the spec's own sizes, the data set readable, and large enough for them.
pub fn preflight(spec: &TrainSpec) -> Result<(Dataset, Dataset), String> {
    spec.check()?;
    let full = load_data(&spec.dataset, Split::Train, spec.seed)?;
    let wanted = spec.train_subset + spec.validation;
    if full.len() < wanted {
        return Err(format!(
            "{} has {} training images; --train-subset {} + --validation {} needs {wanted}",
            full.name,
            full.len(),
            spec.train_subset,
            spec.validation
        ));
    }
    let pool = full.subset(wanted, spec.seed);
    Ok(pool.split(spec.validation, spec.seed ^ 1))
}

/// The data set called `spec` (fashion-mnist, cifar10:DIR or synthetic).
pub fn load_data(spec: &str, split: Split, seed: u64) -> Result<Dataset, String> {
    let e = |e: spacetune_backends::BackendError| e.to_string();
    Ok(match spec {
        "fashion-mnist" => {
            Dataset::fashion_mnist(Path::new(FASHION_MNIST_DIR), split).map_err(e)?
        }
        "synthetic" => Dataset::synthetic(
            if split == Split::Train { 4000 } else { 1000 },
            Shape::new(1, 28, 28),
            10,
            seed ^ (split == Split::Test) as u64,
        ),
        other => match other.strip_prefix("cifar10:") {
            Some(dir) => Dataset::cifar10(Path::new(dir), split).map_err(e)?,
            None => {
                return Err(format!(
                    "unknown data set `{other}` (fashion-mnist, cifar10:DIR or synthetic)"
                ))
            }
        },
    })
}

/// What fine-tuning `net` re-initialises: the swapped decision's ops — its layer, or every
/// cell edge its tied choice fills (a value choice changes shapes, not a place: nothing).
pub fn fresh(m: &Module, net: &Network) -> Fresh {
    let Origin::Swap { decision, .. } = net.origin else {
        return Fresh::Nothing;
    };
    let d = &m.checked[net.space as usize].decisions[decision];
    match d.kind {
        DecisionKind::Layer(i) => Fresh::Region(Region::Layer(i)),
        DecisionKind::Named => Fresh::CellEdges(crate::skeleton::choice_edges(m, &d.name)),
    }
}

type Failure = Box<dyn std::error::Error>;

fn train_all(
    m: &Module,
    cx: &Ctx<'_>,
    spec: &TrainSpec,
    store: &dyn Store,
) -> Result<AccuracyTable, Failure> {
    let (task, task_id, cfg, finetune) = task(spec);
    // SSBN_0's training depends on none of the fine-tuning's settings, so profiles that
    // differ only there (e.g. --recompute-bn-stats) share one trained SSBN_0.
    let base_id = digest(
        serde_json::json!({
            "dataset": spec.dataset, "train_subset": spec.train_subset,
            "validation": spec.validation, "train": cfg, "ssbn_0": true,
        })
        .to_string()
        .as_bytes(),
    );
    let (train_raw, val_raw) = preflight(spec)?;
    cx.progress.note(&format!(
        "profile ({}): {} ({} train, {} validation; SSBN_0 {} epochs at lr {}, fine-tune {} epoch(s) on {} at lr {}, batch-norm statistics {}; batch {}, seed {}, {} threads)",
        spec.method.name(), spec.dataset, train_raw.len(), val_raw.len(), cfg.epochs, cfg.lr,
        finetune.epochs, spec.finetune_subset, finetune.lr,
        spec.bn_stats(),
        cfg.batch, cfg.seed, cfg.threads
    ));
    let run = Run {
        m,
        cx,
        spec,
        worker: Worker {
            store,
            name: worker_name(),
            lease: spec.lease,
            others: match cx.sharing {
                Some(s) => s.begin()?,
                None => None,
            },
        },
        ckpt_dir: spec.checkpoints.join(format!("checkpoints-{base_id}")),
        base_id,
        task,
        task_id,
        cfg,
        finetune,
    };
    let mut results = BTreeMap::new();
    let mut notes = Vec::new();
    for s in cx.spaces(m)? {
        run.space(s, (&train_raw, &val_raw), &mut results, &mut notes)?;
    }
    let Run { task, task_id, .. } = run;
    Ok(table(spec.method, task, task_id, results, notes))
}

/// What profiling every space shares: the module, the spec and its training key, and this
/// worker of the run.
struct Run<'a, 'c> {
    m: &'a Module,
    cx: &'a Ctx<'c>,
    spec: &'a TrainSpec,
    worker: Worker<'a>,
    task: String,
    task_id: String,
    /// The key of SSBN_0's training alone.
    base_id: String,
    cfg: TrainConfig,
    finetune: TrainConfig,
    ckpt_dir: std::path::PathBuf,
}

impl Run<'_, '_> {
    /// Profiles the networks of space `s` (SSBN_0 trained first, for fine-tuning) into
    /// `results`; what the user should hear of goes to `notes` too.
    fn space(
        &self,
        s: u32,
        (train_raw, val_raw): (&Dataset, &Dataset),
        results: &mut BTreeMap<Handle<Network>, Trained>,
        notes: &mut Vec<String>,
    ) -> Result<(), Failure> {
        let (m, cx, spec) = (self.m, self.cx, self.spec);
        let info = &m.checked[s as usize];
        let sampled = spec
            .sample
            .map(|(n, seed)| crate::fidelity::sample(m, s, n, seed));
        let nets: Vec<(Handle<Network>, &Network)> = m
            .networks_of(s)
            .filter(|(_, n)| !spec.base_only || n.origin == Origin::Base)
            .filter(|(h, _)| sampled.as_ref().is_none_or(|k| k.contains(h)))
            .collect();
        let Some(&(_, base)) = nets.iter().find(|(_, n)| n.origin == Origin::Base) else {
            return Ok(());
        };
        let base_graph = base.graph.pruned();
        let input = base_graph.shapes[0];
        let (train_set, note) = train_raw.adapt(input)?;
        let (val, _) = val_raw.adapt(input)?;
        if let Some(note) = note {
            let note = format!("space {}: {note}", info.name);
            cx.progress.note(&note);
            notes.push(note);
        }
        let data = Data {
            tune: train_set.subset(spec.finetune_subset, spec.seed ^ 2),
            train: train_set,
            val,
        };
        let stage = cx
            .progress
            .stage(&format!("profile {}", info.name), nets.len());
        // SSBN_0 is trained once, and only for fine-tuning: its checkpoint is what every
        // fine-tuning starts from, kept in the store for every worker.
        let net0 = match spec.method {
            Method::Finetune => {
                let at = Checkpoint {
                    dir: &self.ckpt_dir,
                    base_id: &self.base_id,
                };
                Some(trained_base(
                    &self.worker,
                    &at,
                    base,
                    &base_graph,
                    &data,
                    &self.cfg,
                    spec.seed,
                    &*stage,
                )?)
            }
            _ => None,
        };
        let base = net0.as_ref().map(|(_, net)| Base {
            graph: &base_graph,
            weights: net.weights(),
            net,
        });
        let measure = |net: &Network| {
            let configs = (&self.cfg, &self.finetune);
            accuracy_of(m, cx, net, base.as_ref(), &data, spec, configs)
        };
        self.queue(&info.name, &nets, &*stage, measure, results, notes)
    }

    /// Works with the run's other workers through space `space`'s queue of `nets` (each
    /// network once, by its store key) until every one has an accuracy in the store, then
    /// reads them all into `results`.
    fn queue(
        &self,
        space: &str,
        nets: &[(Handle<Network>, &Network)],
        stage: &dyn Stage,
        measure: impl Fn(&Network) -> Result<f64, Failure>,
        results: &mut BTreeMap<Handle<Network>, Trained>,
        notes: &mut Vec<String>,
    ) -> Result<(), Failure> {
        let store = self.worker.store;
        let task = &self.task;
        // Each network's store key, once (pruning and hashing a graph is not free).
        let hashes: Vec<String> = nets
            .iter()
            .map(|(_, n)| network_hash(&n.graph.pruned(), 1))
            .collect();
        let by_hash: BTreeMap<String, &Network> = hashes
            .iter()
            .cloned()
            .zip(nets.iter().map(|&(_, n)| n))
            .collect();
        // In the space's order (SSBN_0 first), each network once.
        let mut items: Vec<String> = Vec::new();
        for hash in &hashes {
            if !items.contains(hash) {
                items.push(hash.clone());
            }
        }
        let mut stored_before = 0;
        for hash in &items {
            stored_before += usize::from(store.accuracy(task, hash)?.is_some());
        }
        let queue = format!(
            "accuracy/{}/{space}/{}",
            self.task_id,
            digest(items.join(",").as_bytes())
        );
        // Profiled by this worker (the rest were stored before, or by others).
        let mut made = BTreeSet::new();
        let label = |hash: &str| by_hash[hash].id.clone();
        let q = Queue {
            name: &queue,
            items: &items,
            stage,
            ticks: Some(&label),
        };
        self.worker.run(&q, |hash| {
            let net = by_hash[hash];
            if store.accuracy(task, hash)?.is_some() {
                return Ok(());
            }
            stage.working(&net.id);
            let t = std::time::Instant::now();
            let accuracy = measure(net)?;
            store.put_accuracy(&Accuracy {
                task,
                hash,
                id: &net.id,
                key: &net.key,
                accuracy,
                seconds: t.elapsed().as_secs_f64(),
            })?;
            made.insert(hash.to_string());
            Ok(())
        })?;
        for (&(h, net), hash) in nets.iter().zip(&hashes) {
            let accuracy = store.accuracy(task, hash)?.ok_or_else(|| {
                format!(
                    "the queue {queue} is done but the store has no accuracy for {}",
                    net.id
                )
            })?;
            let cached = !made.contains(hash);
            results.insert(h, Trained { accuracy, cached });
        }
        let by_others = items.len().saturating_sub(made.len() + stored_before);
        if by_others > 0 {
            let note = format!(
                "space {space}: {by_others} of {} networks profiled by other workers of this run (queue {queue})",
                items.len()
            );
            self.cx.progress.note(&note);
            notes.push(note);
        }
        Ok(())
    }
}

/// The accuracy table of a profile: a proxy's scores become percentile ranks (its raw
/// scores kept beside), under the source's name and training key.
fn table(
    method: Method,
    task: String,
    task_id: String,
    mut results: BTreeMap<Handle<Network>, Trained>,
    notes: Vec<String>,
) -> AccuracyTable {
    let (source, scores) = match method {
        Method::Finetune => (AccuracySource::Profile { task, task_id }, BTreeMap::new()),
        Method::Scratch => (AccuracySource::Scratch { task, task_id }, BTreeMap::new()),
        Method::Proxy(p) => {
            let scores: BTreeMap<_, _> = results.iter().map(|(&h, t)| (h, t.accuracy)).collect();
            for (h, rank) in crate::fidelity::percentile_ranks(&scores) {
                results
                    .get_mut(&h)
                    .expect("ranked from the results")
                    .accuracy = rank;
            }
            let proxy = p.name().to_string();
            (
                AccuracySource::Proxy {
                    proxy,
                    task,
                    task_id,
                },
                scores,
            )
        }
    };
    AccuracyTable {
        source,
        results,
        notes,
        scores,
    }
}

/// `net`'s accuracy by the spec's method (`configs`: SSBN_0's training, fine-tuning).
fn accuracy_of(
    m: &Module,
    cx: &Ctx<'_>,
    net: &Network,
    base: Option<&Base<'_>>,
    data: &Data,
    spec: &TrainSpec,
    (cfg, finetune): (&TrainConfig, &TrainConfig),
) -> Result<f64, Failure> {
    let graph = net.graph.pruned();
    Ok(match (spec.method, base) {
        (Method::Finetune, Some(base)) => {
            let (accuracy, warning) = one(m, net, &graph, base, data, finetune, spec)?;
            if let Some(w) = warning {
                cx.progress.note(&w);
            }
            accuracy
        }
        (Method::Proxy(p), _) => {
            let init = Weights::random(&graph, spec.seed);
            p.score(&graph, &init, &data.train, spec.batch, spec.seed)?
        }
        _ => scratch(&graph, data, cfg, spec.seed)?,
    })
}

/// Where SSBN_0's checkpoints go: a folder on this machine, and the store under the key of
/// SSBN_0's own training.
struct Checkpoint<'a> {
    dir: &'a Path,
    base_id: &'a str,
}

/// SSBN_0 as trained: by this worker, or by another (its checkpoint from the store). Its
/// own queue of one, so it is trained once however many workers start at once.
#[allow(clippy::too_many_arguments)]
fn trained_base(
    worker: &Worker<'_>,
    at: &Checkpoint<'_>,
    base: &Network,
    graph: &Graph,
    data: &Data,
    cfg: &TrainConfig,
    seed: u64,
    stage: &dyn Stage,
) -> Result<(tch::nn::VarStore, TchNet), Failure> {
    let store = worker.store;
    let hash = network_hash(graph, 1);
    let blob = format!("checkpoint/{}/{hash}", at.base_id);
    let ckpt = at.dir.join(format!("{hash}.safetensors"));
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), graph, &Weights::random(graph, seed))?;
    let queue = Queue {
        name: &format!("{blob}/train"),
        items: &[hash],
        stage,
        ticks: None,
    };
    worker.run(&queue, |_| {
        if store.blob(&blob)?.is_some() {
            return Ok(());
        }
        // Trained by an earlier version, which kept it only on disk.
        if ckpt.exists() {
            return Ok(store.put_blob(&blob, &std::fs::read(&ckpt)?)?);
        }
        stage.working(&format!("training {}", base.id));
        train::train(&net, &vs, &data.train, cfg, |_, _, _| {})?;
        std::fs::create_dir_all(at.dir)?;
        train::save(&vs, &ckpt)?;
        store.put_blob(&blob, &std::fs::read(&ckpt)?)?;
        Ok(())
    })?;
    if !ckpt.exists() {
        let bytes = store
            .blob(&blob)?
            .ok_or_else(|| format!("SSBN_0's checkpoint {blob} is missing from the store"))?;
        // Written aside and renamed: another worker may be reading it already.
        std::fs::create_dir_all(at.dir)?;
        let aside = ckpt.with_extension(format!("{}.part", std::process::id()));
        std::fs::write(&aside, bytes)?;
        std::fs::rename(&aside, &ckpt)?;
    }
    train::load(&mut vs, &ckpt)?;
    Ok((vs, net))
}

/// An SSBN trained from SSBN_0's initialisation seed on SSBN_0's budget, evaluated.
fn scratch(graph: &Graph, data: &Data, cfg: &TrainConfig, seed: u64) -> Result<f64, Failure> {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), graph, &Weights::random(graph, seed))?;
    train::train(&net, &vs, &data.train, cfg, |_, _, _| {})?;
    Ok(train::accuracy(&net, &data.val, 256)?)
}

struct Data {
    train: Dataset,
    tune: Dataset,
    val: Dataset,
}

/// SSBN_0 of a space, trained.
struct Base<'a> {
    graph: &'a Graph,
    weights: Weights,
    net: &'a TchNet,
}

/// One SSBN's accuracy: SSBN_0 evaluated as trained, any other fine-tuned from it; and a
/// warning when a layer or cell-edge swap left tensors outside the swapped decision without
/// SSBN_0's weights (the networks' places did not line up).
fn one(
    m: &Module,
    net: &Network,
    graph: &Graph,
    base: &Base<'_>,
    data: &Data,
    finetune: &TrainConfig,
    spec: &TrainSpec,
) -> Result<(f64, Option<String>), Failure> {
    if net.origin == Origin::Base {
        return Ok((train::accuracy(base.net, &data.val, 256)?, None));
    }
    let init = Weights::random(graph, spec.seed ^ 3);
    let fresh = fresh(m, net);
    let (w, done) = transfer(base.graph, &base.weights, graph, &init, &fresh);
    // A value choice changes shapes everywhere: tensors without a counterpart are expected.
    let placed =
        matches!(fresh, Fresh::Region(_)) || matches!(&fresh, Fresh::CellEdges(e) if !e.is_empty());
    let warning = (placed && done.unmatched > 0).then(|| {
        format!(
            "profile: fine-tuning {}: {} tensors outside the swapped decision have no counterpart in SSBN_0 and start from random ({} carried over)",
            net.id, done.unmatched, done.tensors
        )
    });
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut tuned = TchNet::new(&vs.root(), graph, &w)?;
    train::train(&tuned, &vs, &data.tune, finetune, |_, _, _| {})?;
    if spec.recalibrate_bn {
        train::recalibrate_batch_norm(&mut tuned, &data.tune, finetune.batch)?;
    }
    Ok((train::accuracy(&tuned, &data.val, 256)?, warning))
}

/// Accuracies from a CSV with `key` and `accuracy` columns, and optionally `space` (keys
/// of different spaces may coincide); every SSBN of the spaces worked on must be in it.
fn from_table(m: &Module, cx: &Ctx<'_>, path: &Path) -> Result<AccuracyTable, Diagnostics> {
    let rows = read_table(path).map_err(|e| Diagnostics::from(Diagnostic::error(e)))?;
    let mut results = BTreeMap::new();
    for s in cx.spaces(m)? {
        let space = &m.checked[s as usize].name;
        for (h, n) in m.networks_of(s) {
            let accuracy = rows
                .get(&(Some(space.clone()), n.key.clone()))
                .or_else(|| rows.get(&(None, n.key.clone())))
                .ok_or_else(|| {
                    Diagnostic::error(format!(
                        "{} has no accuracy for {} (space `{space}`, key `{}`)",
                        path.display(),
                        n.id,
                        n.key
                    ))
                })?;
            results.insert(
                h,
                Trained {
                    accuracy: *accuracy,
                    cached: true,
                },
            );
        }
    }
    Ok(AccuracyTable {
        source: AccuracySource::Table {
            path: path.display().to_string(),
        },
        results,
        notes: Vec::new(),
        scores: BTreeMap::new(),
    })
}

type TableRows = HashMap<(Option<String>, String), f64>;

/// `(space, key) → accuracy` (space `None` when the table has no `space` column).
pub fn read_table(path: &Path) -> Result<TableRows, String> {
    let at = |line: usize| format!("{}:{line}", path.display());
    let mut r = csv::Reader::from_path(path)
        .map_err(|e| format!("reading accuracies from {}: {e}", path.display()))?;
    let headers = r.headers().map_err(|e| format!("{}: {e}", at(1)))?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(k), Some(a)) = (col("key"), col("accuracy")) else {
        return Err(format!(
            "{}: the table needs `key` and `accuracy` columns (it has: {})",
            at(1),
            headers.iter().collect::<Vec<_>>().join(", ")
        ));
    };
    let space = col("space");
    let mut out = HashMap::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| format!("{}: {e}", at(line + 2)))?;
        let field = |i: usize| rec.get(i).unwrap_or("").trim();
        let acc: f64 = field(a)
            .parse()
            .map_err(|_| format!("{}: accuracy `{}` is not a number", at(line + 2), field(a)))?;
        if !(0.0..=1.0).contains(&acc) {
            return Err(format!("{}: accuracy {acc} is not in [0, 1]", at(line + 2)));
        }
        out.insert(
            (space.map(|i| field(i).to_string()), field(k).to_string()),
            acc,
        );
    }
    Ok(out)
}
