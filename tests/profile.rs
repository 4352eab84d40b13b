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
    spacetune::backends::cache::Cache::open(db)
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
