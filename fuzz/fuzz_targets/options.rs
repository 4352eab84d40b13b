//! Fuzz target `options`: see `spacetune::fuzzing::options`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spacetune::fuzzing::options(data);
});
