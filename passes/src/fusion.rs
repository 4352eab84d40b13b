//! Black-box fusion-rule detection (nn-Meter's test): for every ordered pair of op types
//! that meet in a space — A's output read by B — time A alone, B alone and A→B at a
//! representative place; the pair is fused when `T_A + T_B − T_AB > 0.5·min(T_A, T_B)`.
//! A fused pair becomes a chain A+B that is tested against its readers in turn (up to
//! [`crate::kernels::MAX_CHAIN`] ops): compilers fuse in context (an activation into a
//! conv's epilogue, not necessarily after a lone batch norm), and the test sees that.
//! This module builds the probe networks, times them through the store and applies the test.

use crate::kernels::{FusionRules, CONSTANT};
use spacetune_backends::{
    measure::measure_together, measure::quantile, measure::variance, measure::Protocol,
    store::Store, Backend, Lowered,
};
pub use spacetune_ir::PairRule;
use spacetune_ir::{Diagnostic, Diagnostics, Graph, Module, Network, Prim, Region, Shape};
use std::collections::{BTreeMap, HashSet};

type Failure = Box<dyn std::error::Error>;

/// The networks that decide one pair: A alone, B alone and A→B, at one or two sizes.
#[derive(Clone, Debug)]
pub struct Probe {
    pub a: String,
    pub b: String,
    /// `conv(16x32x32) -> bn`: where the pair was taken from, for reports.
    pub place: String,
    /// The probe size first, then (where the maps could be grown) twice its height and
    /// width: a pair is fused only if it is at both, so a verdict that holds at one map
    /// size only — a cache effect, not the compiler's fusion — does not make a rule.
    pub sizes: Vec<Trio>,
}

/// A alone, B alone and A→B at one size.
#[derive(Clone, Debug)]
pub struct Trio {
    pub alone_a: Graph,
    pub alone_b: Graph,
    pub pair: Graph,
}

/// nn-Meter's criterion: the pair saves more than half of its cheaper op. Noise is the
/// margin's business ([`decide`]), measured from the runs: a floor in proportion to the
/// pair can exceed the whole of a small op beside a costly one, which then never fuses.
pub fn fused(t_a: f64, t_b: f64, t_ab: f64) -> bool {
    t_a + t_b - t_ab > 0.5 * t_a.min(t_b)
}

/// A network that does next to nothing (one value copied): its latency is the per-call
/// cost every probe pays once, subtracted before the test.
pub fn empty() -> Graph {
    let mut g = Graph::with_input(Shape::new(1, 1, 1));
    g.push(
        Prim::Identity,
        &[spacetune_ir::Handle::new(0)],
        Region::Fixed(0),
    )
    .expect("identity takes any shape");
    g
}

/// The probes for every op type B that reads the output of a chain of ops in the pruned
/// `graphs`: `chains` are op-name chains (`["conv", "bn"]`); B is any op reading the last
/// op of an occurrence of the chain (each op of the chain reading the one before). Round
/// one of detection passes every single op; later rounds pass the chains found fused, so
/// conv→bn→relu is tested as (conv+bn)→relu, not only as bn→relu out of context. Each pair
/// is probed where it occurs with the median output size (representative, not extreme).
pub fn probes(graphs: &[Graph], chains: &[Vec<String>]) -> Vec<Probe> {
    type Place = (u64, String, usize, Vec<usize>, usize);
    let mut seen: BTreeMap<(String, String), Vec<Place>> = BTreeMap::new();
    let skip = |op: &Prim| matches!(op, Prim::Input | Prim::Zero | Prim::Identity);
    for (gi, g) in graphs.iter().enumerate() {
        for (hb, nb) in g.nodes.iter() {
            if skip(&nb.op) {
                continue;
            }
            for &ha in &nb.inputs {
                for chain in chains {
                    let Some(path) = chain_ending_at(g, ha.index(), chain) else {
                        continue;
                    };
                    let key = (chain.join("+"), nb.op.name().to_string());
                    let places = seen.entry(key).or_default();
                    // A few places per pair are enough to pick a median from.
                    if places.len() < 64 {
                        let shape = g.shape(ha);
                        let place = format!("{} -> {} at {shape}", chain.join("+"), nb.op);
                        places.push((shape.elements(), place, gi, path, hb.index()));
                    }
                }
            }
        }
    }
    seen.into_iter()
        .map(|((a, b), mut places)| {
            places.sort_by(|x, y| x.0.cmp(&y.0).then_with(|| x.1.cmp(&y.1)));
            let (_, place, gi, path, ib) = places.swap_remove(places.len() / 2);
            let g = &graphs[gi];
            let f = scale_for(
                &g.extract(|i| i == ib || path.contains(&i))
                    .expect("ops kept"),
            );
            let parts = |f: u64| -> Result<Trio, String> {
                let part = |keep: &dyn Fn(usize) -> bool| {
                    rescaled(&g.extract(keep).expect("a probe keeps at least one op"), f)
                };
                Ok(Trio {
                    alone_a: part(&|i| path.contains(&i))?,
                    alone_b: part(&|i| i == ib)?,
                    pair: part(&|i| i == ib || path.contains(&i))?,
                })
            };
            // Where growing the maps breaks an op (a shape it must keep), the pair is tested
            // at the network's own sizes, and its place says why.
            let (place, sizes) = match (parts(f), parts(2 * f)) {
                (Ok(p), Ok(q)) if f > 1 => (
                    format!("{place} (maps grown x{f}, and x{})", 2 * f),
                    vec![p, q],
                ),
                (Ok(p), _) if f > 1 => (format!("{place} (maps grown x{f})"), vec![p]),
                (Ok(p), _) => (place, vec![p]),
                (Err(e), _) => (
                    format!("{place} (maps not grown: {e})"),
                    vec![parts(1).expect("a graph's own sizes are valid")],
                ),
            };
            Probe { a, b, place, sizes }
        })
        .collect()
}

