//! The IR verifier: invariants every pass must leave true (see the IR crate docs).

use spacetune_ir::{Module, Phase, Shape};

/// Lists every broken invariant, or nothing.
pub fn validate(m: &Module) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if m.phase >= Phase::Checked {
        let expected = m.spaces.len().max(1);
        if m.checked.len() != expected {
            problems.push(format!(
                "{} spaces but {} checked entries",
                expected,
                m.checked.len()
            ));
        }
        for info in &m.checked {
            for (h, d) in info.decisions.iter() {
                if d.options.is_empty() || d.default as usize >= d.options.len() {
                    problems.push(format!(
                        "space {} decision d{} has default {} of {} options",
                        info.name,
                        h.index(),
                        d.default,
                        d.options.len()
                    ));
                }
            }
        }
    }
    if m.phase >= Phase::Expanded {
        let want: usize = m.checked.iter().map(|i| i.ssbn_count()).sum();
        if m.networks.len() != want {
            problems.push(format!("{} networks, expected {want}", m.networks.len()));
        }
        for n in &m.networks {
            let g = &n.graph;
            if g.shapes.len() != g.nodes.len() || g.regions.len() != g.nodes.len() {
                problems.push(format!("{}: side tables do not match the node count", n.id));
                continue;
            }
            for (h, node) in g.nodes.iter() {
                if node.inputs.iter().any(|i| i.index() >= h.index()) {
                    problems.push(format!("{}: n{} uses a later node", n.id, h.index()));
                    continue;
                }
                let inputs: Vec<Shape> = node.inputs.iter().map(|&i| g.shape(i)).collect();
                if !inputs.is_empty() && node.op.infer(&inputs).ok() != Some(g.shape(h)) {
                    problems.push(format!(
                        "{}: n{} has shape {} but infers otherwise",
                        n.id,
                        h.index(),
                        g.shape(h)
                    ));
                }
            }
            if n.cost != g.cost() {
                problems.push(format!("{}: stored cost differs from the graph's", n.id));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
