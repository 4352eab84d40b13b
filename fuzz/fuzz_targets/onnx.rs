//! Fuzz target `onnx`: see `spacetune::fuzzing::onnx`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spacetune::fuzzing::onnx(data);
});
