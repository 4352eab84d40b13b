//! `tvm`: Apache TVM 0.27. A Python helper compiles the ONNX model (Relax frontend,
//! `tvm.compile`, target x86-64-v3, the default fusing pipeline or the plain one) to a
//! shared library, cached by network hash; Rust loads it with `tvm-ffi` and times the Relax
//! VM's `main` in-process.

use crate::{onnx, Backend, BackendError, Fingerprint, Lowered, Options, Result, Runner, Timing};
use sha2::Digest;
use spacetune_ir::Network;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tvm_ffi::{Any, AnyView, Function, Module, Tensor};

const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/tvm_compile.py");
/// Bumped whenever the helper's pipeline changes, so cached libraries are not reused.
const HELPER_REVISION: u32 = 2;
const DL_CPU: i32 = 1;
const POOLED_ALLOCATOR: i32 = 2;

pub struct Tvm {
    /// TVM's default pipeline (FuseOps + FuseTIR) or the same without fusion.
    pub fuse: bool,
    pub threads: usize,
    pub seed: u64,
    pub cache_dir: PathBuf,
    /// Compiler processes run at once for a batch (they do not affect timing: compiling
    /// is done before any network of the batch is timed).
    pub jobs: usize,
}

fn ffi(e: tvm_ffi::Error) -> BackendError {
    BackendError::Runtime(format!("tvm: {e:?}"))
}

impl Tvm {
    pub fn from_options(options: &Options) -> Result<Tvm> {
        options.only("tvm", &["pipeline", "threads", "seed", "cache", "jobs"])?;
        let fuse = match options.get("pipeline").unwrap_or("fuse") {
            "fuse" => true,
            "plain" => false,
            other => {
                return Err(BackendError::Option(format!(
                    "tvm: pipeline must be fuse or plain, not `{other}`"
                )))
            }
        };
        Ok(Tvm {
            fuse,
            threads: options.number("threads", 1)?,
            seed: options.number("seed", 0)?,
            cache_dir: PathBuf::from(options.get("cache").unwrap_or(".spacetune/tvm")),
            jobs: options.number("jobs", 2)?,
        })
    }

