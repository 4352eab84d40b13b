//! How the search and its baselines price an architecture: an additive table read option
//! by option (`corrected`, `naive`), or the egg kernel model of the whole pruned network
//! (`kernel`), for spaces whose latency is not a sum over decisions — a cell whose `zero`
//! edges cut off a node prunes every edge out of it, which no per-option table can see.

use crate::ctx::Ctx;
use crate::kernels::{FusionRules, Plan};
use crate::latency::{anchor, measure_nets_on};
use crate::search::costs;
use spacetune_backends::measure::Anchor;
use spacetune_backends::search::{LatencyCosts, LatencyModel};
use spacetune_ir::*;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// The latency model a search reads.
pub enum Pricing<'c> {
    Table(LatencyCosts),
    Kernel(Box<KernelLatency<'c>>),
}

impl<'c> Pricing<'c> {
    /// The model of `predictor` for space `s` of `tm` (the searched module), priced on the
    /// scale of space `original` of `m`.
    pub fn new(
        m: &'c Module,
        cx: &'c Ctx<'c>,
        (tm, s): (&'c Module, u32),
        original: u32,
        predictor: &str,
    ) -> Result<Pricing<'c>, Diagnostics> {
        if predictor != "kernel" {
            let info = &tm.checked[s as usize];
            return Ok(Pricing::Table(costs(m, original, info, predictor)?));
        }
        Ok(Pricing::Kernel(Box::new(KernelLatency::new(
            m, cx, tm, s, original,
        )?)))
    }

    pub fn model(&self) -> &dyn LatencyModel {
        match self {
            Pricing::Table(t) => t,
            Pricing::Kernel(k) => k.as_ref(),
        }
    }

    /// What the model is, for a checkpoint key: a table's every entry; the kernel model's
    /// fusion rules and per-call cost (its kernel timings follow from the backend).
    pub fn key(&self) -> serde_json::Value {
        match self {
            Pricing::Table(t) => serde_json::json!(t),
            Pricing::Kernel(k) => serde_json::json!({
                "kernel": { "fused": k.rules.fused, "call_ms": k.call }
            }),
        }
    }

    /// The predicted latency of `choices`, where the model gives one.
    pub fn of(&self, choices: &[u32]) -> Option<f64> {
        self.model().latency(choices).ok()
    }
}

/// The kernel model over whole architectures: each one elaborated, pruned, split into the
/// kernels the backend's fusion rules make, and priced as the per-call cost plus every
/// kernel's own time. Kernels are timed on the backend the first time an architecture
/// needs them (on the anchor of the original space's SSBNs, like every measurement) and
/// remembered, as are the architectures priced.
pub struct KernelLatency<'c> {
    module: &'c Module,
    space: u32,
    cx: &'c Ctx<'c>,
    anchor: Anchor,
    rules: FusionRules,
    call: f64,
    timed: RefCell<BTreeMap<String, f64>>,
    priced: RefCell<HashMap<Vec<u32>, f64>>,
}

impl<'c> KernelLatency<'c> {
    fn new(
        m: &'c Module,
        cx: &'c Ctx<'c>,
        tm: &'c Module,
        s: u32,
        original: u32,
    ) -> Result<KernelLatency<'c>, Diagnostics> {
        let backend = cx.backend("search")?;
        let pairs = crate::fusion::detect_in(cx, m, &[], backend, "the kernel model")?;
        let anchor = anchor(m, original, backend)?;
        let empty = Network::fixed("empty", crate::fusion::empty());
        let call = measure_nets_on(cx, &anchor, &[empty], None, "per-call cost")?[0];
        Ok(KernelLatency {
            module: tm,
            space: s,
            cx,
            anchor,
            rules: crate::fusion::rules(&pairs),
            call,
            timed: RefCell::new(BTreeMap::new()),
            priced: RefCell::new(HashMap::new()),
        })
    }

    fn price(&self, choices: &[u32]) -> Result<f64, Diagnostics> {
        let info = &self.module.checked[self.space as usize];
        let graph = crate::expand::build(self.module, info, choices)?.pruned();
        let plan = Plan::new(std::iter::once(graph), &self.rules);
        let missing: Vec<(String, Network)> = plan
            .kernels
            .iter()
            .filter(|(key, _)| !self.timed.borrow().contains_key(*key))
            .map(|(key, g)| {
                (
                    key.clone(),
                    Network::fixed(format!("kernel-{key}"), g.clone()),
                )
            })
            .collect();
        if !missing.is_empty() {
            let nets: Vec<Network> = missing.iter().map(|(_, n)| n.clone()).collect();
            let ms = measure_nets_on(self.cx, &self.anchor, &nets, None, "kernels")?;
            let mut timed = self.timed.borrow_mut();
            for ((key, _), t) in missing.into_iter().zip(ms) {
                timed.insert(key, t);
            }
        }
        let timed = self.timed.borrow();
        // Hand-over pairs are not timed here: pass each at the per-call cost (nothing saved),
        // and read the model without them.
        let ms: Vec<f64> = plan
            .kernels
            .keys()
            .map(|k| timed[k])
            .chain(plan.pairs.keys().map(|_| self.call))
            .collect();
        Ok(plan.predict(self.call, &ms).0[0])
    }
}

impl LatencyModel for KernelLatency<'_> {
    fn latency(&self, choices: &[u32]) -> Result<f64, String> {
        if let Some(&ms) = self.priced.borrow().get(choices) {
            return Ok(ms);
        }
        let ms = self.price(choices).map_err(|d| d.0[0].message.clone())?;
        self.priced.borrow_mut().insert(choices.to_vec(), ms);
        Ok(ms)
    }
}
