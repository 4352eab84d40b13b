//! `check`: resolves every space into decisions, builds every candidate in every place it
//! can go, and rejects what cannot be built, with diagnostics that point at the source.

use crate::elaborate::{Builder, Frame};
use crate::eval::Env;
use crate::pass::Pass;
use crate::resolve;
use crate::skeleton::{self, expected, FillLayers, LayerHook};
use spacetune_ir::*;

pub struct Check;

impl Pass for Check {
    fn name(&self) -> &'static str {
        "check"
    }
    fn run(&self, m: &mut Module, _: &crate::ctx::Ctx<'_>) -> Result<(), Diagnostics> {
        let mut diags = duplicates(m);
        let mut infos = Vec::new();
        if m.spaces.is_empty() {
            match fixed_network(m) {
                Ok(info) => infos.push(info),
                Err(d) => diags.push(d),
            }
        }
        for (h, _) in m.spaces.iter() {
            match check_space(m, h) {
                Ok(info) => infos.push(info),
                Err(mut ds) => diags.append(&mut ds),
            }
        }
        if !diags.is_empty() {
            // The same mistake inside a block shows up in every layer that uses the block;
            // report it once (the first note says where it was met first).
            diags.sort_by_key(|d| d.primary_span());
            diags.dedup_by(|a, b| a.message == b.message && a.primary_span() == b.primary_span());
            return Err(Diagnostics(diags));
        }
        m.checked = infos;
        m.advance(Phase::Checked);
        Ok(())
    }
}

fn duplicates(m: &Module) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut seen: Vec<(&str, &str, Span)> = Vec::new();
    let items = m
        .blocks
        .iter()
        .map(|(h, b)| ("block", b.name.as_str(), m.blocks.span(h)))
        .chain(
            m.cells
                .iter()
                .map(|(h, c)| ("cell", c.name.as_str(), m.cells.span(h))),
        )
        .chain(
            m.spaces
                .iter()
                .map(|(h, s)| ("space", s.name.as_str(), m.spaces.span(h))),
        );
    for (kind, name, span) in items {
        if let Some((_, _, first)) = seen.iter().find(|(k, n, _)| *k == kind && *n == name) {
            diags.push(
                Diagnostic::error(format!("{kind} `{name}` is defined twice"))
                    .with_label(span, "defined again here")
                    .with_label(*first, "first defined here"),
            );
        } else {
            seen.push((kind, name, span));
        }
        if kind == "block" && crate::prims::signature(name).is_some() {
            diags.push(
                Diagnostic::error(format!("block `{name}` has the name of a primitive op"))
                    .with_label(span, "rename this block"),
            );
        }
    }
    diags
}

/// A file without spaces describes one fixed network.
fn fixed_network(m: &Module) -> Result<SpaceInfo, Diagnostic> {
    let mut b = Builder::new(m, Vec::new());
    if let Some((_, _, span)) = skeleton::layers(&b)?.first() {
        return Err(Diagnostic::error(
            "the skeleton has searchable layers but the file defines no space",
        )
        .with_label(*span, "searchable layers here")
        .with_help(
            "add `space name { candidates { ... } default ... }`, or use `fixed` parts only",
        ));
    }
    struct NoLayers;
    impl LayerHook for NoLayers {
        fn layer(
            &mut self,
            _: &mut Builder,
            _: u32,
            cur: Handle<Node>,
            _: Frame,
            _: Span,
        ) -> Result<Handle<Node>, Diagnostic> {
            Ok(cur)
        }
    }
    let out = skeleton::walk(&mut b, &mut NoLayers)?;
    let output = b.shape(out);
    check_output(m, &b, output)?;
    Ok(SpaceInfo {
        space: None,
        name: "fixed".into(),
        decisions: Arena::new(),
        slots: Vec::new(),
        output,
    })
}

