//! Every ONNX file spacetune writes is one ONNX's own checker accepts (`onnx.checker`, full
//! check with shape inference, from the project's venv): SSBN_0 and the last network of
//! every good input; and, where `SPACETUNE_ONNX_SAMPLE` names a directory of fuzz inputs
//! (scripts/fuzz.sh points it at the `onnx` target's corpus), up to 64 of those that compile.

mod common;

use common::*;
use spacetune::backends::onnx;
use spacetune::ir::Module;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes the ONNX files of `m`'s first and last networks into `dir`.
fn export(m: &Module, name: &str, dir: &Path, out: &mut Vec<PathBuf>) {
    let nets: Vec<_> = m.networks.values().collect();
    let ends = [nets.first(), nets.last()];
    for (k, n) in ends.into_iter().flatten().enumerate() {
        if k == 1 && nets.len() == 1 {
            break;
        }
        let lowered = onnx::lower(n, 0).unwrap_or_else(|e| panic!("{name} {}: {e}", n.id));
        let path = dir.join(format!("{name}-{k}.onnx"));
        std::fs::write(&path, &lowered.bytes).unwrap();
        out.push(path);
    }
}

#[test]
fn every_export_passes_the_onnx_checker() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for input in good_inputs() {
        let name = stem(&input);
        export(
            &module(rel(&input).to_str().unwrap()),
            &name,
            dir.path(),
            &mut files,
        );
    }
    if let Some(sample) = std::env::var_os("SPACETUNE_ONNX_SAMPLE") {
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&sample)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        inputs.sort();
        let mut taken = 0;
        for (i, input) in inputs.iter().enumerate() {
            let Some(m) = spacetune::fuzzing::compile(&std::fs::read(input).unwrap()) else {
                continue;
            };
            let small = m.networks.values().all(|n| n.cost.params <= 2_000_000);
            if small {
                export(&m, &format!("fuzz{i}"), dir.path(), &mut files);
                taken += 1;
            }
            if taken == 64 {
                break;
            }
        }
        println!("{taken} fuzz inputs of {} sampled", inputs.len());
    }
    let script = "import sys, onnx\n\
        bad = []\n\
        for p in sys.argv[1:]:\n\
        \x20   try:\n\
        \x20       onnx.checker.check_model(p, full_check=True)\n\
        \x20   except Exception as e:\n\
        \x20       bad.append(f'{p}: {e}')\n\
        print('\\n'.join(bad))\n\
        sys.exit(1 if bad else 0)\n";
    let out = Command::new(root().join(".deps/venv/bin/python"))
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} of {} files rejected:\n{}{}",
        String::from_utf8_lossy(&out.stdout).lines().count(),
        files.len(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(files.len() >= 20, "{} files", files.len());
}
