//! `spacetune measure` and `spacetune export`: the command-line side of the backends.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use spacetune::backends::{self, measure::Protocol, store::Store, weights::Weights, Backend};
use spacetune::ir::{Latency, Module, Network, Origin, Timed};
use spacetune::pass::ctx::{Ctx, Progress, Stage};
use std::cell::Cell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Where measurements come from: a backend, its options, the database, the protocol.
#[derive(Args, Clone)]
pub struct BackendArgs {
    /// sim, ort, tvm, tch or exec
    #[arg(long, default_value = "sim")]
    pub backend: String,
    /// A backend option, key=value (repeatable): sim preset=NAME|FILE.toml fuse=on|off;
    /// ort opt=all|disabled threads=N; tvm pipeline=fuse|plain threads=N jobs=N; tch
    /// threads=N; exec command="CMD ARGS" timeout=SECONDS
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// The store (created if missing): a SQLite file, or a PostgreSQL URL
    /// (postgres://user@host:port/db) that workers on other machines share
    #[arg(long, default_value = ".spacetune/measurements.db")]
    pub db: String,
    /// quick: fewer, shorter windows (for smoke runs); default: the full protocol
    #[arg(long, value_enum, default_value = "default")]
    pub protocol: ProtocolChoice,
    /// The core the timing thread is pinned to while it times: a number, `last` (the
    /// highest-numbered core this process may use) or `off`; part of the protocol, so
    /// figures timed under one pin are never served as another's
    #[arg(long, default_value = "last")]
    pub cpu: backends::pin::Pin,
}

impl BackendArgs {
    /// Where this machine keeps what is not in the store (SSBN_0 checkpoints, search
    /// checkpoints): beside a SQLite file, or `.spacetune` for a server's store.
    pub fn local_dir(&self) -> PathBuf {
        if self.db.contains("://") {
            return PathBuf::from(".spacetune");
        }
        Path::new(&self.db)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// The backend and store a pipeline run uses, opened once.
pub struct World {
    pub backend: Box<dyn Backend>,
    pub store: Box<dyn Store>,
    pub protocol: Protocol,
}

impl World {
    pub fn open(on: &BackendArgs) -> Result<World> {
        let options = backends::Options::parse(&on.options)?;
        let backend = backends::lookup(&on.backend, &options)?;
        let store = backends::store::open(&on.db)?;
        let protocol = Protocol {
            pin: on.cpu,
            // The fusion test's runs are each timed in a process of this program.
            apart: std::env::current_exe()
                .ok()
                .map(|program| backends::apart::Apart {
                    program,
                    args: ["time-apart", "--backend", &on.backend]
                        .into_iter()
                        .map(String::from)
                        .chain(
                            on.options
                                .iter()
                                .flat_map(|o| ["-o".to_string(), o.clone()]),
                        )
                        .collect(),
                }),
            ..on.protocol.protocol()
        };
        Ok(World {
            backend,
            store,
            protocol,
        })
    }
    /// What this world's measurements are keyed and labelled by.
    pub fn fingerprint(&self) -> backends::Fingerprint {
        self.backend.fingerprint().under(&self.protocol)
    }
    /// A context over this world; the caller fills in the rest.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            backend: Some(self.backend.as_ref()),
            store: Some(self.store.as_ref()),
            protocol: self.protocol.clone(),
            progress: &Bars,
            ..Ctx::default()
        }
    }
}

#[derive(Args)]
pub struct MeasureArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub on: BackendArgs,
    /// Where the JSON and CSV results go
    #[arg(long, default_value = "spacetune-out")]
    pub out: PathBuf,
    /// Only this space (by name)
    #[arg(long)]
    pub space: Option<String>,
}

