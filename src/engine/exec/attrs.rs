//! Owners, groups, extended attributes and ACLs on what DST holds, behind
//! [`Executor::run`]: set on a temp file before it is installed (so a name never shows
//! the wrong owner or misses its ACL), or on a name already there when only they
//! changed. What the store cannot keep (owners as a user, attributes on a filesystem
//! without them) is said once per run and recorded in the index all the same, so a
//! `restore` to a folder that can keep them gives them back.

use super::Executor;
use crate::model::{Attrs, Kind};
use crate::output::names::esc;
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
        }
    }
}

impl Executor {
    /// True while owners are given to what is written.
    pub(super) fn sets_owners(&self) -> bool {
        self.attrs.owners.load(Ordering::Relaxed)
    }

    /// Gives a temp file the source's owner and attributes, before its mode and mtime
    /// are set. A refusal is said (once for a store that refuses them all) and leaves
    /// the content to be installed without them: the returned attributes are what was
    /// set, for the index, so a later pass tries again.
    pub(super) fn attrs_on_temp(
        &self,
        temp: &mut dyn TempFile,
        attrs: &Attrs,
        shown: &Path,
    ) -> Attrs {
        let mut done = attrs.clone();
        if let Some(owner) = attrs.owner
            && self.attrs.owners.load(Ordering::Relaxed)
            && let Err(e) = temp.set_owner(owner)
            && !self.refused(&self.attrs.owners, &e, "owners", shown)
        {
            done.owner = None;
        }
        if let Some(xattrs) = &attrs.xattrs
            && self.attrs.xattrs.load(Ordering::Relaxed)
            && let Err(e) = temp.set_xattrs(xattrs)
            && !self.refused(&self.attrs.xattrs, &e, "extended attributes", shown)
        {
            done.xattrs = None;
        }
        done
    }

    /// Sets the source's owner and attributes on `name` (a `kind` already in DST), as
    /// [`Executor::attrs_on_temp`] does on a temp file. `Ok(false)` if no `kind` is
    /// there any more.
    pub(super) fn attrs_on_name(&self, name: &Path, kind: Kind, attrs: &Attrs) -> (bool, Attrs) {
        let mut done = attrs.clone();
        let shown = self.shown(name);
        if let Some(owner) = attrs.owner
            && self.attrs.owners.load(Ordering::Relaxed)
        {
            match self.store.set_owner(name, kind, owner) {
                Ok(true) => {}
                Ok(false) => return (false, done),
                Err(e) => {
                    if !self.refused(&self.attrs.owners, &e, "owners", &shown) {
                        done.owner = None;
                    }
                }
            }
        }
        if kind != Kind::Symlink && self.attrs.xattrs.load(Ordering::Relaxed) {
            match self
                .store
                .set_xattrs(name, kind, attrs.xattrs(), &self.attrs.kept)
            {
                Ok(true) => {}
                Ok(false) => return (false, done),
                Err(e) => {
                    if !self.refused(&self.attrs.xattrs, &e, "extended attributes", &shown) {
                        done.xattrs = None;
                    }
                }
            }
        }
        (true, done)
    }

    /// Says why `what` could not be set on `shown`. A refusal of the kind itself (not
    /// permitted, not supported by DST's filesystem) turns `on` off for the rest of the
    /// run and is said once, and counts as done (the index records the source's, as
    /// for a store that keeps none); anything else is said for this name and returns
    /// false.
    fn refused(&self, on: &AtomicBool, err: &io::Error, what: &str, shown: &Path) -> bool {
        let whole_store = matches!(
            err.kind(),
            io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
        ) || err.raw_os_error().is_some_and(platform::is_not_supported);
        if whole_store {
            if on.swap(false, Ordering::Relaxed) {
                log::warn!(
                    "{what} cannot be set in {} ({}): they are recorded in the index only",
                    esc(shown),
                    crate::output::names::io_message(err)
                );
            }
            return true;
        }
        log::error!(
            "setting {what} on {}: {}",
            esc(shown),
            crate::output::names::io_message(err)
        );
        false
    }
}