/// The probes for constant folding: for every op type B that reads only constants in the
/// module's pruned networks (a batch norm after a `none` edge's zeros: its shift makes it
/// no zero itself), B on a live input against B on a constant, at the median-size place.
/// A is [`CONSTANT`]; "A alone" is the empty network (a constant costs nothing to run).
/// Both end in a global average pool: a folded network still copies its constant output
/// every call, and for a memory-bound B on a grown map that copy costs what B does.
pub fn constant_probes(graphs: &[Graph]) -> Vec<Probe> {
    let mut seen: BTreeMap<String, Vec<(u64, Shape, Prim, usize)>> = BTreeMap::new();
    for g in graphs {
        for (h, node) in g.nodes.iter() {
            let reads_constants =
                !node.inputs.is_empty() && node.inputs.iter().all(|&x| g.nodes[x].is_constant());
            if !reads_constants || matches!(node.op, Prim::Zero | Prim::Identity) {
                continue;
            }
            let places = seen.entry(node.op.name().to_string()).or_default();
            if places.len() < 64 {
                let s = g.shape(node.inputs[0]);
                places.push((g.shape(h).elements(), s, node.op.clone(), node.inputs.len()));
            }
        }
    }
    seen.into_iter()
        .map(|(b, mut places)| {
            places.sort_by_key(|p| p.0);
            let (_, s, op, arity) = places.swap_remove(places.len() / 2);
            let on = |s: Shape, constant: bool| {
                let mut g = Graph::with_input(s);
                let mut x = spacetune_ir::Handle::new(0);
                if constant {
                    x = g
                        .push(Prim::Zero, &[x], Region::Fixed(0))
                        .expect("zeros of any shape");
                }
                let b = g
                    .push(op.clone(), &vec![x; arity], Region::Fixed(0))
                    .expect("the op read this shape in the network");
                g.push(Prim::GlobalAvgPool, &[b], Region::Fixed(0))
                    .expect("any map pools");
                g.pruned()
            };
            let f = scale_for(&on(s, false));
            let trio = |f: u64| {
                let grown = Shape::new(s.c, s.h * f, s.w * f);
                Trio {
                    alone_a: empty(),
                    alone_b: on(grown, false),
                    pair: on(grown, true),
                }
            };
            let place = format!("{CONSTANT} -> {op} at {s}");
            let (place, sizes) = if f > 1 {
                (
                    format!("{place} (maps grown x{f}, and x{})", 2 * f),
                    vec![trio(f), trio(2 * f)],
                )
            } else {
                (place, vec![trio(1)])
            };
            Probe {
                a: CONSTANT.to_string(),
                b,
                place,
                sizes,
            }
        })
        .collect()
}

/// The verdict on one pair. A constant followed by B is "fused" — folded when the network
/// is compiled — when B on a constant saves more than half of B (nn-Meter's criterion with
/// the constant's own cost, nothing, left out of the minimum).
pub fn verdict(a: &str, t_a: f64, t_b: f64, t_ab: f64) -> bool {
    if a == CONSTANT {
        saved_share(a, t_a, t_b, t_ab) > 0.5
    } else {
        fused(t_a, t_b, t_ab)
    }
}

/// A verdict from independent probe runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub fused: bool,
    pub undecided: bool,
    /// Whether every middle run passes the threshold at its measured saving, no margin
    /// either way: the pair's best estimate, whether or not the runs are sure of it.
    pub passes: bool,
    pub spread_ms: f64,
    /// How far past the threshold the deciding runs' saving must be to decide (ms).
    pub margin_ms: f64,
    /// The mean `(T_A, T_B, T_AB)` of the runs that decided.
    pub times: (f64, f64, f64),
}

impl Decision {
    /// Whether the runs could tell a pair at the threshold from one that saves nothing or
    /// all of the cheaper op: the margin is under half of it (the threshold's saving).
    /// An undecided verdict that could not is noise; one that could found the pair at the
    /// threshold.
    fn resolves(&self, a: &str) -> bool {
        let (t_a, t_b, _) = self.times;
        self.margin_ms < cheaper(a, t_a, t_b) / 2.0
    }
}

/// A probe's timings `(T_A, T_B, T_AB)` in each run of a try ([`RUNS`] of them).
pub type Try = Vec<(f64, f64, f64)>;

/// Runs in a try, each in a process of its own where the protocol can start one. Three, not
/// two: a try's spread is then an estimate, not one difference that two processes agreeing
/// by chance make small.
pub const RUNS: usize = 3;

