//! The values the engine passes between its stages and keeps in the index: what a
//! source entry is ([`Entry`], [`Kind`], [`Meta`]) and what a mirror holds under a name
//! ([`Record`], [`Stored`], [`OnDisk`], [`MirrorState`]), and what `rsync -aHXA` keeps
//! beyond content and mode ([`Owner`], [`Xattrs`], [`LinkKey`]). Plain data, no I/O: the
//! planner, the executor, the index and the read side all speak it, and none of them
//! has to import another to do so.

use crate::hash::Digest;
use crate::platform;
use filetime::FileTime;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Who owns a name, by number. Names are looked up only where they matter: the index
/// keeps the name of each number it records, and `restore` maps names back to this
/// machine's numbers (unless `--numeric-ids`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// A name's extended attributes, sorted by name: `user.*`, `security.*` (SELinux
/// labels), `trusted.*` (root only), and POSIX ACLs, which Linux keeps as the
/// attributes `system.posix_acl_access` and `system.posix_acl_default` (carried byte
/// for byte, so a named user or group in an ACL keeps its number).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Xattrs(pub Vec<(OsString, Vec<u8>)>);

impl Xattrs {
    /// The attribute names that hold POSIX ACLs.
    pub const ACL_NAMES: [&'static str; 2] =
        ["system.posix_acl_access", "system.posix_acl_default"];

    /// True if `name` holds a POSIX ACL (kept with `--acls`, not `--xattrs`).
    pub fn is_acl(name: &std::ffi::OsStr) -> bool {
        Self::ACL_NAMES.iter().any(|a| name == *a)
    }

    /// The attributes as one blob, for the index: per attribute the name's length
    /// (u32, little-endian), the name, the value's length, the value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in &self.0 {
            let name = name.as_encoded_bytes();
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    /// The inverse of [`Xattrs::encode`]; `None` for a blob it did not write.
    pub fn decode(mut blob: &[u8]) -> Option<Xattrs> {
        let take = |blob: &mut &[u8]| -> Option<Vec<u8>> {
            let (len, rest) = blob.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let (item, rest) = (rest.get(..len)?, rest.get(len..)?);
            *blob = rest;
            Some(item.to_vec())
        };
        let mut out = Vec::new();
        while !blob.is_empty() {
            let name = take(&mut blob)?;
            let value = take(&mut blob)?;
            out.push((crate::platform::os_string_from_bytes(name)?, value));
        }
        Some(Xattrs(out))
    }

    /// The names of the attributes `kept` keeps that `self` (as wanted) and `got` (as
    /// found) do not agree on: missing, unexpected or with another value; sorted.
    pub fn differing<'a>(&'a self, got: &'a Xattrs, kept: &Kept) -> Vec<&'a OsString> {
        let want: HashMap<&OsString, &Vec<u8>> = self
            .0
            .iter()
            .filter(|(n, _)| kept.keeps(n))
            .map(|(n, v)| (n, v))
            .collect();
        let got: HashMap<&OsString, &Vec<u8>> = got.0.iter().map(|(n, v)| (n, v)).collect();
        let mut names: Vec<&OsString> = want
            .iter()
            .filter(|(n, v)| got.get(*n) != Some(*v))
            .map(|(n, _)| *n)
            .chain(got.keys().filter(|n| !want.contains_key(*n)).copied())
            .collect();
        names.sort();
        names
    }

    /// The attributes, or `None` when there are none (how entries and records keep
    /// them: most names have none).
    pub fn shared(self) -> Option<Arc<Xattrs>> {
        (!self.0.is_empty()).then(|| Arc::new(self))
    }
}

/// What a name has beyond content, mode and mtime: its owner and its extended
/// attributes (ACLs among them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Owner and group: of a source entry, `None` only where the platform has none; of a
    /// record, `None` where it was not recorded (an index from before owners were
    /// kept, or rebuilt from a DST that does not keep them).
    pub owner: Option<Owner>,
    /// Extended attributes and ACLs (`None`: none, or not kept by the pair).
    pub xattrs: Option<Arc<Xattrs>>,
}

impl Attrs {
    /// The attributes, empty when there are none.
    pub fn xattrs(&self) -> &Xattrs {
        static NONE: Xattrs = Xattrs(Vec::new());
        self.xattrs.as_deref().unwrap_or(&NONE)
    }
}

/// Which extended attributes a pair keeps (`--xattrs`, `--acls`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// Extended attributes other than ACLs: every namespace when run as root, else
    /// `user.*` only (what a user may set), as rsync's `-X`.
    pub xattrs: bool,
    /// POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`).
    pub acls: bool,
    /// Run as root: `security.*` and `trusted.*` are kept too.
    pub every_namespace: bool,
}

impl Kept {
    /// Every attribute, of every namespace, and ACLs.
    pub const EVERYTHING: Kept = Kept {
        xattrs: true,
        acls: true,
        every_namespace: true,
    };

    /// True if any attribute is kept: the walk reads them.
    pub fn any(&self) -> bool {
        self.xattrs || self.acls
    }

    /// True if the attribute `name` is kept.
    pub fn keeps(&self, name: &std::ffi::OsStr) -> bool {
        if Xattrs::is_acl(name) {
            self.acls
        } else {
            self.xattrs && (self.every_namespace || name.as_encoded_bytes().starts_with(b"user."))
        }
    }
}

/// The identity of a source file with more than one name (`st_nlink > 1`): its
/// device and inode. Names of one key are one file with several names in DST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkKey {
    /// Device (filesystem) of the source file.
    pub dev: u64,
    /// Its inode number.
    pub ino: u64,
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
    /// Owner, group, extended attributes and ACLs.
    pub attrs: Attrs,
    /// For a regular file with more than one name, the file's identity.
    pub link: Option<LinkKey>,
}

impl Entry {
    /// An entry with no owner, attributes or other names (tests, and what the read
    /// side builds from a record).
    pub fn plain(rel: PathBuf, kind: Kind, meta: Meta, target: Option<PathBuf>) -> Entry {
        Entry {
            rel,
            kind,
            meta,
            target,
            attrs: Attrs::default(),
            link: None,
        }
    }
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
    /// The source's owner, group, extended attributes and ACLs when it was mirrored.
    pub attrs: Attrs,
    /// The source file's identity when it had several names: names of one key are one
    /// file in DST (and after `restore`).
    pub link: Option<LinkKey>,
}

impl Record {
    /// What the index says of `entry` once stored as `stored` (content not hashed,
    /// stored bytes not looked at yet).
    pub fn of(entry: &Entry, stored: Stored) -> Record {
        Record {
            kind: entry.kind,
            meta: entry.meta,
            sha256: None,
            stored,
            target: entry.target.clone(),
            disk: None,
            attrs: entry.attrs.clone(),
            link: entry.link,
        }
    }

    /// A record with no owner, attributes or other names.
    pub fn plain(kind: Kind, meta: Meta, stored: Stored) -> Record {
        Record {
            kind,
            meta,
            sha256: None,
            stored,
            target: None,
            disk: None,
            attrs: Attrs::default(),
            link: None,
        }
    }
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
