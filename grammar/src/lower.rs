//! Lowering of pest's parse tree into the IR's template layer, one function per rule family.

use crate::errors::from_pest;
use crate::{Rule, SpaceParser};
use pest::iterators::Pair;
use pest::Parser;
use spacetune_ir::*;
use std::path::{Path, PathBuf};

/// Imports nest at most this deep; deeper chains are almost certainly a mistake.
pub const MAX_IMPORT_DEPTH: usize = 16;

/// Lowers source file `id` (already in `sources`) and everything it imports.
pub(crate) fn lower_root(
    sources: &mut SourceMap,
    id: u32,
    base_dir: Option<&Path>,
) -> Result<Module, Diagnostics> {
    let mut lowerer = Lowerer {
        module: Module::new(),
        file: id,
        diags: Vec::new(),
        // The root file is on the stack too, so importing it back is a cycle like any other.
        import_stack: Path::new(&sources.file(id).name)
            .canonicalize()
            .into_iter()
            .collect(),
        imported: Vec::new(),
    };
    lowerer.file_items(sources, id, base_dir, true);
    if lowerer.diags.is_empty() {
        Ok(lowerer.module)
    } else {
        Err(Diagnostics(lowerer.diags))
    }
}

struct Lowerer {
    module: Module,
    file: u32,
    diags: Vec<Diagnostic>,
    /// Canonical paths of the files being imported, innermost last (to detect cycles).
    import_stack: Vec<PathBuf>,
    /// Canonical paths already merged (a file imported twice is merged once).
    imported: Vec<PathBuf>,
}

