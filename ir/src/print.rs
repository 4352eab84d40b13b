//! The line-oriented text form of a module (what snapshots show): the templates as canonical
//! DSL, then each side table the passes have filled.

use crate::network::{Graph, Region};
use crate::space_info::{DecisionKind, Network, Origin};
use crate::Module;
use std::fmt;

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "; phase {}", self.phase.name())?;
        write!(f, "{}", crate::dsl::print_module(self))?;
        for info in &self.checked {
            writeln!(f)?;
            writeln!(f, "; space {} ({} ssbns)", info.name, info.ssbn_count())?;
            for (h, d) in info.decisions.iter() {
                let kind = match d.kind {
                    DecisionKind::Layer(i) => format!("layer {i}"),
                    DecisionKind::Named => "named".to_string(),
                };
                let options: Vec<&str> = d.options.iter().map(|a| a.token.as_str()).collect();
                writeln!(
                    f,
                    "decision d{} {} ({kind}) default {} [{}]",
                    h.index(),
                    d.name,
                    d.default,
                    options.join(", ")
                )?;
            }
            for slot in &info.slots {
                writeln!(
                    f,
                    "slot layer{} {} -> {} stride {}",
                    slot.layer, slot.input, slot.output, slot.stride
                )?;
                let decision = info
                    .decisions
                    .iter()
                    .find(|(_, d)| d.kind == DecisionKind::Layer(slot.layer))
                    .map(|(_, d)| d);
                for (j, cost) in slot.costs.iter().enumerate() {
                    let token = decision
                        .and_then(|d| d.options.get(j))
                        .map_or("?", |a| &a.token);
                    writeln!(
                        f,
                        "    [{j}] {token} macs={} params={}",
                        cost.macs, cost.params
                    )?;
                }
            }
            writeln!(f, "output {}", info.output)?;
        }
        if !self.networks.is_empty() {
            writeln!(f)?;
            writeln!(f, "; networks ({})", self.networks.len())?;
            for n in self.networks.values() {
                writeln!(f, "{}", NetworkLine(n))?;
            }
        }
        self.fmt_learned(f)
    }
}

impl Module {
    /// The side tables of `measure`, `correct`, `profile`, `select` and `reduce`.
    fn fmt_learned(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = &self.latencies {
            writeln!(f)?;
            writeln!(f, "; latencies on {} ({})", t.backend, t.results.len())?;
            for (&h, timed) in &t.results {
                let id = &self.networks[h].id;
                match &timed.result {
                    Ok(l) => writeln!(
                        f,
                        "latency {id} p10={} median={}{}",
                        Ms(l.p10_ms),
                        Ms(l.median_ms),
                        match (l.noisy, l.unscaled) {
                            (true, true) => " noisy unscaled",
                            (true, false) => " noisy",
                            (false, true) => " unscaled",
                            (false, false) => "",
                        }
                    )?,
                    Err(e) => writeln!(f, "latency {id} failed: {e}")?,
                }
            }
        }
        self.fmt_luts(f)?;
        if let Some(t) = &self.accuracies {
            writeln!(f)?;
            let source = match &t.source {
                crate::AccuracySource::Profile { task_id, .. } => format!("profile {task_id}"),
                crate::AccuracySource::Scratch { task_id, .. } => {
                    format!("profile {task_id}, trained from scratch")
                }
                crate::AccuracySource::Proxy { proxy, task_id, .. } => {
                    format!("proxy {proxy} {task_id}, percentile ranks of the score")
                }
                crate::AccuracySource::Table { path } => format!("table {path}"),
            };
            writeln!(f, "; accuracies from {source} ({})", t.results.len())?;
            for note in &t.notes {
                writeln!(f, "; {note}")?;
            }
            for (&h, a) in &t.results {
                writeln!(f, "accuracy {} {:.4}", self.networks[h].id, a.accuracy)?;
            }
        }
        if let Some(s) = &self.selection {
            let p = &s.params;
            writeln!(f)?;
            writeln!(
                f,
                "; selection thres={} scale={} lambda={} picks={}: winner {} ({})",
                p.thres,
                p.scale,
                p.lambda,
                p.n,
                s.winner,
                if s.reached { "reached N" } else { "most picks" }
            )?;
            for (h, d, tokens) in s.kept(&self.checked) {
                writeln!(f, "keep d{} {} [{}]", h.index(), d.name, tokens.join(", "))?;
            }
            for (rank, r) in s.ranked.iter().enumerate() {
                writeln!(
                    f,
                    "rank {} {} acc={:.4} lat={} cost={:.6}{}",
                    rank + 1,
                    r.id,
                    r.accuracy,
                    Ms(r.latency_ms),
                    r.cost,
                    if r.picked { " picked" } else { "" }
                )?;
            }
        }
        if let Some(r) = &self.reduced {
            writeln!(f)?;
            writeln!(f, "; reduced ({} ssbns)", r.networks.len())?;
            write!(f, "{}", crate::dsl::print_module(r))?;
        }
        if let Some(x) = &self.searched {
            writeln!(f)?;
            writeln!(
                f,
                "; searched {} space {} ({} mode, {} table): {} epochs ({} resumed)",
                x.on,
                x.space,
                x.mode,
                x.predictor,
                x.epochs.len(),
                x.resumed
            )?;
            for (d, theta) in x.theta.iter().enumerate() {
                let t: Vec<String> = theta.iter().map(|v| format!("{v:.4}")).collect();
                writeln!(f, "theta d{d} [{}] -> {}", t.join(", "), x.choices[d])?;
            }
            writeln!(f, "chosen {} predicted {:.4} ms", x.key, x.predicted_ms)?;
        }
        if let Some(c) = &self.chosen {
            writeln!(f)?;
            writeln!(f, "; chosen {} ({})", c.network.id, c.network.key)?;
            for o in &c.outcomes {
                let show = |r: &Result<f64, String>| match r {
                    Ok(v) => format!("{v:.4}"),
                    Err(e) => format!("failed ({e})"),
                };
                writeln!(
                    f,
                    "{} {} accuracy {} measured {} ms",
                    o.name,
                    o.key,
                    show(&o.test_accuracy),
                    show(&o.measured_ms)
                )?;
            }
        }
        Ok(())
    }
}

