//! The fuzz targets' bodies: each takes arbitrary bytes and must not panic; a property that
//! does not hold panics saying which. `fuzz/` (cargo-fuzz, nightly) and the replay test of
//! the checked-in crashers (`tests/fuzz_regressions.rs`, stable) call the same functions.

use crate::{compile_str, grammar, Options};
use spacetune_backends as backends;
use spacetune_ir::{dsl, Module};
use spacetune_passes::{ctx::SelectOverrides, select, Ctx};
use std::collections::BTreeMap;

/// A fuzz target: arbitrary bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, as `scripts/fuzz.sh` and the replay test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("parse", parse),
    ("compile", |d| drop(compile(d))),
    ("tokens", tokens),
    ("roundtrip", roundtrip),
    ("onnx", onnx),
    ("options", options),
    ("knobs", knobs),
];

fn front_end(text: &str) -> crate::Compiled {
    let options = Options {
        validate: true,
        ..Options::default()
    };
    compile_str("fuzz.space", text, None, options)
}

/// Parses UTF-8 input; every diagnostic renders.
pub fn parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = grammar::parse_str("fuzz.space", text, None);
    if let Err(d) = &parsed.result {
        let _ = d.render(&parsed.sources);
    }
}

/// Parses, checks and expands (validating the IR after each pass); every diagnostic
/// renders. The module, where it compiled.
pub fn compile(data: &[u8]) -> Option<Module> {
    let text = std::str::from_utf8(data).ok()?;
    compiled(text)
}

fn compiled(text: &str) -> Option<Module> {
    let c = front_end(text);
    match c.result {
        Ok(m) => Some(m),
        Err(d) => {
            let _ = d.render(&c.sources);
            None
        }
    }
}

/// The words the language is made of, for [`tokens`] and the mutation test: keywords,
/// primitives, punctuation, names the examples use, numbers at the edges, and pieces
/// that are wrong in instructive ways (self edges, a lone quote, NUL).
pub const VOCABULARY: &[&str] = &[
    "input",
    "classes",
    "block",
    "cell",
    "space",
    "candidates",
    "default",
    "layer",
    "choice",
    "skeleton",
    "stem",
    "search",
    "stage",
    "cells",
    "fixed",
    "head",
    "let",
    "select",
    "import",
    "for",
    "in",
    "if",
    "else",
    "and",
    "or",
    "not",
    "residual",
    "inputs",
    "output",
    "node",
    "out",
    "stride",
    "k",
    "e",
    "d",
    "x",
    "b",
    "e01",
    "e02",
    "e12",
    "thres",
    "scale",
    "lambda",
    "picks",
    "conv",
    "dwconv",
    "bn",
    "relu",
    "relu6",
    "hswish",
    "sigmoid",
    "add",
    "concat",
    "maxpool",
    "avgpool",
    "gap",
    "linear",
    "shuffle",
    "se",
    "skip",
    "shift",
    "zero",
    "groups",
    "pad",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    "|",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    "->",
    "-",
    "+",
    "*",
    "/",
    "%",
    ":",
    ";",
    "\"lib.space\"",
    "0",
    "1",
    "2",
    "3",
    "7",
    "16",
    "24",
    "0.5",
    "1.5",
    "-1",
    "3x32x32",
    "1x28x28",
    "16x16x16",
    "1048576",
    "1048577",
    "9223372036854775807",
    "\n",
    "\n",
    "\n",
    "add {",
    "concat {",
    "} {",
    "block b() { relu }",
    "conv(",
    "inputs 2",
    "output concat 2, 3",
    "stride=2",
    "repeat=1000",
    "repeat=5000",
    "for i, k in [1, 2]",
    "len(",
    "round(",
    "max(",
    "edge 0 -> 0 = skip",
    "edge 2 -> 1 = skip",
    "import \"x\"",
    "99999999999999999999",
    "4096",
    "1e9",
    "3x0x0",
    "\"",
    "//",
    "/*",
    "é",
    "\u{0}",
];

