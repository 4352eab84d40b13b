//! `ort`: ONNX Runtime on the CPU, through the `ort` crate with the library loaded at run
//! time from the project's venv (the PyPI `onnxruntime` wheel).

use crate::{
    onnx, Backend, BackendError, Fingerprint, Lowered, OpCounts, Options, Result, Runner, Timing,
};
use ::ort::memory::Allocator;
use ::ort::session::{builder::GraphOptimizationLevel, Session};
use ::ort::value::Tensor;
use onnx_protobuf::{Message, ModelProto};
use spacetune_ir::Network;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Loads the ONNX Runtime library once per process.
pub fn init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        let path =
            dylib().ok_or("no ONNX Runtime library: run scripts/setup.sh or set ORT_DYLIB_PATH")?;
        ::ort::init_from(&path)
            .with_name("spacetune")
            .commit()
            .map(|_| ())
            .map_err(|e| format!("loading ONNX Runtime from {path}: {e}"))
    })
    .clone()
    .map_err(BackendError::Runtime)
}

/// The library `init` loads: ORT_DYLIB_PATH, else the venv's, found at build time.
fn dylib() -> Option<String> {
    std::env::var("ORT_DYLIB_PATH")
        .ok()
        .or(option_env!("SPACETUNE_ORT_DYLIB").map(String::from))
}

/// The loaded ONNX Runtime's version (its `GetVersionString`; a library's file name names a
/// version only by convention) and commit (from its build info), or why it is unknown.
pub fn runtime() -> String {
    static RUNTIME: OnceLock<String> = OnceLock::new();
    RUNTIME
        .get_or_init(|| match version() {
            Ok(v) => {
                let info = ::ort::info();
                let commit = info
                    .split(", ")
                    .find_map(|f| f.trim().strip_prefix("git-commit-id="));
                match commit {
                    Some(c) => format!("onnxruntime {v} ({c})"),
                    None => format!("onnxruntime {v}"),
                }
            }
            Err(e) => format!("onnxruntime (version unknown: {e})"),
        })
        .clone()
}

