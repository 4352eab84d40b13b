//! The command line: exit codes, JSON output, help.

mod common;
use common::*;
use std::process::Command;

fn spacetune(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs")
}

#[test]
fn expand_json_lists_97_networks_for_imagenet_mobile() {
    let out = spacetune(&[
        "expand",
        "examples/bbssp_imagenet_mobile.space",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nets = v["networks"].as_array().unwrap();
    assert_eq!(nets.len(), 97);
    for n in nets {
        for field in ["id", "key", "flops", "params"] {
            assert!(!n[field].is_null(), "{field} missing in {n}");
        }
    }
    let vgg = spacetune(&[
        "expand",
        "examples/bbssp_imagenet_vgg.space",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&vgg.stdout).unwrap();
    assert_eq!(v["networks"].as_array().unwrap().len(), 145);
}

#[test]
fn errors_exit_nonzero_with_a_located_message() {
    let out = spacetune(&["check", "tests/fail/skip_changes_shape.space"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tests/fail/skip_changes_shape.space:13:9"),
        "{err}"
    );
    let missing = spacetune(&["check", "no/such/file.space"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

/// Diagnostics written to a pipe or a file carry no ANSI escapes, even with a colour
/// terminal named in TERM (and NO_COLOR unset).
#[test]
fn diagnostics_are_plain_when_stderr_is_not_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(["check", "tests/fail/skip_changes_shape.space"])
        .current_dir(root())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skip_changes_shape.space:13:9"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes in {err:?}");
}

/// A UTF-8 byte-order mark before the first declaration is not part of the source, and
/// columns on line 1 count from after it.
#[test]
fn a_byte_order_mark_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("tests/in/width_choice.space")).unwrap();
    let good = dir.path().join("bom.space");
    std::fs::write(&good, format!("\u{feff}{text}")).unwrap();
    let out = spacetune(&["check", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.space");
    std::fs::write(&bad, "\u{feff}inptu 3x32x32\n").unwrap();
    let out = spacetune(&["check", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.space:1:1"), "{err}");
    assert!(err.contains("found `inptu`"), "{err}");
}

#[test]
fn print_dsl_is_a_fixed_point_and_dump_after_works() {
    let out = spacetune(&["print", "examples/nb201.space", "--emit", "dsl"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("choice e01, e02, e12, e03, e13, e23 {"));
    let dump = spacetune(&["--dump-after", "check", "check", "examples/nb201.space"]);
    assert!(String::from_utf8_lossy(&dump.stderr).contains("; phase checked"));
    let bad = spacetune(&["--dump-after", "nope", "check", "examples/nb201.space"]);
    assert!(!bad.status.success());
    let one = spacetune(&[
        "print",
        "examples/nb201.space",
        "--emit",
        "ir",
        "--network",
        "nb201-0-0",
    ]);
    // nb201-0-0 keeps every default but e01, which is `zero`: one zero node in each of
    // the 15 cells (the key in the header line says `zero` too, and must not suffice).
    let text = String::from_utf8_lossy(&one.stdout);
    let cells = text
        .lines()
        .filter(|l| l.trim_start().starts_with("; cell"))
        .count();
    let zeros = text.lines().filter(|l| l.contains(" = zero(")).count();
    assert_eq!((cells, zeros), (15, 15), "{text}");
}
