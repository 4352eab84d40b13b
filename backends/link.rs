//! Link settings shared by the build scripts of `spacetune-backends`, `spacetune-passes` and
//! `spacetune` (link arguments apply only to the package whose build script emits them, so
//! each emits them). A module of each build script (`#[path]`).
//!
//! - libtorch: tch links it dynamically but sets no rpath; torch-sys (a direct dependency
//!   for exactly this reason) exports the directory it linked against as
//!   DEP_TCH_LIBTORCH_LIB.
//! - ONNX Runtime is loaded at run time (`load-dynamic`) from the project's venv; its path
//!   becomes SPACETUNE_ORT_DYLIB (ORT_DYLIB_PATH still wins at run time).
//! - TVM: `libtvm_runtime.so` registers the Relax VM loaders when it is loaded, and nothing
//!   references a symbol of it, so it is linked `--no-as-needed` with an rpath — and so is
//!   libtvm_ffi, which libtvm_runtime needs: a binary's run path does not serve its
//!   libraries' own dependencies, so the binary must load it itself.
use std::path::{Path, PathBuf};

fn site_packages(root: &Path) -> Option<PathBuf> {
    let lib = root.join(".deps/venv/lib");
    let py = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))?;
    Some(py.path().join("site-packages"))
}

/// Emits the link arguments and paths; `root` is the repository root.
pub fn emit_links(root: &Path) {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    let Some(site) = site_packages(root) else {
        println!("cargo:warning=no .deps/venv: run scripts/setup.sh for the ort and tvm backends");
        return;
    };
    let capi = site.join("onnxruntime/capi");
    if let Some(lib) = std::fs::read_dir(&capi).ok().and_then(|d| {
        d.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so."))
        })
    }) {
        println!("cargo:rustc-env=SPACETUNE_ORT_DYLIB={}", lib.display());
    }
    if std::env::var("CARGO_FEATURE_TVM").is_ok() {
        let tvm_lib = site.join("tvm/lib");
        let ffi_lib = site.join("tvm_ffi/lib");
        println!("cargo:rustc-link-search=native={}", tvm_lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-search=native={}", ffi_lib.display());
        println!("cargo:rustc-link-arg=-ltvm_ffi");
        println!("cargo:rustc-link-arg=-ltvm_runtime");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", tvm_lib.display());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", ffi_lib.display());
        println!(
            "cargo:rustc-env=SPACETUNE_TVM_PYTHON={}",
            site.join("../../../bin/python").display()
        );
    }
}