fn version() -> std::result::Result<String, String> {
    init().map_err(|e| e.to_string())?;
    let path = dylib().ok_or("no library path")?;
    // The library is loaded already: this takes another reference to the same one.
    // SAFETY: ONNX Runtime's C API: OrtGetApiBase returns a pointer to a static struct whose
    // GetVersionString returns a static NUL-terminated string.
    unsafe {
        let lib = libloading::Library::new(&path).map_err(|e| e.to_string())?;
        let base: libloading::Symbol<unsafe extern "C" fn() -> *const ::ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").map_err(|e| e.to_string())?;
        let base = base();
        if base.is_null() {
            return Err("OrtGetApiBase returned null".into());
        }
        let v = ((*base).GetVersionString)();
        Ok(std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
    }
}

pub struct Ort {
    /// Graph optimisations (fusion, layout transforms) on, or off to see what they buy.
    pub optimize: bool,
    pub threads: usize,
    pub seed: u64,
}

impl Ort {
    pub fn from_options(options: &Options) -> Result<Ort> {
        options.only("ort", &["opt", "threads", "seed"])?;
        let optimize = match options.get("opt").unwrap_or("all") {
            "all" => true,
            "disabled" => false,
            other => {
                return Err(BackendError::Option(format!(
                    "ort: opt must be all or disabled, not `{other}`"
                )))
            }
        };
        Ok(Ort {
            optimize,
            threads: options.number("threads", 1)?,
            seed: options.number("seed", 0)?,
        })
    }

    /// A session for ONNX bytes with this backend's settings.
    pub fn session(&self, model: &[u8]) -> Result<Session> {
        self.session_saving(model, None)
    }

    /// [`Ort::session`], its optimised graph written to `optimised` where one is given.
    fn session_saving(&self, model: &[u8], optimised: Option<&Path>) -> Result<Session> {
        init()?;
        let level = if self.optimize {
            GraphOptimizationLevel::Level3
        } else {
            GraphOptimizationLevel::Disable
        };
        let rt = |e: ::ort::Error| BackendError::Runtime(e.to_string());
        let mut builder = Session::builder().map_err(rt)?;
        if let Some(path) = optimised {
            builder = builder.with_optimized_model_path(path).map_err(rt)?;
        }
        builder
            .with_optimization_level(level)
            .map_err(rt)?
            .with_intra_threads(self.threads)
            .map_err(rt)?
            .with_inter_threads(1)
            .map_err(rt)?
            .with_parallel_execution(false)
            .map_err(rt)?
            .commit_from_memory(model)
            .map_err(rt)
    }
}

/// The ops of an ONNX graph by kind: `domain:op_type` (no domain for ONNX's own), a conv's
/// kernel size beside it (`Conv 3x3`, from its attribute or its weights), `/g` for a grouped
/// one. ORT's graph optimiser keeps a conv's type whether or not it fuses an activation or
/// an add into it, so what varies between networks is which ops are left and how many
/// layout conversions (`com.microsoft.nchwc:ReorderInput`) sit between them.
fn op_counts(model: &[u8]) -> Result<OpCounts> {
    let model = ModelProto::parse_from_bytes(model)
        .map_err(|e| BackendError::Runtime(format!("reading an optimised ONNX graph: {e}")))?;
    let graph = &model.graph;
    let dims: HashMap<&str, &[i64]> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.dims.as_slice()))
        .collect();
    let mut counts = OpCounts::new();
    for node in &graph.node {
        let mut kind = if node.domain.is_empty() {
            node.op_type.clone()
        } else {
            format!("{}:{}", node.domain, node.op_type)
        };
        if node.op_type.ends_with("Conv") {
            let ints = |name: &str| {
                node.attribute
                    .iter()
                    .find(|a| a.name == name)
                    .map(|a| a.ints.clone())
            };
            let kernel = ints("kernel_shape").or_else(|| {
                let w = dims.get(node.input.get(1)?.as_str())?;
                Some(w.get(2..4)?.to_vec())
            });
            if let Some(k) = kernel {
                let k: Vec<String> = k.iter().map(i64::to_string).collect();
                kind = format!("{kind} {}", k.join("x"));
            }
            let group = node.attribute.iter().find(|a| a.name == "group");
            if group.is_some_and(|g| g.i > 1) {
                kind.push_str("/g");
            }
        }
        *counts.entry(kind).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Runs ONNX bytes once on `input` (NCHW) and returns the output, for agreement checks.
pub fn infer(backend: &Ort, model: &[u8], dims: [usize; 4], input: Vec<f32>) -> Result<Vec<f32>> {
    let mut session = backend.session(model)?;
    let rt = |e: ::ort::Error| BackendError::Runtime(e.to_string());
    let x = Tensor::from_array((dims, input)).map_err(rt)?;
    let outputs = session.run(::ort::inputs![onnx::INPUT => x]).map_err(rt)?;
    let (_, data) = outputs[onnx::OUTPUT]
        .try_extract_tensor::<f32>()
        .map_err(rt)?;
    Ok(data.to_vec())
}

struct OrtRunner {
    session: Session,
    inputs: Vec<(String, Tensor<f32>)>,
}

impl Runner for OrtRunner {
    fn once(&mut self) -> Result<Duration> {
        let start = Instant::now();
        let outputs = self
            .session
            .run(
                self.inputs
                    .iter()
                    .map(|(name, x)| (name.as_str(), x))
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| BackendError::Runtime(e.to_string()))?;
        let elapsed = start.elapsed();
        drop(outputs);
        Ok(elapsed)
    }
}

impl Backend for Ort {
    fn name(&self) -> &str {
        "ort"
    }
    fn fingerprint(&self) -> Fingerprint {
        let mut options = std::collections::BTreeMap::new();
        options.insert(
            "opt".into(),
            if self.optimize { "all" } else { "disabled" }.into(),
        );
        options.insert("seed".into(), self.seed.to_string());
        Fingerprint {
            backend: "ort".into(),
            runtime: runtime(),
            options,
            threads: self.threads,
            node: Some(crate::node()),
            protocol: None,
        }
    }
    fn lower(&self, net: &Network) -> Result<Lowered> {
        onnx::lower(net, self.seed)
    }
    fn prepare(&self, lowered: &Lowered) -> Result<Timing<'_>> {
        let session = self.session(&lowered.bytes)?;
        let inputs = onnx::inputs(&lowered.graph)
            .into_iter()
            .map(|(name, s)| {
                // ORT's own allocator, not a Vec: a Vec's buffer is aligned to 16 bytes or
                // less, wherever the heap puts it, and where it lands moved a timed conv's
                // latency by a third from one session to the next.
                let rt = |e: ::ort::Error| BackendError::Runtime(e.to_string());
                let dims = [1i64, s.c as i64, s.h as i64, s.w as i64];
                let mut x = Tensor::<f32>::new(&Allocator::default(), dims).map_err(rt)?;
                x.extract_tensor_mut().1.fill(0.5);
                Ok((name, x))
            })
            .collect::<Result<_>>()?;
        Ok(Timing::Timed(Box::new(OrtRunner { session, inputs })))
    }
    /// The graph ORT's optimiser leaves, as ORT writes it out from a session built as for
    /// timing.
    fn compiled_ops(&self, lowered: &Lowered) -> Result<Option<OpCounts>> {
        let dir = tempfile::tempdir().map_err(BackendError::io("a folder for a graph"))?;
        let path = dir.path().join("optimised.onnx");
        drop(self.session_saving(&lowered.bytes, Some(&path))?);
        let bytes = std::fs::read(&path)
            .map_err(BackendError::io(format!("reading {}", path.display())))?;
        op_counts(&bytes).map(Some)
    }
}
