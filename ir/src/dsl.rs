//! Prints a module's templates back as `.space` source in one canonical layout, so that
//! print → parse → print is stable. Imported blocks and cells are printed inline, which makes
//! the output stand alone.

use crate::arena::Handle;
use crate::template::*;
use crate::value::format_float;
use crate::Module;
use std::fmt::Write;

const INDENT: &str = "    ";

/// The whole module as DSL text.
pub fn print_module(module: &Module) -> String {
    let mut p = Printer {
        m: module,
        out: String::new(),
    };
    p.module();
    p.out
}

/// One expression as DSL text.
pub fn print_expr(module: &Module, expr: Handle<Expr>) -> String {
    let mut p = Printer {
        m: module,
        out: String::new(),
    };
    p.expr(expr, 0);
    p.out
}

/// One op call as DSL text.
pub fn print_call(module: &Module, call: Handle<OpCall>) -> String {
    let mut p = Printer {
        m: module,
        out: String::new(),
    };
    p.call(call);
    p.out
}

struct Printer<'m> {
    m: &'m Module,
    out: String,
}

/// Precedence levels of the printer; must agree with the grammar's levels.
const PREC_COND: u8 = 0;
const PREC_NOT: u8 = 3;
const PREC_UNARY: u8 = 7;

impl Printer<'_> {
    fn module(&mut self) {
        let m = self.m;
        let mut sections: Vec<String> = Vec::new();
        let mut header = String::new();
        if let Some(input) = m.input {
            let _ = writeln!(header, "input {}", input.shape);
        }
        if let Some(classes) = m.classes {
            let _ = writeln!(header, "classes {}", print_expr(m, classes));
        }
        if !m.select.is_empty() {
            let knobs: Vec<String> = m
                .select
                .iter()
                .map(|k| format!("{}={}", k.name, k.text))
                .collect();
            let _ = writeln!(header, "select {}", knobs.join(" "));
        }
        for (_, l) in m.lets.iter() {
            let _ = writeln!(header, "let {} = {}", l.name, print_expr(m, l.value));
        }
        if !header.is_empty() {
            sections.push(header);
        }
        for (h, _) in m.blocks.iter() {
            sections.push(self.sub(|p| p.block(h)));
        }
        for (h, _) in m.cells.iter() {
            sections.push(self.sub(|p| p.cell(h)));
        }
        for (h, _) in m.spaces.iter() {
            sections.push(self.sub(|p| p.space(h)));
        }
        if m.skeleton.is_some() {
            sections.push(self.sub(|p| p.skeleton()));
        }
        self.out = sections.join("\n");
    }

    fn sub(&self, f: impl FnOnce(&mut Printer)) -> String {
        let mut p = Printer {
            m: self.m,
            out: String::new(),
        };
        f(&mut p);
        p.out
    }

    fn line(&mut self, depth: usize, text: &str) {
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn block(&mut self, h: Handle<BlockDef>) {
        let b = &self.m.blocks[h];
        let params: Vec<String> = b
            .params
            .iter()
            .map(|p| match p.default {
                Some(d) => format!("{}={}", p.name, print_expr(self.m, d)),
                None => p.name.clone(),
            })
            .collect();
        self.line(0, &format!("block {}({}) {{", b.name, params.join(", ")));
        self.stmts(&b.body, 1);
        self.line(0, "}");
    }

    fn stmts(&mut self, body: &[Handle<Stmt>], depth: usize) {
        for &s in body {
            self.stmt(s, depth);
        }
    }

    fn guard(&self, guard: Option<Handle<Expr>>) -> String {
        guard.map_or(String::new(), |g| format!(" if {}", print_expr(self.m, g)))
    }

    fn stmt(&mut self, h: Handle<Stmt>, depth: usize) {
        let s = &self.m.stmts[h];
        let guard = self.guard(s.guard);
        match &s.kind {
            StmtKind::Pipe(ops) => {
                let text = self.pipeline(ops);
                self.line(depth, &format!("{text}{guard}"));
            }
            StmtKind::Residual => self.line(depth, &format!("residual{guard}")),
            StmtKind::Merge { kind, branches } => {
                self.line(depth, &format!("{} {{", kind.keyword()));
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        self.line(depth, "} {");
                    }
                    self.stmts(branch, depth + 1);
                }
                self.line(depth, &format!("}}{guard}"));
            }
            StmtKind::For {
                index,
                var,
                list,
                body,
            } => {
                let vars = match index {
                    Some(i) => format!("{i}, {var}"),
                    None => var.clone(),
                };
                let list = print_expr(self.m, *list);
                self.line(depth, &format!("for {vars} in {list} {{"));
                self.stmts(body, depth + 1);
                self.line(depth, &format!("}}{guard}"));
            }
        }
    }

    fn pipeline(&self, ops: &[Handle<OpCall>]) -> String {
        ops.iter()
            .map(|&o| print_call(self.m, o))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    fn call(&mut self, h: Handle<OpCall>) {
        let c = &self.m.ops[h];
        self.out.push_str(&c.name);
        if c.parens || !c.args.is_empty() {
            self.out.push('(');
            for (i, a) in c.args.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                if let Some(name) = &a.name {
                    self.out.push_str(name);
                    self.out.push('=');
                }
                self.expr(a.value, 0);
            }
            self.out.push(')');
        }
    }

    fn cell(&mut self, h: Handle<CellDef>) {
        let c = &self.m.cells[h];
        self.line(0, &format!("cell {} {{", c.name));
        if c.inputs != 1 {
            self.line(1, &format!("inputs {}", c.inputs));
        }
        for &e in &c.edges {
            let edge = &self.m.edges[e];
            let op = self.pipeline(&edge.op);
            self.line(1, &format!("edge {} -> {} = {op}", edge.from, edge.to));
        }
        if let Some(out) = &c.output {
            let nodes: Vec<String> = out.nodes.iter().map(|n| n.to_string()).collect();
            let merge = out
                .merge
                .map_or(String::new(), |k| format!("{} ", k.keyword()));
            self.line(1, &format!("output {merge}{}", nodes.join(", ")));
        }
        self.line(0, "}");
    }

    fn offer(&self, offer: &Offer) -> String {
        match *offer {
            Offer::Call(c) => print_call(self.m, c),
            Offer::Value(v) => print_expr(self.m, v),
        }
    }

    fn entries(&mut self, entries: &[Handle<CandidateEntry>], depth: usize) {
        for &e in entries {
            let entry = &self.m.entries[e];
            let mut text = self.offer(&entry.offer);
            if !entry.grid.is_empty() {
                let grid: Vec<String> = entry
                    .grid
                    .iter()
                    .map(|(name, list)| format!("{name} in {}", print_expr(self.m, *list)))
                    .collect();
                let _ = write!(text, " for {}", grid.join(", "));
            }
            text.push_str(&self.guard(entry.guard));
            self.line(depth, &text);
        }
    }

    fn space(&mut self, h: Handle<Space>) {
        let s = &self.m.spaces[h];
        self.line(0, &format!("space {} {{", s.name));
        if !s.candidates.is_empty() {
            self.line(1, "candidates {");
            self.entries(&s.candidates, 2);
            self.line(1, "}");
        }
        if let Some(d) = s.default {
            let text = format!("default {}", print_call(self.m, d));
            self.line(1, &text);
        }
        for l in &s.layers {
            let text = format!("layer {} {{", print_expr(self.m, l.layer));
            self.line(1, &text);
            self.entries(&l.entries, 2);
            self.line(1, "}");
        }
        for c in &s.choices {
            self.line(1, &format!("choice {} {{", c.names.join(", ")));
            self.entries(&c.entries, 2);
            let text = format!("}} default {}", self.offer(&c.default));
            self.line(1, &text);
        }
        self.line(0, "}");
    }

    fn skeleton(&mut self) {
        let Some(sk) = &self.m.skeleton else { return };
        self.line(0, "skeleton {");
        for &part in &sk.parts {
            let e = |h| print_expr(self.m, h);
            let text = match &self.m.parts[part] {
                Part::Fixed { role, ops } => format!("{} {}", role.keyword(), self.pipeline(ops)),
                Part::Search { out, stride } => {
                    format!("search out={} stride={}", e(*out), e(*stride))
                }
                Part::Stage {
                    out,
                    repeat,
                    stride,
                } => {
                    format!(
                        "stage out={} repeat={} stride={}",
                        e(*out),
                        e(*repeat),
                        e(*stride)
                    )
                }
                Part::Cells {
                    cell,
                    out,
                    repeat,
                    stride,
                } => {
                    let mut text = format!("cells {cell} out={} repeat={}", e(*out), e(*repeat));
                    if self.m.exprs[*stride] != Expr::Int(1) {
                        let _ = write!(text, " stride={}", e(*stride));
                    }
                    text
                }
            };
            self.line(1, &text);
        }
        self.line(0, "}");
    }

    fn expr(&mut self, h: Handle<Expr>, min_prec: u8) {
        let m = self.m;
        let prec = expr_prec(&m.exprs[h]);
        let paren = prec < min_prec;
        if paren {
            self.out.push('(');
        }
        match &m.exprs[h] {
            Expr::Int(i) => {
                let _ = write!(self.out, "{i}");
            }
            Expr::Float(x, text) => {
                if text.is_empty() {
                    self.out.push_str(&format_float(*x));
                } else {
                    self.out.push_str(text);
                }
            }
            Expr::Name(n) => self.out.push_str(n),
            Expr::List(items) => {
                self.out.push('[');
                for (i, &item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.expr(item, 0);
                }
                self.out.push(']');
            }
            Expr::Unary(UnaryOp::Neg, x) => {
                self.out.push('-');
                self.expr(*x, PREC_UNARY);
            }
            Expr::Unary(UnaryOp::Not, x) => {
                self.out.push_str("not ");
                self.expr(*x, PREC_NOT);
            }
            Expr::Binary(op, a, b) => {
                let p = op.precedence();
                // Comparisons do not chain, so both sides of one need a tighter operand.
                let left = if p == 4 { p + 1 } else { p };
                self.expr(*a, left);
                let _ = write!(self.out, " {} ", op.symbol());
                self.expr(*b, p + 1);
            }
            Expr::Cond {
                then,
                cond,
                otherwise,
            } => {
                self.expr(*then, PREC_COND + 1);
                self.out.push_str(" if ");
                self.expr(*cond, PREC_COND + 1);
                self.out.push_str(" else ");
                self.expr(*otherwise, PREC_COND);
            }
            Expr::Call(name, args) => {
                self.out.push_str(name);
                self.out.push('(');
                for (i, &a) in args.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.expr(a, 0);
                }
                self.out.push(')');
            }
        }
        if paren {
            self.out.push(')');
        }
    }
}

