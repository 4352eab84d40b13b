//! How well one accuracy source ranks SSBNs the way another does: the seeded, stratified
//! sample a from-scratch ground truth is trained on, and Kendall τ-b (with a bootstrap
//! interval), Spearman ρ, τ within each decision, and the top-k overlap.

use crate::ctx::{Ctx, Method, TrainSpec};
use crate::profile;
use spacetune_backends::proxy::Proxy;
use spacetune_backends::weights::Rng;
use spacetune_ir::{AccuracyTable, Decision, Diagnostics, Handle, Module, Network, Origin};
use std::collections::{BTreeMap, BTreeSet};

/// One line of the fidelity report: how `source` ranks the sampled SSBNs of `space` (or
/// of every space, `*`) against `against`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub space: String,
    pub source: String,
    pub against: String,
    pub fidelity: Fidelity,
    /// Mean seconds the source spent on one SSBN (from the store: also for ones served).
    pub seconds_per_ssbn: f64,
}

/// An accuracy source of the report.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    /// Trained from scratch at the spec's seed: the ground truth.
    Truth,
    /// The ground truth trained again at another seed: its own noise.
    TruthAt(u64),
    /// The mean of the ground truth over its seeds: the truth with half the seed noise.
    TruthMean(usize),
    /// BBSSP's fine-tuning at the spec's seed.
    Finetune,
    /// Fine-tuning less each decision's mean.
    FinetuneLessMean,
    /// Fine-tuning at another seed: its stability.
    FinetuneAt(u64),
    Proxy(Proxy),
}

impl Source {
    /// What this source is ranked against: a repeat against what it repeats, a proxy
    /// against the truth and fine-tuning, the rest against the truth.
    fn against(self) -> &'static [Source] {
        match self {
            Source::Truth | Source::TruthMean(_) => &[],
            Source::FinetuneAt(_) => &[Source::Finetune],
            Source::Proxy(_) => &[Source::Truth, Source::Finetune],
            Source::TruthAt(_) | Source::Finetune | Source::FinetuneLessMean => &[Source::Truth],
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Truth => write!(f, "scratch"),
            Source::TruthAt(seed) => write!(f, "scratch, seed {seed}"),
            Source::TruthMean(seeds) => write!(f, "scratch, {seeds}-seed mean"),
            Source::Finetune => write!(f, "finetune"),
            Source::FinetuneLessMean => write!(f, "finetune − decision mean"),
            Source::FinetuneAt(seed) => write!(f, "finetune, seed {seed}"),
            Source::Proxy(p) => write!(f, "{}", p.name()),
        }
    }
}

/// The fidelity report: how each source ranks, and (with the truth trained at two seeds)
/// how much of the truth itself is training noise.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub truth_noise: Vec<TruthNoise>,
}

/// How much of a space's from-scratch accuracies is the networks and how much the training
/// seed, from the truth trained at two seeds on the same sample (accuracies as fractions).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TruthNoise {
    pub space: String,
    pub networks: usize,
    /// Standard deviation of the truth at the first seed.
    pub spread: f64,
    /// What one training run adds to an accuracy: sd(first − second) / √2. A shift common
    /// to every network (one seed's luck with the data order) does not count: it ranks
    /// nothing.
    pub seed_noise: f64,
    /// Standard deviation of the networks' own accuracies: the variance of the two seeds'
    /// mean less the noise it still holds (0 when the noise accounts for all of it).
    pub between: f64,
    /// The share of one run's variance that is the networks': the best squared correlation
    /// any source can reach with a truth trained once.
    pub reliability: f64,
    /// The same for the mean over the two seeds, the truth the sources are ranked against.
    pub reliability_mean: f64,
}