fn check_output(m: &Module, b: &Builder, output: Shape) -> Result<(), Diagnostic> {
    let Some(c) = m.classes else { return Ok(()) };
    let span = m.exprs.span(c);
    let classes = match b.eval(c, &Env::new())? {
        Value::Int(n) if n >= 1 => n as u64,
        other => {
            return Err(Diagnostic::error(format!(
                "`classes` must be a positive whole number, found {other}"
            ))
            .with_label(span, "here"))
        }
    };
    if output != Shape::new(classes, 1, 1) {
        let head = m
            .skeleton
            .as_ref()
            .and_then(|s| s.parts.last())
            .map_or(m.skeleton_span, |&p| m.parts.span(p));
        return Err(Diagnostic::error(format!(
            "the network's output is {output}, but `classes` is {classes}"
        ))
        .with_label(head, "the network ends here")
        .with_label(span, "classes declared here")
        .with_help("end the head with `gap | linear(classes)`"));
    }
    Ok(())
}

/// Builds every option of every layer decision as the walk passes the layer.
struct CheckLayers<'s> {
    space: Handle<Space>,
    def: &'s Space,
    overrides: Vec<(u32, Vec<Handle<CandidateEntry>>)>,
    decisions: Vec<Decision>,
    slots: Vec<SlotShapes>,
    diags: Vec<Diagnostic>,
}

impl LayerHook for CheckLayers<'_> {
    fn layer(
        &mut self,
        b: &mut Builder,
        layer: u32,
        cur: Handle<Node>,
        frame: Frame,
        part: Span,
    ) -> Result<Handle<Node>, Diagnostic> {
        let m = b.m;
        let input = b.shape(cur);
        let env = b
            .global_env()
            .with("in", Value::Int(input.c as i64))
            .with("out", Value::Int(frame.out as i64))
            .with("stride", Value::Int(frame.stride as i64))
            .with("layer", Value::Int(layer as i64));
        let list = self
            .overrides
            .iter()
            .find(|(l, _)| *l == layer)
            .map_or(&self.def.candidates, |(_, e)| e);
        let options = resolve::entries(b, list, &env)?;
        if options.is_empty() {
            return Err(Diagnostic::error(format!(
                "layer {layer} has no candidates in space `{}`",
                self.def.name
            ))
            .with_label(part, format!("layer {layer} is declared here"))
            .with_help("give the space `candidates { ... }` or a `layer N { ... }` list for it"));
        }
        let default = match self.def.default {
            Some(d) => {
                let alt = resolve::offer(b, &Offer::Call(d), &env)?;
                match options.iter().position(|o| o.resolved == alt.resolved) {
                    Some(i) => i,
                    None => {
                        return Err(Diagnostic::error(format!(
                            "the default `{}` is not among layer {layer}'s candidates",
                            alt.token
                        ))
                        .with_label(m.ops.span(d), "default declared here")
                        .with_note(format!("layer {layer} offers: {}", tokens(&options)))
                        .with_help("every layer's list must include the space's default"))
                    }
                }
            }
            None if options.len() == 1 => 0,
            None => {
                return Err(Diagnostic::error(format!(
                    "space `{}` has no `default`",
                    self.def.name
                ))
                .with_label(m.spaces.span(self.space), "in this space")
                .with_help("name the block of SSBN_0, e.g. `default mbconv(3, 3)`"))
            }
        };
        let want = expected(input, frame);
        let mut costs = Vec::with_capacity(options.len());
        for option in &options {
            let mut scratch = Builder::new(m, b.named.clone());
            let x = scratch.input(input, option.span);
            let built = scratch.resolved(&option.resolved, frame, x, option.span).and_then(|y| {
                let got = scratch.shape(y);
                if got == want {
                    Ok(())
                } else {
                    Err(Diagnostic::error(format!(
                        "candidate `{}` does not fit layer {layer}: it turns {input} into {got}, the layer needs {want}",
                        option.token
                    ))
                    .with_label(option.span, "offered here")
                    .with_label(part, format!("layer {layer}: out {} stride {}", frame.out, frame.stride))
                    .with_help("guard the candidate, e.g. `skip if stride == 1 and in == out`"))
                }
            });
            match built {
                Ok(()) => costs.push(scratch.graph.cost()),
                Err(d) => {
                    let d = if d.labels.iter().any(|l| l.span == option.span) {
                        d
                    } else {
                        d.with_label(
                            option.span,
                            format!("while building `{}` here", option.token),
                        )
                    };
                    self.diags.push(d.with_note(format!(
                        "in layer {layer} of space `{}` (input {input}, out {}, stride {})",
                        self.def.name, frame.out, frame.stride
                    )));
                    costs.push(Cost::default());
                }
            }
        }
        let chosen = options[default].clone();
        self.decisions.push(Decision {
            name: format!("layer{layer}"),
            kind: DecisionKind::Layer(layer),
            options,
            default: default as u32,
        });
        let out = b.resolved(&chosen.resolved, frame, cur, chosen.span)?;
        self.slots.push(SlotShapes {
            layer,
            input,
            output: b.shape(out),
            stride: frame.stride,
            part,
            costs,
        });
        Ok(out)
    }
}

