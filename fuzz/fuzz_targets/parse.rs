//! Fuzz target `parse`: see `spacetune::fuzzing::parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spacetune::fuzzing::parse(data);
});
