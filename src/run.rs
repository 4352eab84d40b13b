//! `spacetune run` / `search`: the pipeline up to `--until`, what every pass that ran made,
//! then the latency evaluation of the winning space and the report (`summary.json`,
//! `report.html`). A pass that fails does not lose what the passes before it made.

use crate::{latency, load_partial, load_with, measure, profile, search, select, workers};
use anyhow::Result;
use spacetune::ir::{Module, Phase};
use spacetune::pass::ctx::AccuracyFrom;
use spacetune::pass::evaluate::EvalOptions;
use spacetune::report;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct RunArgs {
    pub file: PathBuf,
    /// The last pass to run (default: the whole pipeline)
    #[arg(long, value_name = "PASS")]
    pub until: Option<String>,
    #[command(flatten)]
    pub on: measure::BackendArgs,
    #[command(flatten)]
    pub train: profile::TrainArgs,
    /// Accuracies from a CSV (`key`, `accuracy`, optionally `space`) instead of training
    #[arg(long)]
    pub accuracy: Option<PathBuf>,
    #[command(flatten)]
    pub knobs: select::KnobArgs,
    /// Independent measurements of every SSBN averaged into the corrected table
    #[arg(long, default_value_t = 1)]
    pub replicate: usize,
    /// Only this space (by name)
    #[arg(long)]
    pub space: Option<String>,
    /// Where the outputs, `summary.json` and `report.html` go
    #[arg(long, default_value = "spacetune-out")]
    pub out: PathBuf,
    /// Random networks of the winning space measured whole to score the latency
    /// predictors for the report (0: none)
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub eval_samples: usize,
    #[command(flatten)]
    pub search: search::SearchArgs,
    #[command(flatten)]
    pub sharing: workers::SharingArgs,
}

