//! `spacetune measure`: the cache makes runs resumable, failures stay with their network,
//! and the external-command backend reports what went wrong.

mod common;

use common::root;
use spacetune::backends::{
    lookup,
    measure::Protocol,
    store::{Sqlite, Store},
    Options,
};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SPACE: &str = "examples/bbssp_cifar_mobile.space";
const SSBNS: usize = 81;

fn measure_args(dir: &Path, backend: &str, options: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "measure".into(),
        SPACE.into(),
        "--backend".into(),
        backend.into(),
        "--db".into(),
        dir.join("m.db").display().to_string(),
        "--out".into(),
        dir.join("out").display().to_string(),
    ];
    for o in options {
        args.push("-o".into());
        args.push(o.to_string());
    }
    args
}

fn spacetune(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs")
}

fn csv_rows(dir: &Path, backend: &str) -> Vec<csv::StringRecord> {
    let path = dir.join(format!("out/bbssp_cifar_mobile.{backend}.csv"));
    let mut r = csv::Reader::from_path(&path).unwrap();
    r.records().map(|r| r.unwrap()).collect()
}

#[test]
fn sim_measure_writes_json_and_csv_and_reuses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let args = measure_args(dir.path(), "sim", &[]);
    let first = spacetune(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains(&format!("({SSBNS} measured, 0 from the cache")),
        "{stdout}"
    );
    let rows = csv_rows(dir.path(), "sim");
    assert_eq!(rows.len(), SSBNS);
    assert!(rows.iter().all(|r| r[3].parse::<f64>().unwrap() > 0.0));
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/bbssp_cifar_mobile.sim.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["networks"].as_array().unwrap().len(), SSBNS);
    assert_eq!(json["fingerprint"]["backend"], "sim");

    let again = spacetune(&args);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains(&format!("(0 measured, {SSBNS} from the cache")),
        "{stdout}"
    );
    assert_eq!(csv_rows(dir.path(), "sim"), rows, "cached results differ");
}

#[test]
fn a_killed_run_resumes_and_measures_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("calls");
    // Each call leaves a line in the counter, so the test sees how many networks ran.
    let command = format!(
        "command=echo \"$1\" >> {}; sleep 0.05; echo '{{\"latency_ms\": 1.25}}'",
        counter.display()
    );
    let args = measure_args(dir.path(), "exec", &[&command]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(&args)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |s| s.lines().count());
    let start = Instant::now();
    while lines(&counter) < 25 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run never got going"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no chance to flush or clean up
    child.wait().unwrap();

    let backend = lookup(
        "exec",
        &Options::parse(std::slice::from_ref(&command)).unwrap(),
    )
    .unwrap();
    let stored = Sqlite::open(&dir.path().join("m.db"))
        .unwrap()
        .count(&backend.fingerprint().under(&Protocol::default()))
        .unwrap();
    assert!(
        (20..SSBNS).contains(&stored),
        "{stored} results survived the kill"
    );

    std::fs::remove_file(&counter).unwrap();
    let rerun = spacetune(&args);
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_eq!(
        lines(&counter),
        SSBNS - stored,
        "the rerun re-measured finished networks"
    );
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    assert!(
        stdout.contains(&format!(
            "({} measured, {stored} from the cache",
            SSBNS - stored
        )),
        "{stdout}"
    );
    assert_eq!(csv_rows(dir.path(), "exec").len(), SSBNS);
}

#[test]
fn exec_failures_stay_with_their_network() {
    let dir = tempfile::tempdir().unwrap();
    let command = "command=case \"$1\" in \
        *mobile-0-3.onnx) echo 'board not responding' >&2; exit 3;; \
        *mobile-0-4.onnx) sleep 5;; \
        *mobile-0-5.onnx) echo 'latency: fast';; \
        *mobile-0-6.onnx) echo '{\"latency_ms\": 2.5, \"per_layer\": [{\"region\": \"layer0\", \"ms\": -0.5}]}';; \
        *mobile-0-7.onnx) echo '{\"latency_ms\": 2.5, \"per_layer\": [{\"region\": \"layer0\", \"ms\": 3}]}';; \
        *) echo '{\"latency_ms\": 2.5, \"per_layer\": [{\"region\": \"layer0\", \"ms\": 0.5}]}';; \
        esac";
    let out = spacetune(&measure_args(dir.path(), "exec", &[command, "timeout=1"]));
    assert!(!out.status.success(), "a failed network must fail the run");
    let rows = csv_rows(dir.path(), "exec");
    assert_eq!(rows.len(), SSBNS, "every network has a row");
    let failure = |id: &str| rows.iter().find(|r| &r[1] == id).unwrap()[10].to_string();
    assert!(
        failure("mobile-0-3").contains("board not responding"),
        "{}",
        failure("mobile-0-3")
    );
    assert!(failure("mobile-0-3").contains("exit status: 3"));
    assert!(
        failure("mobile-0-4").contains("timed out"),
        "{}",
        failure("mobile-0-4")
    );
    assert!(
        failure("mobile-0-5").contains("latency: fast"),
        "{}",
        failure("mobile-0-5")
    );
    assert!(
        failure("mobile-0-6").contains("must be finite and not negative, got -0.5"),
        "{}",
        failure("mobile-0-6")
    );
    assert!(
        failure("mobile-0-7").contains("sum to 3 ms, more than latency_ms 2.5"),
        "{}",
        failure("mobile-0-7")
    );
    let ok: Vec<_> = rows.iter().filter(|r| r[10].is_empty()).collect();
    assert_eq!(ok.len(), SSBNS - 5);
    assert!(ok.iter().all(|r| &r[3] == "2.50000"));
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/bbssp_cifar_mobile.exec.json")).unwrap(),
    )
    .unwrap();
    let first = &json["networks"][0]["latency"]["per_layer"][0];
    assert_eq!(first["region"]["kind"], "layer");
    assert_eq!(first["ms"], 0.5);
}

#[test]
fn unknown_backend_and_bad_option_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = spacetune(&measure_args(dir.path(), "fpga", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unknown backend `fpga`"), "{stderr}");
    let out = spacetune(&measure_args(dir.path(), "ort", &["opt=fast"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("opt must be all or disabled"), "{stderr}");
}

/// The runtimes' versions come from what the process loaded; the pins are scripts/setup.sh's.
#[test]
fn fingerprints_name_the_runtimes_as_loaded() {
    let runtime = |name: &str| {
        lookup(name, &Options::default())
            .unwrap()
            .fingerprint()
            .runtime
    };
    let python = root().join(".deps/venv/bin/python");
    let out = Command::new(&python)
        .args(["-c", "import onnxruntime; print(onnxruntime.__version__)"])
        .output()
        .unwrap();
    let ort = String::from_utf8(out.stdout).unwrap();
    assert_eq!(ort.trim(), "1.32.0", "the venv's onnxruntime");
    let r = runtime("ort");
    assert!(r.starts_with("onnxruntime 1.32.0 ("), "{r}");
    let r = runtime("tch");
    assert!(r.starts_with("libtorch 2.13.0"), "{r}");
    if cfg!(feature = "tvm") {
        let r = runtime("tvm");
        assert_eq!(r, "apache-tvm 0.27.0.post1 tvm-ffi 0.1.14.post1");
    }
}
