//! `sim`: a simulated DNN accelerator that behaves like a real one from the outside.
//!
//! A PE array with pixel / input-channel / output-channel parallelism and a clock, a much
//! narrower depthwise path, a separate engine for element-wise and pooling ops, on-chip
//! feature and weight buffers, DRAM bandwidth, per-kernel issue overhead, and a compiler
//! fusion policy: conv + batch-norm + activation run as one kernel; an element-wise add is
//! fused into its producer when that producer has no other consumer; a kernel's output stays
//! on chip when the next kernel is its only reader and it fits. Parameters come from TOML
//! presets. Deterministic. Passes see only the whole-network latency and the per-layer
//! profile, as a DPU's users see the DPU profiler.

use crate::{
    network_hash, Backend, BackendError, Fingerprint, Latency, LayerTime, Lowered, Options, Result,
    Timing,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spacetune_ir::{Graph, Handle, Network, Prim, Region};
use std::fmt::Write as _;

/// The presets shipped with spacetune, by name.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "dpu-b4096-zcu102",
        include_str!("../presets/dpu-b4096-zcu102.toml"),
    ),
    (
        "npu-systolic-32",
        include_str!("../presets/npu-systolic-32.toml"),
    ),
];
pub const DEFAULT_PRESET: &str = "dpu-b4096-zcu102";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub clock_mhz: f64,
    pub bytes_per_element: u64,
    pub conv: ConvArray,
    pub depthwise: Depthwise,
    pub misc: Misc,
    pub memory: Memory,
    pub overhead: Overhead,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvArray {
    pub pixel: u64,
    pub input_channels: u64,
    pub output_channels: u64,
    /// The share of peak throughput the array sustains (pipeline fill, stalls, tile edges).
    pub efficiency: f64,
}
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Depthwise {
    pub pixel: u64,
    pub channels: u64,
}
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Misc {
    pub elements_per_cycle: u64,
}
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub dram_gb_per_s: f64,
    pub feature_buffer_kib: u64,
    pub weight_buffer_kib: u64,
}
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overhead {
    pub kernel_cycles: u64,
}

impl Preset {
    /// A shipped preset by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Preset> {
        let text = match PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, text)) => text.to_string(),
            None if name_or_path.ends_with(".toml") => std::fs::read_to_string(name_or_path)
                .map_err(BackendError::io(format!("reading preset {name_or_path}")))?,
            None => {
                let known: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
                return Err(BackendError::Option(format!(
                    "no sim preset `{name_or_path}` (shipped: {}; or give a .toml path)",
                    known.join(", ")
                )));
            }
        };
        let preset: Preset = toml::from_str(&text)
            .map_err(|e| BackendError::Option(format!("preset {name_or_path}: {e}")))?;
        let positive = [
            preset.conv.pixel,
            preset.conv.input_channels,
            preset.conv.output_channels,
            preset.depthwise.pixel,
            preset.depthwise.channels,
            preset.misc.elements_per_cycle,
            preset.bytes_per_element,
        ];
        if positive.contains(&0)
            || preset.clock_mhz <= 0.0
            || preset.memory.dram_gb_per_s <= 0.0
            || !(preset.conv.efficiency > 0.0 && preset.conv.efficiency <= 1.0)
        {
            return Err(BackendError::Option(format!(
                "preset {name_or_path}: parallelism, clock, bandwidth and element size must be positive, efficiency in (0, 1]"
            )));
        }
        Ok(preset)
    }
}

pub struct Sim {
    pub preset: Preset,
    /// Fusion on (the compiler's default) or off, to expose what fusion buys.
    pub fuse: bool,
}

impl Sim {
    pub fn from_options(options: &Options) -> Result<Sim> {
        options.only("sim", &["preset", "fuse"])?;
        let preset = Preset::load(options.get("preset").unwrap_or(DEFAULT_PRESET))?;
        let fuse = match options.get("fuse").unwrap_or("on") {
            "on" => true,
            "off" => false,
            other => {
                return Err(BackendError::Option(format!(
                    "sim: fuse must be on or off, not `{other}`"
                )))
            }
        };
        Ok(Sim { preset, fuse })
    }

