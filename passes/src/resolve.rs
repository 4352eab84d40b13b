//! Candidate entries → resolved alternatives: grids expanded, guards applied, arguments
//! evaluated and bound, tokens named.

use crate::elaborate::{bind, ArgValue, Builder};
use crate::eval::Env;
use crate::prims;
use spacetune_ir::*;

/// A grid may produce at most this many candidates.
pub const MAX_GRID: usize = 10_000;

/// Resolves one offer in `env` (a block/op call or a value).
pub fn offer(b: &Builder, offer: &Offer, env: &Env) -> Result<Alternative, Diagnostic> {
    let m = b.m;
    match *offer {
        Offer::Value(h) => {
            let v = b.eval(h, env)?;
            Ok(Alternative {
                token: v.token(),
                resolved: Resolved::Value(v),
                span: m.exprs.span(h),
            })
        }
        Offer::Call(h) => {
            let call = &m.ops[h];
            let span = m.ops.span(h);
            let mut args = Vec::new();
            for a in &call.args {
                args.push(ArgValue {
                    name: a.name.clone(),
                    value: b.eval(a.value, env)?,
                    span: m.exprs.span(a.value),
                });
            }
            let (name, params) = if let Some(sig) = prims::signature(&call.name) {
                let name = prims::canonical(&call.name).to_string();
                (
                    name,
                    sig.iter()
                        .map(|(n, d)| (n.to_string(), d.map(|d| d.value())))
                        .collect::<Vec<_>>(),
                )
            } else if let Some(block) = m.block(&call.name) {
                (call.name.clone(), b.block_params(block)?)
            } else {
                let mut d = Diagnostic::error(format!("unknown block `{}`", call.name))
                    .with_label(span, "not defined");
                let names = m
                    .blocks
                    .iter()
                    .map(|(_, b)| b.name.as_str())
                    .chain(prims::NAMES.iter().copied());
                if let Some(s) = crate::suggest(&call.name, names) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                return Err(d);
            };
            let (bound, _) = bind(&call.name, &params, args, &[], span)?;
            let mut token = name.clone();
            for ((param, value), (_, default)) in bound.iter().zip(&params) {
                if default.as_ref() != Some(value) {
                    token.push('_');
                    token.push_str(param);
                    token.push_str(&value.token());
                }
            }
            Ok(Alternative {
                token,
                resolved: Resolved::Call { name, args: bound },
                span,
            })
        }
    }
}

/// Expands candidate entries into alternatives, in order: each grid is the cartesian
/// product of its bindings, the last varying fastest; guards are evaluated in `env` plus
/// the grid's bindings.
pub fn entries(
    b: &Builder,
    list: &[Handle<CandidateEntry>],
    env: &Env,
) -> Result<Vec<Alternative>, Diagnostic> {
    let m = b.m;
    let mut out = Vec::new();
    for &e in list {
        let entry = &m.entries[e];
        let span = m.entries.span(e);
        let mut combos: Vec<Env> = vec![env.clone()];
        for (name, list) in &entry.grid {
            let mut next = Vec::new();
            for scope in &combos {
                let items = match b.eval(*list, scope)? {
                    Value::List(items) => items,
                    other => {
                        return Err(Diagnostic::error(format!(
                            "`{name}` must range over a list, found {}",
                            other.type_name()
                        ))
                        .with_label(m.exprs.span(*list), "not a list"))
                    }
                };
                for item in items {
                    next.push(scope.clone().with(name, item));
                }
                if next.len() > MAX_GRID {
                    return Err(Diagnostic::error(format!(
                        "this grid has more than {MAX_GRID} candidates"
                    ))
                    .with_label(span, "too large"));
                }
            }
            combos = next;
        }
        for scope in combos {
            if let Some(g) = entry.guard {
                let v = b.eval(g, &scope)?;
                if !b.truth(g, v)? {
                    continue;
                }
            }
            let mut alt = offer(b, &entry.offer, &scope)?;
            alt.span = span;
            if let Some(prev) = out.iter().find(|a: &&Alternative| a.token == alt.token) {
                return Err(
                    Diagnostic::error(format!("duplicate candidate `{}`", alt.token))
                        .with_label(span, "offered again here")
                        .with_label(prev.span, "first offered here"),
                );
            }
            out.push(alt);
        }
    }
    Ok(out)
}

/// The named choices of a space, with their options and defaults, in declaration order.
pub fn named_choices(b: &Builder, space: &Space) -> Result<Vec<Decision>, Diagnostic> {
    let m = b.m;
    let env = b.global_env();
    let mut decisions: Vec<Decision> = Vec::new();
    for c in &space.choices {
        let options = entries(b, &c.entries, &env)?;
        let default = offer(b, &c.default, &env)?;
        for name in &c.names {
            let span = options.first().map_or(default.span, |o| o.span);
            if prims::signature(name).is_some() || m.block(name).is_some() {
                return Err(Diagnostic::error(format!(
                    "choice `{name}` has the name of an op or block"
                ))
                .with_label(span, "in this choice")
                .with_help("rename the choice; a cell edge naming it would be ambiguous"));
            }
            if decisions.iter().any(|d| &d.name == name) {
                return Err(Diagnostic::error(format!(
                    "choice `{name}` is declared twice in space `{}`",
                    space.name
                ))
                .with_label(span, "again here"));
            }
            if options.is_empty() {
                return Err(Diagnostic::error(format!("choice `{name}` has no options"))
                    .with_label(default.span, "default here"));
            }
            let Some(d) = options.iter().position(|o| o.resolved == default.resolved) else {
                return Err(Diagnostic::error(format!(
                    "the default `{}` of choice `{name}` is not one of its options",
                    default.token
                ))
                .with_label(default.span, "not among the options")
                .with_note(format!(
                    "options: {}",
                    options
                        .iter()
                        .map(|o| o.token.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            decisions.push(Decision {
                name: name.clone(),
                kind: DecisionKind::Named,
                options: options.clone(),
                default: d as u32,
            });
        }
    }
    Ok(decisions)
}
