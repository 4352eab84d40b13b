//! Several workers on one store, SQLite and PostgreSQL (a server of the test's own): every
//! SSBN profiled exactly once with the accuracies one process makes; a worker killed with
//! SIGKILL mid-training leaves its network to another; a whole run killed and started
//! again finishes with every result present once; a Slurm job array (a one-node cluster of
//! the test's own) profiles the Mobile space of a run that measures it on sim, and killed
//! mid-run, a second array finishes; bad stores and a full disk are clear errors.

mod common;

use common::{postgres::Server, root, slurm::Cluster};
use spacetune::backends::store::{self, QueueState};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FILE: &str = "tests/in/width_choice.space"; // 15 SSBNs
const SSBNS: usize = 15;

/// `profile` on the tiny budget (with fine-tuning long enough that a kill lands mid-item),
/// run in `out`'s parent (where a server store's checkpoints and worker logs go).
fn profile(db: &str, out: &Path, more: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spacetune"));
    c.arg("profile")
        .arg(root().join(FILE))
        .args(common::TINY_BUDGET)
        .args(["--finetune-epochs", "3", "--db", db, "--out"])
        .arg(out)
        .args(more)
        .current_dir(out.parent().unwrap());
    c
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// `key → accuracy` from a profile's CSV.
fn accuracies(out: &Path) -> BTreeMap<String, String> {
    let mut r = csv::Reader::from_path(out.join("width_choice.accuracy.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (k, a) = (col("key"), col("accuracy"));
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[k].to_string(), rec[a].to_string())
        })
        .collect()
}

/// The state of every queue of the store, the SSBN_0 checkpoint's and the accuracies'.
fn queues(db: &str) -> Vec<(String, QueueState)> {
    store::open(db).unwrap().queues("").unwrap()
}

fn accuracy_rows(db: &str) -> usize {
    store::open(db).unwrap().accuracy_count().unwrap()
}

/// One process's accuracies, the reference every shared run must reproduce.
fn reference() -> BTreeMap<String, String> {
    static REFERENCE: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
    REFERENCE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("one.db").display().to_string();
            ok(profile(&db, &dir.path().join("out"), &[]).output().unwrap());
            accuracies(&dir.path().join("out"))
        })
        .clone()
}

/// Asserts that the run on `db` profiled every SSBN once, with one process's accuracies
/// (in `out`'s CSV), and returns the state of its accuracy queue.
fn all_profiled(db: &str, out: &Path, text: &str) -> QueueState {
    assert_eq!(accuracies(out), reference(), "{text}");
    assert_eq!(accuracy_rows(db), SSBNS);
    let s = accuracy_queue(db);
    assert_eq!((s.total, s.done), (SSBNS, SSBNS), "{s:?}");
    s
}

/// The state of the run's one accuracy queue.
fn accuracy_queue(db: &str) -> QueueState {
    let all = queues(db);
    let accuracy: Vec<QueueState> = all
        .iter()
        .filter(|(q, _)| q.starts_with("accuracy/"))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(accuracy.len(), 1, "{all:?}");
    accuracy[0]
}

fn three_workers_share_the_run(db: &str, out: &Path) {
    let text = ok(profile(db, out, &["--workers", "3"]).output().unwrap());
    assert!(text.contains("more workers"), "{text}");
    let s = all_profiled(db, out, &text);
    assert_eq!(s.claims, SSBNS, "{s:?}");
    assert!(s.workers >= 2, "the work was not shared: {s:?}");
    let all = queues(db);
    // The checkpoint queue: SSBN_0 trained once.
    assert!(all
        .iter()
        .any(|(q, s)| q.starts_with("checkpoint/") && s.claims == 1));
}

#[test]
fn three_workers_on_sqlite_profile_every_ssbn_once_as_one_process_would() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db").display().to_string();
    three_workers_share_the_run(&db, &dir.path().join("out"));
}

#[test]
fn three_workers_on_postgres_profile_every_ssbn_once_as_one_process_would() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    three_workers_share_the_run(&server.url(), &dir.path().join("out"));
}