    /// Whole-network latency (ms) and the time of every kernel, by the region of its anchor.
    pub fn run(&self, graph: &Graph) -> (f64, Vec<(Region, f64)>) {
        let kernels = schedule(graph, self.fuse);
        let p = &self.preset;
        let clock_hz = p.clock_mhz * 1e6;
        let bytes_per_s = p.memory.dram_gb_per_s * 1e9;
        let feature_buffer = p.memory.feature_buffer_kib * 1024;
        let weight_buffer = p.memory.weight_buffer_kib * 1024;
        let bytes = |node: usize| graph.shapes[node].elements() * p.bytes_per_element;
        let kernel_of = kernel_index(graph, &kernels);
        let consumers = consumers(graph);
        // A kernel's output stays on chip when the next kernel is its only reader.
        let on_chip: Vec<bool> = kernels
            .iter()
            .enumerate()
            .map(|(k, kernel)| {
                let out = kernel.output();
                !consumers[out].is_empty()
                    && consumers[out].iter().all(|&c| kernel_of[c] == Some(k + 1))
                    && bytes(out) <= feature_buffer / 2
            })
            .collect();
        let mut total = 0.0;
        let mut times = Vec::new();
        for (k, kernel) in kernels.iter().enumerate() {
            let mut traffic = 0u64;
            for &x in &kernel.inputs(graph) {
                let from_previous = k > 0 && kernel_of[x] == Some(k - 1) && on_chip[k - 1];
                if !from_previous {
                    traffic += bytes(x);
                }
            }
            let weights = kernel.weights(graph) * p.bytes_per_element;
            // Weights that do not fit are streamed in tiles, and the input is read per tile.
            let tiles = weights.div_ceil(weight_buffer.max(1)).max(1);
            traffic = traffic * tiles + weights;
            if !on_chip[k] {
                traffic += bytes(kernel.output());
            }
            let efficiency = if kernel.engine == Engine::Misc {
                1.0
            } else {
                p.conv.efficiency
            };
            let cycles = kernel.cycles(graph, p) as f64 / efficiency;
            let compute_s = cycles / clock_hz;
            let memory_s = traffic as f64 / bytes_per_s;
            let issue_s = p.overhead.kernel_cycles as f64 / clock_hz;
            let ms = (issue_s + compute_s.max(memory_s)) * 1e3;
            total += ms;
            times.push((graph.regions[kernel.nodes[0]], ms));
        }
        (total, times)
    }
}

/// Sums kernel times per region, in order of first appearance.
fn per_region(times: &[(Region, f64)]) -> Vec<LayerTime> {
    let mut out: Vec<LayerTime> = Vec::new();
    for &(region, ms) in times {
        match out.iter_mut().find(|l| l.region == region) {
            Some(l) => l.ms += ms,
            None => out.push(LayerTime { region, ms }),
        }
    }
    out
}

