//! What a run tells people: one log line per operation (and the detail line log files
//! keep), the progress bar on a terminal, and the summary at the end in its fixed form
//! ("Backup completed at …, Duration: … seconds, Files backed up: N") plus JSON.

use crate::engine::exec::{Done, Outcome};
use crate::engine::plan::Action;
use crate::engine::plan::Changed;
use crate::model::Stored;
use crate::model::{Kind, Record};
use crate::output::logging::{self, DETAIL, SUMMARY};
use crate::output::names::{count_of, esc, human_bytes};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The counts of one run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Files (and symlinks) written to DST.
    pub copied: u64,
    /// Files the mirror held that were changed: new content (these count in `copied`
    /// too) or only a new mode or mtime.
    pub updated: u64,
    /// Files and folders moved inside DST because they were moved in SRC.
    pub renamed: u64,
    /// Files removed from DST (a folder counts the files in it).
    pub deleted: u64,
    /// Files already current.
    pub unchanged: u64,
    /// Paths that failed (the rest of the run went on).
    pub failed: u64,
    /// FIFOs, sockets and devices left out.
    pub skipped: u64,
    /// Folders created.
    pub dirs_created: u64,
    /// Source bytes copied.
    pub bytes_copied: u64,
    /// Deletions the guard held back (an emptied source, a mass delete).
    pub held_deletions: u64,
    /// Old copies kept as versions.
    pub versions_kept: u64,
    /// Versions retention removed.
    pub versions_pruned: u64,
    /// Files still being written while they were copied (copied again later).
    pub unsettled: u64,
    /// Wall time of the run.
    pub duration_s: f64,
    /// Nothing was written (`--dry-run`).
    pub dry_run: bool,
    /// Stopped by Ctrl-C or SIGTERM.
    pub interrupted: bool,
    /// At least one failure was a full disk.
    pub no_space: bool,
    /// Files that failed because DST could not be reached (only the first is said).
    #[serde(skip)]
    pub unreachable: u64,
    /// Per-pair counts, when several pairs ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<PairCounts>,
    /// The last path mirrored and when (for `status`).
    #[serde(skip)]
    pub last_change: Option<(String, chrono::DateTime<chrono::Local>)>,
    /// The last error (for `status`).
    #[serde(skip)]
    pub last_error: Option<String>,
    /// The name in DST the last error was about: mirroring it later clears the error.
    #[serde(skip)]
    pub last_error_name: Option<PathBuf>,
}

/// One pair's counts in a run of several.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PairCounts {
    /// The pair's name.
    pub name: String,
    /// Its counts.
    #[serde(flatten)]
    pub summary: Summary,
}

impl Summary {
    /// Adds one pair's counts to these totals; with `named`, prints the pair's line and
    /// keeps its counts for the JSON.
    pub fn add(&mut self, name: &str, pair: Summary, named: bool) {
        self.copied += pair.copied;
        self.updated += pair.updated;
        self.renamed += pair.renamed;
        self.deleted += pair.deleted;
        self.unchanged += pair.unchanged;
        self.failed += pair.failed;
        self.skipped += pair.skipped;
        self.dirs_created += pair.dirs_created;
        self.bytes_copied += pair.bytes_copied;
        self.held_deletions += pair.held_deletions;
        self.versions_kept += pair.versions_kept;
        self.versions_pruned += pair.versions_pruned;
        self.unsettled += pair.unsettled;
        self.no_space |= pair.no_space;
        self.unreachable += pair.unreachable;
        if named {
            let line = format!(
                "pair {name}: Files backed up: {}, Updated: {}, Renamed: {}, Deleted: {}, Unchanged: {}, Failed: {}, Bytes copied: {}",
                pair.copied,
                pair.updated,
                pair.renamed,
                pair.deleted,
                pair.unchanged,
                pair.failed,
                pair.bytes_copied
            );
            logging::clear_progress();
            logging::print_line(false, &line);
            log::info!(target: SUMMARY, "{line}");
            self.pairs.push(PairCounts {
                name: name.to_string(),
                summary: pair,
            });
        }
    }