#[test]
fn a_worker_finds_the_files_the_run_imports() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .arg("profile")
        .arg(root().join("tests/in/reduced_layers.space")) // imports ../../examples/lib
        .args(common::TINY_BUDGET)
        .args(["--db", &db, "--workers", "2", "--out"])
        .arg(dir.path().join("out"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = ok(out);
    let logs: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("workers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        log.contains("worker: ") && !log.contains("error"),
        "{log}\n{text}"
    );
}

/// `run` (and `search`) share their profile too: the workers start when the profile
/// begins, after the measure pass, and the run goes on to selection.
#[test]
fn run_shares_its_profile_with_workers_and_goes_on_to_select() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db").display().to_string();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .arg("run")
        .arg(root().join(FILE))
        .args(common::TINY_BUDGET)
        .args([
            "--finetune-epochs",
            "3",
            "--until",
            "reduce",
            "--eval-samples",
            "0",
        ])
        .args(["--db", &db, "--workers", "2", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = ok(o);
    assert!(text.contains("more workers"), "{text}");
    assert!(out.join("width_choice.reduced.space").exists(), "{text}");
    let s = all_profiled(&db, &out, &text);
    assert_eq!(s.claims, SSBNS, "{s:?}");
}

/// Whether the worker process `pid` holds an unfinished item of the PostgreSQL store.
fn holds_an_item(url: &str, pid: u32) -> bool {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM work WHERE NOT done AND queue LIKE 'accuracy/%'
             AND worker LIKE '%:' || $1 || ':%'",
            &[&pid.to_string()],
        )
        .unwrap()
        .get(0);
    n > 0
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(300), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_worker_killed_mid_training_leaves_its_network_to_another() {
    let server = Server::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let coordinator = profile(&url, &out, &["--workers", "2", "--lease", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A third worker of the test's own, killed while it holds a network.
    wait_for("the run is registered", || {
        store::open(&url)
            .unwrap()
            .blob("run/latest")
            .unwrap()
            .is_some()
    });
    let mut worker = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(["worker", "--db", &url])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = worker.id();
    wait_for("the worker holds a network", || holds_an_item(&url, pid));
    kill(&mut worker);
    let held = accuracy_rows(&url);
    assert!(held < SSBNS, "the run ended before the kill");

    let text = ok(coordinator.wait_with_output().unwrap());
    let s = all_profiled(&url, &out, &text);
    // The killed worker's network was claimed twice: by it, and after its lease lapsed.
    assert_eq!(s.claims, SSBNS + 1, "{s:?}");
}

#[test]
fn a_whole_run_killed_and_started_again_has_every_result_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db").display().to_string();
    let out = dir.path().join("out");
    // Its own process group, so that one signal kills the coordinator and its workers.
    let mut run = profile(&db, &out, &["--workers", "2", "--lease", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_for("a few networks are profiled", || {
        Path::new(&db).exists() && accuracy_rows(&db) >= 4
    });
    unsafe { libc::kill(-(run.id() as i32), libc::SIGKILL) };
    run.wait().unwrap();
    let before = accuracy_rows(&db);
    assert!(
        (4..SSBNS).contains(&before),
        "{before} profiled before the kill"
    );

    let text = ok(profile(&db, &out, &["--workers", "2", "--lease", "2"])
        .output()
        .unwrap());
    let s = all_profiled(&db, &out, &text);
    // Only what was in flight at the kill (one item per process) is claimed again.
    assert!(s.claims <= SSBNS + 2, "{s:?}");
}

/// The BBSSP CIFAR Mobile space: 10 decisions of 9 options, 81 SSBNs.
const MOBILE: &str = "examples/bbssp_cifar_mobile.space";
const MOBILE_SSBNS: usize = 81;

/// A 4-task Slurm array against PostgreSQL profiles the Mobile space (synthetic data) of a
/// `run` that measures it on sim and goes on to selection: every SSBN measured, every SSBN
/// profiled exactly once, every task a worker.
#[test]
fn a_slurm_array_of_four_workers_profiles_the_mobile_space_of_a_run_on_sim() {
    let server = Server::start();
    let cluster = Cluster::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .arg("run")
        .arg(root().join(MOBILE))
        .args(common::TINY_BUDGET)
        .args([
            "--backend",
            "sim",
            "--until",
            "select",
            "--eval-samples",
            "0",
        ])
        .args(["--db", &url, "--slurm", "--array", "4", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    let text = ok(o);
    assert!(text.contains("Slurm job array"), "{text}");
    let measured = format!("{MOBILE_SSBNS} networks on sim");
    assert!(
        text.contains(&measured) && text.contains("0 failed)"),
        "{text}"
    );
    assert!(
        out.join("bbssp_cifar_mobile.select.json").exists(),
        "{text}"
    );
    assert_eq!(accuracy_rows(&url), MOBILE_SSBNS);
    let s = accuracy_queue(&url);
    assert_eq!(
        (s.total, s.done, s.claims),
        (MOBILE_SSBNS, MOBILE_SSBNS, MOBILE_SSBNS),
        "{s:?}"
    );
    assert!(s.workers >= 2, "the array did not share the work: {s:?}");
    // Two tasks run at once on the test's 2-CPU node; those still pending when the work is
    // done are cancelled, not left to start and find nothing.
    let logs: Vec<_> = std::fs::read_dir(dir.path().join(".spacetune/workers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("slurm-"))
        .collect();
    assert!((2..=4).contains(&logs.len()), "{logs:?}");
    let pending = Command::new("squeue")
        .args(["-h", "-t", "PENDING", "-o", "%i"])
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    let pending = String::from_utf8_lossy(&pending.stdout);
    assert!(pending.trim().is_empty(), "left pending: {pending}");
}

/// A tmpfs of `size` mounted on `at` while it lives (the tests run as root, as CI does).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_path_buf())
    }

    /// Writes a file until the disk refuses more.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).and_then(|_| f.sync_data()).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "8m");
    let db = dir.path().join("disk/m.db").display().to_string();
    let out = dir.path().join("out");
    ok(profile(&db, &out, &["--base-only"]).output().unwrap());
    assert_eq!(accuracy_rows(&db), 1);
    let filler = disk.fill();
    let o = profile(&db, &out, &[]).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("store: opening") && e.contains("bytes free"),
        "{e}"
    );
    std::fs::remove_file(filler).unwrap();
    assert_eq!(accuracy_rows(&db), 1, "SSBN_0's accuracy survived");
}

#[test]
fn a_slurm_array_killed_mid_run_is_an_error_and_a_second_array_finishes() {
    let server = Server::start();
    let cluster = Cluster::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let slurm = ["--slurm", "--array", "2", "--lease", "2"];
    let coordinator = profile(&url, &out, &slurm)
        .env("SLURM_CONF", cluster.conf())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("a few networks are profiled", || accuracy_rows(&url) >= 4);
    let cancel = Command::new("scancel")
        .args(["--full", "--signal", "KILL", "--user", "root"])
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    assert!(cancel.status.success(), "{cancel:?}");
    let o = coordinator.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("has ended") && e.contains("run again to finish"),
        "{e}"
    );
    let before = accuracy_rows(&url);
    assert!(
        (4..SSBNS).contains(&before),
        "{before} profiled before the kill"
    );

    let text = ok(profile(&url, &out, &slurm)
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap());
    let s = all_profiled(&url, &out, &text);
    // Only what the two killed workers held is claimed again.
    assert!(s.claims <= SSBNS + 2, "{s:?}");
}

#[test]
fn bad_stores_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let fails = |db: &str| {
        let o = profile(db, &out, &[]).output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = fails("postgres://me:secret@127.0.0.1:1/nowhere");
    assert!(
        e.contains("store: opening postgres://me:***@127.0.0.1:1/nowhere"),
        "{e}"
    );
    assert!(e.contains("onnection refused"), "{e}");
    assert!(!e.contains("secret"), "{e}");
    let e = fails("postgres://127.0.0.1:notaport/x");
    assert!(
        e.contains("store: opening postgres://127.0.0.1:notaport/x"),
        "{e}"
    );
    // A server that is down: started, then stopped.
    let url = {
        let server = Server::start();
        server.url()
    };
    let e = fails(&url);
    assert!(e.contains("onnection refused"), "{e}");
    // A worker pointed at a store with no run registered.
    let db = dir.path().join("empty.db").display().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(["worker", "--db", &db])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("has no registered run"),
        "{e}"
    );
    assert!(accuracy_rows(&db) == 0);
}
