//! The supernet of a space ([`Supernet`]): the skeleton walked once with every option of
//! every searchable layer and every cell edge filled by a named choice built side by side
//! and closed by a mix; value choices, which may change shapes anywhere, mix whole networks
//! (one per combination of their values) at the output.

use crate::elaborate::{Builder, Frame};
use crate::expand;
use crate::skeleton::{self, LayerHook};
use spacetune_ir::supernet::Term;
use spacetune_ir::*;
use std::collections::BTreeMap;
use std::ops::Range;

/// The most combinations of value choices a supernet mixes (each is a whole network).
pub const MAX_VALUE_COMBINATIONS: usize = 16;

/// Fills every place with all of its decision's options, recording which nodes belong to
/// which option.
struct AllOptions<'a> {
    info: &'a SpaceInfo,
    /// The decision of searchable layer i.
    layers: BTreeMap<u32, u32>,
    /// The decision of each named choice used as a cell edge.
    edges: BTreeMap<String, u32>,
    /// Nodes built for (decision, option).
    ranges: Vec<(Range<usize>, u32, u32)>,
    mixes: Vec<Mix>,
}

impl AllOptions<'_> {
    fn place(
        &mut self,
        b: &mut Builder,
        d: u32,
        span: Span,
        mut build: impl FnMut(&mut Builder, &Alternative) -> Result<Handle<Node>, Diagnostic>,
    ) -> Result<Handle<Node>, Diagnostic> {
        let decision = &self.info.decisions[Handle::new(d as usize)];
        if decision.options.len() == 1 {
            return build(b, &decision.options[0]);
        }
        let mut outs = Vec::with_capacity(decision.options.len());
        for (j, option) in decision.options.iter().enumerate() {
            let start = b.graph.nodes.len();
            outs.push(build(b, option)?);
            self.ranges.push((start..b.graph.nodes.len(), d, j as u32));
        }
        let terms = (0..outs.len() as u32).map(|j| vec![(d, j)]).collect();
        let node = b.node(Prim::Add, outs, span)?;
        self.mixes.push(Mix {
            node: node.index() as u32,
            terms,
        });
        Ok(node)
    }
}

impl LayerHook for AllOptions<'_> {
    fn layer(
        &mut self,
        b: &mut Builder,
        layer: u32,
        cur: Handle<Node>,
        frame: Frame,
        part: Span,
    ) -> Result<Handle<Node>, Diagnostic> {
        let d = *self.layers.get(&layer).ok_or_else(|| {
            Diagnostic::error(format!("layer {layer} has no decision")).with_label(part, "here")
        })?;
        self.place(b, d, part, |b, option| {
            b.resolved(&option.resolved, frame, cur, option.span)
        })
    }

    fn edge(
        &mut self,
        b: &mut Builder,
        name: &str,
        _: &Resolved,
        from: Handle<Node>,
        frame: Frame,
        span: Span,
    ) -> Result<Handle<Node>, Diagnostic> {
        let d = self.edges[name];
        self.place(b, d, span, |b, option| {
            b.edge_op(&option.resolved, frame, from, span)
        })
    }
}

fn is_value_choice(d: &Decision) -> bool {
    d.kind == DecisionKind::Named
        && d.options
            .iter()
            .any(|o| matches!(o.resolved, Resolved::Value(_)))
}