    /// Counts one outcome and logs its line.
    pub fn record(&mut self, outcome: &Outcome, src: &Path, dst: &Path) {
        match outcome {
            Outcome::Stored { name, .. } | Outcome::Renamed { to: name, .. } => {
                self.last_change = Some((esc(name).to_string(), chrono::Local::now()));
                self.clear_error_of(name);
            }
            Outcome::Deleted { name, .. } => {
                self.last_change = Some((esc(name).to_string(), chrono::Local::now()));
                self.clear_error_of(name);
            }
            Outcome::Same { name, .. } => self.clear_error_of(name),
            Outcome::Failed { error, name, .. } => {
                self.last_error = Some(error.clone());
                self.last_error_name = Some(name.clone());
            }
            Outcome::Interrupted { .. }
            | Outcome::Vanished { .. }
            | Outcome::Unsettled { .. }
            | Outcome::Known { .. } => {}
        }
        match outcome {
            Outcome::Stored {
                done,
                name,
                record,
                bytes,
            } => {
                let rel = record.stored.source_of(name);
                match done {
                    Done::Copied | Done::Gzipped => {
                        self.copied += 1;
                        self.bytes_copied += bytes;
                        let verb = if *done == Done::Gzipped {
                            "gzipped"
                        } else {
                            "copied"
                        };
                        log::info!("{verb} {} ({})", esc(&rel), human_bytes(*bytes));
                        let sha = record.sha256.map(|d| d.to_string()).unwrap_or_default();
                        log::info!(
                            target: DETAIL,
                            "Backed up file: {} -> {} | Checksum: {sha} | Permissions: {:o}",
                            esc(&src.join(&rel)),
                            esc(&dst.join(name)),
                            record.meta.mode
                        );
                    }
                    Done::Updated(changed) => {
                        self.updated += 1;
                        log::info!("updated {} ({})", esc(&rel), what_changed(changed, record));
                    }
                    Done::Mkdir => {
                        self.dirs_created += 1;
                        log::info!("created {}/", esc(&rel));
                    }
                    Done::HardLinked => {
                        self.copied += 1;
                        log::info!("hard-linked {}", esc(&rel));
                        let sha = record.sha256.map(|d| d.to_string()).unwrap_or_default();
                        log::info!(
                            target: DETAIL,
                            "Backed up file: {} -> {} (hard link) | Checksum: {sha} | Permissions: {:o}",
                            esc(&src.join(&rel)),
                            esc(&dst.join(name)),
                            record.meta.mode
                        );
                    }
                    Done::Linked => {
                        self.copied += 1;
                        let target = record.target.as_deref().unwrap_or(Path::new(""));
                        log::info!("linked {} -> {}", esc(&rel), esc(target));
                    }
                }
            }
            Outcome::Renamed { from, to, .. } => {
                self.renamed += 1;
                log::info!("renamed {} -> {}", esc(from), esc(to));
            }
            Outcome::Same { name, .. } => {
                self.unchanged += 1;
                log::debug!("unchanged {} (same content)", esc(name));
            }
            Outcome::Deleted {
                name,
                kind,
                files,
                superseded,
            } => {
                if *files == 0 && *kind != Kind::Dir {
                    return; // already gone: nothing happened
                }
                if *superseded {
                    log::debug!("removed {} (now stored in the other form)", esc(name));
                    return;
                }
                self.record_deleted(name, *kind, *files);
            }
            // Counted as unchanged by the pass that found it.
            Outcome::Known { .. } => {}
            Outcome::Unsettled {
                path, installed, ..
            } => {
                self.unsettled += 1;
                match installed {
                    Some((_, bytes)) => {
                        self.bytes_copied += bytes;
                        log::warn!(
                            "{} was still being written while it was copied: the mirror holds \
                             its first {} as they were, and it will be copied again",
                            esc(path),
                            human_bytes(*bytes)
                        );
                    }
                    None => log::warn!(
                        "{} was still being written while it was copied (and rewritten, not \
                         only appended to): nothing was installed (the mirror keeps what it held), and \
                         it will be copied again",
                        esc(path)
                    ),
                }
            }
            Outcome::Failed {
                error,
                no_space,
                unreachable,
                ..
            } => {
                self.failed += 1;
                self.no_space |= no_space;
                if *unreachable {
                    // A lost connection fails every file after it: one line, not one
                    // per file (the summary counts them).
                    // A warning: a pass after the connection is back writes it again
                    // (the summary says so as an error if the run ends without one).
                    self.unreachable += 1;
                    if self.unreachable == 1 {
                        log::warn!("{error}");
                    } else {
                        log::debug!("{error}");
                    }
                } else {
                    log::error!("{error}");
                }
            }
            Outcome::Interrupted { name } => log::debug!("stopped before finishing {}", esc(name)),
            Outcome::Vanished { name } => {
                log::debug!(
                    "{} was gone from the source before it was copied",
                    esc(name)
                );
            }
        }
    }

