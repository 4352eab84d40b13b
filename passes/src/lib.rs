//! spacetune's passes over the IR, and the pipeline that orders them.
//!
//! The passes, in pipeline order (see [`pipeline`]): `check`, `expand` (pure: the front
//! end), then `measure`, `correct` (in [`latency`]), `profile`, `select` and `reduce`
//! (the reduced space as a module of its own), `search`, `emit` (the chosen network,
//! retrained by [`retrain`]) and `compare` (the baselines beside it).
//! Passes that reach outside the source take a backend, the measurement store, data and
//! progress reporting from the driver's [`ctx::Ctx`]; what they learn becomes a side
//! table of the module. Elaboration (templates + decisions → graphs) is the shared
//! machinery under the front end, in `elaborate`, `skeleton`, `resolve`, `eval` and
//! `prims`. Beside the pipeline: fusion-rule detection ([`fusion`]), the egg kernel model
//! ([`kernels`]) and the latency evaluation ([`evaluate`]) that scores every predictor.
//!
//! Dependencies point one way: passes use the IR and the backends; neither knows passes.

pub mod check;
pub mod compare;
pub mod ctx;
pub mod elaborate;
pub mod emit;
pub mod eval;
pub mod evaluate;
pub mod expand;
pub mod fidelity;
pub mod fusion;
pub mod kernels;
pub mod latency;
pub mod measure;
pub mod pass;
pub mod pipeline;
pub mod pricing;
pub mod prims;
pub mod profile;
pub mod reduce;
pub mod reproduce;
pub mod resolve;
pub mod retrain;
pub mod search;
pub mod select;
pub mod skeleton;
pub mod supernet;
pub mod validate;
pub mod work;

pub use ctx::Ctx;
pub use pass::{Pass, PassManager};
pub use pipeline::{pass_names, passes};
use spacetune_ir::Diagnostics;

/// The closest of `candidates` to `name` by edit distance, if close enough to be a typo.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .filter(|c| *c != name)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// A unified diff of two texts (used for before/after dumps of a pass).
pub fn diff(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(2)
        .to_string()
}
