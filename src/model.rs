//! The values the engine passes between its stages and keeps in the index: what a
//! source entry is ([`Entry`], [`Kind`], [`Meta`]) and what a mirror holds under a name
//! ([`Record`], [`Stored`], [`OnDisk`], [`MirrorState`]). Plain data, no I/O: the
//! planner, the executor, the index and the read side all speak it, and none of them
//! has to import another to do so.

use crate::hash::Digest;
use crate::platform;
use filetime::FileTime;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

/// What kind of thing a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (mirrored as a link, never followed).
    Symlink,
    /// A FIFO, socket or device node: skipped with a warning.
    Special,
}

impl Kind {
    /// The kind a file type stands for.
    pub fn of(ft: std::fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Special
        }
    }
}

/// The metadata a mirror compares: size, modification time (ns) and permission bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Size in bytes (of the source content, for gzipped entries too).
    pub size: u64,
    /// Modification time with nanoseconds.
    pub mtime: FileTime,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

impl Meta {
    /// Reads the compared fields off `lstat`/`fstat` metadata.
    pub fn of(meta: &Metadata) -> Meta {
        Meta {
            size: meta.len(),
            mtime: FileTime::from_last_modification_time(meta),
            mode: platform::mode_of(meta),
        }
    }
}

/// One thing found in the source tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the source root; empty for the root itself.
    pub rel: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// Size, mtime and mode as the walk saw them.
    pub meta: Meta,
    /// For symlinks, where the link points (exactly as stored, not resolved).
    pub target: Option<PathBuf>,
}

/// How a file's content is stored in DST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stored {
    /// Byte for byte, under the source's name.
    Plain,
    /// Gzip-compressed, under the source's name plus `.gz`.
    Gzip,
}

impl Stored {
    /// The name under which a source path is stored in this form.
    pub fn name_for(self, rel: &Path) -> PathBuf {
        match self {
            Stored::Plain => rel.to_path_buf(),
            Stored::Gzip => {
                let mut s: OsString = rel.as_os_str().to_owned();
                s.push(".gz");
                PathBuf::from(s)
            }
        }
    }

    /// The source path a name stored in this form stands for (`a.txt.gz` stored
    /// gzipped → `a.txt`): the inverse of [`Stored::name_for`]. A gzipped name without
    /// the `.gz` (never written so) stands for itself.
    pub fn source_of(self, name: &Path) -> PathBuf {
        match self {
            Stored::Gzip => strip_gz(name).unwrap_or_else(|| name.to_path_buf()),
            Stored::Plain => name.to_path_buf(),
        }
    }
}

/// `a/b.gz` → `a/b`; `None` if the name does not end in `.gz` (or is only `.gz`).
pub fn strip_gz(name: &Path) -> Option<PathBuf> {
    let bytes = name.as_os_str().as_encoded_bytes();
    let stem = bytes.strip_suffix(b".gz")?;
    if stem.is_empty() || stem.ends_with(b"/") {
        return None;
    }
    // SAFETY: `stem` is a prefix of valid encoded bytes that ends right before the ASCII
    // ".gz", which is a valid split point for OsStr's encoding.
    Some(PathBuf::from(unsafe {
        std::ffi::OsStr::from_encoded_bytes_unchecked(stem)
    }))
}

/// One name in the mirror and what it was mirrored from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// File, directory or symlink.
    pub kind: Kind,
    /// The source's size, mtime and mode at the time it was mirrored.
    pub meta: Meta,
    /// SHA-256 of the source content, once computed.
    pub sha256: Option<Digest>,
    /// Plain or gzipped.
    pub stored: Stored,
    /// Symlink target.
    pub target: Option<PathBuf>,
    /// What DST held under the name right after datasafe wrote it, if known.
    pub disk: Option<OnDisk>,
}

/// The stored file itself as datasafe left it: compared with what DST holds by the
/// watcher's fallback rescan, so a file edited or replaced in DST behind datasafe's
/// back is noticed without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnDisk {
    /// Bytes on disk (the gzip stream's size for a gzipped file).
    pub size: u64,
    /// Inode number.
    pub ino: u64,
}

impl OnDisk {
    /// What `meta` (of the file in DST) says.
    pub fn of(meta: &Metadata) -> OnDisk {
        OnDisk {
            size: meta.len(),
            ino: platform::inode(meta),
        }
    }
}

/// Everything a mirror holds, keyed by the name stored in DST. Keys are `OsString`, not
/// `PathBuf`: hashing and comparing raw bytes is several times cheaper than `Path`'s
/// component-wise `Hash`/`Eq`, and a no-op run does a lookup per source entry. Hashed
/// with foldhash (seeded per process) rather than SipHash: a no-op pass hashes every
/// name several times, and SipHash was the largest single cost of planning.
pub type MirrorState = HashMap<OsString, Record, NameHasher>;

/// The hasher of [`MirrorState`] and of the engine's other sets of names.
pub type NameHasher = foldhash::fast::RandomState;

/// A set of names stored in DST (see [`MirrorState`]).
pub type NameSet = std::collections::HashSet<OsString, NameHasher>;
