//! Latency tables: the parts of a space as networks of their own (for the naive table),
//! the `correct` pass that builds BBSSP's layer-adaptive table from whole-network
//! measurements, and the figures that say how well a predictor matches measured latency.

use crate::ctx::{outside, Ctx};
use crate::elaborate::{Builder, Frame};
use crate::pass::Pass;
use crate::skeleton::{self, FillLayers};
use serde::{Deserialize, Serialize};
use spacetune_backends::{measure::Anchor, store::Store, Backend, Lowered};
use spacetune_ir::*;
use std::collections::BTreeMap;

/// The parts of a space's networks that a naive table times one by one.
#[derive(Clone, Debug)]
pub struct Standalone {
    /// The fixed parts of SSBN_0 (stem, reductions, head), each alone.
    pub fixed: Vec<Graph>,
    /// Per decision, per option: one graph per place the option is used (a layer; every
    /// cell edge a named choice fills). An option that computes nothing there (a skip, a
    /// `none` edge) has no graphs. `None` for a value choice, which has no block of its own.
    pub options: Vec<Option<Vec<Vec<Graph>>>>,
}

/// A graph worth timing: the pruned graph, if anything but inputs, skips and zeros is left.
fn computing(g: &Graph) -> Option<Graph> {
    let pruned = g.pruned();
    let computes = pruned
        .nodes
        .iter()
        .any(|(_, n)| !matches!(n.op, Prim::Input | Prim::Identity | Prim::Zero));
    computes.then_some(pruned)
}

/// Every option of every decision of space `space`, built alone on its real input shape.
pub fn standalone(m: &Module, space: u32) -> Result<Standalone, Diagnostics> {
    let info = &m.checked[space as usize];
    let defaults: Vec<u32> = info.decisions.iter().map(|(_, d)| d.default).collect();
    let named: Vec<(String, Resolved)> = info
        .decisions
        .iter()
        .filter(|(_, d)| d.kind == DecisionKind::Named)
        .map(|(_, d)| {
            (
                d.name.clone(),
                d.options[d.default as usize].resolved.clone(),
            )
        })
        .collect();
    // SSBN_0 once more, to learn where each named choice is used and with what shapes.
    let chosen = info
        .decisions
        .iter()
        .filter(|(_, d)| matches!(d.kind, DecisionKind::Layer(_)))
        .map(|(_, d)| &d.options[d.default as usize])
        .collect();
    let mut b = Builder::new(m, named.clone());
    skeleton::walk(&mut b, &mut FillLayers { chosen })?;
    let uses = std::mem::take(&mut b.edge_uses);
    let base = crate::expand::build(m, info, &defaults)?.pruned();
    let fixed_regions: std::collections::BTreeSet<Region> = base
        .regions
        .iter()
        .copied()
        .filter(|r| matches!(r, Region::Fixed(_)))
        .collect();
    let fixed = fixed_regions
        .into_iter()
        .filter_map(|r| base.extract(|i| base.regions[i] == r))
        .collect();

    let alone = |option: &Alternative, input: Shape, frame: Frame, region: Region| {
        let mut b = Builder::new(m, named.clone());
        let x = b.input(input, option.span);
        b.region = region;
        match region {
            Region::Layer(_) => b.resolved(&option.resolved, frame, x, option.span)?,
            _ => b.edge_op(&option.resolved, frame, x, option.span)?,
        };
        Ok::<_, Diagnostic>(computing(&b.graph))
    };
    let mut options = Vec::new();
    for (_, d) in info.decisions.iter() {
        if d.options
            .iter()
            .any(|o| matches!(o.resolved, Resolved::Value(_)))
        {
            options.push(None);
            continue;
        }
        let mut per_option = Vec::new();
        for option in &d.options {
            let mut graphs = Vec::new();
            match d.kind {
                DecisionKind::Layer(i) => {
                    let slot = info
                        .slots
                        .iter()
                        .find(|s| s.layer == i)
                        .expect("check records every layer's slot");
                    let frame = Frame {
                        out: slot.output.c,
                        stride: slot.stride,
                    };
                    graphs.extend(alone(option, slot.input, frame, Region::Layer(i))?);
                }
                DecisionKind::Named => {
                    for (_, input, frame) in uses.iter().filter(|u| u.0 == d.name) {
                        graphs.extend(alone(option, *input, *frame, Region::Fixed(0))?);
                    }
                }
            }
            per_option.push(graphs);
        }
        options.push(Some(per_option));
    }
    Ok(Standalone { fixed, options })
}

