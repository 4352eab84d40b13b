//! `expand`: every candidate space → its search-space base networks (SSBNs): SSBN_0 with
//! every decision at its default, and SSBN_(i,j) with decision i at option j ≠ default.

use crate::elaborate::Builder;
use crate::pass::Pass;
use crate::skeleton::{self, FillLayers};
use spacetune_ir::*;

/// A module expands to at most this many networks.
pub const MAX_NETWORKS: usize = 20_000;
/// ...and at most this many ops across all of them.
pub const MAX_TOTAL_NODES: usize = 20_000_000;

pub struct Expand;

impl Pass for Expand {
    fn name(&self) -> &'static str {
        "expand"
    }
    fn run(&self, m: &mut Module, _: &crate::ctx::Ctx<'_>) -> Result<(), Diagnostics> {
        assert!(m.phase >= Phase::Checked, "expand runs after check");
        let mut networks: Arena<Network> = Arena::new();
        let mut total_nodes = 0usize;
        for (s, info) in m.checked.iter().enumerate() {
            let count = info.ssbn_count();
            let span = info.space.map_or(m.skeleton_span, |h| m.spaces.span(h));
            if networks.len() + count > MAX_NETWORKS {
                return Err(Diagnostic::error(format!("space `{}` expands to {count} networks, more than the limit of {MAX_NETWORKS} in all", info.name))
                    .with_label(span, "this space")
                    .into());
            }
            let decisions: Vec<&Decision> = info.decisions.iter().map(|(_, d)| d).collect();
            let base: Vec<u32> = decisions.iter().map(|d| d.default).collect();
            let mut plan = vec![(Origin::Base, base.clone())];
            for (i, d) in decisions.iter().enumerate() {
                for j in (0..d.options.len() as u32).filter(|&j| j != d.default) {
                    let mut choices = base.clone();
                    choices[i] = j;
                    plan.push((
                        Origin::Swap {
                            decision: Handle::new(i),
                            option: j,
                        },
                        choices,
                    ));
                }
            }
            for (origin, choices) in plan {
                let graph = build(m, info, &choices)?;
                total_nodes += graph.nodes.len();
                if total_nodes > MAX_TOTAL_NODES {
                    return Err(Diagnostic::error(format!(
                        "expanding space `{}` builds more than {MAX_TOTAL_NODES} ops",
                        info.name
                    ))
                    .with_label(span, "this space")
                    .into());
                }
                let id = match origin {
                    Origin::Swap { decision, option } => {
                        format!("{}-{}-{option}", info.name, decision.index())
                    }
                    _ => format!("{}-0", info.name),
                };
                let network = Network {
                    id,
                    space: s as u32,
                    origin,
                    key: key(&decisions, &choices),
                    cost: graph.cost(),
                    choices,
                    graph,
                };
                networks.append(network, span);
            }
        }
        m.networks = networks;
        m.advance(Phase::Expanded);
        Ok(())
    }
}

/// The canonical architecture key (see the IR docs): one token per decision.
pub fn key(decisions: &[&Decision], choices: &[u32]) -> String {
    decisions
        .iter()
        .zip(choices)
        .map(|(d, &c)| {
            let token = &d.options[c as usize].token;
            match d.kind {
                DecisionKind::Layer(_) => token.clone(),
                DecisionKind::Named => format!("{}={token}", d.name),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the network of `info` that takes option `choices[d]` for every decision d.
pub fn build(m: &Module, info: &SpaceInfo, choices: &[u32]) -> Result<Graph, Diagnostics> {
    let picks: Vec<(&Decision, &Alternative)> = info
        .decisions
        .iter()
        .zip(choices)
        .map(|((_, d), &c)| (d, &d.options[c as usize]))
        .collect();
    let named = picks
        .iter()
        .filter(|(d, _)| d.kind == DecisionKind::Named)
        .map(|(d, option)| (d.name.clone(), option.resolved.clone()))
        .collect();
    let chosen = picks
        .iter()
        .filter(|(d, _)| matches!(d.kind, DecisionKind::Layer(_)))
        .map(|&(_, option)| option)
        .collect();
    let mut b = Builder::new(m, named);
    skeleton::walk(&mut b, &mut FillLayers { chosen })?;
    Ok(b.graph)
}
