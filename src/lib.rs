//! spacetune: a compiler for hardware-aware neural architecture search (BBSSP).
//!
//! The one-call API: [`compile`] parses a `.space` file and runs the pipeline on it — the
//! front end (check, expand) alone, or, given a driver context ([`pass::Ctx`]: a backend,
//! the store, where accuracies come from), every pass up to the one named by `until`.

use spacetune_ir::{Diagnostics, Module, SourceMap};
use spacetune_passes::{passes, PassManager};
use std::path::Path;

pub mod fuzzing;
pub mod report;

pub use spacetune_backends as backends;
pub use spacetune_grammar as grammar;
pub use spacetune_ir as ir;
pub use spacetune_passes as pass;

/// The outcome of compiling a file: the sources (to render diagnostics) and the module or
/// the diagnostics that stopped it.
pub struct Compiled {
    pub sources: SourceMap,
    pub result: Result<Module, Diagnostics>,
    /// When a pass after the front end failed: the module as the passes before it left it,
    /// so what was already measured or trained is still reported.
    pub partial: Option<Module>,
}

/// Options of a compile.
#[derive(Default)]
pub struct Options<'a> {
    /// Stop after this pass (inclusive); `None` runs the whole pipeline with a context,
    /// the front end (every pass up to the first that needs one) without.
    pub until: Option<&'a str>,
    /// What the passes after the front end reach outside the source.
    pub ctx: Option<spacetune_passes::Ctx<'a>>,
    /// Validate the IR after every pass.
    pub validate: bool,
    /// Called after every pass with its name and the module.
    pub on_pass: Option<spacetune_passes::pass::OnPass<'a>>,
}

/// Parses `path` and runs the pipeline on it.
pub fn compile(path: &Path, options: Options) -> Compiled {
    let parsed = grammar::parse_file(path);
    run(parsed, options)
}

/// Like [`compile`], from source text (imports resolve relative to `base_dir`).
pub fn compile_str(name: &str, text: &str, base_dir: Option<&Path>, options: Options) -> Compiled {
    run(grammar::parse_str(name, text, base_dir), options)
}

fn run(parsed: grammar::Parsed, options: Options) -> Compiled {
    let mut partial = None;
    let result = parsed.result.and_then(|mut module| {
        let mut manager = PassManager {
            validate: options.validate,
            until: options.until,
            on_pass: options.on_pass,
        };
        let ran = match &options.ctx {
            Some(cx) => manager.run_with(&passes(), &mut module, cx),
            None => manager.run(&passes(), &mut module),
        };
        match ran {
            Ok(()) => Ok(module),
            Err(diags) => {
                if module.phase > spacetune_ir::Phase::Expanded {
                    partial = Some(module);
                }
                Err(diags)
            }
        }
    });
    Compiled {
        sources: parsed.sources,
        result,
        partial,
    }
}
