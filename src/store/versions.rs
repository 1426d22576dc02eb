//! Old copies of replaced and deleted files, kept in `DST/.datasafe/versions`: how a
//! version is named, what a name says, how to list them, and which ones retention
//! prunes. Pure except [`list_in`], which only reads (through the store).
//!
//! A version keeps the relative folder and the stored name of the file it was, with the
//! local time it was replaced or deleted inserted before the extension:
//! `docs/report.txt` replaced at 15:30:45 on 2026-11-24 becomes
//! `versions/docs/report_20261124_153045.txt`, and a gzipped mirror's
//! `docs/report.txt.gz` becomes `versions/docs/report_20261124_153045.txt.gz`. A second
//! version of the same file within the same second gets `-1`, `-2`… after the seconds.
//! A name whose extension itself ends like a stamp (`notes.bak_20250101_000000`) gets the
//! stamp after the whole name instead, so the version's own stamp is always the last one.
//! The name is the whole record: no index is needed to list, restore or prune versions,
//! so they survive a lost index.
//!
//! A version's name must fit the file system's limit on one name ([`NAME_MAX`], 255
//! bytes), and the stamp adds 16 or more. A name that would pass it is *shortened*: the
//! part before the stamp is cut (at a character boundary) and followed by `~` and 16 hex
//! digits of the SHA-256 of the whole stored name, the extension kept when it is short:
//! `<cut stem>~<key>_<stamp>[-N]<ext>[.gz]`. Such a name still parses (time, sequence);
//! the whole name lives beside it in a *sidecar*, `~<key>.name` in the same folder,
//! holding the stored name's bytes. [`list`] reads the sidecar and reports the version
//! under its whole name, after checking that the sidecar's content hashes to the key
//! (so a name that merely looks shortened is never misread). Without its sidecar a
//! shortened version is still listed, under its cut name. Pruning removes a sidecar
//! with the last version that needs it. Moving a file here is the executor's job
//! (`exec::Executor`), which never copies: replaced files are hard-linked before the new
//! copy is renamed over them, deleted ones are renamed.

use crate::model::Kind;
use crate::store::{Reader, Step};
use chrono::{Duration as Span, NaiveDateTime};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The timestamp format inside a version's name.
const STAMP: &str = "%Y%m%d_%H%M%S";
/// `_YYYYMMDD_HHMMSS`: 16 bytes.
const STAMP_LEN: usize = 16;
/// The longest file name (one component, in bytes) the usual file systems take: ext4,
/// XFS, Btrfs, tmpfs, APFS, NTFS (in UTF-16 units, which UTF-8 never undercounts).
pub const NAME_MAX: usize = 255;
/// Hex digits of the SHA-256 of the whole name that a shortened version name keeps.
const KEY_LEN: usize = 16;
/// A shortened name keeps an extension up to this long; a longer one is cut with the
/// stem.
const MAX_EXT: usize = 32;
/// What a sidecar's name ends with (`~<key>.name`).
const SIDECAR_EXT: &str = ".name";

/// One kept version, as its name describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Where it is, relative to the versions folder.
    pub path: PathBuf,
    /// The name it had in DST (relative, `.gz` included for a gzipped mirror).
    pub stored: PathBuf,
    /// When it was replaced or deleted (local time, to the second).
    pub at: NaiveDateTime,
    /// 0 for the first version in that second, then 1, 2…
    pub seq: u32,
    /// For a *prefix marker*, what it stands for: the content was the first bytes of
    /// the content that followed it. `None` for a version that holds its content.
    pub prefix: Option<Prefix>,
}

/// A version that holds no bytes: a file replaced by content that only extended it (a
/// log appended to) keeps, instead of a copy, a symlink at the version's name whose
/// target says how much of the next content it was, with the SHA-256 of those bytes
/// and the old mode and mtime: `datasafe-prefix:1:<size>:<secs>:<nanos>:<mode>:<sha>`.
/// Versions are otherwise always regular files, so a marker is never mistaken for one;
/// `restore` reads the next content (the next version, or the live file) up to `size`
/// and checks the digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// How many bytes of the next content.
    pub size: u64,
    /// The old content's mtime (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// The old content's permission bits.
    pub mode: u32,
    /// SHA-256 of those bytes.
    pub sha: crate::hash::Digest,
}

