//! The `Pass` trait and the pass manager that runs an ordered list of passes, validating
//! the IR after each one (in tests) and dumping it on request.

use crate::validate::validate;
use spacetune_ir::{Diagnostics, Module};

/// A transformation of the module. One pass per file, named as a verb.
pub trait Pass {
    fn name(&self) -> &'static str;
    fn is_enabled(&self) -> bool {
        true
    }
    fn run(&self, module: &mut Module) -> Result<(), Diagnostics>;
}

/// A callback run after each pass with its name and the module.
pub type OnPass<'a> = Box<dyn FnMut(&str, &Module) + 'a>;

/// Runs passes in order.
#[derive(Default)]
pub struct PassManager<'a> {
    /// Check the IR's invariants after every pass (tests turn this on).
    pub validate: bool,
    /// Stop after this pass (inclusive).
    pub until: Option<&'a str>,
    /// Called with the pass name and the module after every pass that ran.
    pub on_pass: Option<OnPass<'a>>,
}

impl PassManager<'_> {
    pub fn run(
        &mut self,
        passes: &[Box<dyn Pass>],
        module: &mut Module,
    ) -> Result<(), Diagnostics> {
        for pass in passes.iter().filter(|p| p.is_enabled()) {
            pass.run(module)?;
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
