//! The run's report: `summary.json` (every figure the page shows) and `report.html`, one
//! self-contained page whose plots are SVG drawn by plotters from that same summary.
//!
//! The page is built from the [`Summary`] alone, so a figure on it is always one in the
//! JSON; nothing on it loads from the network (no scripts, fonts or styles from outside).

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;
use spacetune_ir::{Module, PairRule, Phase, SearchEpoch, Searched};
use spacetune_passes::evaluate;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the module does not hold: how the run was set up, and what the driver learned
/// beside the pipeline.
pub struct Context<'a> {
    pub file: &'a Path,
    /// The backend fingerprint, as text (runtime versions, options, protocol).
    pub backend: String,
    /// The run's settings (budget, data set, search, selection), as the CLI had them.
    pub settings: serde_json::Value,
    /// The latency evaluation of the winning space, or why there is none.
    pub latency: Option<Result<evaluate::Report, String>>,
    pub fusion: &'a [PairRule],
    /// Failures the run went on after (a network that failed to measure, a baseline that
    /// failed), one line each.
    pub failures: Vec<String>,
}

/// Every figure on the page.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub file: String,
    pub phase: String,
    /// The backend fingerprint (it names the runtime and its version).
    pub backend: String,
    pub spacetune_version: String,
    pub settings: serde_json::Value,
    pub spaces: Vec<SpaceSummary>,
    pub selection: Option<SelectionSummary>,
    pub latency: Option<LatencySummary>,
    /// Why there is no latency evaluation, when there is none.
    pub latency_missing: Option<String>,
    pub fusion: Vec<PairRule>,
    /// The search pass's side table as it is (θ, choices, curves, settings).
    pub search: Option<Searched>,
    pub outcomes: Vec<OutcomeSummary>,
    pub failures: Vec<String>,
}

