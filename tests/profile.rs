//! `spacetune profile`: accuracies land in the database as they are made, so a killed run
//! continues where it stopped; the CSV has every SSBN.

mod common;

use common::root;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILE: &str = "tests/in/width_choice.space"; // 15 SSBNs, 3×32×32 input

fn args(dir: &std::path::Path) -> Vec<String> {
    ["profile", FILE]
        .iter()
        .chain(common::TINY_BUDGET)
        .map(|s| s.to_string())
        .chain([
            "--db".into(),
            dir.join("m.db").display().to_string(),
            "--out".into(),
            dir.join("out").display().to_string(),
        ])
        .collect()
}

/// Accuracy rows in the database (0 while it does not exist yet).
fn rows(db: &std::path::Path) -> usize {
    if !db.exists() {
        return 0;
    }
    use spacetune::backends::store::{Sqlite, Store};
    Sqlite::open(db)
        .and_then(|c| c.accuracy_count())
        .unwrap_or(0)
}

#[test]
fn a_killed_profile_run_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(args(dir.path()))
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while rows(&db) < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the run never got going"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stored = rows(&db);
    assert!(
        (4..15).contains(&stored),
        "{stored} accuracies survived the kill"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(args(dir.path()))
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "15 networks: {} profiled now, {stored} from the database",
            15 - stored
        )),
        "{stdout}"
    );
    assert!(stdout.contains("fitted to the 3x32x32 input"), "{stdout}");
    let csv = std::fs::read_to_string(dir.path().join("out/width_choice.accuracy.csv")).unwrap();
    assert_eq!(csv.lines().count(), 16);
    // An accuracy is the share of the 64 validation images (TINY_BUDGET) classified
    // right: a whole number of 64ths (the CSV holds them in full), and
    // not the same for every network.
    let accs: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|line| line.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    for a in &accs {
        let right = a * 64.0;
        assert!(
            (right - right.round()).abs() < 1e-9 && (0.0..=64.0).contains(&right),
            "{a}"
        );
    }
    assert!(
        accs.iter().any(|a| *a != accs[0]),
        "every accuracy is {}",
        accs[0]
    );
}

/// `spacetune <command> FILE <extra> --db .. --out ..` in a fresh directory.
fn spacetune_in(dir: &std::path::Path, command: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args([command, FILE])
        .args(extra)
        .args(["--db", &dir.join("m.db").display().to_string()])
        .args(["--out", &dir.join("out").display().to_string()])
        .current_dir(root())
        .output()
        .unwrap()
}

/// Files under `dir` whose name starts with `prefix` (checkpoints, CSVs).
fn made(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(prefix) {
                found.push(name.clone());
            }
            if e.path().is_dir() {
                todo.push(e.path());
            }
        }
    }
    found
}

#[test]
fn bad_training_input_is_refused_before_anything_is_trained_or_stored() {
    let cifar_empty = tempfile::tempdir().unwrap();
    let cifar_cut = tempfile::tempdir().unwrap();
    // One record short of a batch file: 9,999 × 3,073 bytes.
    std::fs::write(
        cifar_cut.path().join("data_batch_1.bin"),
        vec![0u8; 9_999 * 3_073],
    )
    .unwrap();
    let empty = format!("cifar10:{}", cifar_empty.path().display());
    let cut = format!("cifar10:{}", cifar_cut.path().display());
    let tiny = [
        "--dataset",
        "synthetic",
        "--budget",
        "tiny",
        "--threads",
        "1",
    ];
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "profile",
            vec!["--validation", "0"],
            "--validation 0: every SSBN would score 0",
        ),
        ("run", vec!["--validation", "0"], "--validation 0"),
        (
            "profile",
            vec!["--train-subset", "4000"],
            "has 4000 training images; --train-subset 4000 + --validation 200 needs 4200",
        ),
        (
            "profile",
            vec!["--finetune-subset", "600"],
            "--finetune-subset 600 is larger than --train-subset 512",
        ),
        (
            "profile",
            vec!["--dataset", &empty],
            "no data_batch_1.bin in the directory",
        ),
        (
            "profile",
            vec!["--dataset", &cut],
            "30726927 bytes (9999.0 records): a CIFAR-10 batch file holds 10000 records",
        ),
        (
            "profile",
            vec!["--proxy", "gradsign"],
            "unknown proxy `gradsign`",
        ),
        ("profile", vec!["--sample", "0"], "--sample 0"),
    ];
    for (command, extra, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        // Later flags win in clap only for repeated options it allows; give each case's
        // own values after the tiny budget's.
        let mut args: Vec<&str> = tiny.to_vec();
        if let Some(i) = args.iter().position(|a| *a == "--dataset") {
            if extra.contains(&"--dataset") {
                args.drain(i..i + 2);
            }
        }
        args.extend(&extra);
        let out = spacetune_in(dir.path(), command, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command} {extra:?} succeeded");
        assert!(stderr.contains(want), "{command} {extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            rows(&dir.path().join("m.db")),
            0,
            "{command} {extra:?} stored accuracies"
        );
        assert!(
            made(dir.path(), "checkpoints-").is_empty()
                && made(dir.path(), "width_choice.").is_empty(),
            "{command} {extra:?} left {:?}",
            made(dir.path(), "")
        );
    }
}

