//! Owners, groups, extended attributes and ACLs on what DST holds, behind
//! [`Executor::run`]: set on a temp file before it is installed (so a name never shows
//! the wrong owner or misses its ACL), or on a name already there when only they
//! changed. What the store cannot keep (owners as a user, attributes on a filesystem
//! without them) is said once per run and recorded in the index all the same, so a
//! `restore` to a folder that can keep them gives them back.

use super::{Executor, OpError};
use crate::model::{Attrs, Kind};
use crate::output::names::{esc, io_message};
use crate::platform;
use crate::store::TempFile;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// What this run sets on DST beyond content, mode and mtime.
#[derive(Debug, Default)]
pub(super) struct AttrsPolicy {
    /// Give names their source owner (run as root, into a store that keeps owners);
    /// turned off for the rest of the run once the store refuses.
    owners: AtomicBool,
    /// The attributes kept, where the store keeps them; off once the store refuses.
    kept: crate::model::Kept,
    xattrs: AtomicBool,
    /// Owners given this run (set without a refusal).
    given: std::sync::atomic::AtomicU64,
    /// Run as root: owners are the mirror's to keep. A user's run records none (its
    /// names are the user's whatever the source's owner), so a later run as root finds
    /// them unrecorded and gives them.
    wanted: bool,
}

impl AttrsPolicy {
    /// Owners when `owners` (root) and the store keeps them; the attributes `kept`
    /// where it keeps them. Said once when the user asked for what the store cannot do.
    pub(super) fn new(
        owners: bool,
        kept: crate::model::Kept,
        caps: &crate::store::Caps,
        dst: &Path,
    ) -> AttrsPolicy {
        if kept.any() && !caps.xattrs {
            log::warn!(
                "{} keeps no extended attributes or ACLs: they are recorded in the index \
                 only (a restore to a local folder gives them back)",
                esc(dst)
            );
        }
        if owners && !caps.owners {
            log::info!(
                "{} keeps no owners: they are recorded in the index only (a restore as root \
                 gives them back)",
                esc(dst)
            );
        }
        AttrsPolicy {
            owners: AtomicBool::new(owners && caps.owners),
            kept,
            xattrs: AtomicBool::new(kept.any() && caps.xattrs),
            given: Default::default(),
            wanted: owners,
        }
    }
}

impl Executor {
    /// True while owners are given to what is written.
    pub fn sets_owners(&self) -> bool {
        self.attrs.owners.load(Ordering::Relaxed)
    }

    /// True while attributes are set on what is written (the pair keeps some and DST
    /// did not refuse them).
    pub fn sets_xattrs(&self) -> bool {
        self.attrs.xattrs.load(Ordering::Relaxed)
    }

    /// How many owners were given so far.
    pub fn owners_given(&self) -> u64 {
        self.attrs.given.load(Ordering::Relaxed)
    }

    /// Gives a temp file the source's owner and attributes, before its mode and mtime
    /// are set. Returns what was set, for the index (a later pass tries again what was
    /// not). A store that refuses the kind is said once and not asked again; an
    /// attribute refused for this file alone is said and left out; any other failure
    /// (a lost connection, a full disk) fails the write, as a failed chunk of content
    /// would.
    pub(super) fn attrs_on_temp(
        &self,
        temp: &mut dyn TempFile,
        attrs: &Attrs,
        shown: &Path,
    ) -> Result<Attrs, OpError> {
        let mut done = attrs.clone();
        if !self.attrs.wanted {
            done.owner = None;
        }
        if let Some(owner) = attrs.owner
            && self.sets_owners()
        {
            match temp.set_owner(owner) {
                Ok(()) => {
                    self.attrs.given.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self
                    .owner_refused(&e, shown)
                    .map_err(OpError::io("setting the owner of", shown))?,
            }
        }
        if let Some(xattrs) = &attrs.xattrs
            && self.attrs.xattrs.load(Ordering::Relaxed)
            && let Err(e) = temp.set_xattrs(xattrs)
            && !self.xattrs_refused(&e, shown)
        {
            done.xattrs = None;
        }
        Ok(done)
    }

    /// Sets the source's owner and attributes on `name` (a `kind` already in DST), as
    /// [`Executor::attrs_on_temp`] does on a temp file. `false` if no `kind` is there
    /// any more.
    pub(super) fn attrs_on_name(
        &self,
        name: &Path,
        kind: Kind,
        attrs: &Attrs,
    ) -> Result<(bool, Attrs), OpError> {
        let mut done = attrs.clone();
        if !self.attrs.wanted {
            done.owner = None;
        }
        let shown = self.shown(name);
        if let Some(owner) = attrs.owner
            && self.sets_owners()
        {
            match self.store.set_owner(name, kind, owner) {
                Ok(true) => {
                    self.attrs.given.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => return Ok((false, done)),
                Err(e) => self
                    .owner_refused(&e, &shown)
                    .map_err(OpError::io("setting the owner of", &shown))?,
            }
        }
        if kind != Kind::Symlink && self.attrs.xattrs.load(Ordering::Relaxed) {
            match self
                .store
                .set_xattrs(name, kind, attrs.xattrs(), &self.attrs.kept)
            {
                Ok(true) => {}
                Ok(false) => return Ok((false, done)),
                Err(e) => {
                    if !self.xattrs_refused(&e, &shown) {
                        done.xattrs = None;
                    }
                }
            }
        }
        Ok((true, done))
    }

    /// An owner the store would not set. Not permitted (the store's user is not root,
    /// a filesystem without owners) or not supported: every other name would be refused
    /// the same way, so owners are said once and not set again this run (the index
    /// keeps the source's, as for a store without owners). Anything else is the
    /// caller's error.
    fn owner_refused(&self, err: &io::Error, shown: &Path) -> io::Result<()> {
        let whole = matches!(
            err.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
        ) || err.raw_os_error().is_some_and(platform::is_not_supported);
        if !whole {
            return Err(io::Error::new(err.kind(), io_message(err)));
        }
        if self.attrs.owners.swap(false, Ordering::Relaxed) {
            log::warn!(
                "owners cannot be set in {} ({}): they are recorded in the index only",
                esc(shown),
                io_message(err)
            );
        }
        Ok(())
    }

    /// Attributes the store would not set. Not supported by DST's filesystem: said once,
    /// not asked again this run, counted as kept (the index has them). Anything else (a
    /// `security.*` label this process may not set, a value too big for the
    /// filesystem) is said for this name, whose content is mirrored all the same, and
    /// returns false: the index leaves them out, so the next pass tries again.
    fn xattrs_refused(&self, err: &io::Error, shown: &Path) -> bool {
        let whole = err.kind() == io::ErrorKind::Unsupported
            || err.raw_os_error().is_some_and(platform::is_not_supported);
        if whole {
            if self.attrs.xattrs.swap(false, Ordering::Relaxed) {
                log::warn!(
                    "extended attributes cannot be set in {} ({}): they are recorded in the \
                     index only",
                    esc(shown),
                    io_message(err)
                );
            }
            return true;
        }
        log::error!(
            "setting extended attributes on {}: {}",
            esc(shown),
            io_message(err)
        );
        false
    }
}
