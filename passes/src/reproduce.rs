//! Two latency evaluations of the same spaces, each from a store of its own, side by side:
//! every predictor's scores in both, their difference, both recommendations and noise
//! floors, and the fusion verdicts that differ. What `latency-eval --reproduce` prints.
//!
//! Only figures both runs have are differenced; a predictor one run could not fit is a row
//! that says so, not a zero.

use crate::evaluate::Report;
use crate::latency::Agreement;
use serde::Serialize;
use spacetune_ir::PairRule;

/// One predictor in both runs (`None`: that run had no scores for it).
#[derive(Clone, Debug, Serialize)]
pub struct Line {
    pub name: String,
    pub runs: [Option<Agreement>; 2],
}

impl Line {
    /// Second run less first, in MAPE points (`None` unless both have scores).
    pub fn mape_diff(&self) -> Option<f64> {
        match &self.runs {
            [Some(a), Some(b)] => Some(b.mape - a.mape),
            _ => None,
        }
    }
    /// Second run less first, in points of the share within ±5%.
    pub fn within5_diff(&self) -> Option<f64> {
        match &self.runs {
            [Some(a), Some(b)] => Some(100.0 * (b.within5 - a.within5)),
            _ => None,
        }
    }
}

/// A fusion probe whose verdict differs between the runs (or that one run did not test).
#[derive(Clone, Debug, Serialize)]
pub struct VerdictDiff {
    pub a: String,
    pub b: String,
    pub place: String,
    pub verdicts: [Option<&'static str>; 2],
}

impl VerdictDiff {
    /// The probe is fused in one run and not in the other: the rule the predictors use
    /// differs. (Otherwise the runs only disagree on why it is not fused — "not fused",
    /// "undecided", or not tested — and the rules are the same.)
    pub fn rule_differs(&self) -> bool {
        let [one, two] = self.verdicts.map(|v| v == Some("fused"));
        one != two
    }
}

/// One space evaluated twice.
#[derive(Clone, Debug, Serialize)]
pub struct Reproduction {
    pub space: String,
    pub backends: [String; 2],
    pub lines: Vec<Line>,
    pub recommended: [Option<String>; 2],
    /// The noise floor of each run (a second measurement of some scored networks).
    pub repeat: [Option<Agreement>; 2],
    pub fused: [usize; 2],
    pub verdicts_differ: Vec<VerdictDiff>,
}

impl Reproduction {
    /// The largest MAPE difference between the runs over the predictors both scored.
    pub fn max_mape_diff(&self) -> Option<f64> {
        self.lines
            .iter()
            .filter_map(Line::mape_diff)
            .map(f64::abs)
            .max_by(f64::total_cmp)
    }
    /// The probes whose fusion rule differs between the runs (see [`VerdictDiff::rule_differs`]).
    pub fn rules_differ(&self) -> usize {
        self.verdicts_differ
            .iter()
            .filter(|d| d.rule_differs())
            .count()
    }
    /// Both runs recommend the same predictor.
    pub fn same_recommendation(&self) -> bool {
        self.recommended[0].is_some() && self.recommended[0] == self.recommended[1]
    }
}

/// The verdict a probe's rule reads as.
pub fn verdict(p: &PairRule) -> &'static str {
    match (p.fused, p.undecided) {
        (true, _) => "fused",
        (false, true) => "undecided",
        (false, false) => "not fused",
    }
}

/// The two runs of one space compared, predictor by predictor (in the first run's order,
/// then any only the second has) and probe by probe.
pub fn compare(first: &Report, second: &Report) -> Reproduction {
    let mut names: Vec<&str> = first.predictors.iter().map(|p| p.name.as_str()).collect();
    for p in &second.predictors {
        if !names.contains(&p.name.as_str()) {
            names.push(&p.name);
        }
    }
    let scores = |r: &Report, name: &str| {
        r.predictors
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.scored.clone())
    };
    let lines = names
        .iter()
        .map(|&name| Line {
            name: name.to_string(),
            runs: [scores(first, name), scores(second, name)],
        })
        .collect();
    Reproduction {
        space: first.space.clone(),
        backends: [first.backend.clone(), second.backend.clone()],
        lines,
        recommended: [first.recommended.clone(), second.recommended.clone()],
        repeat: [first.repeat.clone(), second.repeat.clone()],
        fused: [&first.fusion_pairs, &second.fusion_pairs]
            .map(|p| p.iter().filter(|r| r.fused).count()),
        verdicts_differ: verdicts_differ(&first.fusion_pairs, &second.fusion_pairs),
    }
}