#[test]
fn a_proxy_profile_ranks_every_ssbn_in_seconds_and_select_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = [
        "--dataset",
        "synthetic",
        "--budget",
        "tiny",
        "--threads",
        "1",
    ];
    for proxy in ["synflow", "naswot"] {
        let mut args = tiny.to_vec();
        args.extend(["--proxy", proxy]);
        let out = spacetune_in(dir.path(), "profile", &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let csv = std::fs::read_to_string(dir.path().join(format!("out/width_choice.{proxy}.csv")))
            .unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("space,id,key,accuracy,score"));
        let mut rows: Vec<(f64, f64)> = lines
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[3].parse().unwrap(), f[4].parse().unwrap())
            })
            .collect();
        assert_eq!(rows.len(), 15);
        // The accuracy column is the score's percentile rank: 0 to 1, in the score's order.
        rows.sort_by(|a, b| a.1.total_cmp(&b.1));
        assert_eq!(rows[0].0, 0.0, "{proxy}: {rows:?}");
        assert_eq!(rows[14].0, 1.0, "{proxy}: {rows:?}");
        assert!(
            rows.windows(2).all(|w| w[0].0 <= w[1].0),
            "{proxy}: {rows:?}"
        );
        assert!(rows.iter().all(|r| r.1.is_finite()), "{proxy}: {rows:?}");
        // Width 0.5 to 1.0 changes every layer: SynFlow (a sum over parameters) must
        // tell them apart.
        if proxy == "synflow" {
            assert!(rows[14].1 > rows[0].1 + 1.0, "{rows:?}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(["select", FILE, "--accuracy-source", "synflow"])
        .args(["--db", &dir.path().join("m.db").display().to_string()])
        .args(["--out", &dir.path().join("out").display().to_string()])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ranking = std::fs::read_to_string(dir.path().join("out/width_choice.select.csv")).unwrap();
    assert_eq!(ranking.lines().count(), 16, "{ranking}");
    let out = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(["select", FILE, "--accuracy-source", "scratch"])
        .args(["--out", &dir.path().join("out").display().to_string()])
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("width_choice.scratch.csv does not exist"),
        "{stderr}"
    );
}

