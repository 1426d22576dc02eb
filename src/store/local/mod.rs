//! A mirror in a folder on this machine. Every look and every change goes through an
//! open handle on DST's root and the folder handles reached from it
//! ([`beneath::Dir`]), never through a whole path resolved again: a folder in the
//! mirror swapped for a symlink cannot send a read or a write outside DST.

pub mod beneath;
mod write;

use super::{Caps, Found, Listed, ReadFile, Reader, Stat, Step, Walked, layout};
use crate::model::{Kept, Kind, Xattrs};
use beneath::Dir;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A folder on this machine as a store.
#[derive(Debug)]
pub struct Local {
    /// DST as the user named it (for messages).
    root: PathBuf,
    /// DST's root folder, open (shared with the temp files it hands out, which install
    /// themselves below it).
    dir: Arc<Dir>,
    /// What writing needs, once [`super::Store::prepare`] made the store ready.
    writing: Option<write::Writing>,
}

impl Local {
    /// Opens the folder `root` (which must exist) as a store.
    pub fn open(root: &Path) -> io::Result<Local> {
        Ok(Local {
            root: root.to_path_buf(),
            dir: Arc::new(Dir::open_root(root)?),
            writing: None,
        })
    }

    /// DST's path as the user named it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The open root folder.
    pub fn root_dir(&self) -> &Dir {
        &self.dir
    }

    /// The folder that holds `name`, and `name`'s last component (`None` for the root).
    pub fn parent_of<'n>(&self, name: &'n Path) -> io::Result<(Dir, Option<&'n std::ffi::OsStr>)> {
        let (parent, last) = beneath::split(name);
        Ok((self.dir.dir(parent)?, last))
    }
}

/// A name that cannot be there because a folder on the way is not a folder.
fn absent(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

impl Reader for Local {
    fn caps(&self) -> Caps {
        Caps {
            hard_links: cfg!(unix),
            atomic_rename: true,
            posix_meta: cfg!(unix),
            symlinks: true,
            server_side_copy: false,
            fsync: true,
            nanosecond_mtimes: true,
            cheap_listing: true,
            owners: cfg!(unix),
            xattrs: cfg!(any(target_os = "linux", target_os = "android")),
        }
    }

    fn display(&self, name: &Path) -> PathBuf {
        if name.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(name)
        }
    }

    fn stat(&self, name: &Path) -> io::Result<Option<Stat>> {
        let found = self.parent_of(name).and_then(|(dir, last)| match last {
            Some(last) => dir.status(last),
            None => dir.own_status(),
        });
        match found {
            Ok(status) => Ok(Some(status.into())),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Listed>> {
        let folder = self.dir.dir(dir)?;
        let mut out = Vec::new();
        for (name, kind) in folder.entries()? {
            let kind = match kind {
                Some(kind) => kind,
                None => match folder.status(&name) {
                    Ok(status) => status.kind,
                    // Gone since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                },
            };
            out.push(Listed {
                name: dir.join(name),
                kind,
            });
        }
        Ok(out)
    }

    fn open(&self, name: &Path) -> io::Result<Box<dyn ReadFile>> {
        let (dir, last) = self.parent_of(name)?;
        let Some(last) = last else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root is a folder, not a file",
            ));
        };
        Ok(Box::new(dir.open_file(last)?))
    }

    fn read_link(&self, name: &Path) -> io::Result<PathBuf> {
        let (dir, last) = self.parent_of(name)?;
        match last {
            Some(last) => dir.read_link(last),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root is a folder, not a symlink",
            )),
        }
    }

    fn index_file(&self) -> PathBuf {
        self.root.join(layout::index())
    }

    // -- The read side's looks and walks.

    fn look(&self, name: &Path) -> io::Result<Option<Found>> {
        let (dir, last) = match self.parent_of(name) {
            Ok(found) => found,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(last) = last else {
            return Ok(Some(Found::Dir));
        };
        let status = match dir.status(last) {
            Ok(status) => status,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(match status.kind {
            Kind::File => Found::File(Box::new(dir.open_file(last)?)),
            Kind::Dir => Found::Dir,
            Kind::Symlink => Found::Symlink(dir.read_link(last)?),
            Kind::Special => Found::Special,
        }))
    }

    fn walk(
        &self,
        top: &Path,
        detail: bool,
        visit: &mut dyn FnMut(Walked) -> Step,
    ) -> io::Result<()> {
        let first = self.dir.dir(top)?;
        let entries = first.entries()?;
        let Some(subdirs) = visit_folder(&first, top, entries, detail, visit) else {
            return Ok(());
        };
        let mut stack = vec![Frame {
            dir: Some(first),
            rel: top.to_path_buf(),
            subdirs,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.subdirs.pop() else {
                stack.pop();
                continue;
            };
            if frame.dir.is_none() {
                // Given back to bound open handles: reached again from the root, which
                // passes no symlink either.
                frame.dir = self.dir.dir(&frame.rel).ok();
            }
            let Some(parent) = &frame.dir else {
                frame.subdirs.clear();
                continue;
            };
            // A folder that cannot be opened or listed is passed over, as documented.
            // One name from a listing: one `openat` with `O_NOFOLLOW`.
            let Ok(child) = parent.child(&name) else {
                continue;
            };
            // Just opened, listed once: read through its own handle.
            let Ok(entries) = child.entries_once() else {
                continue;
            };
            let rel = frame.rel.join(&name);
            let Some(subdirs) = visit_folder(&child, &rel, entries, detail, visit) else {
                return Ok(());
            };
            if !subdirs.is_empty() {
                stack.push(Frame {
                    dir: Some(child),
                    rel,
                    subdirs,
                });
                if stack.len() > OPEN_HANDLES {
                    let keep_from = stack.len() - OPEN_HANDLES;
                    stack[keep_from - 1].dir = None;
                }
            }
        }
        Ok(())
    }

    fn stat_each(&self, names: &[&Path]) -> Vec<io::Result<Option<Stat>>> {
        // The folder of the names before, kept open while the names stay in it.
        let mut folder: Option<(&Path, Dir)> = None;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let (parent, last) = beneath::split(name);
            let Some(last) = last else {
                out.push(self.stat(name));
                continue;
            };
            if folder.as_ref().is_none_or(|(p, _)| *p != parent) {
                folder = match self.dir.dir(parent) {
                    Ok(dir) => Some((parent, dir)),
                    Err(e) => {
                        out.push(if absent(&e) { Ok(None) } else { Err(e) });
                        continue;
                    }
                };
            }
            let found = match folder.as_ref().map(|(_, dir)| dir.status(last)) {
                Some(Ok(status)) => Ok(Some(status.into())),
                Some(Err(e)) if absent(&e) => Ok(None),
                Some(Err(e)) => Err(e),
                None => Ok(None),
            };
            out.push(found);
        }
        out
    }

    fn keeps_unix_meta(&self) -> bool {
        crate::platform::keeps_unix_metadata(&self.root)
    }

    fn xattrs(&self, name: &Path, kept: &Kept) -> io::Result<Xattrs> {
        match self.parent_of(name)? {
            (dir, Some(last)) => dir.xattrs(last, kept),
            (dir, None) => dir.xattrs(std::ffi::OsStr::new(""), kept),
        }
    }
}

