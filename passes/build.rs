//! Build script: the profile pass links libtorch through tch, so this package's own test
//! binaries need the same run-time library paths as the backends crate (see link.rs).
#[path = "../backends/link.rs"]
mod link;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../backends/link.rs");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    link::emit_links(root.parent().expect("passes/ has a parent"));
}
