//! BBSSP's cost function and selection: every SSBN of every candidate space scored by
//! `cost = exp(−(acc − thres)/scale) − λ/lat` (lower is better; lat in ms), sorted, and the
//! first space to collect N picks wins. Its reduced space gives each searchable layer the
//! blocks whose SSBN was picked, plus the default.

use serde::{Deserialize, Serialize};
use spacetune_ir::{Module, Ssbn};
use std::collections::HashMap;

/// The user's trade-off knobs (authors' ImageNet values: thres 0.80, scale 2, λ 0.01, N 60).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectParams {
    pub thres: f64,
    pub scale: f64,
    pub lambda: f64,
    pub n: usize,
}

impl Default for SelectParams {
    fn default() -> Self {
        SelectParams {
            thres: 0.80,
            scale: 2.0,
            lambda: 0.01,
            n: 60,
        }
    }
}

/// One SSBN with its measured figures and cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scored {
    pub id: String,
    pub space: String,
    pub key: String,
    pub accuracy: f64,
    pub latency_ms: f64,
    pub cost: f64,
    /// Counted towards its space's picks (the ranked walk reached it before a winner).
    pub picked: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Selection {
    pub params: SelectParams,
    /// Every SSBN, cheapest first.
    pub ranked: Vec<Scored>,
    pub winner: String,
    /// The winner reached N picks (otherwise: the most picks when the list ran out).
    pub reached: bool,
    /// Per decision of the winning space, the options kept (the default always).
    pub keep: Vec<Vec<u32>>,
    /// Mean latency of the winning space's picked SSBNs.
    pub picked_mean_latency_ms: f64,
}

pub fn cost(p: &SelectParams, accuracy: f64, latency_ms: f64) -> f64 {
    (-(accuracy - p.thres) / p.scale).exp() - p.lambda / latency_ms
}

/// Scores and selects. `accuracy` and `latency_ms` are keyed by network id; every SSBN must
/// have both, or the error names the first one missing.
pub fn select(
    m: &Module,
    accuracy: &HashMap<String, f64>,
    latency_ms: &HashMap<String, f64>,
    p: &SelectParams,
) -> Result<Selection, String> {
    if p.scale.is_nan() || p.scale <= 0.0 || p.n == 0 {
        return Err("select: scale must be positive and N at least 1".into());
    }
    let mut ranked = Vec::with_capacity(m.networks.len());
    for n in &m.networks {
        let acc = *accuracy
            .get(&n.id)
            .ok_or_else(|| format!("no accuracy for {} (key `{}`)", n.id, n.key))?;
        let lat = *latency_ms
            .get(&n.id)
            .ok_or_else(|| format!("no latency for {}", n.id))?;
        if lat.is_nan() || lat <= 0.0 {
            return Err(format!("latency of {} is {lat} ms", n.id));
        }
        ranked.push(Scored {
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
        m.checked
            .iter()
            .rev()
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
    let by_id: HashMap<&str, &spacetune_ir::Network> =
        m.networks.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut lat_sum = 0.0;
    let mut count = 0;
    for r in ranked.iter().filter(|r| r.picked && r.space == winner) {
        lat_sum += r.latency_ms;
        count += 1;
        if let Ssbn::Swap { decision, option } = by_id[r.id.as_str()].ssbn {
            let k = &mut keep[decision as usize];
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
        reached,
        keep,
        picked_mean_latency_ms: lat_sum / count.max(1) as f64,
    })
}
