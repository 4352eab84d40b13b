//! Fuzz target `roundtrip`: see `spacetune::fuzzing::roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spacetune::fuzzing::roundtrip(data);
});
