//! The measurement protocol: how spacetune turns repeated runs on a shared, noisy machine
//! into one latency per network, and the driver that measures a set of networks through
//! the cache.
//!
//! The machines this runs on share their cores with other tenants. A fixed piece of CPU work
//! takes 70 µs in the fast state and 115–128 µs in the slow one, and the machine flips
//! between them on its own: spells of 50 ms to 1.5 s, and stretches of a minute when it is
//! mostly slow. Spells are short next to a round of windows over a chunk, so they hit
//! networks one by one: dividing every window by one reference network's drift, or keeping
//! only each network's fastest windows, mixed states between the networks of a chunk and
//! the reference they are scaled by (whole chunks came out 25% off).
//!
//! So: warm up; interleave the networks of a chunk in short windows, every network in every
//! window, until no estimate moves; a network's figure is the median over windows of each
//! window's 10th percentile (the low quantile drops preemptions, the median follows the
//! state the chunk mostly ran in, the same for all its networks). Then scale the chunk so
//! the reference (SSBN_0) and a few *bridges* (networks of earlier chunks, timed again)
//! keep their stored latencies, by the median of their ratios. The machine's states do not
//! slow every network alike (the large reference and SSBNs more than small networks), so
//! after a run's first chunk the bridges are networks of that chunk, the ones most like the
//! rest. When the ratios disagree (by more than 3%) or many networks are noisy, the machine
//! changed state during the chunk: it is timed again, and the calmest attempt kept. So is a
//! chunk whose scale is more than 3% off the scale the process's chunks typically get: no
//! one factor puts a chunk timed in an unusual state on the scale of the others.
//!
//! Every network — the reference and the bridges too — is loaded in several sessions, timed
//! interleaved, and the fastest session stands for it: a runtime may place one session's
//! memory worse than another's.
//!
//! `SPACETUNE_TRACE=1` prints every chunk's window p10s and scale estimates to stderr.

use crate::pin::{Pin, Pinned};
use crate::store::{Sqlite, Store};
use crate::{Backend, BackendError, Fingerprint, Latency, Lowered, Result, Runner, Timing};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Mutex;
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
    /// Stop adding windows when no estimate of the chunk moved more than this (relative).
    pub stable: f64,
    /// Networks interleaved in one chunk (results are saved after each chunk).
    pub chunk: usize,
    /// The middle half of a network's window p10s spanning more than this (relative)
    /// flags it as noisy.
    pub noisy_spread: f64,
    /// Scale every chunk so the reference and the bridges keep their stored latencies.
    pub normalise: bool,
    /// Sessions each timed network is loaded in; the fastest one's figures are reported.
    pub sessions: u32,
    /// Networks of earlier chunks timed again in every chunk, beside the reference, to
    /// scale the chunk by a median rather than by one network.
    pub bridges: usize,
    /// Hold every chunk after a run's first to the first chunk's [`most_alike`] networks, not
    /// to the anchor's bridges: bridges like the networks they scale.
    pub alike: bool,
    /// A chunk whose scale estimates disagree by more than this (relative), or with more
    /// than a quarter of its networks noisy, was timed while the machine changed state: it
    /// is timed again, up to `attempts` times in all, and the calmest attempt kept.
    pub calm: f64,
    pub attempts: u32,
    /// A chunk whose scale factor is further than this (relative) from the factors this
    /// process has typically put on the same anchor is not calm either: in the machine's
    /// slow states large networks (the reference and the bridges) slow down more than small
    /// ones, so scaling a small network by their ratio over-corrects it.
    pub drift: f64,
    /// The core the timing thread is pinned to while it times a chunk.
    pub pin: Pin,
    /// Where the fusion test's runs are timed, each in a process of its own; `None` (a
    /// library caller with no program to start) times them in this one, and its verdicts
    /// say so. Not a setting of the timing itself, so not in the label.
    #[serde(skip)]
    pub apart: Option<crate::apart::Apart>,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            warmup_runs: 10,
            min_windows: 6,
            max_windows: 20,
            window_runs: 5,
            window_ms: 5.0,
            stable: 0.01,
            chunk: 8,
            noisy_spread: 0.10,
            normalise: true,
            sessions: 3,
            bridges: 2,
            alike: true,
            calm: 0.03,
            attempts: 4,
            drift: 0.03,
            pin: Pin::Last,
            apart: None,
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
            sessions: 1,
            bridges: 1,
            attempts: 1,
            ..Protocol::default()
        }
    }

    /// The protocol's name where it is a preset (`default`, `quick`, else `custom`) and a
    /// digest of every setting: part of each measurement's key, so a result timed under one
    /// protocol is never served as another's.
    pub fn label(&self) -> String {
        let json = serde_json::to_string(self).expect("a protocol serialises");
        let digest = Sha256::digest(json.as_bytes());
        let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        // A preset under another pin is still that preset; the pin is named beside it.
        let same = |p: Protocol| {
            serde_json::to_string(&Protocol { pin: self.pin, ..p }).is_ok_and(|j| j == json)
        };
        let name = if same(Protocol::default()) {
            "default"
        } else if same(Protocol::quick()) {
            "quick"
        } else {
            "custom"
        };
        match self.pin {
            Pin::Last => format!("{name}@{short}"),
            pin => format!("{name}@{short} cpu={pin}"),
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

/// The sample variance of `xs` (n − 1 in the denominator; 0 for a single value).
pub fn variance(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)
}

/// Summary statistics of a network's windows of samples (ms). The figure of merit is the
/// median over windows of each window's 10th percentile: within a window the low quantile
/// drops preemptions; across windows the median follows the state the machine spent most
/// of the chunk in, which every network of the chunk shares (the chunk's scale corrects
/// that state afterwards). `noisy` when the middle half of the window p10s spans more than
/// `noisy_spread` of it: the machine switched states about half way.
pub fn summarise(windows: &[Vec<f64>], noisy_spread: f64) -> Latency {
    let samples: Vec<f64> = windows.iter().flatten().copied().collect();
    let p10s: Vec<f64> = windows.iter().map(|x| quantile(x, 0.1)).collect();
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let typical = quantile(&p10s, 0.5);
    Latency {
        p10_ms: typical,
        median_ms: quantile(&samples, 0.5),
        mean_ms: mean,
        var_ms2: variance(&samples),
        count: samples.len() as u32,
        noisy: (quantile(&p10s, 0.75) - quantile(&p10s, 0.25)) / typical > noisy_spread,
        unscaled: false,
        per_layer: None,
    }
}

struct Subject<'a> {
    runner: Box<dyn Runner + 'a>,
    /// The samples (ms) of every window so far.
    windows: Vec<Vec<f64>>,
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
    /// The estimate over the first `upto` windows.
    fn estimate(&self, upto: usize) -> f64 {
        let p10s: Vec<f64> = self.windows[..upto]
            .iter()
            .map(|x| quantile(x, 0.1))
            .collect();
        quantile(&p10s, 0.5)
    }
}