/// The verdict from every try of a pair, its runs pooled. The middle runs by saved share
/// (the median run, or the two beside the median of an even count) decide — ORT settles a
/// session in a fast or a slow mode (a depthwise conv alone 10% slower than beside its
/// relu6), and one such run must not make a rule. Fused only if each clears the threshold
/// by the margin: 2.5 spreads over √runs, about two standard errors of a median, where the
/// spread is the standard deviation of the saving between the runs of a try (the median
/// over the tries, so one slow try does not widen it). A saving that passes within its own
/// uncertainty is noise, and a pair sitting at the threshold would come out fused in one
/// run of the tool and not in the next. Not fused where every middle run falls short by the
/// margin; undecided (treated as not fused) in between, and probed again. More runs narrow
/// the margin as a pair's saving is known better, so a pair that moves between processes
/// (TVM's conv→bn saves 65% of the bn in one set of processes and 81% in the next, against
/// 50%) is decided once enough processes have been seen, while one at the threshold stays
/// undecided. Pooling, rather than deciding on the first try whose runs agree, keeps a pair
/// from getting a fresh chance to pass with every try: the middle of more runs only
/// settles.
pub fn decide(a: &str, tries: &[Try]) -> Decision {
    let share = |&(t_a, t_b, t_ab): &(f64, f64, f64)| saved_share(a, t_a, t_b, t_ab);
    let saved = |&(t_a, t_b, t_ab): &(f64, f64, f64)| saving(a, t_a, t_b, t_ab);
    let mut runs: Vec<(f64, f64, f64)> = tries.iter().flatten().copied().collect();
    runs.sort_by(|x, y| share(x).total_cmp(&share(y)));
    let n = runs.len();
    let middle = &runs[(n - 1) / 2..=n / 2];
    let spreads: Vec<f64> = tries
        .iter()
        .map(|runs| variance(&runs.iter().map(saved).collect::<Vec<_>>()).sqrt())
        .collect();
    let spread_ms = quantile(&spreads, 0.5);
    let margin = 2.5 * spread_ms / (n as f64).sqrt();
    // The verdict on each middle run were its saving `by` ms more (T_AB that much less).
    let says = |by: f64| -> Vec<bool> {
        middle
            .iter()
            .map(|&(t_a, t_b, t_ab)| verdict(a, t_a, t_b, t_ab - by))
            .collect()
    };
    let fused = says(-margin).iter().all(|&v| v);
    let mean =
        |f: fn(&(f64, f64, f64)) -> f64| middle.iter().map(f).sum::<f64>() / middle.len() as f64;
    Decision {
        fused,
        undecided: !fused && says(margin).iter().any(|&v| v),
        passes: says(0.0).iter().all(|&v| v),
        spread_ms,
        margin_ms: margin,
        times: (mean(|r| r.0), mean(|r| r.1), mean(|r| r.2)),
    }
}

/// A verdict from the tries at each size: fused only if it is at the probe size and no
/// larger size contradicts it. A larger size is there to catch a hand-over that stops once
/// the map outgrows the cache, whose saving falls as the map grows. It vetoes when it says
/// not fused (neither fused nor undecided), and when it is undecided with its middle runs'
/// saving below the threshold and a margin that [resolves](Decision::resolves) it: its runs
/// agree, and put the pair at or under it. An undecided larger size whose runs save above
/// the threshold agrees — it is short of a margin, not of a saving (TVM's conv → bn at
/// twice the maps saves well over half the bn in every try, with a margin as wide as that
/// lead: a veto there made the rule hang on whether the margin cleared the threshold, fused
/// in one run of the tool and not in the next). Nor does one whose runs disagree by more
/// than the threshold's saving: a memory-bound op on a map beyond the cache moves by more
/// than a small B saves (ORT's conv alone ±5% at twice the maps, against a batch norm's
/// 5%). Undecided where some size said fused or undecided and the pair is not fused; the
/// spread and the times are the probe size's.
pub fn decide_sizes(a: &str, sizes: &[Vec<Try>]) -> Decision {
    let ds: Vec<Decision> = sizes.iter().map(|tries| decide(a, tries)).collect();
    let agrees = |d: &Decision| d.fused || (d.undecided && (d.passes || !d.resolves(a)));
    let fused = ds[0].fused && ds[1..].iter().all(agrees);
    Decision {
        fused,
        undecided: !fused && ds.iter().any(|d| d.fused || d.undecided),
        ..ds[0]
    }
}

/// What the pair saves (ms), `T_A + T_B − T_AB`. Where A is a constant, its cost is
/// nothing (what its probe measures is the per-call cost's noise): `T_B − T_AB`.
pub fn saving(a: &str, t_a: f64, t_b: f64, t_ab: f64) -> f64 {
    if a == CONSTANT {
        t_b - t_ab
    } else {
        t_a + t_b - t_ab
    }
}

/// [`saving`] as a share of the pair's cheaper op (of B, where A is a constant).
pub fn saved_share(a: &str, t_a: f64, t_b: f64, t_ab: f64) -> f64 {
    saving(a, t_a, t_b, t_ab) / cheaper(a, t_a, t_b).max(1e-9)
}

/// The op a pair's saving is a share of: the cheaper of the two, or B where A is a constant.
fn cheaper(a: &str, t_a: f64, t_b: f64) -> f64 {
    if a == CONSTANT {
        t_b
    } else {
        t_a.min(t_b)
    }
}

