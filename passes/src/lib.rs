//! spacetune's passes over the IR, and the pipeline that orders them.
//!
//! `check` and `expand` are passes; elaboration (templates + decisions → graphs) is the
//! shared machinery under them, in `elaborate`, `skeleton`, `resolve`, `eval` and `prims`.

pub mod check;
pub mod elaborate;
pub mod eval;
pub mod expand;
pub mod fusion;
pub mod kernels;
pub mod latency;
pub mod pass;
pub mod pipeline;
pub mod prims;
pub mod resolve;
pub mod select;
pub mod skeleton;
pub mod validate;

pub use pass::{Pass, PassManager};
pub use pipeline::{pass_names, passes};

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