fn fmt3(xs: &[f64]) -> Vec<String> {
    xs.iter().map(|x| format!("{x:.4}")).collect()
}

/// Times the runners of one chunk, interleaved in windows. Every runner takes part in every
/// window, so all estimates of a chunk come from the same stretch of time: a network that
/// stopped early (or caught a rare fast window the others did not) would carry another
/// state than the reference it is scaled by. The chunk stops when another window moves no
/// estimate by more than `stable`, after `min_windows`, or at `max_windows`.
pub fn time_chunk<'a>(runners: Vec<Box<dyn Runner + 'a>>, p: &Protocol) -> Vec<Result<Latency>> {
    let pinned = match Pinned::new(p.pin) {
        Ok(pinned) => pinned,
        Err(e) => {
            return runners
                .iter()
                .map(|_| Err(BackendError::Option(e.clone())))
                .collect()
        }
    };
    let trace = tracing();
    let moved_before = if trace { migrations() } else { None };
    let mut subjects: Vec<Result<Subject>> = runners
        .into_iter()
        .map(|mut runner| {
            for _ in 0..p.warmup_runs {
                runner.once()?;
            }
            Ok(Subject {
                runner,
                windows: Vec::new(),
            })
        })
        .collect();
    for w in 0..p.max_windows as usize {
        // Rotate the order so no network always runs right after the same one.
        let n = subjects.len();
        for k in 0..n {
            let i = (k + w) % n;
            if let Ok(s) = &mut subjects[i] {
                match s.window(p) {
                    Ok(samples) => s.windows.push(samples),
                    Err(e) => subjects[i] = Err(e),
                }
            }
        }
        let settled = w + 1 >= p.min_windows as usize
            && subjects.iter().flatten().all(|s| {
                let k = s.windows.len();
                (s.estimate(k) / s.estimate(k - 1) - 1.0).abs() < p.stable
            });
        if settled {
            break;
        }
    }
    if trace {
        let moved = migrations().zip(moved_before).map(|(b, a)| b - a);
        eprintln!(
            "  chunk on cpu {:?}, migrations while timing {moved:?}",
            pinned.core
        );
        for s in subjects.iter().flatten() {
            let p10s: Vec<f64> = s.windows.iter().map(|x| quantile(x, 0.1)).collect();
            eprintln!("  runner p10s {:?}", fmt3(&p10s));
        }
    }
    subjects
        .into_iter()
        .map(|s| Ok(summarise(&s?.windows, p.noisy_spread)))
        .collect()
}

/// Whether `SPACETUNE_TRACE` asks for every chunk's windows and scale estimates (and the
/// fusion test's verdict at every probe size) on stderr.
pub fn tracing() -> bool {
    std::env::var_os("SPACETUNE_TRACE").is_some()
}

/// How often the calling thread has moved between cores (Linux's `se.nr_migrations`), for
/// the trace.
fn migrations() -> Option<u64> {
    let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
    let line = sched.lines().find(|l| l.starts_with("se.nr_migrations"))?;
    line.split(':').nth(1)?.trim().parse().ok()
}

