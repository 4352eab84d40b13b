//! `search`: the gradient search on the reduced space (or, as a baseline, the winning space
//! whole). The supernet is built from the same elaboration as `expand`; the loss reads the
//! `correct` pass's latency table of the original space, option by option; the search
//! checkpoints every epoch under a key of everything that shapes it, so a killed run
//! resumes where it stopped.

use crate::ctx::{outside, Ctx, SearchSpec};
use crate::pass::Pass;
use crate::pricing::Pricing;
use crate::profile::load_data;
use crate::supernet;
use sha2::{Digest, Sha256};
use spacetune_backends::data::{Dataset, Split};
use spacetune_backends::network_hash;
use spacetune_backends::search::{self as engine, LatencyCosts, SearchConfig};
use spacetune_backends::weights::Weights;
use spacetune_ir::*;

pub struct Search;

impl Pass for Search {
    fn name(&self) -> &'static str {
        "search"
    }
    fn is_pure(&self) -> bool {
        false
    }
    fn run(&self, m: &mut Module, cx: &Ctx<'_>) -> Result<(), Diagnostics> {
        assert!(m.phase >= Phase::Reduced, "search runs after reduce");
        let spec = spec(cx, self.name())?;
        let searched = run(m, cx, spec)?;
        m.searched = Some(searched);
        m.advance(Phase::Searched);
        Ok(())
    }
}

pub(crate) fn spec<'c>(cx: &'c Ctx<'_>, pass: &str) -> Result<&'c SearchSpec, Diagnostics> {
    cx.search.as_ref().ok_or_else(|| {
        Diagnostic::error(format!(
            "the `{pass}` pass needs search settings (a data set and a budget: `spacetune search`)"
        ))
        .into()
    })
}

/// The module and space searched, and the index of that space in `m` (for its latency
/// table): the reduced module's only space, or the winning space of `m` itself.
pub fn target(m: &Module, full: bool) -> Result<(&Module, u32, u32), Diagnostics> {
    let selection = m
        .selection
        .as_ref()
        .ok_or_else(|| Diagnostic::error("no selection: `select` has not run".to_string()))?;
    if full {
        return Ok((m, selection.space, selection.space));
    }
    let reduced = m
        .reduced
        .as_deref()
        .ok_or_else(|| Diagnostic::error("no reduced space: `reduce` has not run".to_string()))?;
    Ok((reduced, 0, selection.space))
}

/// The latency of every option of every decision of `info` (the searched space) from the
/// table of the original space: decisions matched by name, options by token.
pub fn costs(
    m: &Module,
    original: u32,
    info: &SpaceInfo,
    predictor: &str,
) -> Result<LatencyCosts, Diagnostics> {
    let lut = m.luts.iter().find(|l| l.space == original).ok_or_else(|| {
        Diagnostic::error(format!(
            "space `{}` has no latency table: `correct` has not run on it",
            m.checked[original as usize].name
        ))
    })?;
    let source = &m.checked[original as usize];
    let fixed = match predictor {
        "corrected" => lut.fixed_ms,
        "naive" => lut.fixed_naive_ms.ok_or_else(|| {
            Diagnostic::error("the naive table has no timing of the fixed parts".to_string())
        })?,
        other => {
            return Err(Diagnostic::error(format!(
                "the search prices architectures by `corrected` or `naive` (tables read option \
                 by option) or `kernel` (the kernel model of the whole network), not `{other}`"
            ))
            .into())
        }
    };
    let mut rows = Vec::new();
    for d in info.decisions.values() {
        let (k, od) = source
            .decisions
            .iter()
            .enumerate()
            .find(|(_, (_, o))| o.name == d.name)
            .map(|(k, (_, o))| (k, o))
            .ok_or_else(|| {
                Diagnostic::error(format!("decision `{}` is not in the table", d.name))
            })?;
        let row = lut
            .rows
            .iter()
            .find(|r| r.decision as usize == k)
            .ok_or_else(|| {
                Diagnostic::error(format!("the latency table has no row for `{}`", d.name))
            })?;
        let mut costs = Vec::new();
        for option in &d.options {
            let j = od
                .options
                .iter()
                .position(|o| o.token == option.token)
                .ok_or_else(|| {
                    Diagnostic::error(format!(
                        "option `{}` of `{}` is not in the table",
                        option.token, d.name
                    ))
                })?;
            let e = &row.options[j];
            costs.push(match predictor {
                "naive" => e.naive_ms.ok_or_else(|| {
                    Diagnostic::error(format!("`{}` was not timed alone", option.token))
                })?,
                _ => e.corrected_ms,
            });
        }
        rows.push(costs);
    }
    Ok(LatencyCosts {
        fixed_ms: fixed,
        rows,
    })
}

