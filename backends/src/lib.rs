//! spacetune's backends: where networks are lowered and timed — a simulated accelerator,
//! ONNX Runtime, Apache TVM, libtorch, and any external command — behind one trait.
//!
//! A backend is a black box to the passes: they see [`Backend::lower`] (pure, deterministic,
//! snapshot-able), [`Backend::prepare`] (the only step that touches a runtime) and an
//! optional per-layer profile. Measurements are keyed by [`Fingerprint`] + network hash and
//! kept in the [`store`].

pub mod apart;
pub mod data;
pub mod exec;
pub mod measure;
pub mod memory;
pub mod onnx;
pub mod onnxrt;
pub mod pin;
pub mod proxy;
pub mod search;
pub mod sim;
pub mod store;
pub mod torch;
pub mod train;
#[cfg(feature = "tvm")]
pub mod tvm;
pub mod weights;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spacetune_ir::{Graph, Network};
pub use spacetune_ir::{Latency, LayerTime};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend `{0}` (known: sim, ort, tvm, tch, exec)")]
    UnknownBackend(String),
    #[error("this spacetune was compiled without the `{0}` feature (build with `--features {0}`)")]
    NotCompiled(&'static str),
    #[error("backend option: {0}")]
    Option(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Store(String),
    /// A measurement looked up or stored under a fingerprint that does not say how it was
    /// timed: a caller's mistake, refused so that no result is served under the wrong key.
    #[error("store: the fingerprint `{0}` names no measurement protocol")]
    Unkeyed(String),
}

impl BackendError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
        let context = context.into();
        move |source| BackendError::Io { context, source }
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// The last `n` lines of a child's stderr: where a failing tool says why.
pub(crate) fn last_lines(stderr: &str, n: usize) -> String {
    let lines: Vec<&str> = stderr.lines().rev().take(n).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Everything that changes what a measurement means. Two measurements are comparable only
/// under equal fingerprints. A backend gives its own part ([`Backend::fingerprint`]: the
/// runtime as loaded, its options); the store keys only on one completed with the
/// measurement protocol ([`Fingerprint::under`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub backend: String,
    pub runtime: String,
    pub options: BTreeMap<String, String>,
    pub threads: usize,
    /// The machine a wall-clock backend times on ([`node`]): figures from two machines
    /// are never mixed in one table. `None` for the simulator, which times nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The measurement protocol's label and digest ([`measure::Protocol::label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl Fingerprint {
    /// This fingerprint for measurements timed under `protocol`.
    pub fn under(mut self, protocol: &measure::Protocol) -> Fingerprint {
        self.protocol = Some(protocol.label());
        self
    }
}

/// This machine: its host name, CPU model and board (what a cluster's nodes differ by).
pub fn node() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let board = read("/sys/class/dmi/id/board_name");
    let host = read("/proc/sys/kernel/hostname");
    let mut node = format!("{} / {cpu}", host.trim());
    if !board.trim().is_empty() {
        node += &format!(" / {}", board.trim());
    }
    node
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} threads={}",
            self.backend, self.runtime, self.threads
        )?;
        for (k, v) in &self.options {
            write!(f, " {k}={v}")?;
        }
        if let Some(p) = &self.protocol {
            write!(f, " protocol={p}")?;
        }
        if let Some(n) = &self.node {
            write!(f, " node=\"{n}\"")?;
        }
        Ok(())
    }
}

/// A network as a backend will run it: the pruned graph, its content hash, and the
/// backend's artefact (ONNX bytes, a kernel schedule) with a text form for snapshots.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub id: String,
    pub hash: String,
    pub graph: Graph,
    pub text: String,
    pub bytes: Vec<u8>,
}

/// How a prepared network gets its latency.
pub enum Timing<'a> {
    /// The backend runs it; the measurement protocol times repeated runs.
    Timed(Box<dyn Runner + 'a>),
    /// The backend states the latency itself (the simulator, an external command).
    Reported(Latency),
}