#[test]
fn ssbn0s_profiled_accuracy_is_what_its_saved_checkpoint_scores() {
    use spacetune::backends::{network_hash, torch::TchNet, train, weights::Weights};
    use spacetune::ir::Origin;
    let dir = tempfile::tempdir().unwrap();
    let out = spacetune_in(
        dir.path(),
        "profile",
        &[
            "--dataset",
            "synthetic",
            "--budget",
            "tiny",
            "--threads",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(dir.path().join("out/width_choice.accuracy.csv")).unwrap();
    let m = common::module(FILE);
    let (_, base) = m
        .networks
        .iter()
        .find(|(_, n)| n.origin == Origin::Base)
        .unwrap();
    let profiled: f64 = csv
        .lines()
        .find(|l| l.split(',').nth(1) == Some(base.id.as_str()))
        .and_then(|l| l.rsplit(',').next()?.parse().ok())
        .unwrap();
    // The checkpoint, read back from disk into a fresh network (not the profile's own
    // in-memory one), scored on the validation images rebuilt from the tiny budget.
    let graph = base.graph.pruned();
    let ckpt: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoints-"))
        .map(|e| {
            e.path()
                .join(format!("{}.safetensors", network_hash(&graph, 1)))
        })
        .collect();
    assert_eq!(ckpt.len(), 1, "{ckpt:?}");
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = TchNet::new(&vs.root(), &graph, &Weights::random(&graph, 99)).unwrap();
    let untrained = train::accuracy(&net, &validation(&graph), 256).unwrap();
    train::load(&mut vs, &ckpt[0]).unwrap();
    let loaded = train::accuracy(&net, &validation(&graph), 256).unwrap();
    assert_eq!(loaded, profiled, "checkpoint {loaded}, profile {profiled}");
    assert_ne!(untrained, loaded, "the checkpoint changed nothing");
}

/// The tiny budget's validation images, fitted to `graph`'s input.
fn validation(graph: &spacetune::ir::Graph) -> spacetune::backends::data::Dataset {
    let spec = spacetune::pass::ctx::TrainSpec {
        dataset: "synthetic".into(),
        train_subset: 512,
        validation: 200,
        finetune_subset: 128,
        ..Default::default()
    };
    let (_, val) = spacetune::pass::profile::preflight(&spec).unwrap();
    val.adapt(graph.shapes[0]).unwrap().0
}

/// `profile-eval`: every source ranked against the from-scratch truth (and the truth at the
/// next seed against itself) on a stratified sample; a second run trains nothing.
#[test]
fn profile_eval_ranks_every_source_on_its_sample_and_serves_a_rerun_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<&str> = common::TINY_BUDGET.to_vec();
    args.extend(["--sample", "8", "--truth-repeat"]);
    let run = || {
        let out = spacetune_in(dir.path(), "profile-eval", &args);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let json =
            std::fs::read_to_string(dir.path().join("out/width_choice.fidelity.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&json).unwrap()
    };
    let first = run();
    let table = first["rows"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = table
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap(),
                r["against"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("finetune", "scratch, 2-seed mean"),
            ("finetune − decision mean", "scratch, 2-seed mean"),
            ("finetune, seed 1", "finetune"),
            ("synflow", "scratch, 2-seed mean"),
            ("synflow", "finetune"),
            ("naswot", "scratch, 2-seed mean"),
            ("naswot", "finetune"),
            ("scratch, seed 1", "scratch"),
        ]
    );
    // The truth's noise, split from the networks' differences on the same 9.
    let noise = &first["truth_noise"][0];
    assert_eq!(noise["space"], "widths", "{noise}");
    assert_eq!(noise["networks"], 9, "{noise}");
    let share = |k: &str| noise[k].as_f64().unwrap();
    assert!(share("seed_noise") > 0.0, "{noise}");
    assert!(
        (0.0..=1.0).contains(&share("reliability"))
            && share("reliability") <= share("reliability_mean"),
        "{noise}"
    );
    let f = |i: usize, k: &str| table[i]["fidelity"][k].as_f64().unwrap();
    for (i, r) in table.iter().enumerate() {
        // The sample and SSBN_0.
        assert_eq!(r["fidelity"]["networks"], 9, "{r}");
        assert!(
            -1.0 <= f(i, "tau_low")
                && f(i, "tau_low") <= f(i, "tau")
                && f(i, "tau") <= f(i, "tau_high")
                && f(i, "tau_high") <= 1.0,
            "{r}"
        );
    }
    // Less its decision's mean, an SSBN keeps its rank within the decision.
    assert!(table[0]["fidelity"]["within_decisions"].as_u64().unwrap() > 0);
    assert_eq!(f(0, "within_tau"), f(1, "within_tau"));
    let trained = rows(&dir.path().join("m.db"));
    assert_eq!(run(), first, "a rerun reads the same accuracies");
    assert_eq!(
        rows(&dir.path().join("m.db")),
        trained,
        "and trains nothing"
    );
}

/// `--recompute-bn-stats` is its own profile: not served the figures fine-tuned without
/// it, SSBN_0 (not fine-tuned) scored the same, the fine-tuned SSBNs not all the same; and
/// served from the store when asked again.
#[test]
fn recomputed_batch_norm_statistics_are_a_profile_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = spacetune_in(
            dir.path(),
            "profile",
            &[common::TINY_BUDGET, extra].concat(),
        );
        // The settings line goes to stderr, the counts to stdout.
        let stdout = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{stdout}");
        let csv =
            std::fs::read_to_string(dir.path().join("out/width_choice.accuracy.csv")).unwrap();
        let accs: Vec<(String, f64)> = csv
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[1].to_string(), f[f.len() - 1].parse().unwrap())
            })
            .collect();
        (stdout, accs)
    };
    let checkpoints = || {
        let found = made(dir.path(), "checkpoints-");
        assert_eq!(found.len(), 1, "{found:?}");
        let ckpt = dir.path().join(&found[0]);
        let files: Vec<_> = std::fs::read_dir(&ckpt).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].metadata().unwrap().modified().unwrap()
    };
    let (_, moving) = run(&[]);
    let trained = checkpoints();
    let (stdout, recomputed) = run(&["--recompute-bn-stats"]);
    // SSBN_0's training has nothing of the fine-tuning in it: it is not trained again.
    assert_eq!(checkpoints(), trained, "SSBN_0 was trained again");
    assert!(
        stdout.contains("15 networks: 15 profiled now, 0 from the database"),
        "{stdout}"
    );
    assert!(
        stdout.contains("batch-norm statistics recomputed"),
        "{stdout}"
    );
    let base = |a: &[(String, f64)]| {
        a.iter()
            .find(|(id, _)| id.matches('-').count() == 1)
            .unwrap()
            .1
    };
    assert_eq!(base(&moving), base(&recomputed), "SSBN_0 is not fine-tuned");
    let differ = moving
        .iter()
        .zip(&recomputed)
        .filter(|(a, b)| a.1 != b.1)
        .count();
    assert!(differ > 0, "{moving:?} {recomputed:?}");
    let (stdout, again) = run(&["--recompute-bn-stats"]);
    assert!(
        stdout.contains("15 networks: 0 profiled now, 15 from the database"),
        "{stdout}"
    );
    assert_eq!(again, recomputed);
}