/// Tries (of [`RUNS`] probe runs each) an undecided pair gets before it is left undecided.
/// A shared machine has slow spells that can move one run's conv by more than a batch norm
/// costs; a pair the runs disagree on is probed again, and the verdict is taken again on
/// every run so far ([`decide`]), so one slow spell is outvoted rather than retried away.
pub const ATTEMPTS: u32 = 3;

/// Elements of the largest tensor of a probe, at least: smaller probes run in a few
/// microseconds, where timer resolution and per-call costs drown what fusion saves (a
/// CIFAR-sized batch norm is under a microsecond). Fusion rules are about op types, so the
/// probe keeps its ops and channels and grows its feature maps.
pub const PROBE_ELEMENTS: u64 = 1 << 19;

/// Multiply-accumulates of the probe's A→B, at most, where growing its maps to
/// [`PROBE_ELEMENTS`] would pass them: a pair with a conv is long enough to time well before
/// its largest tensor is that large. What a pair saves is a share of ops that all grow with
/// the maps, so a larger probe tells no more; it only takes longer to time, and a wide 1x1
/// conv grown to the elements takes tens of milliseconds a run on an untuned compiler, each
/// probe network timed in three sessions, three processes and twice the maps.
pub const PROBE_MACS: u64 = 1 << 24;

/// The spatial factor that brings the probe's largest tensor to [`PROBE_ELEMENTS`] without
/// its multiply-accumulates passing [`PROBE_MACS`] (1 for probes with a `linear`, whose
/// weights grow with the map it flattens).
fn scale_for(g: &Graph) -> u64 {
    if g.nodes
        .iter()
        .any(|(_, n)| matches!(n.op, Prim::Linear { .. }))
    {
        return 1;
    }
    let largest = g
        .shapes
        .iter()
        .map(|s| s.elements())
        .max()
        .unwrap_or(1)
        .max(1);
    // A conv's work grows with its output map, the square of the factor.
    let macs = g.cost().macs;
    let mut f = 1;
    while largest * f * f < PROBE_ELEMENTS && macs * (f + 1) * (f + 1) <= PROBE_MACS && f < 64 {
        f += 1;
    }
    f
}

/// `g` with every input's height and width multiplied by `f`, shapes inferred again; an
/// op the grown shapes do not fit is an error naming it.
fn rescaled(g: &Graph, f: u64) -> Result<Graph, String> {
    let mut out = Graph::default();
    for (h, n) in g.nodes.iter() {
        if n.op == Prim::Input {
            let s = g.shape(h);
            out.input(Shape::new(s.c, s.h * f, s.w * f));
        } else {
            out.push(n.op.clone(), &n.inputs, g.regions[h.index()])
                .map_err(|e| format!("{} on grown maps: {e}", n.op))?;
        }
    }
    Ok(out)
}

/// The nodes of an occurrence of `chain` whose last op is node `last`, first to last.
fn chain_ending_at(g: &Graph, last: usize, chain: &[String]) -> Option<Vec<usize>> {
    let mut path = vec![last];
    let mut at = last;
    for (k, name) in chain.iter().enumerate().rev() {
        let node = &g.nodes[spacetune_ir::Handle::new(at)];
        if node.op.name() != name || matches!(node.op, Prim::Input | Prim::Zero | Prim::Identity) {
            return None;
        }
        if k > 0 {
            at = node
                .inputs
                .iter()
                .map(|h| h.index())
                .find(|&i| g.nodes[spacetune_ir::Handle::new(i)].op.name() == chain[k - 1])?;
            path.push(at);
        }
    }
    path.reverse();
    Some(path)
}

/// Every op name in `graphs`, each as a chain of one (round one of detection).
pub fn single_ops<'g>(graphs: impl Iterator<Item = &'g Graph>) -> Vec<Vec<String>> {
    let names: std::collections::BTreeSet<&str> = graphs
        .flat_map(|g| g.nodes.iter().map(|(_, x)| x.op.name()))
        .filter(|&n| !matches!(n, "input" | "zero" | "skip"))
        .collect();
    names.into_iter().map(|n| vec![n.to_string()]).collect()
}

/// The rule table from pair verdicts.
pub fn rules(pairs: &[PairRule]) -> FusionRules {
    FusionRules {
        fused: pairs
            .iter()
            .filter(|p| p.fused)
            .map(|p| (p.a.clone(), p.b.clone()))
            .collect(),
    }
}