/// What happened to one network of a measure run.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    pub hash: String,
    pub cached: bool,
    pub latency: std::result::Result<Latency, String>,
}

/// The scale factors this process has put chunks on, per anchor (backend, reference and
/// its stored figure): what a chunk's factor is compared with to tell whether it was timed
/// in the machine's typical state. Kept by the caller for the whole process, across the
/// measure runs of one anchor (a run's networks, then its repeats).
#[derive(Debug, Default)]
pub struct Drift(Mutex<BTreeMap<String, Vec<f64>>>);

impl Drift {
    /// Factors recorded before the median of an anchor's is taken as typical.
    const SETTLED: usize = 3;

    pub const fn new() -> Drift {
        Drift(Mutex::new(BTreeMap::new()))
    }

    /// The history of the whole process, which every command's contexts share.
    pub fn process() -> &'static Drift {
        static PROCESS: Drift = Drift::new();
        &PROCESS
    }

    fn typical(&self, key: &str) -> Option<f64> {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let factors = seen.get(key)?;
        (factors.len() >= Self::SETTLED).then(|| quantile(factors, 0.5))
    }

    fn record(&self, key: &str, factor: f64) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.entry(key.to_string()).or_default().push(factor);
    }
}

/// Measures `lowered` through `cache`: cached results are reused, every new result is
/// written as soon as its chunk is done, a failing network is recorded and the run goes on.
/// `reference` is the lowered network timed in every chunk to cancel drift (SSBN_0);
/// `drift` holds the factors earlier chunks on the same anchor were scaled by.
pub fn measure_all(
    backend: &dyn Backend,
    lowered: &[Lowered],
    reference: Option<&Lowered>,
    protocol: &Protocol,
    cache: &dyn Store,
    drift: &Drift,
    mut progress: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    // A core the process may not use is a setting's error: said before anything is timed.
    drop(Pinned::new(protocol.pin).map_err(BackendError::Option)?);
    let fingerprint = backend.fingerprint().under(protocol);
    let (mut outcomes, todo) = from_cache(cache, &fingerprint, lowered, &mut progress)?;
    let pending: Vec<&Lowered> = todo.iter().map(|&i| &lowered[i]).collect();
    backend.prepare_all(&pending)?;
    let is_reference = |i: usize| reference.is_some_and(|r| lowered[i].hash == r.hash);
    // The reference's latency every chunk is scaled to (see below).
    let mut anchor = match reference {
        Some(r) => cache.get(&fingerprint, &r.hash)?.map(|l| l.p10_ms),
        None => None,
    };
    let mut pool = match anchor {
        Some(_) => cached_bridges(&outcomes, is_reference, protocol.bridges),
        None => Vec::new(),
    };
    // Whether the bridges are networks of this run's own first chunk (see below).
    let mut own = false;
    // Where this process's factors on the anchor are kept (see `Drift`).
    let history = |a: f64| format!("{fingerprint} {} {a}", reference.map_or("", |r| &r.hash));
    for chunk in todo.chunks(protocol.chunk.max(1)) {
        let mut timed = Vec::new();
        for &i in chunk {
            // A reported latency (or a failure) is final at once: save it before the next
            // network starts, so an interrupted run keeps it.
            if let Some(latency) = prepare_or_report(backend, &lowered[i], i, &mut timed) {
                let o = record(cache, &fingerprint, &lowered[i], latency, &mut progress)?;
                outcomes[i] = Some(o);
            }
        }
        if timed.is_empty() {
            continue;
        }
        let members: Vec<usize> = timed.iter().map(|(i, _)| *i).collect();
        let reference_owner = members
            .iter()
            .copied()
            .find(|&i| is_reference(i))
            .unwrap_or(usize::MAX);
        let bridges: &[(usize, f64)] = match protocol.normalise {
            true => &pool,
            false => &[],
        };
        let timing = Chunk {
            lowered,
            rider: reference.filter(|_| reference_owner == usize::MAX),
            members: &members,
            bridges,
            anchor,
        };
        let key = anchor.map(history);
        let typical = key.as_deref().and_then(|k| drift.typical(k));
        let first = timed.into_iter().map(|(_, r)| r).collect();
        let t = calmest(backend, &timing, first, protocol, typical);
        if let (Some(k), true) = (&key, t.estimates > 0) {
            drift.record(k, t.factor);
        }
        let defines = anchor.is_none();
        if defines {
            anchor = best_session(&t.owner, &t.latencies, reference_owner)
                .ok()
                .map(|l| l.p10_ms);
        }
        // The chunk that times the reference first defines the scale; any other chunk
        // without a scale estimate stays on its own, and says so.
        let unscaled = protocol.normalise && t.estimates == 0 && !(defines && anchor.is_some());
        let mut steady = Vec::new();
        for i in members {
            let latency = t.latency(i, unscaled, backend, &lowered[i]);
            if let (Ok(l), false) = (&latency, is_reference(i)) {
                if !l.noisy {
                    steady.push((i, l.p10_ms));
                }
            }
            let o = record(cache, &fingerprint, &lowered[i], latency, &mut progress)?;
            outcomes[i] = Some(o);
        }
        // The first chunk on the anchor's scale lends its typical networks as the bridges of
        // every later one: scale estimates from networks like the ones they scale.
        let held = protocol.alike || pool.len() < protocol.bridges;
        if anchor.is_some() && !unscaled && !own && held && steady.len() >= protocol.bridges {
            pool = most_alike(steady, protocol.bridges);
            own = true;
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every network has an outcome"))
        .collect())
}

/// Prepares network `i`: a runner to time goes to `timed`; a latency the backend reports, or
/// why it could not prepare the network, is returned.
fn prepare_or_report<'a>(
    backend: &'a dyn Backend,
    l: &Lowered,
    i: usize,
    timed: &mut Vec<(usize, Box<dyn Runner + 'a>)>,
) -> Option<std::result::Result<Latency, String>> {
    match backend.prepare(l) {
        Ok(Timing::Timed(r)) => {
            timed.push((i, r));
            None
        }
        Ok(Timing::Reported(l)) => Some(Ok(l)),
        Err(e) => Some(Err(e.to_string())),
    }
}

/// The networks of `lowered` the cache holds (reported to `progress` at once), and the
/// indices of the rest, still to be timed.
#[allow(clippy::type_complexity)]
fn from_cache(
    cache: &dyn Store,
    fingerprint: &Fingerprint,
    lowered: &[Lowered],
    progress: &mut impl FnMut(&Outcome),
) -> Result<(Vec<Option<Outcome>>, Vec<usize>)> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; lowered.len()];
    let mut todo = Vec::new();
    for (i, l) in lowered.iter().enumerate() {
        match cache.get(fingerprint, &l.hash)? {
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
    Ok((outcomes, todo))
}

/// The bridges the first chunk is held to, when the anchor is cached: the first `bridges`
/// cached networks on its scale. Every later chunk is held to a fixed set too, the first
/// chunk's [`most_alike`] networks. Scaling each chunk by the chunk before would chain their
/// errors into a random walk, and the median of the reference's and two bridges' ratios,
/// when the reference's sits apart (its own figure off by a few percent), walks towards it,
/// chunk after chunk.
fn cached_bridges(
    outcomes: &[Option<Outcome>],
    is_reference: impl Fn(usize) -> bool,
    bridges: usize,
) -> Vec<(usize, f64)> {
    outcomes
        .iter()
        .enumerate()
        .filter(|&(i, _)| !is_reference(i))
        .filter_map(|(i, o)| match o {
            Some(Outcome { latency: Ok(l), .. }) => Some((i, l.p10_ms)),
            _ => None,
        })
        .take(bridges)
        .collect()
}

/// The `k` networks of `timed` (index, latency) nearest their median latency (by ratio): the
/// ones the rest are most like. A scale estimate from networks unlike the ones it scales
/// carries what the machine's state does to them and not to the rest: on ORT's NB201 the
/// reference and the SSBN bridges, the largest and most conv-heavy networks, moved together
/// between attempts at a chunk while its random networks held still.
pub fn most_alike(mut timed: Vec<(usize, f64)>, k: usize) -> Vec<(usize, f64)> {
    let median = quantile(&timed.iter().map(|t| t.1).collect::<Vec<_>>(), 0.5);
    let away = |ms: f64| (ms / median).ln().abs();
    timed.sort_by(|a, b| away(a.1).total_cmp(&away(b.1)));
    timed.truncate(k);
    timed
}

/// What one chunk's timing needs besides the runners: the networks (`members` index into
/// `lowered`), the reference when it rides along, the bridges, and the anchor's figure.
struct Chunk<'c> {
    lowered: &'c [Lowered],
    rider: Option<&'c Lowered>,
    members: &'c [usize],
    bridges: &'c [(usize, f64)],
    anchor: Option<f64>,
}

