//! How a name's kind, mode and mtime ride on an object: user metadata
//! (`x-amz-meta-mtime`, `-mode`, `-kind`, and `-uid`/`-gid` for an owner, as rclone's
//! metadata names them), so a bucket can be restored without the index and other tools
//! read the times too. `mtime` is seconds since the epoch with up
//! to nine decimals, as rclone writes it (`1700000000.123456789`); `mode` is octal
//! permission bits; `kind` is `symlink` for a symlink (its target is the object's
//! body). A folder is a marker object, its key ending in `/`. A file's extended
//! attributes and ACLs (`--xattrs`, `--acls`) ride as `xattrs`: the base64 of the
//! index's own blob ([`Xattrs::encode`]), when it fits in S3's 2 KB of metadata.

use crate::model::{Kept, Kind, Owner, Xattrs};
use crate::store::Stat;
use filetime::FileTime;
use std::collections::HashMap;

/// The metadata key of the mtime.
pub const MTIME: &str = "mtime";
/// The metadata key of the permission bits.
pub const MODE: &str = "mode";
/// The metadata key of the kind (absent: a file, or a folder for a marker).
pub const KIND: &str = "kind";
/// The kind of a symlink.
pub const SYMLINK: &str = "symlink";
/// The metadata key of the owner's user id.
pub const UID: &str = "uid";
/// The metadata key of the owner's group id.
pub const GID: &str = "gid";

/// The metadata key of a file's extended attributes.
pub const XATTRS: &str = "xattrs";
/// The longest `xattrs` value sent: S3 allows 2 KB of user metadata in all (keys and
/// values), and the other keys take under a hundred bytes.
pub const XATTRS_MAX: usize = 1900;

/// The `xattrs` value of `xattrs`: `Ok(None)` for none (the key is left out), `Err`
/// (with the encoded length) when it is too long for object metadata.
pub fn encode_xattrs(xattrs: &Xattrs) -> Result<Option<String>, usize> {
    if xattrs.0.is_empty() {
        return Ok(None);
    }
    let value = aws_smithy_types::base64::encode(xattrs.encode());
    match value.len() {
        n if n > XATTRS_MAX => Err(n),
        _ => Ok(Some(value)),
    }
}

/// The attributes `kept` keeps among those the metadata carries (none without the key;
/// a value it did not write counts as none).
pub fn xattrs_of(meta: &HashMap<String, String>, kept: &Kept) -> Xattrs {
    let all = meta
        .get(XATTRS)
        .and_then(|v| aws_smithy_types::base64::decode(v).ok())
        .and_then(|blob| Xattrs::decode(&blob))
        .unwrap_or_default();
    Xattrs(all.0.into_iter().filter(|(n, _)| kept.keeps(n)).collect())
}

/// Puts `mode` and `mtime` into an object's metadata, keeping the rest (owner,
/// attributes, what another tool wrote).
pub fn set_mode_mtime(meta: &mut HashMap<String, String>, mode: u32, mtime: FileTime) {
    meta.insert(MTIME.to_string(), format_mtime(mtime));
    meta.insert(MODE.to_string(), format!("{:o}", mode & 0o7777));
}

/// Puts `owner` into an object's metadata, keeping the rest.
pub fn set_owner(meta: &mut HashMap<String, String>, owner: Owner) {
    meta.insert(UID.to_string(), owner.uid.to_string());
    meta.insert(GID.to_string(), owner.gid.to_string());
}

/// The metadata of a name of `kind` with `mode`, `mtime` and, if known, `owner`.
pub fn of(kind: Kind, mode: u32, mtime: FileTime, owner: Option<Owner>) -> HashMap<String, String> {
    let mut meta = HashMap::new();
    meta.insert(MTIME.to_string(), format_mtime(mtime));
    meta.insert(MODE.to_string(), format!("{:o}", mode & 0o7777));
    if kind == Kind::Symlink {
        meta.insert(KIND.to_string(), SYMLINK.to_string());
    }
    if let Some(owner) = owner {
        meta.insert(UID.to_string(), owner.uid.to_string());
        meta.insert(GID.to_string(), owner.gid.to_string());
    }
    meta
}

/// `secs.nanos`, the nanoseconds without trailing zeros.
pub fn format_mtime(mtime: FileTime) -> String {
    let (secs, nanos) = (mtime.unix_seconds(), mtime.nanoseconds());
    if nanos == 0 {
        return secs.to_string();
    }
    let frac = format!("{nanos:09}");
    format!("{secs}.{}", frac.trim_end_matches('0'))
}

/// The mtime written by [`format_mtime`] (or by rclone: a float of seconds).
pub fn parse_mtime(text: &str) -> Option<FileTime> {
    let text = text.trim();
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(FileTime::from_unix_time(secs, nanos))
}

