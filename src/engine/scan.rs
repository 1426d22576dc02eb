//! Read-only walks: the source tree into [`Entry`] values (relative path, kind, size,
//! mtime to the nanosecond, mode, symlink target), and the destination tree into the
//! list of names it holds. Symlinks are never followed, so a link loop cannot hang a
//! walk. Nothing here writes anything or decides what to do with what it finds.

use crate::config::filter::Excludes;
use crate::model::{Entry, Kind, Meta};
use crate::platform;
use crate::store::layout::STATE_DIR;
use crate::store::local::Local;
use crate::store::{Reader, Stat, Step};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// One item of a source walk: an entry, or a path that could not be read.
#[derive(Debug)]
pub enum Scanned {
    /// A readable entry.
    Entry(Entry),
    /// A path whose metadata or listing failed; what DST holds under it must be kept.
    Error {
        /// Path relative to the source root.
        rel: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
}

/// Which parts of the source a walk leaves out.
#[derive(Clone, Debug, Default)]
pub struct ScanRules {
    /// The user's exclude globs.
    pub excludes: Excludes,
    /// Paths (relative to SRC) never to enter: DST when it lies inside SRC.
    pub skip: Vec<PathBuf>,
}

impl ScanRules {
    /// True if the walk must not report or enter `rel`.
    pub fn leaves_out(&self, rel: &Path) -> bool {
        // DST's state folder can only be at DST's root, so only a top-level `.datasafe`
        // in SRC collides with it (it is another mirror's state when SRC is a mirror).
        let bytes = rel.as_os_str().as_encoded_bytes();
        bytes == STATE_DIR.as_bytes()
            || self
                .skip
                .iter()
                .any(|s| s.as_os_str().as_encoded_bytes() == bytes)
            || self.excludes.is_excluded(rel)
    }

    /// True if `rel` or any folder above it is left out (for paths seen without a walk).
    pub fn covers(&self, rel: &Path) -> bool {
        rel.ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| self.leaves_out(a))
    }
}

/// Walks `scope` (a path relative to `root`; empty for all of it), calling `visit` for
/// `scope` itself and then every entry below it, in a stable (sorted per directory)
/// order. Relative paths are relative to `root`. Stops early if `visit` breaks.
pub fn walk_source(
    root: &Path,
    scope: &Path,
    rules: &ScanRules,
    mut visit: impl FnMut(Scanned) -> ControlFlow<()>,
) {
    let whole = scope.as_os_str().is_empty();
    if !whole && rules.covers(scope) {
        return;
    }
    let mut walker = WalkDir::new(root.join(scope))
        .follow_links(false)
        // SRC itself may be a symlink to a folder; a folder inside it is an entry.
        .follow_root_links(whole)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()))
        .into_iter();
    while let Some(next) = walker.next() {
        let item = match next {
            Ok(dent) => {
                let rel = relative(root, dent.path());
                if dent.depth() > 0 && rules.leaves_out(&rel) {
                    if dent.file_type().is_dir() {
                        walker.skip_current_dir();
                    }
                    continue;
                }
                // The root may be a symlink to a directory: describe what it points to.
                let meta = if dent.depth() == 0 && whole {
                    std::fs::metadata(dent.path())
                } else {
                    dent.metadata().map_err(inner_io)
                };
                match meta {
                    Ok(meta) => entry_from(dent.path(), rel, &meta),
                    Err(error) => Scanned::Error { rel, error },
                }
            }
            Err(err) => {
                let rel = err.path().map(|p| relative(root, p)).unwrap_or_default();
                Scanned::Error {
                    rel,
                    error: inner_io(err),
                }
            }
        };
        if visit(item).is_break() {
            return;
        }
    }
}

/// Describes one path as an [`Entry`] (reads the link target for symlinks).
pub fn entry_from(path: &Path, rel: PathBuf, meta: &Metadata) -> Scanned {
    let kind = if platform::is_special(meta) {
        Kind::Special
    } else {
        Kind::of(meta.file_type())
    };
    let target = if kind == Kind::Symlink {
        match std::fs::read_link(path) {
            Ok(t) => Some(t),
            Err(error) => return Scanned::Error { rel, error },
        }
    } else {
        None
    };
    Scanned::Entry(Entry {
        rel,
        kind,
        meta: Meta::of(meta),
        target,
    })
}

/// One name found in DST, with its metadata when it was asked for.
#[derive(Clone, Debug)]
pub struct DestItem {
    /// Path relative to DST, exactly as stored (with `.gz` for gzipped files).
    pub rel: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// What the store says of it, only when the listing was asked for detail.
    pub meta: Option<Stat>,
}

/// [`list_store`] of the folder `root` on this machine; nothing if it cannot be opened.
/// For callers that do not hold DST's store yet (the engine's `sync`).
pub fn list_dest(root: &Path, scope: &Path, detail: bool) -> Vec<DestItem> {
    match Local::open(root) {
        Ok(store) => list_store(&store, scope, detail),
        Err(_) => Vec::new(),
    }
}