    /// Counts and logs files removed from DST: `name` (a folder with `files` in it).
    pub fn record_deleted(&mut self, name: &Path, kind: Kind, files: u64) {
        self.deleted += files;
        if kind == Kind::Dir {
            log::info!("deleted {}/ ({})", esc(name), count_of(files, "file"));
        } else {
            log::info!("deleted {}", esc(name));
        }
    }

    /// Forgets the last error if it was about `name`, which is now mirrored.
    fn clear_error_of(&mut self, name: &Path) {
        if self.last_error_name.as_deref() == Some(name) {
            self.last_error = None;
            self.last_error_name = None;
        }
    }

    /// Prints and logs a `--dry-run` line for an action and counts it as if done;
    /// `replaces` says a copy would write new content over a file the mirror holds.
    pub fn record_planned(&mut self, action: &Action, replaces: bool) {
        let (verb, rel) = match action {
            Action::Copy { entry, stored, .. } => {
                self.copied += 1;
                self.bytes_copied += entry.meta.size;
                let verb = if replaces {
                    self.updated += 1;
                    "update"
                } else if *stored == Stored::Gzip {
                    "gzip"
                } else {
                    "copy"
                };
                (verb, entry.rel.clone())
            }
            Action::Compare { entry, .. } => ("compare", entry.rel.clone()),
            Action::Link { entry, .. } => {
                self.copied += 1;
                ("link", entry.rel.clone())
            }
            Action::SetMeta { entry, .. } => {
                self.updated += 1;
                ("update", entry.rel.clone())
            }
            Action::Mkdir { entry } => {
                self.dirs_created += 1;
                ("mkdir", entry.rel.clone())
            }
            Action::Symlink { entry } => {
                self.copied += 1;
                ("symlink", entry.rel.clone())
            }
            Action::Rename { from, to, .. } => {
                self.renamed += 1;
                let line = format!("rename {} -> {}", esc(from), esc(to));
                logging::print_line(false, &line);
                return;
            }
            Action::Delete {
                name, superseded, ..
            } => {
                if !*superseded {
                    self.deleted += 1;
                }
                ("delete", name.clone())
            }
            // Only the index learns it: nothing to print.
            Action::Record { .. } => return,
        };
        logging::print_line(false, &format!("{verb} {}", esc(&rel)));
    }

    /// Prints the summary on stdout (and JSON with `json`), and logs it to log files.
    /// `word` says how the run ended ("completed", "interrupted", "stopped").
    pub fn finish(&mut self, started: Instant, json: bool, word: &str) {
        self.duration_s = started.elapsed().as_secs_f64();
        let now = crate::output::now();
        let first = format!(
            "Backup {word} at {now}, Duration: {:.2} seconds, Files backed up: {}",
            self.duration_s, self.copied
        );
        let second = format!(
            "Updated: {}, Renamed: {}, Deleted: {}, Unchanged: {}, Failed: {}, Skipped: {}, Bytes copied: {} ({})",
            self.updated,
            self.renamed,
            self.deleted,
            self.unchanged,
            self.failed,
            self.skipped,
            self.bytes_copied,
            human_bytes(self.bytes_copied)
        );
        logging::clear_progress();
        if self.dry_run {
            logging::print_line(false, "dry run: nothing was changed");
        }
        if self.no_space {
            log::error!("the destination ran out of space; free some and run again");
        }
        if self.unreachable > 0 {
            log::error!(
                "{} not written: the destination could not be reached (see above); run \
                 again once it can be",
                crate::output::names::count_of(self.unreachable, "file")
            );
        }
        if self.held_deletions > 0 {
            log::warn!(
                "{} held back by the deletion guard (see above); nothing was lost",
                crate::output::names::count_of(self.held_deletions, "deletion")
            );
        }
        logging::print_line(false, &first);
        logging::print_line(false, &second);
        log::info!(target: SUMMARY, "{first}");
        log::info!(target: SUMMARY, "{second}");
        if json {
            let line =
                serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            logging::print_line(false, &line);
        }
    }
}

/// A spinner with counts on stderr, only when stderr is a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    last: Instant,
}