impl Lowerer {
    /// The pair's span without the whitespace pest consumed after it.
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        let trimmed = pair.as_str().trim_end().len();
        Span::new(self.file, s.start(), s.start() + trimmed)
    }

    fn error(&mut self, diag: Diagnostic) {
        self.diags.push(diag);
    }

    /// Parses and lowers one file. In an imported file only blocks, cells and further
    /// imports are allowed.
    fn file_items(&mut self, sources: &mut SourceMap, id: u32, dir: Option<&Path>, root: bool) {
        let text = sources.file(id).text.clone();
        let file = match SpaceParser::parse(Rule::file, &text) {
            Ok(mut pairs) => pairs.next().expect("the file rule always yields one pair"),
            Err(e) => {
                self.error(from_pest(e, id, &text));
                return;
            }
        };
        let saved = self.file;
        self.file = id;
        for item in kids(file) {
            let rule = item.as_rule();
            if !root
                && !matches!(
                    rule,
                    Rule::import | Rule::block_def | Rule::cell_def | Rule::EOI
                )
            {
                let span = self.span(&item);
                self.error(
                    Diagnostic::error("an imported file may only define blocks and cells")
                        .with_label(span, "not allowed in an imported file"),
                );
                continue;
            }
            match rule {
                Rule::import => self.import(sources, item, dir),
                Rule::input_decl => self.input(item),
                Rule::classes_decl => {
                    let span = self.span(&item);
                    if self.module.classes.is_some() {
                        self.error(
                            Diagnostic::error("`classes` is given twice")
                                .with_label(span, "again here"),
                        );
                    }
                    let e = self.expr(kids(item).next().unwrap());
                    self.module.classes = Some(e);
                }
                Rule::select_decl => self.select(item),
                Rule::let_decl => {
                    let span = self.span(&item);
                    let mut inner = kids(item);
                    let name = inner.next().unwrap().as_str().to_string();
                    let value = self.expr(inner.next().unwrap());
                    self.module.lets.append(Let { name, value }, span);
                }
                Rule::block_def => self.block(item),
                Rule::cell_def => self.cell(item),
                Rule::space_def => self.space(item),
                Rule::skeleton => self.skeleton(item),
                Rule::EOI => {}
                other => unreachable!("the grammar allows no {other:?} at top level"),
            }
        }
        self.file = saved;
    }

    fn import(&mut self, sources: &mut SourceMap, pair: Pair<Rule>, dir: Option<&Path>) {
        let span = self.span(&pair);
        let string = kids(pair).next().unwrap();
        let rel = kids(string).next().unwrap().as_str().to_string();
        self.module
            .imports
            .append(Import { path: rel.clone() }, span);
        let Some(dir) = dir else {
            self.error(
                Diagnostic::error(format!(
                    "cannot import `{rel}`: this source has no directory"
                ))
                .with_label(span, "import here"),
            );
            return;
        };
        let path = dir.join(&rel);
        let canonical = match path.canonicalize() {
            Ok(p) => p,
            Err(e) => {
                self.error(
                    Diagnostic::error(format!("cannot import `{rel}`: {e}"))
                        .with_label(span, "imported here")
                        .with_note(format!("looked for {}", path.display())),
                );
                return;
            }
        };
        if self.import_stack.contains(&canonical) {
            self.error(
                Diagnostic::error(format!(
                    "import cycle: `{rel}` imports itself, directly or indirectly"
                ))
                .with_label(span, "cycle closes here"),
            );
            return;
        }
        if self.imported.contains(&canonical) {
            return;
        }
        if self.import_stack.len() >= MAX_IMPORT_DEPTH {
            self.error(Diagnostic::error("imports nest too deeply").with_label(span, "here"));
            return;
        }
        let text = match std::fs::read_to_string(&canonical) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    Diagnostic::error(format!("cannot read `{rel}`: {e}"))
                        .with_label(span, "imported here"),
                );
                return;
            }
        };
        let id = sources.add(path.display().to_string(), text);
        self.imported.push(canonical.clone());
        self.import_stack.push(canonical.clone());
        let sub_dir = canonical.parent().map(Path::to_path_buf);
        self.file_items(sources, id, sub_dir.as_deref(), false);
        self.import_stack.pop();
    }

    /// `select thres=0.8 scale=2 lambda=0.01 picks=60`: known knobs, each once, in range.
    fn select(&mut self, pair: Pair<Rule>) {
        for knob in kids(pair) {
            let span = self.span(&knob);
            let mut inner = kids(knob);
            let name_pair = inner.next().unwrap();
            let name = name_pair.as_str().to_string();
            let name_span = self.span(&name_pair);
            let value_pair = inner.next().unwrap();
            let text = value_pair.as_str().to_string();
            let value: f64 = text.parse().unwrap_or(f64::NAN);
            if !spacetune_ir::SELECT_KNOBS.contains(&name.as_str()) {
                let mut d = Diagnostic::error(format!("`select` has no knob `{name}`"))
                    .with_label(name_span, "unknown knob")
                    .with_note(format!("knobs: {}", spacetune_ir::SELECT_KNOBS.join(", ")));
                if let Some(s) = suggest_knob(&name) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                self.error(d);
                continue;
            }
            if let Some(prev) = self.module.select.iter().find(|k| k.name == name) {
                let prev = prev.span;
                self.error(
                    Diagnostic::error(format!("`{name}` is set twice"))
                        .with_label(span, "again here")
                        .with_label(prev, "first here"),
                );
                continue;
            }
            let bad = match name.as_str() {
                "picks" if value < 1.0 || value.fract() != 0.0 => {
                    Some("a whole number of at least 1")
                }
                "scale" if value <= 0.0 => Some("positive"),
                _ => None,
            };
            if let Some(want) = bad {
                self.error(
                    Diagnostic::error(format!("`{name}` must be {want}"))
                        .with_label(self.span(&value_pair), format!("`{text}` is not")),
                );
                continue;
            }
            self.module.select.push(spacetune_ir::SelectKnob {
                name,
                value,
                text,
                span,
            });
        }
    }

    fn input(&mut self, pair: Pair<Rule>) {
        let span = self.span(&pair);
        let dims = kids(pair).next().unwrap();
        let mut nums = Vec::new();
        for d in kids(dims) {
            let dspan = self.span(&d);
            match d.as_str().parse::<u64>() {
                Ok(v) if (1..=network::MAX_DIM).contains(&v) => nums.push(v),
                _ => {
                    self.error(
                        Diagnostic::error(format!("input size `{}` is out of range", d.as_str()))
                            .with_label(
                                dspan,
                                format!("must be between 1 and {}", network::MAX_DIM),
                            ),
                    );
                    nums.push(1);
                }
            }
        }
        if self.module.input.is_some() {
            self.error(Diagnostic::error("`input` is given twice").with_label(span, "again here"));
        }
        self.module.input = Some(InputDecl {
            shape: Shape::new(nums[0], nums[1], nums[2]),
            span,
        });
    }

    // ---- blocks -----------------------------------------------------------------------

    fn block(&mut self, pair: Pair<Rule>) {
        let span = self.span(&pair);
        let mut inner = kids(pair);
        let name = inner.next().unwrap().as_str().to_string();
        let mut params = Vec::new();
        let mut body = Vec::new();
        for p in inner {
            match p.as_rule() {
                Rule::param => {
                    let mut pi = kids(p);
                    let name = pi.next().unwrap().as_str().to_string();
                    let default = pi.next().map(|e| self.expr(e));
                    params.push(Param { name, default });
                }
                Rule::body => body = self.body(p),
                other => unreachable!("unexpected {other:?} in a block"),
            }
        }
        self.module.blocks.append(
            BlockDef {
                name,
                params,
                body,
                file: self.file,
            },
            span,
        );
    }

    fn body(&mut self, pair: Pair<Rule>) -> Vec<Handle<Stmt>> {
        kids(pair).map(|s| self.stmt(s)).collect()
    }

    fn stmt(&mut self, pair: Pair<Rule>) -> Handle<Stmt> {
        let span = self.span(&pair);
        let mut inner = kids(pair);
        let head = inner.next().unwrap();
        let guard = inner.next().map(|g| self.expr(kids(g).next().unwrap()));
        let kind = match head.as_rule() {
            Rule::pipeline => StmtKind::Pipe(self.pipeline(head)),
            Rule::residual => StmtKind::Residual,
            Rule::merge_stmt => {
                let mut parts = kids(head);
                let kind = match parts.next().unwrap().as_str().trim() {
                    "add" => MergeKind::Add,
                    _ => MergeKind::Concat,
                };
                let branches = parts.map(|b| self.body(b)).collect();
                StmtKind::Merge { kind, branches }
            }
            Rule::for_stmt => {
                let mut parts: Vec<Pair<Rule>> = kids(head).collect();
                let body = self.body(parts.pop().unwrap());
                let list = self.expr(parts.pop().unwrap());
                let names: Vec<String> = parts.iter().map(|p| p.as_str().to_string()).collect();
                let (index, var) = match names.as_slice() {
                    [var] => (None, var.clone()),
                    [index, var] => (Some(index.clone()), var.clone()),
                    _ => unreachable!("the grammar allows one or two loop names"),
                };
                StmtKind::For {
                    index,
                    var,
                    list,
                    body,
                }
            }
            other => unreachable!("unexpected {other:?} in a statement"),
        };
        self.module.stmts.append(Stmt { kind, guard }, span)
    }

    fn pipeline(&mut self, pair: Pair<Rule>) -> Pipeline {
        kids(pair).map(|op| self.op_call(op)).collect()
    }

    fn op_call(&mut self, pair: Pair<Rule>) -> Handle<OpCall> {
        let span = self.span(&pair);
        let mut inner = kids(pair);
        let name = inner.next().unwrap().as_str().to_string();
        let mut args = Vec::new();
        let mut parens = false;
        if let Some(call_args) = inner.next() {
            parens = true;
            for arg in kids(call_args) {
                let mut ai: Vec<Pair<Rule>> = kids(arg).collect();
                let value = self.expr(ai.pop().unwrap());
                let name = ai.pop().map(|n| n.as_str().to_string());
                args.push(Arg { name, value });
            }
        }
        self.module.ops.append(OpCall { name, args, parens }, span)
    }

    // ---- cells ------------------------------------------------------------------------

    fn cell(&mut self, pair: Pair<Rule>) {
        let span = self.span(&pair);
        let mut inner = kids(pair);
        let name = inner.next().unwrap().as_str().to_string();
        let mut edges = Vec::new();
        let (mut inputs, mut inputs_span) = (1, None);
        let mut output: Option<CellOutput> = None;
        for item in inner {
            let ispan = self.span(&item);
            match item.as_rule() {
                Rule::edge => {
                    let mut ei = kids(item);
                    let from = self.node_index(ei.next().unwrap());
                    let to = self.node_index(ei.next().unwrap());
                    let op = self.pipeline(ei.next().unwrap());
                    edges.push(self.module.edges.append(Edge { from, to, op }, ispan));
                }
                Rule::cell_inputs => {
                    if let Some(first) = inputs_span {
                        self.error(
                            Diagnostic::error(format!("cell `{name}` declares its inputs twice"))
                                .with_label(ispan, "again here")
                                .with_label(first, "first here"),
                        );
                    }
                    let n = kids(item).nth(1).unwrap();
                    inputs = match n.as_str().parse::<u32>() {
                        Ok(k) if (1..=MAX_CELL_INPUTS).contains(&k) => k,
                        _ => {
                            self.error(
                                Diagnostic::error(format!(
                                    "a cell takes 1 to {MAX_CELL_INPUTS} inputs, not {}",
                                    n.as_str()
                                ))
                                .with_label(self.span(&n), "inputs"),
                            );
                            1
                        }
                    };
                    inputs_span = Some(ispan);
                }
                Rule::cell_output => {
                    if let Some(first) = &output {
                        self.error(
                            Diagnostic::error(format!("cell `{name}` declares its output twice"))
                                .with_label(ispan, "again here")
                                .with_label(first.span, "first here"),
                        );
                    }
                    let mut merge = None;
                    let mut nodes = Vec::new();
                    for p in kids(item) {
                        match p.as_rule() {
                            Rule::kw_output => {}
                            Rule::cell_merge => {
                                merge = Some(if p.as_str() == "add" {
                                    MergeKind::Add
                                } else {
                                    MergeKind::Concat
                                })
                            }
                            _ => nodes.push(self.node_index(p)),
                        }
                    }
                    if merge.is_none() && nodes.len() > 1 {
                        self.error(
                            Diagnostic::error("several output nodes need a merge")
                                .with_label(ispan, "which merge?")
                                .with_help("write `output concat ...` or `output add ...`"),
                        );
                    }
                    output = Some(CellOutput {
                        merge,
                        nodes,
                        span: ispan,
                    });
                }
                other => unreachable!("unexpected {other:?} in a cell"),
            }
        }
        self.module.cells.append(
            CellDef {
                name,
                inputs,
                inputs_span,
                edges,
                output,
                file: self.file,
            },
            span,
        );
    }

    fn node_index(&mut self, pair: Pair<Rule>) -> u32 {
        let span = self.span(&pair);
        match pair.as_str().parse::<u32>() {
            Ok(v) if v < 1024 => v,
            _ => {
                self.error(
                    Diagnostic::error(format!("cell node `{}` is out of range", pair.as_str()))
                        .with_label(span, "nodes are numbered 0 to 1023"),
                );
                0
            }
        }
    }

    // ---- spaces -----------------------------------------------------------------------

    fn space(&mut self, pair: Pair<Rule>) {
        let span = self.span(&pair);
        let mut inner = kids(pair);
        let name = inner.next().unwrap().as_str().to_string();
        let mut space = Space {
            name,
            candidates: Vec::new(),
            default: None,
            layers: Vec::new(),
            choices: Vec::new(),
        };
        for item in inner {
            let ispan = self.span(&item);
            match item.as_rule() {
                Rule::candidates => {
                    if !space.candidates.is_empty() {
                        self.error(
                            Diagnostic::error("`candidates` is given twice in this space")
                                .with_label(ispan, "again here")
                                .with_help("list every candidate in one `candidates { ... }`"),
                        );
                    }
                    let entries: Vec<_> = kids(item).map(|e| self.entry(e)).collect();
                    space.candidates.extend(entries);
                }
                Rule::default_decl => {
                    if space.default.is_some() {
                        self.error(
                            Diagnostic::error("`default` is given twice in this space")
                                .with_label(ispan, "again here"),
                        );
                    }
                    space.default = Some(self.op_call(kids(item).next().unwrap()));
                }
                Rule::layer_list => {
                    let mut li = kids(item);
                    let layer = self.expr(li.next().unwrap());
                    let entries = li.map(|e| self.entry(e)).collect();
                    space.layers.push(LayerList { layer, entries });
                }
                Rule::choice_decl => {
                    let mut names = Vec::new();
                    let mut entries = Vec::new();
                    let mut default = None;
                    for p in kids(item) {
                        match p.as_rule() {
                            Rule::ident => names.push(p.as_str().to_string()),
                            Rule::entry => entries.push(self.entry(p)),
                            Rule::offer => default = Some(self.offer(p)),
                            other => unreachable!("unexpected {other:?} in a choice"),
                        }
                    }
                    let default = default.expect("the grammar requires a default");
                    space.choices.push(ChoiceDecl {
                        names,
                        entries,
                        default,
                    });
                }
                other => unreachable!("unexpected {other:?} in a space"),
            }
        }
        self.module.spaces.append(space, span);
    }

    fn offer(&mut self, pair: Pair<Rule>) -> Offer {
        let inner = kids(pair).next().unwrap();
        match inner.as_rule() {
            Rule::op_call => Offer::Call(self.op_call(inner)),
            Rule::value_offer => {
                let span = self.span(&inner);
                let text = inner.as_str();
                let mut parts = kids(inner);
                let value = parts.next().unwrap();
                let e = self.primary_literal(value);
                if text.trim_start().starts_with('-') {
                    Offer::Value(self.module.exprs.append(Expr::Unary(UnaryOp::Neg, e), span))
                } else {
                    Offer::Value(e)
                }
            }
            other => unreachable!("unexpected {other:?} in an offer"),
        }
    }

    fn entry(&mut self, pair: Pair<Rule>) -> Handle<CandidateEntry> {
        let span = self.span(&pair);
        let mut offer = None;
        let mut grid = Vec::new();
        let mut guard = None;
        for p in kids(pair) {
            match p.as_rule() {
                Rule::offer => offer = Some(self.offer(p)),
                Rule::grid => {
                    for b in kids(p) {
                        let mut bi = kids(b);
                        let name = bi.next().unwrap().as_str().to_string();
                        let list = self.expr(bi.next().unwrap());
                        grid.push((name, list));
                    }
                }
                Rule::guard => guard = Some(self.expr(kids(p).next().unwrap())),
                other => unreachable!("unexpected {other:?} in a candidate"),
            }
        }
        let offer = offer.expect("the grammar requires an offer");
        self.module
            .entries
            .append(CandidateEntry { offer, grid, guard }, span)
    }

    // ---- skeleton ---------------------------------------------------------------------

    fn skeleton(&mut self, pair: Pair<Rule>) {
        let span = self.span(&pair);
        if self.module.skeleton.is_some() {
            self.error(
                Diagnostic::error("a file has one skeleton; this is the second")
                    .with_label(span, "second skeleton")
                    .with_label(self.module.skeleton_span, "first skeleton"),
            );
            return;
        }
        let mut parts = Vec::new();
        for p in kids(pair) {
            let pspan = self.span(&p);
            let part = match p.as_rule() {
                Rule::stem | Rule::head | Rule::fixed => {
                    let role = match p.as_rule() {
                        Rule::stem => FixedRole::Stem,
                        Rule::head => FixedRole::Head,
                        _ => FixedRole::Fixed,
                    };
                    let ops = self.pipeline(kids(p).next().unwrap());
                    Part::Fixed { role, ops }
                }
                Rule::search => {
                    let s = self.settings(p, pspan, "search", &["out", "stride"]);
                    Part::Search {
                        out: s[0],
                        stride: s[1],
                    }
                }
                Rule::stage => {
                    let s = self.settings(p, pspan, "stage", &["out", "repeat", "stride"]);
                    Part::Stage {
                        out: s[0],
                        repeat: s[1],
                        stride: s[2],
                    }
                }
                Rule::cells => {
                    let mut inner = kids(p.clone());
                    let cell = inner.next().unwrap().as_str().to_string();
                    let s = self.settings(p, pspan, "cells", &["out", "repeat", "stride"]);
                    Part::Cells {
                        cell,
                        out: s[0],
                        repeat: s[1],
                        stride: s[2],
                    }
                }
                other => unreachable!("unexpected {other:?} in a skeleton"),
            };
            parts.push(self.module.parts.append(part, pspan));
        }
        self.module.skeleton = Some(Skeleton { parts });
        self.module.skeleton_span = span;
    }

    /// Reads `name=expr` settings in any order; each of `names` must be given exactly once,
    /// except that a missing `stride` defaults to 1.
    fn settings(
        &mut self,
        pair: Pair<Rule>,
        span: Span,
        what: &str,
        names: &[&str],
    ) -> Vec<Handle<Expr>> {
        let mut found: Vec<Option<Handle<Expr>>> = vec![None; names.len()];
        for s in kids(pair).filter(|p| p.as_rule() == Rule::setting) {
            let sspan = self.span(&s);
            let mut si = kids(s);
            let key = si.next().unwrap().as_str().to_string();
            let value = self.expr(si.next().unwrap());
            match names.iter().position(|n| *n == key) {
                Some(i) if found[i].is_none() => found[i] = Some(value),
                Some(_) => self.error(
                    Diagnostic::error(format!("`{key}` is given twice"))
                        .with_label(sspan, "again here"),
                ),
                None => self.error(
                    Diagnostic::error(format!("`{what}` has no setting `{key}`"))
                        .with_label(sspan, "unknown setting")
                        .with_help(format!(
                            "`{what}` takes {}",
                            names
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                ),
            }
        }
        names
            .iter()
            .zip(found)
            .map(|(name, value)| match value {
                Some(v) => v,
                None => {
                    if *name != "stride" {
                        self.error(
                            Diagnostic::error(format!("`{what}` needs `{name}=`"))
                                .with_label(span, format!("`{name}` missing")),
                        );
                    }
                    self.module.exprs.append(Expr::Int(1), span)
                }
            })
            .collect()
    }

    // ---- expressions ------------------------------------------------------------------

    fn expr(&mut self, pair: Pair<Rule>) -> Handle<Expr> {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::expr => {
                let mut inner = kids(pair);
                let then = self.expr(inner.next().unwrap());
                match (inner.next(), inner.next()) {
                    (Some(cond), Some(otherwise)) => {
                        let cond = self.expr(cond);
                        let otherwise = self.expr(otherwise);
                        self.module.exprs.append(
                            Expr::Cond {
                                then,
                                cond,
                                otherwise,
                            },
                            span,
                        )
                    }
                    _ => then,
                }
            }
            Rule::or_expr | Rule::and_expr | Rule::sum | Rule::product | Rule::cmp_expr => {
                let mut inner = kids(pair);
                let mut acc = self.expr(inner.next().unwrap());
                while let Some(op) = inner.next() {
                    let rhs = self.expr(inner.next().unwrap());
                    let op = binary_op(op.as_str().trim());
                    let start = self.module.exprs.span(acc);
                    let end = self.module.exprs.span(rhs);
                    acc = self
                        .module
                        .exprs
                        .append(Expr::Binary(op, acc, rhs), start.to(end));
                }
                acc
            }
            Rule::not_expr | Rule::unary => {
                let mut inner = kids(pair);
                let first = inner.next().unwrap();
                match first.as_rule() {
                    Rule::not_op | Rule::neg_op => {
                        let op = if first.as_rule() == Rule::not_op {
                            UnaryOp::Not
                        } else {
                            UnaryOp::Neg
                        };
                        let x = self.expr(inner.next().unwrap());
                        self.module.exprs.append(Expr::Unary(op, x), span)
                    }
                    _ => self.expr(first),
                }
            }
            Rule::primary => self.expr(kids(pair).next().unwrap()),
            Rule::int | Rule::float => self.primary_literal(pair),
            Rule::list => {
                let items = kids(pair).map(|p| self.expr(p)).collect();
                self.module.exprs.append(Expr::List(items), span)
            }
            Rule::ident => self
                .module
                .exprs
                .append(Expr::Name(pair.as_str().to_string()), span),
            Rule::func_call => {
                let mut inner = kids(pair);
                let name = inner.next().unwrap().as_str().to_string();
                let args = inner.map(|p| self.expr(p)).collect();
                self.module.exprs.append(Expr::Call(name, args), span)
            }
            other => unreachable!("unexpected {other:?} in an expression"),
        }
    }

    fn primary_literal(&mut self, pair: Pair<Rule>) -> Handle<Expr> {
        let span = self.span(&pair);
        let text = pair.as_str();
        let expr = match pair.as_rule() {
            Rule::int => match text.parse::<i64>() {
                Ok(v) => Expr::Int(v),
                Err(_) => {
                    self.error(
                        Diagnostic::error(format!("integer `{text}` is too large"))
                            .with_label(span, "here"),
                    );
                    Expr::Int(0)
                }
            },
            Rule::float => Expr::Float(text.parse::<f64>().unwrap_or(0.0), text.to_string()),
            Rule::list => return self.expr(pair),
            other => unreachable!("unexpected {other:?} as a literal"),
        };
        self.module.exprs.append(expr, span)
    }
}