fn tokens(options: &[Alternative]) -> String {
    options
        .iter()
        .map(|o| o.token.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_space(m: &Module, h: Handle<Space>) -> Result<SpaceInfo, Vec<Diagnostic>> {
    let space = &m.spaces[h];
    let probe = Builder::new(m, Vec::new());
    let named = resolve::named_choices(&probe, space).map_err(|d| vec![d])?;
    let defaults: Vec<(String, Resolved)> = named
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                d.options[d.default as usize].resolved.clone(),
            )
        })
        .collect();
    let mut b = Builder::new(m, defaults.clone());
    let layer_count = skeleton::layers(&b).map_err(|d| vec![d])?.len();
    let mut overrides = Vec::new();
    for l in &space.layers {
        let span = m.exprs.span(l.layer);
        let index = match b.eval(l.layer, &b.global_env()).map_err(|d| vec![d])? {
            Value::Int(i) if i >= 0 && (i as usize) < layer_count => i as u32,
            other => {
                return Err(vec![Diagnostic::error(format!(
                    "there is no layer {other}"
                ))
                .with_label(
                    span,
                    format!(
                        "the skeleton has {layer_count} searchable layers (0 to {})",
                        layer_count.saturating_sub(1)
                    ),
                )])
            }
        };
        if overrides.iter().any(|(i, _)| *i == index) {
            return Err(vec![Diagnostic::error(format!(
                "layer {index} is listed twice"
            ))
            .with_label(span, "again here")]);
        }
        overrides.push((index, l.entries.clone()));
    }
    let mut hook = CheckLayers {
        space: h,
        def: space,
        overrides,
        decisions: Vec::new(),
        slots: Vec::new(),
        diags: Vec::new(),
    };
    let walked = skeleton::walk(&mut b, &mut hook);
    let mut diags = std::mem::take(&mut hook.diags);
    let output = match walked {
        Ok(out) => {
            let output = b.shape(out);
            if let Err(d) = check_output(m, &b, output) {
                diags.push(d);
            }
            output
        }
        Err(d) => {
            diags.push(d.with_note(format!(
                "while building the default network of space `{}`",
                space.name
            )));
            return Err(diags);
        }
    };
    // Every option of every named choice, the others at their defaults.
    for (i, d) in named.iter().enumerate() {
        for (j, option) in d
            .options
            .iter()
            .enumerate()
            .filter(|(j, _)| *j as u32 != d.default)
        {
            let mut assignment = defaults.clone();
            assignment[i].1 = option.resolved.clone();
            let mut trial = Builder::new(m, assignment);
            let mut layers = FillLayers {
                chosen: hook
                    .decisions
                    .iter()
                    .map(|d| &d.options[d.default as usize])
                    .collect(),
            };
            let result = skeleton::walk(&mut trial, &mut layers)
                .and_then(|out| check_output(m, &trial, trial.shape(out)));
            if let Err(e) = result {
                diags.push(
                    e.with_label(
                        option.span,
                        format!("with `{}` = `{}`", d.name, option.token),
                    )
                    .with_note(format!(
                        "while building space `{}` with choice `{}` set to option {j}",
                        space.name, d.name
                    )),
                );
            }
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let mut decisions = Arena::new();
    for d in hook.decisions.into_iter().chain(named) {
        let span = d.options.first().map_or(m.spaces.span(h), |o| o.span);
        decisions.append(d, span);
    }
    Ok(SpaceInfo {
        space: Some(h),
        name: space.name.clone(),
        decisions,
        slots: hook.slots,
        output,
    })
}
