//! The fuzz targets on stable, without libFuzzer: every minimised crasher checked in under
//! `fuzz/regressions/<target>/` (each was a panic once, and is fixed), and every seed input
//! (examples, tests/in, tests/fail), through every target. A panic fails the test.

mod common;

use common::*;
use spacetune::fuzzing::TARGETS;
use std::path::PathBuf;

fn files(dir: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    v.sort();
    v
}

#[test]
fn every_checked_in_crasher_runs_clean() {
    let known: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
    for dir in files("fuzz/regressions") {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let target = TARGETS
            .iter()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("fuzz/regressions/{name}: no such target ({known:?})"));
        for input in files(&format!("fuzz/regressions/{name}")) {
            println!("{name} {}", input.display());
            (target.1)(&std::fs::read(&input).unwrap());
        }
    }
}

#[test]
fn every_seed_runs_clean_through_every_target() {
    let mut seeds = good_inputs();
    seeds.extend(space_files("tests/fail"));
    assert!(seeds.len() > 40, "{} seeds", seeds.len());
    for seed in &seeds {
        let data = std::fs::read(seed).unwrap();
        for (name, target) in TARGETS {
            // The ONNX target exports networks: the large example spaces are slow there.
            if *name == "onnx" && data.len() > 4000 {
                continue;
            }
            target(&data);
        }
    }
}