/// Runs the pipeline, prints what it made, writes the report. Exits non-zero only when
/// nothing usable came out (not even a measured table).
pub fn run(args: &RunArgs, dump: Option<&str>) -> Result<ExitCode> {
    let world = measure::World::open(&args.on)?;
    let mut cx = world.ctx();
    cx.space = args.space.clone();
    cx.replicate = args.replicate;
    cx.select = args.knobs.overrides();
    cx.accuracy = Some(match &args.accuracy {
        Some(path) => AccuracyFrom::Table(path.clone()),
        None => {
            let spec = args.train.spec(&args.on.local_dir())?;
            profile::preflight(&spec)?;
            AccuracyFrom::Train(spec)
        }
    });
    cx.search = Some(
        args.search
            .spec(&args.train, &args.on.local_dir(), &args.out)?,
    );
    if args.sharing.worker_only {
        let Some(m) = load_with(&args.file, Some("expand"), dump, None)? else {
            return Ok(ExitCode::FAILURE);
        };
        workers::profile_only(&m, &cx, &args.train.spec(&args.on.local_dir())?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let helpers = workers::Lazy::new(&args.sharing, world.store.as_ref(), &args.on, &args.file);
    cx.sharing = Some(&helpers);
    let start = std::time::Instant::now();
    let loaded = load_partial(&args.file, args.until.as_deref(), dump, Some(cx));
    helpers.join();
    let (m, stopped) = match loaded? {
        Ok(m) => (m, None),
        Err((why, Some(m))) => (m, Some(why)),
        Err((_, None)) => return Ok(ExitCode::FAILURE),
    };
    print_passes(&m, args, &world)?;
    let mut failures = report::failures(&m);
    if let Some(why) = &stopped {
        failures.insert(
            0,
            format!("the run stopped after `{:?}`: {}", m.phase, why.join("; ")),
        );
    }
    let evaluation = evaluate_winner(&m, &world, args.eval_samples);
    if let (true, Some(Err(e))) = (evaluation.failed, &evaluation.latency) {
        failures.push(format!("latency evaluation: {e}"));
    }
    let summary = report::summarize(
        &m,
        report::Context {
            file: &args.file,
            backend: world.fingerprint().to_string(),
            settings: settings(args),
            latency: evaluation.latency,
            fusion: &evaluation.pairs,
            failures,
        },
    );
    let (json, html) = report::write(&args.out, &summary)?;
    if !summary.failures.is_empty() {
        println!(
            "{} failure(s) the run went on after:",
            summary.failures.len()
        );
        for f in &summary.failures {
            println!("  {f}");
        }
    }
    println!("wrote {} and {}", json.display(), html.display());
    println!("run: {:.1} s", start.elapsed().as_secs_f64());
    Ok(
        if report::usable(&m) || (stopped.is_none() && m.phase < Phase::Measured) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// Each pass's table and files, for the passes that ran.
fn print_passes(m: &Module, args: &RunArgs, world: &measure::World) -> Result<()> {
    let measured = measure::MeasureArgs {
        file: args.file.clone(),
        on: args.on.clone(),
        out: args.out.clone(),
        space: args.space.clone(),
    };
    if m.phase >= Phase::Measured {
        measure::print_measured(m, &world.fingerprint(), &measured)?;
    }
    if m.phase >= Phase::Profiled {
        profile::print_profiled(m, &args.file, &args.out, None)?;
    }
    if m.phase >= Phase::Selected {
        select::print_selected(m, &args.file, &args.out)?;
    }
    if m.phase >= Phase::Searched {
        search::print_searched(m, &args.file, &args.out)?;
    }
    Ok(())
}

struct Evaluation {
    /// The report, or why there is none.
    latency: Option<Result<spacetune::pass::evaluate::Report, String>>,
    /// The evaluation was tried and failed (not: the space is too small for one).
    failed: bool,
    pairs: Vec<spacetune::ir::PairRule>,
}

/// The fusion rules and the predictors scored on random networks of the winning space
/// (`None` before selection or with no samples asked for).
fn evaluate_winner(m: &Module, world: &measure::World, samples: usize) -> Evaluation {
    let Some(sel) = m.selection.as_ref().filter(|_| samples > 0) else {
        return Evaluation {
            latency: None,
            failed: false,
            pairs: Vec::new(),
        };
    };
    let pairs = match latency::detect(Some(m), world, false) {
        Ok(p) => p,
        Err(e) => {
            return Evaluation {
                latency: Some(Err(e.to_string())),
                failed: true,
                pairs: Vec::new(),
            }
        }
    };
    let options = match EvalOptions::fitting(&m.checked[sel.space as usize], samples) {
        Ok(o) => o,
        // Too small a space is said so in the report, not counted a failure.
        Err(why) => {
            return Evaluation {
                latency: Some(Err(why)),
                failed: false,
                pairs,
            }
        }
    };
    let latency = spacetune::pass::evaluate::evaluate(m, sel.space, &world.ctx(), &options)
        .map_err(|d| latency::failed("the latency evaluation", d).to_string());
    Evaluation {
        failed: latency.is_err(),
        // The evaluation's rules also cover the pairs only its random networks have.
        pairs: latency.as_ref().map_or(pairs, |r| r.fusion_pairs.clone()),
        latency: Some(latency),
    }
}

/// The settings the report shows.
fn settings(args: &RunArgs) -> serde_json::Value {
    let t = &args.train;
    serde_json::json!({
        "file": args.file.display().to_string(),
        "until": args.until,
        "backend": args.on.backend,
        "backend_options": args.on.options,
        "protocol": format!("{:?}", args.on.protocol),
        "dataset": t.dataset,
        "budget": t.budget().ok(),
        "profile": t.spec(&args.on.local_dir()).ok().map(|s| serde_json::json!({
            "train_subset": s.train_subset,
            "validation": s.validation,
            "epochs": s.epochs,
            "finetune_epochs": s.finetune_epochs,
            "finetune_subset": s.finetune_subset,
            "finetune_lr": s.finetune_lr.unwrap_or(s.lr),
            "finetune_bn_stats": s.bn_stats(),
            "accuracy_source": s.method.name(),
            "batch": s.batch,
            "lr": s.lr,
            "seed": s.seed,
            "threads": s.threads,
        })),
        "accuracy_table": args.accuracy.as_ref().map(|p| p.display().to_string()),
        "search": {
            "mode": format!("{:?}", args.search.mode),
            "predictor": args.search.predictor,
            "loss": format!("{:?}", args.search.loss),
            "alpha": args.search.alpha,
            "beta": args.search.beta,
            "latency_target_ms": args.search.latency_target,
            "search_full": args.search.search_full,
            "baselines": !args.search.no_baselines,
            "random_k": args.search.random_k,
        },
        "eval_samples": args.eval_samples,
        "replicate": args.replicate,
    })
}