/// `spacetune time-apart`: the child's side of a run timed in a process of its own.
pub fn time_apart(backend: &str, options: &[String]) -> Result<()> {
    let backend = backends::lookup(backend, &backends::Options::parse(options)?)?;
    backends::apart::serve(
        backend.as_ref(),
        std::io::stdin().lock(),
        std::io::stdout().lock(),
    )?;
    Ok(())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProtocolChoice {
    Default,
    Quick,
}

impl ProtocolChoice {
    pub fn protocol(self) -> Protocol {
        match self {
            ProtocolChoice::Default => Protocol::default(),
            ProtocolChoice::Quick => Protocol::quick(),
        }
    }
}

#[derive(Args)]
pub struct ExportArgs {
    pub file: PathBuf,
    /// The network to export (an id from `spacetune expand`)
    #[arg(long)]
    pub network: String,
    #[arg(long, value_enum, default_value = "onnx")]
    pub format: ExportFormat,
    /// Output path (default: <network id>.<format>)
    #[arg(short = 'O', long = "output")]
    pub output: Option<PathBuf>,
    /// Seed of the random weights
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Onnx,
    Json,
}

pub fn export(m: &Module, args: &ExportArgs) -> Result<()> {
    let net = m
        .network(&args.network)
        .with_context(|| format!("no network `{}` in {}", args.network, args.file.display()))?;
    let (bytes, ext) = match args.format {
        ExportFormat::Onnx => {
            let graph = net.graph.pruned();
            let weights = Weights::random(&graph, args.seed);
            (backends::onnx::export(&graph, &weights, 1)?, "onnx")
        }
        ExportFormat::Json => (serde_json::to_vec_pretty(net)?, "json"),
    };
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.{ext}", net.id)));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The stem of `path` for output names.
pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "space".into())
}

/// Progress bars in spacetune's style, one per stage; notes go to stderr with them (what
/// a command reports as its result goes to stdout).
pub struct Bars;

struct Bar(ProgressBar);

impl Progress for Bars {
    fn stage(&self, what: &str, len: usize) -> Box<dyn Stage + '_> {
        // A log (stderr not a terminal) gets plain lines, no escape codes.
        if !std::io::stderr().is_terminal() {
            eprintln!("{what}: {len} to do");
            return Box::new(Lines {
                what: what.to_string(),
                len,
                done: Cell::new(0),
                told: Cell::new(0),
                start: Instant::now(),
            });
        }
        let bar = ProgressBar::new(len as u64).with_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        Box::new(Bar(bar))
    }
    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
}

