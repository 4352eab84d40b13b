//! `spacetune select`: the pipeline up to `reduce` — BBSSP's cost function over the SSBNs
//! of every space, the winning space, and its reduced form — then the reduced space as a
//! `.space` file, the ranking as CSV and JSON, and the kept options per decision.

use crate::measure::{stem, BackendArgs};
use anyhow::{Context, Result};
use clap::Args;
use spacetune::ir::{dsl, Module, Selection};
use spacetune::pass::ctx::{Method, SelectOverrides};
use std::path::{Path, PathBuf};

/// BBSSP's trade-off knobs; they default to the file's `select` line, then to the authors'
/// values (thres 0.8, scale 2, λ 0.01, N 60).
#[derive(Args, Clone)]
pub struct KnobArgs {
    /// λ: weight of latency in the cost (latency in ms)
    #[arg(long)]
    pub lambda: Option<f64>,
    #[arg(long)]
    pub thres: Option<f64>,
    #[arg(long)]
    pub scale: Option<f64>,
    /// Picks a space needs to win (N)
    #[arg(short = 'n', long = "picks")]
    pub n: Option<usize>,
}

impl KnobArgs {
    pub fn overrides(&self) -> SelectOverrides {
        SelectOverrides {
            thres: self.thres,
            scale: self.scale,
            lambda: self.lambda,
            n: self.n,
        }
    }
}

#[derive(Args)]
pub struct SelectArgs {
    pub file: PathBuf,
    /// Accuracies: a CSV with `key` and `accuracy` columns (the canonical architecture key
    /// of `spacetune expand`; a `space` column, if any, tells spaces apart), e.g. the
    /// output of `spacetune profile` or a tabular benchmark [default: what `spacetune
    /// profile` wrote for --accuracy-source into --out]
    #[arg(long)]
    pub accuracy: Option<PathBuf>,
    /// Which profile's CSV in --out to read: finetune (`<stem>.accuracy.csv`), scratch,
    /// synflow or naswot (`<stem>.<source>.csv`; a proxy's column holds percentile ranks)
    #[arg(long, default_value = "finetune")]
    pub accuracy_source: String,
    /// Where latencies come from (measured through the cache, like `spacetune measure`)
    #[command(flatten)]
    pub on: BackendArgs,
    #[command(flatten)]
    pub knobs: KnobArgs,
    #[arg(long, default_value = "spacetune-out")]
    pub out: PathBuf,
}

impl SelectArgs {
    /// The accuracy table to read: `--accuracy`, or the profile's CSV for the source.
    pub fn table(&self) -> Result<PathBuf> {
        if let Some(path) = &self.accuracy {
            return Ok(path.clone());
        }
        let method = Method::named(&self.accuracy_source).with_context(|| {
            format!(
                "unknown accuracy source `{}` ({})",
                self.accuracy_source,
                Method::NAMES
            )
        })?;
        let path = self
            .out
            .join(format!("{}.{}.csv", stem(&self.file), method.csv_stem()));
        if !path.exists() {
            anyhow::bail!(
                "{} does not exist: run `spacetune profile {} --accuracy-source {}` first, or give --accuracy FILE",
                path.display(),
                self.file.display(),
                self.accuracy_source
            );
        }
        Ok(path)
    }
}

/// Writes the ranking (CSV, JSON) and the reduced space, where the `reduce` pass has run,
/// and prints the kept options.
pub fn print_selected(m: &Module, file: &Path, out: &Path) -> Result<()> {
    let selection = m.selection.as_ref().context("nothing was selected")?;
    let text = m.reduced.as_deref().map(dsl::print_module);
    write(file, out, selection, text.as_deref())?;
    report(m, selection);
    Ok(())
}

fn write(file: &Path, out: &Path, s: &Selection, reduced: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stem = stem(file);
    let space = out.join(format!("{stem}.reduced.space"));
    if let Some(text) = reduced {
        std::fs::write(&space, text)?;
    }
    let json = out.join(format!("{stem}.select.json"));
    std::fs::write(&json, serde_json::to_string_pretty(s)?)?;
    let table = out.join(format!("{stem}.select.csv"));
    let mut w = csv::Writer::from_path(&table)?;
    w.write_record([
        "rank",
        "id",
        "space",
        "accuracy",
        "latency_ms",
        "cost",
        "picked",
        "key",
    ])?;
    for (i, r) in s.ranked.iter().enumerate() {
        w.write_record([
            (i + 1).to_string(),
            r.id.clone(),
            r.space.clone(),
            format!("{:.4}", r.accuracy),
            format!("{:.5}", r.latency_ms),
            format!("{:.6}", r.cost),
            r.picked.to_string(),
            r.key.clone(),
        ])?;
    }
    w.flush()?;
    match reduced {
        Some(_) => println!(
            "wrote {}, {} and {}",
            space.display(),
            table.display(),
            json.display()
        ),
        None => println!("wrote {} and {}", table.display(), json.display()),
    }
    Ok(())
}

fn report(m: &Module, s: &Selection) {
    let p = &s.params;
    println!(
        "select: thres {} scale {} λ {} N {}: space `{}` {} ({} SSBNs ranked; picked mean latency {:.4} ms)",
        p.thres, p.scale, p.lambda, p.n, s.winner,
        if s.reached { "reached N first" } else { "has the most picks (none reached N)" },
        s.ranked.len(), s.picked_mean_latency_ms
    );
    for (_, d, tokens) in s.kept(&m.checked) {
        println!("  {:<10} {}", d.name, tokens.join(" "));
    }
}
