//! `spacetune fusion-rules` and `spacetune latency-eval`: black-box fusion detection, the
//! latency tables (naive, BBSSP's corrected one, the egg kernel model) and how well each
//! predicts the latency of random networks measured whole.

use crate::measure::{measure_space, progress_bar, select_spaces, stem, BackendArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use spacetune::backends::{
    self, cache::Cache, measure::measure_all, measure::measure_together, measure::Protocol,
    weights::Rng, Backend, Lowered,
};
use spacetune::ir::{Graph, Module, Network, Ssbn};
use spacetune::pass::fusion::{self, PairRule};
use spacetune::pass::kernels::{self, FusionRules};
use spacetune::pass::latency::{
    self, agreement, corrections_hold, fit_line, fit_plane, Agreement, Correct, CorrectionsHold,
    Measured,
};
use spacetune::pass::Pass;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

#[derive(Args)]
pub struct FusionArgs {
    /// A .space file whose op pairs to test; without one, print what is stored
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub on: BackendArgs,
    /// Test pairs again even if a verdict is stored
    #[arg(long)]
    pub redo: bool,
}

/// Tests every op pair of `m` that has no stored verdict (all of them with `redo`), then
/// every fused chain against its readers, round by round, and returns every verdict stored
/// for the backend.
pub fn detect(
    m: Option<&Module>,
    backend: &dyn Backend,
    cache: &Cache,
    protocol: &Protocol,
    redo: bool,
) -> Result<Vec<PairRule>> {
    let Some(m) = m else {
        return stored_pairs(cache, backend);
    };
    if redo {
        cache.clear_fusion_pairs(&backend.fingerprint())?;
    }
    // A verdict stands for the place it was tested at (a 3x3 conv beside its batch norm,
    // where another file has a depthwise one): the file's rules are the verdicts at its own
    // places, each tested once. Files that share a database never re-test each other's
    // pairs, so a noisy re-test cannot flip a rule a file has already been measured with.
    let at = |s: &PairRule, p: &fusion::Probe| s.a == p.a && s.b == p.b && s.place == p.place;
    let mut chains = fusion::single_ops(m);
    let mut tested = HashSet::new();
    let mut own: Vec<fusion::Probe> = Vec::new();
    let mut stored = stored_pairs(cache, backend)?;
    for round in 1..kernels::MAX_CHAIN {
        let mut probes = fusion::probes(m, &chains);
        if round == 1 {
            probes.extend(fusion::constant_probes(m));
        }
        probes.retain(|p| tested.insert((p.a.clone(), p.b.clone())));
        let todo: Vec<&fusion::Probe> = probes
            .iter()
            .filter(|p| !stored.iter().any(|s| at(s, p)))
            .collect();
        if !todo.is_empty() {
            test_pairs(&todo, backend, cache, protocol)?;
            stored = stored_pairs(cache, backend)?;
        }
        // The next round extends the chains found fused in this one.
        chains = probes
            .iter()
            .filter(|p| p.a != kernels::CONSTANT)
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

fn test_pairs(
    todo: &[&fusion::Probe],
    backend: &dyn Backend,
    cache: &Cache,
    protocol: &Protocol,
) -> Result<()> {
    let fingerprint = backend.fingerprint();
    eprintln!(
        "fusion test: {} op pairs on {fingerprint} ({} networks)",
        todo.len(),
        3 * todo.len() + 1
    );
    let mut nets = vec![Network::fixed("empty", fusion::empty())];
    for p in todo {
        let id = |part: &str| format!("{}-{}-{part}", p.a, p.b);
        nets.push(Network::fixed(id("a"), p.alone_a.clone()));
        nets.push(Network::fixed(id("b"), p.alone_b.clone()));
        nets.push(Network::fixed(id("ab"), p.pair.clone()));
    }
    let lowered: Vec<Lowered> = nets
        .iter()
        .map(|n| backend.lower(n))
        .collect::<Result<_, _>>()?;
    // All probes interleaved, so machine drift hits A, B and A→B alike; and twice, each run
    // in sessions of its own. (Compiled artefacts are cached: the second run only times.)
    let runs: Vec<Vec<f64>> = (0..2)
        .map(|_| {
            measure_together(backend, &lowered, protocol)
                .map(|ls| ls.iter().map(|l| l.p10_ms).collect())
        })
        .collect::<Result<_, _>>()?;
    for (k, p) in todo.iter().enumerate() {
        // Net of the per-call cost every probe pays once, so T_A + T_B does not count it
        // twice.
        let times = |t: &[f64]| {
            let net = |i: usize| (t[1 + 3 * k + i] - t[0]).max(0.0);
            (net(0), net(1), net(2))
        };
        // A fusion must show in each run: ORT settles a session in a fast or a slow mode
        // (a depthwise conv alone 10% slower than beside its relu6), and one such run
        // must not make a rule. The times reported are the better of the two.
        let fused = runs.iter().all(|t| {
            let (t_a, t_b, t_ab) = times(t);
            fusion::verdict(&p.a, t_a, t_b, t_ab)
        });
        let best: Vec<f64> = runs[0]
            .iter()
            .zip(&runs[1])
            .map(|(a, b)| a.min(*b))
            .collect();
        let (t_a, t_b, t_ab) = times(&best);
        let verdict = PairRule {
            a: p.a.clone(),
            b: p.b.clone(),
            place: p.place.clone(),
            t_a,
            t_b,
            t_ab,
            fused,
        };
        cache.put_fusion_pair(
            &fingerprint,
            &p.a,
            &p.b,
            &p.place,
            &serde_json::to_string(&verdict)?,
        )?;
    }
    Ok(())
}

fn stored_pairs(cache: &Cache, backend: &dyn Backend) -> Result<Vec<PairRule>> {
    cache
        .fusion_pairs(&backend.fingerprint())?
        .iter()
        .map(|s| serde_json::from_str(s).context("a stored fusion verdict does not parse"))
        .collect()
}

pub fn print_pairs(pairs: &[PairRule]) {
    println!(
        "{:<16} {:<9} {:>9} {:>9} {:>9} {:>7}  verdict  place",
        "A", "B", "T_A ms", "T_B ms", "T_AB ms", "saves"
    );
    for p in pairs {
        let of_min = fusion::saved_share(&p.a, p.t_a, p.t_b, p.t_ab);
        println!(
            "{:<16} {:<9} {:>9.4} {:>9.4} {:>9.4} {:>6.0}%  {:<7}  {}",
            p.a,
            p.b,
            p.t_a,
            p.t_b,
            p.t_ab,
            100.0 * of_min,
            if p.fused { "fused" } else { "-" },
            p.place
        );
    }
    let n = pairs.iter().filter(|p| p.fused).count();
    println!(
        "{n} of {} pairs fused (saves = (T_A + T_B − T_AB) / min(T_A, T_B); fused above 50%; zero -> B: B folded into a constant when the network is compiled)",
        pairs.len()
    );
}

pub fn fusion_rules(m: Option<&Module>, args: &FusionArgs) -> Result<()> {
    let (backend, cache, protocol) = args.on.open()?;
    let pairs = detect(m, backend.as_ref(), &cache, &protocol, args.redo)?;
    println!("fusion rules of {}", backend.fingerprint());
    if pairs.is_empty() {
        println!("none stored; give a .space file to test its op pairs");
    } else {
        print_pairs(&pairs);
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub on: BackendArgs,
    /// Random networks (not SSBNs) the predictors are scored on
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Seed of the random networks
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Further random networks, not scored: the first half calibrates the fitted
    /// predictors (corrected+fit, kernel+fit), the second half chooses the recommended one
    #[arg(long, default_value_t = 40)]
    pub validate: usize,
    /// Independent measurements of every SSBN averaged into the corrected table (the first
    /// comes from the cache)
    #[arg(long, default_value_t = 2)]
    pub replicate: usize,
    /// Scored networks measured a second time, afresh, for the noise floor
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// Only this space (by name)
    #[arg(long)]
    pub space: Option<String>,
    #[arg(long, default_value = "spacetune-out")]
    pub out: PathBuf,
}

/// The predictors, in report order.
pub const PREDICTORS: &[(&str, &str)] = &[
    ("naive", "blocks timed alone, summed (FBNet, ProxylessNAS, OFA)"),
    (
        "naive+fit",
        "naive, with a line a + b·naive fitted on the SSBNs (per-call and context costs)",
    ),
    (
        "corrected",
        "BBSSP: Lat(SSBN_0) + Σ_i (Lat(SSBN_(i,c_i)) − Lat(SSBN_0))",
    ),
    (
        "corrected+fit",
        "corrected, with the base Lat(SSBN_0) fitted on the calibration networks",
    ),
    (
        "kernel",
        "egg kernel model: the kernels the backend runs, each timed alone (net of the per-call cost)",
    ),
    (
        "kernel+pairs",
        "kernel model, less what each pair of consecutive kernels saves handing its output over (timed as a pair)",
    ),
    (
        "kernel+fit",
        "kernel model, with a per-kernel cost, fitted on the calibration networks",
    ),
    (
        "corrected+kernel",
        "corrected, plus the kernel model's estimate of how the choices interact",
    ),
];

/// One network's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub id: String,
    pub key: String,
    pub measured_ms: f64,
    /// By predictor, in [`PREDICTORS`] order (`None`: that predictor has no table here).
    pub predicted_ms: Vec<Option<f64>>,
    pub kernels: usize,
}

/// One predictor's agreement on the scored and on the validation networks (`None`: the
/// predictor has no table for this space).
#[derive(Clone, Debug, Serialize)]
pub struct Score {
    pub name: String,
    pub what: String,
    pub scored: Option<Agreement>,
    pub validation: Option<Agreement>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub space: String,
    pub backend: String,
    pub samples: usize,
    pub seed: u64,
    pub ssbns: usize,
    pub fusion_pairs: Vec<PairRule>,
    pub distinct_kernels: usize,
    /// Distinct pairs of consecutive kernels timed for their hand-over.
    pub handover_pairs: usize,
    pub predictors: Vec<Score>,
    pub recommended: String,
    /// The noise floor: a second, independent measurement of some scored networks scored
    /// like a predictor, and the mean coefficient of variation of the pairs.
    pub repeat: Option<Agreement>,
    pub repeat_cv: Option<f64>,
    /// Whether the corrected table's corrections (its departures from naive) hold on the
    /// scored networks (`None`: no naive table, or no corrections).
    pub corrections_hold: Option<CorrectionsHold>,
    /// Each fitted predictor's coefficients: intercept, slope (and, for kernel+fit, the
    /// cost per kernel).
    pub fit: BTreeMap<String, Vec<f64>>,
    pub scored: Vec<Row>,
    /// The held-out networks that fitted corrected+fit and kernel+fit.
    pub calibration: Vec<Row>,
    /// The held-out networks that chose the recommendation.
    pub validation: Vec<Row>,
}

/// Random choice vectors of `info`: not SSBNs (at least two decisions off their default),
/// all distinct, drawn uniformly per decision from one seeded stream.
fn sample(info: &spacetune::ir::SpaceInfo, n: usize, seed: u64) -> Vec<Vec<u32>> {
    let decisions: Vec<_> = info.decisions.iter().map(|(_, d)| d).collect();
    let possible: f64 = decisions.iter().map(|d| d.options.len() as f64).product();
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut tries = 0;
    while out.len() < n && tries < 100 * n + 1000 && (seen.len() as f64) < possible {
        tries += 1;
        let c: Vec<u32> = decisions
            .iter()
            .map(|d| rng.below(d.options.len() as u64) as u32)
            .collect();
        let off = decisions
            .iter()
            .zip(&c)
            .filter(|(d, &c)| d.default != c)
            .count();
        if off >= 2 && seen.insert(c.clone()) {
            out.push(c);
        }
    }
    out
}

/// A pass's diagnostics as an error: what was being done, then every message.
fn failed(doing: &str, d: spacetune::ir::Diagnostics) -> anyhow::Error {
    let messages: Vec<&str> = d.0.iter().map(|d| d.message.as_str()).collect();
    anyhow::anyhow!("{doing}: {}", messages.join("; "))
}

/// The scale every measurement of an evaluation is put on: SSBN_0, the drift reference,
/// and — once the SSBNs are measured — two of them as bridges. Without bridges the first
/// chunk of every new batch of networks would be scaled by the reference's figure alone,
/// and nothing would tell a slow spell that caught only the reference (a repeat
/// measurement 6% off its first one, seen on ORT).
struct Anchor {
    reference: Lowered,
    bridges: Vec<Lowered>,
}

impl Anchor {
    /// An empty in-memory cache holding only the stored latencies of the reference and the
    /// bridges, so that networks measured into it afresh are put on the same scale as the
    /// stored ones.
    fn fresh(&self, backend: &dyn Backend, cache: &Cache) -> Result<Cache> {
        let fresh = Cache::in_memory()?;
        let fingerprint = backend.fingerprint();
        for l in std::iter::once(&self.reference).chain(&self.bridges) {
            if let Some(latency) = cache.get(&fingerprint, &l.hash)? {
                fresh.put(&fingerprint, l, &Ok(latency))?;
            }
        }
        Ok(fresh)
    }
}

/// Measures networks through the cache on the anchor's scale; fails naming the first
/// network that could not be measured (everything measured stays in the cache).
fn measure_nets(
    backend: &dyn Backend,
    nets: &[Network],
    anchor: &Anchor,
    protocol: &Protocol,
    cache: &Cache,
    what: &str,
) -> Result<Vec<f64>> {
    let lowered: Vec<Lowered> = nets
        .iter()
        .map(|n| backend.lower(n))
        .collect::<Result<_, _>>()?;
    measure_lowered(backend, &lowered, anchor, protocol, cache, what)
}

/// [`measure_nets`] on networks already lowered.
fn measure_lowered(
    backend: &dyn Backend,
    lowered: &[Lowered],
    anchor: &Anchor,
    protocol: &Protocol,
    cache: &Cache,
    what: &str,
) -> Result<Vec<f64>> {
    // Equal networks (a cell edge's option in every cell of a stage) are measured once.
    let mut unique: Vec<Lowered> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    // The bridges ride along: cached, they are the first chunk's further scale estimates.
    for l in lowered.iter().chain(&anchor.bridges) {
        at.entry(l.hash.clone()).or_insert_with(|| {
            unique.push(l.clone());
            unique.len() - 1
        });
    }
    let bar = progress_bar(unique.len(), format!("{what} on {}", backend.name()));
    let outcomes = measure_all(
        backend,
        &unique,
        Some(&anchor.reference),
        protocol,
        cache,
        |o| {
            bar.set_message(o.id.clone());
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    let ms: Vec<f64> = outcomes
        .into_iter()
        .map(|o| match o.latency {
            Ok(l) => Ok(l.p10_ms),
            Err(e) => bail!("{what}: network {} failed on {}: {e}", o.id, backend.name()),
        })
        .collect::<Result<_>>()?;
    Ok(lowered.iter().map(|l| ms[at[&l.hash]]).collect())
}

pub fn latency_eval(m: &Module, args: &EvalArgs) -> Result<()> {
    let (backend, cache, protocol) = args.on.open()?;
    let backend = backend.as_ref();
    let spaces = select_spaces(m, args.space.as_deref(), &args.file)?;
    let pairs = detect(Some(m), backend, &cache, &protocol, false)?;
    let rules = fusion::rules(&pairs);
    let stem = stem(&args.file);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut reports = Vec::new();
    let mut annotated = m.clone();
    let mut measured_spaces = Vec::new();
    for &s in &spaces {
        let (report, measured) =
            eval_space(m, s, backend, &cache, &protocol, &rules, &pairs, args)?;
        print_report(&report);
        reports.push(report);
        measured_spaces.push((s, measured));
    }
    Correct {
        backend: backend.fingerprint().to_string(),
        measured: measured_spaces,
    }
    .run(&mut annotated)
    .map_err(|d| failed("the correct pass", d))?;
    // Options in the name, so runs of one backend in several configurations sit side by side.
    let mut name = format!("{stem}.{}", backend.name());
    for o in &args.on.options {
        name.push('-');
        name.extend(o.chars().map(|c| {
            if c.is_alphanumeric() || "=.-_".contains(c) {
                c
            } else {
                '_'
            }
        }));
    }
    let base = args.out.join(name);
    let json = PathBuf::from(format!("{}.latency.json", base.display()));
    std::fs::write(&json, serde_json::to_string_pretty(&reports)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let ir = PathBuf::from(format!("{}.lut.ir", base.display()));
    std::fs::write(&ir, annotated.to_string())
        .with_context(|| format!("writing {}", ir.display()))?;
    println!("wrote {} and {}", json.display(), ir.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn eval_space(
    m: &Module,
    s: u32,
    backend: &dyn Backend,
    cache: &Cache,
    protocol: &Protocol,
    rules: &FusionRules,
    pairs: &[PairRule],
    args: &EvalArgs,
) -> Result<(Report, Measured)> {
    let info = &m.checked[s as usize];
    let ssbns: Vec<&Network> = m.networks.iter().filter(|n| n.space == s).collect();
    let base_net = ssbns
        .iter()
        .find(|n| n.ssbn == Ssbn::Base)
        .context("a space has an SSBN_0")?;
    let reference = backend.lower(base_net)?;

    // Scored networks come first in the stream, so the same `--samples` and `--seed` score
    // the same networks whatever `--validate` is.
    let choices = sample(info, args.samples + args.validate, args.seed);
    if choices.len() < args.samples + args.validate {
        bail!(
            "space `{}` has only {} networks that are not SSBNs; ask for fewer samples",
            info.name,
            choices.len()
        );
    }
    // 1. The SSBNs, whole: BBSSP's measurements.
    let bar = progress_bar(ssbns.len(), format!("SSBNs on {}", backend.name()));
    let outcomes = measure_space(backend, &ssbns, protocol, cache, |o| {
        bar.set_message(o.id.clone());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let mut ssbn_ms = Vec::new();
    let mut measured = Measured::default();
    for (n, o) in ssbns.iter().zip(&outcomes) {
        let l = o
            .latency
            .as_ref()
            .map_err(|e| anyhow::anyhow!("SSBN {} failed on {}: {e}", n.id, backend.name()))?;
        ssbn_ms.push(l.p10_ms);
        if n.ssbn == Ssbn::Base {
            measured.profile = l
                .per_layer
                .as_ref()
                .map(|p| p.iter().map(|t| (t.region, t.ms)).collect());
        }
    }
    // Two swaps as bridges, from different parts of the space (their own errors apart).
    let swaps: Vec<&&Network> = ssbns.iter().filter(|n| n.ssbn != Ssbn::Base).collect();
    let anchor = Anchor {
        reference: reference.clone(),
        bridges: [swaps.len() / 3, 2 * swaps.len() / 3]
            .iter()
            .filter_map(|&i| swaps.get(i))
            .map(|n| backend.lower(n))
            .collect::<Result<Vec<_>, _>>()?,
    };
    // SSBN_0 is the drift reference: its stored figure defines the scale the others are
    // measured on, and is not itself a measurement on that scale like theirs. Its error
    // against them would enter every corrected prediction k − 1 times (a network with k
    // swapped decisions), so the table takes SSBN_0 measured again as an ordinary network
    // — a copy under its own key — beside the others.
    let base_again = Lowered {
        id: format!("{}-again", reference.id),
        hash: format!("{}-again", reference.hash),
        ..reference.clone()
    };
    let mut base_ms = measure_lowered(
        backend,
        std::slice::from_ref(&base_again),
        &anchor,
        protocol,
        cache,
        "SSBN_0 again",
    )?[0];
    // BBSSP's table rests on one measurement per SSBN, and an error in one delta lands in
    // every prediction that uses it: further independent runs (on the same anchor, so on
    // the same scale) are averaged in.
    if args.replicate > 1 {
        let mut again: Vec<Lowered> = ssbns
            .iter()
            .map(|n| backend.lower(n))
            .collect::<Result<_, _>>()?;
        again.push(base_again);
        for _ in 1..args.replicate {
            // (The bridges keep their first figure: they define this run's scale.)
            let fresh = anchor.fresh(backend, cache)?;
            let t = measure_lowered(backend, &again, &anchor, protocol, &fresh, "SSBNs again")?;
            for (sum, t) in ssbn_ms.iter_mut().zip(&t) {
                *sum += t;
            }
            base_ms += t[ssbns.len()];
        }
        for t in &mut ssbn_ms {
            *t /= args.replicate as f64;
        }
        base_ms /= args.replicate as f64;
    }
    for (n, t) in ssbns.iter().zip(&mut ssbn_ms) {
        if n.ssbn == Ssbn::Base {
            *t = base_ms;
        }
    }
    for (n, &t) in ssbns.iter().zip(&ssbn_ms) {
        match n.ssbn {
            Ssbn::Base => measured.base_ms = t,
            Ssbn::Swap { decision, option } => {
                measured.swaps.insert((decision, option), t);
            }
        }
    }

    // 2. The naive table: every option alone, where it is used.
    let alone = latency::standalone(m, s)
        .map_err(|d| failed(&format!("building the blocks of `{}` alone", info.name), d))?;
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
    let alone_ms = measure_nets(
        backend,
        &alone_nets,
        &anchor,
        protocol,
        cache,
        "blocks alone",
    )?;
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
    let lut = latency::table(m, s, &backend.fingerprint().to_string(), &measured)
        .map_err(|d| failed("building the latency table", d))?;

    // 3. Random networks (drawn first, so a space too small for them fails at once).
    let decisions: Vec<_> = info.decisions.iter().map(|(_, d)| d).collect();
    let random: Vec<Network> = choices
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let graph = spacetune::pass::expand::build(m, info, c)
                .map_err(|d| failed("building a random network", d))?;
            let mut n = Network::fixed(format!("{}-r{k}", info.name), graph);
            n.space = s;
            n.key = spacetune::pass::expand::key(&decisions, c);
            n.choices = c.clone();
            Ok(n)
        })
        .collect::<Result<_>>()?;
    let random_ms = measure_nets(
        backend,
        &random,
        &anchor,
        protocol,
        cache,
        "random networks",
    )?;

    // 4. The kernel model over every network it is asked about.
    let all: Vec<&Network> = ssbns.iter().copied().chain(random.iter()).collect();
    let per_net: Vec<(Graph, kernels::Kernels)> = all
        .iter()
        .map(|n| {
            let g = n.graph.pruned();
            let k = kernels::kernels(&g, rules);
            (g, k)
        })
        .collect();
    let mut distinct: BTreeMap<String, Graph> = BTreeMap::new();
    let mut kernel_keys: Vec<Vec<String>> = Vec::new();
    for (g, ks) in &per_net {
        let mut keys = Vec::new();
        for k in &ks.kernels {
            let kg = k.graph(g);
            let key = backends::network_hash(&kg, 1);
            distinct.entry(key.clone()).or_insert(kg);
            keys.push(key);
        }
        kernel_keys.push(keys);
    }
    // Consecutive kernels handing their output straight over, each distinct pair timed as a
    // network of two: what the pair saves against its kernels alone.
    let mut distinct_pairs: BTreeMap<String, Graph> = BTreeMap::new();
    let mut pair_keys: Vec<Vec<(String, usize, usize)>> = Vec::new();
    for (g, ks) in &per_net {
        let mut keys = Vec::new();
        for (a, b) in kernels::handovers(g, &ks.kernels) {
            let pg = kernels::pair_graph(g, &ks.kernels[a], &ks.kernels[b]);
            let key = backends::network_hash(&pg, 1);
            distinct_pairs.entry(key.clone()).or_insert(pg);
            keys.push((key, a, b));
        }
        pair_keys.push(keys);
    }
    // Each kernel timed alone pays the per-call cost of a network once; the network it is
    // part of pays it once in all. The empty network measures it.
    let mut kernel_nets = vec![Network::fixed("empty", fusion::empty())];
    kernel_nets.extend(
        distinct
            .iter()
            .map(|(key, g)| Network::fixed(format!("kernel-{key}"), g.clone())),
    );
    kernel_nets.extend(
        distinct_pairs
            .iter()
            .map(|(key, g)| Network::fixed(format!("pair-{key}"), g.clone())),
    );
    let kernel_ms = measure_nets(backend, &kernel_nets, &anchor, protocol, cache, "kernels")?;
    let call = kernel_ms[0];
    let (single_ms, pair_ms) = kernel_ms[1..].split_at(distinct.len());
    let by_key: BTreeMap<&String, f64> = distinct
        .keys()
        .zip(single_ms.iter().map(|t| (t - call).max(0.0)))
        .collect();
    let pair_by_key: BTreeMap<&String, f64> = distinct_pairs
        .keys()
        .zip(pair_ms.iter().map(|t| (t - call).max(0.0)))
        .collect();
    let kernel_pred: Vec<f64> = kernel_keys
        .iter()
        .map(|keys| call + keys.iter().map(|k| by_key[k]).sum::<f64>())
        .collect();
    // A hand-over saves what the pair runs faster than its two kernels alone. Not clamped
    // at zero: on a noisy backend that would turn noise into a saving on every pair.
    let pairs_pred: Vec<f64> = kernel_keys
        .iter()
        .zip(&pair_keys)
        .zip(&kernel_pred)
        .map(|((keys, pairs), &alone)| {
            let saved = |(p, a, b): &(String, usize, usize)| {
                by_key[&keys[*a]] + by_key[&keys[*b]] - pair_by_key[p]
            };
            alone - pairs.iter().map(saved).sum::<f64>()
        })
        .collect();

    // 5. Predictions. naive+fit uses the SSBNs (what BBSSP measures anyway); corrected+fit
    // and kernel+fit the first half of the held-out networks, the calibration networks (the
    // second half chooses the recommendation, so no predictor is chosen on what it was
    // fitted to).
    let n_ssbn = ssbns.len();
    let naive_all: Vec<Option<f64>> = all.iter().map(|n| lut.naive(&n.choices)).collect();
    let fit = |pred: &[f64]| fit_line(&pred[..n_ssbn], &ssbn_ms);
    let naive_fit = naive_all
        .iter()
        .copied()
        .collect::<Option<Vec<f64>>>()
        .map(|v| fit(&v));
    let kernel_fit = fit(&kernel_pred);
    let calibration = args.samples..args.samples + args.validate / 2;
    // A kernel timed alone pays what it does not pay inside the network (its output
    // allocated and handed back each call): a per-kernel term. The SSBNs cannot tell it
    // (their kernel counts barely vary; on NB201 they fitted it with the wrong sign).
    let kernel_count: Vec<f64> = per_net
        .iter()
        .map(|(_, k)| k.kernels.len() as f64)
        .collect();
    // The network pays the per-call cost once, as the empty network measures it (a network
    // the backend folds to a constant pays nothing else), so it is the plane's base.
    let kernel_features = |i: usize| vec![kernel_pred[i] - call, kernel_count[i]];
    let calibrating = n_ssbn + calibration.start..n_ssbn + calibration.end;
    let kernel_plane = fit_plane(
        &calibrating.clone().map(kernel_features).collect::<Vec<_>>(),
        call,
        &random_ms[calibration.clone()],
    )
    .unwrap_or_else(|| vec![kernel_fit.1, 0.0]);
    // The kernel model's view of the SSBN deltas, to take out what the corrected table
    // already knows and keep only the interaction of the choices.
    let kernel_base = kernel_pred[0];
    let kernel_swap: BTreeMap<(u32, u32), f64> = ssbns
        .iter()
        .zip(&kernel_pred)
        .filter_map(|(n, &k)| match n.ssbn {
            Ssbn::Swap { decision, option } => Some(((decision, option), k - kernel_base)),
            Ssbn::Base => None,
        })
        .collect();
    // The corrected table counts Lat(SSBN_0) k − 1 times negatively for a network with k
    // swapped decisions (Σ_i Lat(SSBN_(i,c_i)) − (k − 1)·Lat(SSBN_0)), so an error of e in
    // that one measurement moves a prediction by (k − 1)·e. corrected+fit replaces it by
    // the base that best explains the calibration networks (least squares, one parameter).
    let swapped = |n: &Network| {
        n.choices
            .iter()
            .zip(&decisions)
            .filter(|(&c, d)| d.default != c)
            .count() as f64
    };
    let (num, den) = random[calibration.clone()]
        .iter()
        .zip(&random_ms[calibration.clone()])
        .fold((0.0, 0.0), |(num, den), (n, &m)| {
            let k1 = (swapped(n) - 1.0).max(0.0);
            (num + (lut.corrected(&n.choices) - m) * k1, den + k1 * k1)
        });
    let base_shift = if den > 0.0 { num / den } else { 0.0 };
    let predict = |idx: usize, n: &Network| -> Vec<Option<f64>> {
        let corrected = lut.corrected(&n.choices);
        let additive = kernel_base
            + n.choices
                .iter()
                .enumerate()
                .filter(|(i, &c)| decisions[*i].default != c)
                .map(|(i, &c)| kernel_swap[&(i as u32, c)])
                .sum::<f64>();
        let interaction = kernel_fit.1 * (kernel_pred[idx] - additive);
        vec![
            naive_all[idx],
            naive_all[idx].zip(naive_fit).map(|(x, (a, b))| a + b * x),
            Some(corrected),
            Some(corrected - (swapped(n) - 1.0).max(0.0) * base_shift),
            Some(kernel_pred[idx]),
            Some(pairs_pred[idx]),
            Some(
                call + kernel_features(idx)
                    .iter()
                    .zip(&kernel_plane)
                    .map(|(x, b)| x * b)
                    .sum::<f64>(),
            ),
            Some(corrected + interaction),
        ]
    };
    let rows: Vec<Row> = random
        .iter()
        .enumerate()
        .map(|(k, n)| Row {
            id: n.id.clone(),
            key: n.key.clone(),
            measured_ms: random_ms[k],
            predicted_ms: predict(n_ssbn + k, n),
            kernels: per_net[n_ssbn + k].1.kernels.len(),
        })
        .collect();
    let (scored, held_out) = rows.split_at(args.samples);
    let (calibration, validation) = held_out.split_at(args.validate / 2);
    // One predictor's predictions for `rows` (`None`: it has no table here).
    let predicted = |rows: &[Row], p: usize| -> Option<Vec<f64>> {
        rows.iter().map(|r| r.predicted_ms[p]).collect()
    };
    let truth = |rows: &[Row]| -> Vec<f64> { rows.iter().map(|r| r.measured_ms).collect() };
    let score = |rows: &[Row], p: usize| -> Option<Agreement> {
        predicted(rows, p)
            .filter(|_| !rows.is_empty())
            .map(|p| agreement(&p, &truth(rows)))
    };
    let column = |name: &str| {
        let p = PREDICTORS.iter().position(|(n, _)| *n == name)?;
        predicted(scored, p)
    };
    let hold = column("naive")
        .zip(column("corrected"))
        .and_then(|(naive, corrected)| corrections_hold(&naive, &corrected, &truth(scored)));
    let predictors: Vec<Score> = PREDICTORS
        .iter()
        .enumerate()
        .map(|(p, (name, what))| Score {
            name: name.to_string(),
            what: what.to_string(),
            scored: score(scored, p),
            validation: score(validation, p),
        })
        .collect();
    // The recommendation rests on the validation networks only: the most of them within
    // ±5% (the goal a user plans with), then the lower MAPE. MAPE alone would let one rare,
    // badly predicted network decide.
    let recommended = predictors
        .iter()
        .filter_map(|p| p.validation.as_ref().map(|v| (&p.name, v)))
        .min_by(|a, b| {
            b.1.within5
                .total_cmp(&a.1.within5)
                .then(a.1.mape.total_cmp(&b.1.mape))
        })
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| "corrected".into());

    // 6. The noise floor: some scored networks again, measured afresh.
    let (repeat, repeat_cv) = if args.repeat > 0 {
        let again: Vec<Network> = random
            .iter()
            .take(args.repeat.min(args.samples))
            .cloned()
            .collect();
        let fresh = anchor.fresh(backend, cache)?;
        let second = measure_nets(backend, &again, &anchor, protocol, &fresh, "repeats")?;
        let first = &random_ms[..second.len()];
        let cv = first
            .iter()
            .zip(&second)
            .map(|(a, b)| std::f64::consts::SQRT_2 * (a - b).abs() / (a + b))
            .sum::<f64>()
            / second.len().max(1) as f64;
        (Some(agreement(&second, first)), Some(cv))
    } else {
        (None, None)
    };

    let mut fits = BTreeMap::new();
    if let Some(f) = naive_fit {
        fits.insert("naive+fit".to_string(), vec![f.0, f.1]);
    }
    fits.insert(
        "kernel+fit".to_string(),
        std::iter::once(call).chain(kernel_plane).collect(),
    );
    fits.insert("corrected+fit".to_string(), vec![-base_shift, 1.0]);
    let report = Report {
        space: info.name.clone(),
        backend: backend.fingerprint().to_string(),
        samples: scored.len(),
        seed: args.seed,
        ssbns: n_ssbn,
        fusion_pairs: pairs.to_vec(),
        distinct_kernels: distinct.len(),
        handover_pairs: distinct_pairs.len(),
        predictors,
        recommended,
        repeat,
        repeat_cv,
        corrections_hold: hold,
        fit: fits,
        scored: scored.to_vec(),
        calibration: calibration.to_vec(),
        validation: validation.to_vec(),
    };
    Ok((report, measured))
}

fn print_report(r: &Report) {
    println!(
        "\nspace {} on {}: {} random networks scored (seed {}), {} SSBNs, {} distinct kernels, {} hand-over pairs, {} fused pairs",
        r.space,
        r.backend,
        r.samples,
        r.seed,
        r.ssbns,
        r.distinct_kernels,
        r.handover_pairs,
        r.fusion_pairs.iter().filter(|p| p.fused).count()
    );
    println!(
        "{:<18} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9}",
        "predictor", "MAPE%", "RMSPE%", "±5%", "±10%", "tau", "bias%", "val MAPE%"
    );
    let line = |name: &str, a: &Agreement, v: Option<&Agreement>| {
        println!(
            "{:<18} {:>7.2} {:>7.2} {:>6.1}% {:>6.1}% {:>7.3} {:>7.2} {:>9}",
            name,
            a.mape,
            a.rmspe,
            100.0 * a.within5,
            100.0 * a.within10,
            a.kendall_tau,
            a.bias,
            v.map_or("-".into(), |v| format!("{:.2}", v.mape))
        )
    };
    for p in &r.predictors {
        match &p.scored {
            Some(a) => line(&p.name, a, p.validation.as_ref()),
            None => println!("{:<18} (no table: a decision is a value choice)", p.name),
        }
    }
    if let (Some(a), Some(cv)) = (&r.repeat, r.repeat_cv) {
        line("(repeat)", a, None);
        println!(
            "noise floor: a second measurement of {} networks, mean CV {:.2}%",
            a.n,
            100.0 * cv
        );
    }
    if let Some(h) = &r.corrections_hold {
        println!(
            "BBSSP's corrections (corrected − naive, spread {:.2}%) explain measured − naive with slope {:.2} ± {:.2} (1: they hold beyond the SSBNs; 0: they were the SSBNs' own)",
            h.spread, h.slope, h.stderr
        );
    }
    println!(
        "recommended: {} (most validation networks within ±5%, then the lowest MAPE)",
        r.recommended
    );
}