/// Lists what a mirror holds at and below `scope` (all of it except its state folder
/// for an empty scope), through its store, never through a symlink (a symlink at
/// `scope` is listed, not entered; one on the way to it lists nothing). With `detail`,
/// also each name's [`Stat`] (needed only when there is no index). Unreadable folders
/// are skipped: their names stay unknown, so nothing in them is deleted.
pub fn list_store(store: &dyn Reader, scope: &Path, detail: bool) -> Vec<DestItem> {
    let whole = scope.as_os_str().is_empty();
    let mut items = Vec::new();
    if !whole {
        let Ok(Some(stat)) = store.stat(scope) else {
            return items;
        };
        items.push(DestItem {
            rel: scope.to_path_buf(),
            kind: stat.kind,
            meta: detail.then_some(stat),
        });
        if stat.kind != Kind::Dir {
            return items;
        }
    }
    let state = Path::new(STATE_DIR);
    // An unreadable DST lists as empty, as an unreadable folder below it does.
    let _ = store.walk(scope, detail, &mut |found| {
        if whole && found.name == state {
            return Step::Prune;
        }
        items.push(DestItem {
            rel: found.name,
            kind: found.kind,
            meta: found.stat,
        });
        Step::Go
    });
    items
}

/// The OS error inside a walkdir error (walkdir's own wrapping repeats the path).
fn inner_io(err: walkdir::Error) -> io::Error {
    let text = err.to_string();
    err.into_io_error()
        .unwrap_or_else(|| io::Error::other(text))
}

/// `path` relative to `root`. Walk paths are `root` + `/` + rest, so a byte comparison
/// does (`Path::strip_prefix` compares component by component, a cost per entry).
fn relative(root: &Path, path: &Path) -> PathBuf {
    let (r, p) = (
        root.as_os_str().as_encoded_bytes(),
        path.as_os_str().as_encoded_bytes(),
    );
    match p.strip_prefix(r) {
        Some([]) => PathBuf::new(),
        Some([b'/', rest @ ..]) if !r.is_empty() && !rest.is_empty() => {
            // SAFETY: `rest` follows an ASCII '/' in valid encoded bytes, a valid split.
            PathBuf::from(unsafe { OsStr::from_encoded_bytes_unchecked(rest) })
        }
        _ => path.strip_prefix(root).unwrap_or(path).to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(root: &Path, rules: &ScanRules) -> Vec<(String, Kind)> {
        let mut out = Vec::new();
        walk_source(root, Path::new(""), rules, |item| {
            if let Scanned::Entry(e) = item {
                out.push((e.rel.to_string_lossy().into_owned(), e.kind));
            }
            ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn walks_sorted_and_leaves_out_state_dir_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/inner")).unwrap();
        std::fs::create_dir_all(root.join(".datasafe")).unwrap();
        std::fs::create_dir_all(root.join("mirror")).unwrap();
        std::fs::write(root.join("a.txt"), "x").unwrap();
        std::fs::write(root.join("b/inner/c.tmp"), "x").unwrap();
        std::fs::write(root.join(".datasafe/index.db"), "x").unwrap();
        std::fs::write(root.join("mirror/x"), "x").unwrap();
        let rules = ScanRules {
            excludes: Excludes::new(&["*.tmp"]).unwrap(),
            skip: vec![PathBuf::from("mirror")],
        };
        let got = collect(root, &rules);
        let want = [
            ("", Kind::Dir),
            ("a.txt", Kind::File),
            ("b", Kind::Dir),
            ("b/inner", Kind::Dir),
        ];
        let want: Vec<_> = want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        assert_eq!(got, want);
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_entries_not_descents() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink("..", root.join("d/up")).unwrap();
        let got = collect(root, &ScanRules::default());
        assert!(
            got.contains(&("d/up".to_string(), Kind::Symlink)),
            "{got:?}"
        );
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn scoped_walks_and_listings_stay_inside_their_scope() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/x"), "x").unwrap();
        std::fs::write(root.join("other"), "o").unwrap();
        let mut seen = Vec::new();
        walk_source(root, Path::new("a"), &ScanRules::default(), |item| {
            if let Scanned::Entry(e) = item {
                seen.push(e.rel);
            }
            ControlFlow::Continue(())
        });
        let want: Vec<PathBuf> = ["a", "a/b", "a/b/x"].iter().map(PathBuf::from).collect();
        assert_eq!(seen, want);
        let mut listed: Vec<PathBuf> = list_dest(root, Path::new("a"), false)
            .into_iter()
            .map(|i| i.rel)
            .collect();
        listed.sort();
        assert_eq!(listed, want);
        let rules = ScanRules {
            excludes: Excludes::new(&["b"]).unwrap(),
            skip: vec![],
        };
        assert!(rules.covers(Path::new("a/b/x")));
        let mut none = 0;
        walk_source(root, Path::new("a/b"), &rules, |_| {
            none += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(none, 0);
    }
}
