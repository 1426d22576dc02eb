//! Names of one file on the read side: a mirror's live names recorded with the same
//! link key (one source file with several names, one file in DST) are restored as one
//! file with several names, and archived in a tar as a file and hard-link entries to
//! it. Only live names group: a name restored from a version is a file of its own.

use crate::index::Index;
use crate::model::LinkKey;
use crate::store::Reader;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// Which names of a file with several were written already, and where: the first
/// name of a key written is the one later names are linked to.
#[derive(Debug, Default)]
pub struct Firsts {
    keys: HashMap<PathBuf, LinkKey>,
    written: HashMap<LinkKey, PathBuf>,
}

impl Firsts {
    /// Groups by `keys` (from [`keys_of`]).
    pub fn new(keys: HashMap<PathBuf, LinkKey>) -> Firsts {
        Firsts {
            keys,
            written: HashMap::new(),
        }
    }

    /// The key of the live name `name` in DST, if it has several names.
    pub fn key(&self, name: &Path) -> Option<LinkKey> {
        self.keys.get(name).copied()
    }

    /// Where the first name of `key` was written, if one was.
    pub fn first(&self, key: LinkKey) -> Option<&Path> {
        self.written.get(&key).map(PathBuf::as_path)
    }

    /// Notes that a name of `key` was written at `at` (kept if it is the first).
    pub fn wrote(&mut self, key: LinkKey, at: &Path) {
        self.written.entry(key).or_insert_with(|| at.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_name_written_is_the_one_others_link_to() {
        let key = LinkKey { dev: 1, ino: 2 };
        let keys = [("a".into(), key), ("d/b".into(), key)]
            .into_iter()
            .collect();
        let mut firsts = Firsts::new(keys);
        assert_eq!(firsts.key(Path::new("a")), Some(key));
        assert_eq!(firsts.key(Path::new("c")), None);
        assert_eq!(firsts.first(key), None);
        firsts.wrote(key, Path::new("a"));
        firsts.wrote(key, Path::new("d/b"));
        assert_eq!(firsts.first(key), Some(Path::new("a")));
    }
}