/// The probes (op pair at a place) whose verdicts differ, including those only one run has.
fn verdicts_differ(first: &[PairRule], second: &[PairRule]) -> Vec<VerdictDiff> {
    let same_probe = |x: &PairRule, y: &PairRule| x.a == y.a && x.b == y.b && x.place == y.place;
    let mut out = Vec::new();
    for p in first {
        let other = second.iter().find(|q| same_probe(p, q));
        let (one, two) = (verdict(p), other.map(verdict));
        if two != Some(one) {
            out.push(VerdictDiff {
                a: p.a.clone(),
                b: p.b.clone(),
                place: p.place.clone(),
                verdicts: [Some(one), two],
            });
        }
    }
    for q in second {
        if !first.iter().any(|p| same_probe(p, q)) {
            out.push(VerdictDiff {
                a: q.a.clone(),
                b: q.b.clone(),
                place: q.place.clone(),
                verdicts: [None, Some(verdict(q))],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::Score;

    fn agreement(mape: f64, within5: f64) -> Agreement {
        Agreement {
            n: 200,
            mape,
            rmspe: mape,
            within5,
            within10: 1.0,
            kendall_tau: 0.9,
            bias: 0.0,
        }
    }

    fn rule(a: &str, fused: bool, undecided: bool) -> PairRule {
        PairRule {
            a: a.into(),
            b: "bn".into(),
            place: "1x8x8".into(),
            t_a: 1.0,
            t_b: 0.5,
            t_ab: 1.1,
            fused,
            spread_ms: 0.0,
            undecided,
            attempts: 1,
            apart: true,
        }
    }

    fn report(scores: &[(&str, Option<(f64, f64)>)], pairs: Vec<PairRule>, rec: &str) -> Report {
        Report {
            space: "mobile".into(),
            backend: "ort".into(),
            samples: 200,
            seed: 0,
            ssbns: 81,
            fusion_pairs: pairs,
            distinct_kernels: 0,
            handover_pairs: 0,
            predictors: scores
                .iter()
                .map(|&(name, s)| Score {
                    name: name.into(),
                    what: String::new(),
                    scored: s.map(|(m, w)| agreement(m, w)),
                    validation: None,
                    unscored: s.is_none().then(|| "not fitted".into()),
                })
                .collect(),
            recommended: Some(rec.into()),
            choice: None,
            repeat: None,
            repeat_cv: None,
            corrections_hold: None,
            fit: Default::default(),
            graph_ops: Vec::new(),
            scored: vec![],
            calibration: vec![],
            validation: vec![],
        }
    }

    #[test]
    fn differences_are_second_less_first_and_only_where_both_scored() {
        let a = report(
            &[("naive", Some((16.5, 0.0))), ("kernel+fit", None)],
            vec![rule("conv", true, false), rule("dwconv", false, false)],
            "naive",
        );
        let b = report(
            &[
                ("naive", Some((13.25, 0.07))),
                ("kernel+fit", Some((2.0, 0.9))),
            ],
            vec![
                rule("conv", false, true),
                rule("dwconv", false, false),
                rule("add", true, false),
            ],
            "kernel+fit",
        );
        let r = compare(&a, &b);
        assert_eq!(r.lines[0].mape_diff(), Some(-3.25));
        assert!((r.lines[0].within5_diff().unwrap() - 7.0).abs() < 1e-9);
        assert_eq!(r.lines[1].mape_diff(), None);
        assert_eq!(r.max_mape_diff(), Some(3.25));
        assert!(!r.same_recommendation());
        assert_eq!(r.fused, [1, 1]);
        // conv→bn flipped to undecided; add→bn only in the second run; dwconv→bn agrees.
        let differ: Vec<(&str, [Option<&str>; 2])> = r
            .verdicts_differ
            .iter()
            .map(|d| (d.a.as_str(), d.verdicts))
            .collect();
        assert_eq!(
            differ,
            vec![
                ("conv", [Some("fused"), Some("undecided")]),
                ("add", [None, Some("fused")])
            ]
        );
        assert_eq!(r.rules_differ(), 2);
    }

    #[test]
    fn a_probe_not_fused_in_both_runs_for_different_reasons_is_the_same_rule() {
        let a = report(
            &[("naive", Some((1.0, 1.0)))],
            vec![rule("conv", false, false), rule("dwconv", false, true)],
            "naive",
        );
        let b = report(
            &[("naive", Some((1.0, 1.0)))],
            vec![rule("conv", false, true), rule("add", false, false)],
            "naive",
        );
        let r = compare(&a, &b);
        // conv: not fused / undecided; dwconv: undecided / not tested; add: not tested / not
        // fused. Three verdicts differ, no rule does.
        assert_eq!(r.verdicts_differ.len(), 3);
        assert_eq!(r.rules_differ(), 0);
    }
}
