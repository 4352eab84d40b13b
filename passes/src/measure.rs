//! `measure`: every SSBN of every space lowered through the backend and timed whole, with
//! its space's SSBN_0 as the drift reference; the store memoises every result, so a killed
//! run continues where it stopped. A network that fails is recorded and the run goes on.

use crate::ctx::{outside, Ctx};
use crate::pass::Pass;
use spacetune_backends::{measure::measure_all, Backend, Lowered};
use spacetune_ir::*;
use std::collections::BTreeMap;

pub struct Measure;

impl Pass for Measure {
    fn name(&self) -> &'static str {
        "measure"
    }
    fn is_pure(&self) -> bool {
        false
    }
    fn run(&self, m: &mut Module, cx: &Ctx<'_>) -> Result<(), Diagnostics> {
        assert!(m.phase >= Phase::Expanded, "measure runs after expand");
        let backend = cx.backend(self.name())?;
        let store = cx.store(self.name())?;
        let spaces = cx.spaces(m)?;
        let nets: Vec<(Handle<Network>, &Network)> = m
            .networks
            .iter()
            .filter(|(_, n)| spaces.contains(&n.space))
            .collect();
        let stage = cx
            .progress
            .stage(&format!("measure {}", backend.name()), nets.len());
        let mut results = BTreeMap::new();
        for &s in &spaces {
            let in_space: Vec<_> = nets.iter().filter(|(_, n)| n.space == s).collect();
            let (lowered, failed) = lower_all(backend, in_space.iter().map(|(h, n)| (*h, *n)));
            for (h, e) in failed {
                stage.tick(&m.networks[h].id);
                results.insert(h, e);
            }
            let reference = in_space
                .iter()
                .find(|(_, n)| n.origin == Origin::Base)
                .and_then(|(h, _)| lowered.iter().find(|(l, _)| l == h))
                .map(|(_, l)| l);
            let only: Vec<Lowered> = lowered.iter().map(|(_, l)| l.clone()).collect();
            let outcomes = measure_all(
                backend,
                &only,
                reference,
                &cx.protocol,
                store,
                cx.drift,
                |o| stage.tick(&o.id),
            )
            .map_err(|e| outside(&format!("measuring on {}", backend.name()), e))?;
            for ((h, _), o) in lowered.iter().zip(outcomes) {
                let timed = Timed {
                    hash: o.hash,
                    cached: o.cached,
                    result: o.latency,
                };
                results.insert(*h, timed);
            }
        }
        m.latencies = Some(LatencyTable {
            backend: backend.fingerprint().under(&cx.protocol).to_string(),
            results,
        });
        m.advance(Phase::Measured);
        Ok(())
    }
}

/// Networks lowered, and those that could not be, each with its failed measurement.
type Lowering = (
    Vec<(Handle<Network>, Lowered)>,
    Vec<(Handle<Network>, Timed)>,
);

/// Lowers every network; one the backend cannot lower is a failed measurement of its own.
pub fn lower_all<'m>(
    backend: &dyn Backend,
    nets: impl Iterator<Item = (Handle<Network>, &'m Network)>,
) -> Lowering {
    let mut lowered = Vec::new();
    let mut failed = Vec::new();
    for (h, n) in nets {
        match backend.lower(n) {
            Ok(l) => lowered.push((h, l)),
            Err(e) => failed.push((
                h,
                Timed {
                    hash: String::new(),
                    cached: false,
                    result: Err(format!("lowering: {e}")),
                },
            )),
        }
    }
    (lowered, failed)
}
