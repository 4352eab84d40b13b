//! A one-node Slurm cluster of a test's own (Debian's `slurm-wlm` and `munge`, as root):
//! a configuration in a temporary directory with ports of its own, `munged` started if it
//! is not running, `slurmctld` and `slurmd` in the foreground, stopped when dropped.
//! Clients find it through `SLURM_CONF`, which [`Cluster::conf`] gives.

use super::postgres::run as ok;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

/// munged running with a key (generated if the package left none).
fn munge() {
    let key = Path::new("/etc/munge/munge.key");
    if !key.exists() {
        ok(
            Command::new("mungekey")
                .args(["--create", "--keyfile"])
                .arg(key),
            "mungekey",
        );
        ok(
            Command::new("chown").args(["munge:munge"]).arg(key),
            "chown key",
        );
        ok(Command::new("chmod").args(["400"]).arg(key), "chmod key");
    }
    let running = Command::new("munge")
        .arg("-n")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !running {
        for dir in ["/run/munge", "/var/log/munge", "/var/lib/munge"] {
            std::fs::create_dir_all(dir).unwrap();
            ok(Command::new("chown").args(["munge:munge", dir]), "chown");
        }
        ok(
            Command::new("runuser").args(["-u", "munge", "--", "munged"]),
            "munged",
        );
    }
}

impl Cluster {
    pub fn start() -> Cluster {
        munge();
        let dir = tempfile::tempdir().unwrap();
        let host = ok(Command::new("hostname").arg("-s"), "hostname");
        let host = host.trim();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let at = |name: &str| dir.path().join(name).display().to_string();
        for d in ["state", "spool"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let conf = format!(
            "ClusterName=spacetunetest
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={ctld}
SlurmdPort={d}
AuthType=auth/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={ctld_pid}
SlurmdPidFile={d_pid}
SlurmctldLogFile={ctld_log}
SlurmdLogFile={d_log}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
",
            ctld = super::postgres::free_port(),
            d = super::postgres::free_port(),
            state = at("state"),
            spool = at("spool"),
            ctld_pid = at("slurmctld.pid"),
            d_pid = at("slurmd.pid"),
            ctld_log = at("slurmctld.log"),
            d_log = at("slurmd.log"),
        );
        std::fs::write(dir.path().join("slurm.conf"), conf).unwrap();
        let conf = dir.path().join("slurm.conf");
        let daemon = |program: &str| {
            Command::new(program)
                .arg("-D")
                .arg("-f")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs slurm-wlm)"))
        };
        let daemons = vec![daemon("slurmctld"), daemon("slurmd")];
        let cluster = Cluster { dir, daemons };
        let start = Instant::now();
        loop {
            let out = Command::new("sinfo")
                .args(["-h", "-o", "%t"])
                .env("SLURM_CONF", cluster.conf())
                .output();
            let state = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
            if state.as_deref().is_ok_and(|s| s.starts_with("idle")) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the test cluster's node never became idle ({state:?}); logs in {}",
                cluster.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    /// The configuration file, for `SLURM_CONF`.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}
