//! `spacetune select`: BBSSP's cost function over the SSBNs of every space, the winning
//! space, and its reduced form written back as a `.space` file that parses and checks.

use anyhow::{bail, Context, Result};
use clap::Args;
use spacetune::backends::{self, cache::Cache, measure::Protocol};
use spacetune::ir::{dsl, Module};
use spacetune::pass::select::{select as run_select, SelectParams, Selection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct SelectArgs {
    pub file: PathBuf,
    /// Accuracies: a CSV with `key` and `accuracy` columns (the canonical architecture key
    /// of `spacetune expand`), e.g. the output of `spacetune profile` or a tabular benchmark
    #[arg(long)]
    pub accuracy: PathBuf,
    /// Where latencies come from (measured through the cache, like `spacetune measure`)
    #[arg(long, default_value = "sim")]
    pub backend: String,
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// λ: weight of latency in the cost (latency in ms). The knobs default to the file's
    /// `select` line, then to the authors' values (thres 0.8, scale 2, λ 0.01, N 60)
    #[arg(long)]
    pub lambda: Option<f64>,
    #[arg(long)]
    pub thres: Option<f64>,
    #[arg(long)]
    pub scale: Option<f64>,
    /// Picks a space needs to win (N)
    #[arg(short = 'n', long = "picks")]
    pub n: Option<usize>,
    #[arg(long, default_value = ".spacetune/measurements.db")]
    pub db: PathBuf,
    #[arg(long, default_value = "spacetune-out")]
    pub out: PathBuf,
}

/// `key → accuracy` from a CSV with (at least) `key` and `accuracy` columns.
pub fn read_accuracies(path: &Path) -> Result<HashMap<String, f64>> {
    let mut r = csv::Reader::from_path(path)
        .with_context(|| format!("reading accuracies from {}", path.display()))?;
    let headers = r.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no `{name}` column", path.display()))
    };
    let (k, a) = (col("key")?, col("accuracy")?);
    let mut out = HashMap::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec?;
        let acc: f64 = rec[a].trim().parse().with_context(|| {
            format!(
                "{}:{}: accuracy `{}` is not a number",
                path.display(),
                line + 2,
                &rec[a]
            )
        })?;
        if !(0.0..=1.0).contains(&acc) {
            bail!(
                "{}:{}: accuracy {acc} is not in [0, 1]",
                path.display(),
                line + 2
            );
        }
        out.insert(rec[k].trim().to_string(), acc);
    }
    Ok(out)
}

pub fn select(m: &Module, args: &SelectArgs) -> Result<()> {
    let by_key = read_accuracies(&args.accuracy)?;
    let mut accuracy = HashMap::new();
    for n in &m.networks {
        let a = by_key.get(&n.key).with_context(|| {
            format!(
                "{} has no accuracy for {} (key `{}`)",
                args.accuracy.display(),
                n.id,
                n.key
            )
        })?;
        accuracy.insert(n.id.clone(), *a);
    }
    let options = backends::Options::parse(&args.options)?;
    let backend = backends::lookup(&args.backend, &options)?;
    let cache = Cache::open(&args.db)?;
    let mut latency = HashMap::new();
    for s in 0..m.checked.len() as u32 {
        let nets: Vec<_> = m.networks.iter().filter(|n| n.space == s).collect();
        let outcomes = crate::measure::measure_space(
            backend.as_ref(),
            &nets,
            &Protocol::default(),
            &cache,
            |_| {},
        )?;
        for (n, o) in nets.iter().zip(outcomes) {
            let l = o
                .latency
                .map_err(|e| anyhow::anyhow!("{} failed to measure: {e}", n.id))?;
            latency.insert(n.id.clone(), l.p10_ms);
        }
    }
    // Command line, then the file's `select` line, then the authors' values.
    let file = |name: &str| m.select.iter().find(|k| k.name == name).map(|k| k.value);
    let d = SelectParams::default();
    let params = SelectParams {
        thres: args.thres.or(file("thres")).unwrap_or(d.thres),
        scale: args.scale.or(file("scale")).unwrap_or(d.scale),
        lambda: args.lambda.or(file("lambda")).unwrap_or(d.lambda),
        n: args.n.or(file("picks").map(|v| v as usize)).unwrap_or(d.n),
    };
    let selection = run_select(m, &accuracy, &latency, &params).map_err(anyhow::Error::msg)?;
    let space = m
        .checked
        .iter()
        .position(|i| i.name == selection.winner)
        .expect("the winner is a space");
    let text = dsl::print_reduced(m, space as u32, &selection.keep);
    // The reduced space must stand on its own: parse and check it before writing it.
    let check = spacetune::compile_str("reduced.space", &text, None, spacetune::Options::default());
    if let Err(d) = check.result {
        bail!(
            "internal error: the reduced space does not check:\n{}\n{}",
            d.render(&check.sources),
            text
        );
    }
    write(args, &selection, &text)?;
    report(m, space, &selection);
    Ok(())
}

fn write(args: &SelectArgs, s: &Selection, text: &str) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let stem = crate::measure::stem(&args.file);
    let space = args.out.join(format!("{stem}.reduced.space"));
    std::fs::write(&space, text)?;
    let json = args.out.join(format!("{stem}.select.json"));
    std::fs::write(&json, serde_json::to_string_pretty(s)?)?;
    let table = args.out.join(format!("{stem}.select.csv"));
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
    println!(
        "wrote {}, {} and {}",
        space.display(),
        table.display(),
        json.display()
    );
    Ok(())
}

fn report(m: &Module, space: usize, s: &Selection) {
    let p = &s.params;
    println!(
        "select: thres {} scale {} λ {} N {}: space `{}` {} ({} SSBNs ranked; picked mean latency {:.4} ms)",
        p.thres, p.scale, p.lambda, p.n, s.winner,
        if s.reached { "reached N first" } else { "has the most picks (none reached N)" },
        s.ranked.len(), s.picked_mean_latency_ms
    );
    let info = &m.checked[space];
    for ((_, d), kept) in info.decisions.iter().zip(&s.keep) {
        let tokens: Vec<&str> = kept
            .iter()
            .map(|&o| d.options[o as usize].token.as_str())
            .collect();
        println!("  {:<10} {}", d.name, tokens.join(" "));
    }
}
