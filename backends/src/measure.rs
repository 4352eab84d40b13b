//! The measurement protocol: how spacetune turns repeated runs on a shared, noisy machine
//! into one latency per network, and the driver that measures a set of networks through
//! the cache.
//!
//! The machine this was designed on flips between a fast and a ~35% slower state on a scale
//! of seconds; medians of back-to-back runs then differ by 10–28% between test and retest,
//! low quantiles by 0.7–5%. So: warm up; interleave the networks of a chunk in windows, so
//! each network's samples are spread over time; time a reference network in every window
//! and divide out its drift, and scale every chunk so the reference keeps the latency of its
//! first measurement (the machine may be in another state from one chunk to the next);
//! report the 10th percentile; stop when another window no longer
//! moves the estimate, or when the budget is spent; leave out windows caught in a slow state;
//! flag networks whose windows disagree.
//!
//! A network loaded twice is not the same twice: ORT sessions of one model settle at p10s up
//! to 30% apart, bimodally (memory placement), while one session is stable to 1%. So every
//! network — the reference too — is loaded in several sessions, timed interleaved, and the
//! fastest session stands for it: the latency the network reaches when placed well, which
//! is what a second run reproduces.

use crate::cache::Cache;
use crate::{Backend, BackendError, Latency, Lowered, Result, Runner, Timing};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Protocol {
    /// Untimed runs before the first window (caches, lazy initialisation, the allocator).
    pub warmup_runs: u32,
    /// Windows every network gets, at least and at most.
    pub min_windows: u32,
    pub max_windows: u32,
    /// Within a window a network runs until it has `window_runs` samples and `window_ms`
    /// milliseconds have passed, whichever comes later.
    pub window_runs: u32,
    pub window_ms: f64,
    /// Stop adding windows when the p10 estimate moved less than this (relative).
    pub stable: f64,
    /// Networks interleaved in one chunk (results are saved after each chunk).
    pub chunk: usize,
    /// Window p10s further apart than this (relative) flag the result as noisy.
    pub noisy_spread: f64,
    /// Divide each window's samples by the reference network's drift in that window.
    pub normalise: bool,
    /// Windows whose p10 exceeds the network's best window's by more than this (relative)
    /// were caught in a slow machine state and are left out.
    pub slow_window: f64,
    /// Sessions each timed network is loaded in; the fastest one's figures are reported.
    pub sessions: u32,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            warmup_runs: 10,
            min_windows: 4,
            max_windows: 12,
            window_runs: 10,
            window_ms: 20.0,
            stable: 0.01,
            chunk: 8,
            noisy_spread: 0.10,
            normalise: true,
            slow_window: 0.05,
            sessions: 3,
        }
    }
}

impl Protocol {
    /// A quick protocol for tests: fewer, shorter windows.
    pub fn quick() -> Protocol {
        Protocol {
            warmup_runs: 3,
            min_windows: 3,
            max_windows: 4,
            window_runs: 5,
            window_ms: 5.0,
            sessions: 1,
            ..Protocol::default()
        }
    }
}

/// The `q` quantile (0..=1) of `xs` by linear interpolation; `xs` need not be sorted.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Summary statistics of samples (ms), with the per-window p10s for the noise flag.
pub fn summarise(samples: &[f64], window_p10s: &[f64], noisy_spread: f64) -> Latency {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let lo = window_p10s.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = window_p10s.iter().copied().fold(0.0, f64::max);
    Latency {
        p10_ms: quantile(samples, 0.10),
        median_ms: quantile(samples, 0.5),
        mean_ms: mean,
        var_ms2: var,
        count: samples.len() as u32,
        noisy: window_p10s.len() > 1 && hi / lo - 1.0 > noisy_spread,
        per_layer: None,
    }
}

struct Subject<'a> {
    runner: Box<dyn Runner + 'a>,
    /// (window index, samples in ms) for every window the network took part in.
    windows: Vec<(usize, Vec<f64>)>,
    done: bool,
}

