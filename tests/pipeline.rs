//! The pipeline as one ordered pass list: every pass after the front end runs in order on
//! the sim backend and the synthetic data set, leaves its side table in the module (golden
//! diffs of each pass), can be dumped by name, and gives what the separate commands give;
//! a pass added in a test gets validation, dumps and snapshots with nothing else changed.

mod common;

use common::*;
use spacetune::backends::search::SearchConfig;
use spacetune::backends::{sim::Sim, store::Sqlite, Options as BackendOptions};
use spacetune::ir::{Diagnostics, Module, Phase};
use spacetune::pass::ctx::{AccuracyFrom, Budget, Ctx, SearchSpec, SelectOverrides, TrainSpec};
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
fn run_all(file: &str, cx: Ctx<'_>, list: &[Box<dyn Pass>], until: Phase) -> Vec<(String, String)> {
    let parsed = spacetune::grammar::parse_file(&root().join(file));
    let mut m = parsed.result.unwrap();
    let mut after = Vec::new();
    let mut manager = PassManager {
        validate: true,
        on_pass: Some(Box::new(|pass: &str, m: &Module| {
            after.push((pass.to_string(), m.to_string()))
        })),
        until: Some(until.name())
            .filter(|_| until == Phase::Reduced)
            .map(|_| "reduce"),
    };
    manager
        .run_with(list, &mut m, &cx)
        .unwrap_or_else(|d| panic!("{}", d.render(&parsed.sources)));
    drop(manager);
    assert_eq!(m.phase, until);
    after
}

#[test]
fn every_pass_in_order_on_sim_and_synthetic_data() {
    avx2_kernels();
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::from_options(&BackendOptions::default()).unwrap();
    let store = Sqlite::open(&dir.path().join("m.db")).unwrap();
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
        search: Some(SearchSpec {
            dataset: "synthetic".into(),
            budget: Budget::named("tiny").unwrap(),
            config: SearchConfig {
                threads: 1,
                ..SearchConfig::default()
            },
            predictor: "corrected".into(),
            full: false,
            baselines: true,
            random_k: Some(2),
            checkpoints: dir.path().to_path_buf(),
            out: dir.path().join("out"),
        }),
        ..Ctx::default()
    };
    let after = run_all(FILE, cx, &passes(), Phase::Compared);
    let names: Vec<&str> = after.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "check", "expand", "measure", "correct", "profile", "select", "reduce", "search",
            "emit", "compare"
        ]
    );
    let mut figures = Vec::new();
    for w in after.windows(2).skip(1) {
        let (before, (pass, text)) = (&w[0].1, &w[1]);
        let (diff, found) = cpu_dependent(&spacetune::pass::diff(before, text));
        figures.extend(found);
        snapshot!(format!("pipeline__width_choice@{pass}.diff"), diff);
    }
    // θ after three epochs and a retrained network's accuracy move a little from one CPU
    // to another (libtorch's kernels differ), so the snapshots hold θ's signs and which
    // networks were retrained, and this holds the figures, within what a CPU moves them.
    let expected = [
        ("theta d0", vec![0.0755, -0.0755]),
        ("theta d1", vec![0.0667, -0.0667]),
        ("theta d2", vec![0.0607, -0.0607]),
        ("theta d3", vec![-0.0790, 0.0790]),
        ("theta d4", vec![0.0]),
        ("chosen", vec![0.322]),
        ("ssbn0", vec![0.472]),
        ("random-reduced", vec![0.501]),
        ("random-full", vec![0.358]),
        ("dnas-full", vec![0.302]),
    ];
    let names = |f: &[(String, Vec<f64>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let expected: Vec<(String, Vec<f64>)> = expected
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    assert_eq!(names(&figures), names(&expected));
    for ((name, got), (_, want)) in figures.iter().zip(&expected) {
        // θ to 2e-3; an accuracy to 10 of the 500 test images.
        let tolerance = if name.starts_with("theta") {
            2e-3
        } else {
            0.02
        };
        let close =
            got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < tolerance);
        assert!(close, "{name}: {got:?}, expected about {want:?}");
    }
}