/// What was measured for one space, as `correct` needs it (milliseconds).
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Lat(SSBN_0).
    pub base_ms: f64,
    /// Lat(SSBN_(i,j)) by (decision, option).
    pub swaps: BTreeMap<(u32, u32), f64>,
    /// The backend's per-layer profile of SSBN_0, if it has one.
    pub profile: Option<Vec<(Region, f64)>>,
    /// The standalone timings: the fixed parts summed, and per decision per option the
    /// sum over its uses (`None` where a decision was not timed).
    pub naive_fixed_ms: Option<f64>,
    pub naive: Vec<Option<Vec<f64>>>,
}

/// `correct`: every (decision, option) of every measured space gets its corrected cost
/// `t_i + (Lat(SSBN_(i,j)) − Lat(SSBN_0))` and its naive cost (the option timed alone
/// where it is used); the tables become the module's `luts` side table.
pub struct Correct;

impl Pass for Correct {
    fn name(&self) -> &'static str {
        "correct"
    }
    fn is_pure(&self) -> bool {
        false
    }
    fn run(&self, m: &mut Module, cx: &Ctx<'_>) -> Result<(), Diagnostics> {
        assert!(m.phase >= Phase::Measured, "correct runs after measure");
        let backend = cx.fingerprint(self.name())?.to_string();
        let mut luts = Vec::new();
        for s in cx.spaces(m)? {
            let measured = measure_for_table(m, s, cx)?;
            luts.push(table(m, s, &backend, &measured)?);
        }
        m.luts = luts;
        m.advance(Phase::Annotated);
        Ok(())
    }
}

/// The measure pass's figure for every SSBN of space `s`, in network order; an error names
/// the first SSBN without one (the corrected table needs them all).
pub fn ssbn_latencies(m: &Module, s: u32) -> Result<Vec<(Handle<Network>, f64)>, Diagnostics> {
    let info = &m.checked[s as usize];
    let table = m.latencies.as_ref().ok_or_else(|| {
        Diagnostic::error("no latencies: the `measure` pass has not run".to_string())
    })?;
    m.networks_of(s)
        .map(|(h, n)| match table.results.get(&h).map(|t| &t.result) {
            Some(Ok(l)) => Ok((h, l.p10_ms)),
            Some(Err(e)) => Err(Diagnostic::error(format!(
                "SSBN {} failed on {}: {e}; the corrected table of space `{}` needs every SSBN",
                n.id, table.backend, info.name
            ))
            .into()),
            None => Err(Diagnostic::error(format!(
                "SSBN {} of space `{}` was not measured",
                n.id, info.name
            ))
            .into()),
        })
        .collect()
}

/// Every network lowered through the backend; fails naming the first that cannot be.
pub(crate) fn lower_each<'n>(
    backend: &dyn Backend,
    nets: impl IntoIterator<Item = &'n Network>,
) -> Result<Vec<Lowered>, Diagnostics> {
    nets.into_iter()
        .map(|n| {
            backend
                .lower(n)
                .map_err(|e| outside(&format!("lowering {}", n.id), e))
        })
        .collect()
}

