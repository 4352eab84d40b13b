//! Build script: the same run-time library paths as the backends crate (libtorch, ONNX
//! Runtime, TVM), for this package's binary, tests and benches.
#[path = "backends/link.rs"]
mod link;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=backends/link.rs");
    link::emit_links(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
}
