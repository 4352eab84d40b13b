//! `exec`: any command is a backend. spacetune writes the network (ONNX with seeded
//! weights, and the IR graph as JSON) to a temporary directory, runs the user's command
//! with the two paths, and reads `{"latency_ms": ..., "per_layer": [...]}` from its stdout.
//! This is how a real board (an FPGA DPU, an NPU) is plugged in.
//!
//! The command runs as `sh -c COMMAND spacetune MODEL.onnx NETWORK.json`, so it sees the
//! paths as `$1` and `$2` (and in SPACETUNE_ONNX / SPACETUNE_JSON). `per_layer` is optional:
//! `[{"region": "layer3", "ms": 0.21}, ...]` with regions `input`, `fixed<i>`, `layer<i>`,
//! `cell<i>`. A timeout, a non-zero exit or malformed output fails that network only.

use crate::{
    onnx, Backend, BackendError, Fingerprint, Latency, LayerTime, Lowered, Options, Result, Timing,
};
use serde::Deserialize;
use spacetune_ir::{Network, Region};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Exec {
    pub command: String,
    pub timeout: Duration,
    pub seed: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    latency_ms: f64,
    #[serde(default)]
    per_layer: Option<Vec<ReportedLayer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportedLayer {
    region: String,
    ms: f64,
}

impl Report {
    /// The reported per-layer times, checked: known regions, finite and not negative, and
    /// — a profile is a split of the network's time, which may miss the glue between
    /// layers — summing to no more than the whole (beyond rounding).
    fn profile(&self, layers: &[ReportedLayer]) -> std::result::Result<Vec<LayerTime>, String> {
        let mut out = Vec::new();
        for l in layers {
            let r = region(&l.region)
                .ok_or_else(|| format!("unknown region `{}` in per_layer", l.region))?;
            if !(l.ms.is_finite() && l.ms >= 0.0) {
                return Err(format!(
                    "per_layer time of `{}` must be finite and not negative, got {}",
                    l.region, l.ms
                ));
            }
            out.push(LayerTime {
                region: r,
                ms: l.ms,
            });
        }
        let sum: f64 = out.iter().map(|l| l.ms).sum();
        if sum > self.latency_ms * (1.0 + PROFILE_SLACK) {
            return Err(format!(
                "per_layer times sum to {sum} ms, more than latency_ms {}",
                self.latency_ms
            ));
        }
        Ok(out)
    }
}

fn region(s: &str) -> Option<Region> {
    let num = |p: &str| s.strip_prefix(p).and_then(|n| n.parse().ok());
    if s == "input" {
        return Some(Region::Input);
    }
    num("fixed")
        .map(Region::Fixed)
        .or_else(|| num("layer").map(Region::Layer))
        .or_else(|| num("cell").map(Region::Cell))
}

impl Exec {
    pub fn from_options(options: &Options) -> Result<Exec> {
        options.only("exec", &["command", "timeout", "seed"])?;
        let command = options
            .get("command")
            .ok_or_else(|| BackendError::Option("exec needs -o command=\"...\"".into()))?
            .to_string();
        let secs: f64 = options.number("timeout", 60.0)?;
        Ok(Exec {
            command,
            timeout: Duration::from_secs_f64(secs),
            seed: options.number("seed", 0)?,
        })
    }

    fn run(&self, lowered: &Lowered) -> Result<Latency> {
        let dir =
            tempfile::tempdir().map_err(BackendError::io("creating a temporary directory"))?;
        let model = dir.path().join(format!("{}.onnx", lowered.id));
        let json = dir.path().join(format!("{}.json", lowered.id));
        std::fs::write(&model, &lowered.bytes)
            .map_err(BackendError::io(format!("writing {}", model.display())))?;
        let graph = serde_json::to_vec_pretty(&lowered.graph).expect("graphs serialise");
        std::fs::write(&json, graph)
            .map_err(BackendError::io(format!("writing {}", json.display())))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .arg("spacetune")
            .arg(&model)
            .arg(&json)
            .env("SPACETUNE_ONNX", &model)
            .env("SPACETUNE_JSON", &json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(BackendError::io(format!("starting `{}`", self.command)))?;
        // Drain both pipes on threads so a chatty command cannot block on a full pipe.
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("piped")));
        let err = drain(Box::new(child.stderr.take().expect("piped")));
        let start = Instant::now();
        let status = loop {
            match child
                .try_wait()
                .map_err(BackendError::io("waiting for the command"))?
            {
                Some(status) => break Some(status),
                None if start.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        let fail = |what: String| {
            BackendError::Runtime(format!(
                "{what}; stderr:\n{}",
                crate::last_lines(&stderr, 8)
            ))
        };
        match status {
            None => return Err(fail(format!("timed out after {:?}", self.timeout))),
            Some(s) if !s.success() => return Err(fail(format!("the command failed ({s})"))),
            Some(_) => {}
        }
        let last = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let report: Report = serde_json::from_str(last).map_err(|e| {
            fail(format!(
                "the last line of stdout is not {{\"latency_ms\": ...}} ({e}): `{last}`"
            ))
        })?;
        if !(report.latency_ms.is_finite() && report.latency_ms > 0.0) {
            return Err(fail(format!(
                "latency_ms must be positive, got {}",
                report.latency_ms
            )));
        }
        let mut latency = Latency::exact(report.latency_ms);
        if let Some(layers) = &report.per_layer {
            latency.per_layer = Some(report.profile(layers).map_err(fail)?);
        }
        Ok(latency)
    }
}

/// How far a reported per-layer profile may sum above the network's latency (rounding of
/// the command's figures).
const PROFILE_SLACK: f64 = 0.01;

impl Backend for Exec {
    fn name(&self) -> &str {
        "exec"
    }
    fn fingerprint(&self) -> Fingerprint {
        let mut options = std::collections::BTreeMap::new();
        options.insert("command".into(), self.command.clone());
        options.insert("seed".into(), self.seed.to_string());
        Fingerprint {
            backend: "exec".into(),
            runtime: "external command".into(),
            options,
            threads: 0,
            node: Some(crate::node()),
            protocol: None,
        }
    }
    fn lower(&self, net: &Network) -> Result<Lowered> {
        onnx::lower(net, self.seed)
    }
    fn prepare(&self, lowered: &Lowered) -> Result<Timing<'_>> {
        Ok(Timing::Reported(self.run(lowered)?))
    }
}