/// One candidate space's SSBNs as selection scored them.
#[derive(Clone, Debug, Serialize)]
pub struct SpaceSummary {
    pub name: String,
    pub ssbns: Vec<Point>,
    pub picks: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub id: String,
    pub key: String,
    pub accuracy: f64,
    pub latency_ms: f64,
    pub cost: f64,
    pub picked: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct SelectionSummary {
    pub winner: String,
    pub reached: bool,
    pub thres: f64,
    pub scale: f64,
    pub lambda: f64,
    pub n: usize,
    pub picked_mean_latency_ms: f64,
    /// Per decision of the winning space: every option, and those kept.
    pub layers: Vec<LayerRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    pub decision: String,
    pub default: String,
    pub options: Vec<String>,
    pub kept: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    pub space: String,
    pub samples: usize,
    pub seed: u64,
    pub recommended: Option<String>,
    pub predictors: Vec<PredictorSummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PredictorSummary {
    pub name: String,
    pub what: String,
    /// MAPE (%) and the share within ±5% on the scored networks; `None` with `unscored`.
    pub mape: Option<f64>,
    pub within5: Option<f64>,
    pub unscored: Option<String>,
    /// (measured, predicted) ms of each scored network.
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutcomeSummary {
    pub name: String,
    pub key: String,
    pub test_accuracy: Option<f64>,
    pub measured_ms: Option<f64>,
    pub predicted_ms: Option<f64>,
    pub search_seconds: f64,
    pub peak_mib: Option<f64>,
    pub train_seconds: f64,
    pub detail: String,
    /// Why an accuracy or a latency is missing.
    pub errors: Vec<String>,
}

/// Gathers the figures of `m` and `cx` into a summary.
pub fn summarize(m: &Module, cx: Context<'_>) -> Summary {
    let spaces = spaces_of(m);
    let selection = selection_of(m);
    let (latency, latency_missing) = match cx.latency {
        Some(Ok(r)) => (Some(latency_summary(&r)), None),
        Some(Err(why)) => (None, Some(why)),
        None => (None, Some("the run did not reach selection".into())),
    };
    let search = m.searched.clone();
    let outcomes = outcomes_of(m);
    Summary {
        file: cx.file.display().to_string(),
        phase: format!("{:?}", m.phase),
        backend: cx.backend,
        spacetune_version: env!("CARGO_PKG_VERSION").to_string(),
        settings: cx.settings,
        spaces,
        selection,
        latency,
        latency_missing,
        fusion: cx.fusion.to_vec(),
        search,
        outcomes,
        failures: cx.failures,
    }
}

/// Each candidate space's SSBNs as selection scored them (none before selection).
fn spaces_of(m: &Module) -> Vec<SpaceSummary> {
    match &m.selection {
        Some(sel) => m
            .checked
            .iter()
            .map(|info| {
                let ssbns: Vec<Point> = sel
                    .ranked
                    .iter()
                    .filter(|s| s.space == info.name)
                    .map(|s| Point {
                        id: s.id.clone(),
                        key: s.key.clone(),
                        accuracy: s.accuracy,
                        latency_ms: s.latency_ms,
                        cost: s.cost,
                        picked: s.picked,
                    })
                    .collect();
                SpaceSummary {
                    name: info.name.clone(),
                    picks: ssbns.iter().filter(|p| p.picked).count(),
                    ssbns,
                }
            })
            .collect(),
        None => Vec::new(),
    }
}

/// The winner, its knobs and the per-layer lists before and after.
fn selection_of(m: &Module) -> Option<SelectionSummary> {
    m.selection.as_ref().map(|sel| SelectionSummary {
        winner: sel.winner.clone(),
        reached: sel.reached,
        thres: sel.params.thres,
        scale: sel.params.scale,
        lambda: sel.params.lambda,
        n: sel.params.n,
        picked_mean_latency_ms: sel.picked_mean_latency_ms,
        layers: sel
            .kept(&m.checked)
            .into_iter()
            .map(|(_, d, kept)| LayerRow {
                decision: d.name.clone(),
                default: d.options[d.default as usize].token.clone(),
                options: d.options.iter().map(|o| o.token.clone()).collect(),
                kept: kept.into_iter().map(str::to_string).collect(),
            })
            .collect(),
    })
}

/// The chosen network and the baselines, each failure as its message.
fn outcomes_of(m: &Module) -> Vec<OutcomeSummary> {
    m.chosen
        .iter()
        .flat_map(|c| &c.outcomes)
        .map(|o| OutcomeSummary {
            name: o.name.clone(),
            key: o.key.clone(),
            test_accuracy: o.test_accuracy.as_ref().ok().copied(),
            measured_ms: o.measured_ms.as_ref().ok().copied(),
            predicted_ms: o.predicted_ms,
            search_seconds: o.search_seconds,
            peak_mib: o.peak_bytes.map(|b| b as f64 / f64::from(1u32 << 20)),
            train_seconds: o.train_seconds,
            detail: o.detail.clone(),
            errors: [&o.test_accuracy, &o.measured_ms]
                .into_iter()
                .filter_map(|r| r.as_ref().err().cloned())
                .collect(),
        })
        .collect()
}

fn latency_summary(r: &evaluate::Report) -> LatencySummary {
    let predictors = r
        .predictors
        .iter()
        .enumerate()
        .map(|(i, p)| PredictorSummary {
            name: p.name.clone(),
            what: p.what.clone(),
            mape: p.scored.as_ref().map(|a| a.mape),
            within5: p.scored.as_ref().map(|a| a.within5),
            unscored: p.unscored.clone(),
            points: r
                .scored
                .iter()
                .filter_map(|row| Some((row.measured_ms, row.predicted_ms.get(i).copied()??)))
                .collect(),
        })
        .collect();
    LatencySummary {
        space: r.space.clone(),
        samples: r.samples,
        seed: r.seed,
        recommended: r.recommended.clone(),
        predictors,
    }
}

/// Failures recorded in the module's side tables: networks that did not measure, outcomes
/// without an accuracy or a latency.
pub fn failures(m: &Module) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = &m.latencies {
        for (h, timed) in &t.results {
            if let Err(e) = &timed.result {
                out.push(format!("measure {}: {e}", m.networks[*h].id));
            }
        }
    }
    for o in m.chosen.iter().flat_map(|c| &c.outcomes) {
        for r in [&o.test_accuracy, &o.measured_ms] {
            if let Err(e) = r {
                out.push(format!("{}: {e}", o.name));
            }
        }
    }
    out
}

/// Whether the run made anything a user can take away: a measured table at least.
pub fn usable(m: &Module) -> bool {
    m.phase >= Phase::Measured
        && m.latencies
            .as_ref()
            .is_some_and(|t| t.results.values().any(|r| r.result.is_ok()))
}

/// Writes `dir/summary.json` and `dir/report.html`; returns their paths.
pub fn write(dir: &Path, s: &Summary) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("summary.json");
    let text = serde_json::to_string_pretty(s).map_err(std::io::Error::other)?;
    std::fs::write(&json, text)?;
    let html = dir.join("report.html");
    std::fs::write(&html, page(s).map_err(std::io::Error::other)?)?;
    Ok((json, html))
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// An SVG of `w`×`h` pixels drawn by `f`.
fn svg(
    w: u32,
    h: u32,
    f: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Drawn,
) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        f(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A range around `values` with a margin, never empty.
fn span(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        lo.abs().max(1e-3) * 0.1
    };
    lo - pad..hi + pad
}

/// A tick label with four significant digits.
fn short(v: &f64) -> String {
    if *v == 0.0 {
        return "0".into();
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.digits$}")
}

const FONT: (&str, u32) = ("sans-serif", 13);
const CAPTION: (&str, u32) = ("sans-serif", 15);

/// SSBN accuracy against latency, the picked ones filled, with iso-cost lines of the
/// selection's cost `exp(−(a − thres)/scale) − λ/L` at quartiles of the scored costs.
fn space_plot(
    space: &SpaceSummary,
    sel: &SelectionSummary,
    levels: &[f64],
) -> Result<String, String> {
    svg(520, 360, |root| {
        let xs = span(space.ssbns.iter().map(|p| p.latency_ms));
        let ys = span(space.ssbns.iter().map(|p| p.accuracy));
        let mut chart = ChartBuilder::on(root)
            .caption(format!("space {}: SSBNs", space.name), CAPTION)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(xs.clone(), ys.clone())?;
        chart
            .configure_mesh()
            .x_desc("latency (ms)")
            .y_desc("accuracy")
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&short)
            .y_label_formatter(&short)
            .label_style(FONT)
            .draw()?;
        for (i, &c) in levels.iter().enumerate() {
            let grey = RGBColor(150, 150, 150);
            let steps = 120;
            let mut run: Vec<(f64, f64)> = Vec::new();
            let mut runs = Vec::new();
            for k in 0..=steps {
                let l = xs.start + (xs.end - xs.start) * k as f64 / steps as f64;
                let inner = c + sel.lambda / l;
                let a = sel.thres - sel.scale * inner.ln();
                if l > 0.0 && inner > 0.0 && ys.contains(&a) {
                    run.push((l, a));
                } else if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
            }
            runs.push(run);
            for r in runs.into_iter().filter(|r| r.len() > 1) {
                let s = chart.draw_series(LineSeries::new(r, grey.stroke_width(1)))?;
                if i == 0 {
                    s.label("iso-cost (quartiles)")
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
                }
            }
        }
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(
                space
                    .ssbns
                    .iter()
                    .filter(|p| !p.picked)
                    .map(|p| Circle::new((p.latency_ms, p.accuracy), 3, blue.mix(0.5))),
            )?
            .label("SSBN")
            .legend(move |(x, y)| Circle::new((x + 8, y), 3, blue.mix(0.5)));
        let orange = RGBColor(230, 120, 20);
        chart
            .draw_series(
                space
                    .ssbns
                    .iter()
                    .filter(|p| p.picked)
                    .map(|p| Circle::new((p.latency_ms, p.accuracy), 4, orange.filled())),
            )?
            .label("picked")
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, orange.filled()));
        if let Some(p0) = space.ssbns.iter().find(|p| p.id.ends_with("-0")) {
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    (p0.latency_ms, p0.accuracy),
                    7,
                    BLACK.filled(),
                )))?
                .label("SSBN_0")
                .legend(|(x, y)| TriangleMarker::new((x + 8, y), 5, BLACK.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(FONT)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// Predicted against measured latency for one predictor, with y = x and the ±5% band.
fn predictor_plot(p: &PredictorSummary) -> Result<String, String> {
    svg(340, 300, |root| {
        let r = span(p.points.iter().flat_map(|&(m, q)| [m, q]));
        let title = match (p.mape, p.within5) {
            (Some(mape), Some(w)) => {
                format!("{}: MAPE {mape:.2}%, {:.0}% in ±5%", p.name, w * 100.0)
            }
            _ => p.name.clone(),
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, CAPTION)
            .margin(8)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(r.clone(), r.clone())?;
        chart
            .configure_mesh()
            .x_desc("measured (ms)")
            .y_desc("predicted (ms)")
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&short)
            .y_label_formatter(&short)
            .label_style(FONT)
            .draw()?;
        let band = RGBColor(44, 160, 44);
        for f in [0.95, 1.05] {
            chart.draw_series(LineSeries::new(
                [(r.start, r.start * f), (r.end, r.end * f)],
                band.stroke_width(1),
            ))?;
        }
        chart.draw_series(LineSeries::new(
            [(r.start, r.start), (r.end, r.end)],
            &BLACK,
        ))?;
        let red = RGBColor(214, 39, 40);
        chart.draw_series(
            p.points
                .iter()
                .map(|&(m, q)| Circle::new((m, q), 2, red.mix(0.6).filled())),
        )?;
        Ok(())
    })
}

/// One search curve against the epoch; warm-up epochs hollow.
fn curve_plot(
    title: &str,
    epochs: &[SearchEpoch],
    y: impl Fn(&SearchEpoch) -> f64,
) -> Result<String, String> {
    svg(340, 260, |root| {
        let xs = span(epochs.iter().map(|e| e.epoch as f64));
        let ys = span(epochs.iter().map(&y));
        let mut chart = ChartBuilder::on(root)
            .caption(title, CAPTION)
            .margin(8)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(xs, ys)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels(epochs.len().clamp(2, 10))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_labels(5)
            .y_label_formatter(&short)
            .label_style(FONT)
            .draw()?;
        let blue = RGBColor(31, 119, 180);
        chart.draw_series(LineSeries::new(
            epochs.iter().map(|e| (e.epoch as f64, y(e))),
            blue.stroke_width(2),
        ))?;
        chart.draw_series(epochs.iter().map(|e| {
            let style = if e.warmup {
                blue.stroke_width(1)
            } else {
                blue.filled()
            };
            Circle::new((e.epoch as f64, y(e)), 3, style)
        }))?;
        Ok(())
    })
}

/// The chosen network and the baselines on the accuracy–latency plane.
fn outcomes_plot(outcomes: &[OutcomeSummary]) -> Result<String, String> {
    let pts: Vec<(&str, f64, f64)> = outcomes
        .iter()
        .filter_map(|o| Some((o.name.as_str(), o.measured_ms?, o.test_accuracy?)))
        .collect();
    svg(560, 380, |root| {
        let xs = span(pts.iter().map(|p| p.1));
        let ys = span(pts.iter().map(|p| p.2));
        let mut chart = ChartBuilder::on(root)
            .caption(
                "chosen network and baselines (retrained, measured)",
                CAPTION,
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(xs, ys)?;
        chart
            .configure_mesh()
            .x_desc("measured latency (ms)")
            .y_desc("test accuracy")
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&short)
            .y_label_formatter(&short)
            .label_style(FONT)
            .draw()?;
        for (i, &(name, l, a)) in pts.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let size = if name == "chosen" { 7 } else { 5 };
            chart.draw_series(std::iter::once(
                EmptyElement::at((l, a))
                    + Circle::new((0, 0), size, colour.filled())
                    + Text::new(name.to_string(), (8, -6), FONT),
            ))?;
        }
        Ok(())
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

/// A figure: an id, the SVG and a caption.
fn figure(out: &mut String, id: &str, svg: Result<String, String>, caption: &str) {
    match svg {
        Ok(svg) => {
            let _ = write!(
                out,
                "<figure class=\"plot\" id=\"{id}\">{svg}<figcaption>{}</figcaption></figure>",
                esc(caption)
            );
        }
        // A plot that cannot be drawn is said so, not left out.
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"warn\">plot {id} could not be drawn: {}</p>",
                esc(&e)
            );
        }
    }
}

/// Marks every plot with the size it rendered at and its count of drawn shapes, and
/// reports an empty one on the console — what the headless-browser test reads back.
const CHECK: &str = r#"<script>
addEventListener('load', () => {
  const figs = document.querySelectorAll('figure.plot');
  let ok = 0;
  figs.forEach(f => {
    const s = f.querySelector('svg');
    const r = s ? s.getBoundingClientRect() : { width: 0, height: 0 };
    const n = s ? s.querySelectorAll('circle, polyline, path, polygon, line').length : 0;
    f.dataset.rendered = `${Math.round(r.width)}x${Math.round(r.height)} ${n}`;
    if (r.width > 0 && r.height > 0 && n > 0) ok++; else console.error('empty plot ' + f.id);
  });
  document.body.dataset.plots = `${ok}/${figs.length}`;
});
</script>"#;

const STYLE: &str = "body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}\
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;font-size:.9em}\
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.kept{font-weight:bold;color:#064}.dropped{color:#999;text-decoration:line-through}\
figure{display:inline-block;margin:.4em;vertical-align:top}figcaption{font-size:.85em;color:#555;max-width:520px}\
.warn{color:#a40}code{background:#f5f5f5;padding:0 .2em}";

/// The page.
pub fn page(s: &Summary) -> Result<String, String> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>spacetune report: {}</title><style>{STYLE}</style></head><body>",
        esc(&s.file)
    );
    let _ = write!(
        h,
        "<h1>spacetune report: <code>{}</code></h1>",
        esc(&s.file)
    );
    summary_table(&mut h, s);
    if !s.failures.is_empty() {
        let _ = write!(
            h,
            "<h2>Failures the run went on after ({})</h2><ul>",
            s.failures.len()
        );
        for f in &s.failures {
            let _ = write!(h, "<li class=\"warn\">{}</li>", esc(f));
        }
        h.push_str("</ul>");
    }
    selection_section(&mut h, s);
    latency_section(&mut h, s);
    fusion_section(&mut h, s);
    search_section(&mut h, s);
    outcomes_section(&mut h, s);
    let _ = write!(
        h,
        "<h2>Settings</h2><p>backend: <code>{}</code><br>spacetune {}</p><pre>{}</pre>",
        esc(&s.backend),
        esc(&s.spacetune_version),
        esc(&serde_json::to_string_pretty(&s.settings).unwrap_or_default())
    );
    h.push_str(CHECK);
    h.push_str("</body></html>\n");
    Ok(h)
}