/// Folder handles a walk keeps open at most: the deepest ones, each the way to its
/// children. An ancestor's handle beyond that is closed and opened again (from the
/// root) when the walk comes back to it, so a tree of any depth walks within the limit
/// on open files.
const OPEN_HANDLES: usize = 64;

/// A folder a walk is inside: its handle (while kept), its name, and the folders in it
/// still to enter.
struct Frame {
    dir: Option<Dir>,
    rel: PathBuf,
    subdirs: Vec<OsString>,
}

/// Hands the `entries` of the folder `dir` (named `rel`) to `visit`; returns the
/// folders to enter, or `None` when `visit` stops the walk.
fn visit_folder(
    dir: &Dir,
    rel: &Path,
    entries: Vec<(OsString, Option<Kind>)>,
    detail: bool,
    visit: &mut dyn FnMut(Walked) -> Step,
) -> Option<Vec<OsString>> {
    let mut subdirs = Vec::new();
    for (name, kind) in entries {
        let stat = match (kind, detail) {
            (Some(_), false) => None,
            _ => match dir.status(&name) {
                Ok(status) => Some(Stat::from(status)),
                // Gone since the listing (or unreadable): left out.
                Err(_) => continue,
            },
        };
        let Some(kind) = kind.or(stat.map(|s| s.kind)) else {
            continue;
        };
        let walked = Walked {
            name: rel.join(&name),
            kind,
            stat: stat.filter(|_| detail),
        };
        match visit(walked) {
            Step::Go if kind == Kind::Dir => subdirs.push(name),
            Step::Go | Step::Prune => {}
            Step::Stop => return None,
        }
    }
    Some(subdirs)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A look never passes a symlink: one on the way leaves nothing there, one at the
    /// name is reported with its target, and `..` or an absolute name is refused.
    #[test]
    fn look_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::write(root.join("real/sub/f"), "x").unwrap();
        symlink("real", root.join("link")).unwrap();
        symlink("sub/f", root.join("real/lf")).unwrap();
        let store = Local::open(root).unwrap();
        let look = |name: &str| store.look(Path::new(name));
        assert!(matches!(look("real/sub/f"), Ok(Some(Found::File(_)))));
        assert!(matches!(look("real/sub"), Ok(Some(Found::Dir))));
        assert!(matches!(look(""), Ok(Some(Found::Dir))));
        match look("real/lf") {
            Ok(Some(Found::Symlink(t))) => assert_eq!(t, Path::new("sub/f")),
            _ => panic!("real/lf is a symlink"),
        }
        assert!(matches!(look("link/sub/f"), Ok(None)));
        assert!(matches!(look("real/nope"), Ok(None)));
        assert!(look("../x").is_err());
        assert!(look("/etc/passwd").is_err());
        assert!(store.open(Path::new("real/lf")).is_err());
        assert!(store.open(Path::new("link/sub/f")).is_err());
    }

    /// A walk lists every name once, never enters a symlinked folder, honours `Prune`,
    /// and stays within its limit on open handles however deep the tree.
    #[test]
    fn walk_lists_each_name_once_and_never_enters_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut deep = PathBuf::from("deep");
        for i in 0..(OPEN_HANDLES + 10) {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(root.join(&deep)).unwrap();
        std::fs::write(root.join(deep.join("leaf")), "x").unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("skip/inner")).unwrap();
        std::fs::write(root.join("a/b/f"), "x").unwrap();
        symlink("a", root.join("to_a")).unwrap();
        let store = Local::open(root).unwrap();
        let mut seen = Vec::new();
        store
            .walk(Path::new(""), true, &mut |w| {
                assert!(w.stat.is_some_and(|s| s.kind == w.kind), "{w:?}");
                let prune = w.name == Path::new("skip");
                seen.push(w.name);
                if prune { Step::Prune } else { Step::Go }
            })
            .unwrap();
        seen.sort();
        let mut want: Vec<PathBuf> = ["a", "a/b", "a/b/f", "skip", "to_a", "deep"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let mut d = PathBuf::from("deep");
        for i in 0..(OPEN_HANDLES + 10) {
            d.push(format!("d{i}"));
            want.push(d.clone());
        }
        want.push(deep.join("leaf"));
        want.sort();
        assert_eq!(seen, want);
        // Below a folder, and a stop ends it.
        let mut under = Vec::new();
        store
            .walk(Path::new("a"), false, &mut |w| {
                under.push(w.name);
                Step::Stop
            })
            .unwrap();
        assert_eq!(under, [PathBuf::from("a/b")]);
        assert!(
            store
                .walk(Path::new("to_a"), false, &mut |_| Step::Go)
                .is_err()
        );

        // The trait's own walk and look, built on `list`, `stat`, `open` and
        // `read_link`, find the same.
        let basic = Basic(store);
        let mut by_list = Vec::new();
        basic
            .walk(Path::new(""), true, &mut |w| {
                assert!(w.stat.is_some_and(|s| s.kind == w.kind), "{w:?}");
                let prune = w.name == Path::new("skip");
                by_list.push(w.name);
                if prune { Step::Prune } else { Step::Go }
            })
            .unwrap();
        by_list.sort();
        assert_eq!(by_list, want);
        assert!(matches!(
            basic.look(Path::new("a/b/f")),
            Ok(Some(Found::File(_)))
        ));
        assert!(matches!(basic.look(Path::new("to_a/b/f")), Ok(None)));
        assert!(matches!(
            basic.look(Path::new("to_a")),
            Ok(Some(Found::Symlink(_)))
        ));
    }

    /// A store with only the required calls, so the trait's defaults are what runs.
    struct Basic(Local);

    impl Reader for Basic {
        fn caps(&self) -> Caps {
            self.0.caps()
        }
        fn display(&self, name: &Path) -> PathBuf {
            self.0.display(name)
        }
        fn stat(&self, name: &Path) -> io::Result<Option<Stat>> {
            self.0.stat(name)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<Listed>> {
            self.0.list(dir)
        }
        fn open(&self, name: &Path) -> io::Result<Box<dyn ReadFile>> {
            self.0.open(name)
        }
        fn read_link(&self, name: &Path) -> io::Result<PathBuf> {
            self.0.read_link(name)
        }
        fn index_file(&self) -> PathBuf {
            self.0.index_file()
        }
    }
}