/// A network loaded into a runtime, ready to run.
pub trait Runner {
    /// Runs one inference and returns how long it took, timed as close to the call as the
    /// runtime allows.
    fn once(&mut self) -> Result<Duration>;
}

pub trait Backend {
    fn name(&self) -> &str;
    fn fingerprint(&self) -> Fingerprint;
    /// Pure and deterministic: the same network gives the same artefact and text.
    fn lower(&self, net: &Network) -> Result<Lowered>;
    /// Loads (and compiles, where needed) a lowered network; the only call that touches the
    /// runtime or the hardware.
    fn prepare(&self, lowered: &Lowered) -> Result<Timing<'_>>;
    /// Gets ready for `prepare` on many networks at once, where the backend can do that
    /// faster than one by one (TVM compiles a batch in parallel processes). Optional: a
    /// network it could not prepare is prepared (and fails) on its own later.
    fn prepare_all(&self, _lowered: &[&Lowered]) -> Result<()> {
        Ok(())
    }
    /// Time per part of the network, where the runtime offers such a profile.
    fn profile(&self, _lowered: &Lowered) -> Result<Option<Vec<LayerTime>>> {
        Ok(None)
    }
    /// The ops the runtime runs for a network once it has compiled it — fused ops, layout
    /// conversions — counted by kind, where the runtime shows its compiled graph (`None`
    /// where it does not). Deterministic: the same network gives the same counts.
    fn compiled_ops(&self, _lowered: &Lowered) -> Result<Option<OpCounts>> {
        Ok(None)
    }
}

/// How many ops of each kind a compiled network runs.
pub type OpCounts = std::collections::BTreeMap<String, u32>;

/// A stable content hash of what a backend runs: ops, edges, shapes and regions of the
/// pruned graph (not ids or source spans), plus the batch size.
pub fn network_hash(graph: &Graph, batch: u64) -> String {
    let mut h = Sha256::new();
    h.update(format!("batch {batch}\n"));
    for (node, n) in graph.nodes.iter() {
        let inputs: Vec<usize> = n.inputs.iter().map(|x| x.index()).collect();
        h.update(format!(
            "{} {} {:?} {} {}\n",
            node.index(),
            n.op,
            inputs,
            graph.shape(node),
            graph.regions[node.index()]
        ));
    }
    let digest = h.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Backend options as `key=value` pairs, with the keys a backend accepts.
#[derive(Clone, Debug, Default)]
pub struct Options(pub BTreeMap<String, String>);

impl Options {
    pub fn parse(pairs: &[String]) -> Result<Options> {
        let mut map = BTreeMap::new();
        for p in pairs {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                BackendError::Option(format!("`{p}` is not of the form key=value"))
            })?;
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(Options(map))
    }
    /// Fails on keys the backend does not know, naming them and the ones it does.
    pub fn only(&self, backend: &str, known: &[&str]) -> Result<()> {
        for k in self.0.keys() {
            if !known.contains(&k.as_str()) {
                return Err(BackendError::Option(format!(
                    "`{backend}` has no option `{k}` (it has: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    pub fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| BackendError::Option(format!("`{key}={v}` is not a valid number"))),
        }
    }
}

/// The backend called `name`, configured by `options`.
pub fn lookup(name: &str, options: &Options) -> Result<Box<dyn Backend>> {
    Ok(match name {
        "sim" => Box::new(sim::Sim::from_options(options)?),
        "ort" => Box::new(onnxrt::Ort::from_options(options)?),
        "tch" => Box::new(torch::Tch::from_options(options)?),
        "exec" => Box::new(exec::Exec::from_options(options)?),
        #[cfg(feature = "tvm")]
        "tvm" => Box::new(tvm::Tvm::from_options(options)?),
        #[cfg(not(feature = "tvm"))]
        "tvm" => return Err(BackendError::NotCompiled("tvm")),
        other => return Err(BackendError::UnknownBackend(other.to_string())),
    })
}
