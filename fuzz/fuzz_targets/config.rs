//! Any bytes, as lossy UTF-8, through the config file parser: `Ok` or a `ConfigError`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| datasafe::fuzzing::config(data));
