//! Build script: bakes the run-time library locations into the binary, so `cargo run` and
//! `cargo test` need no environment (see link.rs).
#[path = "link.rs"]
mod link;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link.rs");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    link::emit_links(root.parent().expect("backends/ has a parent"));
}
