//! Which relative paths take part in a mirror: the user's `--exclude` globs, matched
//! against the whole path relative to SRC and against the entry's own name, so
//! `.stfolder` excludes that folder anywhere and `docs/*.md` only below `docs`. A
//! pattern that starts with `/` is anchored at SRC's root, as in rsync and gitignore:
//! `/docs` is `SRC/docs` only, never `SRC/a/docs`.
//!
//! Excluded paths are neither copied nor deleted in DST (rsync's and Syncthing's rule:
//! an excluded file on the receiving side is protected).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::Path;

/// A compiled set of exclude patterns.
#[derive(Clone, Debug, Default)]
pub struct Excludes {
    set: Option<GlobSet>,
    /// Per pattern (in `set`'s order): anchored at the root (`/docs`), so it is matched
    /// against the whole relative path only, never against a name alone.
    anchored: Vec<bool>,
    /// The patterns as given, to compare two sets (a config reload) and show them.
    patterns: Vec<String>,
}

impl PartialEq for Excludes {
    fn eq(&self, other: &Excludes) -> bool {
        self.patterns == other.patterns
    }
}

/// A pattern that does not compile, with the pattern and globset's reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid --exclude pattern {pattern:?}: {reason}")]
pub struct BadPattern {
    /// The pattern as the user wrote it.
    pub pattern: String,
    /// What globset found wrong.
    pub reason: String,
}

impl Excludes {
    /// Compiles the patterns; `*` does not cross `/`, `**` does (gitignore's reading); a
    /// leading `/` anchors a pattern at the root.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, BadPattern> {
        if patterns.is_empty() {
            return Ok(Self::default());
        }
        let mut builder = GlobSetBuilder::new();
        let mut anchored = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = p.as_ref();
            // Relative paths never start with `/`: the slash only says "from the root".
            let (rooted, rest) = match p.strip_prefix('/') {
                Some(rest) => (true, rest),
                None => (false, p),
            };
            // A trailing slash ("build/") means the same folder as "build".
            let trimmed = rest.trim_end_matches('/');
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| BadPattern {
                    pattern: p.to_string(),
                    reason: e.kind().to_string(),
                })?;
            builder.add(glob);
            anchored.push(rooted);
        }
        let set = builder.build().map_err(|e| BadPattern {
            pattern: patterns
                .iter()
                .map(|p| p.as_ref())
                .collect::<Vec<_>>()
                .join(" "),
            reason: e.to_string(),
        })?;
        Ok(Self {
            set: Some(set),
            anchored,
            patterns: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
        })
    }

    /// True if there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.set.is_none()
    }

    /// True if `rel` (relative to the mirror root) or its last component matches.
    pub fn is_excluded(&self, rel: &Path) -> bool {
        let Some(set) = &self.set else { return false };
        if set.is_match(rel) {
            return true;
        }
        match rel.file_name() {
            Some(name) => set
                .matches(Path::new(name))
                .into_iter()
                .any(|i| !self.anchored.get(i).copied().unwrap_or(false)),
            None => false,
        }
    }

    /// True if `rel` or any of its ancestors is excluded (for paths seen without a walk,
    /// such as names listed in DST).
    pub fn covers(&self, rel: &Path) -> bool {
        self.set.is_some()
            && rel
                .ancestors()
                .any(|a| !a.as_os_str().is_empty() && self.is_excluded(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_names_anywhere_and_paths_from_the_root() {
        let ex = Excludes::new(&[".stfolder", "*.tmp", "docs/*.md", "build/"]).unwrap();
        let cases = [
            (".stfolder", true),
            ("a/b/.stfolder", true),
            ("x.tmp", true),
            ("deep/er/x.tmp", true),
            ("x.tmpl", false),
            ("docs/a.md", true),
            ("docs/sub/a.md", false),
            ("other/docs/a.md", false),
            ("build", true),
            ("src/build", true),
            ("readme.md", false),
        ];
        for (path, want) in cases {
            assert_eq!(ex.is_excluded(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn a_leading_slash_anchors_at_the_root() {
        let ex = Excludes::new(&["/docs", "/build/", "/*.log", "cache"]).unwrap();
        let cases = [
            ("docs", true),
            ("a/docs", false),
            ("a/b/docs", false),
            ("docs2", false),
            ("build", true),
            ("src/build", false),
            ("x.log", true),
            ("a/x.log", false),
            ("cache", true),
            ("a/cache", true),
        ];
        for (path, want) in cases {
            assert_eq!(ex.is_excluded(Path::new(path)), want, "{path}");
        }
        // Everything under an anchored folder is covered; a namesake deeper down is not.
        assert!(ex.covers(Path::new("docs/a/b.md")));
        assert!(!ex.covers(Path::new("a/docs/b.md")));
    }

    #[test]
    fn covers_looks_at_ancestors() {
        let ex = Excludes::new(&["cache"]).unwrap();
        assert!(ex.covers(Path::new("a/cache/b/c.txt")));
        assert!(!ex.covers(Path::new("a/b/c.txt")));
        assert!(!Excludes::default().covers(Path::new("cache")));
    }

    #[test]
    fn bad_pattern_names_itself() {
        let err = Excludes::new(&["a[b"]).unwrap_err();
        assert!(err.to_string().contains("a[b"), "{err}");
    }
}
