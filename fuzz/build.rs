//! Build script: the fuzz binaries link libtorch through spacetune, so they need the same
//! run-time library paths as every other binary of the project (see backends/link.rs).
#[path = "../backends/link.rs"]
mod link;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../backends/link.rs");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    link::emit_links(root.parent().expect("fuzz/ has a parent"));
}