fn summary_table(h: &mut String, s: &Summary) {
    let _ = write!(
        h,
        "<table><tr><th>reached</th><td>{}</td></tr>",
        esc(&s.phase)
    );
    if let Some(sel) = &s.selection {
        let _ = write!(
            h,
            "<tr><th>winning space</th><td>{}</td></tr>",
            esc(&sel.winner)
        );
    }
    if let Some(c) = s.outcomes.iter().find(|o| o.name == "chosen") {
        let _ = write!(
            h,
            "<tr><th>chosen network</th><td><code>{}</code></td></tr><tr><th>its test accuracy / measured latency</th><td>{} / {} ms (predicted {} ms)</td></tr>",
            esc(&c.key),
            num(c.test_accuracy, 4),
            num(c.measured_ms, 3),
            num(c.predicted_ms, 3)
        );
    }
    let _ = write!(
        h,
        "<tr><th>backend</th><td><code>{}</code></td></tr></table>",
        esc(&s.backend)
    );
}

fn latency_section(h: &mut String, s: &Summary) {
    h.push_str("<h2>Latency predictors</h2>");
    let Some(l) = &s.latency else {
        let _ = write!(
            h,
            "<p class=\"warn\">No latency evaluation: {}</p>",
            esc(s.latency_missing.as_deref().unwrap_or("not run"))
        );
        return;
    };
    let _ = write!(
        h,
        "<p>{} random networks of <b>{}</b> (seed {}) measured whole and predicted by each predictor; \
         the band is ±5%. Recommended: <b>{}</b>.</p><table><tr><th>predictor</th><th>what</th><th>MAPE %</th><th>within ±5%</th></tr>",
        l.samples,
        esc(&l.space),
        l.seed,
        esc(l.recommended.as_deref().unwrap_or("none"))
    );
    for p in &l.predictors {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&p.name),
            esc(p.unscored.as_deref().unwrap_or(&p.what)),
            num(p.mape, 2),
            num(p.within5.map(|w| w * 100.0), 1)
        );
    }
    h.push_str("</table>");
    for p in l.predictors.iter().filter(|p| !p.points.is_empty()) {
        figure(
            h,
            &format!("latency-{}", p.name.replace('+', "-")),
            predictor_plot(p),
            &p.what,
        );
    }
}