/// The fidelity report of `spec`'s sample: the from-scratch ground truth, BBSSP's
/// fine-tuning at `spec`'s budget (and at the next seed, for its stability), fine-tuning
/// less each decision's mean, and each proxy; every one made or served by the store. With
/// `truth_repeat`, the ground truth is trained again at the next seed: ranked against the
/// first it shows how much of the truth's order is its own noise, the sources are ranked
/// against the two seeds' mean, and the noise is split from the networks' differences.
pub fn report(
    m: &Module,
    cx: &Ctx<'_>,
    spec: &TrainSpec,
    proxies: &[Proxy],
    truth_repeat: bool,
) -> Result<Report, Diagnostics> {
    let with = |method, seed| TrainSpec {
        method,
        seed,
        ..spec.clone()
    };
    let mut made: Vec<(Source, AccuracyTable, f64)> = Vec::new();
    let mut make = |source: Source, s: &TrainSpec| -> Result<(), Diagnostics> {
        let table = profile::accuracies(m, cx, s)?;
        let (seconds, n) = profile::seconds(m, cx, &table)?;
        made.push((source, table, seconds / n.max(1) as f64));
        Ok(())
    };
    let next = spec.seed + 1;
    make(Source::Truth, &with(Method::Scratch, spec.seed))?;
    make(Source::Finetune, &with(Method::Finetune, spec.seed))?;
    make(Source::FinetuneAt(next), &with(Method::Finetune, next))?;
    for &p in proxies {
        make(Source::Proxy(p), &with(Method::Proxy(p), spec.seed))?;
    }
    if truth_repeat {
        make(Source::TruthAt(next), &with(Method::Scratch, next))?;
    }
    let values = |t: &AccuracyTable| -> BTreeMap<Handle<Network>, f64> {
        if t.scores.is_empty() {
            t.results.iter().map(|(&h, r)| (h, r.accuracy)).collect()
        } else {
            t.scores.clone()
        }
    };
    let mut sources: Vec<(Source, BTreeMap<Handle<Network>, f64>, f64)> = made
        .iter()
        .map(|(source, t, s)| (*source, values(t), *s))
        .collect();
    let tuned = sources[1].clone();
    let less_mean = less_decision_mean(m, &tuned.1);
    sources.insert(2, (Source::FinetuneLessMean, less_mean, tuned.2));
    let first = sources[0].1.clone();
    let repeated = sources
        .iter()
        .find(|s| matches!(s.0, Source::TruthAt(_)))
        .map(|s| s.1.clone());
    // What one seed ranks is partly its own training noise; the mean over both has half
    // its variance, so with a repeat the sources are ranked against that.
    let (truth_all, truth_label) = match &repeated {
        Some(second) => (mean_of(&first, second), Source::TruthMean(2)),
        None => (first.clone(), Source::Truth),
    };
    let spaces = cx.spaces(m)?;
    let mut groups: Vec<(String, Vec<u32>)> = spaces
        .iter()
        .map(|&s| (m.checked[s as usize].name.clone(), vec![s]))
        .collect();
    if spaces.len() > 1 {
        groups.push(("*".to_string(), spaces.clone()));
    }
    let mut rows = Vec::new();
    let mut truth_noise = Vec::new();
    for (space, members) in &groups {
        let only = |v: &BTreeMap<Handle<Network>, f64>| -> BTreeMap<Handle<Network>, f64> {
            v.iter()
                .filter(|(h, _)| members.contains(&m.networks[**h].space))
                .map(|(&h, &x)| (h, x))
                .collect()
        };
        let truth = only(&truth_all);
        let finetune = only(&tuned.1);
        for (source, v, seconds) in &sources {
            for &against in source.against() {
                let (base, label) = match (source, against) {
                    (Source::TruthAt(_), _) => (only(&first), Source::Truth),
                    (_, Source::Truth) => (truth.clone(), truth_label),
                    _ => (finetune.clone(), against),
                };
                rows.push(Row {
                    space: space.clone(),
                    source: source.to_string(),
                    against: label.to_string(),
                    fidelity: fidelity(m, &only(v), &base, spec.seed),
                    seconds_per_ssbn: *seconds,
                });
            }
        }
        if let Some(second) = &repeated {
            truth_noise.push(noise(space, &only(&first), &only(second)));
        }
    }
    Ok(Report { rows, truth_noise })
}

/// The mean of two sources on the networks both have.
fn mean_of(
    a: &BTreeMap<Handle<Network>, f64>,
    b: &BTreeMap<Handle<Network>, f64>,
) -> BTreeMap<Handle<Network>, f64> {
    a.iter()
        .filter_map(|(h, x)| b.get(h).map(|y| (*h, (x + y) / 2.0)))
        .collect()
}

