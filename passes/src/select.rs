//! BBSSP's cost function and selection: every SSBN of every candidate space scored by
//! `cost = exp(−(acc − thres)/scale) − λ/lat` (lower is better; lat in ms), sorted, and the
//! first space to collect N picks wins. Its reduced space gives each searchable layer the
//! blocks whose SSBN was picked, plus the default.

use crate::ctx::Ctx;
use crate::pass::Pass;
use spacetune_ir::*;
pub use spacetune_ir::{Scored, SelectParams, Selection};
use std::collections::{BTreeMap, HashMap};

/// `select`: every SSBN scored from the measure and profile passes' tables, the winning
/// space and the options it keeps become the module's `selection`.
pub struct Select;

impl Pass for Select {
    fn name(&self) -> &'static str {
        "select"
    }
    fn is_pure(&self) -> bool {
        false
    }
    fn run(&self, m: &mut Module, cx: &Ctx<'_>) -> Result<(), Diagnostics> {
        assert!(m.phase >= Phase::Profiled, "select runs after profile");
        let missing = |what: &str| {
            Diagnostic::error(format!("no {what}: the pass that makes them has not run"))
        };
        let latencies = m.latencies.as_ref().ok_or_else(|| missing("latencies"))?;
        let accuracies = m.accuracies.as_ref().ok_or_else(|| missing("accuracies"))?;
        let spaces = cx.spaces(m)?;
        let mut lat = BTreeMap::new();
        for (h, n) in m.networks.iter().filter(|(_, n)| spaces.contains(&n.space)) {
            match latencies.results.get(&h).map(|t| &t.result) {
                Some(Ok(l)) => lat.insert(h, l.p10_ms),
                Some(Err(e)) => {
                    return Err(
                        Diagnostic::error(format!("{} failed to measure: {e}", n.id)).into(),
                    )
                }
                None => None,
            };
        }
        let acc = accuracies
            .results
            .iter()
            .map(|(&h, t)| (h, t.accuracy))
            .collect();
        let params = params(m, cx);
        let selection = select(m, &spaces, &acc, &lat, &params)
            .map_err(|e| Diagnostics::from(Diagnostic::error(e)))?;
        m.selection = Some(selection);
        m.advance(Phase::Selected);
        Ok(())
    }
}

/// The knobs: the command line, then the file's `select` line, then the authors' values.
pub fn params(m: &Module, cx: &Ctx<'_>) -> SelectParams {
    let file = |name: &str| m.select.iter().find(|k| k.name == name).map(|k| k.value);
    let d = SelectParams::default();
    let o = &cx.select;
    SelectParams {
        thres: o.thres.or(file("thres")).unwrap_or(d.thres),
        scale: o.scale.or(file("scale")).unwrap_or(d.scale),
        lambda: o.lambda.or(file("lambda")).unwrap_or(d.lambda),
        n: o.n.or(file("picks").map(|v| v as usize)).unwrap_or(d.n),
    }
}

pub fn cost(p: &SelectParams, accuracy: f64, latency_ms: f64) -> f64 {
    (-(accuracy - p.thres) / p.scale).exp() - p.lambda / latency_ms
}

/// Scores the SSBNs of `spaces` and selects. Every SSBN must have an accuracy and a
/// latency, or the error names the first one missing.
pub fn select(
    m: &Module,
    spaces: &[u32],
    accuracy: &BTreeMap<Handle<Network>, f64>,
    latency_ms: &BTreeMap<Handle<Network>, f64>,
    p: &SelectParams,
) -> Result<Selection, String> {
    if p.scale.is_nan() || p.scale <= 0.0 || p.n == 0 {
        return Err("select: scale must be positive and N at least 1".into());
    }
    let mut ranked = Vec::with_capacity(m.networks.len());
    for (h, n) in m.networks.iter().filter(|(_, n)| spaces.contains(&n.space)) {
        let acc = *accuracy
            .get(&h)
            .ok_or_else(|| format!("no accuracy for {} (key `{}`)", n.id, n.key))?;
        let lat = *latency_ms
            .get(&h)
            .ok_or_else(|| format!("no latency for {}", n.id))?;
        if lat.is_nan() || lat <= 0.0 {
            return Err(format!("latency of {} is {lat} ms", n.id));
        }
        ranked.push(Scored {
            network: h,
            id: n.id.clone(),
            space: m.checked[n.space as usize].name.clone(),
            key: n.key.clone(),
            accuracy: acc,
            latency_ms: lat,
            cost: cost(p, acc, lat),
            picked: false,
        });
    }
    // Ties break by id, so the ranking does not depend on input order.
    ranked.sort_by(|a, b| a.cost.total_cmp(&b.cost).then_with(|| a.id.cmp(&b.id)));
    let mut picks: HashMap<String, usize> = HashMap::new();
    let mut winner = None;
    for r in ranked.iter_mut() {
        r.picked = true;
        let c = picks.entry(r.space.clone()).or_default();
        *c += 1;
        if *c >= p.n {
            winner = Some(r.space.clone());
            break;
        }
    }
    let reached = winner.is_some();
    let winner = winner.unwrap_or_else(|| {
        // Nobody reached N: the space with the most picks (ties: declaration order).
        spaces
            .iter()
            .rev()
            .map(|&s| &m.checked[s as usize])
            .max_by_key(|i| picks.get(&i.name).copied().unwrap_or(0))
            .map(|i| i.name.clone())
            .unwrap_or_default()
    });
    let space = m
        .checked
        .iter()
        .position(|i| i.name == winner)
        .ok_or("no space to select from")?;
    let info = &m.checked[space];
    let mut keep: Vec<Vec<u32>> = info
        .decisions
        .iter()
        .map(|(_, d)| vec![d.default])
        .collect();
    let mut lat_sum = 0.0;
    let mut count = 0;
    for r in ranked.iter().filter(|r| r.picked && r.space == winner) {
        lat_sum += r.latency_ms;
        count += 1;
        if let Origin::Swap { decision, option } = m.networks[r.network].origin {
            let k = &mut keep[decision.index()];
            if !k.contains(&option) {
                k.push(option);
            }
        }
    }
    for k in &mut keep {
        k.sort_unstable();
    }
    Ok(Selection {
        params: p.clone(),
        ranked,
        winner,
        space: space as u32,
        reached,
        keep,
        picked_mean_latency_ms: lat_sum / count.max(1) as f64,
    })
}