fn fusion_section(h: &mut String, s: &Summary) {
    let fused: Vec<&PairRule> = s.fusion.iter().filter(|r| r.fused).collect();
    let _ = write!(
        h,
        "<h2>Fusion rules</h2><p>{} op pairs tested (nn-Meter's test: fused when T_A + T_B − T_AB is large against the smaller), {} fused.</p>",
        s.fusion.len(),
        fused.len()
    );
    if s.fusion.is_empty() {
        return;
    }
    h.push_str("<table><tr><th>pair</th><th>at</th><th>T_A ms</th><th>T_B ms</th><th>T_AB ms</th><th>spread ms</th><th>verdict</th></tr>");
    for r in &s.fusion {
        let verdict = if r.undecided {
            "undecided"
        } else if r.fused {
            "fused"
        } else {
            "not fused"
        };
        let _ = write!(
            h,
            "<tr><td>{} → {}</td><td>{}</td><td class=\"n\">{:.4}</td><td class=\"n\">{:.4}</td><td class=\"n\">{:.4}</td><td class=\"n\">{:.4}</td><td>{verdict}</td></tr>",
            esc(&r.a),
            esc(&r.b),
            esc(&r.place),
            r.t_a,
            r.t_b,
            r.t_ab,
            r.spread_ms
        );
    }
    h.push_str("</table>");
}