/// The anchor of space `s`'s measurements: SSBN_0, and two swaps as bridges from different
/// parts of the space (so their own errors stay apart).
pub fn anchor(m: &Module, s: u32, backend: &dyn Backend) -> Result<Anchor, Diagnostics> {
    let base = m
        .networks_of(s)
        .find(|(_, n)| n.origin == Origin::Base)
        .ok_or_else(|| Diagnostic::error("a space has an SSBN_0".to_string()))?;
    let swaps: Vec<&Network> = m
        .networks_of(s)
        .filter(|(_, n)| matches!(n.origin, Origin::Swap { .. }))
        .map(|(_, n)| n)
        .collect();
    let bridges = [swaps.len() / 3, 2 * swaps.len() / 3]
        .into_iter()
        .filter_map(|i| swaps.get(i).copied());
    Ok(Anchor {
        reference: lower_each(backend, [base.1])?.remove(0),
        bridges: lower_each(backend, bridges)?,
    })
}

/// Measures lowered networks on the anchor's scale, through `store` (the context's own
/// store when `None`), with a progress stage called `what`; fails naming the first network
/// that could not be measured (everything measured stays in the store).
pub fn measure_on(
    cx: &Ctx<'_>,
    anchor: &Anchor,
    lowered: &[Lowered],
    store: Option<&dyn Store>,
    what: &str,
) -> Result<Vec<f64>, Diagnostics> {
    let backend = cx.backend("correct")?;
    let store = match store {
        Some(s) => s,
        None => cx.store("correct")?,
    };
    let stage = cx
        .progress
        .stage(&format!("{what} on {}", backend.name()), lowered.len());
    let ms = anchor
        .measure(backend, lowered, &cx.protocol, store, cx.drift, |o| {
            stage.tick(&o.id)
        })
        .map_err(|e| outside(what, e))?;
    ms.into_iter()
        .map(|r| r.map_err(|e| outside(&format!("{what} on {}", backend.name()), e)))
        .collect()
}

/// [`measure_on`] for networks not yet lowered.
pub fn measure_nets_on(
    cx: &Ctx<'_>,
    anchor: &Anchor,
    nets: &[Network],
    store: Option<&dyn Store>,
    what: &str,
) -> Result<Vec<f64>, Diagnostics> {
    let lowered = lower_each(cx.backend("correct")?, nets)?;
    measure_on(cx, anchor, &lowered, store, what)
}

/// Everything the table of space `s` is built from: the SSBNs as the measure pass timed
/// them (with `cx.replicate − 1` further runs averaged in), SSBN_0 measured again as an
/// ordinary network, and every option timed alone where it is used.
pub fn measure_for_table(m: &Module, s: u32, cx: &Ctx<'_>) -> Result<Measured, Diagnostics> {
    let backend = cx.backend("correct")?;
    let mut ssbn_ms: Vec<f64> = ssbn_latencies(m, s)?.iter().map(|x| x.1).collect();
    let anchor = anchor(m, s, backend)?;
    let ssbns: Vec<&Network> = m.networks_of(s).map(|(_, n)| n).collect();
    // SSBN_0 is the drift reference: its stored figure defines the scale the others are
    // measured on, and is not itself a measurement on that scale like theirs. Its error
    // against them would enter every corrected prediction k − 1 times (a network with k
    // swapped decisions), so the table takes SSBN_0 measured again as an ordinary network
    // — a copy under its own key — beside the others.
    let reference = &anchor.reference;
    let base_again = Lowered {
        id: format!("{}-again", reference.id),
        hash: format!("{}-again", reference.hash),
        ..reference.clone()
    };
    let once = std::slice::from_ref(&base_again);
    let mut base_ms = measure_on(cx, &anchor, once, None, "SSBN_0 again")?[0];
    // BBSSP's table rests on one measurement per SSBN, and an error in one delta lands in
    // every prediction that uses it: further independent runs (on the same anchor, so on
    // the same scale) are averaged in.
    if cx.replicate > 1 {
        let mut again = lower_each(backend, ssbns.iter().copied())?;
        again.push(base_again);
        for _ in 1..cx.replicate {
            // (The bridges keep their first figure: they define this run's scale.)
            let store = cx.store("correct")?;
            let fresh = anchor
                .fresh(backend, &cx.protocol, store)
                .map_err(|e| outside("the store", e))?;
            let t = measure_on(cx, &anchor, &again, Some(&fresh), "SSBNs again")?;
            for (sum, t) in ssbn_ms.iter_mut().zip(&t) {
                *sum += t;
            }
            base_ms += t[ssbns.len()];
        }
        for t in &mut ssbn_ms {
            *t /= cx.replicate as f64;
        }
        base_ms /= cx.replicate as f64;
    }
    let mut measured = Measured {
        base_ms,
        profile: base_profile(m, s),
        ..Measured::default()
    };
    for (n, &t) in ssbns.iter().zip(&ssbn_ms) {
        if let Origin::Swap { decision, option } = n.origin {
            measured.swaps.insert((decision.index() as u32, option), t);
        }
    }
    naive_timings(m, s, cx, &anchor, &mut measured)?;
    Ok(measured)
}