impl Progress {
    /// Shows a progress line if stderr is a terminal and `show` is set.
    pub fn start(show: bool) -> Progress {
        let bar = (show && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            logging::set_progress(bar.clone());
            bar
        });
        Progress {
            bar,
            last: Instant::now(),
        }
    }

    /// Shows the line `message` makes (at most a few times a second; `message` is not
    /// called when no progress line is showing).
    pub fn show(&mut self, message: impl FnOnce() -> String) {
        let Some(bar) = &self.bar else { return };
        if self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        bar.set_message(message());
    }

    /// Updates the counts (at most a few times a second).
    pub fn update(&mut self, scanned: u64, summary: &Summary, started: Instant) {
        let Some(bar) = &self.bar else { return };
        if self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{} checked, {} copied, {} ({}/s)",
            count_of(scanned, "file"),
            summary.copied,
            human_bytes(summary.bytes_copied),
            human_bytes((summary.bytes_copied as f64 / secs) as u64)
        ));
    }
}

/// What a metadata update changed, as its `updated` line says it: `mode 644`, `owner
/// 1000:1000`, `extended attributes`, `ACL`, `hard links`, joined with commas; the mode
/// when nothing else tells (a time alone).
fn what_changed(changed: &Changed, now: &Record) -> String {
    let mode = format!("mode {:o}", now.meta.mode);
    let mut parts = Vec::new();
    if changed.mode {
        parts.push(mode.clone());
    }
    if changed.owner
        && let Some(owner) = now.attrs.owner
    {
        parts.push(format!("owner {}:{}", owner.uid, owner.gid));
    }
    if changed.xattrs {
        parts.push("extended attributes".to_string());
    }
    if changed.acl {
        parts.push("ACL".to_string());
    }
    if changed.links {
        parts.push("hard links".to_string());
    }
    if parts.is_empty() {
        mode
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Meta;
    use crate::model::Record;

    fn stored(name: &str) -> Outcome {
        Outcome::Stored {
            done: Done::Copied,
            name: name.into(),
            record: Record {
                kind: Kind::File,
                meta: Meta {
                    size: 1,
                    mtime: filetime::FileTime::zero(),
                    mode: 0o644,
                },
                sha256: None,
                stored: Stored::Plain,
                target: None,
                disk: None,
                attrs: Default::default(),
                link: None,
            },
            bytes: 1,
        }
    }

    #[test]
    fn an_update_says_what_changed() {
        use crate::model::{Meta, Owner};
        let now = Record {
            attrs: crate::model::Attrs {
                owner: Some(Owner {
                    uid: 1000,
                    gid: 100,
                }),
                xattrs: None,
            },
            ..Record::plain(
                Kind::File,
                Meta {
                    size: 1,
                    mtime: filetime::FileTime::from_unix_time(1, 0),
                    mode: 0o600,
                },
                Stored::Plain,
            )
        };
        let none = Changed::default();
        assert_eq!(what_changed(&none, &now), "mode 600");
        let owner = Changed {
            owner: true,
            ..none
        };
        assert_eq!(what_changed(&owner, &now), "owner 1000:100");
        let all = Changed {
            mode: true,
            owner: true,
            xattrs: true,
            acl: true,
            links: true,
        };
        assert_eq!(
            what_changed(&all, &now),
            "mode 600, owner 1000:100, extended attributes, ACL, hard links"
        );
    }

    #[test]
    fn the_last_error_clears_once_its_file_is_mirrored_and_unsettled_is_no_failure() {
        let (src, dst) = (Path::new("/s"), Path::new("/d"));
        let mut summary = Summary::default();
        summary.record(
            &Outcome::Failed {
                name: "log.txt".into(),
                error: "reading /s/log.txt: boom".into(),
                no_space: false,
                unreachable: false,
            },
            src,
            dst,
        );
        assert!(summary.last_error.is_some());
        // Another file mirrored: the error stays.
        summary.record(&stored("other.txt"), src, dst);
        assert!(summary.last_error.is_some());
        summary.record(
            &Outcome::Unsettled {
                name: "log.txt".into(),
                path: "/s/log.txt".into(),
                installed: None,
            },
            src,
            dst,
        );
        assert_eq!((summary.failed, summary.unsettled), (1, 1));
        assert!(summary.last_error.is_some());
        summary.record(&stored("log.txt"), src, dst);
        assert_eq!(summary.last_error, None);
    }
}