/// The truth's noise from its two seeds' accuracies (see [`TruthNoise`]).
pub fn noise(
    space: &str,
    first: &BTreeMap<Handle<Network>, f64>,
    second: &BTreeMap<Handle<Network>, f64>,
) -> TruthNoise {
    let both: Vec<(f64, f64)> = first
        .iter()
        .filter_map(|(h, &a)| second.get(h).map(|&b| (a, b)))
        .collect();
    let variance = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)
    };
    let at_first: Vec<f64> = first.values().copied().collect();
    let difference: Vec<f64> = both.iter().map(|(a, b)| a - b).collect();
    let mean: Vec<f64> = both.iter().map(|(a, b)| (a + b) / 2.0).collect();
    let noise = variance(&difference) / 2.0;
    let between = (variance(&mean) - noise / 2.0).max(0.0);
    TruthNoise {
        space: space.to_string(),
        networks: both.len(),
        spread: variance(&at_first).sqrt(),
        seed_noise: noise.sqrt(),
        between: between.sqrt(),
        reliability: between / (between + noise),
        reliability_mean: between / (between + noise / 2.0),
    }
}

/// Each SSBN's value less the mean of its decision's SSBNs (SSBN_0 less the mean of every
/// value of its space): a per-layer baseline, so that a layer whose re-initialisation hurts
/// more does not sink all of its blocks.
fn less_decision_mean(
    m: &Module,
    v: &BTreeMap<Handle<Network>, f64>,
) -> BTreeMap<Handle<Network>, f64> {
    let group = |h: Handle<Network>| {
        let n = &m.networks[h];
        match n.origin {
            Origin::Swap { decision, .. } => (n.space, Some(decision)),
            _ => (n.space, None),
        }
    };
    // (space, decision; None for the whole space) → (sum, count).
    type Group = (u32, Option<Handle<Decision>>);
    let mut sums: BTreeMap<Group, (f64, usize)> = BTreeMap::new();
    for (&h, &x) in v {
        let (space, d) = group(h);
        for key in [(space, d), (space, None)] {
            let e = sums.entry(key).or_default();
            e.0 += x;
            e.1 += 1;
            if d.is_none() {
                break;
            }
        }
    }
    v.iter()
        .map(|(&h, &x)| {
            let (sum, n) = sums[&group(h)];
            (h, x - sum / n as f64)
        })
        .collect()
}

/// SSBN_0 of space `s` and `n` of its other SSBNs, drawn in turn from each decision (in a
/// seeded order, each decision's SSBNs shuffled), so every layer is represented.
pub fn sample(m: &Module, s: u32, n: usize, seed: u64) -> BTreeSet<Handle<Network>> {
    let mut rng = Rng::new(seed ^ 0x5a3_9e1);
    let mut by_decision: BTreeMap<Handle<Decision>, Vec<Handle<Network>>> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (h, net) in m.networks_of(s) {
        match net.origin {
            Origin::Swap { decision, .. } => by_decision.entry(decision).or_default().push(h),
            Origin::Base => {
                out.insert(h);
            }
            Origin::Sampled | Origin::Probe => {}
        }
    }
    let mut groups: Vec<Vec<Handle<Network>>> = by_decision
        .into_values()
        .map(|g| {
            let order = rng.permutation(g.len());
            order.into_iter().map(|i| g[i]).collect()
        })
        .collect();
    let order = rng.permutation(groups.len());
    groups = order
        .into_iter()
        .map(|i| std::mem::take(&mut groups[i]))
        .collect();
    let (mut taken, mut round) = (0, 0);
    while taken < n && groups.iter().any(|g| round < g.len()) {
        for g in &groups {
            if taken < n && round < g.len() {
                out.insert(g[round]);
                taken += 1;
            }
        }
        round += 1;
    }
    out
}

