//! The `.space` language: the pest grammar (`space.pest`), and lowering of its parse tree
//! into spacetune's IR.
//!
//! The front end is a small pipeline: parse a file with pest → lower each top-level item
//! into the module's arenas (one function per grammar-rule family; every item keeps its
//! span) → follow `import`s, merging the imported blocks and cells. Names are *not*
//! resolved here; that is the `check` pass's job, so the parsed module is exactly what was
//! written. The IR's template layer is the typed syntax tree: there is no separate AST to
//! keep in step with it.

mod errors;
mod lower;

use spacetune_ir::{Diagnostics, Module, SourceMap};
use std::path::Path;

pub use lower::MAX_IMPORT_DEPTH;

#[derive(pest_derive::Parser)]
#[grammar = "space.pest"]
pub(crate) struct SpaceParser;

/// A parsed module together with the sources it came from (needed to render diagnostics).
pub struct Parsed {
    pub sources: SourceMap,
    pub result: Result<Module, Diagnostics>,
}

/// Parses a `.space` file from disk, following its imports (relative to the file).
pub fn parse_file(path: &Path) -> Parsed {
    let mut sources = SourceMap::default();
    let result = match std::fs::read_to_string(path) {
        Ok(text) => {
            let id = sources.add(path.display().to_string(), text);
            lower::lower_root(&mut sources, id, path.parent())
        }
        Err(e) => Err(spacetune_ir::Diagnostic::error(format!(
            "cannot read `{}`: {e}",
            path.display()
        ))
        .into()),
    };
    Parsed { sources, result }
}

/// Parses source text; imports are looked up relative to `base_dir` (or refused when
/// there is none).
pub fn parse_str(name: &str, text: &str, base_dir: Option<&Path>) -> Parsed {
    let mut sources = SourceMap::default();
    let id = sources.add(name, text);
    let result = lower::lower_root(&mut sources, id, base_dir);
    Parsed { sources, result }
}
