//! The IR verifier: invariants every pass must leave true (see the IR crate docs).

use spacetune_ir::{Handle, Module, Network, Phase, Shape};

/// Lists every broken invariant, or nothing.
pub fn validate(m: &Module) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if m.phase >= Phase::Searched {
        match (&m.searched, &m.reduced) {
            (None, _) => problems.push("searched, but no search".into()),
            (Some(x), _) if x.theta.len() != x.choices.len() => {
                problems.push("θ and the chosen options differ in length".into())
            }
            (Some(x), _)
                if x.theta
                    .iter()
                    .zip(&x.choices)
                    .any(|(t, &c)| c as usize >= t.len()) =>
            {
                problems.push("a chosen option is out of its θ's range".into())
            }
            _ => {}
        }
    }
    if m.phase >= Phase::Chosen && m.chosen.is_none() {
        problems.push("chosen, but no chosen network".into());
    }
    if let Some(c) = &m.chosen {
        if c.outcomes.first().map(|o| o.name.as_str()) != Some("chosen") {
            problems.push("the outcome table does not start with the chosen network".into());
        }
        let mut names: Vec<&str> = c.outcomes.iter().map(|o| o.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            problems.push("two outcomes share a name".into());
        }
    }
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
        for n in m.networks.values() {
            let g = &n.graph;
            if g.shapes.len() != g.nodes.len()
                || g.regions.len() != g.nodes.len()
                || !(g.edges.is_empty() || g.edges.len() == g.nodes.len())
            {
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
    learned(m, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The side tables of the passes after `expand`.
fn learned(m: &Module, problems: &mut Vec<String>) {
    let valid = |h: Handle<Network>| h.index() < m.networks.len();
    // A latency table covers whole spaces: every SSBN of a space it has any of.
    let whole = |what: &str, has: &dyn Fn(Handle<Network>) -> bool, problems: &mut Vec<String>| {
        for (s, info) in m.checked.iter().enumerate() {
            let nets: Vec<Handle<Network>> = m.networks_of(s as u32).map(|(h, _)| h).collect();
            let n = nets.iter().filter(|&&h| has(h)).count();
            if n != 0 && n != nets.len() {
                problems.push(format!(
                    "{what} for {n} of {} SSBNs of space {}",
                    nets.len(),
                    info.name
                ));
            }
        }
    };
    if m.phase >= Phase::Measured {
        match &m.latencies {
            None => problems.push("measured, but no latency table".into()),
            Some(t) => {
                if t.results.keys().any(|&h| !valid(h)) {
                    problems.push("a latency of a network that does not exist".into());
                }
                whole("latencies", &|h| t.results.contains_key(&h), problems);
            }
        }
    }
    if m.phase >= Phase::Annotated {
        for lut in &m.luts {
            let Some(info) = m.checked.get(lut.space as usize) else {
                problems.push(format!(
                    "a latency table of space {} that does not exist",
                    lut.space
                ));
                continue;
            };
            let fits = lut.rows.len() == info.decisions.len()
                && lut
                    .rows
                    .iter()
                    .zip(info.decisions.iter())
                    .all(|(r, (_, d))| r.options.len() == d.options.len());
            if !fits {
                problems.push(format!(
                    "the latency table of {} does not match its decisions",
                    info.name
                ));
            }
        }
    }
    if m.phase >= Phase::Profiled {
        match &m.accuracies {
            None => problems.push("profiled, but no accuracy table".into()),
            Some(t) => {
                for (&h, a) in &t.results {
                    if !valid(h) || !(0.0..=1.0).contains(&a.accuracy) {
                        problems.push(format!(
                            "accuracy #{} is {} (or of no network)",
                            h.index(),
                            a.accuracy
                        ));
                    }
                }
                // Not whole spaces: `profile --sample` and `--base-only` profile part of a
                // space on purpose (selection refuses such a table, naming what is missing).
            }
        }
    }
    if m.phase >= Phase::Selected {
        selected(m, problems);
    }
}

fn selected(m: &Module, problems: &mut Vec<String>) {
    let Some(s) = &m.selection else {
        problems.push("selected, but no selection".into());
        return;
    };
    let mut seen = std::collections::BTreeSet::new();
    if s.ranked
        .iter()
        .any(|r| r.network.index() >= m.networks.len() || !seen.insert(r.network))
    {
        problems.push("the selection ranks a network twice, or one that does not exist".into());
    }
    let Some(info) = m.checked.get(s.space as usize) else {
        problems.push("the winning space does not exist".into());
        return;
    };
    if s.keep.len() != info.decisions.len() {
        problems.push(format!(
            "{} kept lists for {} decisions",
            s.keep.len(),
            info.decisions.len()
        ));
    }
    for ((_, d), kept) in info.decisions.iter().zip(&s.keep) {
        let ordered = kept.windows(2).all(|w| w[0] < w[1]);
        if !ordered
            || !kept.contains(&d.default)
            || kept.iter().any(|&o| o as usize >= d.options.len())
        {
            problems.push(format!(
                "decision {} keeps {kept:?} of {} options (default {})",
                d.name,
                d.options.len(),
                d.default
            ));
        }
    }
    if m.phase >= Phase::Reduced {
        let want = 1 + s
            .keep
            .iter()
            .map(|k| k.len().saturating_sub(1))
            .sum::<usize>();
        match &m.reduced {
            None => problems.push("reduced, but no reduced module".into()),
            Some(r) if r.networks.len() != want => problems.push(format!(
                "the reduced module expands to {} SSBNs, the selection keeps {want}",
                r.networks.len()
            )),
            Some(_) => {}
        }
    }
}
