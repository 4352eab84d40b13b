//! Elaboration: templates plus decisions → a concrete graph of primitives.
//!
//! The one place that gives the language its meaning; `check` uses it to build every
//! candidate where it can go, `expand` to build whole networks.

use crate::eval::{Env, Evaluator};
use crate::prims;
use spacetune_ir::*;

/// Graphs larger than this are refused (a guard against runaway inputs).
pub const MAX_NODES: usize = 200_000;
/// Block calls nest at most this deep.
const MAX_DEPTH: usize = 64;

/// An argument after evaluation.
#[derive(Clone, Debug)]
pub struct ArgValue {
    pub name: Option<String>,
    pub value: Value,
    pub span: Span,
}

/// Binds arguments to parameters (positional first, then by name). Names in `extras` are
/// accepted by name only and returned separately (a block's `out=` and `stride=`).
#[allow(clippy::type_complexity)]
pub fn bind(
    callee: &str,
    params: &[(String, Option<Value>)],
    args: Vec<ArgValue>,
    extras: &[&str],
    call_span: Span,
) -> Result<(Vec<(String, Value)>, Vec<(String, Value)>), Diagnostic> {
    let mut bound: Vec<Option<Value>> = vec![None; params.len()];
    let mut extra = Vec::new();
    let mut positional = 0;
    for arg in args {
        match &arg.name {
            None => {
                if positional >= params.len() {
                    return Err(Diagnostic::error(format!(
                        "`{callee}` takes {} positional argument{}, got more",
                        params.len(),
                        if params.len() == 1 { "" } else { "s" }
                    ))
                    .with_label(arg.span, "extra argument"));
                }
                bound[positional] = Some(arg.value);
                positional += 1;
            }
            Some(name) => {
                if let Some(i) = params.iter().position(|(p, _)| p == name) {
                    if bound[i].is_some() {
                        return Err(Diagnostic::error(format!(
                            "argument `{name}` of `{callee}` is given twice"
                        ))
                        .with_label(arg.span, "again here"));
                    }
                    bound[i] = Some(arg.value);
                } else if extras.contains(&name.as_str()) {
                    extra.push((name.clone(), arg.value));
                } else {
                    let names = params
                        .iter()
                        .map(|(p, _)| p.as_str())
                        .chain(extras.iter().copied());
                    let mut d = Diagnostic::error(format!("`{callee}` has no parameter `{name}`"))
                        .with_label(arg.span, "unknown parameter");
                    if let Some(s) = crate::suggest(name, names) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    return Err(d);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(params.len());
    for ((name, default), value) in params.iter().zip(bound) {
        match value.or_else(|| default.clone()) {
            Some(v) => out.push((name.clone(), v)),
            None => {
                return Err(
                    Diagnostic::error(format!("`{callee}` needs an argument for `{name}`"))
                        .with_label(call_span, format!("`{name}` missing")),
                )
            }
        }
    }
    Ok((out, extra))
}

/// What a block is instantiated with besides its parameters.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub out: u64,
    pub stride: u64,
}

/// Builds graphs. `named` holds the option in force for each named choice.
pub struct Builder<'m> {
    pub m: &'m Module,
    ev: Evaluator<'m>,
    pub graph: Graph,
    pub region: Region,
    /// The cell edge being built (the index of its handle in the module's edges), recorded
    /// per node.
    pub edge: Option<u32>,
    pub named: Vec<(String, Resolved)>,
    /// Every cell edge filled by a named choice: the choice, the edge's input shape and
    /// frame (for timing an option alone where it is used).
    pub edge_uses: Vec<(String, Shape, Frame)>,
    stack: Vec<Handle<BlockDef>>,
}

impl<'m> Builder<'m> {
    pub fn new(m: &'m Module, named: Vec<(String, Resolved)>) -> Self {
        Builder {
            m,
            ev: Evaluator::new(m),
            graph: Graph::default(),
            region: Region::Input,
            edge: None,
            named,
            edge_uses: Vec::new(),
            stack: Vec::new(),
        }
    }

    /// The variables every expression outside a block sees: `classes` and the value
    /// choices in force.
    pub fn global_env(&self) -> Env {
        let mut env = Env::new();
        if let Some(c) = self.m.classes {
            if let Ok(v) = self.ev.eval(c, &Env::new()) {
                env.push("classes", v);
            }
        }
        for (name, r) in &self.named {
            if let Resolved::Value(v) = r {
                env.push(name, v.clone());
            }
        }
        env
    }

    pub fn eval(&self, h: Handle<Expr>, env: &Env) -> Result<Value, Diagnostic> {
        self.ev.eval(h, env)
    }

    /// Reads a guard or condition's value as true or false.
    pub fn truth(&self, h: Handle<Expr>, v: Value) -> Result<bool, Diagnostic> {
        self.ev.truth(h, v)
    }

    pub fn input(&mut self, shape: Shape, span: Span) -> Handle<Node> {
        let h = self.graph.nodes.append(
            Node {
                op: Prim::Input,
                inputs: vec![],
            },
            span,
        );
        self.graph.shapes.push(shape);
        self.graph.regions.push(Region::Input);
        self.graph.edges.push(None);
        h
    }

    pub fn shape(&self, h: Handle<Node>) -> Shape {
        self.graph.shape(h)
    }

    pub fn node(
        &mut self,
        op: Prim,
        inputs: Vec<Handle<Node>>,
        span: Span,
    ) -> Result<Handle<Node>, Diagnostic> {
        if self.graph.nodes.len() >= MAX_NODES {
            return Err(
                Diagnostic::error(format!("the network has more than {MAX_NODES} ops"))
                    .with_label(span, "while building this"),
            );
        }
        let shapes: Vec<Shape> = inputs.iter().map(|&i| self.graph.shape(i)).collect();
        let shape = op.infer(&shapes).map_err(|msg| {
            Diagnostic::error(msg).with_label(span, format!("`{}` here", op.name()))
        })?;
        if shape.c > network::MAX_DIM || shape.h == 0 || shape.w == 0 || shape.c == 0 {
            return Err(Diagnostic::error(format!(
                "`{}` gives an unusable shape {shape}",
                op.name()
            ))
            .with_label(span, "here"));
        }
        let h = self.graph.nodes.append(Node { op, inputs }, span);
        self.graph.shapes.push(shape);
        self.graph.regions.push(self.region);
        self.graph.edges.push(self.edge);
        Ok(h)
    }

    /// Runs a pipeline of op calls on `cur`.
    pub fn pipeline(
        &mut self,
        ops: &[Handle<OpCall>],
        cur: Handle<Node>,
        env: &Env,
    ) -> Result<Handle<Node>, Diagnostic> {
        ops.iter()
            .try_fold(cur, |cur, &op| self.op_call(op, cur, env))
    }

    fn op_call(
        &mut self,
        h: Handle<OpCall>,
        cur: Handle<Node>,
        env: &Env,
    ) -> Result<Handle<Node>, Diagnostic> {
        self.op_call_framed(h, cur, env, None)
    }

    /// [`Builder::op_call`], a block taking `frame` where the call gives no `out=`/`stride=`.
    fn op_call_framed(
        &mut self,
        h: Handle<OpCall>,
        cur: Handle<Node>,
        env: &Env,
        frame: Option<Frame>,
    ) -> Result<Handle<Node>, Diagnostic> {
        let call = &self.m.ops[h];
        let span = self.m.ops.span(h);
        // A parameter may name the op to use (`act` bound to `relu6`).
        let name = match env.get(&call.name) {
            Some(Value::Sym(s)) => s.clone(),
            Some(other) => {
                return Err(Diagnostic::error(format!(
                    "`{}` is {} ({other}), not an op",
                    call.name,
                    other.type_name()
                ))
                .with_label(span, "used as an op here"))
            }
            None => call.name.clone(),
        };
        let mut args = Vec::with_capacity(call.args.len());
        for a in &call.args {
            args.push(ArgValue {
                name: a.name.clone(),
                value: self.ev.eval(a.value, env)?,
                span: self.m.exprs.span(a.value),
            });
        }
        self.invoke_framed(&name, args, span, cur, frame)
    }

    /// Calls a primitive or a block by name with evaluated arguments.
    pub fn invoke(
        &mut self,
        name: &str,
        args: Vec<ArgValue>,
        span: Span,
        cur: Handle<Node>,
    ) -> Result<Handle<Node>, Diagnostic> {
        self.invoke_framed(name, args, span, cur, None)
    }

    /// [`Builder::invoke`], a block taking `frame` where its call gives no `out=` or
    /// `stride=` (without one: its input's channels, stride 1).
    fn invoke_framed(
        &mut self,
        name: &str,
        args: Vec<ArgValue>,
        span: Span,
        cur: Handle<Node>,
        frame: Option<Frame>,
    ) -> Result<Handle<Node>, Diagnostic> {
        if let Some(sig) = prims::signature(name) {
            let params: Vec<(String, Option<Value>)> = sig
                .iter()
                .map(|(n, d)| (n.to_string(), d.map(|d| d.value())))
                .collect();
            let arg_spans: Vec<(Option<String>, Span)> =
                args.iter().map(|a| (a.name.clone(), a.span)).collect();
            let (bound, _) = bind(name, &params, args, &[], span)?;
            let input = self.shape(cur);
            let prim = prims::build(name, &bound, input).map_err(|bad| {
                // Point at the offending argument where it was written.
                let at = param_span(sig, &arg_spans, bad.param).unwrap_or(span);
                Diagnostic::error(bad.message).with_label(at, format!("in this `{name}`"))
            })?;
            return self.node(prim, vec![cur], span);
        }
        if let Some(block) = self.m.block(name) {
            let params = self.block_params(block)?;
            let (bound, extra) = bind(name, &params, args, &["out", "stride"], span)?;
            let mut frame = frame.unwrap_or(Frame {
                out: self.shape(cur).c,
                stride: 1,
            });
            for (k, v) in extra {
                let n = match v {
                    Value::Int(i) if i >= 1 && (i as u64) <= network::MAX_DIM => i as u64,
                    other => {
                        return Err(Diagnostic::error(format!(
                            "`{k}` must be a positive whole number, found {other}"
                        ))
                        .with_label(span, "in this call"))
                    }
                };
                if k == "out" {
                    frame.out = n;
                } else {
                    frame.stride = n;
                }
            }
            return self.block(block, &bound, frame, cur, span);
        }
        if name == "add" || name == "concat" {
            return Err(Diagnostic::error(format!(
                "`{name}` merges branches and cannot stand in a pipeline"
            ))
            .with_label(span, "used as an op here")
            .with_help(format!(
                "write `{name} {{ ... }} {{ ... }}` with one body per branch"
            )));
        }
        let mut d = Diagnostic::error(format!("unknown op or block `{name}`"))
            .with_label(span, "not defined");
        let names = prims::NAMES
            .iter()
            .copied()
            .chain(self.m.blocks.iter().map(|(_, b)| b.name.as_str()));
        if let Some(s) = crate::suggest(name, names) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        Err(d)
    }

    /// A block's parameters with their defaults evaluated.
    pub fn block_params(
        &self,
        block: Handle<BlockDef>,
    ) -> Result<Vec<(String, Option<Value>)>, Diagnostic> {
        let def = &self.m.blocks[block];
        def.params
            .iter()
            .map(|p| {
                Ok((
                    p.name.clone(),
                    p.default
                        .map(|d| self.ev.eval(d, &Env::new()))
                        .transpose()?,
                ))
            })
            .collect()
    }

    /// Instantiates a block on `cur` with bound parameters.
    pub fn block(
        &mut self,
        block: Handle<BlockDef>,
        bound: &[(String, Value)],
        frame: Frame,
        cur: Handle<Node>,
        span: Span,
    ) -> Result<Handle<Node>, Diagnostic> {
        let def = &self.m.blocks[block];
        if self.stack.contains(&block) {
            return Err(
                Diagnostic::error(format!("block `{}` calls itself", def.name))
                    .with_label(span, "recursive call")
                    .with_label(self.m.blocks.span(block), "in this block")
                    .with_help("blocks cannot be recursive; unroll it with `for`"),
            );
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(Diagnostic::error("block calls nest too deeply").with_label(span, "here"));
        }
        let mut env = self
            .global_env()
            .with("in", Value::Int(self.shape(cur).c as i64))
            .with("out", Value::Int(frame.out as i64))
            .with("stride", Value::Int(frame.stride as i64));
        for (name, v) in bound {
            env.push(name, v.clone());
        }
        self.stack.push(block);
        let result = self.stmts(&def.body, cur, &mut env, cur);
        self.stack.pop();
        result
    }

    fn stmts(
        &mut self,
        body: &[Handle<Stmt>],
        mut cur: Handle<Node>,
        env: &mut Env,
        block_input: Handle<Node>,
    ) -> Result<Handle<Node>, Diagnostic> {
        for &s in body {
            cur = self.stmt(s, cur, env, block_input)?;
        }
        Ok(cur)
    }

    fn stmt(
        &mut self,
        h: Handle<Stmt>,
        cur: Handle<Node>,
        env: &mut Env,
        block_input: Handle<Node>,
    ) -> Result<Handle<Node>, Diagnostic> {
        let stmt = &self.m.stmts[h];
        let span = self.m.stmts.span(h);
        if let Some(g) = stmt.guard {
            let v = self.ev.eval(g, env)?;
            if !self.ev.truth(g, v)? {
                return Ok(cur);
            }
        }
        match &stmt.kind {
            StmtKind::Pipe(ops) => self.pipeline(ops, cur, env),
            StmtKind::Residual => {
                let (a, b) = (self.shape(block_input), self.shape(cur));
                if a != b {
                    return Err(Diagnostic::error(format!("residual connection changes the shape: the block's input is {a}, its output {b}"))
                        .with_label(span, "cannot add these")
                        .with_help("guard it: `residual if stride == 1 and in == out`"));
                }
                self.node(Prim::Add, vec![cur, block_input], span)
            }
            StmtKind::Merge { kind, branches } => {
                let mut outs = Vec::with_capacity(branches.len());
                for branch in branches {
                    let mut scope = env.clone();
                    outs.push(self.stmts(branch, cur, &mut scope, block_input)?);
                }
                let op = match kind {
                    MergeKind::Add => Prim::Add,
                    MergeKind::Concat => Prim::Concat,
                };
                self.node(op, outs, span)
            }
            StmtKind::For {
                index,
                var,
                list,
                body,
            } => {
                let items = match self.ev.eval(*list, env)? {
                    Value::List(items) => items,
                    other => {
                        return Err(Diagnostic::error(format!(
                            "`for` needs a list, found {}",
                            other.type_name()
                        ))
                        .with_label(self.m.exprs.span(*list), "not a list"))
                    }
                };
                let mut cur = cur;
                for (i, item) in items.into_iter().enumerate() {
                    let mut scope = env.clone();
                    if let Some(index) = index {
                        scope.push(index, Value::Int(i as i64));
                    }
                    scope.push(var, item);
                    cur = self.stmts(body, cur, &mut scope, block_input)?;
                }
                Ok(cur)
            }
        }
    }

    /// Instantiates the op of a cell edge on `cur`: as [`Builder::resolved`], except that on
    /// a reducing edge (`frame.stride` > 1, an edge out of a reduction cell's input) a
    /// primitive takes the stride itself — a pool or conv written with stride 1 strides, and
    /// `zero` gives the zeros of the reduced shape. A block reads the stride as `stride`.
    pub fn edge_op(
        &mut self,
        r: &Resolved,
        frame: Frame,
        cur: Handle<Node>,
        span: Span,
    ) -> Result<Handle<Node>, Diagnostic> {
        let Resolved::Call { name, args } = r else {
            return self.resolved(r, frame, cur, span);
        };
        if frame.stride == 1 || self.m.block(name).is_some() {
            return self.resolved(r, frame, cur, span);
        }
        let stride = Value::Int(frame.stride as i64);
        if prims::canonical(name) == "zero" {
            // Sampling every stride-th pixel gives the reduced shape; pruning turns the pair
            // into one constant, so nothing is computed for it.
            let pool = Prim::AvgPool {
                k: 1,
                stride: frame.stride,
                pad: 0,
            };
            let sampled = self.node(pool, vec![cur], span)?;
            return self.node(Prim::Zero, vec![sampled], span);
        }
        let args: Vec<(String, Value)> = args
            .iter()
            .map(|(n, v)| match (n.as_str(), v) {
                ("stride", Value::Int(1)) => (n.clone(), stride.clone()),
                _ => (n.clone(), v.clone()),
            })
            .collect();
        let strided = Resolved::Call {
            name: name.clone(),
            args,
        };
        self.resolved(&strided, frame, cur, span)
    }

    /// A cell edge's pipeline on `cur`. Its expressions see `in`, `out` and `stride` (the
    /// cell's channels and the edge's stride) besides the globals; an edge of one call is
    /// instantiated as an option is ([`Builder::edge_op`]), so it strides the same way.
    pub fn edge_pipeline(
        &mut self,
        ops: &[Handle<OpCall>],
        cur: Handle<Node>,
        frame: Frame,
        env: &Env,
    ) -> Result<Handle<Node>, Diagnostic> {
        let env = env
            .clone()
            .with("in", Value::Int(self.shape(cur).c as i64))
            .with("out", Value::Int(frame.out as i64))
            .with("stride", Value::Int(frame.stride as i64));
        match ops {
            [only] if prims::signature(&self.m.ops[*only].name).is_some() => {
                let offer = crate::resolve::offer(self, &Offer::Call(*only), &env)?;
                self.edge_op(&offer.resolved, frame, cur, self.m.ops.span(*only))
            }
            [only] => self.op_call_framed(*only, cur, &env, Some(frame)),
            _ => self.pipeline(ops, cur, &env),
        }
    }

    /// Instantiates a resolved candidate (a slot's or an edge's option) on `cur`.
    pub fn resolved(
        &mut self,
        r: &Resolved,
        frame: Frame,
        cur: Handle<Node>,
        span: Span,
    ) -> Result<Handle<Node>, Diagnostic> {
        match r {
            Resolved::Call { name, args } => {
                if let Some(block) = self.m.block(name) {
                    self.block(block, args, frame, cur, span)
                } else {
                    let args = args
                        .iter()
                        .map(|(n, v)| ArgValue {
                            name: Some(n.clone()),
                            value: v.clone(),
                            span,
                        })
                        .collect();
                    self.invoke(name, args, span, cur)
                }
            }
            Resolved::Value(v) => Err(Diagnostic::error(format!(
                "the value {v} is used where an op is expected"
            ))
            .with_label(span, "here")),
        }
    }
}

fn param_span(sig: prims::Params, args: &[(Option<String>, Span)], param: &str) -> Option<Span> {
    let position = sig.iter().position(|(n, _)| *n == param)?;
    args.iter()
        .enumerate()
        .find(|(i, (name, _))| name.as_deref() == Some(param) || (name.is_none() && *i == position))
        .map(|(_, (_, span))| *span)
}
