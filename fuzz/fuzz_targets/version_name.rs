//! Any bytes as a version's file name (`versions::parse`), and as a recipe for a version
//! whose name must parse back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| datasafe::fuzzing::version_name(data));
