//! `profile --slurm`: the run's workers as a Slurm job array. The script is written beside
//! the store's folder, submitted with `sbatch --parsable`, and watched with `squeue` while
//! this process waits on the store's queue.

use anyhow::{bail, Context, Result};
use clap::Args;
use spacetune::pass::ctx::Others;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Args, Clone, Debug)]
pub struct SlurmArgs {
    /// Run the workers as a Slurm job array (`sbatch`); this process waits for them
    #[arg(long)]
    pub slurm: bool,
    /// Workers in the array
    #[arg(long, default_value_t = 4, requires = "slurm")]
    pub array: usize,
    /// The partition to submit to (default: the cluster's)
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// Each worker's time limit, in Slurm's format (e.g. 2:00:00)
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
}

/// squeue's states of a job that may still work.
const ACTIVE: &[&str] = &[
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
];

/// A submitted array.
pub struct Job {
    pub id: String,
    pub script: PathBuf,
    /// When squeue was last asked, and its answer: it is not asked more than every few seconds.
    asked: Cell<Option<Instant>>,
}

/// The batch script of an array of `a.array` workers on run `run` of the store `db`.
pub fn script(a: &SlurmArgs, exe: &Path, db: &str, run: &str, logs: &Path) -> String {
    let mut s = String::from("#!/bin/sh\n");
    s += &format!("#SBATCH --job-name=spacetune-{run}\n");
    s += &format!("#SBATCH --array=0-{}\n", a.array.max(1) - 1);
    s += &format!("#SBATCH --output={}/slurm-%A_%a.log\n", logs.display());
    if let Some(p) = &a.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if let Some(t) = &a.time {
        s += &format!("#SBATCH --time={t}\n");
    }
    s += &format!(
        "exec {} worker --db {} --run {run}\n",
        quote(&exe.display().to_string()),
        quote(db)
    );
    s
}

/// `text` as one word for sh.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Writes the script to `dir` and submits it; the job's id from `sbatch --parsable`.
pub fn submit(a: &SlurmArgs, db: &str, run: &str, dir: &Path) -> Result<Job> {
    if a.array == 0 {
        bail!("--array 0: an array needs at least one worker");
    }
    let exe = std::env::current_exe().context("finding spacetune's own executable")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("run-{run}.sbatch"));
    std::fs::write(&path, script(a, &exe, db, run, dir))
        .with_context(|| format!("writing {}", path.display()))?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&path)
        .output()
        .context("running sbatch (is Slurm installed and on the PATH?)")?;
    if !out.status.success() {
        bail!(
            "sbatch {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // "<id>" or "<id>;<cluster>".
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() {
        bail!("sbatch {} printed no job id", path.display());
    }
    Ok(Job {
        id,
        script: path,
        asked: Cell::new(None),
    })
}

impl Job {
    /// Cancels the array's tasks still pending (`scancel --state=PENDING`); those running
    /// end by themselves once the queue is done. An array with none pending is left alone:
    /// scancel fails on a job that has ended ("Invalid job id specified").
    pub fn cancel_pending(&self) -> Result<()> {
        let pending = Command::new("squeue")
            .args(["-h", "-j", &self.id, "-t", "PENDING", "-o", "%i"])
            .output()
            .context("running squeue")?;
        // squeue too fails on an ended job: then nothing is pending either.
        if !pending.status.success() || pending.stdout.trim_ascii().is_empty() {
            return Ok(());
        }
        let out = Command::new("scancel")
            .args(["--state=PENDING", &self.id])
            .output()
            .context("running scancel")?;
        if !out.status.success() {
            bail!(
                "scancel --state=PENDING {}: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Others for Job {
    fn check(&self) -> std::result::Result<(), String> {
        if self
            .asked
            .get()
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3))
        {
            return Ok(());
        }
        self.asked.set(Some(Instant::now()));
        let out = Command::new("squeue")
            .args(["-h", "-j", &self.id, "-o", "%T"])
            .output()
            .map_err(|e| format!("running squeue: {e}"))?;
        let states = String::from_utf8_lossy(&out.stdout);
        // A finished job is listed for a while (COMPLETED, FAILED, ...), then unknown.
        if out.status.success() && states.lines().any(|s| ACTIVE.contains(&s.trim())) {
            return Ok(());
        }
        Err(format!(
            "the Slurm job array {} has ended (its logs are beside {})",
            self.id,
            self.script.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_runs_an_array_of_workers_on_the_registered_run() {
        let a = SlurmArgs {
            slurm: true,
            array: 4,
            partition: Some("cpu".into()),
            time: None,
        };
        let s = script(
            &a,
            Path::new("/opt/spacetune"),
            "postgres://u@db/x",
            "abc",
            Path::new("/l"),
        );
        assert!(s.contains("#SBATCH --array=0-3\n"), "{s}");
        assert!(s.contains("#SBATCH --partition=cpu\n"), "{s}");
        assert!(!s.contains("--time"), "{s}");
        assert!(
            s.ends_with("exec '/opt/spacetune' worker --db 'postgres://u@db/x' --run abc\n"),
            "{s}"
        );
    }
}
