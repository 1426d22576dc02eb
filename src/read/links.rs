//! Names of one file on the read side, restored as one file with several names and
//! archived in a tar as a file and hard-link entries to it. Two things say that names
//! are one file: the index (a mirror's live names recorded with the same link key: one
//! source file with several names), and DST itself (names whose content is one stored
//! file: the versions kept when a file with several names was edited through one of
//! them are links of the one old file, and a name that left the group since may still
//! be that file). The second needs no index, so `restore --at` of a moment before the
//! edit gives every name its old content as one file again; it needs inode numbers,
//! which a local DST has (SFTP and S3 give none: versions restore as separate files).

use crate::index::Index;
use crate::model::LinkKey;
use crate::store::Reader;
use filetime::FileTime;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Which file a name is a name of.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Group {
    /// A source file with several names (the index's link key, or a plain folder's
    /// device and inode).
    Source(LinkKey),
    /// One stored file in DST.
    Stored(Inode),
}

/// A stored file in DST: its inode number (never 0) and mtime. The mtime guards against
/// two filesystems mounted inside DST giving the same number to two files.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Inode {
    /// The inode number.
    pub ino: u64,
    /// Its mtime.
    pub mtime: FileTime,
}

/// The live names of `store`'s mirror that are names of a file with several, by their
/// name in DST; empty without an index (or one that records no links).
pub fn keys_of(store: &dyn Reader) -> HashMap<PathBuf, LinkKey> {
    let dir = super::history::index_dir(store);
    match Index::open_untouched(&dir).map(|index| index.map(|i| i.link_keys())) {
        Ok(Some(Ok(names))) => names.into_iter().collect(),
        Ok(None) => HashMap::new(),
        Ok(Some(Err(e))) | Err(e) => {
            log::warn!("{e}; names of one file are restored as separate files");
            HashMap::new()
        }
    }
}

/// The group of every name (in DST) that is one of several names of a file: `keys`
/// (from [`keys_of`]) for the live names the index groups, then `stored` (names to be
/// read that share their stored file, from `restore::Plan::inodes`), each of which
/// joins the index's group of a name that is the same stored file, or else a group of
/// that stored file.
pub fn groups(
    keys: HashMap<PathBuf, LinkKey>,
    stored: &HashMap<PathBuf, Inode>,
) -> HashMap<PathBuf, Group> {
    let mut by_file: HashMap<Inode, Group> = HashMap::new();
    for (name, inode) in stored {
        if let Some(key) = keys.get(name) {
            by_file.entry(*inode).or_insert(Group::Source(*key));
        }
    }
    let mut groups: HashMap<PathBuf, Group> = keys
        .into_iter()
        .map(|(name, key)| (name, Group::Source(key)))
        .collect();
    for (name, inode) in stored {
        let group = by_file.get(inode).copied().unwrap_or(Group::Stored(*inode));
        groups.entry(name.clone()).or_insert(group);
    }
    groups
}

/// Which names of a file with several were written already, and where: the first
/// name of a group written is the one later names are linked to.
#[derive(Debug, Default)]
pub struct Firsts {
    groups: HashMap<PathBuf, Group>,
    written: HashMap<Group, PathBuf>,
}

impl Firsts {
    /// Groups names by `groups` (from [`groups`]).
    pub fn new(groups: HashMap<PathBuf, Group>) -> Firsts {
        Firsts {
            groups,
            written: HashMap::new(),
        }
    }

    /// The group of the name `name` in DST, if it is one of several names of a file.
    pub fn key(&self, name: &Path) -> Option<Group> {
        self.groups.get(name).copied()
    }

    /// Where the first name of `group` was written, if one was.
    pub fn first(&self, group: Group) -> Option<&Path> {
        self.written.get(&group).map(PathBuf::as_path)
    }

    /// Notes that a name of `group` was written at `at` (kept if it is the first).
    pub fn wrote(&mut self, group: Group, at: &Path) {
        self.written
            .entry(group)
            .or_insert_with(|| at.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: LinkKey = LinkKey { dev: 1, ino: 2 };

    #[test]
    fn the_first_name_written_is_the_one_others_link_to() {
        let keys = [("a".into(), KEY), ("d/b".into(), KEY)]
            .into_iter()
            .collect();
        let mut firsts = Firsts::new(groups(keys, &HashMap::new()));
        let key = Group::Source(KEY);
        assert_eq!(firsts.key(Path::new("a")), Some(key));
        assert_eq!(firsts.key(Path::new("c")), None);
        assert_eq!(firsts.first(key), None);
        firsts.wrote(key, Path::new("a"));
        firsts.wrote(key, Path::new("d/b"));
        assert_eq!(firsts.first(key), Some(Path::new("a")));
    }

    #[test]
    fn names_of_one_stored_file_join_the_index_group_of_a_name_that_is_it() {
        let inode = |ino| Inode {
            ino,
            mtime: FileTime::from_unix_time(100, 5),
        };
        let keys = [("b".into(), KEY)].into_iter().collect();
        let stored = [
            ("b".into(), inode(7)),
            (".datasafe/versions/a_20260101_000000".into(), inode(7)),
            (".datasafe/versions/c_20260101_000000".into(), inode(8)),
            (".datasafe/versions/e_20260101_000000".into(), inode(8)),
        ]
        .into_iter()
        .collect();
        let groups = groups(keys, &stored);
        let of = |name: &str| groups.get(Path::new(name)).copied();
        assert_eq!(of("b"), Some(Group::Source(KEY)));
        assert_eq!(
            of(".datasafe/versions/a_20260101_000000"),
            Some(Group::Source(KEY))
        );
        assert_eq!(
            of(".datasafe/versions/c_20260101_000000"),
            Some(Group::Stored(inode(8)))
        );
        assert_eq!(
            of(".datasafe/versions/e_20260101_000000"),
            of(".datasafe/versions/c_20260101_000000")
        );
    }
}
