//! `compare`: the baselines of the same run, on the same data and budget as the chosen
//! network — random search in the reduced space and in the winning space whole (as many
//! architectures as the gradient search's wall time pays for), and the gradient search on
//! the whole space — each winner retrained by the same retraining and measured by the same
//! backend as the chosen network. A baseline that fails is recorded with why, beside the
//! others; it never costs the chosen network's figures.

use crate::ctx::{outside, Ctx, SearchSpec};
use crate::emit::{base_of, measure};
use crate::pass::Pass;
use crate::pricing::Pricing;
use crate::retrain::{retrain, Retraining};
use crate::search::{self, config, spec, splits, target, train_split};
use crate::supernet;
use spacetune_backends::memory;
use spacetune_backends::search::total_loss;
use spacetune_backends::train::TrainConfig;
use spacetune_backends::weights::Rng;
use spacetune_ir::*;
use std::collections::HashSet;

pub struct Compare;

impl Pass for Compare {
    fn name(&self) -> &'static str {
        "compare"
    }
    fn is_pure(&self) -> bool {
        false
    }
    fn run(&self, m: &mut Module, cx: &Ctx<'_>) -> Result<(), Diagnostics> {
        assert!(m.phase >= Phase::Chosen, "compare runs after emit");
        let spec = spec(cx, self.name())?;
        if spec.baselines {
            let outcomes = baselines(m, cx, spec)?;
            m.chosen
                .as_mut()
                .ok_or_else(|| {
                    Diagnostic::error("no chosen network: `emit` has not run".to_string())
                })?
                .outcomes
                .extend(outcomes);
        }
        m.advance(Phase::Compared);
        Ok(())
    }
}

fn baselines(m: &Module, cx: &Ctx<'_>, spec: &SearchSpec) -> Result<Vec<Outcome>, Diagnostics> {
    let searched = m
        .searched
        .as_ref()
        .ok_or_else(|| Diagnostic::error("no search: `search` has not run".to_string()))?;
    let mut runs: Vec<(&str, bool)> = vec![("random-reduced", false), ("random-full", true)];
    if !spec.full {
        runs.push(("dnas-full", true));
    }
    let mut outcomes = Vec::new();
    for (name, full) in runs {
        let found = if name == "dnas-full" {
            dnas_full(m, cx, spec)
        } else {
            random(m, cx, spec, full, searched.seconds)
        };
        let found = found.map_err(|d| d.0[0].message.clone());
        let outcome = match found {
            Ok(f) => f.finish(m, cx, spec, name),
            Err(e) => Err(e),
        };
        outcomes.push(outcome.unwrap_or_else(|e| {
            cx.progress.note(&format!("compare: {name} failed: {e}"));
            Outcome {
                name: name.into(),
                key: String::new(),
                test_accuracy: Err(e.clone()),
                measured_ms: Err(e),
                predicted_ms: None,
                search_seconds: 0.0,
                peak_bytes: None,
                train_seconds: 0.0,
                detail: "failed".into(),
            }
        }));
    }
    Ok(outcomes)
}

/// What a baseline search found, before its retraining and measurement.
struct Found {
    network: Network,
    /// The index in `m` of the space whose latency table prices it.
    original: u32,
    predicted_ms: f64,
    seconds: f64,
    peak_bytes: Option<u64>,
    detail: String,
}

impl Found {
    /// Retrained from scratch and measured exactly as the chosen network is.
    fn finish(
        self,
        m: &Module,
        cx: &Ctx<'_>,
        spec: &SearchSpec,
        name: &str,
    ) -> Result<Outcome, String> {
        let r = Retraining::new(spec, self.network.graph.shapes[0])
            .and_then(|t| {
                let stage = cx.progress.stage(&format!("retrain {name}"), 1);
                stage.working(&self.network.id);
                let r = t.run(&self.network);
                stage.tick(&self.network.id);
                r
            })
            .map_err(|d| d.0[0].message.clone())?;
        let measured = measure(m, cx, self.original, std::slice::from_ref(&self.network));
        Ok(Outcome {
            name: name.into(),
            key: self.network.key.clone(),
            test_accuracy: Ok(r.accuracy),
            measured_ms: measured[0].clone(),
            predicted_ms: Some(self.predicted_ms),
            search_seconds: self.seconds,
            peak_bytes: self.peak_bytes,
            train_seconds: r.seconds,
            detail: self.detail,
        })
    }
}

/// The fixed network of space `s` of `m` at `choices`, as `expand` builds it.
fn network_at(m: &Module, s: u32, choices: &[u32], id: String) -> Result<Network, Diagnostics> {
    let info = &m.checked[s as usize];
    let graph = crate::expand::build(m, info, choices)?;
    let decisions: Vec<&Decision> = info.decisions.values().collect();
    Ok(Network {
        id,
        space: s,
        origin: Origin::Sampled,
        choices: choices.to_vec(),
        key: crate::expand::key(&decisions, choices),
        cost: graph.cost(),
        graph,
    })
}