/// Structure-aware: each input byte picks a word of [`VOCABULARY`], so the fuzzer spends
/// its time past the parser; the words, joined by spaces, are compiled.
pub fn tokens(data: &[u8]) {
    let words: Vec<&str> = data
        .iter()
        .map(|&b| VOCABULARY[b as usize % VOCABULARY.len()])
        .collect();
    let _ = compiled(&words.join(" "));
}

/// Printing a module as DSL, parsing it again and printing it is a fixed point, and the
/// reprinted file expands to the same networks (keys) as the original.
pub fn roundtrip(data: &[u8]) {
    let Some(m) = compile(data) else {
        return;
    };
    let printed = dsl::print_module(&m);
    let again = front_end(&printed);
    let m2 = match again.result {
        Ok(m2) => m2,
        Err(d) => panic!(
            "the printed module does not compile:\n{}\n{printed}",
            d.render(&again.sources)
        ),
    };
    let reprinted = dsl::print_module(&m2);
    assert_eq!(printed, reprinted, "printing is not a fixed point");
    let keys = |m: &Module| -> Vec<String> { m.networks.values().map(|n| n.key.clone()).collect() };
    assert_eq!(
        keys(&m),
        keys(&m2),
        "the reprinted file expands differently"
    );
}

/// Networks larger than this are not exported by [`onnx`]: their weights are the memory
/// of a real network, not a bug the fuzzer should find.
const ONNX_PARAMS: u64 = 2_000_000;

/// Every expanded network (the first 8, of modest size) lowers to ONNX or fails with an
/// error: no panic.
pub fn onnx(data: &[u8]) {
    let Some(m) = compile(data) else {
        return;
    };
    for n in m.networks.values().take(8) {
        if n.cost.params <= ONNX_PARAMS && n.cost.flops <= 50 * ONNX_PARAMS {
            let _ = backends::onnx::lower(n, 0);
        }
    }
}

/// Backend options (`key=value` per line) for every backend that only configures itself
/// (`exec` would run the command).
pub fn options(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pairs: Vec<String> = text.lines().map(String::from).collect();
    if let Ok(o) = backends::Options::parse(&pairs) {
        for b in ["sim", "ort", "tch", "tvm", "nope"] {
            let _ = backends::lookup(b, &o);
        }
    }
}

/// Selection knobs from the first 32 bytes (thres, scale, lambda as f64, N as u64) over a
/// fixed module, with accuracies and latencies from the rest: a selection or an error.
pub fn knobs(data: &[u8]) {
    static MODULE: std::sync::OnceLock<Module> = std::sync::OnceLock::new();
    let m = MODULE.get_or_init(|| {
        compiled(include_str!("../tests/in/width_choice.space")).expect("a good input")
    });
    if data.len() < 32 {
        return;
    }
    let word = |i: usize| u64::from_le_bytes(data[8 * i..8 * i + 8].try_into().unwrap());
    let cx = Ctx {
        select: SelectOverrides {
            thres: Some(f64::from_bits(word(0))),
            scale: Some(f64::from_bits(word(1))),
            lambda: Some(f64::from_bits(word(2))),
            n: Some(word(3) as usize),
        },
        ..Ctx::default()
    };
    let p = select::params(m, &cx);
    let rest = &data[32..];
    let byte = |i: usize| rest.get(i % rest.len().max(1)).copied().unwrap_or(0) as f64;
    let (mut acc, mut lat) = (BTreeMap::new(), BTreeMap::new());
    for (k, (h, _)) in m.networks.iter().enumerate() {
        acc.insert(h, byte(2 * k) / 255.0);
        lat.insert(h, byte(2 * k + 1) / 64.0);
    }
    let spaces: Vec<u32> = (0..m.checked.len() as u32).collect();
    let _ = select::select(m, &spaces, &acc, &lat, &p);
}