fn expr_prec(e: &Expr) -> u8 {
    match e {
        Expr::Cond { .. } => PREC_COND,
        Expr::Binary(op, ..) => op.precedence(),
        Expr::Unary(UnaryOp::Not, _) => PREC_NOT,
        Expr::Unary(UnaryOp::Neg, _) => PREC_UNARY,
        _ => u8::MAX,
    }
}

/// One concrete network of an expanded module as a stand-alone DSL file with no choices:
/// each searchable layer becomes a `fixed` call of its chosen block, named choices become
/// `let`s (values) or the ops of the cell edges that use them.
pub fn print_network(module: &Module, network: &crate::Network) -> String {
    use crate::space_info::{DecisionKind, Resolved};
    let info = &module.checked[network.space as usize];
    let mut m = module.clone();
    m.spaces = crate::Arena::new();
    m.checked.clear();
    m.networks = crate::Arena::new();
    let span = crate::Span::default();
    let mut layer_calls = Vec::new();
    for ((_, d), &c) in info.decisions.iter().zip(&network.choices) {
        let option = &d.options[c as usize].resolved;
        match (d.kind, option) {
            (DecisionKind::Layer(_), Resolved::Call { name, args }) => {
                layer_calls.push((name.clone(), args.clone()))
            }
            (DecisionKind::Layer(_), Resolved::Value(_)) => {}
            (DecisionKind::Named, Resolved::Value(v)) => {
                let value = value_expr(&mut m, v);
                let existing = m
                    .lets
                    .iter()
                    .find(|(_, l)| l.name == d.name)
                    .map(|(h, _)| h);
                match existing {
                    Some(h) => m.lets.get_mut(h).value = value,
                    None => {
                        m.lets.append(
                            Let {
                                name: d.name.clone(),
                                value,
                            },
                            span,
                        );
                    }
                }
            }
            (DecisionKind::Named, Resolved::Call { name, args }) => {
                let call = call_op(&mut m, name, args, &[]);
                let edges: Vec<Handle<Edge>> = m.edges.iter().map(|(h, _)| h).collect();
                for e in edges {
                    let is_choice = match m.edges[e].op.as_slice() {
                        [only] => {
                            let c = &m.ops[*only];
                            c.name == d.name && !c.parens && c.args.is_empty()
                        }
                        _ => false,
                    };
                    if is_choice {
                        m.edges.get_mut(e).op = vec![call];
                    }
                }
            }
        }
    }
    // Searchable layers become fixed calls with the layer's out and stride.
    if let Some(sk) = module.skeleton.clone() {
        let mut parts = Vec::new();
        let mut layer = 0;
        for &p in &sk.parts {
            match &module.parts[p] {
                Part::Search { .. } | Part::Stage { .. } => {
                    let first = layer;
                    while layer < info.slots.len() && info.slots[layer].part == module.parts.span(p)
                    {
                        layer += 1;
                    }
                    for (slot, (name, args)) in info.slots[first..layer]
                        .iter()
                        .zip(&layer_calls[first..layer])
                    {
                        // A block takes the layer's out and stride; a primitive carries its own.
                        let extra: &[(&str, i64)] = if module.block(name).is_some() {
                            // The layer's width may depend on a value choice, so read it off
                            // this network's graph rather than the default network's table.
                            let out = (0..network.graph.nodes.len())
                                .rev()
                                .find(|&i| {
                                    network.graph.regions[i] == crate::Region::Layer(slot.layer)
                                })
                                .map_or(slot.output.c, |i| network.graph.shapes[i].c);
                            &[("out", out as i64), ("stride", slot.stride as i64)]
                        } else {
                            &[]
                        };
                        let call = call_op(&mut m, name, args, extra);
                        parts.push(m.parts.append(
                            Part::Fixed {
                                role: FixedRole::Fixed,
                                ops: vec![call],
                            },
                            span,
                        ));
                    }
                }
                _ => parts.push(p),
            }
        }
        m.skeleton = Some(Skeleton { parts });
    }
    print_module(&m)
}