fn outcomes_section(h: &mut String, s: &Summary) {
    if s.outcomes.is_empty() {
        return;
    }
    h.push_str("<h2>The chosen network and the baselines</h2><p>Every network retrained from scratch on the same budget and measured whole on the backend.</p>");
    figure(
        h,
        "outcomes",
        outcomes_plot(&s.outcomes),
        "test accuracy against measured latency",
    );
    h.push_str("<table><tr><th>network</th><th>test acc</th><th>measured ms</th><th>predicted ms</th><th>search s</th><th>peak MiB</th><th>train s</th><th>how found</th><th>key</th></tr>");
    for o in &s.outcomes {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td>{}{}</td><td><code>{}</code></td></tr>",
            esc(&o.name),
            num(o.test_accuracy, 4),
            num(o.measured_ms, 3),
            num(o.predicted_ms, 3),
            o.search_seconds,
            num(o.peak_mib, 0),
            o.train_seconds,
            esc(&o.detail),
            o.errors.iter().map(|e| format!("<br><span class=\"warn\">{}</span>", esc(e))).collect::<String>(),
            esc(&o.key)
        );
    }
    h.push_str("</table>");
}

/// The selection: its rule and winner, a plot per space, the per-layer table.
fn selection_section(h: &mut String, s: &Summary) {
    let Some(sel) = &s.selection else {
        return;
    };
    let _ = write!(
        h,
        "<h2>Selection</h2><p>BBSSP's cost exp(−(acc − {})/{}) − {}/latency over every SSBN, \
         cheapest first; the first space to {} picks wins{}. Winner: <b>{}</b> \
         (picked mean latency {:.3} ms).</p>",
        sel.thres,
        sel.scale,
        sel.lambda,
        sel.n,
        if sel.reached {
            ""
        } else {
            " (none reached it: the most picks)"
        },
        esc(&sel.winner),
        sel.picked_mean_latency_ms
    );
    let mut costs: Vec<f64> = s
        .spaces
        .iter()
        .flat_map(|sp| sp.ssbns.iter().map(|p| p.cost))
        .collect();
    costs.sort_by(f64::total_cmp);
    let levels: Vec<f64> = [0.25, 0.5, 0.75]
        .iter()
        .filter_map(|q| {
            costs
                .get(((costs.len() as f64 - 1.0) * q) as usize)
                .copied()
        })
        .collect();
    for sp in &s.spaces {
        figure(
            h,
            &format!("space-{}", sp.name),
            space_plot(sp, sel, &levels),
            &format!("{}: {} SSBNs, {} picked", sp.name, sp.ssbns.len(), sp.picks),
        );
    }
    let _ = write!(h, "<h3>Per-layer candidates of <b>{}</b>, before and after selection</h3><table><tr><th>decision</th><th>options (kept in bold)</th><th>kept</th></tr>", esc(&sel.winner));
    for l in &sel.layers {
        let opts: Vec<String> = l
            .options
            .iter()
            .map(|o| {
                let class = if l.kept.contains(o) {
                    "kept"
                } else {
                    "dropped"
                };
                let star = if *o == l.default { "*" } else { "" };
                format!("<span class=\"{class}\">{}{star}</span>", esc(o))
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{} / {}</td></tr>",
            esc(&l.decision),
            opts.join(" "),
            l.kept.len(),
            l.options.len()
        );
    }
    h.push_str("</table><p>* the default option.</p>");
}

/// The search: what ran and its curves.
fn search_section(h: &mut String, s: &Summary) {
    let Some(x) = &s.search else {
        return;
    };
    let _ = write!(
        h,
        "<h2>Search</h2><p>{} mode on the {} space <b>{}</b>, E[LAT] from the {} table; {} epochs in {:.1} s{}. Chosen: <code>{}</code> (predicted {:.3} ms).</p>",
        esc(&x.mode),
        esc(&x.on),
        esc(&x.space),
        esc(&x.predictor),
        x.epochs.len(),
        x.seconds,
        if x.resumed > 0 { format!(" ({} from a checkpoint)", x.resumed) } else { String::new() },
        esc(&x.key),
        x.predicted_ms
    );
    let e = &x.epochs;
    figure(
        h,
        "curve-loss",
        curve_plot("loss", e, |e| e.loss),
        "loss per epoch (warm-up epochs hollow: weights only)",
    );
    figure(
        h,
        "curve-latency",
        curve_plot("E[LAT] (ms)", e, |e| e.expected_ms),
        "expected latency under softmax(θ)",
    );
    figure(
        h,
        "curve-temperature",
        curve_plot("temperature", e, |e| e.temperature),
        "Gumbel-softmax temperature",
    );
    figure(
        h,
        "curve-entropy",
        curve_plot("entropy of θ (nats)", e, |e| e.entropy),
        "mean entropy of softmax(θ) per decision",
    );
}
