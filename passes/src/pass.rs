//! The `Pass` trait and the pass manager that runs an ordered list of passes, validating
//! the IR after each one (in tests) and dumping it on request.

use crate::ctx::Ctx;
use crate::validate::validate;
use spacetune_ir::{Diagnostics, Module};

/// A transformation of the module. One pass per file, named as a verb.
///
/// A pass reads what earlier passes left on the module and adds its own side table; what
/// it needs from outside the source (a backend, the store, data) it takes from the
/// [`Ctx`]. Pure passes ignore the context.
pub trait Pass {
    fn name(&self) -> &'static str;
    fn is_enabled(&self) -> bool {
        true
    }
    /// Needs nothing but the module: a compile without a context runs it.
    fn is_pure(&self) -> bool {
        true
    }
    fn run(&self, module: &mut Module, cx: &Ctx<'_>) -> Result<(), Diagnostics>;
}

/// A callback run after each pass with its name and the module.
pub type OnPass<'a> = Box<dyn FnMut(&str, &Module) + 'a>;

/// Runs passes in order.
#[derive(Default)]
pub struct PassManager<'a> {
    /// Check the IR's invariants after every pass (tests turn this on).
    pub validate: bool,
    /// Stop after this pass (inclusive); `None`: every pass (with a context), or every
    /// pure pass up to the first that is not (without one).
    pub until: Option<&'a str>,
    /// Called with the pass name and the module after every pass that ran.
    pub on_pass: Option<OnPass<'a>>,
}

impl PassManager<'_> {
    /// Runs `passes` with nothing from outside the source: the pure prefix of the list
    /// (or up to `until`, which must lie in it).
    pub fn run(
        &mut self,
        passes: &[Box<dyn Pass>],
        module: &mut Module,
    ) -> Result<(), Diagnostics> {
        let pure_end = passes.iter().take_while(|p| p.is_pure()).count();
        let upto = match self.until {
            Some(name) => passes.iter().position(|p| p.name() == name).map(|i| i + 1),
            None => Some(pure_end),
        };
        let end = upto.unwrap_or(passes.len());
        if end > pure_end {
            return Err(spacetune_ir::Diagnostic::error(format!(
                "the `{}` pass reaches outside the source (a backend, the store, data): run it with a context",
                passes[pure_end].name()
            ))
            .into());
        }
        self.run_with(&passes[..end], module, &Ctx::default())
    }

    /// Runs `passes` in order with the context, up to `until`.
    pub fn run_with(
        &mut self,
        passes: &[Box<dyn Pass>],
        module: &mut Module,
        cx: &Ctx<'_>,
    ) -> Result<(), Diagnostics> {
        for pass in passes.iter().filter(|p| p.is_enabled()) {
            pass.run(module, cx)?;
            if self.validate {
                if let Err(problems) = validate(module) {
                    panic!(
                        "IR invalid after pass `{}`:\n{}",
                        pass.name(),
                        problems.join("\n")
                    );
                }
            }
            if let Some(f) = self.on_pass.as_mut() {
                f(pass.name(), module);
            }
            if self.until == Some(pass.name()) {
                break;
            }
        }
        Ok(())
    }
}
