//! Timing networks in a process of their own: a request (the protocol and the networks'
//! graphs) on the child's standard input, each network's p10 on its standard output.
//!
//! Some of what a network's latency depends on is fixed for the life of a process: where
//! the loader put the code, which physical pages back the runtime's memory pool (reused by
//! every later session of the process). Runs in one process all share it, so they agree
//! with each other and not with the next process: TVM's conv+bn→relu6 probe repeats within
//! a few percent in one process and moves by 20% of the conv between processes. A test
//! that must come out the same in the next run of the tool (the fusion test) takes its runs
//! from separate processes, so its spread is the one the next run will see.

use crate::measure::{measure_together, Protocol};
use crate::{Backend, BackendError, Lowered, Result};
use serde::{Deserialize, Serialize};
use spacetune_ir::{Graph, Network};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// How to start a fresh process that times networks on the same backend: `program args…`
/// serves one request ([`serve`]) and exits.
#[derive(Clone, Debug)]
pub struct Apart {
    pub program: PathBuf,
    pub args: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Request {
    protocol: Protocol,
    networks: Vec<(String, Graph)>,
}

impl Apart {
    /// Times `lowered` together (as [`measure_together`] does) in a new process; each one's
    /// p10 (ms). The backend's artefacts are prepared here first, so the child only loads
    /// and times.
    pub fn measure(
        &self,
        backend: &dyn Backend,
        lowered: &[Lowered],
        protocol: &Protocol,
    ) -> Result<Vec<f64>> {
        backend.prepare_all(&lowered.iter().collect::<Vec<_>>())?;
        let request = Request {
            protocol: Protocol {
                apart: None,
                ..protocol.clone()
            },
            networks: lowered
                .iter()
                .map(|l| (l.id.clone(), l.graph.clone()))
                .collect(),
        };
        let what = format!("{} {}", self.program.display(), self.args.join(" "));
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(BackendError::io(format!("starting {what}")))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let json = serde_json::to_vec(&request).expect("a request serialises");
        // Written from a thread: a child that fails early stops reading, and its stderr
        // must still be collected.
        let writer = std::thread::spawn(move || stdin.write_all(&json));
        let out = child
            .wait_with_output()
            .map_err(BackendError::io(format!("waiting for {what}")))?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(BackendError::Runtime(format!(
                "timing in a separate process ({what}) failed, {}:\n{}",
                out.status,
                crate::last_lines(&String::from_utf8_lossy(&out.stderr), 12)
            )));
        }
        let p10s: Vec<f64> = serde_json::from_slice(&out.stdout).map_err(|e| {
            BackendError::Runtime(format!("{what} answered what is not a list of times: {e}"))
        })?;
        if p10s.len() != lowered.len() {
            return Err(BackendError::Runtime(format!(
                "{what} timed {} networks of {}",
                p10s.len(),
                lowered.len()
            )));
        }
        Ok(p10s)
    }
}

/// The child's side of [`Apart::measure`]: reads a request from `input`, lowers and times
/// its networks on `backend`, writes their p10s (ms) to `output` as a JSON list.
pub fn serve(backend: &dyn Backend, input: impl Read, mut output: impl Write) -> Result<()> {
    let request: Request = serde_json::from_reader(input)
        .map_err(|e| BackendError::Runtime(format!("the timing request does not parse: {e}")))?;
    let lowered: Vec<Lowered> = request
        .networks
        .into_iter()
        .map(|(id, graph)| backend.lower(&Network::fixed(id, graph)))
        .collect::<Result<_>>()?;
    let p10s: Vec<f64> = measure_together(backend, &lowered, &request.protocol)?
        .iter()
        .map(|l| l.p10_ms)
        .collect();
    serde_json::to_writer(&mut output, &p10s).expect("numbers serialise");
    output
        .flush()
        .map_err(BackendError::io("writing the times".to_string()))
}
