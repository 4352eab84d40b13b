//! The pipeline: the passes in the order they run, each with why it sits where it does.

use crate::pass::Pass;

/// The ordered pass list of a compile. The passes after `expand` need data from outside
/// the source — latencies (`latency::Correct`, run by `spacetune latency-eval` once the
/// networks are measured), accuracies (`select`) — and are run by the commands that have it,
/// in this order: measure, correct, profile, select.
pub fn passes() -> Vec<Box<dyn Pass>> {
    vec![
        // Resolves names and decisions and proves every candidate builds where it can go;
        // everything after may assume a well-formed space.
        Box::new(crate::check::Check),
        // Needs check's decisions; builds SSBN_0 and every SSBN_(i,j).
        Box::new(crate::expand::Expand),
    ]
}

/// Names of the passes, in order (for `--dump-after` and `--until`).
pub fn pass_names() -> Vec<&'static str> {
    passes().iter().map(|p| p.name()).collect()
}