/// Each value's percentile rank among `values`: 0 for the lowest, 1 for the highest, ties
/// sharing their mean rank (a single value gets 0.5).
pub fn percentile_ranks<K: Ord + Copy>(values: &BTreeMap<K, f64>) -> BTreeMap<K, f64> {
    let keys: Vec<K> = values.keys().copied().collect();
    let v: Vec<f64> = values.values().copied().collect();
    let r = ranks(&v);
    let span = (v.len().max(2) - 1) as f64;
    keys.into_iter()
        .zip(r)
        .map(|(k, r)| (k, if v.len() < 2 { 0.5 } else { r / span }))
        .collect()
}

/// 0-based ranks, ties given their mean rank; NaN ranks lowest.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    let key = |x: f64| if x.is_nan() { f64::NEG_INFINITY } else { x };
    order.sort_by(|&a, &b| key(v[a]).total_cmp(&key(v[b])));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && key(v[order[j + 1]]) == key(v[order[i]]) {
            j += 1;
        }
        for &k in &order[i..=j] {
            r[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

/// Kendall's τ-b of paired samples (ties in either counted as in τ-b); NaN for fewer
/// than 2 pairs or when one side is constant.
pub fn kendall(x: &[f64], y: &[f64]) -> f64 {
    let (mut concordant, mut discordant, mut tie_x, mut tie_y) = (0.0f64, 0.0, 0.0, 0.0);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
            match (dx == 0.0, dy == 0.0) {
                (true, true) => {}
                (true, false) => tie_x += 1.0,
                (false, true) => tie_y += 1.0,
                _ if (dx > 0.0) == (dy > 0.0) => concordant += 1.0,
                _ => discordant += 1.0,
            }
        }
    }
    let denominator =
        ((concordant + discordant + tie_x) * (concordant + discordant + tie_y)).sqrt();
    (concordant - discordant) / denominator
}

/// Spearman's ρ: Pearson's correlation of the (tie-averaged) ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// How one source (`profile`) ranks the networks another (`truth`) ranks, on the networks
/// both have.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Fidelity {
    pub networks: usize,
    pub tau: f64,
    /// The 95% percentile interval of τ over 1000 bootstrap resamples of the networks.
    pub tau_low: f64,
    pub tau_high: f64,
    pub rho: f64,
    /// Mean τ within a decision (each decision's SSBNs with SSBN_0, its default), over the
    /// decisions with at least 3 such networks; and how many there were.
    pub within_tau: f64,
    pub within_decisions: usize,
    /// How many of the truth's top 3 are in the profile's top 10.
    pub top3_in_top10: usize,
}

