//! `emit`: argmax θ as the chosen network — a fixed `.space`, IR JSON, ONNX (loaded back in
//! ONNX Runtime and compared with tch), the supernet's weights for it and the retrained
//! ones (safetensors) — then retrained from scratch on the budget, its test accuracy taken,
//! and measured whole on the backend (measured, the predictor's figure beside it); SSBN_0
//! of the same space goes through the same retraining and measurement as the baseline.

use crate::ctx::{outside, Ctx, SearchSpec};
use crate::latency::{anchor, measure_nets_on};
use crate::pass::Pass;
use crate::search::{costs, spec, splits, target, test_split, train_split};
use crate::supernet;
use spacetune_backends::data::Dataset;
use spacetune_backends::search as engine;
use spacetune_backends::torch::TchNet;
use spacetune_backends::train::{self, TrainConfig};
use spacetune_backends::weights::{random_input, Weights};
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
    supernet::same_as_expand(tm, info, &sn, &searched.choices)?;
    let (graph, origin) = sn.fixed(&searched.choices);
    let network = Network {
        id: format!("{}-chosen", info.name),
        space: s,
        origin: Origin::Sampled,
        choices: searched.choices.clone(),
        key: searched.key.clone(),
        cost: graph.cost(),
        graph,
    };
    let base = tm
        .networks_of(s)
        .find(|(_, n)| n.origin == Origin::Base)
        .map(|(_, n)| n.clone())
        .ok_or_else(|| Diagnostic::error("the searched space has no SSBN_0".to_string()))?;
    let out = &spec.out;
    std::fs::create_dir_all(out).map_err(|e| outside(&format!("creating {}", out.display()), e))?;
    let write = |name: &str, bytes: &[u8]| -> Result<String, Diagnostics> {
        let path = out.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| outside(&format!("writing {}", path.display()), e))?;
        Ok(path.display().to_string())
    };
    let stem = network.id.clone();
    let mut files = vec![
        write(
            &format!("{stem}.space"),
            dsl::print_network(tm, &network).as_bytes(),
        )?,
        write(
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

    let costs = costs(m, original, info, &spec.predictor)?;
    let input = network.graph.shapes[0];
    let (train_set, _) = train_split(spec, input).map_err(|e| outside("emit data", e))?;
    let test = test_split(spec, input).map_err(|e| outside("emit data", e))?;
    // Drawn as the search's weight split is (one image held out), so the retraining pool
    // of a budget is the same images from run to run.
    let (pool, _) = splits(&train_set, spec.budget.retrain_images, 1, spec.config.seed);
    let cfg = TrainConfig {
        epochs: spec.budget.retrain_epochs,
        batch: spec.budget.batch,
        lr: spec.config.lr,
        seed: spec.config.seed,
        threads: spec.config.threads,
        ..TrainConfig::default()
    };
    let stage = cx.progress.stage("retrain from scratch", 2);
    stage.working(&network.id);
    let chosen = retrain(&network, &pool, &test, &cfg)?;
    stage.tick(&network.id);
    stage.working(&base.id);
    let baseline = retrain(&base, &pool, &test, &cfg)?;
    stage.tick(&base.id);
    let onnx_bytes = onnx::export(&chosen.graph, &chosen.weights, 1)
        .map_err(|e| outside("exporting ONNX", e))?;
    files.push(write(&format!("{stem}.onnx"), &onnx_bytes)?);
    let retrained = out.join(format!("{stem}.safetensors"));
    engine::save_weights(&chosen.weights, &retrained)
        .map_err(|e| outside("writing the weights", e))?;
    files.push(retrained.display().to_string());
    let agreement = onnx_agrees(&chosen, &onnx_bytes);
    cx.progress.note(&format!(
        "emit: {stem}.onnx in ONNX Runtime: {}",
        match &agreement {
            Ok(d) => format!("loads, and agrees with tch to {d:.2e}"),
            Err(e) => format!("FAILED: {e}"),
        }
    ));
    agreement.map_err(|e| outside("checking the emitted ONNX in ONNX Runtime", e))?;

    // Measured on the scale of the original space's SSBNs (the same anchor).
    let measured: Vec<Result<f64, String>> = match cx.backend("emit") {
        Ok(backend) => {
            let anchor = anchor(m, original, backend)?;
            match measure_nets_on(
                cx,
                &anchor,
                &[network.clone(), base.clone()],
                None,
                "measure chosen",
            ) {
                Ok(ms) => ms.into_iter().map(Ok).collect(),
                Err(d) => vec![Err(d.0[0].message.clone()); 2],
            }
        }
        Err(d) => vec![Err(d.0[0].message.clone()); 2],
    };
    let outcomes = vec![
        Outcome {
            name: "chosen".into(),
            key: network.key.clone(),
            test_accuracy: Ok(chosen.accuracy),
            measured_ms: measured[0].clone(),
            predicted_ms: Some(costs.of(&network.choices)),
            search_seconds: searched.seconds,
            train_seconds: chosen.seconds,
        },
        Outcome {
            name: "ssbn0".into(),
            key: base.key.clone(),
            test_accuracy: Ok(baseline.accuracy),
            measured_ms: measured[1].clone(),
            predicted_ms: Some(costs.of(&base.choices)),
            search_seconds: 0.0,
            train_seconds: baseline.seconds,
        },
    ];
    Ok(Chosen {
        network,
        files,
        outcomes,
    })
}

struct Retrained {
    graph: Graph,
    weights: Weights,
    accuracy: f64,
    seconds: f64,
}

/// Trains `net` (the graph a backend runs) from seeded random weights and tests it.
fn retrain(
    net: &Network,
    train_set: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
) -> Result<Retrained, Diagnostics> {
    let graph = net.graph.pruned();
    let start = std::time::Instant::now();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let tch_net = TchNet::new(&vs.root(), &graph, &Weights::random(&graph, cfg.seed))
        .map_err(|e| outside(&format!("building {}", net.id), e))?;
    train::train(&tch_net, &vs, train_set, cfg, |_, _, _| {})
        .map_err(|e| outside(&format!("retraining {}", net.id), e))?;
    let accuracy = train::accuracy(&tch_net, test, 256)
        .map_err(|e| outside(&format!("testing {}", net.id), e))?;
    Ok(Retrained {
        weights: tch_net.weights(),
        graph,
        accuracy,
        seconds: start.elapsed().as_secs_f64(),
    })
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
