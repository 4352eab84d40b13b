//! Build script: bakes libtorch's library directory into the binary's rpath.
//!
//! tch links libtorch dynamically but sets no rpath, so without this `cargo run` and
//! `cargo test` would need LD_LIBRARY_PATH. torch-sys (a direct dependency for exactly this
//! reason) exports the directory it linked against as DEP_TCH_LIBTORCH_LIB.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
