//! `tch`: the Network IR as a libtorch module — the eager CPU backend, and the trainable
//! model of accuracy profiling and search (the same lowering for both).

use crate::weights::{input_channels, param_specs, Param, Weights};
use crate::{network_hash, Backend, Fingerprint, Lowered, Options, Result, Runner, Timing};
use spacetune_ir::{Graph, Handle, Network, Prim};
use std::time::{Duration, Instant};
use tch::{nn, Kind, Tensor};

/// A graph with its parameters in a VarStore: `n<node>.<what>`, as in [`Weights`].
pub struct TchNet {
    graph: Graph,
    params: Vec<Vec<Tensor>>,
    /// Batch-norm momentum of the running statistics in training mode.
    pub momentum: f64,
}

impl TchNet {
    /// Builds the module under `path`, initialised from `weights` (seeded random ones for
    /// timing, trained ones to resume or fine-tune). Running statistics are not trainable.
    pub fn new(path: &nn::Path, graph: &Graph, weights: &Weights) -> Result<TchNet> {
        if graph.nodes.iter().skip(1).any(|(_, n)| n.op == Prim::Input) {
            return Err(crate::BackendError::Unsupported(
                "tch runs networks with one input; this graph has several".into(),
            ));
        }
        let mut params = Vec::with_capacity(graph.nodes.len());
        for (h, node) in graph.nodes.iter() {
            let cin = input_channels(graph, node);
            let node_path = path / format!("n{}", h.index());
            let mut tensors = Vec::new();
            for (suffix, dims, _) in param_specs(&node.op, cin) {
                let p = weights.get(h.index(), suffix).ok_or_else(|| {
                    crate::BackendError::Unsupported(format!(
                        "the weights have no parameter `n{}.{suffix}`",
                        h.index()
                    ))
                })?;
                if p.dims != dims {
                    return Err(crate::BackendError::Unsupported(format!(
                        "parameter `n{}.{suffix}` has shape {:?}, the node needs {dims:?}",
                        h.index(),
                        p.dims
                    )));
                }
                let value = Tensor::from_slice(&p.data).reshape(&p.dims);
                let (sub, name) = match suffix.split_once('.') {
                    Some((a, b)) => (&node_path / a, b),
                    None => (node_path.clone(), suffix),
                };
                let var = if suffix.starts_with("running_") {
                    let v = sub.zeros_no_train(name, &dims);
                    tch::no_grad(|| v.shallow_clone().copy_(&value));
                    v
                } else {
                    sub.var_copy(name, &value)
                };
                tensors.push(var);
            }
            params.push(tensors);
        }
        Ok(TchNet {
            graph: graph.clone(),
            params,
            momentum: 0.1,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The forward pass over a batch (N×C×H×W); `train` uses batch statistics in batch norm
    /// and updates the running ones.
    pub fn forward_t(&self, input: &Tensor, train: bool) -> Tensor {
        self.forward_with(input, train, |_| true, |_, _| None)
    }

    /// The forward pass running only the nodes for which `runs(node)` holds (their users
    /// must not run either), with `mix(node, values)` given the first say on every node's
    /// value: a supernet's mixes are computed there from the values of the nodes that ran.
    pub fn forward_with(
        &self,
        input: &Tensor,
        train: bool,
        runs: impl Fn(usize) -> bool,
        mix: impl Fn(usize, &[Option<Tensor>]) -> Option<Tensor>,
    ) -> Tensor {
        let mut values = self.values_with(input, train, runs, mix);
        values.pop().flatten().expect("the output of a graph runs")
    }

    /// Every node's value in one forward pass (`None` where it did not run), by node
    /// index: what zero-cost proxies read the activations from.
    pub fn values(&self, input: &Tensor, train: bool) -> Vec<Option<Tensor>> {
        self.values_with(input, train, |_| true, |_, _| None)
    }

    fn values_with(
        &self,
        input: &Tensor,
        train: bool,
        runs: impl Fn(usize) -> bool,
        mix: impl Fn(usize, &[Option<Tensor>]) -> Option<Tensor>,
    ) -> Vec<Option<Tensor>> {
        let n = input.size()[0];
        let mut values: Vec<Option<Tensor>> = Vec::with_capacity(self.graph.nodes.len());
        for (h, node) in self.graph.nodes.iter() {
            let i = h.index();
            if !runs(i) {
                values.push(None);
                continue;
            }
            if let Some(y) = mix(i, &values) {
                values.push(Some(y));
                continue;
            }
            let x = |k: usize| {
                values[node.inputs[k].index()]
                    .as_ref()
                    .expect("a node that runs reads nodes that ran")
            };
            let p = &self.params[i];
            let shape = self.graph.shape(h);
            let y = match node.op {
                Prim::Input => input.shallow_clone(),
                Prim::Conv {
                    stride,
                    pad,
                    groups,
                    dilation,
                    ..
                } => x(0).conv2d(
                    &p[0],
                    None::<Tensor>,
                    [stride as i64],
                    [pad as i64],
                    [dilation as i64],
                    groups as i64,
                ),
                Prim::BatchNorm => Tensor::batch_norm(
                    x(0),
                    Some(&p[0]),
                    Some(&p[1]),
                    Some(&p[2]),
                    Some(&p[3]),
                    train,
                    self.momentum,
                    1e-5,
                    false,
                ),
                Prim::Relu => x(0).relu(),
                Prim::Relu6 => x(0).clamp(0.0, 6.0),
                Prim::Hswish => x(0).hardswish(),
                Prim::Sigmoid => x(0).sigmoid(),
                // Out of place: `+=` on a shallow clone would write into the first input's
                // storage, which other nodes (a `skip` edge's source) still read.
                Prim::Add => (1..node.inputs.len()).fold(x(0).shallow_clone(), |acc, k| acc + x(k)),
                Prim::Concat => {
                    let parts: Vec<&Tensor> = (0..node.inputs.len()).map(x).collect();
                    Tensor::cat(&parts, 1)
                }
                Prim::MaxPool { k, stride, pad } => {
                    x(0).max_pool2d([k as i64], [stride as i64], [pad as i64], [1], false)
                }
                Prim::AvgPool { k, stride, pad } => x(0).avg_pool2d(
                    [k as i64],
                    [stride as i64],
                    [pad as i64],
                    false,
                    false,
                    None,
                ),
                Prim::GlobalAvgPool => x(0).adaptive_avg_pool2d([1, 1]),
                Prim::Linear { out } => x(0)
                    .flatten(1, -1)
                    .linear(&p[0], Some(&p[1]))
                    .view([n, out as i64, 1, 1]),
                Prim::ChannelShuffle { groups } => {
                    let (c, hh, ww) = (shape.c as i64, shape.h as i64, shape.w as i64);
                    let g = groups as i64;
                    x(0).view([n, g, c / g, hh, ww])
                        .transpose(1, 2)
                        .contiguous()
                        .view([n, c, hh, ww])
                }
                Prim::SqueezeExcite { .. } => {
                    let gate = x(0)
                        .adaptive_avg_pool2d([1, 1])
                        .conv2d(&p[0], Some(&p[1]), [1], [0], [1], 1)
                        .relu()
                        .conv2d(&p[2], Some(&p[3]), [1], [0], [1], 1)
                        .sigmoid();
                    x(0) * gate
                }
                Prim::Identity => x(0).shallow_clone(),
                Prim::Shift => {
                    let (hh, ww) = (shape.h as i64, shape.w as i64);
                    x(0).narrow(2, 1, hh - 1)
                        .narrow(3, 1, ww - 1)
                        .constant_pad_nd([0, 1, 0, 1])
                }
                Prim::Zero => Tensor::zeros(
                    [n, shape.c as i64, shape.h as i64, shape.w as i64],
                    (input.kind(), input.device()),
                ),
            };
            values.push(Some(y));
        }
        values
    }

    /// The current parameters (trained or not) in the layout every backend reads.
    pub fn weights(&self) -> Weights {
        let mut out = Weights::default();
        for (h, node) in self.graph.nodes.iter() {
            let cin = input_channels(&self.graph, node);
            for ((suffix, dims, _), t) in param_specs(&node.op, cin)
                .iter()
                .zip(&self.params[h.index()])
            {
                let data = Vec::<f32>::try_from(&t.detach().to_kind(Kind::Float).flatten(0, -1))
                    .expect("a float tensor converts to a vector");
                out.params.insert(
                    format!("n{}.{suffix}", h.index()),
                    Param {
                        dims: dims.clone(),
                        data,
                    },
                );
            }
        }
        out
    }
}

/// Seeded random weights whose batch-norm statistics are those of a random batch, so every
/// batch norm normalises and activations stay near unit scale however deep the network is
/// (plain random statistics let residual sums grow without bound). For agreement tests and
/// exported models that should compute something sensible.
pub fn calibrated_weights(graph: &Graph, seed: u64) -> Result<Weights> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let mut net = TchNet::new(&vs.root(), graph, &Weights::random(graph, seed))?;
    net.momentum = 1.0;
    let s = graph.shape(Handle::new(0));
    let batch = crate::weights::random_input(s, 16, seed ^ 0xca11);
    let x = Tensor::from_slice(&batch).view([16, s.c as i64, s.h as i64, s.w as i64]);
    let _ = tch::no_grad(|| net.forward_t(&x, true));
    Ok(net.weights())
}

pub struct Tch {
    pub threads: usize,
    pub seed: u64,
}

impl Tch {
    pub fn from_options(options: &Options) -> Result<Tch> {
        options.only("tch", &["threads", "seed"])?;
        Ok(Tch {
            threads: options.number("threads", 1)?,
            seed: options.number("seed", 0)?,
        })
    }
}

struct TchRunner {
    net: TchNet,
    input: Tensor,
    _vs: nn::VarStore,
}

impl Runner for TchRunner {
    fn once(&mut self) -> Result<Duration> {
        let start = Instant::now();
        let y = tch::no_grad(|| self.net.forward_t(&self.input, false));
        let elapsed = start.elapsed();
        drop(y);
        Ok(elapsed)
    }
}

/// The version of the libtorch this process loaded: the library is found in the process's
/// memory map and its distribution's version file read (`torch/version.py` of a wheel,
/// `build-version` of a libtorch archive), or why it is unknown.
pub fn runtime() -> String {
    static RUNTIME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| match loaded_version() {
            Ok(v) => format!("libtorch {v} (tch 0.26)"),
            Err(e) => format!("libtorch (version unknown: {e}) (tch 0.26)"),
        })
        .clone()
}

fn loaded_version() -> std::result::Result<String, String> {
    // Only a tensor op guarantees the library is mapped (it may be loaded lazily).
    let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .ok_or("libtorch_cpu.so is not in the memory map")?;
    let dir = std::path::Path::new(lib)
        .parent()
        .and_then(|d| d.parent())
        .ok_or("libtorch_cpu.so has no parent directory")?;
    if let Ok(py) = std::fs::read_to_string(dir.join("version.py")) {
        let value = |key: &str| {
            py.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().strip_prefix('='))
                .map(|v| v.trim().trim_matches('\'').to_string())
        };
        if let Some(v) = value("__version__") {
            let git = value("git_version").unwrap_or_default();
            let commit: String = git.chars().take(12).collect();
            return Ok(format!("{v} {commit}").trim().to_string());
        }
    }
    std::fs::read_to_string(dir.join("build-version"))
        .map(|v| v.trim().to_string())
        .map_err(|_| format!("no version.py or build-version beside {lib}"))
}