    fn pipeline(&self) -> &'static str {
        if self.fuse {
            "fuse"
        } else {
            "plain"
        }
    }

    /// TVM's and TVM FFI's versions as the helper's Python imports them (once per
    /// process: the import costs seconds), or why they could not be read.
    pub fn version() -> &'static std::result::Result<String, String> {
        static VERSION: std::sync::OnceLock<std::result::Result<String, String>> =
            std::sync::OnceLock::new();
        VERSION.get_or_init(|| {
            let python = Self::python();
            let out = Command::new(&python)
                .arg(HELPER)
                .arg("--version")
                .output()
                .map_err(|e| format!("running {python} {HELPER}: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !text.is_empty() {
                Ok(text)
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        })
    }

    /// The runtime part of the fingerprint: the version as imported, or why it is unknown.
    fn runtime() -> String {
        match Self::version() {
            Ok(v) => v.clone(),
            Err(e) => format!("apache-tvm (version unknown: {e})"),
        }
    }

    /// Where the compiled library of a lowered network is cached, and its base name (the
    /// version joins it as a digest: a TVM upgrade never loads an older build's library).
    fn library(&self, lowered: &Lowered) -> (PathBuf, String) {
        let digest = sha2::Sha256::digest(Self::runtime().as_bytes());
        let tvm: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        let name = format!(
            "{}-{}-s{}-tvm{tvm}-h{HELPER_REVISION}",
            lowered.hash,
            self.pipeline(),
            self.seed
        );
        (self.cache_dir.join(format!("{name}.so")), name)
    }

    fn python() -> String {
        std::env::var("SPACETUNE_PYTHON")
            .ok()
            .unwrap_or_else(|| env!("SPACETUNE_TVM_PYTHON").to_string())
    }

    /// Compiles every network without a cached library, in `jobs` helper processes at once
    /// (each pays TVM's import once for its share). Failures are left for [`Tvm::compile`]
    /// to meet again and report per network.
    pub fn compile_all(&self, lowered: &[&Lowered]) -> Result<()> {
        std::fs::create_dir_all(&self.cache_dir).map_err(BackendError::io(format!(
            "creating {}",
            self.cache_dir.display()
        )))?;
        let mut missing: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for l in lowered {
            let (so, name) = self.library(l);
            if so.exists() || !seen.insert(name.clone()) {
                continue;
            }
            let model = self.cache_dir.join(format!("{name}.onnx"));
            std::fs::write(&model, &l.bytes)
                .map_err(BackendError::io(format!("writing {}", model.display())))?;
            missing.push((model, so));
        }
        if missing.len() < 2 {
            return Ok(());
        }
        let jobs = self.jobs.clamp(1, missing.len());
        let mut children = Vec::new();
        for j in 0..jobs {
            let list: String = missing
                .iter()
                .skip(j)
                .step_by(jobs)
                .map(|(m, so)| format!("{}\t{}\n", m.display(), so.display()))
                .collect();
            let file = self
                .cache_dir
                .join(format!("batch-{}-{j}.txt", std::process::id()));
            std::fs::write(&file, list)
                .map_err(BackendError::io(format!("writing {}", file.display())))?;
            let child = Command::new(Self::python())
                .arg(HELPER)
                .arg("--batch")
                .arg(&file)
                .arg("--pipeline")
                .arg(self.pipeline())
                .env("TVM_NUM_THREADS", self.threads.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(BackendError::io(format!("running {HELPER}")))?;
            children.push((child, file));
        }
        for (mut child, file) in children {
            let _ = child.wait();
            let _ = std::fs::remove_file(file);
        }
        for (model, _) in &missing {
            let _ = std::fs::remove_file(model);
        }
        Ok(())
    }

    /// The compiled library for a lowered network, compiling it on a cache miss.
    pub fn compile(&self, lowered: &Lowered) -> Result<PathBuf> {
        let (so, name) = self.library(lowered);
        if so.exists() {
            return Ok(so);
        }
        std::fs::create_dir_all(&self.cache_dir).map_err(BackendError::io(format!(
            "creating {}",
            self.cache_dir.display()
        )))?;
        let model = self.cache_dir.join(format!("{name}.onnx"));
        std::fs::write(&model, &lowered.bytes)
            .map_err(BackendError::io(format!("writing {}", model.display())))?;
        // Written beside, then renamed: a killed compile never leaves a truncated library.
        let partial = self.cache_dir.join(format!("{name}.partial.so"));
        let python = Self::python();
        let out = Command::new(&python)
            .arg(HELPER)
            .arg(&model)
            .arg(&partial)
            .arg("--pipeline")
            .arg(self.pipeline())
            .env("TVM_NUM_THREADS", self.threads.to_string())
            .output()
            .map_err(BackendError::io(format!("running {python} {HELPER}")))?;
        let _ = std::fs::remove_file(&model);
        if !out.status.success() {
            return Err(BackendError::Runtime(format!(
                "TVM could not compile {}:\n{}",
                lowered.id,
                crate::last_lines(&String::from_utf8_lossy(&out.stderr), 12)
            )));
        }
        std::fs::rename(&partial, &so)
            .map_err(BackendError::io(format!("renaming to {}", so.display())))?;
        Ok(so)
    }

    /// Loads a compiled library into a Relax VM on the CPU; returns its `main`.
    pub fn load(&self, so: &std::path::Path) -> Result<Function> {
        // TVM's CPU thread pool reads this when it starts (first VM in the process).
        std::env::set_var("TVM_NUM_THREADS", self.threads.to_string());
        let lib = Module::load_from_file(so.to_string_lossy()).map_err(ffi)?;
        let vm: Module = lib
            .get_function("vm_load_executable")
            .map_err(ffi)?
            .call_tuple(())
            .map_err(ffi)?
            .try_into()
            .map_err(ffi)?;
        vm.get_function("vm_initialization")
            .map_err(ffi)?
            .call_tuple((DL_CPU, 0i32, POOLED_ALLOCATOR))
            .map_err(ffi)?;
        vm.get_function("main").map_err(ffi)
    }
}

/// Runs a compiled library once on `input` (NCHW), for agreement checks.
pub fn infer(main: &Function, dims: [i64; 4], input: &[f32]) -> Result<Vec<f32>> {
    let x = Tensor::from_slice(input, &dims).map_err(ffi)?;
    let y: Tensor = main
        .call_tuple((&x,))
        .map_err(ffi)?
        .try_into()
        .map_err(ffi)?;
    Ok(y.data_as_slice::<f32>().map_err(ffi)?.to_vec())
}

struct TvmRunner {
    main: Function,
    inputs: Vec<Tensor>,
}

impl Runner for TvmRunner {
    fn once(&mut self) -> Result<Duration> {
        let args: Vec<AnyView> = self.inputs.iter().map(AnyView::from).collect();
        let start = Instant::now();
        let y: Any = self.main.call_packed(&args).map_err(ffi)?;
        let elapsed = start.elapsed();
        drop(y);
        Ok(elapsed)
    }
}

impl Backend for Tvm {
    fn name(&self) -> &str {
        "tvm"
    }
    fn fingerprint(&self) -> Fingerprint {
        let mut options = std::collections::BTreeMap::new();
        options.insert("pipeline".into(), self.pipeline().into());
        options.insert("target".into(), "llvm -mcpu=x86-64-v3".into());
        options.insert("helper".into(), HELPER_REVISION.to_string());
        options.insert("seed".into(), self.seed.to_string());
        Fingerprint {
            backend: "tvm".into(),
            runtime: Self::runtime(),
            options,
            threads: self.threads,
            node: Some(crate::node()),
            protocol: None,
        }
    }
    fn lower(&self, net: &Network) -> Result<Lowered> {
        onnx::lower(net, self.seed)
    }
    fn prepare_all(&self, lowered: &[&Lowered]) -> Result<()> {
        self.compile_all(lowered)
    }
    fn prepare(&self, lowered: &Lowered) -> Result<Timing<'_>> {
        let main = self.load(&self.compile(lowered)?)?;
        // Relax's `main` takes the graph inputs in ONNX order.
        let inputs = onnx::inputs(&lowered.graph)
            .into_iter()
            .map(|(_, s)| {
                Tensor::from_slice(
                    &vec![0.5f32; s.elements() as usize],
                    &[1, s.c as i64, s.h as i64, s.w as i64],
                )
                .map_err(ffi)
            })
            .collect::<Result<_>>()?;
        Ok(Timing::Timed(Box::new(TvmRunner { main, inputs })))
    }
}