/// Appends `v` to the module's expressions as a literal (for rewrites that turn resolved
/// choices back into templates).
pub fn value_expr(m: &mut Module, v: &crate::Value) -> Handle<Expr> {
    use crate::Value;
    let span = crate::Span::default();
    let e = match v {
        Value::Int(i) if *i < 0 => {
            let x = m.exprs.append(Expr::Int(-i), span);
            Expr::Unary(UnaryOp::Neg, x)
        }
        Value::Int(i) => Expr::Int(*i),
        Value::Float(f) => Expr::Float(*f, crate::value::format_float(*f)),
        Value::Bool(b) => Expr::Name(b.to_string()),
        Value::Sym(s) => Expr::Name(s.clone()),
        Value::List(items) => Expr::List(items.iter().map(|i| value_expr(m, i)).collect()),
    };
    m.exprs.append(e, span)
}

/// Appends a call of `name` with `args` (and `extra` integer arguments) to the module's ops.
pub fn call_op(
    m: &mut Module,
    name: &str,
    args: &[(String, crate::Value)],
    extra: &[(&str, i64)],
) -> Handle<OpCall> {
    let span = crate::Span::default();
    let mut list: Vec<Arg> = args
        .iter()
        .filter(|(_, v)| !matches!(v, crate::Value::Sym(s) if s == "auto"))
        .map(|(n, v)| Arg {
            name: Some(n.clone()),
            value: value_expr(m, v),
        })
        .collect();
    for (n, v) in extra {
        let value = m.exprs.append(Expr::Int(*v), span);
        list.push(Arg {
            name: Some(n.to_string()),
            value,
        });
    }
    let parens = !list.is_empty();
    m.ops.append(
        OpCall {
            name: name.to_string(),
            args: list,
            parens,
        },
        span,
    )
}
