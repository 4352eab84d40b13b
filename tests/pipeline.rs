//! The pipeline as one ordered pass list: every pass after the front end runs in order on
//! the sim backend and the synthetic data set, leaves its side table in the module (golden
//! diffs of each pass), can be dumped by name, and gives what the separate commands give;
//! a pass added in a test gets validation, dumps and snapshots with nothing else changed.

mod common;

use common::*;
use spacetune::backends::{cache::Cache, sim::Sim, Options as BackendOptions};
use spacetune::ir::{Diagnostics, Module, Phase};
use spacetune::pass::ctx::{AccuracyFrom, Ctx, SelectOverrides, TrainSpec};
use spacetune::pass::{passes, Pass, PassManager};
use std::path::Path;
use std::process::Command;

const FILE: &str = "tests/in/width_choice.space"; // 15 SSBNs

/// A profile budget small enough for a test.
fn tiny(dir: &Path) -> TrainSpec {
    TrainSpec {
        dataset: "synthetic".into(),
        train_subset: 128,
        validation: 64,
        epochs: 1,
        finetune_subset: 64,
        batch: 32,
        threads: 1,
        checkpoints: dir.to_path_buf(),
        ..TrainSpec::default()
    }
}

/// The text of the module after every pass, in order.
fn run_all(file: &str, cx: Ctx<'_>, list: &[Box<dyn Pass>]) -> Vec<(String, String)> {
    let parsed = spacetune::grammar::parse_file(&root().join(file));
    let mut m = parsed.result.unwrap();
    let mut after = Vec::new();
    let mut manager = PassManager {
        validate: true,
        on_pass: Some(Box::new(|pass: &str, m: &Module| {
            after.push((pass.to_string(), m.to_string()))
        })),
        ..PassManager::default()
    };
    manager
        .run_with(list, &mut m, &cx)
        .unwrap_or_else(|d| panic!("{}", d.render(&parsed.sources)));
    drop(manager);
    assert_eq!(m.phase, Phase::Reduced);
    after
}

#[test]
fn every_pass_in_order_on_sim_and_synthetic_data() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::from_options(&BackendOptions::default()).unwrap();
    let store = Cache::open(&dir.path().join("m.db")).unwrap();
    let cx = Ctx {
        backend: Some(&sim),
        store: Some(&store),
        accuracy: Some(AccuracyFrom::Train(tiny(dir.path()))),
        // Few picks, so `reduce` has something to cut.
        select: SelectOverrides {
            n: Some(4),
            lambda: Some(0.05),
            ..SelectOverrides::default()
        },
        ..Ctx::default()
    };
    let after = run_all(FILE, cx, &passes());
    let names: Vec<&str> = after.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        ["check", "expand", "measure", "correct", "profile", "select", "reduce"]
    );
    for w in after.windows(2).skip(1) {
        let (before, (pass, text)) = (&w[0].1, &w[1]);
        snapshot!(
            format!("pipeline__width_choice@{pass}.diff"),
            spacetune::pass::diff(before, text)
        );
    }
}

/// Does nothing; only here to be registered.
struct Noop;

impl Pass for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn run(&self, _: &mut Module, _: &Ctx<'_>) -> Result<(), Diagnostics> {
        Ok(())
    }
}

#[test]
fn a_pass_added_in_a_test_is_validated_dumped_and_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("acc.csv");
    write_accuracies(&module(FILE), &table);
    let sim = Sim::from_options(&BackendOptions::default()).unwrap();
    let store = Cache::open(&dir.path().join("m.db")).unwrap();
    let cx = Ctx {
        backend: Some(&sim),
        store: Some(&store),
        accuracy: Some(AccuracyFrom::Table(table)),
        ..Ctx::default()
    };
    let mut list = passes();
    list.insert(3, Box::new(Noop));
    let after = run_all(FILE, cx, &list);
    assert_eq!(after[3].0, "noop");
    assert_eq!(after[2].1, after[3].1, "a no-op changed the module");
    snapshot!("pipeline__noop@noop", after[3].1.as_str());
}

