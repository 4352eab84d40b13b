//! `profile --workers N` and `spacetune worker`: a profile run shared by processes that
//! take its networks from the store's queue. The run is registered in the store (its
//! command line and the text of the DSL file and of every file it imports), so a worker
//! needs nothing but the store's URL.

use crate::slurm::{self, SlurmArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use spacetune::backends::store::Store;
use spacetune::ir::Module;
use spacetune::pass::ctx::{Ctx, Others, Sharing, TrainSpec};
use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// How a command that profiles shares the work (`profile`, `run`, `search`).
#[derive(Args, Clone, Debug)]
pub struct SharingArgs {
    /// Processes sharing the profile on this machine (this one and N − 1 started with it,
    /// each taking networks from the store's queue; logs in the store's folder)
    #[arg(long, default_value_t = 1, conflicts_with = "slurm")]
    pub workers: usize,
    #[command(flatten)]
    pub slurm: SlurmArgs,
    /// Set by `spacetune worker`: profile what can be claimed, nothing else
    #[arg(long, hide = true)]
    pub worker_only: bool,
}

/// The workers a run started: local processes, or a Slurm array this process waits for.
#[derive(Default)]
pub struct Helpers {
    local: Vec<(PathBuf, Child)>,
    job: Option<slurm::Job>,
}

impl Helpers {
    /// Registers the run and starts its workers, as `s` asks (none for one worker).
    pub fn start(
        s: &SharingArgs,
        store: &dyn Store,
        db: &str,
        file: &Path,
        logs: &Path,
    ) -> Result<Helpers> {
        let register = || {
            let argv: Vec<String> = std::env::args().skip(1).collect();
            register(store, &argv, file)
        };
        if s.slurm.slurm {
            let id = register()?;
            let job = slurm::submit(&s.slurm, db, &id, logs)?;
            eprintln!(
                "run {id} registered in {db}; Slurm job array {} of {} workers ({})",
                job.id,
                s.slurm.array,
                job.script.display()
            );
            return Ok(Helpers {
                local: Vec::new(),
                job: Some(job),
            });
        }
        if s.workers == 0 {
            bail!("--workers 0: at least this process works");
        }
        if s.workers == 1 {
            return Ok(Helpers::default());
        }
        let id = register()?;
        eprintln!(
            "run {id} registered in {db}; {} more workers",
            s.workers - 1
        );
        Ok(Helpers {
            local: spawn(s.workers - 1, db, &id, logs)?,
            job: None,
        })
    }

    /// The Slurm array, for the context: this process then claims nothing and waits.
    pub fn others(&self) -> Option<&dyn Others> {
        self.job.as_ref().map(|j| j as &dyn Others)
    }

    /// Waits for the local workers; says which failed (the run does not depend on them:
    /// what they left unfinished was taken over when their leases lapsed). A Slurm array's
    /// tasks that have not started yet are cancelled: they would only find the work done.
    pub fn join(self) {
        for failed in join(self.local) {
            eprintln!("{failed}");
        }
        if let Some(job) = &self.job {
            if let Err(e) = job.cancel_pending() {
                eprintln!("{e}");
            }
        }
    }
}

/// The workers of a run, started when its profile begins.
pub struct Lazy<'a> {
    pub args: &'a SharingArgs,
    pub store: &'a dyn Store,
    pub db: &'a str,
    pub file: &'a Path,
    pub logs: PathBuf,
    started: OnceCell<std::result::Result<Helpers, String>>,
}

impl<'a> Lazy<'a> {
    /// The workers of a run of `file` on the store `on` names (opened as `store`); their
    /// logs in its folder's `workers/`.
    pub fn new(
        args: &'a SharingArgs,
        store: &'a dyn Store,
        on: &'a crate::measure::BackendArgs,
        file: &'a Path,
    ) -> Lazy<'a> {
        Lazy {
            args,
            store,
            db: &on.db,
            file,
            logs: on.local_dir().join("workers"),
            started: OnceCell::new(),
        }
    }

    /// Waits for the local workers started, if any.
    pub fn join(self) {
        if let Some(Ok(helpers)) = self.started.into_inner() {
            helpers.join();
        }
    }
}

impl Sharing for Lazy<'_> {
    fn begin(&self) -> std::result::Result<Option<&dyn Others>, String> {
        let started = self.started.get_or_init(|| {
            Helpers::start(self.args, self.store, self.db, self.file, &self.logs)
                .map_err(|e| format!("{e:#}"))
        });
        match started {
            Ok(h) => Ok(h.others()),
            Err(e) => Err(e.clone()),
        }
    }
}

/// A worker's part: the profile's queues only (expand, then profile; the SSBNs' latencies
/// are the coordinator's to measure).
pub fn profile_only(m: &Module, cx: &Ctx<'_>, spec: &TrainSpec) -> Result<()> {
    let table = spacetune::pass::profile::accuracies(m, cx, spec)?;
    let made = table.results.values().filter(|t| !t.cached).count();
    eprintln!(
        "worker: {made} of {} networks profiled here",
        table.results.len()
    );
    Ok(())
}

/// `spacetune worker`: work on a registered run until its queues are done.
#[derive(Args)]
pub struct WorkerArgs {
    /// The store the run was registered in (a PostgreSQL URL or a SQLite file)
    #[arg(long)]
    pub db: String,
    /// The run (its id, printed when it was registered); default: the latest
    #[arg(long)]
    pub run: Option<String>,
}