/// What an object is, from its size, its metadata and (for want of an mtime there) the
/// time the server stored it.
pub fn stat_of(
    folder: bool,
    size: u64,
    meta: Option<&HashMap<String, String>>,
    stored: Option<FileTime>,
    etag: Option<&str>,
) -> Stat {
    let get = |key: &str| meta.and_then(|m| m.get(key));
    let kind = if folder {
        Kind::Dir
    } else if get(KIND).is_some_and(|k| k == SYMLINK) {
        Kind::Symlink
    } else {
        Kind::File
    };
    let default_mode = match kind {
        Kind::Dir => 0o755,
        Kind::Symlink => 0o777,
        _ => 0o644,
    };
    let mode = get(MODE)
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(default_mode);
    let mtime = get(MTIME)
        .and_then(|m| parse_mtime(m))
        .or(stored)
        .unwrap_or_else(|| FileTime::from_unix_time(0, 0));
    Stat {
        kind,
        size: if folder { 0 } else { size },
        mtime,
        mode,
        ino: if folder { 0 } else { etag.map_or(0, stamp) },
        links: 1,
        owner: get(UID)
            .and_then(|u| u.parse().ok())
            .zip(get(GID).and_then(|g| g.parse().ok()))
            .map(|(uid, gid)| Owner { uid, gid }),
    }
}

/// An object's stamp as the index keeps it ([`crate::model::OnDisk::ino`], where a local
/// store keeps the inode): 64 bits of the MD5 of its ETag as S3 gives it (quotes trimmed,
/// case folded), never 0 (0: not known). Two stamps differ when the objects' ETags do.
pub fn stamp(etag: &str) -> u64 {
    use md5::Digest as _;
    let etag = etag.trim().trim_matches('"').to_ascii_lowercase();
    let digest = md5::Md5::digest(etag.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimes_round_trip_to_the_nanosecond() {
        for (secs, nanos) in [(1_700_000_000, 0), (1_700_000_000, 123_456_789), (5, 1)] {
            let t = FileTime::from_unix_time(secs, nanos);
            assert_eq!(parse_mtime(&format_mtime(t)), Some(t));
        }
        assert_eq!(
            format_mtime(FileTime::from_unix_time(7, 500_000_000)),
            "7.5"
        );
        assert_eq!(
            parse_mtime("7.5"),
            Some(FileTime::from_unix_time(7, 500_000_000))
        );
        assert_eq!(parse_mtime("x"), None);
        assert_eq!(parse_mtime("1.1234567891"), None);
    }

    #[test]
    fn kinds_modes_and_owners_come_from_the_metadata() {
        let meta = of(Kind::Symlink, 0o777, FileTime::from_unix_time(9, 0), None);
        let stat = stat_of(false, 3, Some(&meta), None, None);
        assert_eq!((stat.kind, stat.mode, stat.size), (Kind::Symlink, 0o777, 3));
        assert_eq!(stat.owner, None);
        let owner = Owner { uid: 65534, gid: 7 };
        let meta = of(
            Kind::File,
            0o640,
            FileTime::from_unix_time(9, 0),
            Some(owner),
        );
        assert_eq!((meta["uid"].as_str(), meta["gid"].as_str()), ("65534", "7"));
        assert_eq!(
            stat_of(false, 3, Some(&meta), None, None).owner,
            Some(owner)
        );
        let stat = stat_of(false, 3, None, Some(FileTime::from_unix_time(4, 0)), None);
        assert_eq!(
            (stat.kind, stat.mode, stat.mtime.unix_seconds()),
            (Kind::File, 0o644, 4)
        );
        assert_eq!(stat_of(true, 0, None, None, None).kind, Kind::Dir);
    }

    #[test]
    fn xattrs_round_trip_and_too_many_are_refused() {
        let kept = Kept {
            xattrs: true,
            acls: true,
            every_namespace: false,
        };
        let x = Xattrs(vec![
            ("user.color".into(), b"red".to_vec()),
            (
                "system.posix_acl_access".into(),
                vec![2, 0, 0, 0, 1, 0, 6, 0],
            ),
        ]);
        let mut meta = of(Kind::File, 0o644, FileTime::from_unix_time(1, 0), None);
        assert_eq!(encode_xattrs(&Xattrs::default()), Ok(None));
        meta.insert(XATTRS.to_string(), encode_xattrs(&x).unwrap().unwrap());
        assert_eq!(xattrs_of(&meta, &kept), x);
        // Only what the pair keeps is given.
        let user = Kept {
            acls: false,
            ..kept
        };
        assert_eq!(xattrs_of(&meta, &user).0, x.0[..1]);
        set_mode_mtime(&mut meta, 0o600, FileTime::from_unix_time(2, 0));
        assert_eq!(
            (meta["mode"].as_str(), meta["mtime"].as_str()),
            ("600", "2")
        );
        assert!(meta.contains_key(XATTRS));
        let big = Xattrs(vec![("user.big".into(), vec![7; 2000])]);
        assert!(encode_xattrs(&big).is_err());
        meta.insert(XATTRS.to_string(), "not base64!".to_string());
        assert_eq!(xattrs_of(&meta, &kept), Xattrs::default());
    }

    #[test]
    fn stamps_ignore_quotes_and_case_and_are_never_zero() {
        let a = stamp("\"9E107D9D372BB6826BD81D3542A419D6\"");
        assert_eq!(a, stamp("9e107d9d372bb6826bd81d3542a419d6"));
        assert_ne!(a, stamp("9e107d9d372bb6826bd81d3542a419d6-2"));
        assert_ne!(a, 0);
        let stat = stat_of(false, 1, None, None, Some("\"abc\""));
        assert_eq!(stat.ino, stamp("abc"));
        assert_eq!(stat_of(true, 0, None, None, Some("abc")).ino, 0);
    }
}