/// The backend's per-layer profile of SSBN_0 of space `s`, if the measure pass got one.
fn base_profile(m: &Module, s: u32) -> Option<Vec<(Region, f64)>> {
    let (h, _) = m.networks_of(s).find(|(_, n)| n.origin == Origin::Base)?;
    let timed = m.latencies.as_ref()?.results.get(&h)?;
    let per_layer = timed.result.as_ref().ok()?.per_layer.as_ref()?;
    Some(per_layer.iter().map(|t| (t.region, t.ms)).collect())
}

/// The naive table's timings: every option alone, where it is used, and the fixed parts.
fn naive_timings(
    m: &Module,
    s: u32,
    cx: &Ctx<'_>,
    anchor: &Anchor,
    measured: &mut Measured,
) -> Result<(), Diagnostics> {
    let info = &m.checked[s as usize];
    let alone = standalone(m, s)?;
    let mut alone_nets = Vec::new();
    for (k, g) in alone.fixed.iter().enumerate() {
        alone_nets.push(Network::fixed(format!("{}-fixed{k}", info.name), g.clone()));
    }
    for (i, options) in alone.options.iter().enumerate() {
        for (j, uses) in options.iter().flatten().enumerate() {
            for (k, g) in uses.iter().enumerate() {
                alone_nets.push(Network::fixed(
                    format!("{}-alone-{i}-{j}-{k}", info.name),
                    g.clone(),
                ));
            }
        }
    }
    let alone_ms = measure_nets_on(cx, anchor, &alone_nets, None, "blocks alone")?;
    let mut next = alone_ms.iter().copied();
    measured.naive_fixed_ms = Some(next.by_ref().take(alone.fixed.len()).sum());
    measured.naive = alone
        .options
        .iter()
        .map(|options| {
            options.as_ref().map(|per_option| {
                per_option
                    .iter()
                    .map(|uses| next.by_ref().take(uses.len()).sum())
                    .collect()
            })
        })
        .collect();
    Ok(())
}

