//! Walking the skeleton: stem, searchable layers, cells, reductions and head, in order.
//! What fills a searchable layer, and a cell edge whose op is a named choice, is up to the
//! caller (a [`LayerHook`]): `expand` fills them with one option each, the supernet with all.

use crate::elaborate::{Builder, Frame};
use crate::eval::Env;
use spacetune_ir::*;

/// Searchable layers are limited to this many (a guard against runaway inputs).
pub const MAX_LAYERS: usize = 1024;

/// Fills searchable layer `layer` given its input and frame; returns its output.
pub trait LayerHook {
    fn layer(
        &mut self,
        b: &mut Builder,
        layer: u32,
        cur: Handle<Node>,
        frame: Frame,
        part: Span,
    ) -> Result<Handle<Node>, Diagnostic>;

    /// Fills a cell edge whose op is the named choice `name`, in force as `option`.
    fn edge(
        &mut self,
        b: &mut Builder,
        name: &str,
        option: &Resolved,
        from: Handle<Node>,
        frame: Frame,
        span: Span,
    ) -> Result<Handle<Node>, Diagnostic> {
        b.edge_uses.push((name.to_string(), b.shape(from), frame));
        b.edge_op(option, frame, from, span)
    }
}

/// Fills layer i with `chosen[i]`.
pub struct FillLayers<'d> {
    pub chosen: Vec<&'d Alternative>,
}

impl LayerHook for FillLayers<'_> {
    fn layer(
        &mut self,
        b: &mut Builder,
        layer: u32,
        cur: Handle<Node>,
        frame: Frame,
        _: Span,
    ) -> Result<Handle<Node>, Diagnostic> {
        let option = self.chosen[layer as usize];
        b.resolved(&option.resolved, frame, cur, option.span)
    }
}

/// The shape a layer must produce: `out` channels, spatial size divided by the stride
/// (rounded up, as "same" padding does).
pub fn expected(input: Shape, frame: Frame) -> Shape {
    Shape::new(
        frame.out,
        input.h.div_ceil(frame.stride),
        input.w.div_ceil(frame.stride),
    )
}

fn int_in(
    b: &Builder,
    h: Handle<Expr>,
    env: &Env,
    what: &str,
    min: i64,
    max: u64,
) -> Result<u64, Diagnostic> {
    let span = b.m.exprs.span(h);
    let v = b.eval(h, env)?;
    as_int(&v, what, min, max).map_err(|msg| Diagnostic::error(msg).with_label(span, "here"))
}

fn as_int(v: &Value, what: &str, min: i64, max: u64) -> Result<u64, String> {
    let n = match v {
        Value::Int(i) => *i as f64,
        // Channel counts computed with multipliers round to the nearest integer.
        Value::Float(f) if what == "out" => f.round(),
        other => return Err(format!("`{what}` must be a whole number, found {other}")),
    };
    if n < min as f64 || n > max as f64 {
        return Err(format!(
            "`{what}` is out of range: {} (allowed {min} to {max})",
            crate::eval::number(n)
        ));
    }
    Ok(n as u64)
}

fn list_of_ints(
    b: &Builder,
    h: Handle<Expr>,
    env: &Env,
    what: &str,
    min: i64,
    max: u64,
) -> Result<Vec<u64>, Diagnostic> {
    let span = b.m.exprs.span(h);
    match b.eval(h, env)? {
        Value::List(items) => items
            .iter()
            .map(|v| {
                as_int(v, what, min, max)
                    .map_err(|msg| Diagnostic::error(msg).with_label(span, "in this list"))
            })
            .collect(),
        other => Err(Diagnostic::error(format!(
            "`{what}` must be a list, found {}",
            other.type_name()
        ))
        .with_label(span, "not a list")),
    }
}