/// A run as registered: enough to run its profile pass anywhere.
#[derive(Serialize, Deserialize)]
struct Registered {
    /// The command line after the program's name, the file's path as given.
    argv: Vec<String>,
    file: String,
    /// Every source file by absolute path, the main file first: a worker writes them under
    /// a folder of its own at the same paths, so imports resolve as they did here.
    sources: Vec<(String, String)>,
}

const LATEST: &str = "run/latest";

/// Registers the profile run `argv` (the process's arguments, `--workers` taken out) of
/// `file`, and returns its id.
fn register(store: &dyn Store, argv: &[String], file: &Path) -> Result<String> {
    let compiled = spacetune::compile(
        file,
        spacetune::Options {
            until: Some("check"),
            ..Default::default()
        },
    );
    let sources = compiled
        .sources
        .files
        .iter()
        .map(|f| {
            let path = std::fs::canonicalize(&f.name)
                .with_context(|| format!("finding {} to register the run", f.name))?;
            Ok((path.display().to_string(), f.text.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    let run = Registered {
        argv: without_workers(argv),
        file: file.display().to_string(),
        sources,
    };
    let json = serde_json::to_vec(&run)?;
    let id = spacetune::backends::store::digest(&json);
    store.put_blob(&format!("run/{id}"), &json)?;
    store.put_blob(LATEST, id.as_bytes())?;
    Ok(id)
}

/// The flags that start workers (with their values, but `--slurm`): a worker runs the pass
/// alone.
const STARTING_WORKERS: &[&str] = &["--workers", "--slurm", "--array", "--partition", "--time"];

/// `argv` less the flags that start workers.
fn without_workers(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in argv {
        if std::mem::take(&mut skip) {
            continue;
        }
        let flag = a.split('=').next().unwrap_or("");
        if STARTING_WORKERS.contains(&flag) {
            skip = a != "--slurm" && !a.contains('=');
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// Starts `n` local worker processes on run `id` of the store `db`; each one's output
/// goes to `<logs>/worker-<id>-<k>.log`.
fn spawn(n: usize, db: &str, id: &str, logs: &Path) -> Result<Vec<(PathBuf, Child)>> {
    let exe = std::env::current_exe().context("finding spacetune's own executable")?;
    std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
    (1..=n)
        .map(|k| {
            let log = logs.join(format!("worker-{id}-{k}.log"));
            let out = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let child = Command::new(&exe)
                .args(["worker", "--db", db, "--run", id])
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting worker {k}"))?;
            Ok((log, child))
        })
        .collect()
}

/// Waits for the workers; a line for each that failed.
fn join(children: Vec<(PathBuf, Child)>) -> Vec<String> {
    children
        .into_iter()
        .filter_map(|(log, mut child)| match child.wait() {
            Ok(status) if status.success() => None,
            Ok(status) => Some(format!(
                "worker {} {status} (see {})",
                child.id(),
                log.display()
            )),
            Err(e) => Some(format!("worker {}: {e}", child.id())),
        })
        .collect()
}

/// The command line of a registered run for a worker: its file written to `dir`, the
/// arguments pointing at it and at the store as the worker reaches it (`db`), and
/// `--worker-only`.
pub fn command_line(
    store: &dyn Store,
    db: &str,
    run: Option<&str>,
    dir: &Path,
) -> Result<Vec<String>> {
    let id = match run {
        Some(id) => id.to_string(),
        None => match store.blob(LATEST)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => bail!("the store {} has no registered run", store.location()),
        },
    };
    let Some(json) = store.blob(&format!("run/{id}"))? else {
        bail!("the store {} has no run `{id}`", store.location());
    };
    let run: Registered = serde_json::from_slice(&json)
        .with_context(|| format!("run `{id}` in {} does not parse", store.location()))?;
    let mut local = None;
    for (path, text) in &run.sources {
        let at = dir.join(path.trim_start_matches('/'));
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&at, text).with_context(|| format!("writing {}", at.display()))?;
        local.get_or_insert(at);
    }
    let Some(local) = local else {
        bail!("run `{id}` in {} has no source file", store.location());
    };
    let local = local.display().to_string();
    let mut argv = vec!["spacetune".to_string()];
    let mut value_of_db = false;
    for a in run.argv {
        argv.push(if std::mem::take(&mut value_of_db) {
            db.to_string()
        } else if a == run.file {
            local.clone()
        } else if a.starts_with("--db=") {
            format!("--db={db}")
        } else {
            value_of_db = a == "--db";
            a
        });
    }
    if !argv.iter().any(|a| a == "--db" || a.starts_with("--db=")) {
        argv.extend(["--db".into(), db.into()]);
    }
    argv.push("--worker-only".into());
    Ok(argv)
}

#[cfg(test)]
mod tests {
    #[test]
    fn workers_are_taken_out_of_the_registered_command_line() {
        let argv: Vec<String> = [
            "profile",
            "a.space",
            "--workers",
            "4",
            "--workers=2",
            "--db",
            "x",
            "--slurm",
            "--array",
            "8",
            "--partition=cpu",
            "--time",
            "1:00:00",
            "--seed",
            "3",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            super::without_workers(&argv),
            ["profile", "a.space", "--db", "x", "--seed", "3"]
        );
    }
}
