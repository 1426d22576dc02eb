//! Any bytes as `DST/.datasafe/index.db`, opened and loaded by the writer and untouched:
//! `Ok` or an `IndexError`, never a panic or a hang.
#![no_main]

use std::sync::OnceLock;

/// One scratch mirror for the whole run; each input replaces the previous one's files.
static SCRATCH: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("datasafe-fuzz-index")
            .tempdir()
            .expect("a temp dir for the scratch mirror")
    });
    datasafe::fuzzing::index(data, scratch.path());
});
