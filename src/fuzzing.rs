//! The bodies of the fuzz targets, shared by the libFuzzer targets in `fuzz/` (run by
//! `scripts/fuzz.sh` on nightly) and by the stable smoke test `tests/fuzz_smoke.rs` (run
//! in CI), so both exercise exactly the same code. Each function takes arbitrary bytes
//! and panics only if the code under test broke its contract: the config parser and the
//! index loader must turn any input into `Ok` or their own error type, and a version's
//! name must parse back into what it was made from.
//!
//! Not part of the public interface (hidden from the docs); nothing in the product calls
//! it.

use crate::config::{Overrides, file};
use crate::index::{self, Index};
use crate::platform;
use crate::store::layout::INDEX_FILE;
use crate::store::layout::STATE_DIR;
use crate::store::versions;
use chrono::NaiveDate;
use std::path::{Path, PathBuf};

/// Config text (lossy UTF-8) through the TOML parser and every check after it, as if
/// read from `/nonexistent/datasafe-fuzz/config.toml` with no flags given. Paths in the
/// text are only resolved and looked at, never created.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Either outcome is fine; a panic is the failure.
    let _ = file::parse(
        &text,
        Path::new("/nonexistent/datasafe-fuzz/config.toml"),
        &Overrides::default(),
    );
}

/// `data` as the index of a mirror at `scratch` (`scratch/.datasafe/index.db`, replacing
/// whatever an earlier call left), read the three ways the product reads an index: untouched
/// (`immutable`, as `verify` does with no writer about), by the writer (`Index::open`, which
/// also upgrades and writes the file), and untouched beside that writer (through its
/// `-wal`). Every step must end in `Ok` or an `IndexError`.
pub fn index(data: &[u8], scratch: &Path) {
    let state = scratch.join(STATE_DIR);
    // Leftovers of the previous input (the writer's journals) would change the meaning
    // of this one; a failure to clean up is the harness's problem, not the product's.
    let _ = std::fs::remove_dir_all(&state);
    if let Err(e) =
        std::fs::create_dir_all(&state).and_then(|()| std::fs::write(state.join(INDEX_FILE), data))
    {
        panic!("fuzz harness: cannot write {}: {e}", state.display());
    }

    if let Ok(Some(index)) = Index::open_untouched(&state) {
        let _ = index.load();
        let _ = index.get(Path::new("a"));
        let _ = index.mirror_fact("compress");
    }
    if let Ok((writer, _existed)) = Index::open(&state) {
        let _ = writer.load();
        let _ = writer.load_under(Path::new("a"));
        let _ = writer.mirror_fact("compress");
        // A reader beside a live writer goes through the writer's -wal and -shm.
        let _ = index::load_untouched(&state);
        drop(writer);
    }
    let _ = index::load_untouched(&state);
}

/// `data` as a file name in the versions folder through `versions::parse` (anything may
/// come back, nothing may panic); then the bytes as a recipe for a version (a time, a
/// sequence number and a stored name) whose name must parse back to that same version.
pub fn version_name(data: &[u8]) {
    if let Some(path) = platform::path_from_bytes(data.to_vec()) {
        let _ = versions::parse(&path);
    }

    // The first 8 bytes choose the time and the sequence number, the rest is the stored
    // name. Times are those the local clock can give: years 1970 to 9999, whole seconds.
    let Some((head, name)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Some(stored) = platform::path_from_bytes(name.to_vec()) else {
        return;
    };
    // Names with no last component (`..`, `/`, empty) are not names of stored files.
    if stored.file_name().is_none() || name.contains(&0) {
        return;
    }
    let year = 1970 + i32::from(u16::from_le_bytes([head[0], head[1]]) % 8030);
    let Some(at) = NaiveDate::from_ymd_opt(year, u32::from(head[2] % 12) + 1, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new(u64::from(head[3] % 31))))
        .and_then(|d| {
            d.and_hms_opt(
                u32::from(head[4] % 24),
                u32::from(head[5] % 60),
                u32::from(head[6] % 60),
            )
        })
    else {
        return;
    };
    let seq = match head[7] {
        0..=127 => 0,
        n => u32::from(n) * 37,
    };
    let (made, sidecar) = versions::version_and_sidecar(&stored, at, seq);
    let made_len = made.file_name().map_or(0, |n| n.as_encoded_bytes().len());
    assert!(
        made_len <= versions::NAME_MAX,
        "version name {made:?} of {stored:?} is {made_len} bytes long"
    );
    let Some(parsed) = versions::parse(&made) else {
        panic!("version name {made:?} of {stored:?} at {at} #{seq} does not parse as a version");
    };
    assert_eq!(
        (parsed.at, parsed.seq),
        (at, seq),
        "version name {made:?} parses back as another time"
    );
    // A shortened name stands for its whole name through its key (and the sidecar that
    // holds the whole name); any other parses back to the name itself.
    let whole = stored.file_name().map(|n| n.as_encoded_bytes().to_vec());
    match sidecar {
        Some(_) => assert_eq!(
            versions::shortened_key(&made),
            whole.as_deref().map(versions::name_key),
            "shortened name {made:?} does not carry the key of {stored:?}"
        ),
        None => assert_eq!(
            parsed.stored,
            PathBuf::from(&stored),
            "version name {made:?} parses back as something else"
        ),
    }
}