/// Tests every op pair of `m` that has no stored verdict (all of them with `redo`), then
/// every fused chain against its readers, round by round, and returns every verdict stored
/// for the backend. Pairs that occur only in `more` (networks that are not the module's,
/// e.g. random ones whose `skip` and `zero` edges collapse cells and so join a reduction
/// block straight to the head) are tested too, each where it occurs there; a pair the
/// module has keeps the module's place, so adding networks never moves a verdict.
pub fn detect(
    m: Option<&Module>,
    more: &[&Graph],
    backend: &dyn Backend,
    cache: &dyn Store,
    protocol: &Protocol,
    redo: bool,
    progress: &dyn crate::ctx::Progress,
) -> Result<Vec<PairRule>, Failure> {
    let Some(m) = m else {
        return stored_pairs(cache, backend, protocol);
    };
    if redo {
        cache.clear_fusion_pairs(&backend.fingerprint().under(protocol))?;
    }
    // A verdict stands for the place it was tested at (a 3x3 conv beside its batch norm,
    // where another file has a depthwise one): the file's rules are the verdicts at its own
    // places, each tested once. Files that share a database never re-test each other's
    // pairs, so a noisy re-test cannot flip a rule a file has already been measured with.
    let at = |s: &PairRule, p: &Probe| s.a == p.a && s.b == p.b && s.place == p.place;
    let pruned = |gs: &mut dyn Iterator<Item = &Graph>| -> Vec<Graph> {
        let mut v: Vec<Graph> = gs.map(Graph::pruned).collect();
        v.dedup_by(|x, y| x.nodes.len() == y.nodes.len() && x.shapes == y.shapes);
        v
    };
    let sets = [
        pruned(&mut m.networks.values().map(|n| &n.graph)),
        pruned(&mut more.iter().copied()),
    ];
    let mut chains = single_ops(sets.iter().flatten());
    let mut tested = HashSet::new();
    let mut own: Vec<Probe> = Vec::new();
    let mut stored = stored_pairs(cache, backend, protocol)?;
    for round in 1..crate::kernels::MAX_CHAIN {
        let mut probes: Vec<Probe> = sets.iter().flat_map(|g| probes(g, &chains)).collect();
        if round == 1 {
            probes.extend(sets.iter().flat_map(|g| constant_probes(g)));
        }
        probes.retain(|p| tested.insert((p.a.clone(), p.b.clone())));
        let todo: Vec<&Probe> = probes
            .iter()
            .filter(|p| !stored.iter().any(|s| at(s, p)))
            .collect();
        if !todo.is_empty() {
            test_pairs(&todo, backend, cache, protocol, progress)?;
            stored = stored_pairs(cache, backend, protocol)?;
        }
        // The next round extends the chains found fused in this one.
        chains = probes
            .iter()
            .filter(|p| p.a != crate::kernels::CONSTANT)
            .filter(|p| stored.iter().any(|s| at(s, p) && s.fused))
            .map(|p| {
                p.a.split('+')
                    .chain([p.b.as_str()])
                    .map(String::from)
                    .collect()
            })
            .collect();
        own.extend(probes);
        if chains.is_empty() {
            break;
        }
    }
    stored.retain(|s| own.iter().any(|p| at(s, p)));
    Ok(stored)
}

/// [`detect`] from a pass: on `backend` through the context's store, protocol and progress,
/// any failure as a diagnostic; `who` names what needs the store, for the error.
pub fn detect_in(
    cx: &crate::ctx::Ctx<'_>,
    m: &Module,
    more: &[&Graph],
    backend: &dyn Backend,
    who: &str,
) -> Result<Vec<PairRule>, Diagnostics> {
    let store = cx
        .store
        .ok_or_else(|| Diagnostic::error(format!("{who} needs the measurement store")))?;
    detect(
        Some(m),
        more,
        backend,
        store,
        &cx.protocol,
        false,
        cx.progress,
    )
    .map_err(|e| crate::ctx::outside("detecting the fusion rules", e))
}

fn test_pairs(
    todo: &[&Probe],
    backend: &dyn Backend,
    cache: &dyn Store,
    protocol: &Protocol,
    progress: &dyn crate::ctx::Progress,
) -> Result<(), Failure> {
    let fingerprint = backend.fingerprint().under(protocol);
    let mut nets = vec![Network::fixed("empty", empty())];
    // Where each probe's trios start in `nets`.
    let mut first = Vec::new();
    for p in todo {
        first.push(nets.len());
        for (k, t) in p.sizes.iter().enumerate() {
            let id = |part: &str| format!("{}-{}-{part}{k}", p.a, p.b);
            nets.push(Network::fixed(id("a"), t.alone_a.clone()));
            nets.push(Network::fixed(id("b"), t.alone_b.clone()));
            nets.push(Network::fixed(id("ab"), t.pair.clone()));
        }
    }
    progress.note(&format!(
        "fusion test: {} op pairs on {fingerprint} ({} networks; each run {})",
        todo.len(),
        nets.len(),
        if protocol.apart.is_some() {
            "in a process of its own"
        } else {
            "in this process"
        }
    ));
    let lowered: Vec<Lowered> = nets
        .iter()
        .map(|n| backend.lower(n))
        .collect::<Result<_, _>>()?;
    let mut pending: Vec<usize> = (0..todo.len()).collect();
    let mut tries = Vec::new();
    for attempt in 1..=ATTEMPTS {
        // The per-call probe and the trios of the pairs not yet decided.
        let picked: Vec<usize> = std::iter::once(0)
            .chain(
                pending
                    .iter()
                    .flat_map(|&k| first[k]..first[k] + 3 * todo[k].sizes.len()),
            )
            .collect();
        if attempt > 1 {
            progress.note(&format!(
                "fusion test: {} undecided op pairs probed again (attempt {attempt} of {ATTEMPTS})",
                pending.len()
            ));
        }
        // A pending pair was picked in every try so far: each of them holds its runs.
        tries.push(run_try(backend, &lowered, &picked, protocol)?);
        let mut undecided = Vec::new();
        for &k in &pending {
            let verdict = verdict_of(todo[k], first[k], &tries, protocol.apart.is_some());
            if verdict.undecided && attempt < ATTEMPTS {
                undecided.push(k);
            } else {
                cache.put_fusion_pair(&fingerprint, &verdict)?;
            }
        }
        pending = undecided;
        if pending.is_empty() {
            break;
        }
    }
    Ok(())
}