impl Subject<'_> {
    fn window(&mut self, p: &Protocol) -> Result<Vec<f64>> {
        let start = Instant::now();
        let mut samples = Vec::new();
        while samples.len() < p.window_runs as usize
            || start.elapsed() < Duration::from_secs_f64(p.window_ms / 1e3)
        {
            samples.push(self.runner.once()?.as_secs_f64() * 1e3);
        }
        Ok(samples)
    }
    /// Samples with each window's drift divided out, over the first `upto` windows.
    fn samples(&self, drift: &[f64], upto: usize) -> Vec<f64> {
        self.windows[..upto]
            .iter()
            .flat_map(|(w, xs)| xs.iter().map(move |x| x / drift[*w]))
            .collect()
    }
}

/// Times the runners of one chunk, interleaved. `reference` (an index into `runners`) is
/// the network whose drift is divided out; it is measured like the others.
pub fn time_chunk<'a>(
    runners: Vec<Box<dyn Runner + 'a>>,
    reference: Option<usize>,
    p: &Protocol,
) -> Vec<Result<Latency>> {
    let mut subjects: Vec<Result<Subject>> = runners
        .into_iter()
        .map(|mut runner| {
            for _ in 0..p.warmup_runs {
                runner.once()?;
            }
            Ok(Subject {
                runner,
                windows: Vec::new(),
                done: false,
            })
        })
        .collect();
    // The drift of window w: the reference's p10 in w over its best window's p10.
    let mut drift: Vec<f64> = Vec::new();
    for w in 0..p.max_windows as usize {
        // Rotate the order so no network always runs right after the same one.
        let n = subjects.len();
        for k in 0..n {
            let i = (k + w) % n;
            if let Ok(s) = &mut subjects[i] {
                if s.done && Some(i) != reference {
                    continue;
                }
                match s.window(p) {
                    Ok(samples) => s.windows.push((w, samples)),
                    Err(e) => subjects[i] = Err(e),
                }
            }
        }
        drift = match reference.and_then(|r| subjects[r].as_ref().ok()) {
            Some(r) if p.normalise => {
                let p10s: Vec<f64> = r.windows.iter().map(|(_, x)| quantile(x, 0.1)).collect();
                let best = p10s.iter().copied().fold(f64::INFINITY, f64::min);
                p10s.iter().map(|x| x / best).collect()
            }
            _ => vec![1.0; w + 1],
        };
        let mut all_done = true;
        for s in subjects.iter_mut().flatten() {
            let k = s.windows.len();
            if !s.done && k >= p.min_windows as usize {
                let now = quantile(&s.samples(&drift, k), 0.1);
                let before = quantile(&s.samples(&drift, k - 1), 0.1);
                s.done = (now / before - 1.0).abs() < p.stable;
            }
            all_done &= s.done;
        }
        if all_done {
            break;
        }
    }
    subjects
        .into_iter()
        .map(|s| {
            let s = s?;
            let p10s: Vec<f64> = s
                .windows
                .iter()
                .map(|(w, xs)| quantile(xs, 0.1) / drift[*w])
                .collect();
            // Windows caught in a slow state (p10 well above the network's best window) are
            // left out of the statistics; the noise flag still sees every window.
            let best = p10s.iter().copied().fold(f64::INFINITY, f64::min);
            let drift = &drift;
            let samples: Vec<f64> = s
                .windows
                .iter()
                .zip(&p10s)
                .filter(|(_, &w)| w <= best * (1.0 + p.slow_window))
                .flat_map(|((w, xs), _)| xs.iter().map(move |x| x / drift[*w]))
                .collect();
            Ok(summarise(&samples, &p10s, p.noisy_spread))
        })
        .collect()
}

/// What happened to one network of a measure run.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    pub hash: String,
    pub cached: bool,
    pub latency: std::result::Result<Latency, String>,
}

