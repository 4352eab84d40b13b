//! The pipeline: the passes in the order they run, each with why it sits where it does.
//! Every command runs a prefix of this list (`spacetune run FILE --until PASS` names it).

use crate::pass::Pass;

/// The ordered pass list.
pub fn passes() -> Vec<Box<dyn Pass>> {
    vec![
        // Resolves names and decisions and proves every candidate builds where it can go;
        // everything after may assume a well-formed space.
        Box::new(crate::check::Check),
        // Needs check's decisions; builds SSBN_0 and every SSBN_(i,j).
        Box::new(crate::expand::Expand),
        // Times the SSBNs whole on the backend (the store memoises every result). The
        // first pass that needs the outside world: a compile without a context stops here.
        Box::new(crate::measure::Measure),
        // Needs every SSBN of a space measured: the corrected table is built from the
        // differences Lat(SSBN_(i,j)) − Lat(SSBN_0); the naive one from blocks timed alone.
        Box::new(crate::latency::Correct),
        // Independent of the latencies, but after them: measuring is minutes and training
        // is hours, so a backend that cannot run the space fails before any training.
        Box::new(crate::profile::Profile),
        // Needs a latency and an accuracy for every SSBN of every space.
        Box::new(crate::select::Select),
        // Needs the selection; its module is what the search (next) will run on.
        Box::new(crate::reduce::Reduce),
        // Needs the reduced space and the latency table of the space it came from.
        Box::new(crate::search::Search),
        // Needs θ (and the supernet's weights the search saved).
        Box::new(crate::emit::Emit),
        // Needs the chosen network's search time (the random searches' budget) and its
        // outcome table to add the baselines to; last, so they never cost its figures.
        Box::new(crate::compare::Compare),
    ]
}

/// Names of the passes, in order (for `--dump-after` and `--until`).
pub fn pass_names() -> Vec<&'static str> {
    passes().iter().map(|p| p.name()).collect()
}
