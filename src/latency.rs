//! `spacetune fusion-rules` and `spacetune latency-eval`: black-box fusion detection, and
//! the pipeline up to `correct` followed by the latency evaluation (every predictor scored
//! on random networks measured whole), printed and written as JSON and annotated IR.

use crate::measure::{stem, BackendArgs, Bars, World};
use anyhow::{Context, Result};
use clap::Args;
use spacetune::ir::Module;
use spacetune::pass::evaluate::{EvalOptions, Report};
use spacetune::pass::fusion::{self, PairRule};
use spacetune::pass::latency::Agreement;
use spacetune::pass::reproduce;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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

/// The fusion rules of `m`'s op pairs on the world's backend (all stored ones without `m`).
pub fn detect(m: Option<&Module>, world: &World, redo: bool) -> Result<Vec<PairRule>> {
    fusion::detect(
        m,
        &[],
        world.backend.as_ref(),
        world.store.as_ref(),
        &world.protocol,
        redo,
        &Bars,
    )
    .map_err(|e| anyhow::anyhow!("fusion test: {e}"))
}

pub fn print_pairs(pairs: &[PairRule]) {
    println!(
        "{:<16} {:<9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>5}  verdict    place",
        "A", "B", "T_A ms", "T_B ms", "T_AB ms", "saves", "spread ms", "tries"
    );
    for p in pairs {
        let of_min = fusion::saved_share(&p.a, p.t_a, p.t_b, p.t_ab);
        println!(
            "{:<16} {:<9} {:>9.4} {:>9.4} {:>9.4} {:>6.0}% {:>9.4} {:>5}  {:<9}  {}",
            p.a,
            p.b,
            p.t_a,
            p.t_b,
            p.t_ab,
            100.0 * of_min,
            p.spread_ms,
            p.attempts,
            match (p.fused, p.undecided) {
                (true, _) => "fused",
                (false, true) => "undecided",
                (false, false) => "-",
            },
            p.place
        );
    }
    let n = pairs.iter().filter(|p| p.fused).count();
    println!(
        "{n} of {} pairs fused (saves = (T_A + T_B − T_AB) / min(T_A, T_B); fused where the middle runs (of three a try, each in a process of its own, pooled over the tries) save above 50% by more than 2.5 spreads / √runs, and twice the maps do not say otherwise; spread = the saving's standard deviation between a try's runs; undecided within that margin of 50% (probed again, at most {} tries); zero -> B: B folded into a constant when the network is compiled)",
        pairs.len(),
        fusion::ATTEMPTS
    );
    let shared = pairs.iter().filter(|p| !p.apart).count();
    if shared > 0 {
        println!(
            "{shared} of these verdicts rest on runs that shared one process, so their spread leaves out how much a probe moves from one process to the next (`--redo` tests them again, each run in a process of its own)"
        );
    }
}

pub fn fusion_rules(m: Option<&Module>, args: &FusionArgs) -> Result<()> {
    let world = World::open(&args.on)?;
    let pairs = detect(m, &world, args.redo)?;
    println!(
        "fusion rules of {}",
        world.backend.fingerprint().under(&world.protocol)
    );
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
    /// Further random networks: the first half calibrates the fitted predictors
    /// (corrected+fit, kernel+fit, graph+fit, which fits a cost per kind of op the compiled
    /// graphs run: fifteen on ORT's NB201); the second half is scored on its own and, with
    /// the scored networks, chooses the recommended one
    #[arg(long, default_value_t = 200)]
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
    /// Two complete evaluations, each from a store of its own (the second after the first,
    /// fusion probes included), then every predictor's scores in both, their difference and
    /// the fusion verdicts that differ. The stores stay in
    /// <out>/<file>.<backend>.reproduce/run-{1,2}.db: rerun, it resumes them; delete the
    /// folder for two fresh runs
    #[arg(long)]
    pub reproduce: bool,
}

/// One evaluation of a `--reproduce` pair (or the one plain evaluation): its store and
/// where it writes.
pub struct EvalRun {
    pub on: BackendArgs,
    pub out: PathBuf,
    /// The store held measurements before this run (they are served, not timed again).
    pub resumed: bool,
}

impl EvalArgs {
    /// The evaluations to run: one on `--db`, or with `--reproduce` two on stores of their
    /// own.
    pub fn runs(&self) -> Result<Vec<EvalRun>> {
        if !self.reproduce {
            return Ok(vec![EvalRun {
                on: self.on.clone(),
                out: self.out.clone(),
                resumed: false,
            }]);
        }
        let dir = self
            .out
            .join(format!("{}.reproduce", output_name(&self.file, &self.on)));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok((1..=2)
            .map(|n| {
                let db = dir.join(format!("run-{n}.db"));
                EvalRun {
                    resumed: db.exists(),
                    on: BackendArgs {
                        db: db.display().to_string(),
                        ..self.on.clone()
                    },
                    out: dir.join(format!("run-{n}")),
                }
            })
            .collect())
    }

    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            samples: self.samples,
            seed: self.seed,
            validate: self.validate,
            repeat: self.repeat,
        }
    }
}