/// Measures `lowered` through `cache`: cached results are reused, every new result is
/// written as soon as its chunk is done, a failing network is recorded and the run goes on.
/// `reference` is the lowered network timed in every chunk to cancel drift (SSBN_0).
pub fn measure_all(
    backend: &dyn Backend,
    lowered: &[Lowered],
    reference: Option<&Lowered>,
    protocol: &Protocol,
    cache: &Cache,
    mut progress: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    let fingerprint = backend.fingerprint();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; lowered.len()];
    let mut todo = Vec::new();
    for (i, l) in lowered.iter().enumerate() {
        match cache.get(&fingerprint, &l.hash)? {
            Some(latency) => {
                let o = Outcome {
                    id: l.id.clone(),
                    hash: l.hash.clone(),
                    cached: true,
                    latency: Ok(latency),
                };
                progress(&o);
                outcomes[i] = Some(o);
            }
            None => todo.push(i),
        }
    }
    let pending: Vec<&Lowered> = todo.iter().map(|&i| &lowered[i]).collect();
    backend.prepare_all(&pending)?;
    // The reference's latency every chunk is scaled to (see below).
    let mut anchor = match reference {
        Some(r) => cache.get(&fingerprint, &r.hash)?.map(|l| l.p10_ms),
        None => None,
    };
    for chunk in todo.chunks(protocol.chunk.max(1)) {
        let mut timed: Vec<(usize, Box<dyn Runner + '_>)> = Vec::new();
        for &i in chunk {
            // A reported latency (or a failure) is final at once: save it before the next
            // network starts, so an interrupted run keeps it.
            let latency = match backend.prepare(&lowered[i]) {
                Ok(Timing::Timed(r)) => {
                    timed.push((i, r));
                    continue;
                }
                Ok(Timing::Reported(l)) => Ok(l),
                Err(e) => Err(e.to_string()),
            };
            outcomes[i] = Some(record(
                cache,
                &fingerprint,
                &lowered[i],
                latency,
                &mut progress,
            )?);
        }
        if !timed.is_empty() {
            // Every network in `sessions` sessions (the first is the one prepared above).
            let mut owner: Vec<usize> = Vec::new();
            let mut runners: Vec<Box<dyn Runner + '_>> = Vec::new();
            let mut failed: Vec<(usize, String)> = Vec::new();
            for (i, r) in timed {
                owner.push(i);
                runners.push(r);
                for _ in 1..protocol.sessions {
                    match backend.prepare(&lowered[i]) {
                        Ok(Timing::Timed(r)) => {
                            owner.push(i);
                            runners.push(r);
                        }
                        Ok(Timing::Reported(_)) => {}
                        Err(e) => failed.push((i, e.to_string())),
                    }
                }
            }
            let is_reference = |i: usize| reference.is_some_and(|r| lowered[i].hash == r.hash);
            // The reference rides along (in as many sessions) unless it is in the chunk.
            let reference_owner = usize::MAX;
            if protocol.normalise && !owner.iter().any(|&i| is_reference(i)) {
                if let Some(r) = reference {
                    for _ in 0..protocol.sessions.max(1) {
                        if let Ok(Timing::Timed(x)) = backend.prepare(r) {
                            owner.push(reference_owner);
                            runners.push(x);
                        }
                    }
                }
            }
            let reference_runs: Vec<usize> = (0..owner.len())
                .filter(|&k| match owner[k] {
                    i if i == reference_owner => true,
                    i => is_reference(i),
                })
                .collect();
            let latencies = time_chunk(runners, reference_runs.first().copied(), protocol);
            // Chunk-to-chunk drift: the reference's p10 in this chunk (its fastest session)
            // against its anchor (its first measurement, the cached one) scales the chunk.
            let chunk_reference = fastest(reference_runs.iter().map(|&k| &latencies[k]))
                .and_then(|l| l.as_ref().ok())
                .map(|l| l.p10_ms);
            if anchor.is_none() {
                anchor = chunk_reference;
            }
            let factor = match (anchor, chunk_reference) {
                (Some(a), Some(c)) if protocol.normalise && c > 0.0 => a / c,
                _ => 1.0,
            };
            let mut done: Vec<usize> = owner.clone();
            done.retain(|&i| i != reference_owner);
            done.dedup();
            for i in done {
                let best = best_session(&owner, &latencies, i);
                let latency = match failed.iter().find(|(f, _)| *f == i) {
                    Some((_, e)) if best.is_err() => Err(e.clone()),
                    _ => best.and_then(|mut l| {
                        l.scale(factor);
                        l.per_layer = backend.profile(&lowered[i]).map_err(|e| e.to_string())?;
                        Ok(l)
                    }),
                };
                outcomes[i] = Some(record(
                    cache,
                    &fingerprint,
                    &lowered[i],
                    latency,
                    &mut progress,
                )?);
            }
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every network has an outcome"))
        .collect())
}

/// The session with the lowest p10 among `results` (a failure only if all failed).
fn fastest<'a>(results: impl Iterator<Item = &'a Result<Latency>>) -> Option<&'a Result<Latency>> {
    let mut best: Option<&Result<Latency>> = None;
    for r in results {
        best = match (best, r) {
            (None, _) => Some(r),
            (Some(Err(_)), Ok(_)) => Some(r),
            (Some(Ok(b)), Ok(l)) if l.p10_ms < b.p10_ms => Some(r),
            (b, _) => b,
        };
    }
    best
}

