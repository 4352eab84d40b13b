//! `reduce`: the selection's winning space cut down to the options it keeps, as a module of
//! its own (IR → IR; the DSL printer only prints it). Every decision keeps exactly its own
//! picks plus its default: a searchable layer gets a `layer i { ... }` list, and names that
//! were declared together (`choice e01, e02 { ... }`) become one `choice` each, so tied
//! places stay tied but no decision inherits another's picks.

use crate::ctx::Ctx;
use crate::pass::{Pass, PassManager};
use spacetune_ir::dsl::{call_op, value_expr};
use spacetune_ir::*;

pub struct Reduce;

impl Pass for Reduce {
    fn name(&self) -> &'static str {
        "reduce"
    }
    fn run(&self, m: &mut Module, _: &Ctx<'_>) -> Result<(), Diagnostics> {
        assert!(m.phase >= Phase::Selected, "reduce runs after select");
        let selection = m.selection.as_ref().ok_or_else(|| {
            Diagnostic::error("no selection: the `select` pass has not run".to_string())
        })?;
        let mut reduced = reduced_module(m, selection.space, &selection.keep);
        // The reduced space must stand on its own: it goes through the front end again.
        PassManager::default()
            .run(&crate::passes(), &mut reduced)
            .map_err(|d| {
                let messages: Vec<String> = d.0.iter().map(|d| d.message.clone()).collect();
                Diagnostic::error(format!(
                    "internal error: the reduced space does not check: {}\n{}",
                    messages.join("; "),
                    dsl::print_module(&reduced)
                ))
            })?;
        m.reduced = Some(Box::new(reduced));
        m.advance(Phase::Reduced);
        Ok(())
    }
}

/// Space `space` of `m` alone, decision d offering only the options `keep[d]` (which hold
/// its default), at phase `Parsed`.
pub fn reduced_module(m: &Module, space: u32, keep: &[Vec<u32>]) -> Module {
    let info = &m.checked[space as usize];
    let source = info.space.expect("a reduced space comes from a space");
    let mut r = Module {
        phase: Phase::Parsed,
        checked: Vec::new(),
        networks: Arena::new(),
        latencies: None,
        luts: Vec::new(),
        accuracies: None,
        selection: None,
        reduced: None,
        spaces: Arena::new(),
        ..m.clone()
    };
    let span = m.spaces.span(source);
    let original = &m.spaces[source];
    let mut s = Space {
        name: original.name.clone(),
        candidates: Vec::new(),
        default: original.default,
        layers: Vec::new(),
        choices: Vec::new(),
    };
    for ((_, d), kept) in info.decisions.iter().zip(keep) {
        let entries: Vec<Handle<CandidateEntry>> = kept
            .iter()
            .map(|&o| entry(&mut r, &d.options[o as usize], span))
            .collect();
        match d.kind {
            DecisionKind::Layer(i) => {
                let layer = r.exprs.append(Expr::Int(i as i64), span);
                s.layers.push(LayerList { layer, entries });
            }
            DecisionKind::Named => {
                let declared = original
                    .choices
                    .iter()
                    .find(|c| c.names.contains(&d.name))
                    .expect("a named decision comes from a choice");
                s.choices.push(ChoiceDecl {
                    names: vec![d.name.clone()],
                    entries,
                    default: declared.default.clone(),
                });
            }
        }
    }
    r.spaces.append(s, span);
    r
}

/// A candidate entry offering exactly `option`.
fn entry(m: &mut Module, option: &Alternative, span: Span) -> Handle<CandidateEntry> {
    let offer = match &option.resolved {
        Resolved::Call { name, args } => Offer::Call(call_op(m, name, args, &[])),
        Resolved::Value(v) => Offer::Value(value_expr(m, v)),
    };
    m.entries.append(
        CandidateEntry {
            offer,
            grid: Vec::new(),
            guard: None,
        },
        span,
    )
}