/// What a prefix marker's symlink target starts with.
const PREFIX_TAG: &str = "datasafe-prefix:1:";

impl Prefix {
    /// The symlink target that records it.
    pub fn to_target(&self) -> String {
        format!(
            "{PREFIX_TAG}{}:{}:{}:{:o}:{}",
            self.size, self.mtime.0, self.mtime.1, self.mode, self.sha
        )
    }

    /// Reads a symlink target written by [`Prefix::to_target`].
    pub fn from_target(target: &Path) -> Option<Prefix> {
        let text = target.to_str()?.strip_prefix(PREFIX_TAG)?;
        let mut parts = text.split(':');
        let size = parts.next()?.parse().ok()?;
        let secs = parts.next()?.parse().ok()?;
        let nanos = parts.next()?.parse().ok()?;
        let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
        let sha = crate::hash::Digest::from_hex(parts.next()?)?;
        if parts.next().is_some() || nanos >= 1_000_000_000 {
            return None;
        }
        Some(Prefix {
            size,
            mtime: (secs, nanos),
            mode,
            sha,
        })
    }
}

/// The name (relative to the versions folder) of the `seq`th version of the file stored
/// as `stored`, replaced or deleted at `at`; shortened to fit [`NAME_MAX`] if it must be
/// (see the module's notes).
pub fn version_name(stored: &Path, at: NaiveDateTime, seq: u32) -> PathBuf {
    version_and_sidecar(stored, at, seq).0
}

/// As [`version_name`], and for a shortened name the sidecar that must sit beside it
/// (relative to the versions folder), holding the stored file name's bytes.
pub fn version_and_sidecar(
    stored: &Path,
    at: NaiveDateTime,
    seq: u32,
) -> (PathBuf, Option<PathBuf>) {
    let file = stored.file_name().unwrap_or(stored.as_os_str());
    let bytes = file.as_encoded_bytes();
    let (base, gz) = match bytes.strip_suffix(b".gz") {
        Some(base) if !base.is_empty() => (base, &b".gz"[..]),
        _ => (bytes, &b""[..]),
    };
    // The extension starts at the last dot that is not the first byte (`.bashrc` has
    // none), as `Path::extension` has it.
    // An extension that itself ends like a stamp (`notes.bak_20250101_000000`) would be
    // taken for the version's stamp by `parse`, which reads the last one; such a name
    // gets its stamp after the whole name instead, where it is the last.
    let (stem, ext) = match base.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 && !ends_like_a_stamp(&base[dot..]) => base.split_at(dot),
        _ => (base, &b""[..]),
    };
    let mut stamp = at.format(STAMP).to_string();
    if seq > 0 {
        stamp.push_str(&format!("-{seq}"));
    }
    let mut name = Vec::with_capacity(bytes.len() + stamp.len() + 1);
    let mut sidecar = None;
    if stem.len() + 1 + stamp.len() + ext.len() + gz.len() <= NAME_MAX {
        name.extend_from_slice(stem);
    } else {
        // Too long for one name: cut the stem, mark the cut with the whole name's key.
        let (stem, ext_kept) = if ext.len() > MAX_EXT {
            (base, &b""[..])
        } else {
            (stem, ext)
        };
        let key = name_key(bytes);
        let room = NAME_MAX - (2 + KEY_LEN + stamp.len() + ext_kept.len() + gz.len());
        name.extend_from_slice(&stem[..char_boundary(stem, room)]);
        name.push(b'~');
        name.extend_from_slice(key.as_bytes());
        sidecar = Some(sidecar_name(&key));
        name.push(b'_');
        name.extend_from_slice(stamp.as_bytes());
        name.extend_from_slice(ext_kept);
        name.extend_from_slice(gz);
        return finish_name(stored, name, sidecar);
    }
    name.push(b'_');
    name.extend_from_slice(stamp.as_bytes());
    name.extend_from_slice(ext);
    name.extend_from_slice(gz);
    finish_name(stored, name, sidecar)
}