/// The children of a pair, without keyword tokens: those are in the parse tree only so
/// they can be atomic, and lowering skips them.
fn kids(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| {
        !matches!(
            p.as_rule(),
            Rule::kw_if | Rule::kw_else | Rule::kw_for | Rule::kw_in | Rule::kw_select
        )
    })
}

fn binary_op(text: &str) -> BinaryOp {
    match text {
        "+" => BinaryOp::Add,
        "-" => BinaryOp::Sub,
        "*" => BinaryOp::Mul,
        "/" => BinaryOp::Div,
        "%" => BinaryOp::Rem,
        "==" => BinaryOp::Eq,
        "!=" => BinaryOp::Ne,
        "<" => BinaryOp::Lt,
        "<=" => BinaryOp::Le,
        ">" => BinaryOp::Gt,
        ">=" => BinaryOp::Ge,
        "and" => BinaryOp::And,
        "or" => BinaryOp::Or,
        other => unreachable!("the grammar has no operator `{other}`"),
    }
}

/// The knob `name` was probably meant to be: one edit (insertion, deletion, substitution)
/// away.
fn suggest_knob(name: &str) -> Option<&'static str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let here = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb))
                    .min(row[j] + 1)
                    .min(here + 1);
                prev = here;
            }
        }
        row[b.len()]
    };
    spacetune_ir::SELECT_KNOBS
        .iter()
        .copied()
        .find(|k| distance(name, k) == 1)
}