/// Compares `profile` with `truth` on the networks of `m` that both give a value for.
pub fn fidelity(
    m: &Module,
    profile: &BTreeMap<Handle<Network>, f64>,
    truth: &BTreeMap<Handle<Network>, f64>,
    seed: u64,
) -> Fidelity {
    let both: Vec<Handle<Network>> = truth
        .keys()
        .filter(|h| profile.contains_key(h))
        .copied()
        .collect();
    let x: Vec<f64> = both.iter().map(|h| profile[h]).collect();
    let y: Vec<f64> = both.iter().map(|h| truth[h]).collect();
    let tau = kendall(&x, &y);
    let mut rng = Rng::new(seed ^ 0xb007);
    let mut taus: Vec<f64> = (0..1000)
        .map(|_| {
            let pick: Vec<usize> = (0..x.len())
                .map(|_| rng.below(x.len() as u64) as usize)
                .collect();
            let bx: Vec<f64> = pick.iter().map(|&i| x[i]).collect();
            let by: Vec<f64> = pick.iter().map(|&i| y[i]).collect();
            kendall(&bx, &by)
        })
        .filter(|t| t.is_finite())
        .collect();
    taus.sort_by(f64::total_cmp);
    let at = |q: f64| {
        taus.get(((taus.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    // Within a decision: its SSBNs and SSBN_0 of the same space.
    let mut groups: BTreeMap<(u32, Handle<Decision>), Vec<usize>> = BTreeMap::new();
    for (i, h) in both.iter().enumerate() {
        let net = &m.networks[*h];
        if let Origin::Swap { decision, .. } = net.origin {
            groups.entry((net.space, decision)).or_default().push(i);
        }
    }
    for (i, h) in both.iter().enumerate() {
        let net = &m.networks[*h];
        if net.origin == Origin::Base {
            for ((s, _), g) in groups.iter_mut() {
                if *s == net.space {
                    g.push(i);
                }
            }
        }
    }
    let within: Vec<f64> = groups
        .values()
        .filter(|g| g.len() >= 3)
        .map(|g| {
            let gx: Vec<f64> = g.iter().map(|&i| x[i]).collect();
            let gy: Vec<f64> = g.iter().map(|&i| y[i]).collect();
            kendall(&gx, &gy)
        })
        .filter(|t| t.is_finite())
        .collect();
    let top = |v: &[f64], k: usize| -> BTreeSet<usize> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
        order.into_iter().take(k).collect()
    };
    Fidelity {
        networks: both.len(),
        tau,
        tau_low: at(0.025),
        tau_high: at(0.975),
        rho: spearman(&x, &y),
        within_tau: within.iter().sum::<f64>() / within.len() as f64,
        within_decisions: within.len(),
        top3_in_top10: top(&y, 3).intersection(&top(&x, 10)).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_and_spearman_match_hand_computed_values() {
        // 5 pairs, one discordant swap (3↔4): C = 9, D = 1, τ = 0.8; ρ = 1 − 6·2/(5·24) = 0.9.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [1.0, 2.0, 4.0, 3.0, 5.0];
        assert!((kendall(&x, &y) - 0.8).abs() < 1e-12);
        assert!((spearman(&x, &y) - 0.9).abs() < 1e-12);
        let reversed: Vec<f64> = y.iter().rev().copied().collect();
        assert!((kendall(&x, &reversed) + 0.8).abs() < 1e-12);
        // τ-b with ties (scipy.stats.kendalltau([1,2,2,3], [1,3,2,4]) = 0.9128709...).
        let t = kendall(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]);
        assert!((t - 0.912_870_929_175_276_9).abs() < 1e-12, "{t}");
        assert!(kendall(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn truth_noise_splits_seed_noise_from_the_networks_differences() {
        let map = |v: &[f64]| -> BTreeMap<Handle<Network>, f64> {
            v.iter()
                .enumerate()
                .map(|(i, &x)| (Handle::new(i), x))
                .collect()
        };
        // The second seed shifted by 10 throughout: a shift ranks nothing and is not noise.
        // Differences −11, −9, −11, −9: variance 4/3, noise 2/3 per run. Means 6.5, 7.5,
        // 10.5, 11.5: variance 17/3, of which 1/3 is noise, so 16/3 is the networks'.
        let n = noise(
            "s",
            &map(&[1.0, 3.0, 5.0, 7.0]),
            &map(&[12.0, 12.0, 16.0, 16.0]),
        );
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert_eq!(n.networks, 4);
        assert!(close(n.spread, (20.0f64 / 3.0).sqrt()), "{n:?}");
        assert!(close(n.seed_noise, (2.0f64 / 3.0).sqrt()), "{n:?}");
        assert!(close(n.between, (16.0f64 / 3.0).sqrt()), "{n:?}");
        assert!(close(n.reliability, 16.0 / 18.0), "{n:?}");
        assert!(close(n.reliability_mean, 16.0 / 17.0), "{n:?}");
        // Seeds that reverse the order: every difference is noise, nothing is left over.
        let n = noise("s", &map(&[1.0, 2.0, 3.0]), &map(&[3.0, 2.0, 1.0]));
        assert!(close(n.seed_noise, 2.0f64.sqrt()), "{n:?}");
        assert_eq!(
            (n.between, n.reliability, n.reliability_mean),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn percentile_ranks_span_zero_to_one_and_share_ties() {
        let v: BTreeMap<u32, f64> = [(0, 5.0), (1, -2.0), (2, 5.0), (3, 9.0)].into();
        let r = percentile_ranks(&v);
        assert_eq!(r[&1], 0.0);
        assert_eq!(r[&3], 1.0);
        assert_eq!(r[&0], r[&2]);
        assert!((r[&0] - 0.5).abs() < 1e-12);
    }
}