/// `name` (and the sidecar's name) in the folder of `stored`.
fn finish_name(
    stored: &Path,
    name: Vec<u8>,
    sidecar: Option<String>,
) -> (PathBuf, Option<PathBuf>) {
    // SAFETY: the pieces are the encoded bytes of `file` split at ASCII dots or at a
    // character boundary (`char_boundary`), and ASCII text of our own: concatenating
    // them keeps OsStr's encoding valid.
    let name = unsafe { OsString::from_encoded_bytes_unchecked(name) };
    let dir = stored.parent().unwrap_or(Path::new(""));
    (dir.join(name), sidecar.map(|s| dir.join(s)))
}

/// The largest length up to `max` at which `bytes` can be cut without splitting a
/// UTF-8 (or WTF-8) sequence: never before a continuation byte.
fn char_boundary(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    while cut > 0 && cut < bytes.len() && bytes[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    cut
}

/// The key a shortened version name carries: 16 hex digits of the SHA-256 of the whole
/// stored file name.
pub fn name_key(file_name: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(file_name);
    digest
        .iter()
        .take(KEY_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key of a version name that looks shortened (`…~<16 hex>_<stamp>…`), if it does.
/// Only a sidecar whose content hashes to the key makes it one (see [`list`]).
pub fn shortened_key(version: &Path) -> Option<String> {
    let file = version.file_name()?.as_encoded_bytes();
    let (start, _) = find_stamp(file)?;
    let before = &file[..start];
    let tilde = before.len().checked_sub(KEY_LEN + 1)?;
    let key = &before[tilde + 1..];
    (before[tilde] == b'~' && key.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| String::from_utf8_lossy(key).into_owned())
}

/// The key a sidecar's file name (`~<key>.name`) holds, if it is one.
pub fn sidecar_key(file_name: &OsStr) -> Option<String> {
    let text = file_name.to_str()?;
    let key = text.strip_prefix('~')?.strip_suffix(SIDECAR_EXT)?;
    (key.len() == KEY_LEN && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| key.to_string())
}

/// The sidecar's name for a key.
pub fn sidecar_name(key: &str) -> String {
    format!("~{key}{SIDECAR_EXT}")
}

/// The last stamp in `file` (`_YYYYMMDD_HHMMSS[-N]` followed by the end or a dot): where
/// it starts, its time, sequence number and end.
fn find_stamp(file: &[u8]) -> Option<(usize, (NaiveDateTime, u32, usize))> {
    for start in (0..file.len()).rev() {
        if file[start] != b'_' || start == 0 {
            continue;
        }
        if let Some(parsed) = stamp_at(file, start) {
            return Some((start, parsed));
        }
    }
    None
}

/// What a path inside the versions folder says, or `None` if it is not a version's name.
pub fn parse(path: &Path) -> Option<Version> {
    let file = path.file_name()?.as_encoded_bytes();
    // The stamp is the last `_YYYYMMDD_HHMMSS[-N]` followed by the end or a dot.
    let (start, (at, seq, end)) = find_stamp(file)?;
    let mut original = file[..start].to_vec();
    original.extend_from_slice(&file[end..]);
    // SAFETY: the bytes around the stamp are split at ASCII characters ('_' and the end
    // of the stamp's digits), so the rejoined bytes keep OsStr's encoding valid.
    let original = unsafe { OsString::from_encoded_bytes_unchecked(original) };
    let stored = match path.parent() {
        Some(dir) => dir.join(&original),
        None => PathBuf::from(&original),
    };
    Some(Version {
        path: path.to_path_buf(),
        stored,
        at,
        seq,
        prefix: None,
    })
}

/// True if `ext` (an extension, from its dot to the end of the name) holds a stamp
/// `parse` would find: one followed by the end of `ext`, or by the `.gz` after it.
fn ends_like_a_stamp(ext: &[u8]) -> bool {
    (1..ext.len()).any(|start| ext[start] == b'_' && stamp_at(ext, start).is_some())
}

/// The time, sequence number and end offset of a stamp starting at `file[start]` (the
/// underscore), if there is one there.
fn stamp_at(file: &[u8], start: usize) -> Option<(NaiveDateTime, u32, usize)> {
    let stamp = file.get(start..start + STAMP_LEN)?;
    let text = std::str::from_utf8(&stamp[1..]).ok()?;
    if !text.bytes().enumerate().all(|(i, b)| match i {
        8 => b == b'_',
        _ => b.is_ascii_digit(),
    }) {
        return None;
    }
    let at = NaiveDateTime::parse_from_str(text, STAMP).ok()?;
    let mut end = start + STAMP_LEN;
    let mut seq = 0;
    if file.get(end) == Some(&b'-') {
        let digits = file[end + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        seq = std::str::from_utf8(&file[end + 1..end + 1 + digits])
            .ok()?
            .parse()
            .ok()?;
        end += 1 + digits;
    }
    match file.get(end) {
        None | Some(b'.') => Some((at, seq, end)),
        _ => None,
    }
}

/// Every version under the mirror's versions folder, read through its store, oldest
/// first (by time, then sequence, then name). Symlinks that are not prefix markers,
/// folders on the way that are symlinks, and anything not named like a version are
/// skipped. A shortened version's `stored` is the whole name from its sidecar (see the
/// module's notes).
pub fn list_in(store: &dyn Reader) -> Vec<Version> {
    let root = crate::store::layout::versions();
    let mut found = Vec::new();
    let _ = store.walk(&root, false, &mut |w| {
        let Some(mut v) = w.name.strip_prefix(&root).ok().and_then(parse) else {
            return Step::Go;
        };
        match w.kind {
            Kind::Symlink => {
                let prefix = store
                    .read_link(&w.name)
                    .ok()
                    .and_then(|t| Prefix::from_target(&t));
                let Some(prefix) = prefix else {
                    return Step::Go;
                };
                v.prefix = Some(prefix);
            }
            Kind::File => {}
            _ => return Step::Go,
        }
        found.push(v);
        Step::Go
    });
    let mut names: std::collections::HashMap<PathBuf, Option<OsString>> = Default::default();
    for v in &mut found {
        if let Some(key) = shortened_key(&v.path) {
            let dir = v.path.parent().unwrap_or(Path::new("")).to_path_buf();
            let sidecar = dir.join(sidecar_name(&key));
            let whole = names
                .entry(sidecar.clone())
                .or_insert_with(|| read_sidecar(store, &root.join(&sidecar), &key));
            if let Some(whole) = whole {
                v.stored = dir.join(whole);
            }
        }
    }
    found.sort_by(|a, b| (a.at, a.seq, &a.path).cmp(&(b.at, b.seq, &b.path)));
    found
}

/// Every name below the folder `root` in `store` (relative to `root`) with its kind,
/// folders before what they hold; a folder that cannot be listed is left out.
pub fn walk(store: &dyn Reader, root: &Path) -> Vec<(PathBuf, Kind)> {
    let mut found = Vec::new();
    let _ = store.walk(root, false, &mut |w| {
        if let Ok(rel) = w.name.strip_prefix(root) {
            found.push((rel.to_path_buf(), w.kind));
        }
        Step::Go
    });
    found
}

/// The whole stored name a sidecar holds, if it is a regular file (never followed if a
/// symlink) whose bytes hash to `key` and make one name.
fn read_sidecar(store: &dyn Reader, name: &Path, key: &str) -> Option<OsString> {
    use std::io::Read;
    let file = store.open(name).ok()?;
    let mut bytes = Vec::new();
    file.take(NAME_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.is_empty()
        || bytes.len() > NAME_MAX
        || bytes.contains(&b'/')
        || name_key(&bytes) != key
    {
        return None;
    }
    crate::platform::path_from_bytes(bytes).map(PathBuf::into_os_string)
}

/// Of the regular files `files` under the versions folder (relative to it), the
/// sidecars no version needs any more.
pub fn orphan_sidecars(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut needed = std::collections::HashSet::new();
    let mut sidecars = Vec::new();
    for rel in files {
        let dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let Some(file) = rel.file_name() else {
            continue;
        };
        if let Some(key) = sidecar_key(file) {
            sidecars.push((dir, key, rel.clone()));
        } else if parse(rel).is_some()
            && let Some(key) = shortened_key(rel)
        {
            needed.insert((dir, key));
        }
    }
    sidecars
        .into_iter()
        .filter(|(dir, key, _)| !needed.contains(&(dir.clone(), key.clone())))
        .map(|(_, _, rel)| rel)
        .collect()
}

/// How long versions are kept: a value the user writes (`--keep-versions`,
/// `keep_versions`), so `config` owns it; re-exported here beside [`to_prune`], which
/// applies it.
pub use crate::config::Retention;

/// Of `versions`, the ones retention `keep` drops at local time `now` (paths relative
/// to the versions folder). Each file's versions are thinned on their own.
pub fn to_prune(versions: &[Version], now: NaiveDateTime, keep: Retention) -> Vec<PathBuf> {
    let mut by_file: std::collections::HashMap<&OsStr, Vec<&Version>> = Default::default();
    for v in versions {
        by_file.entry(v.stored.as_os_str()).or_default().push(v);
    }
    let mut prune = Vec::new();
    for mut group in by_file.into_values() {
        // Newest first: the newest version in each hour or day bucket is the one kept.
        group.sort_by_key(|v| std::cmp::Reverse((v.at, v.seq)));
        let mut kept_buckets = std::collections::HashSet::new();
        for v in group {
            let age = now.signed_duration_since(v.at);
            let keep_it = match keep {
                Retention::Off => false,
                Retention::Younger(limit) => Span::from_std(limit).is_ok_and(|limit| age < limit),
                Retention::Staggered => match staggered_bucket(age) {
                    None => false,
                    Some(Bucket::Recent) => true,
                    Some(bucket) => kept_buckets.insert(bucket),
                },
            };
            if !keep_it {
                prune.push(v.path.clone());
            }
        }
    }
    prune.sort();
    prune
}

/// Where a version of this age falls under [`Retention::Staggered`]; one version is
/// kept per hour or day bucket, all recent ones, none past 30 days.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Bucket {
    Recent,
    Hour(i64),
    Day(i64),
}

fn staggered_bucket(age: Span) -> Option<Bucket> {
    if age < Span::hours(1) {
        Some(Bucket::Recent)
    } else if age < Span::days(1) {
        Some(Bucket::Hour(age.num_hours()))
    } else if age < Span::days(30) {
        Some(Bucket::Day(age.num_days()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use std::time::Duration;

    fn t(d: u32, h: u32, m: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, d)
            .and_then(|d| d.and_hms_opt(h, m, s))
            .unwrap()
    }

    #[test]
    fn names_put_the_stamp_before_the_extension() {
        let at = t(24, 15, 30, 45);
        let table = [
            ("docs/report.txt", 0, "docs/report_20261124_153045.txt"),
            (
                "docs/report.txt.gz",
                0,
                "docs/report_20261124_153045.txt.gz",
            ),
            ("a.tar.gz", 0, "a_20261124_153045.tar.gz"),
            ("Makefile", 0, "Makefile_20261124_153045"),
            (".bashrc", 0, ".bashrc_20261124_153045"),
            (".bashrc.gz", 0, ".bashrc_20261124_153045.gz"),
            ("x.gz", 0, "x_20261124_153045.gz"),
            ("report.txt", 2, "report_20261124_153045-2.txt"),
            ("dir.d/noext", 0, "dir.d/noext_20261124_153045"),
        ];
        for (stored, seq, want) in table {
            let name = version_name(Path::new(stored), at, seq);
            assert_eq!(name, Path::new(want), "{stored}");
            let back = parse(&name).unwrap_or_else(|| panic!("{want} does not parse"));
            assert_eq!(back.stored, Path::new(stored), "{want}");
            assert_eq!((back.at, back.seq), (at, seq), "{want}");
        }
    }

    #[test]
    fn names_that_are_not_versions_do_not_parse() {
        for name in [
            "report.txt",
            "report_2026112_153045.txt",
            "report_20261124-153045.txt",
            "report_20261399_153045.txt",
            "report_20261124_153045x.txt",
            "report_20261124_153045-.txt",
            "_20261124_153045",
        ] {
            assert_eq!(parse(Path::new(name)), None, "{name}");
        }
    }

    #[test]
    fn a_name_with_a_stamp_of_its_own_keeps_it() {
        let name = version_name(Path::new("log_20250101_000000.txt"), t(24, 1, 2, 3), 0);
        assert_eq!(name, Path::new("log_20250101_000000_20261124_010203.txt"));
        assert_eq!(
            parse(&name).map(|v| v.stored),
            Some(PathBuf::from("log_20250101_000000.txt"))
        );
    }

    /// Found by the `version_name` fuzz target: the stamp went before an extension that
    /// ended like a stamp itself, and `parse` read that one (another name, another time).
    #[test]
    fn an_extension_that_ends_like_a_stamp_keeps_it() {
        for (stored, seq, want) in [
            (
                "notes.bak_20250101_000000",
                0,
                "notes.bak_20250101_000000_20261124_010203",
            ),
            (
                "d/notes.bak_20250101_000000-7.gz",
                2,
                "d/notes.bak_20250101_000000-7_20261124_010203-2.gz",
            ),
            ("notes.bak_2025", 0, "notes_20261124_010203.bak_2025"),
        ] {
            let at = t(24, 1, 2, 3);
            let name = version_name(Path::new(stored), at, seq);
            assert_eq!(name, Path::new(want), "{stored}");
            let v = parse(&name).unwrap();
            assert_eq!((v.stored, v.at, v.seq), (PathBuf::from(stored), at, seq));
        }
    }

    #[test]
    fn a_name_too_long_for_a_version_is_shortened_with_a_key_and_a_sidecar() {
        let at = t(24, 1, 2, 3);
        // 80 CJK characters (240 bytes) and an extension: 244 bytes, fine as a file,
        // 260 as a version.
        let long = format!("d/{}.txt", "漢".repeat(80));
        for (stored, seq) in [
            (long.clone(), 0),
            (format!("{long}.gz"), 12),
            (format!("d/{}", "x".repeat(255)), 0),
            (format!("d/a.{}", "y".repeat(250)), 3),
            (format!("d/{}.tar.gz", "é".repeat(120)), 0),
        ] {
            let (name, sidecar) = version_and_sidecar(Path::new(&stored), at, seq);
            let file = name.file_name().unwrap().as_encoded_bytes();
            assert!(file.len() <= NAME_MAX, "{stored}: {} bytes", file.len());
            assert!(
                std::str::from_utf8(file).is_ok(),
                "{stored}: cut mid-character"
            );
            let whole = Path::new(&stored).file_name().unwrap().as_encoded_bytes();
            let key = name_key(whole);
            assert_eq!(
                shortened_key(&name),
                Some(key.clone()),
                "{}",
                name.display()
            );
            assert_eq!(
                sidecar,
                Some(Path::new("d").join(format!("~{key}.name"))),
                "{stored}"
            );
            assert_eq!(
                sidecar_key(sidecar.as_ref().unwrap().file_name().unwrap()),
                Some(key)
            );
            let v = parse(&name).unwrap_or_else(|| panic!("{} does not parse", name.display()));
            assert_eq!((v.at, v.seq), (at, seq), "{}", name.display());
            assert_eq!(v.stored.parent(), Some(Path::new("d")));
        }
        // The extension and the .gz survive the cut.
        let (name, _) = version_and_sidecar(Path::new(&format!("{long}.gz")), at, 0);
        assert!(name.to_str().unwrap().ends_with("_20261124_010203.txt.gz"));
        // Names that fit are not touched.
        let (name, sidecar) = version_and_sidecar(Path::new("d/short.txt"), at, 0);
        assert_eq!(
            (name, sidecar),
            (PathBuf::from("d/short_20261124_010203.txt"), None)
        );
    }

    #[test]
    fn a_shortened_version_lists_under_its_whole_name_through_its_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir
            .path()
            .join(".datasafe")
            .join(crate::store::layout::VERSIONS_DIR);
        let stored = format!("d/{}.txt", "漢".repeat(80));
        let at = t(24, 1, 2, 3);
        let (name, sidecar) = version_and_sidecar(Path::new(&stored), at, 0);
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join(&name), "old").unwrap();
        // A name that only looks shortened, with no sidecar: listed as it is.
        let lookalike = format!("d/x~{}_20261124_010203.txt", "0".repeat(16));
        std::fs::write(root.join(&lookalike), "x").unwrap();
        let listed = list_in(&crate::store::local::Local::open(dir.path()).unwrap());
        let stored_of = |p: &Path| listed.iter().find(|v| v.path == p).unwrap().stored.clone();
        // Without the sidecar: the cut name.
        assert_ne!(stored_of(&name), Path::new(&stored));
        std::fs::write(
            root.join(sidecar.as_ref().unwrap()),
            stored.strip_prefix("d/").unwrap(),
        )
        .unwrap();
        let listed = list_in(&crate::store::local::Local::open(dir.path()).unwrap());
        let stored_of = |p: &Path| listed.iter().find(|v| v.path == p).unwrap().stored.clone();
        assert_eq!(stored_of(&name), Path::new(&stored));
        assert_eq!(
            stored_of(Path::new(&lookalike)),
            Path::new("d/x~0000000000000000.txt")
        );
        // The sidecar goes with its last version, not before.
        let sidecar = sidecar.unwrap();
        let files = |with_version: bool| {
            let mut files = vec![sidecar.clone(), PathBuf::from(&lookalike)];
            if with_version {
                files.push(name.clone());
            }
            files
        };
        assert!(orphan_sidecars(&files(true)).is_empty());
        assert_eq!(orphan_sidecars(&files(false)), vec![sidecar.clone()]);
    }

    #[test]
    fn prefix_markers_read_back() {
        let p = Prefix {
            size: 1234,
            mtime: (1_700_000_000, 5),
            mode: 0o640,
            sha: crate::hash::Digest([7; 32]),
        };
        let target = p.to_target();
        assert_eq!(Prefix::from_target(Path::new(&target)), Some(p));
        assert_eq!(Prefix::from_target(Path::new("../elsewhere")), None);
        assert_eq!(Prefix::from_target(Path::new(&format!("{target}:x"))), None);
    }

    fn versions_at(stored: &str, times: &[NaiveDateTime]) -> Vec<Version> {
        times
            .iter()
            .map(|&at| {
                let path = version_name(Path::new(stored), at, 0);
                Version {
                    path,
                    stored: stored.into(),
                    at,
                    seq: 0,
                    prefix: None,
                }
            })
            .collect()
    }

    #[test]
    fn staggered_keeps_an_hour_then_hourly_daily_and_nothing_past_30_days() {
        let now = t(24, 12, 0, 0);
        let times = [
            t(24, 11, 59, 0),                 // 1 min: kept
            t(24, 11, 30, 0),                 // 30 min: kept
            t(24, 11, 10, 0),                 // 50 min: kept
            t(24, 10, 50, 0),                 // 70 min: the newest in hour 1: kept
            t(24, 10, 20, 0),                 // 100 min: also hour 1: pruned
            t(24, 9, 45, 0),                  // 135 min: hour 2: kept
            t(23, 13, 0, 0),                  // 23 h: hour 23: kept
            t(23, 11, 0, 0),                  // 25 h: day 1: kept
            t(22, 12, 0, 0),                  // 48 h: day 2: kept
            t(22, 8, 0, 0),                   // 52 h: also day 2: pruned
            t(1, 12, 0, 0),                   // 23 days: kept
            t(24, 12, 0, 0) - Span::days(31), // 31 days: pruned
        ];
        let versions = versions_at("r.txt", &times);
        let pruned = to_prune(&versions, now, Retention::Staggered);
        let want: Vec<PathBuf> = [4, 9, 11]
            .iter()
            .map(|&i| versions[i].path.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(pruned, want);
    }

    #[test]
    fn each_file_is_thinned_on_its_own() {
        let now = t(24, 12, 0, 0);
        let mut versions = versions_at("a.txt", &[t(24, 9, 0, 0), t(24, 8, 50, 0)]);
        versions.extend(versions_at("b.txt", &[t(24, 8, 55, 0)]));
        let pruned = to_prune(&versions, now, Retention::Staggered);
        assert_eq!(pruned, [versions[1].path.clone()]);
    }

    #[test]
    fn a_duration_keeps_everything_younger_and_off_keeps_nothing() {
        let now = t(24, 12, 0, 0);
        let versions = versions_at("r.txt", &[t(24, 11, 0, 0), t(20, 12, 0, 0), t(10, 0, 0, 0)]);
        let week: Retention = "7d".parse().unwrap();
        assert_eq!(week, Retention::Younger(Duration::from_secs(7 * 86400)));
        assert_eq!(to_prune(&versions, now, week), [versions[2].path.clone()]);
        assert_eq!("0".parse::<Retention>().unwrap(), Retention::Off);
        let mut all: Vec<PathBuf> = versions.iter().map(|v| v.path.clone()).collect();
        all.sort();
        assert_eq!(to_prune(&versions, now, Retention::Off), all);
        assert!("soon".parse::<Retention>().is_err());
    }
}