/// The data set's training split adapted to the network input, and how it was adapted.
pub fn train_split(spec: &SearchSpec, input: Shape) -> Result<(Dataset, Option<String>), String> {
    load_data(&spec.dataset, Split::Train, spec.config.seed)?
        .adapt(input)
        .map_err(|e| e.to_string())
}

/// The budget's share of the data set's test split, adapted to the network input.
pub fn test_split(spec: &SearchSpec, input: Shape) -> Result<Dataset, String> {
    let (test, _) = load_data(&spec.dataset, Split::Test, spec.config.seed)?
        .adapt(input)
        .map_err(|e| e.to_string())?;
    Ok(test.subset(spec.budget.test_images, spec.config.seed ^ 13))
}

/// Disjoint seeded draws of `weights` and `arch` images from `train` (the search's weight
/// and θ splits).
pub fn splits(train: &Dataset, weights: usize, arch: usize, seed: u64) -> (Dataset, Dataset) {
    let pool = train.subset(weights + arch, seed ^ 11);
    pool.split(arch.min(pool.len().saturating_sub(1)), seed ^ 12)
}

/// The engine's settings for this spec (the budget sets epochs, warm-up and batch).
pub fn config(spec: &SearchSpec) -> SearchConfig {
    SearchConfig {
        epochs: spec.budget.epochs,
        warmup: spec.budget.warmup,
        batch: spec.budget.batch,
        ..spec.config.clone()
    }
}

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn run(m: &Module, cx: &Ctx<'_>, spec: &SearchSpec) -> Result<Searched, Diagnostics> {
    let (tm, s, original) = target(m, spec.full)?;
    let info = &tm.checked[s as usize];
    let sn = supernet::build(tm, s)?;
    let pricing = Pricing::new(m, cx, (tm, s), original, &spec.predictor)?;
    let cfg = config(spec);
    let input = sn.graph.shapes[0];
    let (train, note) = train_split(spec, input).map_err(|e| outside("search data", e))?;
    let b = &spec.budget;
    let (wdata, adata) = splits(&train, b.weights_images, b.arch_images, cfg.seed);
    if let Some(note) = note {
        cx.progress.note(&format!("search: {note}"));
    }
    let settings = serde_json::json!({
        "supernet": network_hash(&sn.graph, 1),
        "config": cfg,
        "costs": pricing.key(),
        "dataset": spec.dataset,
        "budget": spec.budget,
        "predictor": spec.predictor,
    })
    .to_string();
    let dir = spec
        .checkpoints
        .join(format!("search-{}", digest(&settings)));
    cx.progress.note(&format!(
        "search: {} space `{}` ({} decisions, {} mixes), {:?} mode, {} epochs ({} warm-up) on {} + {} images, loss {:?} α {} β {}{}, checkpoints in {}",
        if spec.full { "whole" } else { "reduced" },
        info.name,
        info.decisions.len(),
        sn.mixes.len(),
        cfg.mode,
        cfg.epochs,
        cfg.warmup,
        wdata.len(),
        adata.len(),
        cfg.loss,
        cfg.alpha,
        cfg.beta,
        cfg.target_ms.map_or(String::new(), |t| format!(", target {t} ms")),
        dir.display()
    ));
    let stage = cx.progress.stage("search", cfg.epochs);
    // The search's own peak, not that of the profiling before it.
    spacetune_backends::memory::reset_peak();
    let init = Weights::random(&sn.graph, cfg.seed);
    let outcome = engine::search(
        &sn,
        &init,
        pricing.model(),
        (&wdata, &adata),
        &cfg,
        Some(&dir),
        |e| {
            stage.tick(&format!(
                "epoch {} loss {:.3} acc {:.3} E[LAT] {:.3} ms τ {:.2} H(θ) {:.3}",
                e.epoch, e.loss, e.train_accuracy, e.expected_ms, e.temperature, e.entropy
            ))
        },
    )
    .map_err(|e| outside("searching", e))?;
    let weights = dir.join("supernet.safetensors");
    engine::save_weights(&outcome.weights, &weights)
        .map_err(|e| outside("saving the supernet", e))?;
    let decisions: Vec<&Decision> = info.decisions.values().collect();
    let seconds = outcome.epochs.iter().map(|e| e.seconds).sum();
    Ok(Searched {
        space: info.name.clone(),
        on: if spec.full { "full" } else { "reduced" }.into(),
        mode: format!("{:?}", cfg.mode).to_lowercase(),
        predictor: spec.predictor.clone(),
        settings,
        key: crate::expand::key(&decisions, &outcome.choices),
        predicted_ms: pricing
            .model()
            .latency(&outcome.choices)
            .map_err(|e| outside("pricing the chosen network", e))?,
        theta: outcome.theta,
        choices: outcome.choices,
        epochs: outcome.epochs,
        resumed: outcome.resumed,
        weights: weights.display().to_string(),
        seconds,
    })
}