impl Backend for Tch {
    fn name(&self) -> &str {
        "tch"
    }
    fn fingerprint(&self) -> Fingerprint {
        let mut options = std::collections::BTreeMap::new();
        options.insert("seed".into(), self.seed.to_string());
        Fingerprint {
            backend: "tch".into(),
            runtime: runtime(),
            options,
            threads: self.threads,
            node: Some(crate::node()),
            protocol: None,
        }
    }
    fn lower(&self, net: &Network) -> Result<Lowered> {
        let graph = net.graph.pruned();
        Ok(Lowered {
            id: net.id.clone(),
            hash: network_hash(&graph, 1),
            text: graph.to_string(),
            graph,
            bytes: Vec::new(),
        })
    }
    fn prepare(&self, lowered: &Lowered) -> Result<Timing<'_>> {
        tch::set_num_threads(self.threads as i32);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let weights = Weights::random(&lowered.graph, self.seed);
        let net = TchNet::new(&vs.root(), &lowered.graph, &weights)?;
        let s = lowered.graph.shape(Handle::new(0));
        let input = Tensor::full(
            [1, s.c as i64, s.h as i64, s.w as i64],
            0.5,
            (Kind::Float, tch::Device::Cpu),
        );
        Ok(Timing::Timed(Box::new(TchRunner {
            net,
            input,
            _vs: vs,
        })))
    }
}