impl Module {
    /// The side table of `correct`.
    fn fmt_luts(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for lut in &self.luts {
            let info = &self.checked[lut.space as usize];
            writeln!(f)?;
            writeln!(f, "; latency {} on {}", info.name, lut.backend)?;
            let naive = |x: Option<f64>| x.map_or(String::new(), |v| format!(" naive={}", Ms(v)));
            writeln!(
                f,
                "lut base={} fixed={}{} shares={:?}",
                Ms(lut.base_ms),
                Ms(lut.fixed_ms),
                naive(lut.fixed_naive_ms),
                lut.shares
            )?;
            for row in &lut.rows {
                let d = &info.decisions[crate::Handle::new(row.decision as usize)];
                writeln!(
                    f,
                    "lut d{} {} share={}",
                    row.decision,
                    d.name,
                    Ms(row.share_ms)
                )?;
                for (j, e) in row.options.iter().enumerate() {
                    writeln!(
                        f,
                        "    [{j}] {} corrected={}{}",
                        d.options[j].token,
                        Ms(e.corrected_ms),
                        naive(e.naive_ms)
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Milliseconds to 0.1 µs, with rounding residue (and −0) shown as 0.
struct Ms(f64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.0.abs() < 5e-5 { 0.0 } else { self.0 };
        write!(f, "{v:.4}")
    }
}

/// One line per network: id, which SSBN it is, costs and key.
pub struct NetworkLine<'a>(pub &'a Network);

impl fmt::Display for NetworkLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        let which = match n.origin {
            Origin::Base => "base".to_string(),
            Origin::Swap { decision, option } => format!("d{}={option}", decision.index()),
            Origin::Sampled => "sampled".to_string(),
            Origin::Probe => "probe".to_string(),
        };
        write!(
            f,
            "network {} {which} flops={} params={} nodes={} key \"{}\"",
            n.id,
            n.cost.flops,
            n.cost.params,
            n.graph.nodes.len(),
            n.key
        )
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut region = None;
        for (h, node) in self.nodes.iter() {
            let r: Region = self.regions[h.index()];
            if region != Some(r) {
                writeln!(f, "  ; {r}")?;
                region = Some(r);
            }
            let inputs: Vec<String> = node
                .inputs
                .iter()
                .map(|i| format!("n{}", i.index()))
                .collect();
            writeln!(
                f,
                "  n{} = {}({}) : {}",
                h.index(),
                node.op,
                inputs.join(", "),
                self.shapes[h.index()]
            )?;
        }
        Ok(())
    }
}