/// BBSSP's table for one space.
pub fn table(m: &Module, space: u32, backend: &str, x: &Measured) -> Result<SpaceLut, Diagnostics> {
    let info = &m.checked[space as usize];
    let decisions: Vec<&Decision> = info.decisions.iter().map(|(_, d)| d).collect();
    let span = info.space.map_or(m.skeleton_span, |h| m.spaces.span(h));
    let naive_default = |i: usize| -> Option<f64> {
        let d = decisions[i];
        x.naive.get(i)?.as_ref().map(|o| o[d.default as usize])
    };
    // The shares t_i: any split that sums to Lat(SSBN_0) gives the same predictions; a
    // profile or the standalone timings make the table's entries meaningful one by one.
    let layers_profiled = x.profile.as_ref().filter(|p| {
        decisions.iter().all(|d| match d.kind {
            DecisionKind::Layer(i) => p.iter().any(|(r, _)| *r == Region::Layer(i)),
            DecisionKind::Named => false,
        })
    });
    let (shares, source): (Vec<f64>, ShareSource) = if let Some(p) = layers_profiled {
        let total: f64 = p.iter().map(|(_, ms)| ms).sum();
        let scale = if total > 0.0 { x.base_ms / total } else { 0.0 };
        let shares = decisions
            .iter()
            .map(|d| match d.kind {
                DecisionKind::Layer(i) => p
                    .iter()
                    .filter(|(r, _)| *r == Region::Layer(i))
                    .map(|(_, ms)| ms * scale)
                    .sum(),
                DecisionKind::Named => 0.0,
            })
            .collect();
        (shares, ShareSource::Profile)
    } else if let (Some(fixed), Some(parts)) = (
        x.naive_fixed_ms,
        (0..decisions.len())
            .map(naive_default)
            .collect::<Option<Vec<f64>>>(),
    ) {
        let total = fixed + parts.iter().sum::<f64>();
        let scale = if total > 0.0 { x.base_ms / total } else { 0.0 };
        (
            parts.iter().map(|t| t * scale).collect(),
            ShareSource::Standalone,
        )
    } else {
        let even = x.base_ms / (decisions.len() + 1) as f64;
        (vec![even; decisions.len()], ShareSource::Even)
    };
    let mut rows = Vec::new();
    for (i, d) in decisions.iter().enumerate() {
        let mut options = Vec::new();
        for j in 0..d.options.len() as u32 {
            let delta = if j == d.default {
                0.0
            } else {
                let lat = x.swaps.get(&(i as u32, j)).ok_or_else(|| {
                    Diagnostic::error(format!(
                        "no latency for SSBN {}-{i}-{j}: the corrected table needs every SSBN \
                         of space `{}` measured",
                        info.name, info.name
                    ))
                    .with_label(span, "this space")
                })?;
                lat - x.base_ms
            };
            options.push(LutEntry {
                corrected_ms: shares[i] + delta,
                naive_ms: x
                    .naive
                    .get(i)
                    .and_then(|o| o.as_ref())
                    .map(|o| o[j as usize]),
            });
        }
        rows.push(LutRow {
            decision: i as u32,
            share_ms: shares[i],
            options,
        });
    }
    Ok(SpaceLut {
        space,
        backend: backend.to_string(),
        base_ms: x.base_ms,
        fixed_ms: x.base_ms - shares.iter().sum::<f64>(),
        fixed_naive_ms: x.naive_fixed_ms,
        shares: source,
        rows,
    })
}

/// How well predictions match measurements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    pub n: usize,
    /// Mean absolute percentage error, %.
    pub mape: f64,
    /// Root mean square percentage error, %.
    pub rmspe: f64,
    /// Share of networks predicted within ±5% and ±10%, in [0, 1].
    pub within5: f64,
    pub within10: f64,
    /// Kendall's τ between predicted and measured order (τ-a; 1 = same ranking).
    pub kendall_tau: f64,
    /// Mean signed error, % (positive: over-predicts).
    pub bias: f64,
}

pub fn agreement(predicted: &[f64], measured: &[f64]) -> Agreement {
    let n = predicted.len().min(measured.len());
    let errors: Vec<f64> = (0..n)
        .map(|k| (predicted[k] - measured[k]) / measured[k] * 100.0)
        .collect();
    let nf = n.max(1) as f64;
    let within = |pct: f64| errors.iter().filter(|e| e.abs() <= pct).count() as f64 / nf;
    let mut concordant = 0i64;
    let mut pairs = 0i64;
    for a in 0..n {
        for b in a + 1..n {
            let s = (predicted[a] - predicted[b]).signum() * (measured[a] - measured[b]).signum();
            concordant += s as i64;
            pairs += 1;
        }
    }
    Agreement {
        n,
        mape: errors.iter().map(|e| e.abs()).sum::<f64>() / nf,
        rmspe: (errors.iter().map(|e| e * e).sum::<f64>() / nf).sqrt(),
        within5: within(5.0),
        within10: within(10.0),
        kendall_tau: if pairs > 0 {
            concordant as f64 / pairs as f64
        } else {
            0.0
        },
        bias: errors.iter().sum::<f64>() / nf,
    }
}

