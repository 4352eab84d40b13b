//! `emit`: argmax θ as the chosen network — a fixed `.space`, IR JSON, ONNX (loaded back in
//! ONNX Runtime and compared with tch), the supernet's weights for it and the retrained
//! ones (safetensors) — then retrained from scratch on the budget, its test accuracy taken,
//! and measured whole on the backend (measured, the predictor's figure beside it); SSBN_0
//! of the same space goes through the same retraining and measurement as the baseline.

use crate::ctx::{outside, Ctx, SearchSpec};
use crate::latency::{anchor, measure_nets_on};
use crate::pass::Pass;
use crate::pricing::Pricing;
use crate::retrain::{Retrained, Retraining};
use crate::search::{spec, target};
use crate::supernet;
use spacetune_backends::search as engine;
use spacetune_backends::torch::TchNet;
use spacetune_backends::weights::random_input;
use spacetune_backends::{onnx, onnxrt, Options};
use spacetune_ir::*;
use std::path::Path;

pub struct Emit;

impl Pass for Emit {
    fn name(&self) -> &'static str {
        "emit"
    }
    fn is_pure(&self) -> bool {
        false
    }
    fn run(&self, m: &mut Module, cx: &Ctx<'_>) -> Result<(), Diagnostics> {
        assert!(m.phase >= Phase::Searched, "emit runs after search");
        let spec = spec(cx, self.name())?;
        let chosen = emit(m, cx, spec)?;
        m.chosen = Some(chosen);
        m.advance(Phase::Chosen);
        Ok(())
    }
}

fn emit(m: &Module, cx: &Ctx<'_>, spec: &SearchSpec) -> Result<Chosen, Diagnostics> {
    let searched = m
        .searched
        .as_ref()
        .ok_or_else(|| Diagnostic::error("no search: `search` has not run".to_string()))?;
    let (tm, s, original) = target(m, spec.full)?;
    let info = &tm.checked[s as usize];
    let sn = supernet::build(tm, s)?;
    let id = format!("{}-chosen", info.name);
    let (network, origin) = supernet::network(tm, s, &sn, &searched.choices, id)?;
    let base = base_of(tm, s)?;
    let out = &spec.out;
    std::fs::create_dir_all(out).map_err(|e| outside(&format!("creating {}", out.display()), e))?;
    let stem = network.id.clone();
    let mut files = vec![
        write(
            out,
            &format!("{stem}.space"),
            dsl::print_network(tm, &network).as_bytes(),
        )?,
        write(
            out,
            &format!("{stem}.json"),
            serde_json::to_string_pretty(&network)
                .map_err(|e| outside("serialising the chosen network", e))?
                .as_bytes(),
        )?,
    ];
    // The weights the supernet trained for it, by node of the unpruned network.
    let supernet_weights = engine::load_weights(Path::new(&searched.weights))
        .map_err(|e| outside("reading the supernet's weights", e))?;
    let inherited = out.join(format!("{stem}.supernet.safetensors"));
    engine::save_weights(&engine::cut_weights(&supernet_weights, &origin), &inherited)
        .map_err(|e| outside("writing the inherited weights", e))?;
    files.push(inherited.display().to_string());

    let pricing = Pricing::new(m, cx, (tm, s), original, &spec.predictor)?;
    let retraining = Retraining::new(spec, network.graph.shapes[0])?;
    let stage = cx.progress.stage("retrain from scratch", 2);
    stage.working(&network.id);
    let chosen = retraining.run(&network)?;
    stage.tick(&network.id);
    stage.working(&base.id);
    let baseline = retraining.run(&base)?;
    stage.tick(&base.id);
    files.extend(write_trained(cx, out, &stem, &chosen)?);

    let measured = measure(m, cx, original, &[network.clone(), base.clone()]);
    let outcomes = vec![
        Outcome {
            name: "chosen".into(),
            key: network.key.clone(),
            test_accuracy: Ok(chosen.accuracy),
            measured_ms: measured[0].clone(),
            predicted_ms: pricing.of(&network.choices),
            search_seconds: searched.seconds,
            peak_bytes: searched.peak_bytes(),
            train_seconds: chosen.seconds,
            detail: format!("{} search on the {} space", searched.mode, searched.on),
        },
        Outcome {
            name: "ssbn0".into(),
            key: base.key.clone(),
            test_accuracy: Ok(baseline.accuracy),
            measured_ms: measured[1].clone(),
            predicted_ms: pricing.of(&base.choices),
            search_seconds: 0.0,
            peak_bytes: None,
            train_seconds: baseline.seconds,
            detail: "every decision at its default".into(),
        },
    ];
    Ok(Chosen {
        network,
        files,
        outcomes,
    })
}

