//! `ort`: ONNX Runtime on the CPU, through the `ort` crate with the library loaded at run
//! time from the project's venv (the PyPI `onnxruntime` wheel).

use crate::{onnx, Backend, BackendError, Fingerprint, Lowered, Options, Result, Runner, Timing};
use ::ort::memory::Allocator;
use ::ort::session::{builder::GraphOptimizationLevel, Session};
use ::ort::value::Tensor;
use spacetune_ir::Network;
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
        init()?;
        let level = if self.optimize {
            GraphOptimizationLevel::Level3
        } else {
            GraphOptimizationLevel::Disable
        };
        let rt = |e: ::ort::Error| BackendError::Runtime(e.to_string());
        Session::builder()
            .map_err(rt)?
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
}
