//! The `spacetune` command line.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use spacetune::ir::print::NetworkLine;
use spacetune::ir::{Module, Origin};
use spacetune::pass::ctx::{AccuracyFrom, Ctx};
use spacetune::{compile, Options};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod latency;
mod measure;
mod profile;
mod run;
mod search;
mod select;
mod slurm;
mod workers;

#[derive(Parser)]
#[command(
    name = "spacetune",
    version,
    about = "Hardware-aware neural architecture search for black-box accelerators (BBSSP)"
)]
struct Cli {
    /// Print the IR after this pass (to stderr): check, expand, measure, correct, profile,
    /// select, reduce, search, emit, compare
    #[arg(long, global = true, value_name = "PASS")]
    dump_after: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check a search space; report every problem with its place in the source
    Check { file: PathBuf },
    /// List the search-space base networks (SSBNs) of every space in a file
    Expand {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print a file in another form: the IR text, the IR as JSON, or canonical DSL
    Print {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "dsl")]
        emit: Emit,
        /// Print only this network (by id): its graph (ir, json) or a fixed DSL file (dsl)
        #[arg(long, value_name = "ID")]
        network: Option<String>,
    },
    /// Time every SSBN of a file on a backend; results go to the cache, JSON and CSV
    Measure(measure::MeasureArgs),
    /// Write one network as ONNX (with seeded random weights) or as IR JSON
    Export(measure::ExportArgs),
    /// Train SSBN_0, fine-tune every SSBN from it, record validation accuracies (resumable)
    Profile(profile::ProfileArgs),
    /// Work on a profile run registered in a store (by `profile --workers N`) until it is done
    Worker(workers::WorkerArgs),
    /// How well fine-tuned accuracies and zero-cost proxies rank SSBNs against training
    /// from scratch: Kendall tau (bootstrap interval), Spearman rho, within-decision tau,
    /// top-k, on a stratified sample of each space
    ProfileEval(profile::EvalArgs),
    /// Score every SSBN (accuracy, latency), pick the winning space, write it reduced as DSL
    Select(select::SelectArgs),
    /// Detect a backend's fusion rules (nn-Meter's test on the op pairs of a file) and
    /// print the rules stored for it
    FusionRules(latency::FusionArgs),
    /// Score the latency predictors (naive, corrected, kernel model, ...) on random
    /// networks of a space measured whole
    LatencyEval(latency::EvalArgs),
    /// Run the pipeline (check, expand, measure, correct, profile, select, reduce, search,
    /// emit, compare) up to a pass, printing and writing what each pass that ran produced
    Run(run::RunArgs),
    /// The whole pipeline to the chosen network: the gradient search on the reduced space,
    /// the chosen network emitted, retrained and measured beside SSBN_0 and the baselines
    /// (`run` to `compare`; `--until emit` or `--no-baselines` for the chosen network alone)
    Search(run::RunArgs),
    /// Times the networks of a request read from standard input on a backend and writes
    /// their p10s to standard output (a fresh process for each fusion-test run)
    #[command(hide = true)]
    TimeApart {
        #[arg(long)]
        backend: String,
        #[arg(short = 'o', long = "option")]
        options: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    Ir,
    Json,
    Dsl,
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `println!` panics when a reader such as `head` goes away;
    // a command-line tool should end quietly instead, as other Unix tools do.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Compiles up to `until` (the front end without a context), rendering diagnostics to
/// stderr; `None` when it failed.
fn load(file: &Path, until: Option<&str>, dump_after: Option<&str>) -> Result<Option<Module>> {
    load_with(file, until, dump_after, None)
}

/// Runs the pipeline on `file` up to `until` with the context `ctx`.
fn load_with(
    file: &Path,
    until: Option<&str>,
    dump_after: Option<&str>,
    ctx: Option<Ctx<'_>>,
) -> Result<Option<Module>> {
    Ok(load_partial(file, until, dump_after, ctx)?.ok())
}

/// What a run of the pipeline left: the module, or the diagnostics' messages and the
/// module as the passes before the failing one left it (if any had run).
type Loaded = std::result::Result<Module, (Vec<String>, Option<Module>)>;

/// Like [`load_with`], keeping what the passes before a failing one made.
fn load_partial(
    file: &Path,
    until: Option<&str>,
    dump_after: Option<&str>,
    ctx: Option<Ctx<'_>>,
) -> Result<Loaded> {
    let names = spacetune::pass::pass_names();
    for (flag, pass) in [("--dump-after", dump_after), ("--until", until)] {
        if let Some(pass) = pass.filter(|p| !names.contains(p)) {
            bail!(
                "unknown pass `{pass}` for {flag} (passes: {})",
                names.join(", ")
            );
        }
    }
    let on_pass = dump_after.map(|want| {
        let want = want.to_string();
        Box::new(move |name: &str, m: &Module| {
            if name == want {
                eprintln!("; ---- IR after `{name}` ----\n{m}");
            }
        }) as Box<dyn FnMut(&str, &Module)>
    });
    let compiled = compile(
        file,
        Options {
            until,
            validate: cfg!(debug_assertions),
            on_pass,
            ctx,
        },
    );
    match compiled.result {
        Ok(m) => Ok(Ok(m)),
        Err(diags) => {
            let mut stderr = StandardStream::stderr(colour());
            for d in &diags.0 {
                d.emit(&compiled.sources, &mut stderr);
            }
            let n = diags.0.len();
            eprintln!(
                "error: {} failed with {n} error{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            let messages = diags.0.iter().map(|d| d.message.clone()).collect();
            Ok(Err((messages, compiled.partial)))
        }
    }
}

/// Colour on a terminal only; termcolor's Auto honours NO_COLOR and TERM, not whether
/// stderr is a terminal.
fn colour() -> ColorChoice {
    if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let dump = cli.dump_after.as_deref();
    match cli.command {
        Command::Check { file } => return check(&file, dump),
        Command::Expand { file, format } => return expand(&file, format, dump),
        Command::Print {
            file,
            emit,
            network,
        } => return print(&file, emit, network, dump),
        Command::Measure(args) => {
            let world = measure::World::open(&args.on)?;
            let mut cx = world.ctx();
            cx.space = args.space.clone();
            let Some(m) = load_with(&args.file, Some("measure"), dump, Some(cx))? else {
                return Ok(ExitCode::FAILURE);
            };
            return measure::print_measured(&m, &world.fingerprint(), &args);
        }
        Command::Export(args) => {
            let Some(m) = load(&args.file, None, dump)? else {
                return Ok(ExitCode::FAILURE);
            };
            measure::export(&m, &args)?;
        }
        Command::Profile(args) => return profile::command(&args, dump),
        Command::Worker(args) => {
            let store = spacetune::backends::store::open(&args.db)?;
            let dir = tempfile::tempdir().context("making a folder for the run's file")?;
            let argv =
                workers::command_line(store.as_ref(), &args.db, args.run.as_deref(), dir.path())?;
            drop(store);
            let cli = Cli::try_parse_from(&argv).with_context(|| {
                format!("the registered run does not parse: {}", argv.join(" "))
            })?;
            return run(cli);
        }
        Command::ProfileEval(args) => {
            let (spec, proxies) = args.spec()?;
            let world = measure::World::open(&args.on)?;
            let mut cx = world.ctx();
            cx.space = args.space.clone();
            let Some(m) = load_with(&args.file, Some("expand"), dump, Some(world.ctx()))? else {
                return Ok(ExitCode::FAILURE);
            };
            let report =
                spacetune::pass::fidelity::report(&m, &cx, &spec, &proxies, args.truth_repeat)?;
            profile::print_fidelity(&report, &args.file, &args.out)?;
        }
        Command::Select(args) => {
            let world = measure::World::open(&args.on)?;
            let mut cx = world.ctx();
            cx.accuracy = Some(AccuracyFrom::Table(args.table()?));
            cx.select = args.knobs.overrides();
            let Some(m) = load_with(&args.file, Some("reduce"), dump, Some(cx))? else {
                return Ok(ExitCode::FAILURE);
            };
            select::print_selected(&m, &args.file, &args.out)?;
        }
        Command::Run(args) | Command::Search(args) => return run::run(&args, dump),
        Command::FusionRules(args) => {
            let m = match &args.file {
                Some(file) => match load(file, None, dump)? {
                    Some(m) => Some(m),
                    None => return Ok(ExitCode::FAILURE),
                },
                None => None,
            };
            latency::fusion_rules(m.as_ref(), &args)?;
        }
        Command::LatencyEval(args) => return latency::command(&args, dump),
        Command::TimeApart { backend, options } => measure::time_apart(&backend, &options)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn check(file: &Path, dump: Option<&str>) -> Result<ExitCode> {
    let Some(m) = load(file, Some("check"), dump)? else {
        return Ok(ExitCode::FAILURE);
    };
    for info in &m.checked {
        println!(
            "space {}: {} decisions, {} ssbns, output {}",
            info.name,
            info.decisions.len(),
            info.ssbn_count(),
            info.output
        );
    }
    println!("{}: ok", file.display());
    Ok(ExitCode::SUCCESS)
}

fn expand(file: &Path, format: Format, dump: Option<&str>) -> Result<ExitCode> {
    let Some(m) = load(file, None, dump)? else {
        return Ok(ExitCode::FAILURE);
    };
    match format {
        Format::Text => {
            for info in &m.checked {
                println!("; space {}: {} ssbns", info.name, info.ssbn_count());
            }
            for n in m.networks.values() {
                println!("{}", NetworkLine(n));
            }
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&expand_json(file, &m))?),
    }
    Ok(ExitCode::SUCCESS)
}

fn print(file: &Path, emit: Emit, network: Option<String>, dump: Option<&str>) -> Result<ExitCode> {
    let until = if network.is_some() {
        None
    } else {
        Some("check")
    };
    let Some(m) = load(file, until, dump)? else {
        return Ok(ExitCode::FAILURE);
    };
    match (emit, network) {
        (Emit::Dsl, None) => print!("{}", spacetune::ir::dsl::print_module(&m)),
        (Emit::Ir, None) => print!("{m}"),
        (Emit::Json, None) => println!("{}", serde_json::to_string_pretty(&m)?),
        (e, Some(id)) => {
            let n = m
                .network(&id)
                .with_context(|| format!("no network `{id}` in {}", file.display()))?;
            match e {
                Emit::Json => println!("{}", serde_json::to_string_pretty(n)?),
                Emit::Dsl => print!("{}", spacetune::ir::dsl::print_network(&m, n)),
                Emit::Ir => print!("{}\n{}", NetworkLine(n), n.graph),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn expand_json(file: &Path, m: &Module) -> serde_json::Value {
    let spaces: Vec<_> = m
        .checked
        .iter()
        .map(|i| serde_json::json!({ "name": i.name, "decisions": i.decisions.len(), "ssbns": i.ssbn_count() }))
        .collect();
    let networks: Vec<_> = m
        .networks
        .values()
        .map(|n| {
            let (layer, option) = match n.origin {
                Origin::Swap { decision, option } => (Some(decision.index()), Some(option)),
                _ => (None, None),
            };
            serde_json::json!({
                "id": n.id,
                "space": m.checked[n.space as usize].name,
                "decision": layer,
                "option": option,
                "key": n.key,
                "flops": n.cost.flops,
                "macs": n.cost.macs,
                "params": n.cost.params,
            })
        })
        .collect();
    serde_json::json!({ "file": file.display().to_string(), "spaces": spaces, "networks": networks })
}