impl Backend for Sim {
    fn name(&self) -> &str {
        "sim"
    }
    fn fingerprint(&self) -> Fingerprint {
        let mut options = std::collections::BTreeMap::new();
        // The name alone would let an edited preset file reuse stale measurements.
        let digest = Sha256::digest(format!("{:?}", self.preset).as_bytes());
        let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        options.insert("preset".into(), format!("{}@{short}", self.preset.name));
        options.insert("fuse".into(), if self.fuse { "on" } else { "off" }.into());
        Fingerprint {
            backend: "sim".into(),
            runtime: format!("spacetune-sim {}", env!("CARGO_PKG_VERSION")),
            options,
            threads: 1,
            node: None,
            protocol: None,
        }
    }
    fn lower(&self, net: &Network) -> Result<Lowered> {
        let graph = net.graph.pruned();
        let mut text = String::new();
        for (k, kernel) in schedule(&graph, self.fuse).iter().enumerate() {
            let ops: Vec<String> = kernel
                .nodes
                .iter()
                .map(|&n| format!("n{n}:{}", graph.nodes[Handle::new(n)].op.name()))
                .collect();
            let _ = writeln!(
                text,
                "k{k} {:<5} {:<8} {}",
                kernel.engine.name(),
                graph.regions[kernel.nodes[0]].to_string(),
                ops.join(" + ")
            );
        }
        Ok(Lowered {
            id: net.id.clone(),
            hash: network_hash(&graph, 1),
            graph,
            text,
            bytes: Vec::new(),
        })
    }
    fn prepare(&self, lowered: &Lowered) -> Result<Timing<'_>> {
        let (total, times) = self.run(&lowered.graph);
        let mut latency = Latency::exact(total);
        latency.per_layer = Some(per_region(&times));
        Ok(Timing::Reported(latency))
    }
    fn profile(&self, lowered: &Lowered) -> Result<Option<Vec<LayerTime>>> {
        Ok(Some(per_region(&self.run(&lowered.graph).1)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Conv,
    Depthwise,
    Misc,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Conv => "conv",
            Engine::Depthwise => "dw",
            Engine::Misc => "misc",
        }
    }
}

/// One instruction group the accelerator issues: its nodes, anchor first.
#[derive(Debug)]
struct Kernel {
    engine: Engine,
    nodes: Vec<usize>,
}

impl Kernel {
    fn output(&self) -> usize {
        *self.nodes.last().expect("kernels are never empty")
    }
    /// Tensors the kernel reads that other kernels (or the input) produced.
    fn inputs(&self, graph: &Graph) -> Vec<usize> {
        let mut out = Vec::new();
        for &n in &self.nodes {
            for x in &graph.nodes[Handle::new(n)].inputs {
                if !self.nodes.contains(&x.index()) && !out.contains(&x.index()) {
                    out.push(x.index());
                }
            }
        }
        out
    }
    /// Parameters loaded from DRAM (batch norm is folded into a fused conv).
    fn weights(&self, graph: &Graph) -> u64 {
        self.nodes
            .iter()
            .map(|&n| {
                let node = &graph.nodes[Handle::new(n)];
                let fused_bn = node.op == Prim::BatchNorm && self.engine != Engine::Misc;
                if fused_bn {
                    0
                } else {
                    node.op.params(&graph.input_shapes(node))
                }
            })
            .sum()
    }
    fn cycles(&self, graph: &Graph, p: &Preset) -> u64 {
        let anchor = &graph.nodes[Handle::new(self.nodes[0])];
        let inputs = graph.input_shapes(anchor);
        let cin = inputs.first().map_or(0, |s| s.c);
        let out = graph.shapes[self.nodes[0]];
        let pixels = out.h * out.w;
        let conv_cycles = |pixels: u64, cin: u64, cout: u64, k: u64, groups: u64| {
            let (cin_g, cout_g) = (cin / groups, cout / groups);
            groups
                * pixels.div_ceil(p.conv.pixel)
                * cin_g.div_ceil(p.conv.input_channels)
                * cout_g.div_ceil(p.conv.output_channels)
                * k
                * k
        };
        let misc = |elements: u64| elements.div_ceil(p.misc.elements_per_cycle);
        match (self.engine, &anchor.op) {
            (Engine::Depthwise, Prim::Conv { k, .. }) => {
                pixels.div_ceil(p.depthwise.pixel) * out.c.div_ceil(p.depthwise.channels) * k * k
            }
            (Engine::Conv, Prim::Conv { k, groups, .. }) => {
                conv_cycles(pixels, cin, out.c, *k, *groups)
            }
            (Engine::Conv, Prim::Linear { out: n }) => {
                let flat = inputs.first().map_or(0, |s| s.elements());
                conv_cycles(1, flat, *n, 1, 1)
            }
            (_, Prim::MaxPool { k, .. } | Prim::AvgPool { k, .. }) => misc(out.elements() * k * k),
            (_, Prim::SqueezeExcite { mid }) => {
                let x = inputs[0];
                misc(x.elements())
                    + conv_cycles(1, x.c, *mid, 1, 1)
                    + conv_cycles(1, *mid, x.c, 1, 1)
                    + misc(x.elements())
            }
            (_, Prim::Add) => misc(inputs.iter().map(|s| s.elements()).sum()),
            (_, Prim::GlobalAvgPool) => misc(inputs.first().map_or(0, |s| s.elements())),
            _ => misc(out.elements()),
        }
    }
}