/// The networks of `lowered` at `picked`, all interleaved so machine drift hits A, B and A→B
/// alike, and timed [`RUNS`] times, each run in sessions of its own (compiled artefacts are
/// cached: later runs only time) and, where the protocol can start one, in a process of its
/// own. Each run's p10 per network of `lowered`, NaN where not picked.
fn run_try(
    backend: &dyn Backend,
    lowered: &[Lowered],
    picked: &[usize],
    protocol: &Protocol,
) -> Result<Vec<Vec<f64>>, Failure> {
    let subset: Vec<Lowered> = picked.iter().map(|&i| lowered[i].clone()).collect();
    let run = || -> Result<Vec<f64>, Failure> {
        let p10s = match &protocol.apart {
            Some(apart) => apart.measure(backend, &subset, protocol)?,
            None => measure_together(backend, &subset, protocol)?
                .iter()
                .map(|l| l.p10_ms)
                .collect(),
        };
        let mut t = vec![f64::NAN; lowered.len()];
        for (&i, p10) in picked.iter().zip(p10s) {
            t[i] = p10;
        }
        Ok(t)
    };
    (0..RUNS).map(|_| run()).collect()
}

/// The verdict on probe `p`, whose trios start at `first` in each run (the per-call probe
/// at 0), from the runs of every try so far.
fn verdict_of(p: &Probe, first: usize, tries: &[Vec<Vec<f64>>], apart: bool) -> PairRule {
    // Net of the per-call cost every probe pays once, so T_A + T_B does not count it twice.
    let times = |t: &[f64], size: usize| {
        let net = |i: usize| (t[first + 3 * size + i] - t[0]).max(0.0);
        (net(0), net(1), net(2))
    };
    let sizes: Vec<Vec<Try>> = (0..p.sizes.len())
        .map(|size| {
            tries
                .iter()
                .map(|runs| runs.iter().map(|r| times(r, size)).collect())
                .collect()
        })
        .collect();
    if spacetune_backends::measure::tracing() {
        for (k, s) in sizes.iter().enumerate() {
            let d = decide(&p.a, s);
            let (t_a, t_b, t_ab) = d.times;
            eprintln!(
                "fusion {} -> {} size {k}: fused {} undecided {} saves {:.0}% passes {} \
                 margin {:.4} ms resolves {}",
                p.a,
                p.b,
                d.fused,
                d.undecided,
                100.0 * saved_share(&p.a, t_a, t_b, t_ab),
                d.passes,
                d.margin_ms,
                d.resolves(&p.a)
            );
        }
    }
    let d = decide_sizes(&p.a, &sizes);
    let (t_a, t_b, t_ab) = d.times;
    PairRule {
        a: p.a.clone(),
        b: p.b.clone(),
        place: p.place.clone(),
        t_a,
        t_b,
        t_ab,
        fused: d.fused,
        spread_ms: d.spread_ms,
        undecided: d.undecided,
        attempts: tries.len() as u32,
        apart,
    }
}