/// The diff with the figures that depend on the CPU's arithmetic masked (θ as its signs, a
/// retrained network's accuracy as `~`), and the figures of its added lines by name.
fn cpu_dependent(text: &str) -> (String, Vec<(String, Vec<f64>)>) {
    let mut found = Vec::new();
    let mut out = String::new();
    let number = |v: &str| -> f64 { v.parse().unwrap_or_else(|_| panic!("{v:?} in {text}")) };
    for line in text.lines() {
        let added = line.starts_with('+');
        let body = &line[1.min(line.len())..];
        let masked = if let (Some(0), Some(open), Some(close)) =
            (body.find("theta d"), body.find('['), body.find(']'))
        {
            let values: Vec<f64> = body[open + 1..close].split(", ").map(number).collect();
            let signs: Vec<&str> = values
                .iter()
                .map(|&v| match v {
                    v if v > 0.0 => "+",
                    v if v < 0.0 => "-",
                    _ => "0",
                })
                .collect();
            if added {
                found.push((body[..open].trim().to_string(), values));
            }
            format!(
                "{}[{}]{}",
                &line[..open + 1],
                signs.join(", "),
                &line[close + 2..]
            )
        } else if let Some(at) = body
            .find(" accuracy ")
            .filter(|_| body.contains(" measured "))
        {
            let rest = &body[at + " accuracy ".len()..];
            let (value, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if added {
                let name = body.split(' ').next().unwrap_or_default().to_string();
                found.push((name, vec![number(value)]));
            }
            format!("{} accuracy ~ {tail}", &line[..at + 1])
        } else {
            line.to_string()
        };
        out.push_str(&masked);
        out.push('\n');
    }
    (out, found)
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
    let store = Sqlite::open(&dir.path().join("m.db")).unwrap();
    let cx = Ctx {
        backend: Some(&sim),
        store: Some(&store),
        accuracy: Some(AccuracyFrom::Table(table)),
        ..Ctx::default()
    };
    let mut list = passes();
    list.insert(3, Box::new(Noop));
    let after = run_all(FILE, cx, &list, Phase::Reduced);
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
            "--until",
            "reduce",
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

/// `run FILE --until PASS` against the separate commands on the same store: the profile
/// pass's trainings are stored, so the commands' profile serves the run's accuracies and
/// both selections see the same inputs.
fn run_and_commands(file: &str, until: &str, knobs: &[&str]) -> (tempfile::TempDir, [String; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db").display().to_string();
    let [one, two] = ["run", "commands"].map(|d| dir.path().join(d).display().to_string());
    let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
    let csv = format!("{two}/{stem}.accuracy.csv");
    let with = |first: &[&str], out: &str, rest: &[&str]| {
        let mut v: Vec<&str> = first.to_vec();
        v.extend(["--db", db.as_str(), "--out", out]);
        v.extend(rest);
        spacetune(&v);
    };
    let mut run = common::TINY_BUDGET.to_vec();
    run.extend(knobs);
    with(&["run", file, "--until", until], &one, &run);
    with(&["measure", file], &two, &[]);
    with(&["profile", file], &two, common::TINY_BUDGET);
    with(&["select", file, "--accuracy", &csv], &two, knobs);
    (dir, [one, two])
}

fn read(dir: &str, name: &str) -> String {
    std::fs::read_to_string(Path::new(dir).join(name))
        .unwrap_or_else(|e| panic!("{dir}/{name}: {e}"))
}

/// The selection's choices, which must agree exactly: the accuracy table the commands
/// pass on holds every accuracy in full, so the ranking, ties and all, is the same.
fn same_selection(one: &str, two: &str, stem: &str) -> usize {
    let json = |dir: &str| -> serde_json::Value {
        serde_json::from_str(&read(dir, &format!("{stem}.select.json"))).unwrap()
    };
    let (a, b) = (json(one), json(two));
    for field in ["winner", "keep", "reached", "params"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let order = |v: &serde_json::Value| -> Vec<(String, bool)> {
        v["ranked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let id = r["id"].as_str().unwrap().to_string();
                (id, r["picked"].as_bool().unwrap())
            })
            .collect()
    };
    assert_eq!(order(&a), order(&b));
    let picked = order(&a).iter().filter(|(_, p)| *p).count();
    assert!(picked > 0, "nothing picked");
    order(&a).len()
}

#[test]
fn run_until_select_on_bbssp_cifar_selects_what_measure_profile_and_select_select() {
    let file = "examples/bbssp_cifar.space";
    let (_dir, [one, two]) = run_and_commands(file, "select", &["--lambda", "0.05", "-n", "4"]);
    // Every SSBN of the three spaces ranked: 81 + 81 + 121 (tests/counts.rs).
    assert_eq!(same_selection(&one, &two, "bbssp_cifar"), 283);
    assert_eq!(
        read(&one, "bbssp_cifar.sim.csv"),
        read(&two, "bbssp_cifar.sim.csv")
    );
    assert!(
        !Path::new(&one).join("bbssp_cifar.reduced.space").exists(),
        "--until select stops before reduce"
    );
}

#[test]
fn run_until_reduce_writes_the_reduced_space_the_commands_write() {
    let (_dir, [one, two]) = run_and_commands(FILE, "reduce", &["--lambda", "0.05", "-n", "4"]);
    assert_eq!(same_selection(&one, &two, "width_choice"), 15);
    assert_eq!(
        read(&one, "width_choice.reduced.space"),
        read(&two, "width_choice.reduced.space")
    );
    assert_eq!(
        read(&one, "width_choice.sim.csv"),
        read(&two, "width_choice.sim.csv")
    );
}
