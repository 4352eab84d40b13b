//! Fuzz target `knobs`: see `spacetune::fuzzing::knobs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spacetune::fuzzing::knobs(data);
});
