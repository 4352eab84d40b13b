//! Latency tables end to end on the simulator (deterministic): the corrected table as the
//! IR shows it, and how the predictors score on 200 random networks of the BBSSP CIFAR
//! Mobile space.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs `latency-eval` on the simulator into `dir`; returns its report (one per space).
fn eval(file: &str, dir: &Path, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .current_dir(common::root())
        .args(["latency-eval", file, "--backend", "sim"])
        .arg("--db")
        .arg(dir.join("m.db"))
        .arg("--out")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stem = Path::new(file).file_stem().unwrap().to_string_lossy();
    let json = std::fs::read_to_string(dir.join(format!("{stem}.sim.latency.json"))).unwrap();
    serde_json::from_str(&json).unwrap()
}

/// The scored agreement of predictor `name`.
fn scored<'a>(report: &'a Value, name: &str) -> &'a Value {
    &report["predictors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no predictor {name}"))["scored"]
}

#[test]
fn corrected_table_is_annotated_in_the_ir() {
    let dir = tempfile::tempdir().unwrap();
    let file = "tests/in/reduced_layers.space";
    eval(
        file,
        dir.path(),
        &["--samples", "2", "--validate", "1", "--repeat", "0"],
    );
    let ir = std::fs::read_to_string(dir.path().join("reduced_layers.sim.lut.ir")).unwrap();
    assert!(ir.starts_with("; phase annotated"), "{}", &ir[..40]);
    let table = &ir[ir.find("; latency").expect("a latency section")..];
    // Every option of every decision has an entry; SSBN deltas are exact on the simulator.
    assert_eq!(table.matches("corrected=").count(), 2 + 1 + 4);
    snapshot!("latency__reduced_layers@sim", table);
}

#[test]
fn predictors_on_sim_mobile() {
    let dir = tempfile::tempdir().unwrap();
    let reports = eval("examples/bbssp_cifar_mobile.space", dir.path(), &[]);
    let r = &reports[0];
    assert_eq!(r["samples"], 200);
    assert_eq!(r["scored"].as_array().unwrap().len(), 200);
    let mape = |name: &str| scored(r, name)["mape"].as_f64().unwrap();
    let within5 = |name: &str| scored(r, name)["within5"].as_f64().unwrap();
    // The simulator's blocks interact only through on-chip hand-over at their boundaries,
    // which the SSBN deltas carry: the corrected table is (near) exact, the naive one is not.
    assert!(mape("corrected") < 0.1, "{}", mape("corrected"));
    assert!(mape("corrected") < mape("naive") / 3.0);
    assert!(within5("corrected") >= 0.99);
    // The kernel model, calibrated on the SSBNs, predicts within a few percent.
    assert!(within5("kernel+fit") >= 0.9, "{}", within5("kernel+fit"));
    let recommended = r["recommended"].as_str().unwrap();
    assert!(within5(recommended) >= 0.99, "{recommended}");
    // Deterministic backend: a second measurement is the same, and each repeated network
    // carries it (the first 20 scored: the default --repeat).
    assert_eq!(r["repeat_cv"].as_f64().unwrap(), 0.0);
    let rows = r["scored"].as_array().unwrap();
    let again: Vec<bool> = rows.iter().map(|row| !row["again_ms"].is_null()).collect();
    assert_eq!(again.iter().filter(|&&a| a).count(), 20);
    assert!(again[..20].iter().all(|&a| a));
    for row in &rows[..20] {
        assert_eq!(row["again_ms"], row["measured_ms"], "{row}");
    }
}

#[test]
fn asking_for_more_networks_than_the_space_has_is_an_error_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .current_dir(common::root())
        .args([
            "latency-eval",
            "tests/in/reduced_layers.space",
            "--samples",
            "50",
        ])
        .arg("--db")
        .arg(dir.path().join("m.db"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("space `mobile_reduced` has only 3 networks that are not SSBNs"),
        "{stderr}"
    );
}

