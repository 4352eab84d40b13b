//! The line-oriented text form of a module (what snapshots show): the templates as canonical
//! DSL, then each side table the passes have filled.

use crate::network::{Graph, Region};
use crate::space_info::{DecisionKind, Network, Ssbn};
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
            for n in &self.networks {
                writeln!(f, "{}", NetworkLine(n))?;
            }
        }
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
        let which = match n.ssbn {
            Ssbn::Base => "base".to_string(),
            Ssbn::Swap { decision, option } => format!("d{decision}={option}"),
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