/// The least-squares line `measured ≈ a + b·predicted` (for calibrating a predictor on
/// measured SSBNs). With fewer than two distinct predictions, only the offset is fitted.
pub fn fit_line(predicted: &[f64], measured: &[f64]) -> (f64, f64) {
    let n = predicted.len().min(measured.len()) as f64;
    if n == 0.0 {
        return (0.0, 1.0);
    }
    let mx = predicted.iter().sum::<f64>() / n;
    let my = measured.iter().sum::<f64>() / n;
    let sxx: f64 = predicted.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = predicted
        .iter()
        .zip(measured)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum();
    if sxx <= 1e-12 * mx.abs().max(1e-12) {
        return (my - mx, 1.0);
    }
    let b = sxy / sxx;
    (my - b * mx, b)
}

/// Whether BBSSP's corrections hold on networks that are not SSBNs: over networks measured
/// whole, the least-squares slope of `measured − naive` on `corrected − naive` (both
/// relative to measured). A correction is a difference of two whole-network measurements;
/// what it holds may be context the backend gives any network (fusion across blocks, layout
/// changes: slope 1) or what only that SSBN has (its own noise, or a compiled network's
/// reproducible quirks: slope 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrectionsHold {
    pub slope: f64,
    /// The slope's standard error (ordinary least squares).
    pub stderr: f64,
    /// Standard deviation of `(corrected − naive) / measured` over the networks, %: how much
    /// the corrections move predictions at all.
    pub spread: f64,
}

pub fn corrections_hold(
    naive: &[f64],
    corrected: &[f64],
    measured: &[f64],
) -> Option<CorrectionsHold> {
    let n = naive.len().min(corrected.len()).min(measured.len());
    if n < 3 {
        return None;
    }
    let x: Vec<f64> = (0..n)
        .map(|k| (corrected[k] - naive[k]) / measured[k])
        .collect();
    let z: Vec<f64> = (0..n)
        .map(|k| (measured[k] - naive[k]) / measured[k])
        .collect();
    let mx = x.iter().sum::<f64>() / n as f64;
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let (a, b) = fit_line(&x, &z);
    let residual: f64 = x.iter().zip(&z).map(|(x, z)| (z - a - b * x).powi(2)).sum();
    Some(CorrectionsHold {
        slope: b,
        stderr: (residual / (n as f64 - 2.0) / sxx).sqrt(),
        spread: 100.0 * (sxx / n as f64).sqrt(),
    })
}

/// Least squares of `measured ≈ base + Σ_k b_k·x_k` in relative terms (each network
/// weighted by 1/measured, so a small network's error counts like a large one's);
/// `features[n]` are network n's `x_k` (a column of ones gives an intercept). Returns the
/// `b_k`. The kernel model uses it with the per-call cost as the base and a per-kernel cost
/// it does not see (a kernel timed alone allocates and returns its output; in the network
/// the output stays in the runtime's arena). `None` when the networks cannot tell the terms
/// apart (a feature that barely varies) or are too few.
pub fn fit_plane(features: &[Vec<f64>], base: f64, measured: &[f64]) -> Option<Vec<f64>> {
    let k = features.first()?.len();
    // Each row: the regressors over y, then the target (y − base) / y.
    let rows: Vec<Vec<f64>> = features
        .iter()
        .zip(measured)
        .filter(|(_, &y)| y > 0.0)
        .map(|(x, &y)| {
            let mut r: Vec<f64> = x.iter().map(|v| v / y).collect();
            r.push((y - base) / y);
            r
        })
        .collect();
    if k == 0 || rows.len() < k + 1 {
        return None;
    }
    // The normal equations, solved by Gauss–Jordan elimination with partial pivoting.
    let mut m = vec![vec![0.0f64; k + 1]; k];
    for r in &rows {
        for i in 0..k {
            for j in 0..=k {
                m[i][j] += r[i] * r[j];
            }
        }
    }
    let scale: f64 = (0..k).map(|i| m[i][i]).fold(0.0, f64::max);
    for col in 0..k {
        let pivot = (col..k).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        m.swap(col, pivot);
        if m[col][col].abs() <= 1e-9 * scale {
            return None;
        }
        let pivot_row = m[col].clone();
        for (row, r) in m.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot_row[col];
                for (x, p) in r.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|i| m[i][k] / m[i][i]).collect())
}