/// `spacetune latency-eval`: the pipeline to `correct`, then the evaluation — twice, on
/// two stores, with `--reproduce`, and the two compared.
pub fn command(args: &EvalArgs, dump: Option<&str>) -> Result<ExitCode> {
    let runs = args.runs()?;
    let mut reports = Vec::new();
    for (n, run) in runs.iter().enumerate() {
        let world = World::open(&run.on)?;
        let finished = Finished::new(args, &world)?;
        let report = run.out.join(format!(
            "{}.latency.json",
            output_name(&args.file, &args.on)
        ));
        if let Some(done) = args.reproduce.then(|| finished.read(&report)).flatten() {
            eprintln!(
                "reproduce: run {} of 2 finished before; its report is read back from {}",
                n + 1,
                run.out.display()
            );
            done.iter().for_each(print_report);
            reports.push(done);
            continue;
        }
        if args.reproduce {
            eprintln!(
                "reproduce: run {} of 2 on {}{}",
                n + 1,
                run.on.db,
                if run.resumed {
                    " (resumed: what it holds is served, not timed again)"
                } else {
                    ""
                }
            );
        }
        let mut cx = world.ctx();
        cx.space = args.space.clone();
        cx.replicate = args.replicate;
        let Some(m) = crate::load_with(&args.file, Some("correct"), dump, Some(cx))? else {
            return Ok(ExitCode::FAILURE);
        };
        let done = latency_eval(&m, &world, args, &run.out)?;
        finished.write(&report)?;
        reports.push(done);
    }
    if let [first, second] = &reports[..] {
        print_reproduction(first, second, args)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What an evaluation's report depends on — the source file, every option, the backend and
/// machine with the protocol — marked beside the report once the evaluation is complete, so
/// that a `--reproduce` interrupted in its second run does not evaluate the first again.
struct Finished {
    marker: serde_json::Value,
}

impl Finished {
    const FILE: &'static str = "finished.json";

    fn new(args: &EvalArgs, world: &World) -> Result<Finished> {
        let source = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        let marker = serde_json::json!({
            "source": spacetune::backends::store::digest(&source),
            "file": args.file.display().to_string(),
            "space": args.space, "samples": args.samples, "seed": args.seed,
            "validate": args.validate, "repeat": args.repeat, "replicate": args.replicate,
            "backend": world.fingerprint().to_string(),
            "version": env!("CARGO_PKG_VERSION"),
        });
        Ok(Finished { marker })
    }

    /// The reports of `report`, if the evaluation that wrote it completed with this very
    /// marker (beside it).
    fn read(&self, report: &Path) -> Option<Vec<Report>> {
        let at = report.with_file_name(Self::FILE);
        let marker: serde_json::Value = serde_json::from_slice(&std::fs::read(at).ok()?).ok()?;
        if marker != self.marker {
            return None;
        }
        serde_json::from_slice(&std::fs::read(report).ok()?).ok()
    }

    /// Marks `report` as written by a complete evaluation.
    fn write(&self, report: &Path) -> Result<()> {
        let path = report.with_file_name(Self::FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&self.marker)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Scores every annotated space of `m` (the pipeline has run `correct`), prints the reports
/// and writes them to `out`, with the annotated IR.
pub fn latency_eval(m: &Module, world: &World, args: &EvalArgs, out: &Path) -> Result<Vec<Report>> {
    let mut cx = world.ctx();
    cx.space = args.space.clone();
    let mut reports = Vec::new();
    for lut in &m.luts {
        let report = spacetune::pass::evaluate::evaluate(m, lut.space, &cx, &args.options())
            .map_err(|d| failed("the latency evaluation", d))?;
        print_report(&report);
        reports.push(report);
    }
    cx.space = None;
    write(m, &args.file, out, &args.on, &reports)?;
    Ok(reports)
}

/// Prints the two runs of `--reproduce` side by side and writes the comparison as JSON.
pub fn print_reproduction(first: &[Report], second: &[Report], args: &EvalArgs) -> Result<()> {
    let mut all = Vec::new();
    for (a, b) in first.iter().zip(second) {
        let r = reproduce::compare(a, b);
        println!(
            "\nspace {} on {}: run 1 against run 2",
            r.space, r.backends[0]
        );
        println!(
            "{:<18} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}",
            "predictor", "MAPE% 1", "MAPE% 2", "diff", "±5% 1", "±5% 2", "diff"
        );
        let num = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("-".to_string(), f);
        for line in r.lines.iter().chain(std::iter::once(&reproduce::Line {
            name: "(repeat)".into(),
            runs: r.repeat.clone(),
        })) {
            let mape = |k: usize| line.runs[k].as_ref().map(|a| a.mape);
            let within = |k: usize| line.runs[k].as_ref().map(|a| 100.0 * a.within5);
            println!(
                "{:<18} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}",
                line.name,
                num(mape(0), &|x| format!("{x:.2}")),
                num(mape(1), &|x| format!("{x:.2}")),
                num(line.mape_diff(), &|x| format!("{x:+.2}")),
                num(within(0), &|x| format!("{x:.1}%")),
                num(within(1), &|x| format!("{x:.1}%")),
                num(line.within5_diff(), &|x| format!("{x:+.1}")),
            );
        }
        let rec = |k: usize| r.recommended[k].as_deref().unwrap_or("none");
        println!(
            "recommended: {} / {}{}",
            rec(0),
            rec(1),
            if r.same_recommendation() {
                " (the same)"
            } else {
                " (they differ)"
            }
        );
        if let Some(d) = r.max_mape_diff() {
            println!("largest MAPE difference: {d:.2} points");
        }
        println!(
            "fusion: {} / {} pairs fused; the fusion rules differ on {} probes; {} more verdicts differ only in why a pair is not fused",
            r.fused[0],
            r.fused[1],
            r.rules_differ(),
            r.verdicts_differ.len() - r.rules_differ()
        );
        for d in &r.verdicts_differ {
            let v = |k: usize| d.verdicts[k].unwrap_or("not tested");
            let rule = if d.rule_differs() {
                "rule differs"
            } else {
                "same rule"
            };
            println!("  {}: {} / {} ({rule})", d.place, v(0), v(1));
        }
        all.push(r);
    }
    let path = args.out.join(format!(
        "{}.reproduce/reproduce.json",
        output_name(&args.file, &args.on)
    ));
    std::fs::write(&path, serde_json::to_string_pretty(&all)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// A pass's diagnostics as an error: what was being done, then every message.
pub fn failed(doing: &str, d: spacetune::ir::Diagnostics) -> anyhow::Error {
    let messages: Vec<&str> = d.0.iter().map(|d| d.message.as_str()).collect();
    anyhow::anyhow!("{doing}: {}", messages.join("; "))
}

/// `<file stem>.<backend>` and its options: runs of one backend in several configurations
/// sit side by side.
fn output_name(file: &Path, on: &BackendArgs) -> String {
    let mut name = format!("{}.{}", stem(file), on.backend);
    for o in &on.options {
        name.push('-');
        name.extend(o.chars().map(|c| {
            if c.is_alphanumeric() || "=.-_".contains(c) {
                c
            } else {
                '_'
            }
        }));
    }
    name
}

fn write(m: &Module, file: &Path, out: &Path, on: &BackendArgs, reports: &[Report]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let base = out.join(output_name(file, on));
    let json = PathBuf::from(format!("{}.latency.json", base.display()));
    std::fs::write(&json, serde_json::to_string_pretty(reports)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let ir = PathBuf::from(format!("{}.lut.ir", base.display()));
    std::fs::write(&ir, m.to_string()).with_context(|| format!("writing {}", ir.display()))?;
    println!("wrote {} and {}", json.display(), ir.display());
    Ok(())
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
            None => println!(
                "{:<18} ({})",
                p.name,
                p.unscored.as_deref().unwrap_or("no scores")
            ),
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
    if let Some(off) = r.offset() {
        println!(
            "warning: the networks measured again are {:.1}% {} than their first measurement, nearly all of them: the two were taken in different states of the machine (it changed during the run, or the first figures come from another run in this store), so every score above carries an offset of about that size; for figures on one scale, start from a fresh store (--db)",
            off.abs(),
            if off < 0.0 { "faster" } else { "slower" }
        );
    }
    if let Some(h) = &r.corrections_hold {
        println!(
            "BBSSP's corrections (corrected − naive, spread {:.2}%) explain measured − naive with slope {:.2} ± {:.2} (1: they hold beyond the SSBNs; 0: they were the SSBNs' own)",
            h.spread, h.slope, h.stderr
        );
    }
    match &r.choice {
        Some(c) => println!(
            "recommended: {} (on {} scored and validation networks: the simplest predictor (a fitted form before its unfitted one) that the one with the most within ±5%, then the lowest MAPE, does not beat by more than sampling error and the noise floor; chosen in {:.0}% of bootstrap resamples)",
            c.name,
            c.networks,
            100.0 * c.confidence
        ),
        None => println!("no recommendation: no networks to choose on"),
    }
}
