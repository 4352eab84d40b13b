//! `spacetune measure` and `spacetune export`: the command-line side of the backends.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use spacetune::backends::{
    self, cache::Cache, measure::Outcome, measure::Protocol, weights::Weights, Backend, Lowered,
};
use spacetune::ir::{Module, Network, Ssbn};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where measurements come from: a backend, its options, the database, the protocol.
#[derive(Args)]
pub struct BackendArgs {
    /// sim, ort, tvm, tch or exec
    #[arg(long, default_value = "sim")]
    pub backend: String,
    /// A backend option, key=value (repeatable): sim preset=NAME|FILE.toml fuse=on|off;
    /// ort opt=all|disabled threads=N; tvm pipeline=fuse|plain threads=N jobs=N; tch
    /// threads=N; exec command="CMD ARGS" timeout=SECONDS
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// The measurement database (created if missing)
    #[arg(long, default_value = ".spacetune/measurements.db")]
    pub db: PathBuf,
    /// quick: fewer, shorter windows (for smoke runs); default: the full protocol
    #[arg(long, value_enum, default_value = "default")]
    pub protocol: ProtocolChoice,
}

impl BackendArgs {
    pub fn open(&self) -> Result<(Box<dyn Backend>, Cache, Protocol)> {
        let options = backends::Options::parse(&self.options)?;
        let backend = backends::lookup(&self.backend, &options)?;
        let cache = Cache::open(&self.db)
            .with_context(|| format!("opening the measurement database {}", self.db.display()))?;
        Ok((backend, cache, self.protocol.protocol()))
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

#[derive(Clone, Copy, ValueEnum)]
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

/// The spaces of `m` to work on: the one called `only`, or all; an error naming the file
/// when there is no such space.
pub fn select_spaces(m: &Module, only: Option<&str>, file: &Path) -> Result<Vec<u32>> {
    let spaces: Vec<u32> = (0..m.checked.len() as u32)
        .filter(|&s| only.is_none_or(|n| m.checked[s as usize].name == n))
        .collect();
    if spaces.is_empty() {
        bail!("no space `{}` in {}", only.unwrap_or(""), file.display());
    }
    Ok(spaces)
}

/// The stem of `path` for output names.
pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "space".into())
}

/// A progress bar in spacetune's style (`measure`, `profile`).
pub fn progress_bar(len: usize, prefix: String) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// Measures the networks of one space through the cache, with its SSBN_0 as the drift
/// reference.
pub fn measure_space(
    backend: &dyn Backend,
    nets: &[&Network],
    protocol: &Protocol,
    cache: &Cache,
    progress: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    let lowered: Vec<Lowered> = nets
        .iter()
        .map(|n| backend.lower(n))
        .collect::<Result<_, _>>()?;
    let reference = nets
        .iter()
        .position(|n| n.ssbn == Ssbn::Base)
        .map(|i| &lowered[i]);
    Ok(backends::measure::measure_all(
        backend, &lowered, reference, protocol, cache, progress,
    )?)
}

pub fn measure(m: &Module, args: &MeasureArgs) -> Result<ExitCode> {
    let (backend, cache, protocol) = args.on.open()?;
    let spaces = select_spaces(m, args.space.as_deref(), &args.file)?;
    let nets: Vec<_> = m
        .networks
        .iter()
        .filter(|n| spaces.contains(&n.space))
        .collect();
    let bar = progress_bar(nets.len(), format!("measure {}", backend.name()));
    let mut rows: Vec<(String, String, String, Outcome)> = Vec::new();
    for &s in &spaces {
        let in_space: Vec<_> = nets.iter().copied().filter(|n| n.space == s).collect();
        let outcomes = measure_space(backend.as_ref(), &in_space, &protocol, &cache, |o| {
            bar.set_message(o.id.clone());
            bar.inc(1);
        })?;
        let space = m.checked[s as usize].name.clone();
        for (n, o) in in_space.iter().zip(outcomes) {
            rows.push((space.clone(), n.id.clone(), n.key.clone(), o));
        }
    }
    bar.finish_and_clear();
    let stem = stem(&args.file);
    let base = args.out.join(format!("{stem}.{}", backend.name()));
    write_results(&base, &backend.fingerprint(), &rows)?;
    let failed = rows.iter().filter(|r| r.3.latency.is_err()).count();
    let cached = rows.iter().filter(|r| r.3.cached).count();
    let noisy = rows
        .iter()
        .filter(|r| r.3.latency.as_ref().is_ok_and(|l| l.noisy))
        .count();
    println!(
        "{}: {} networks on {} ({} measured, {} from the cache, {} noisy, {} failed)",
        args.file.display(),
        rows.len(),
        backend.fingerprint(),
        rows.len() - cached,
        cached,
        noisy,
        failed
    );
    println!("{:<14} {:>10} {:>10}  choice", "id", "p10 ms", "median ms");
    for (space, id, key, o) in &rows {
        // An SSBN differs from its space's SSBN_0 in one decision: show just that one.
        let base = rows.iter().find(|r| &r.0 == space).map(|r| r.2.as_str());
        let key = match base.filter(|b| b != key) {
            Some(b) => key
                .split(' ')
                .zip(b.split(' '))
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .map(|(i, (a, _))| format!("decision {i}: {a}"))
                .unwrap_or_else(|| key.clone()),
            None => "defaults".into(),
        };
        match &o.latency {
            Ok(l) => println!(
                "{id:<14} {:>10.4} {:>10.4}  {key}{}",
                l.p10_ms,
                l.median_ms,
                if l.noisy { "  (noisy)" } else { "" }
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

fn write_results(
    base: &Path,
    fingerprint: &backends::Fingerprint,
    rows: &[(String, String, String, Outcome)],
) -> Result<()> {
    if let Some(dir) = base.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json_rows: Vec<_> = rows
        .iter()
        .map(|(space, id, key, o)| {
            serde_json::json!({
                "space": space, "id": id, "key": key, "hash": o.hash, "cached": o.cached,
                "latency": o.latency.as_ref().ok(), "failure": o.latency.as_ref().err(),
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
        "failure",
    ])?;
    for (space, id, key, o) in rows {
        let f = |x: Option<f64>| x.map(|v| format!("{v:.5}")).unwrap_or_default();
        let l = o.latency.as_ref().ok();
        w.write_record([
            space.as_str(),
            id,
            key,
            &f(l.map(|l| l.p10_ms)),
            &f(l.map(|l| l.median_ms)),
            &f(l.map(|l| l.mean_ms)),
            &f(l.map(|l| l.var_ms2.sqrt())),
            &l.map(|l| l.count.to_string()).unwrap_or_default(),
            &l.map(|l| l.noisy.to_string()).unwrap_or_default(),
            o.latency.as_ref().err().map(String::as_str).unwrap_or(""),
        ])?;
    }
    w.flush()?;
    Ok(())
}