/// The searchable layers of the skeleton: (out, stride, span of the part).
pub fn layers(b: &Builder) -> Result<Vec<(u64, u64, Span)>, Diagnostic> {
    let m = b.m;
    let env = b.global_env();
    let mut layers = Vec::new();
    let Some(sk) = &m.skeleton else {
        return Ok(layers);
    };
    for &p in &sk.parts {
        let span = m.parts.span(p);
        match &m.parts[p] {
            Part::Search { out, stride } => {
                let outs = list_of_ints(b, *out, &env, "out", 1, network::MAX_DIM)?;
                let strides = list_of_ints(b, *stride, &env, "stride", 1, 64)?;
                if outs.len() != strides.len() {
                    return Err(Diagnostic::error(format!(
                        "`out` lists {} layers but `stride` lists {}",
                        outs.len(),
                        strides.len()
                    ))
                    .with_label(m.exprs.span(*stride), "stride list")
                    .with_label(m.exprs.span(*out), "out list")
                    .with_help("give one stride per layer"));
                }
                layers.extend(outs.into_iter().zip(strides).map(|(o, s)| (o, s, span)));
            }
            Part::Stage {
                out,
                repeat,
                stride,
            } => {
                let o = int_in(b, *out, &env, "out", 1, network::MAX_DIM)?;
                let n = int_in(b, *repeat, &env, "repeat", 1, MAX_LAYERS as u64)?;
                let s = int_in(b, *stride, &env, "stride", 1, 64)?;
                layers.extend((0..n).map(|i| (o, if i == 0 { s } else { 1 }, span)));
            }
            Part::Fixed { .. } | Part::Cells { .. } => {}
        }
        if layers.len() > MAX_LAYERS {
            return Err(Diagnostic::error(format!(
                "the skeleton has more than {MAX_LAYERS} searchable layers"
            ))
            .with_label(span, "here"));
        }
    }
    Ok(layers)
}