/// Without validation networks the predictors fitted on calibration networks are not scored
/// under their names (they say why), and the recommendation rests on the scored networks
/// alone, saying on how many.
#[test]
fn without_validation_networks_nothing_is_fitted_and_the_choice_says_on_what() {
    let dir = tempfile::tempdir().unwrap();
    let reports = eval(
        "examples/bbssp_cifar_mobile.space",
        dir.path(),
        &["--samples", "20", "--validate", "0", "--repeat", "0"],
    );
    let r = &reports[0];
    assert_eq!(r["choice"]["networks"], 20, "{}", r["choice"]);
    let chosen = r["recommended"].as_str().unwrap();
    assert!(
        !chosen.ends_with("+fit") || chosen == "naive+fit",
        "{chosen}"
    );
    for name in ["corrected+fit", "kernel+fit"] {
        let p = r["predictors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap();
        assert!(p["scored"].is_null(), "{name} was scored: {}", p["scored"]);
        let why = p["unscored"].as_str().unwrap();
        assert!(why.contains("no calibration networks"), "{name}: {why}");
    }
    assert!(r["fit"].get("corrected+fit").is_none(), "{}", r["fit"]);
    // The others are scored as ever.
    assert!(scored(r, "corrected")["mape"].as_f64().unwrap() < 0.1);
}

/// `--reproduce`: two evaluations, each measuring into a store of its own (the second store
/// holds its own fusion verdicts, not the first's), compared predictor by predictor; the
/// simulator is deterministic, so every difference is zero and the verdicts agree. Run
/// again, a finished evaluation is read back, an unfinished one resumes its store, and one
/// with other options is evaluated again.
#[test]
fn reproduce_runs_two_evaluations_on_stores_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let run = |repeat: &str| {
        Command::new(env!("CARGO_BIN_EXE_spacetune"))
            .current_dir(common::root())
            .args(["latency-eval", "examples/nb201.space", "--backend", "sim"])
            .args(["--samples", "10", "--validate", "4", "--repeat", repeat])
            .arg("--out")
            .arg(dir.path())
            .arg("--reproduce")
            .output()
            .unwrap()
    };
    let out = run("2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folder = dir.path().join("nb201.sim.reproduce");
    let json = std::fs::read_to_string(folder.join("reproduce.json")).unwrap();
    let spaces: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(spaces.len(), 1);
    let r = &spaces[0];
    let lines = r["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 9, "{lines:?}");
    let mut both = 0;
    for line in lines {
        // A predictor two calibration networks cannot fit, and graph+fit (the simulator
        // shows no compiled graph), are unscored in both runs.
        let [a, b] = [&line["runs"][0], &line["runs"][1]];
        assert_eq!(a.is_null(), b.is_null(), "{line}");
        if a.is_null() {
            continue;
        }
        assert_eq!(a["mape"], b["mape"], "{line}");
        assert_eq!(a["n"], 10, "{line}");
        both += 1;
    }
    assert!(both >= 6, "{lines:?}");
    assert_eq!(r["recommended"][0], r["recommended"][1]);
    assert!(r["verdicts_differ"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["fused"][0].as_u64().unwrap() > 0, "{r}");
    assert!(
        stdout.contains("largest MAPE difference: 0.00 points"),
        "{stdout}"
    );
    // Each run probed fusion into its own store.
    for n in [1, 2] {
        let rules = Command::new(env!("CARGO_BIN_EXE_spacetune"))
            .current_dir(common::root())
            .args(["fusion-rules", "--backend", "sim", "--db"])
            .arg(folder.join(format!("run-{n}.db")))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&rules.stdout);
        assert!(text.contains(" pairs fused"), "run {n}: {text}");
        assert!(folder
            .join(format!("run-{n}/nb201.sim.latency.json"))
            .exists());
    }
    // (read back, resumed) of a run again, and its comparison.
    let again = |repeat: &str| {
        let out = run(repeat);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        let json = std::fs::read_to_string(folder.join("reproduce.json")).unwrap();
        let counts = (
            stderr.matches("finished before").count(),
            stderr.matches("(resumed:").count(),
        );
        (counts, json)
    };
    assert_eq!(again("2"), ((2, 0), json.clone()), "both finished");
    std::fs::remove_file(folder.join("run-2/finished.json")).unwrap();
    assert_eq!(again("2"), ((1, 1), json), "the second interrupted");
    assert_eq!(again("3").0, (0, 2), "another option");
}

/// A network whose cells all collapse to the identity joins op pairs no SSBN has (here the
/// reduction block's add straight into the head's batch norm): the evaluation tests those
/// pairs too, so the kernel model fuses them as the backend does.
#[test]
fn pairs_only_random_networks_have_are_tested_and_fused() {
    let dir = tempfile::tempdir().unwrap();
    let report = &eval(
        "tests/spaces/collapsing_cells.space",
        dir.path(),
        &["--samples", "8", "--validate", "2", "--repeat", "0"],
    )[0];
    let pairs = report["fusion_pairs"].as_array().unwrap();
    let verdict = pairs
        .iter()
        .find(|p| p["a"] == "conv+add" && p["b"] == "bn")
        .expect("the reduction block's output into the head's batch norm is tested");
    assert_eq!(verdict["fused"], true);
    let k = report["predictors"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["name"] == "kernel+pairs")
        .unwrap();
    let rows = ["scored", "calibration", "validation"]
        .iter()
        .flat_map(|part| report[*part].as_array().unwrap().iter());
    let identity: Vec<_> = rows
        .filter(|r| r["key"] == "e01=skip e12=skip e02=zero")
        .collect();
    assert_eq!(
        identity.len(),
        1,
        "every network that is not an SSBN is sampled"
    );
    let measured = identity[0]["measured_ms"].as_f64().unwrap();
    let predicted = identity[0]["predicted_ms"][k].as_f64().unwrap();
    assert!(
        (predicted / measured - 1.0).abs() < 0.01,
        "kernel+pairs predicts the collapsed network at {predicted} ms, measured {measured} ms"
    );
}