#[cfg(test)]
mod fit_tests {
    use super::*;

    #[test]
    fn the_per_kernel_term_is_recovered() {
        // measured = 0.01 + 0.8·x − 0.002·count, exactly.
        let x = [1.0, 1.2, 0.9, 1.5, 1.1, 0.7];
        let count = [100.0, 120.0, 80.0, 130.0, 95.0, 70.0];
        let y: Vec<f64> = x
            .iter()
            .zip(&count)
            .map(|(x, c)| 0.01 + 0.8 * x - 0.002 * c)
            .collect();
        let rows: Vec<Vec<f64>> = x
            .iter()
            .zip(&count)
            .map(|(&x, &c)| vec![1.0, x, c])
            .collect();
        let f = fit_plane(&rows, 0.0, &y).unwrap();
        assert!((f[0] - 0.01).abs() < 1e-9, "{f:?}");
        assert!(
            (f[1] - 0.8).abs() < 1e-9 && (f[2] + 0.002).abs() < 1e-9,
            "{f:?}"
        );
        // The same with the intercept given as the base.
        let rows: Vec<Vec<f64>> = x.iter().zip(&count).map(|(&x, &c)| vec![x, c]).collect();
        let f = fit_plane(&rows, 0.01, &y).unwrap();
        assert!(
            (f[0] - 0.8).abs() < 1e-9 && (f[1] + 0.002).abs() < 1e-9,
            "{f:?}"
        );
    }

    #[test]
    fn counts_that_do_not_vary_give_no_fit() {
        let x = [1.0, 1.2, 0.9, 1.5];
        let y = [1.1, 1.3, 1.0, 1.6];
        let rows: Vec<Vec<f64>> = x.iter().map(|&x| vec![1.0, x, 50.0]).collect();
        assert_eq!(fit_plane(&rows, 0.0, &y), None);
    }

    #[test]
    fn corrections_that_hold_have_slope_one_and_noise_slope_zero() {
        let naive = [1.0, 1.1, 0.9, 1.2, 1.05, 0.95, 1.15, 1.0];
        // The backend adds a context cost the corrected table saw: measured = corrected.
        let context = [0.05, -0.02, 0.08, 0.0, -0.04, 0.03, 0.06, -0.01];
        let corrected: Vec<f64> = naive.iter().zip(&context).map(|(n, c)| n + c).collect();
        let hold = corrections_hold(&naive, &corrected, &corrected).unwrap();
        assert!(
            (hold.slope - 1.0).abs() < 1e-9 && hold.stderr < 1e-9,
            "{hold:?}"
        );
        // Corrections the networks do not show: measured is naive scaled by a constant.
        let measured: Vec<f64> = naive.iter().map(|n| n * 1.02).collect();
        let hold = corrections_hold(&naive, &corrected, &measured).unwrap();
        assert!(hold.slope.abs() < 1e-9, "{hold:?}");
        assert!(hold.spread > 2.0, "{hold:?}");
        // No corrections at all: nothing to say.
        assert_eq!(corrections_hold(&naive, &naive, &measured), None);
    }
}