/// Random search: architectures drawn uniformly (each decision's option independently,
/// no architecture twice), each trained one epoch on the search's weight split and scored
/// by the search's own loss — cross-entropy on the θ split combined with the predicted
/// latency — until `spec.random_k` are trained or their training time reaches the gradient
/// search's (`budget_s`). The best score wins.
fn random(
    m: &Module,
    cx: &Ctx<'_>,
    spec: &SearchSpec,
    full: bool,
    budget_s: f64,
) -> Result<Found, Diagnostics> {
    let (tm, s, original) = target(m, full)?;
    let info = &tm.checked[s as usize];
    let pricing = Pricing::new(m, cx, (tm, s), original, &spec.predictor)?;
    let lat = pricing.model();
    let sizes: Vec<u64> = info
        .decisions
        .values()
        .map(|d| d.options.len() as u64)
        .collect();
    let distinct = info.size();
    let input = base_of(tm, s)?.graph.shapes[0];
    let (train, _) = train_split(spec, input).map_err(|e| outside("random search data", e))?;
    let b = &spec.budget;
    let (wdata, adata) = splits(&train, b.weights_images, b.arch_images, spec.config.seed);
    let train_cfg = TrainConfig {
        epochs: 1,
        batch: b.batch,
        lr: spec.config.lr,
        seed: spec.config.seed,
        threads: spec.config.threads,
        ..TrainConfig::default()
    };
    let loss_cfg = config(spec);
    let on = if full { "whole" } else { "reduced" };
    let stage = cx.progress.stage(
        &format!("random search ({on} space)"),
        spec.random_k.unwrap_or(0),
    );
    memory::reset_peak();
    let mut rng = Rng::new(spec.config.seed ^ 0x7a9d_0000 ^ u64::from(full));
    let mut seen = HashSet::new();
    let (mut spent, mut trained, mut cached) = (0.0, 0usize, 0usize);
    let mut best: Option<(f64, Network)> = None;
    let mut misses = 0;
    loop {
        let enough = match spec.random_k {
            Some(k) => trained >= k,
            // Another candidate is trained while it is expected to end nearer the budget.
            None => trained > 0 && spent + spent / trained as f64 / 2.0 >= budget_s,
        };
        if enough || seen.len() as u64 >= distinct || misses > 10_000 {
            break;
        }
        let choices: Vec<u32> = sizes.iter().map(|&n| rng.below(n) as u32).collect();
        if !seen.insert(choices.clone()) {
            misses += 1;
            continue;
        }
        misses = 0;
        let id = format!("{}-random-{trained}", info.name);
        let net = network_at(tm, s, &choices, id)?;
        stage.working(&net.key);
        let r = retrain(&net, &wdata, &adata, &train_cfg, Some(&spec.checkpoints))?;
        spent += r.seconds;
        trained += 1;
        cached += usize::from(r.cached);
        let score = f64::try_from(total_loss(
            &tch::Tensor::from(r.ce),
            &tch::Tensor::from(
                lat.latency(&choices)
                    .map_err(|e| outside("pricing a random architecture", e))?,
            ),
            &loss_cfg,
        ))
        .map_err(|e| outside("scoring a random architecture", e))?;
        stage.tick(&format!(
            "{} acc {:.3} score {score:.4}",
            net.key, r.accuracy
        ));
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((score, net));
        }
    }
    let (_, network) = best
        .ok_or_else(|| Diagnostic::error(format!("the {on} space has no architecture to draw")))?;
    Ok(Found {
        predicted_ms: pricing
            .of(&network.choices)
            .ok_or_else(|| Diagnostic::error("the winner has no predicted latency".to_string()))?,
        original,
        seconds: spent,
        // A peak over trainings that were read from the cache is not theirs.
        peak_bytes: memory::peak_bytes().filter(|_| cached == 0),
        detail: format!(
            "best of {trained} drawn (of {distinct}) in the {on} space, 1 epoch on {} images \
             each, scored by the search loss on {}{}",
            wdata.len(),
            adata.len(),
            if cached > 0 {
                format!("; {cached} trainings from the cache")
            } else {
                String::new()
            }
        ),
        network,
    })
}

/// The gradient search of the same settings on the winning space whole.
fn dnas_full(m: &Module, cx: &Ctx<'_>, spec: &SearchSpec) -> Result<Found, Diagnostics> {
    let whole = SearchSpec {
        full: true,
        ..spec.clone()
    };
    let searched = search::run(m, cx, &whole)?;
    let (tm, s, original) = target(m, true)?;
    let sn = supernet::build(tm, s)?;
    let id = format!("{}-dnas-full", tm.checked[s as usize].name);
    let (network, _) = supernet::network(tm, s, &sn, &searched.choices, id)?;
    Ok(Found {
        network,
        original,
        predicted_ms: searched.predicted_ms,
        seconds: searched.seconds,
        peak_bytes: searched.peak_bytes(),
        detail: format!(
            "{} search on the whole space{}",
            searched.mode,
            if searched.resumed > 0 {
                format!(" ({} epochs from a checkpoint)", searched.resumed)
            } else {
                String::new()
            }
        ),
    })
}