/// Builds the whole network into `b`, returning the output node.
pub fn walk(b: &mut Builder, hook: &mut dyn LayerHook) -> Result<Handle<Node>, Diagnostic> {
    let m = b.m;
    let Some(input) = m.input else {
        return Err(Diagnostic::error("the file has no `input` declaration")
            .with_label(m.skeleton_span, "skeleton here")
            .with_help("declare the input shape, e.g. `input 3x32x32`"));
    };
    let Some(sk) = &m.skeleton else {
        return Err(Diagnostic::error("the file has no `skeleton`")
            .with_label(input.span, "input declared here")
            .with_help("add `skeleton { stem ... search ... head ... }`"));
    };
    let layer_plan = layers(b)?;
    let env = b.global_env();
    let mut cur = b.input(input.shape, input.span);
    // The output of every part so far (each fixed pipeline, layer and cell): a cell with k
    // inputs reads the last k.
    let mut history: Vec<Handle<Node>> = Vec::new();
    let (mut layer, mut fixed, mut cell) = (0usize, 0u32, 0u32);
    for &p in &sk.parts {
        let span = m.parts.span(p);
        match &m.parts[p] {
            Part::Fixed { ops, .. } => {
                b.region = Region::Fixed(fixed);
                fixed += 1;
                cur = b.pipeline(ops, cur, &env)?;
                history.push(cur);
            }
            Part::Search { .. } | Part::Stage { .. } => {
                while layer < layer_plan.len() && layer_plan[layer].2 == span {
                    let (out, stride, _) = layer_plan[layer];
                    b.region = Region::Layer(layer as u32);
                    cur = hook.layer(b, layer as u32, cur, Frame { out, stride }, span)?;
                    history.push(cur);
                    layer += 1;
                }
            }
            Part::Cells {
                cell: name,
                out,
                repeat,
                stride,
            } => {
                let Some(def) = m.cell(name) else {
                    let mut d = Diagnostic::error(format!("unknown cell `{name}`"))
                        .with_label(span, "used here");
                    if let Some(s) =
                        crate::suggest(name, m.cells.iter().map(|(_, c)| c.name.as_str()))
                    {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    return Err(d);
                };
                let c = int_in(b, *out, &env, "out", 1, network::MAX_DIM)?;
                let n = int_in(b, *repeat, &env, "repeat", 1, MAX_LAYERS as u64)?;
                let s = int_in(b, *stride, &env, "stride", 1, 64)?;
                let order = cell_order(m, def)?;
                for i in 0..n {
                    b.region = Region::Cell(cell);
                    cell += 1;
                    let inputs = last_outputs(&history, cur, m.cells[def].inputs as usize);
                    let at = CellAt {
                        out: c,
                        stride: if i == 0 { s } else { 1 },
                        part: span,
                    };
                    cur = build_cell(b, hook, def, &order, &inputs, at, &env)?;
                    history.push(cur);
                }
            }
        }
    }
    Ok(cur)
}

/// The last `k` of the parts' outputs, oldest first; where fewer parts came before, the
/// earliest repeats (DARTS's first cell reads the stem twice), and with none, the input.
fn last_outputs(history: &[Handle<Node>], input: Handle<Node>, k: usize) -> Vec<Handle<Node>> {
    let seen = if history.is_empty() {
        std::slice::from_ref(&input)
    } else {
        history
    };
    (0..k)
        .map(|i| seen[(seen.len() + i).saturating_sub(k)])
        .collect()
}

/// The cell's nodes in an order where every edge goes forward; errors on cycles, on edges
/// into an input node, on nodes without inputs, on an output naming a node the cell does
/// not have, and on nodes whose value never reaches the output.
pub fn cell_order(m: &Module, cell: Handle<CellDef>) -> Result<Vec<u32>, Diagnostic> {
    let def = &m.cells[cell];
    let cspan = m.cells.span(cell);
    if def.edges.is_empty() {
        return Err(
            Diagnostic::error(format!("cell `{}` has no edges", def.name))
                .with_label(cspan, "empty cell"),
        );
    }
    let k = def.inputs;
    let mut nodes: Vec<u32> = (0..k).collect();
    for &e in &def.edges {
        let edge = &m.edges[e];
        if edge.to < k {
            let what = if k == 1 {
                "node 0, the cell's input".to_string()
            } else {
                format!(
                    "node {}, one of the cell's {k} inputs (0 to {})",
                    edge.to,
                    k - 1
                )
            };
            return Err(
                Diagnostic::error(format!("an edge cannot lead into {what}"))
                    .with_label(m.edges.span(e), "edge into an input"),
            );
        }
        if edge.from == edge.to {
            return Err(Diagnostic::error(format!(
                "cycle in cell `{}`: node {} feeds itself",
                def.name, edge.to
            ))
            .with_label(m.edges.span(e), "self loop"));
        }
        nodes.extend([edge.from, edge.to]);
    }
    nodes.sort_unstable();
    nodes.dedup();
    // Kahn's algorithm; ties broken by node number so the order is deterministic.
    let mut indegree: Vec<(u32, usize)> = nodes
        .iter()
        .map(|&n| (n, def.edges.iter().filter(|&&e| m.edges[e].to == n).count()))
        .collect();
    if let Some(&(n, _)) = indegree.iter().find(|&&(n, d)| n >= k && d == 0) {
        let from = def.edges.iter().find(|&&e| m.edges[e].from == n).copied();
        let at = from.map_or(cspan, |e| m.edges.span(e));
        let inputs = if k == 1 {
            "0 (the cell's input)".to_string()
        } else {
            format!("the cell's inputs (0 to {})", k - 1)
        };
        return Err(Diagnostic::error(format!(
            "node {n} of cell `{}` has no incoming edge",
            def.name
        ))
        .with_label(at, format!("node {n} is used here"))
        .with_help(format!(
            "every node but {inputs} needs at least one edge into it"
        )));
    }
    let mut order = Vec::new();
    while let Some(pos) = indegree.iter().position(|&(_, d)| d == 0) {
        let (n, _) = indegree.remove(pos);
        order.push(n);
        for &e in &def.edges {
            if m.edges[e].from == n {
                if let Some(entry) = indegree.iter_mut().find(|(x, _)| *x == m.edges[e].to) {
                    entry.1 -= 1;
                }
            }
        }
    }
    if !indegree.is_empty() {
        let stuck: Vec<String> = indegree.iter().map(|(n, _)| n.to_string()).collect();
        let e = def
            .edges
            .iter()
            .find(|&&e| indegree.iter().any(|(n, _)| *n == m.edges[e].to))
            .copied();
        return Err(Diagnostic::error(format!(
            "cycle in cell `{}` through nodes {}",
            def.name,
            stuck.join(", ")
        ))
        .with_label(
            e.map_or(cspan, |e| m.edges.span(e)),
            "this edge closes a cycle",
        )
        .with_help("cell edges must form a DAG"));
    }
    let outputs = cell_outputs(m, cell, &nodes)?;
    // Every node must reach the output: walk the edges backwards from it.
    let mut live: Vec<u32> = outputs.clone();
    for &n in order.iter().rev() {
        if live.contains(&n) {
            for &e in &def.edges {
                if m.edges[e].to == n && !live.contains(&m.edges[e].from) {
                    live.push(m.edges[e].from);
                }
            }
        }
    }
    if let Some(&dead) = nodes.iter().find(|n| !live.contains(n)) {
        let leaving = def.edges.iter().find(|&&e| m.edges[e].from == dead);
        let into = def.edges.iter().find(|&&e| m.edges[e].to == dead);
        let at = leaving.or(into).map_or(cspan, |&e| m.edges.span(e));
        let what = if dead < k { "input node" } else { "node" };
        return Err(Diagnostic::error(format!(
            "{what} {dead} of cell `{}` never reaches the cell's output",
            def.name
        ))
        .with_label(at, format!("node {dead} here"))
        .with_help(match &def.output {
            Some(_) => "add it to the `output`, or an edge from it toward a node that is",
            None => "add an edge from it toward the highest node, or declare an `output`",
        }));
    }
    Ok(order)
}

/// The nodes a cell hands on: its declared output, or its highest node.
fn cell_outputs(m: &Module, cell: Handle<CellDef>, nodes: &[u32]) -> Result<Vec<u32>, Diagnostic> {
    let def = &m.cells[cell];
    let Some(out) = &def.output else {
        return Ok(nodes.iter().max().copied().into_iter().collect());
    };
    let mut seen = Vec::new();
    for &n in &out.nodes {
        if !nodes.contains(&n) {
            return Err(Diagnostic::error(format!(
                "the output of cell `{}` names node {n}, which the cell does not have",
                def.name
            ))
            .with_label(out.span, format!("node {n}"))
            .with_help(format!(
                "the cell's nodes are {}",
                nodes
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if seen.contains(&n) {
            return Err(Diagnostic::error(format!(
                "the output of cell `{}` names node {n} twice",
                def.name
            ))
            .with_label(out.span, "here"));
        }
        seen.push(n);
    }
    Ok(seen)
}

/// The named choice an edge refers to, if its op is a bare name of one.
/// Every cell edge (by its handle's index, as [`Builder::edge`] records it) filled by the
/// named choice `name`.
pub fn choice_edges(m: &Module, name: &str) -> std::collections::BTreeSet<u32> {
    let mut out = std::collections::BTreeSet::new();
    for (e, edge) in m.edges.iter() {
        if let [only] = edge.op.as_slice() {
            let call = &m.ops[*only];
            if !call.parens && call.args.is_empty() && call.name == name {
                out.insert(e.index() as u32);
            }
        }
    }
    out
}

pub fn edge_choice<'a>(
    m: &Module,
    edge: &Edge,
    named: &'a [(String, Resolved)],
) -> Option<(&'a str, &'a Resolved)> {
    match edge.op.as_slice() {
        [only] => {
            let call = &m.ops[*only];
            if call.parens || !call.args.is_empty() {
                return None;
            }
            named
                .iter()
                .find(|(n, _)| *n == call.name)
                .map(|(n, r)| (n.as_str(), r))
        }
        _ => None,
    }
}

/// Where a cell instance stands: its nodes' channels, the stride of the edges out of its
/// inputs, and the skeleton part it belongs to.
#[derive(Clone, Copy)]
struct CellAt {
    out: u64,
    stride: u64,
    part: Span,
}

fn build_cell(
    b: &mut Builder,
    hook: &mut dyn LayerHook,
    cell: Handle<CellDef>,
    order: &[u32],
    inputs: &[Handle<Node>],
    at: CellAt,
    env: &Env,
) -> Result<Handle<Node>, Diagnostic> {
    let m = b.m;
    let def = &m.cells[cell];
    let k = def.inputs;
    // The cell works at the resolution of the part right before it.
    let here = b.shape(*inputs.last().expect("a cell has an input"));
    let mut values: Vec<(u32, Handle<Node>)> = Vec::new();
    for (i, &x) in inputs.iter().enumerate() {
        let v = if k == 1 {
            x
        } else {
            preprocess(b, cell, i as u32, x, here, at)?
        };
        values.push((i as u32, v));
    }
    let node_shape = Shape::new(
        at.out,
        here.h.div_ceil(at.stride),
        here.w.div_ceil(at.stride),
    );
    for &n in order.iter().filter(|&&n| n >= k) {
        let mut incoming = Vec::new();
        for &e in def.edges.iter().filter(|&&e| m.edges[e].to == n) {
            let edge = &m.edges[e];
            let from = values
                .iter()
                .find(|(v, _)| *v == edge.from)
                .map(|(_, h)| *h)
                .expect("topological order");
            let span = m.edges.span(e);
            let frame = Frame {
                out: at.out,
                stride: if edge.from < k { at.stride } else { 1 },
            };
            let named = b.named.clone();
            b.edge = Some(e.index() as u32);
            let result = match edge_choice(m, edge, &named) {
                Some((name, r)) => hook.edge(b, name, r, from, frame, span),
                None => b.edge_pipeline(&edge.op, from, frame, env),
            };
            b.edge = None;
            let y = result?;
            let got = b.shape(y);
            if got != node_shape {
                return Err(edge_misfit(m, cell, edge, span, got, node_shape, frame));
            }
            incoming.push(y);
        }
        let value = if incoming.len() == 1 {
            incoming[0]
        } else {
            b.node(Prim::Add, incoming, m.cells.span(cell))?
        };
        values.push((n, value));
    }
    let value = |n: u32| {
        values
            .iter()
            .find(|(v, _)| *v == n)
            .map(|(_, h)| *h)
            .expect("cell_order checked the output's nodes")
    };
    match &def.output {
        None => Ok(values
            .iter()
            .max_by_key(|(n, _)| *n)
            .map(|(_, h)| *h)
            .expect("a cell has nodes")),
        Some(out) => {
            let nodes: Vec<Handle<Node>> = out.nodes.iter().map(|&n| value(n)).collect();
            match (out.merge, nodes.as_slice()) {
                (_, [one]) => Ok(*one),
                (Some(MergeKind::Add) | None, _) => b.node(Prim::Add, nodes, out.span),
                (Some(MergeKind::Concat), _) => b.node(Prim::Concat, nodes, out.span),
            }
        }
    }
}

/// Why an edge's result is not a node of its cell, with what to do about it.
fn edge_misfit(
    m: &Module,
    cell: Handle<CellDef>,
    edge: &Edge,
    span: Span,
    got: Shape,
    want: Shape,
    frame: Frame,
) -> Diagnostic {
    let name = &m.cells[cell].name;
    let d = Diagnostic::error(format!(
        "edge {} -> {} of cell `{name}` gives {got}, but the cell's nodes are {want}",
        edge.from, edge.to
    ))
    .with_label(span, format!("gives {got}"));
    if frame.stride > 1 && (got.h, got.w) != (want.h, want.w) {
        d.with_note(format!(
            "the edges out of a reduction cell's inputs stride by {}",
            frame.stride
        ))
        .with_help(
            "a pool or conv takes the stride itself and a block reads it as `stride`; `skip` \
             cannot stride: use a block that reduces when `stride > 1` (DARTS: a factorised \
             reduction)",
        )
    } else {
        d.with_help("an edge's op must give the cell's `out` channels (a block reads `out`)")
    }
}

/// DARTS's preprocessing of input `i` (shape of `x`) to the cell's channels at resolution
/// `here`: a 1×1 ReLU-conv-BN, or a factorised reduction where the input is twice as large
/// (its part came before a reduction).
fn preprocess(
    b: &mut Builder,
    cell: Handle<CellDef>,
    i: u32,
    x: Handle<Node>,
    here: Shape,
    at: CellAt,
) -> Result<Handle<Node>, Diagnostic> {
    let m = b.m;
    let def = &m.cells[cell];
    let span = def.inputs_span.unwrap_or(m.cells.span(cell));
    let s = b.shape(x);
    let conv = |out: u64, stride: u64| Prim::Conv {
        out,
        k: 1,
        stride,
        pad: 0,
        groups: 1,
        dilation: 1,
    };
    let relu = b.node(Prim::Relu, vec![x], span)?;
    let y = if (s.h, s.w) == (here.h, here.w) {
        b.node(conv(at.out, 1), vec![relu], span)?
    } else if (s.h.div_ceil(2), s.w.div_ceil(2)) == (here.h, here.w) {
        if !at.out.is_multiple_of(2) {
            return Err(Diagnostic::error(format!(
                "input node {i} of cell `{}` needs a factorised reduction, which halves \
                 `out` = {} into two convs",
                def.name, at.out
            ))
            .with_label(at.part, "an odd `out`")
            .with_help("give the cells an even `out`"));
        }
        let a = b.node(conv(at.out / 2, 2), vec![relu], span)?;
        let shifted = b.node(Prim::Shift, vec![relu], span)?;
        let c = b.node(conv(at.out / 2, 2), vec![shifted], span)?;
        b.node(Prim::Concat, vec![a, c], span)?
    } else {
        return Err(Diagnostic::error(format!(
            "input node {i} of cell `{}` is {s}, but the cell works at {}x{}",
            def.name, here.h, here.w
        ))
        .with_label(at.part, "this cell")
        .with_note(
            "an input from before one reduction (twice the size) is reduced by the compiler; \
             one from further back is not",
        )
        .with_help("read fewer inputs, or reduce at most once between cells"));
    };
    b.node(Prim::BatchNorm, vec![y], span)
}