/// Times a chunk until an attempt is calm (or `attempts` are spent) and keeps the calmest:
/// the one whose worst criterion — the scale estimates' spread, the share of noisy
/// networks, the factor's distance from the `typical` one — is least over its limit.
fn calmest<'a>(
    backend: &'a dyn Backend,
    chunk: &Chunk<'_>,
    mut first: Vec<Box<dyn Runner + 'a>>,
    protocol: &Protocol,
    typical: Option<f64>,
) -> Attempt {
    let unrest = |t: &Attempt| {
        let off = typical.map_or(0.0, |f| (t.factor / f - 1.0).abs());
        [
            t.spread / protocol.calm,
            t.noisy / 0.25,
            off / protocol.drift,
        ]
        .into_iter()
        .fold(0.0, f64::max)
    };
    let mut chosen: Option<(f64, Attempt)> = None;
    for _ in 0..protocol.attempts.max(1) {
        let t = attempt(backend, chunk, std::mem::take(&mut first), protocol);
        let u = unrest(&t);
        if tracing() {
            eprintln!("  typical factor {typical:?}: unrest {u:.2}");
        }
        if chosen.as_ref().is_none_or(|(c, _)| u < *c) {
            chosen = Some((u, t));
        }
        if u <= 1.0 {
            break;
        }
    }
    chosen.expect("at least one attempt").1
}