fn stored_pairs(
    cache: &dyn Store,
    backend: &dyn Backend,
    protocol: &Protocol,
) -> Result<Vec<PairRule>, Failure> {
    Ok(cache.fusion_pairs(&backend.fingerprint().under(protocol))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_op_beside_a_costly_one_is_fused_on_what_it_saves() {
        // A 0.05 ms batch norm after a 2.8 ms conv, 0.043 ms of it saved (86%): runs that
        // agree to 0.001 ms make it fused, though the saving is under 2% of the pair.
        let runs = vec![
            (2.8, 0.05, 2.807),
            (2.801, 0.05, 2.808),
            (2.8, 0.051, 2.806),
        ];
        let d = decide("conv", &[runs]);
        assert!(d.fused && !d.undecided, "{d:?}");
        // The same op saving a third of itself is not.
        assert!(!fused(2.8, 0.05, 2.833));
    }

    #[test]
    fn probes_grow_to_the_elements_or_the_multiply_accumulates_whichever_comes_first() {
        let pair = |c: u64, out: u64, hw: u64| {
            let mut g = Graph::with_input(Shape::new(c, hw, hw));
            let conv = Prim::Conv {
                out,
                k: 1,
                stride: 1,
                pad: 0,
                groups: 1,
                dilation: 1,
            };
            let x = g
                .push(conv, &[spacetune_ir::Handle::new(0)], Region::Fixed(0))
                .unwrap();
            g.push(Prim::BatchNorm, &[x], Region::Fixed(0)).unwrap();
            g
        };
        // A narrow conv (8 -> 16 at 8x8): grown until its largest map, 16 x 8f x 8f, has the
        // elements, at f = 23 (4.3M MACs).
        let narrow = pair(8, 16, 8);
        assert_eq!(scale_for(&narrow), 23);
        // A wide 1x1 conv at 2x2 (256 -> 1280; 1.3M MACs): grown by 3, its 11.8M MACs under
        // 2^24 and the next factor's 21M over, though its largest map is far short of the
        // elements (46k).
        let wide = pair(256, 1280, 2);
        let f = scale_for(&wide);
        assert_eq!(f, 3);
        let grown = rescaled(&wide, f).unwrap();
        assert!(grown.cost().macs <= PROBE_MACS, "{:?}", grown.cost());
        assert!(rescaled(&wide, f + 1).unwrap().cost().macs > PROBE_MACS);
    }

    #[test]
    fn a_saving_within_its_run_to_run_spread_is_undecided() {
        // Both runs save well over half the cheaper op: fused; the spread is the standard
        // deviation of 0.4 and 0.38 ms.
        let d = decide("conv", &[vec![(1.0, 0.4, 1.0), (1.0, 0.4, 1.02)]]);
        assert!(d.fused && !d.undecided, "{d:?}");
        assert!((d.spread_ms - 0.014_142_1).abs() < 1e-6, "{d:?}");
        // Each run passes the threshold, but the saving (0.25 ms, then 0.55 ms) moved so
        // much that the margin (0.375 ms) covers the threshold: noise that passed twice.
        let d = decide("conv", &[vec![(1.0, 0.4, 1.15), (1.3, 0.4, 1.15)]]);
        assert!(!d.fused && d.undecided, "{d:?}");
        // One run fused, the other not.
        let d = decide("conv", &[vec![(1.0, 0.4, 1.0), (1.0, 0.4, 1.35)]]);
        assert!(!d.fused && d.undecided, "{d:?}");
        // Neither: not fused, and not undecided either.
        let d = decide("conv", &[vec![(1.0, 0.4, 1.4), (1.0, 0.4, 1.39)]]);
        assert!(!d.fused && !d.undecided, "{d:?}");
        // A constant A: the saving is T_B − T_AB.
        let d = decide(CONSTANT, &[vec![(0.01, 0.4, 0.01), (0.02, 0.4, 0.012)]]);
        assert!(d.fused, "{d:?}");
    }

    #[test]
    fn a_saving_within_its_spread_of_the_threshold_is_undecided() {
        // Half the 0.4 ms B is 0.2 ms. Savings 0.21 and 0.23 both pass, but by less than
        // the margin (2.5 × 0.0141 / √2 = 0.025 ms): undecided, not fused.
        let d = decide("conv", &[vec![(1.0, 0.4, 1.19), (1.0, 0.4, 1.17)]]);
        assert!(!d.fused && d.undecided, "{d:?}");
        // Short of it by more than the margin (0.19 and 0.185 ms; 0.006 ms): not fused.
        let d = decide("conv", &[vec![(1.0, 0.4, 1.21), (1.0, 0.4, 1.215)]]);
        assert!(!d.fused && !d.undecided, "{d:?}");
        // Short of it, but within the margin (0.19 and 0.17 ms; 0.025 ms): undecided.
        let d = decide("conv", &[vec![(1.0, 0.4, 1.21), (1.0, 0.4, 1.23)]]);
        assert!(!d.fused && d.undecided, "{d:?}");
    }

    #[test]
    fn tries_are_pooled_so_one_slow_run_is_outvoted_and_a_late_try_is_no_fresh_chance() {
        // A slow spell in the first try (A 0.3 ms slower, the pair's saving gone): undecided
        // alone; with a second, steady try the middle runs save 0.39 and 0.4 ms, past the
        // 0.2 ms threshold by more than the margin: the median of the spreads (0.2475 and
        // 0.0071 ms) is 0.1273 ms, and 2.5 × 0.1273 / √4 = 0.159 ms. Fused.
        let slow = vec![(1.0, 0.4, 1.0), (1.3, 0.4, 1.65)];
        let steady = vec![(1.0, 0.4, 1.0), (1.0, 0.4, 1.01)];
        let d = decide("conv", std::slice::from_ref(&slow));
        assert!(!d.fused && d.undecided, "{d:?}");
        let d = decide("conv", &[slow, steady]);
        assert!(d.fused && !d.undecided, "{d:?}");
        assert!((d.spread_ms - 0.127_279).abs() < 1e-6, "{d:?}");
        // The times reported are the deciding runs' mean, not the slow run's.
        let (t_a, t_b, t_ab) = d.times;
        assert!(
            (t_a - 1.0).abs() < 1e-12 && (t_b - 0.4).abs() < 1e-12 && (t_ab - 1.005).abs() < 1e-12,
            "{d:?}"
        );
        // A pair at the threshold: two tries each with one run either side of it, then a
        // third whose runs both pass. That try alone says fused; pooled, the middle runs
        // (0.22 and 0.224 ms) pass by less than the margin (2.5 × 0.0283 / √6 = 0.029 ms):
        // undecided.
        let third = vec![(1.0, 0.4, 1.16), (1.0, 0.4, 1.156)];
        let d = decide("conv", std::slice::from_ref(&third));
        assert!(d.fused, "{d:?}");
        let tries = [
            vec![(1.0, 0.4, 1.22), (1.0, 0.4, 1.18)],
            vec![(1.0, 0.4, 1.224), (1.0, 0.4, 1.176)],
            third,
        ];
        let d = decide("conv", &tries);
        assert!(!d.fused && d.undecided, "{d:?}");
    }

    #[test]
    fn a_try_of_three_runs_is_decided_by_its_median_run_against_its_margin() {
        // Savings 0.4, 0.39 and 0.1 ms (one process slow on the pair): the median run saves
        // 0.39 ms, past the 0.2 ms threshold by less than the margin (spread 0.1704 ms;
        // 2.5 × 0.1704 / √3 = 0.246 ms): undecided.
        let d = decide(
            "conv",
            &[vec![(1.0, 0.4, 1.0), (1.0, 0.4, 1.01), (1.0, 0.4, 1.3)]],
        );
        assert!(!d.fused && d.undecided, "{d:?}");
        assert!((d.spread_ms - 0.170_392).abs() < 1e-6, "{d:?}");
        // Three processes within 0.02 ms: the median run decides, and its times are shown.
        let d = decide(
            "conv",
            &[vec![(1.0, 0.4, 1.0), (1.0, 0.4, 1.02), (1.0, 0.4, 1.01)]],
        );
        assert!(d.fused && !d.undecided, "{d:?}");
        assert!((d.times.2 - 1.01).abs() < 1e-12, "{d:?}");
        // Two tries of three: the two beside the median of six (0.39 ms each) decide; the
        // median spread (of 0.1704 and 0.01 ms) is 0.0902 ms, the margin 0.092 ms: fused.
        let d = decide(
            "conv",
            &[
                vec![(1.0, 0.4, 1.0), (1.0, 0.4, 1.01), (1.0, 0.4, 1.3)],
                vec![(1.0, 0.4, 1.0), (1.0, 0.4, 1.01), (1.0, 0.4, 1.02)],
            ],
        );
        assert!(d.fused && (d.spread_ms - 0.090_196).abs() < 1e-6, "{d:?}");
        // Known better with every try: the same savings each time (0.3, 0.25 and 0.2 ms;
        // spread 0.05 ms) leave the median, 0.25 ms, within the margin of the 0.2 ms
        // threshold after one try (0.072 ms) and two (0.051 ms), and past it after three
        // (0.042 ms).
        let same = vec![(1.0, 0.4, 1.1), (1.0, 0.4, 1.15), (1.0, 0.4, 1.2)];
        for (tries, fused) in [(1, false), (2, false), (3, true)] {
            let d = decide("conv", &vec![same.clone(); tries]);
            assert!(d.fused == fused && d.undecided != fused, "{tries}: {d:?}");
        }
    }

    #[test]
    fn a_pair_fused_at_one_probe_size_only_is_undecided() {
        let fused = vec![(1.0, 0.4, 1.0), (1.0, 0.4, 1.02)];
        let apart = vec![(4.0, 1.6, 5.6), (4.0, 1.6, 5.58)];
        // At the larger size one run saves all of B and the other little: noise, no veto.
        let noisy = vec![(4.0, 0.4, 4.0), (4.4, 0.4, 4.7)];
        let d = decide_sizes("conv", &[vec![fused.clone()], vec![fused.clone()]]);
        assert!(d.fused && !d.undecided, "{d:?}");
        let d = decide_sizes("conv", &[vec![fused.clone()], vec![noisy.clone()]]);
        assert!(d.fused && !d.undecided, "{d:?}");
        let d = decide_sizes("conv", &[vec![noisy.clone()], vec![fused.clone()]]);
        assert!(!d.fused && d.undecided, "{d:?}");
        let d = decide_sizes("conv", &[vec![fused.clone()], vec![apart.clone()]]);
        assert!(!d.fused && d.undecided, "{d:?}");
        let d = decide_sizes("conv", &[vec![apart.clone()], vec![fused.clone()]]);
        assert!(!d.fused && d.undecided, "{d:?}");
        // The spread reported is the probe size's (of savings 0 and 0.02 ms).
        assert!((d.spread_ms - 0.014_142_1).abs() < 1e-6, "{d:?}");
        let d = decide_sizes("conv", &[vec![apart.clone()], vec![apart.clone()]]);
        assert!(!d.fused && !d.undecided, "{d:?}");
        // At the larger size the runs agree (savings 0.79 and 0.77 ms, margin 0.025 ms) and
        // put the pair just under the threshold (0.8 ms, half of B): a hand-over fading with
        // the map's size, not noise. Undecided, not fused.
        let fading = vec![(4.0, 1.6, 4.81), (4.0, 1.6, 4.83)];
        let d = decide("conv", std::slice::from_ref(&fading));
        assert!(d.undecided && !d.passes, "{d:?}");
        let d = decide_sizes("conv", &[vec![fused.clone()], vec![fading]]);
        assert!(!d.fused && d.undecided, "{d:?}");
        // At the larger size the middle run saves 0.14 ms of a 0.2 ms B (savings 0.18, 0.10
        // and 0.14 ms; margin 0.058 ms): above the threshold (0.1 ms), short of the margin.
        // It does not say the pair is not fused: fused.
        let short = vec![(2.0, 0.2, 2.02), (2.0, 0.2, 2.10), (2.0, 0.2, 2.06)];
        let d = decide("conv", std::slice::from_ref(&short));
        assert!(d.undecided && d.passes && d.resolves("conv"), "{d:?}");
        let d = decide_sizes("conv", &[vec![fused.clone()], vec![short]]);
        assert!(d.fused && !d.undecided, "{d:?}");
    }
}
