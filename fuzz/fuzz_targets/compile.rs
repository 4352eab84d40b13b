//! Fuzz target `compile`: see `spacetune::fuzzing::compile`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = spacetune::fuzzing::compile(data);
});