/// Network `i`'s fastest session among the runners it owns (`owner[k]` is runner k's
/// network).
fn best_session(
    owner: &[usize],
    results: &[Result<Latency>],
    i: usize,
) -> std::result::Result<Latency, String> {
    let sessions = (0..owner.len())
        .filter(|&k| owner[k] == i)
        .map(|k| &results[k]);
    match fastest(sessions) {
        Some(Ok(l)) => Ok(l.clone()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("nothing was timed".into()),
    }
}

fn record(
    cache: &Cache,
    fingerprint: &crate::Fingerprint,
    l: &Lowered,
    latency: std::result::Result<Latency, String>,
    progress: &mut impl FnMut(&Outcome),
) -> Result<Outcome> {
    cache.put(fingerprint, l, &latency)?;
    let o = Outcome {
        id: l.id.clone(),
        hash: l.hash.clone(),
        cached: false,
        latency,
    };
    progress(&o);
    Ok(o)
}

/// Times networks side by side: interleaved in the same windows, with the first one as the
/// drift reference, so their latencies can be compared with each other (fusion probes,
/// micro-benchmarks). No cache.
pub fn measure_together(
    backend: &dyn Backend,
    lowered: &[Lowered],
    p: &Protocol,
) -> Result<Vec<Latency>> {
    backend.prepare_all(&lowered.iter().collect::<Vec<_>>())?;
    let mut reported: Vec<Option<Latency>> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    let mut runners = Vec::new();
    for (i, l) in lowered.iter().enumerate() {
        match backend.prepare(l)? {
            Timing::Reported(l) => reported.push(Some(l)),
            Timing::Timed(r) => {
                reported.push(None);
                owner.push(i);
                runners.push(r);
                for _ in 1..p.sessions {
                    if let Timing::Timed(r) = backend.prepare(l)? {
                        owner.push(i);
                        runners.push(r);
                    }
                }
            }
        }
    }
    let reference = (!runners.is_empty()).then_some(0);
    let timed = time_chunk(runners, reference, p);
    reported
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(l) => Ok(l),
            None => best_session(&owner, &timed, i).map_err(BackendError::Runtime),
        })
        .collect()
}

/// Times one network alone with the protocol (no cache): for probes and micro-benchmarks.
pub fn measure_one(backend: &dyn Backend, lowered: &Lowered, p: &Protocol) -> Result<Latency> {
    measure_together(backend, std::slice::from_ref(lowered), p)?
        .pop()
        .ok_or_else(|| BackendError::Runtime("nothing was timed".into()))
}
