//! Owners, extended attributes and ACLs on the read side: which owner a recorded one
//! stands for on this machine ([`Owners`]: by name through the index's `owners` table,
//! as rsync maps them, or by number with `--numeric-ids`; also the names an archive
//! writes beside the numbers), and setting them on what `restore` writes ([`Giver`]).
//!
//! Restore gives owners only when it runs as root, and says nothing otherwise (a user
//! cannot give a file away; rsync is as quiet). Attributes are set one by one: a user
//! may set `user.*` and the ACLs of their own files but not `trusted.*`, so what cannot
//! be set is said once per restore, naming a path, and the rest is still set. Choosing
//! which attributes a path gets (the live record's, never a version's) is `restore`'s
//! job, not this file's.

use crate::index::OwnerNames;
use crate::model::{Attrs, Owner, Xattrs};
use crate::output::names::{esc, io_message};
use crate::platform;
use crate::store::local::beneath::Dir;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

/// The recorded owners as numbers of this machine, and the names they had.
#[derive(Debug, Default)]
pub struct Owners {
    /// The names the index recorded for its numbers (on the machine that wrote it).
    names: OwnerNames,
    /// Keep the recorded numbers (`--numeric-ids`).
    numeric: bool,
    /// Recorded user id → this machine's, once looked up.
    users: HashMap<u32, u32>,
    /// Recorded group id → this machine's, once looked up.
    groups: HashMap<u32, u32>,
}

impl Owners {
    /// Maps owners through `names` (unless `numeric`).
    pub fn new(names: OwnerNames, numeric: bool) -> Owners {
        Owners {
            names,
            numeric,
            ..Owners::default()
        }
    }

    /// The owner a recorded one stands for here: the user and group of the same names,
    /// where this machine has them; else the recorded numbers (as rsync does).
    pub fn here(&mut self, recorded: Owner) -> Owner {
        if self.numeric {
            return recorded;
        }
        let names = &self.names;
        let uid = *self.users.entry(recorded.uid).or_insert_with(|| {
            names
                .users
                .get(&recorded.uid)
                .and_then(|name| platform::uid_named(name))
                .unwrap_or(recorded.uid)
        });
        let gid = *self.groups.entry(recorded.gid).or_insert_with(|| {
            names
                .groups
                .get(&recorded.gid)
                .and_then(|name| platform::gid_named(name))
                .unwrap_or(recorded.gid)
        });
        Owner { uid, gid }
    }

    /// The recorded names of a recorded owner's user and group, if the index has them.
    pub fn names_of(&self, recorded: Owner) -> (Option<&str>, Option<&str>) {
        (
            self.names.users.get(&recorded.uid).map(String::as_str),
            self.names.groups.get(&recorded.gid).map(String::as_str),
        )
    }
}

/// The user and group names an archive writes beside an owner's numbers: those a
/// mirror's index recorded, or (a plain folder) this machine's, looked up once each.
#[derive(Debug, Default)]
pub struct Naming {
    /// Look names up on this machine (a plain folder); else only what was recorded.
    here: bool,
    /// User id → name (`None`: it has none).
    users: Mutex<HashMap<u32, Option<String>>>,
    /// Group id → name.
    groups: Mutex<HashMap<u32, Option<String>>>,
}

impl Naming {
    /// The names a mirror's index recorded.
    pub fn recorded(names: OwnerNames) -> Naming {
        let some = |m: HashMap<u32, String>| m.into_iter().map(|(k, v)| (k, Some(v))).collect();
        Naming {
            here: false,
            users: Mutex::new(some(names.users)),
            groups: Mutex::new(some(names.groups)),
        }
    }

    /// This machine's names (a plain folder's owners are this machine's numbers).
    pub fn here() -> Naming {
        Naming {
            here: true,
            ..Naming::default()
        }
    }

    /// The names of `owner`'s user and group, where known.
    pub fn names(&self, owner: Owner) -> (Option<String>, Option<String>) {
        let look =
            |map: &Mutex<HashMap<u32, Option<String>>>, id, find: fn(u32) -> Option<String>| {
                // A poisoned map only lost a cached name: look it up again.
                let mut map = map
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match self.here {
                    true => map.entry(id).or_insert_with(|| find(id)).clone(),
                    false => map.get(&id).cloned().flatten(),
                }
            };
        (
            look(&self.users, owner.uid, platform::user_name),
            look(&self.groups, owner.gid, platform::group_name),
        )
    }
}

/// Gives restored names their recorded owner (as root) and attributes, saying once
/// what could not be set.
#[derive(Debug)]
pub struct Giver {
    /// Owners to give, when run as root; `None` otherwise (or once refused).
    owners: Option<Owners>,
    /// An attribute was refused already (said once).
    refused_xattr: bool,
}

impl Giver {
    /// Gives owners through `owners` if this process runs as root.
    pub fn new(owners: Owners) -> Giver {
        Giver {
            owners: platform::is_root().then_some(owners),
            refused_xattr: false,
        }
    }

    /// Owner, then attributes, on an open file (a temp file not yet renamed; its mode
    /// and mtime are set after this: a change of owner clears set-user-id bits).
    pub fn on_file(&mut self, file: &std::fs::File, attrs: &Attrs, shown: &Path) {
        if let Some(owner) = self.owner(attrs) {
            let result = platform::set_owner_file(file, owner);
            self.owner_result(result, shown);
        }
        self.xattrs(file.as_fd(), attrs, shown);
    }

    /// Owner, then attributes, on the folder `dir` itself.
    pub fn on_folder(&mut self, dir: &Dir, attrs: &Attrs, shown: &Path) {
        if let Some(owner) = self.owner(attrs) {
            let result = dir.set_owner(OsStr::new(""), owner);
            self.owner_result(result, shown);
        }
        self.xattrs(dir.as_fd(), attrs, shown);
    }