/// A smooth accuracy per SSBN (bigger networks more accurate), as a tabular benchmark.
fn write_accuracies(m: &Module, path: &Path) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["space", "key", "accuracy"]).unwrap();
    let max = m.networks.values().map(|n| n.cost.flops).max().unwrap() as f64;
    for n in m.networks.values() {
        let acc = 0.5 + 0.4 * (n.cost.flops as f64 / max).sqrt();
        let space = &m.checked[n.space as usize].name;
        w.write_record([space.as_str(), &n.key, &format!("{acc:.6}")])
            .unwrap();
    }
    w.flush().unwrap();
}

fn spacetune(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "spacetune {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn dump_after_works_for_every_pass_and_prints_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("acc.csv");
    write_accuracies(&module(FILE), &table);
    let db = dir.path().join("m.db");
    let out = dir.path().join("out");
    let shows = [
        ("check", "; space widths"),
        ("expand", "; networks (15)"),
        ("measure", "; latencies on sim spacetune-sim"),
        ("correct", "; latency widths on sim spacetune-sim"),
        ("profile", "; accuracies from table"),
        ("select", "; selection thres="),
        ("reduce", "; reduced ("),
    ];
    for (pass, header) in shows {
        let o = spacetune(&[
            "--dump-after",
            pass,
            "run",
            FILE,
            "--accuracy",
            table.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        let dump = stderr
            .split(&format!("; ---- IR after `{pass}` ----"))
            .nth(1)
            .unwrap_or_else(|| panic!("no dump after {pass}:\n{stderr}"));
        assert!(dump.contains(header), "{pass}: no `{header}` in\n{dump}");
    }
}

#[test]
fn run_until_reduce_selects_what_measure_profile_and_select_select() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let (db, one, two) = (
        db.to_str().unwrap(),
        dir.path().join("run"),
        dir.path().join("commands"),
    );
    let knobs = ["--lambda", "0.05", "-n", "4"];
    let with = |first: &[&str], out: &Path, rest: &[&str]| {
        let mut v: Vec<String> = first.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--db".into(),
            db.into(),
            "--out".into(),
            out.display().to_string(),
        ]);
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let run = with(
        &["run", FILE, "--until", "reduce"],
        &one,
        common::TINY_BUDGET,
    );
    let mut run = run.iter().map(String::as_str).collect::<Vec<_>>();
    run.extend(knobs);
    spacetune(&run);
    let measure = with(&["measure", FILE], &two, &[]);
    spacetune(&measure.iter().map(String::as_str).collect::<Vec<_>>());
    let profile = with(&["profile", FILE], &two, common::TINY_BUDGET);
    spacetune(&profile.iter().map(String::as_str).collect::<Vec<_>>());
    let csv = two.join("width_choice.accuracy.csv");
    let select = with(
        &["select", FILE, "--accuracy", csv.to_str().unwrap()],
        &two,
        &knobs,
    );
    spacetune(&select.iter().map(String::as_str).collect::<Vec<_>>());

    let read = |dir: &Path, name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let json = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&read(dir, "width_choice.select.json")).unwrap()
    };
    let (a, b) = (json(&one), json(&two));
    // The table rounds accuracies to 4 decimals; everything chosen must agree exactly.
    for field in ["winner", "keep", "reached", "params"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let order = |v: &serde_json::Value| -> Vec<(String, bool)> {
        v["ranked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["picked"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(order(&a), order(&b));
    assert_eq!(order(&a).len(), 15);
    assert_eq!(
        read(&one, "width_choice.reduced.space"),
        read(&two, "width_choice.reduced.space")
    );
    assert_eq!(
        read(&one, "width_choice.sim.csv"),
        read(&two, "width_choice.sim.csv")
    );
}
