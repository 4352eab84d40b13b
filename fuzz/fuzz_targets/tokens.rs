//! Fuzz target `tokens`: see `spacetune::fuzzing::tokens`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spacetune::fuzzing::tokens(data);
});