/// SSBN_0 of space `s` of `m`.
pub(crate) fn base_of(m: &Module, s: u32) -> Result<Network, Diagnostics> {
    m.networks_of(s)
        .find(|(_, n)| n.origin == Origin::Base)
        .map(|(_, n)| n.clone())
        .ok_or_else(|| Diagnostic::error("the searched space has no SSBN_0".to_string()).into())
}

fn write(out: &Path, name: &str, bytes: &[u8]) -> Result<String, Diagnostics> {
    let path = out.join(name);
    std::fs::write(&path, bytes).map_err(|e| outside(&format!("writing {}", path.display()), e))?;
    Ok(path.display().to_string())
}

/// Writes the retrained network as ONNX and safetensors, and fails unless ONNX Runtime
/// loads the ONNX and agrees with tch on it.
fn write_trained(
    cx: &Ctx<'_>,
    out: &Path,
    stem: &str,
    r: &Retrained,
) -> Result<Vec<String>, Diagnostics> {
    let onnx_bytes =
        onnx::export(&r.graph, &r.weights, 1).map_err(|e| outside("exporting ONNX", e))?;
    let mut files = vec![write(out, &format!("{stem}.onnx"), &onnx_bytes)?];
    let retrained = out.join(format!("{stem}.safetensors"));
    engine::save_weights(&r.weights, &retrained).map_err(|e| outside("writing the weights", e))?;
    files.push(retrained.display().to_string());
    let agreement = onnx_agrees(r, &onnx_bytes);
    cx.progress.note(&format!(
        "emit: {stem}.onnx in ONNX Runtime: {}",
        match &agreement {
            Ok(d) => format!("loads, and agrees with tch to {d:.2e}"),
            Err(e) => format!("FAILED: {e}"),
        }
    ));
    agreement.map_err(|e| outside("checking the emitted ONNX in ONNX Runtime", e))?;
    Ok(files)
}

/// `nets` measured whole on the backend, on the scale of space `original`'s SSBNs (the
/// same anchor), each figure or why there is none.
pub(crate) fn measure(
    m: &Module,
    cx: &Ctx<'_>,
    original: u32,
    nets: &[Network],
) -> Vec<Result<f64, String>> {
    let measured = cx.backend("emit").and_then(|backend| {
        let anchor = anchor(m, original, backend)?;
        measure_nets_on(cx, &anchor, nets, None, "measure chosen")
    });
    match measured {
        Ok(ms) => ms.into_iter().map(Ok).collect(),
        Err(d) => vec![Err(d.0[0].message.clone()); nets.len()],
    }
}

/// Loads the ONNX in ONNX Runtime, runs it on a seeded input and returns the largest
/// difference from tch's output relative to its scale.
fn onnx_agrees(r: &Retrained, bytes: &[u8]) -> Result<f64, String> {
    let s = r.graph.shapes[0];
    let input = random_input(s, 1, 17);
    let ort = onnxrt::Ort::from_options(&Options::default()).map_err(|e| e.to_string())?;
    let got = onnxrt::infer(
        &ort,
        bytes,
        [1, s.c as usize, s.h as usize, s.w as usize],
        input.clone(),
    )
    .map_err(|e| e.to_string())?;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), &r.graph, &r.weights).map_err(|e| e.to_string())?;
    let x = tch::Tensor::from_slice(&input).view([1, s.c as i64, s.h as i64, s.w as i64]);
    let want = Vec::<f32>::try_from(&tch::no_grad(|| net.forward_t(&x, false)).flatten(0, -1))
        .map_err(|e| e.to_string())?;
    if want.len() != got.len() {
        return Err(format!(
            "{} outputs from ONNX Runtime, {} from tch",
            got.len(),
            want.len()
        ));
    }
    let scale = want.iter().fold(1e-6f32, |a, x| a.max(x.abs()));
    let diff = want
        .iter()
        .zip(&got)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()))
        / scale;
    if diff > 1e-3 {
        return Err(format!(
            "ONNX Runtime and tch differ by {diff:.2e} of the output's scale"
        ));
    }
    Ok(diff as f64)
}