impl Attempt {
    /// Member `i`'s figure: its fastest session, on the chunk's scale, with the backend's
    /// profile; or why it failed.
    fn latency(
        &self,
        i: usize,
        unscaled: bool,
        backend: &dyn Backend,
        lowered: &Lowered,
    ) -> std::result::Result<Latency, String> {
        let best = best_session(&self.owner, &self.latencies, i);
        match self.failed.iter().find(|(f, _)| *f == i) {
            Some((_, e)) if best.is_err() => Err(e.clone()),
            _ => best.and_then(|mut l| {
                l.scale(self.factor);
                l.unscaled = unscaled;
                l.per_layer = backend.profile(lowered).map_err(|e| e.to_string())?;
                Ok(l)
            }),
        }
    }
}

/// One timing of a chunk: its runners' owners and results, and how far the scale estimates
/// (reference and bridges) disagreed.
struct Attempt {
    owner: Vec<usize>,
    latencies: Vec<Result<Latency>>,
    failed: Vec<(usize, String)>,
    factor: f64,
    /// Scale estimates the factor rests on (the reference's and the bridges' that ran).
    estimates: usize,
    /// max/min − 1 of the scale estimates (0 with fewer than two).
    spread: f64,
    /// The share of the chunk's networks flagged noisy.
    noisy: f64,
}

/// Times `members` (each in `sessions` sessions; `first` holds one already-loaded runner per
/// member, or nothing) beside the reference, when it rides along, and the bridges, and
/// works out the chunk's scale: the median of stored over now.
fn attempt<'a>(
    backend: &'a dyn Backend,
    chunk: &Chunk<'_>,
    first: Vec<Box<dyn Runner + 'a>>,
    p: &Protocol,
) -> Attempt {
    let Chunk {
        lowered,
        rider,
        members,
        bridges,
        anchor,
    } = *chunk;
    let mut owner: Vec<usize> = Vec::new();
    let mut runners: Vec<Box<dyn Runner + 'a>> = Vec::new();
    let mut failed: Vec<(usize, String)> = Vec::new();
    let mut first = first.into_iter();
    for &i in members {
        let mut sessions = p.sessions.max(1);
        if let Some(r) = first.next() {
            owner.push(i);
            runners.push(r);
            sessions -= 1;
        }
        if let Err(e) = load(backend, &lowered[i], i, sessions, &mut owner, &mut runners) {
            failed.push((i, e));
        }
    }
    // The reference and the bridges ride along; a failure costs only their estimate.
    let sessions = p.sessions.max(1);
    if let (Some(r), true) = (rider, p.normalise) {
        let _ = load(backend, r, usize::MAX, sessions, &mut owner, &mut runners);
    }
    for &(b, _) in bridges {
        let _ = load(backend, &lowered[b], b, sessions, &mut owner, &mut runners);
    }
    let latencies = time_chunk(runners, p);
    let now = |i: usize| best_session(&owner, &latencies, i).ok().map(|l| l.p10_ms);
    let mut ratios: Vec<f64> = Vec::new();
    // The reference's own ratio, when it rode along and has an anchor to be held to.
    if let (Some(a), Some(_)) = (anchor, rider) {
        if let Some(c) = now(usize::MAX) {
            ratios.push(a / c);
        }
    }
    for &(b, stored) in bridges {
        if let Some(c) = now(b) {
            ratios.push(stored / c);
        }
    }
    let factor = match p.normalise && !ratios.is_empty() {
        true => quantile(&ratios, 0.5),
        false => 1.0,
    };
    let spread = match ratios.len() {
        0 | 1 => 0.0,
        _ => {
            let hi = ratios.iter().copied().fold(f64::MIN, f64::max);
            let lo = ratios.iter().copied().fold(f64::MAX, f64::min);
            hi / lo - 1.0
        }
    };
    let noisy = members
        .iter()
        .filter(|&&i| best_session(&owner, &latencies, i).is_ok_and(|l| l.noisy))
        .count() as f64
        / members.len().max(1) as f64;
    if tracing() {
        eprintln!(
            "chunk owners {owner:?} ratios {:?} factor {factor:.4} spread {spread:.4} noisy {noisy:.2}",
            fmt3(&ratios)
        );
    }
    Attempt {
        owner,
        latencies,
        failed,
        factor,
        estimates: ratios.len(),
        spread,
        noisy,
    }
}