/// The supernet of space `s` of `m` (checked), proven to cut back to `expand`'s SSBN_0.
pub fn build(m: &Module, s: u32) -> Result<Supernet, Diagnostics> {
    let info = &m.checked[s as usize];
    let span = info.space.map_or(m.skeleton_span, |h| m.spaces.span(h));
    let decisions: Vec<&Decision> = info.decisions.values().collect();
    let mut layers = BTreeMap::new();
    let mut edges = BTreeMap::new();
    let mut values = Vec::new();
    for (d, decision) in decisions.iter().enumerate() {
        match decision.kind {
            DecisionKind::Layer(i) => {
                layers.insert(i, d as u32);
            }
            DecisionKind::Named if is_value_choice(decision) => values.push(d as u32),
            DecisionKind::Named => {
                edges.insert(decision.name.clone(), d as u32);
            }
        }
    }
    // Every combination of the value choices' options, the first varying fastest.
    let mut combinations: Vec<Term> = vec![Vec::new()];
    for &d in &values {
        let k = decisions[d as usize].options.len() as u32;
        combinations = (0..k)
            .flat_map(|o| {
                combinations
                    .iter()
                    .map(move |c| [c.clone(), vec![(d, o)]].concat())
            })
            .collect();
        if combinations.len() > MAX_VALUE_COMBINATIONS {
            return Err(Diagnostic::error(format!(
                "the value choices of space `{}` make more than {MAX_VALUE_COMBINATIONS} \
                 networks, each of which the supernet would hold whole",
                info.name
            ))
            .with_label(span, "this space")
            .into());
        }
    }
    let mut sn = Supernet {
        options: decisions.iter().map(|d| d.options.len() as u32).collect(),
        ..Supernet::default()
    };
    let mut outputs = Vec::new();
    for combination in &combinations {
        let named = decisions
            .iter()
            .enumerate()
            .filter(|(_, d)| d.kind == DecisionKind::Named)
            .map(|(i, d)| {
                let o = combination
                    .iter()
                    .find(|(v, _)| *v as usize == i)
                    .map_or(d.default, |&(_, o)| o);
                (d.name.clone(), d.options[o as usize].resolved.clone())
            })
            .collect();
        let mut b = Builder::new(m, named);
        let mut hook = AllOptions {
            info,
            layers: layers.clone(),
            edges: edges.clone(),
            ranges: Vec::new(),
            mixes: Vec::new(),
        };
        let out = skeleton::walk(&mut b, &mut hook)?;
        // Splice the network in: the input is shared, every other node moves up by `shift`.
        let first = sn.graph.nodes.len();
        let shift = first.saturating_sub(1);
        let at = |i: usize| if i == 0 { 0 } else { i + shift };
        for (h, node) in b.graph.nodes.iter() {
            if h.index() == 0 && first > 0 {
                continue;
            }
            let mut guard = combination.clone();
            guard.extend(
                hook.ranges
                    .iter()
                    .filter(|(r, _, _)| r.contains(&h.index()))
                    .map(|&(_, d, o)| (d, o)),
            );
            sn.graph.nodes.append(
                Node {
                    op: node.op.clone(),
                    inputs: node
                        .inputs
                        .iter()
                        .map(|x| Handle::new(at(x.index())))
                        .collect(),
                },
                b.graph.nodes.span(h),
            );
            sn.graph.shapes.push(b.graph.shapes[h.index()]);
            sn.graph.regions.push(b.graph.regions[h.index()]);
            sn.guards
                .push(if h.index() == 0 { Vec::new() } else { guard });
        }
        sn.mixes.extend(hook.mixes.into_iter().map(|mut x| {
            x.node = at(x.node as usize) as u32;
            x
        }));
        outputs.push(Handle::new(at(out.index())));
    }
    if combinations.len() > 1 {
        let region = *sn.graph.regions.last().expect("a network has nodes");
        let node = sn.graph.push(Prim::Add, &outputs, region).map_err(|e| {
            Diagnostic::error(format!(
                "the value choices of space `{}` change the network's output: {e}",
                info.name
            ))
            .with_label(span, "this space")
        })?;
        sn.guards.push(Vec::new());
        sn.mixes.push(Mix {
            node: node.index() as u32,
            terms: combinations,
        });
    }
    let defaults: Vec<u32> = decisions.iter().map(|d| d.default).collect();
    same_as_expand(m, info, &sn, &defaults)?;
    Ok(sn)
}

/// Errors unless the supernet cut at `choices` is, node for node, the network `expand`
/// builds for them (a named choice used elsewhere than as a cell edge would break it).
pub fn same_as_expand(
    m: &Module,
    info: &SpaceInfo,
    sn: &Supernet,
    choices: &[u32],
) -> Result<(), Diagnostics> {
    let want = expand::build(m, info, choices)?;
    let (got, _) = sn.fixed(choices);
    let same = want.nodes.len() == got.nodes.len()
        && want.shapes == got.shapes
        && want
            .nodes
            .values()
            .zip(got.nodes.values())
            .all(|(a, b)| a == b);
    if same {
        Ok(())
    } else {
        let span = info.space.map_or(m.skeleton_span, |h| m.spaces.span(h));
        Err(Diagnostic::error(format!(
            "the supernet of space `{}` does not cut back to its network {}: a named \
             choice is used somewhere the supernet does not mix it (only searchable layers, \
             cell edges and value choices are mixed)",
            info.name,
            expand::key(&info.decisions.values().collect::<Vec<_>>(), choices)
        ))
        .with_label(span, "this space")
        .into())
    }
}

/// The fixed network of space `s` at `choices`, cut from its supernet after checking that
/// the cut is what `expand` builds, and which supernet node each of its nodes came from.
pub fn network(
    m: &Module,
    s: u32,
    sn: &Supernet,
    choices: &[u32],
    id: String,
) -> Result<(Network, Vec<usize>), Diagnostics> {
    let info = &m.checked[s as usize];
    same_as_expand(m, info, sn, choices)?;
    let (graph, origin) = sn.fixed(choices);
    let decisions: Vec<&Decision> = info.decisions.values().collect();
    let network = Network {
        id,
        space: s,
        origin: Origin::Sampled,
        choices: choices.to_vec(),
        key: expand::key(&decisions, choices),
        cost: graph.cost(),
        graph,
    };
    Ok((network, origin))
}