impl Stage for Bar {
    fn tick(&self, item: &str) {
        self.0.set_message(item.to_string());
        self.0.inc(1);
    }
    fn working(&self, item: &str) {
        self.0.set_message(item.to_string());
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A stage's progress as a line at every tenth of the way.
struct Lines {
    what: String,
    len: usize,
    done: Cell<usize>,
    told: Cell<usize>,
    start: Instant,
}

impl Stage for Lines {
    fn tick(&self, item: &str) {
        let done = self.done.get() + 1;
        self.done.set(done);
        let tenth = done * 10 / self.len.max(1);
        // A stage of unknown length (len 0: as many as a time budget pays for) tells each.
        if self.len == 0 || (tenth > self.told.get() && done <= self.len) {
            self.told.set(tenth);
            let of = if self.len == 0 {
                String::new()
            } else {
                format!("/{}", self.len)
            };
            eprintln!(
                "{}: {done}{of} ({item}, {:.0} s)",
                self.what,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
    fn working(&self, _: &str) {}
}

/// The measure pass's table as rows: space, id, key, outcome.
type Rows<'a> = Vec<(&'a str, &'a Network, &'a Timed)>;

pub fn print_measured(
    m: &Module,
    fingerprint: &backends::Fingerprint,
    args: &MeasureArgs,
) -> Result<ExitCode> {
    let table = m.latencies.as_ref().context("nothing was measured")?;
    let rows: Rows = table
        .results
        .iter()
        .map(|(&h, t)| {
            let n = &m.networks[h];
            (m.checked[n.space as usize].name.as_str(), n, t)
        })
        .collect();
    let stem = stem(&args.file);
    let base = args.out.join(format!("{stem}.{}", args.on.backend));
    write_results(&base, fingerprint, &rows)?;
    let failed = rows.iter().filter(|r| r.2.result.is_err()).count();
    let cached = rows.iter().filter(|r| r.2.cached).count();
    let count = |f: fn(&Latency) -> bool| {
        rows.iter()
            .filter(|r| r.2.result.as_ref().is_ok_and(f))
            .count()
    };
    println!(
        "{}: {} networks on {} ({} measured, {} from the cache, {} noisy, {} unscaled, {} failed)",
        args.file.display(),
        rows.len(),
        table.backend,
        rows.len() - cached,
        cached,
        count(|l| l.noisy),
        count(|l| l.unscaled),
        failed
    );
    println!("{:<14} {:>10} {:>10}  choice", "id", "p10 ms", "median ms");
    for (_, n, t) in &rows {
        // An SSBN differs from its space's SSBN_0 in one decision: show just that one.
        let key = match n.origin {
            Origin::Swap { decision, .. } => {
                let token = n.key.split(' ').nth(decision.index()).unwrap_or(&n.key);
                format!("decision {}: {token}", decision.index())
            }
            _ => "defaults".into(),
        };
        let id = &n.id;
        match &t.result {
            Ok(l) => println!(
                "{id:<14} {:>10.4} {:>10.4}  {key}{}",
                l.p10_ms,
                l.median_ms,
                match (l.noisy, l.unscaled) {
                    (true, true) => "  (noisy, unscaled)",
                    (true, false) => "  (noisy)",
                    (false, true) => "  (unscaled: its chunk had no scale estimate)",
                    (false, false) => "",
                }
            ),
            Err(e) => println!("{id:<14} {:>10} {:>10}  {key}  FAILED: {e}", "-", "-"),
        }
    }
    println!("wrote {}.json and {}.csv", base.display(), base.display());
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn write_results(base: &Path, fingerprint: &backends::Fingerprint, rows: &Rows) -> Result<()> {
    if let Some(dir) = base.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json_rows: Vec<_> = rows
        .iter()
        .map(|(space, n, t)| {
            serde_json::json!({
                "space": space, "id": n.id, "key": n.key, "hash": t.hash, "cached": t.cached,
                "latency": t.result.as_ref().ok(), "failure": t.result.as_ref().err(),
            })
        })
        .collect();
    let json = serde_json::json!({ "fingerprint": fingerprint, "networks": json_rows });
    // `base` ends in `.<backend>`: append, do not replace, the extension.
    let path = PathBuf::from(format!("{}.json", base.display()));
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let path = PathBuf::from(format!("{}.csv", base.display()));
    let mut w =
        csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record([
        "space",
        "id",
        "key",
        "p10_ms",
        "median_ms",
        "mean_ms",
        "std_ms",
        "count",
        "noisy",
        "unscaled",
        "failure",
    ])?;
    for (space, n, t) in rows {
        let f = |x: Option<f64>| x.map(|v| format!("{v:.5}")).unwrap_or_default();
        let l = t.result.as_ref().ok();
        w.write_record([
            *space,
            n.id.as_str(),
            n.key.as_str(),
            &f(l.map(|l| l.p10_ms)),
            &f(l.map(|l| l.median_ms)),
            &f(l.map(|l| l.mean_ms)),
            &f(l.map(|l| l.var_ms2.sqrt())),
            &l.map(|l| l.count.to_string()).unwrap_or_default(),
            &l.map(|l| l.noisy.to_string()).unwrap_or_default(),
            &l.map(|l| l.unscaled.to_string()).unwrap_or_default(),
            t.result.as_ref().err().map(String::as_str).unwrap_or(""),
        ])?;
    }
    w.flush()?;
    Ok(())
}