/// Loads `l` in `sessions` more sessions as runners owned by `i` (a backend that reports
/// rather than times adds none).
fn load<'a>(
    backend: &'a dyn Backend,
    l: &Lowered,
    i: usize,
    sessions: u32,
    owner: &mut Vec<usize>,
    runners: &mut Vec<Box<dyn Runner + 'a>>,
) -> std::result::Result<(), String> {
    for _ in 0..sessions {
        match backend.prepare(l) {
            Ok(Timing::Timed(r)) => {
                owner.push(i);
                runners.push(r);
            }
            Ok(Timing::Reported(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
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
    cache: &dyn Store,
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

/// The scale every measurement of an evaluation is put on: SSBN_0, the drift reference,
/// and — once the SSBNs are measured — some of them as bridges. Without bridges the first
/// chunk of every new batch of networks would be scaled by the reference's figure alone,
/// and nothing would tell a slow spell that caught only the reference (a repeat
/// measurement 6% off its first one, seen on ORT).
#[derive(Clone, Debug)]
pub struct Anchor {
    pub reference: Lowered,
    pub bridges: Vec<Lowered>,
}

impl Anchor {
    /// An empty in-memory cache holding only the stored latencies of the reference and the
    /// bridges, so that networks measured into it afresh (replicates, repeats) are put on
    /// the same scale as the stored ones.
    pub fn fresh(
        &self,
        backend: &dyn Backend,
        protocol: &Protocol,
        cache: &dyn Store,
    ) -> Result<Sqlite> {
        let fresh = Sqlite::in_memory()?;
        let fingerprint = backend.fingerprint().under(protocol);
        for l in std::iter::once(&self.reference).chain(&self.bridges) {
            if let Some(latency) = cache.get(&fingerprint, &l.hash)? {
                fresh.put(&fingerprint, l, &Ok(latency))?;
            }
        }
        Ok(fresh)
    }

    /// Measures `lowered` through `cache` on the anchor's scale: equal networks (a cell
    /// edge's option in every cell of a stage) once, the bridges riding along (cached, they
    /// are every chunk's further scale estimates). One figure or failure per network.
    pub fn measure(
        &self,
        backend: &dyn Backend,
        lowered: &[Lowered],
        protocol: &Protocol,
        cache: &dyn Store,
        drift: &Drift,
        progress: impl FnMut(&Outcome),
    ) -> Result<Vec<std::result::Result<f64, String>>> {
        let mut unique: Vec<Lowered> = Vec::new();
        let mut at: std::collections::BTreeMap<&str, usize> = Default::default();
        // The bridges first: the cached networks first in order are the ones every chunk is
        // held to.
        for l in self.bridges.iter().chain(lowered) {
            at.entry(l.hash.as_str()).or_insert_with(|| {
                unique.push(l.clone());
                unique.len() - 1
            });
        }
        let outcomes = measure_all(
            backend,
            &unique,
            Some(&self.reference),
            protocol,
            cache,
            drift,
            progress,
        )?;
        Ok(lowered
            .iter()
            .map(|l| match &outcomes[at[l.hash.as_str()]].latency {
                Ok(latency) => Ok(latency.p10_ms),
                Err(e) => Err(format!("network {} failed: {e}", l.id)),
            })
            .collect())
    }
}

/// Times networks side by side, interleaved in the same windows of one chunk, so their
/// latencies can be compared with each other (fusion probes, micro-benchmarks). No cache.
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
                let more = p.sessions.saturating_sub(1);
                load(backend, l, i, more, &mut owner, &mut runners)
                    .map_err(BackendError::Runtime)?;
            }
        }
    }
    let timed = time_chunk(runners, p);
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

#[cfg(test)]
mod tests {
    //! The driver against a scripted machine: runners whose latency is exact, slowed by a
    //! factor that depends on when they were loaded (the n-th `prepare` of the run).
    use super::*;
    use crate::Fingerprint;
    use spacetune_ir::{Graph, Network};
    use std::cell::Cell;

    struct Scripted {
        prepared: Cell<usize>,
        /// The slow-down of the runner loaded as the n-th, for network `id`.
        slow: fn(usize, &str) -> f64,
        /// Whether the n-th `prepare`, of network `id`, fails.
        fail: fn(usize, &str) -> bool,
    }

    struct Exact(f64);

    impl Runner for Exact {
        fn once(&mut self) -> Result<Duration> {
            Ok(Duration::from_secs_f64(self.0 / 1e3))
        }
    }

    impl Backend for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn fingerprint(&self) -> Fingerprint {
            Fingerprint {
                backend: "scripted".into(),
                runtime: "test".into(),
                options: Default::default(),
                threads: 1,
                node: None,
                protocol: None,
            }
        }
        fn lower(&self, _: &Network) -> Result<Lowered> {
            unreachable!("the tests lower by hand")
        }
        fn prepare(&self, l: &Lowered) -> Result<Timing<'_>> {
            let n = self.prepared.get();
            self.prepared.set(n + 1);
            if (self.fail)(n, &l.id) {
                return Err(BackendError::Runtime(format!("{} will not load", l.id)));
            }
            let ms: f64 = l.text.parse().expect("the text is the latency");
            Ok(Timing::Timed(Box::new(Exact(ms * (self.slow)(n, &l.id)))))
        }
    }

    /// The reference (0.25 ms) first, then 20 networks of 0.1 to 0.29 ms.
    fn networks() -> Vec<Lowered> {
        many(20)
    }

    /// The reference (0.25 ms) first, then `n` networks of 0.1 ms and more.
    fn many(n: usize) -> Vec<Lowered> {
        let net = |id: String, ms: f64| Lowered {
            hash: id.clone(),
            id,
            graph: Graph::default(),
            text: ms.to_string(),
            bytes: Vec::new(),
        };
        let mut v = vec![net("ref".into(), 0.25)];
        v.extend((0..n).map(|k| net(format!("n{k}"), 0.1 + 0.01 * (k % 20) as f64)));
        v
    }

    /// `nets` measured through `cache`, the first the reference.
    fn outcomes(b: &Scripted, nets: &[Lowered], p: &Protocol, cache: &Sqlite) -> Vec<Outcome> {
        measure_all(b, nets, Some(&nets[0]), p, cache, &Drift::default(), |_| {}).unwrap()
    }

    fn measure(b: &Scripted, p: &Protocol) -> Vec<f64> {
        let cache = Sqlite::in_memory().unwrap();
        outcomes(b, &networks(), p, &cache)
            .iter()
            .map(|o| o.latency.as_ref().unwrap().p10_ms)
            .collect()
    }

    fn worst_error(measured: &[f64]) -> f64 {
        worst_error_of(measured, &networks())
    }

    /// The largest relative error of `measured` against the exact latencies of `truth`.
    fn worst_error_of(measured: &[f64], truth: &[Lowered]) -> f64 {
        measured
            .iter()
            .zip(truth)
            .map(|(m, t)| (m / t.text.parse::<f64>().unwrap() - 1.0).abs())
            .fold(0.0, f64::max)
    }

    fn protocol() -> Protocol {
        Protocol {
            window_ms: 0.0,
            ..Protocol::default()
        }
    }

    #[test]
    fn a_slow_stretch_after_the_first_chunk_is_scaled_back() {
        // Chunk 0 loads 8 networks in 3 sessions: the 24 first runners; then 30% slower.
        let b = Scripted {
            prepared: Cell::new(0),
            slow: |n, _| if n < 24 { 1.0 } else { 1.3 },
            fail: |_, _| false,
        };
        let err = worst_error(&measure(&b, &protocol()));
        assert!(err < 0.005, "worst error {err}");
    }

    #[test]
    fn a_reference_timed_slow_in_the_first_chunk_does_not_drag_the_later_ones() {
        // The reference is 5% slow in the chunk that defines the scale (its 3 sessions among
        // the first 24); every session is up to 1% off at random. Chunk after chunk the
        // median of the reference's ratio and the two bridges' is then the larger bridge's.
        let b = Scripted {
            prepared: Cell::new(0),
            slow: |n, id| {
                let jitter = (n.wrapping_mul(2654435761) % 1000) as f64 / 50_000.0 - 0.01;
                match (n < 24, id) {
                    (true, "ref") => 1.05 + jitter,
                    _ => 1.0 + jitter,
                }
            },
            fail: |_, _| false,
        };
        let nets = many(160);
        let cache = Sqlite::in_memory().unwrap();
        let out = measure_all(
            &b,
            &nets,
            Some(&nets[0]),
            &protocol(),
            &cache,
            &Drift::default(),
            |_| {},
        )
        .unwrap();
        // Off the truth by how much more than the first chunk's networks are (the scale).
        let ratio: Vec<f64> = out
            .iter()
            .zip(&nets)
            .skip(1)
            .map(|(o, l)| o.latency.as_ref().unwrap().p10_ms / l.text.parse::<f64>().unwrap())
            .collect();
        let first = quantile(&ratio[..7], 0.5);
        let last = quantile(&ratio[ratio.len() - 8..], 0.5);
        assert!(
            (last / first - 1.0).abs() < 0.01,
            "the last chunk is {:.2}% off the first",
            100.0 * (last / first - 1.0)
        );
    }

    #[test]
    fn a_chunk_whose_scale_estimates_disagree_is_timed_again() {
        // Chunk 1's first attempt (runners 24..54: 8 networks, the reference and the one
        // bridge, 3 sessions each) catches the reference alone in a slow state: its ratio and the
        // bridge's disagree by 30%.
        let b = || Scripted {
            prepared: Cell::new(0),
            slow: |n, id| {
                if id == "ref" && (24..54).contains(&n) {
                    1.3
                } else {
                    1.0
                }
            },
            fail: |_, _| false,
        };
        let one_bridge = Protocol {
            bridges: 1,
            ..protocol()
        };
        let err = worst_error(&measure(&b(), &one_bridge));
        assert!(err < 0.005, "worst error {err}");
        // Kept, that attempt would have scaled chunk 1 by the mean of the two ratios.
        let once = Protocol {
            attempts: 1,
            ..one_bridge
        };
        let err = worst_error(&measure(&b(), &once));
        assert!(err > 0.1, "worst error {err} with one attempt");
    }

    #[test]
    fn a_chunk_timed_in_a_state_that_slows_the_scale_networks_more_is_timed_again() {
        // 40 networks: chunk 0 (the reference and 7 others, 3 sessions each) loads 24
        // runners, every later attempt 33 (8 networks, the reference and the two bridges).
        // Chunk 4's first attempt (runners 123..156) catches a state that slows the
        // reference and the bridges (n3 and n4, nearest chunk 0's median) by 10% and the
        // chunk's own networks by 2%: its scale estimates agree with each other, but not
        // with chunks 1–3's.
        let b = || Scripted {
            prepared: Cell::new(0),
            slow: |n, id| match ((123..156).contains(&n), id) {
                (false, _) => 1.0,
                (true, "ref" | "n3" | "n4") => 1.10,
                (true, _) => 1.02,
            },
            fail: |_, _| false,
        };
        let nets = many(39);
        let run = |p: &Protocol| {
            let cache = Sqlite::in_memory().unwrap();
            let drift = Drift::default();
            let out = measure_all(&b(), &nets, Some(&nets[0]), p, &cache, &drift, |_| {});
            let ms: Vec<f64> = out
                .unwrap()
                .iter()
                .map(|o| o.latency.as_ref().unwrap().p10_ms)
                .collect();
            worst_error_of(&ms, &nets)
        };
        let err = run(&protocol());
        assert!(err < 0.005, "worst error {err}");
        // Kept, that attempt would have scaled chunk 4's networks 7% fast.
        let blind = Protocol {
            drift: f64::INFINITY,
            ..protocol()
        };
        let err = run(&blind);
        assert!(err > 0.05, "worst error {err} without the drift criterion");
    }

    #[test]
    fn later_chunks_are_held_to_networks_like_theirs() {
        // The reference and the two cached bridges are large; after the first chunk (33
        // prepares: 8 networks, the reference and the bridges, 3 sessions each) every other
        // chunk catches them 2.5% slow, and the small networks not at all.
        let b = Scripted {
            prepared: Cell::new(0),
            slow: |n, id| match (n / 33) % 2 == 1 && (id == "ref" || id.starts_with("big")) {
                true => 1.025,
                false => 1.0,
            },
            fail: |_, _| false,
        };
        let net = |id: &str, ms: f64| Lowered {
            hash: id.into(),
            id: id.into(),
            graph: Graph::default(),
            text: ms.to_string(),
            bytes: Vec::new(),
        };
        let mut nets = vec![net("ref", 2.0), net("big-a", 2.2), net("big-b", 1.8)];
        nets.extend(many(32).into_iter().skip(1));
        let p = protocol();
        let cache = Sqlite::in_memory().unwrap();
        let f = b.fingerprint().under(&p);
        for l in &nets[..3] {
            let ms: f64 = l.text.parse().unwrap();
            cache.put(&f, l, &Ok(summarise(&[vec![ms]], 0.1))).unwrap();
        }
        let out = outcomes(&b, &nets, &p, &cache);
        let ms: Vec<f64> = out
            .iter()
            .map(|o| o.latency.as_ref().unwrap().p10_ms)
            .collect();
        // Held to the large networks, those chunks' small ones would come out 2.4% fast.
        let err = worst_error_of(&ms[3..], &nets[3..]);
        assert!(err < 0.001, "worst error {err}");
    }

    #[test]
    fn a_chunk_whose_reference_will_not_load_is_flagged_unscaled() {
        // After the first chunk (8 networks, one session each: 9 prepares with the
        // reference) the reference no longer loads, and there are no bridges.
        let b = Scripted {
            prepared: Cell::new(0),
            slow: |n, _| if n < 9 { 1.0 } else { 1.3 },
            fail: |n, id| n >= 9 && id == "ref",
        };
        let p = Protocol {
            sessions: 1,
            bridges: 0,
            attempts: 1,
            ..protocol()
        };
        let nets = networks();
        let cache = Sqlite::in_memory().unwrap();
        let out = outcomes(&b, &nets, &p, &cache);
        let unscaled: Vec<bool> = out
            .iter()
            .map(|o| o.latency.as_ref().unwrap().unscaled)
            .collect();
        // The reference and the first chunk's 7 others define the scale; the rest are
        // 30% slow and cannot be scaled back, and say so — in the store too.
        assert_eq!(unscaled[..8], [false; 8]);
        assert_eq!(unscaled[8..], [true; 13]);
        let f = b.fingerprint().under(&p);
        assert!(cache.get(&f, "n19").unwrap().unwrap().unscaled);
        assert!(!cache.get(&f, "n3").unwrap().unwrap().unscaled);
    }
}
