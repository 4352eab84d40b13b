//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod postgres;
pub mod slurm;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Held while a test times a backend. A binary's tests run on parallel threads, and on a
/// two-core machine two timed probes measure each other: beside a TVM probe, the run-to-run
/// spread of ORT's conv→bn saving grew tenfold, enough to leave the verdict undecided.
pub fn timing() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that failed while timing leaves nothing half-done behind the lock.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Pins ATen's CPU kernels to AVX2 for this test process, before its first tensor. A run
/// that trains in-process and snapshots what it learned otherwise depends on whether the CPU
/// has AVX-512: there, ATen picks other kernels, one of 64 validation images of a profile
/// flips, and the selection, the reduced space and the search that read it change too.
/// Every test of a binary that trains in-process calls this first; the `Once` makes the
/// others wait until the variable is set.
pub fn avx2_kernels() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("ATEN_CPU_CAPABILITY", "avx2"));
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `*.space` files directly in `dir` (relative to the repository root), sorted.
pub fn space_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "space"))
        .collect();
    files.sort();
    files
}

/// Every good input: the examples and tests/in.
pub fn good_inputs() -> Vec<PathBuf> {
    let mut files = space_files("examples");
    files.extend(space_files("tests/in"));
    files
}

/// A stable snapshot name for a file: `examples__fbnet22`.
pub fn stem(path: &Path) -> String {
    let rel = path.strip_prefix(root()).unwrap_or(path);
    rel.with_extension("")
        .display()
        .to_string()
        .replace(['/', '\\'], "__")
}

/// The path as shown in diagnostics, relative to the repository root so snapshots do not
/// depend on where the checkout lives.
pub fn rel(path: &Path) -> PathBuf {
    path.strip_prefix(root()).unwrap_or(path).to_path_buf()
}

/// The module of a compile that must succeed; otherwise panics with the rendered diagnostics.
pub fn expect_ok(compiled: spacetune::Compiled, what: &str) -> spacetune::ir::Module {
    match compiled.result {
        Ok(m) => m,
        Err(d) => panic!("{what} does not compile:\n{}", d.render(&compiled.sources)),
    }
}

pub fn in_root<T>(f: impl FnOnce() -> T) -> T {
    let _ = std::env::set_current_dir(root());
    f()
}

#[macro_export]
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

/// Compiles a file of the repository that must compile.
pub fn module(file: &str) -> spacetune::ir::Module {
    expect_ok(
        spacetune::compile(&root().join(file), Default::default()),
        file,
    )
}

/// Profile flags for a budget small enough for a test (synthetic data, one thread).
pub const TINY_BUDGET: &[&str] = &[
    "--dataset",
    "synthetic",
    "--train-subset",
    "128",
    "--validation",
    "64",
    "--epochs",
    "1",
    "--finetune-subset",
    "64",
    "--batch",
    "32",
    "--threads",
    "1",
];