fn consumers(graph: &Graph) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); graph.nodes.len()];
    for (h, node) in graph.nodes.iter() {
        for x in &node.inputs {
            out[x.index()].push(h.index());
        }
    }
    out
}

fn kernel_index(graph: &Graph, kernels: &[Kernel]) -> Vec<Option<usize>> {
    let mut of = vec![None; graph.nodes.len()];
    for (k, kernel) in kernels.iter().enumerate() {
        for &n in &kernel.nodes {
            of[n] = Some(k);
        }
    }
    of
}

/// The accelerator compiler: groups nodes into kernels, in topological order.
fn schedule(graph: &Graph, fuse: bool) -> Vec<Kernel> {
    let consumers = consumers(graph);
    let mut kernels: Vec<Kernel> = Vec::new();
    let mut owner: Vec<Option<usize>> = vec![None; graph.nodes.len()];
    for (h, node) in graph.nodes.iter() {
        let i = h.index();
        // The kernel that `x` ends, if it can absorb a successor: a conv-engine kernel whose
        // output nobody else reads.
        let absorbing = |x: usize, owner: &[Option<usize>], kernels: &[Kernel]| {
            owner[x].filter(|&k| {
                kernels[k].output() == x
                    && kernels[k].engine != Engine::Misc
                    && consumers[x].len() == 1
            })
        };
        let engine = match &node.op {
            Prim::Input | Prim::Identity | Prim::Concat => None,
            Prim::Zero if node.inputs.is_empty() => None,
            Prim::Conv { groups, .. } => {
                let cin = graph.shape(node.inputs[0]).c;
                if *groups > 1 && cin / groups == 1 {
                    Some(Engine::Depthwise)
                } else {
                    Some(Engine::Conv)
                }
            }
            Prim::Linear { .. } => Some(Engine::Conv),
            Prim::BatchNorm | Prim::Relu | Prim::Relu6 | Prim::Hswish | Prim::Sigmoid => {
                if let Some(k) =
                    absorbing(node.inputs[0].index(), &owner, &kernels).filter(|_| fuse)
                {
                    kernels[k].nodes.push(i);
                    owner[i] = Some(k);
                    continue;
                }
                Some(Engine::Misc)
            }
            Prim::Add => {
                let host = node
                    .inputs
                    .iter()
                    .filter_map(|x| absorbing(x.index(), &owner, &kernels))
                    // A kernel takes at most one add into its write-back.
                    .filter(|&k| {
                        !kernels[k]
                            .nodes
                            .iter()
                            .any(|&n| graph.nodes[Handle::new(n)].op == Prim::Add)
                    })
                    .max()
                    // The host runs last among the add's producers, or it would read an
                    // operand that is not computed yet.
                    .filter(|&k| node.inputs.iter().all(|x| owner[x.index()] <= Some(k)));
                if let Some(k) = host.filter(|_| fuse) {
                    kernels[k].nodes.push(i);
                    owner[i] = Some(k);
                    continue;
                }
                Some(Engine::Misc)
            }
            _ => Some(Engine::Misc),
        };
        if let Some(engine) = engine {
            owner[i] = Some(kernels.len());
            kernels.push(Kernel {
                engine,
                nodes: vec![i],
            });
        }
    }
    kernels
}