    /// The owner of the symlink `name` in `dir` (never what it points to). A symlink's
    /// attributes are not set: Linux allows no `user.*` on links.
    pub fn on_link(&mut self, dir: &Dir, name: &OsStr, attrs: &Attrs, shown: &Path) {
        if let Some(owner) = self.owner(attrs) {
            let result = dir.set_owner(name, owner);
            self.owner_result(result, shown);
        }
    }

    /// The owner to give, if owners are given and one was recorded.
    fn owner(&mut self, attrs: &Attrs) -> Option<Owner> {
        let recorded = attrs.owner?;
        Some(self.owners.as_mut()?.here(recorded))
    }

    /// Says a failed change of owner: a refusal of the kind itself (a filesystem
    /// without owners, root squashed) once, and owners are given no more.
    fn owner_result(&mut self, result: io::Result<()>, shown: &Path) {
        let Err(e) = result else { return };
        let whole = matches!(
            e.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
        ) || e.raw_os_error().is_some_and(platform::is_not_supported);
        if whole {
            self.owners = None;
            log::warn!(
                "owners cannot be given in this TARGET ({}: {}); the files keep this user's",
                esc(shown),
                io_message(&e)
            );
        } else {
            log::warn!("cannot give {} its owner: {}", esc(shown), io_message(&e));
        }
    }

    /// Sets each recorded attribute on `fd`; the first that cannot be set is said
    /// (once per restore) and the others are still set.
    fn xattrs(&mut self, fd: std::os::fd::BorrowedFd<'_>, attrs: &Attrs, shown: &Path) {
        let Some(xattrs) = attrs.xattrs.as_deref() else {
            return;
        };
        for (name, value) in &xattrs.0 {
            if let Err(e) = set_xattr(fd, name, value)
                && !std::mem::replace(&mut self.refused_xattr, true)
            {
                log::warn!(
                    "cannot set the extended attribute {} on {}: {} (others that could not be \
                     set are not said again; restore as root to set them all)",
                    esc(Path::new(name)),
                    esc(shown),
                    io_message(&e)
                );
            }
        }
    }
}

/// Sets one attribute on an open file or folder.
fn set_xattr(fd: std::os::fd::BorrowedFd<'_>, name: &OsStr, value: &[u8]) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        Ok(rustix::fs::fsetxattr(
            fd,
            name,
            value,
            rustix::fs::XattrFlags::empty(),
        )?)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (fd, name, value);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "extended attributes are restored on Linux only",
        ))
    }
}

/// A POSIX ACL as Linux keeps it in `system.posix_acl_access`/`_default` (a version,
/// then per entry a tag, permission bits and an id, little-endian) in the text form
/// `getfacl` prints and GNU tar writes as `SCHILY.acl.access` (named users and groups
/// by number: a number is what the ACL holds). `None` for bytes that are no ACL.
pub fn acl_text(bytes: &[u8]) -> Option<String> {
    let (version, mut rest) = bytes.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != 2 {
        return None;
    }
    let mut text = String::new();
    while !rest.is_empty() {
        let (entry, more) = rest.split_first_chunk::<8>()?;
        rest = more;
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let perm = u16::from_le_bytes([entry[2], entry[3]]);
        let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        let who = match tag {
            0x01 => "user:".to_string(),
            0x02 => format!("user:{id}"),
            0x04 => "group:".to_string(),
            0x08 => format!("group:{id}"),
            0x10 => "mask:".to_string(),
            0x20 => "other:".to_string(),
            _ => return None,
        };
        let bit = |b: u16, c: char| if perm & b != 0 { c } else { '-' };
        text.push_str(&format!(
            "{who}:{}{}{}\n",
            bit(4, 'r'),
            bit(2, 'w'),
            bit(1, 'x')
        ));
    }
    Some(text)
}

/// The attribute names in `xattrs`, for a message.
pub fn names(xattrs: &Xattrs) -> String {
    let names: Vec<String> = xattrs
        .0
        .iter()
        .map(|(n, _)| esc(Path::new(n)).to_string())
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_read_as_getfacl_writes_them() {
        // setfacl -m u:65534:rw: user::rw-, user:65534:rw-, group::r--, mask::rw-,
        // other::r-- (what Linux stores in system.posix_acl_access).
        let mut bytes = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 6, 65534),
            (4, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            bytes.extend_from_slice(&tag.to_le_bytes());
            bytes.extend_from_slice(&perm.to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            acl_text(&bytes).as_deref(),
            Some("user::rw-\nuser:65534:rw-\ngroup::r--\nmask::rw-\nother::r--\n")
        );
        assert_eq!(acl_text(&bytes[..7]), None);
        assert_eq!(acl_text(b"\x01\0\0\0"), None);
    }

    #[test]
    fn owners_map_by_name_fall_back_to_the_number_and_keep_numbers_when_asked() {
        let mut names = OwnerNames::default();
        // root is called root everywhere; the other names exist nowhere.
        names.users.insert(4242, "root".to_string());
        names.users.insert(77, "no-such-user-datasafe".to_string());
        names.groups.insert(4343, "root".to_string());
        let mut by_name = Owners::new(names, false);
        let recorded = Owner {
            uid: 4242,
            gid: 4343,
        };
        assert_eq!(by_name.here(recorded), Owner { uid: 0, gid: 0 });
        assert_eq!(by_name.names_of(recorded), (Some("root"), Some("root")));
        let unknown = Owner { uid: 77, gid: 78 };
        assert_eq!(by_name.here(unknown), unknown);
        let mut numeric = Owners::new(by_name.names, true);
        assert_eq!(numeric.here(recorded), recorded);
    }
}
