//! Issue 16, "Everything rsync -aHSXA keeps": owners, extended attributes and POSIX ACLs
//! through `sync`, `watch`, `restore`, `verify` and `archive`, compared the way a user
//! would: `stat`, `getfattr -d -m -` and `getfacl` on both trees. Owners need root, so
//! these tests skip (saying why) when not run as root, or when attr/acl's tools are
//! missing.

use crate::common::faults::{NOBODY, binary_for_nobody, chown_tree, env_for_nobody};
use crate::common::watcher::{self, DEADLINE, Watcher, wait_until};
use crate::common::{TestEnv, assert_code, is_root, stderr, stdout};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::Path;
use std::process::{Command, Output};

/// True if `stat`, `getfattr`, `setfattr`, `getfacl` and `setfacl` all run here.
fn tools() -> bool {
    ["stat", "getfattr", "setfattr", "getfacl", "setfacl"]
        .iter()
        .all(|tool| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// True if this test can run (root, the tools); else says why it is skipped.
fn can_run(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: needs root (files of other owners)");
        return false;
    }
    if !tools() {
        eprintln!("skipping {test}: stat, getfattr or getfacl is missing (packages attr, acl)");
        return false;
    }
    true
}

/// Runs `tool args... path` and returns its stdout; panics with its stderr if it fails.
fn run(tool: &str, args: &[&str], path: &Path) -> String {
    let out = Command::new(tool).args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `stat -c %u:%g:%a`, `getfattr -h -d -m -` and `getfacl` (not for symlinks) say
/// of every path below `root` (not `root` itself, nor the mirror's `.datasafe`), one
/// block per path with the tools' own `# file:` lines left out.
fn attr_tree(root: &Path) -> Vec<String> {
    let mut blocks = Vec::new();
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".datasafe");
    for entry in walk {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let mut block = format!("{rel} {}", run("stat", &["-c", "%u:%g:%a"], path));
        let strip = |text: String| -> String {
            text.lines()
                .filter(|l| !l.starts_with("# file:") && !l.is_empty())
                .map(|l| format!("{l}\n"))
                .collect()
        };
        block.push_str(&strip(run("getfattr", &["-h", "-d", "-m", "-"], path)));
        if !entry.path_is_symlink() {
            block.push_str(&strip(run("getfacl", &["-n", "-p"], path)));
        }
        blocks.push(block);
    }
    blocks
}

/// Fails, showing both, unless `a` and `b` hold the same owners, modes, attributes and
/// ACLs.
fn assert_same_attrs(a: &Path, b: &Path) {
    let (left, right) = (attr_tree(a), attr_tree(b));
    assert!(
        left == right,
        "{} and {} differ:\n--- {}\n{}\n--- {}\n{}",
        a.display(),
        b.display(),
        a.display(),
        left.join(""),
        b.display(),
        right.join("")
    );
}

fn setfattr(path: &Path, name: &str, value: &str) {
    run("setfattr", &["-h", "-n", name, "-v", value], path);
}

fn setfacl(path: &Path, args: &[&str]) {
    run("setfacl", args, path);
}

fn chown(path: &Path, uid: u32, gid: u32) {
    lchown(path, Some(uid), Some(gid)).unwrap();
}

/// The tree the issue asks for: files of three owners (root, 1234, nobody), `user.*`
/// attributes on a file and a folder, an ACL with a named user, a folder with a default
/// ACL (and a file in it that inherited it), a set-user-id file of another owner (a
/// change of owner would clear the bit if it came after the mode) and a symlink of
/// another owner.
fn plant(env: &TestEnv) {
    let src = &env.src;
    env.write("a.txt", "alpha");
    env.write("sub/b.txt", "beta");
    env.write("c.txt", "gamma");
    env.write("root.txt", "root's");
    fs::create_dir(src.join("shared")).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    chown(&src.join("a.txt"), 1234, 2345);
    fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o4755)).unwrap();
    setfattr(&src.join("a.txt"), "user.color", "red");
    setfattr(&src.join("a.txt"), "user.origin", "issue 16");
    chown(&src.join("sub"), 1234, 1234);
    chown(&src.join("sub/b.txt"), NOBODY, NOBODY);
    setfattr(&src.join("sub"), "user.kind", "folder");
    setfacl(&src.join("c.txt"), &["-m", &format!("u:{NOBODY}:rw")]);
    setfacl(
        &src.join("shared"),
        &["-d", "-m", &format!("u:{NOBODY}:rx")],
    );
    env.write("shared/inherited.txt", "inherits the default ACL");
    chown(&src.join("link"), NOBODY, 1234);
}

fn restore(env: &TestEnv, target: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec!["restore".as_ref(), env.dst.as_os_str(), target.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    env.cmd(args).output().unwrap()
}

#[test]
fn sync_and_restore_give_back_owners_xattrs_and_acls() {
    if !can_run("sync_and_restore_give_back_owners_xattrs_and_acls") {
        return;
    }
    let env = TestEnv::new();
    plant(&env);
    env.sync_ok(&["--xattrs", "--acls"]);
    assert_same_attrs(&env.src, &env.dst);

    let target = env.dir.path().join("restored");
    let out = restore(&env, &target, &[]);
    assert_code(&out, 0);
    assert!(
        !stderr(&out).contains("warning"),
        "restore as root warned:\n{}",
        stderr(&out)
    );
    assert_same_attrs(&env.src, &target);

    // A tar archive of the mirror and of the folder carry them too: GNU tar restores
    // owners by name, attributes and ACLs.
    for (what, source) in [("mirror", &env.dst), ("folder", &env.src)] {
        let archive = env.dir.path().join(format!("{what}.tar"));
        let out = env
            .cmd(["archive".as_ref(), source.as_os_str(), archive.as_os_str()])
            .output()
            .unwrap();
        assert_code(&out, 0);
        let into = env.dir.path().join(format!("from-{what}-tar"));
        fs::create_dir(&into).unwrap();
        let tar = Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--acls", "-xpf"])
            .arg(&archive)
            .arg("-C")
            .arg(&into)
            .output()
            .unwrap();
        assert!(
            tar.status.success(),
            "tar -x: {}",
            String::from_utf8_lossy(&tar.stderr)
        );
        assert_same_attrs(&env.src, &into);
    }

    // A zip archive keeps the owners' numbers (Info-ZIP's Unix field, `unzip -X`).
    if Command::new("unzip")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let archive = env.dir.path().join("mirror.zip");
        let out = env
            .cmd(["archive".as_ref(), env.dst.as_os_str(), archive.as_os_str()])
            .output()
            .unwrap();
        assert_code(&out, 0);
        let into = env.dir.path().join("from-zip");
        fs::create_dir(&into).unwrap();
        let unzip = Command::new("unzip")
            .args(["-q", "-X"])
            .arg(&archive)
            .arg("-d")
            .arg(&into)
            .output()
            .unwrap();
        assert!(unzip.status.success(), "unzip -X failed");
        for rel in ["a.txt", "sub", "sub/b.txt", "c.txt", "link"] {
            let owner = |root: &Path| run("stat", &["-c", "%u:%g"], &root.join(rel));
            assert_eq!(owner(&into), owner(&env.src), "{rel}'s owner from the zip");
        }
    } else {
        eprintln!("not checking zip owners: unzip is missing");
    }
}

#[test]
fn restore_maps_owners_by_name_unless_numeric_ids() {
    if !can_run("restore_maps_owners_by_name_unless_numeric_ids") {
        return;
    }
    let env = TestEnv::new();
    plant(&env);
    env.sync_ok(&["--xattrs", "--acls"]);
    // As if the mirror was written where uid 1234 was called "nobody": here that name
    // has another number.
    let db = env.dst.join(".datasafe/index.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT OR REPLACE INTO owners (kind, id, name) VALUES ('u', 1234, 'nobody')",
        [],
    )
    .unwrap();
    drop(conn);
    let uid = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(path).unwrap().uid()
    };

    let by_name = env.dir.path().join("by-name");
    assert_code(&restore(&env, &by_name, &[]), 0);
    assert_eq!(uid(&by_name.join("a.txt")), NOBODY, "mapped by name");
    assert_eq!(uid(&by_name.join("sub")), NOBODY, "a folder too");
    // A number without a recorded name stays.
    assert_eq!(uid(&by_name.join("sub/b.txt")), NOBODY);
    assert_eq!(uid(&by_name.join("root.txt")), 0);

    let numeric = env.dir.path().join("numeric");
    assert_code(&restore(&env, &numeric, &["--numeric-ids"]), 0);
    assert_eq!(uid(&numeric.join("a.txt")), 1234, "the recorded number");
    assert_eq!(uid(&numeric.join("sub")), 1234);
    assert_same_attrs(&env.src, &numeric);
}

#[test]
fn watch_mirrors_attribute_changes_without_making_versions() {
    if !can_run("watch_mirrors_attribute_changes_without_making_versions") {
        return;
    }
    let _lock = watcher::shared();
    let env = TestEnv::new();
    plant(&env);
    let w = Watcher::ready(&env, &["--xattrs", "--acls"], "watch");
    let mirrored = || attr_tree(&env.src) == attr_tree(&env.dst);
    assert!(
        wait_until(DEADLINE, mirrored),
        "start-up pass{}",
        w.context()
    );

    setfattr(&env.src.join("a.txt"), "user.color", "blue");
    setfattr(&env.src.join("root.txt"), "user.new", "1");
    setfacl(&env.src.join("c.txt"), &["-m", "u:1234:r"]);
    chown(&env.src.join("sub/b.txt"), 4321, 4321);
    chown(&env.src.join("link"), 4321, 0);
    setfattr(&env.src.join("sub"), "user.kind", "changed");
    assert!(
        wait_until(DEADLINE, mirrored),
        "the changes were not mirrored:\n{}\n---\n{}{}",
        attr_tree(&env.src).join(""),
        attr_tree(&env.dst).join(""),
        w.context()
    );
    // Metadata only: nothing was copied, so nothing was kept as a version.
    let versions = env.dst.join(".datasafe/versions");
    let kept = fs::read_dir(&versions).map_or(0, |d| d.count());
    assert_eq!(kept, 0, "versions were made{}", w.context());
    let out = w.stdout();
    let after_start = out.split("watching for changes").nth(1).unwrap_or_default();
    assert!(
        !after_start.contains("copied"),
        "content was copied{}",
        w.context()
    );
}

#[test]
fn a_user_run_keeps_its_own_owners_and_says_nothing_of_them() {
    let test = "a_user_run_keeps_its_own_owners_and_says_nothing_of_them";
    if !can_run(test) {
        return;
    }
    let Some(env) = env_for_nobody(test) else {
        return;
    };
    env.write("a.txt", "alpha");
    env.write("sub/b.txt", "beta");
    chown_tree(&env.src, NOBODY);
    chown_tree(&env.dst, NOBODY);
    setfattr(&env.src.join("a.txt"), "user.color", "red");
    setfacl(&env.src.join("sub/b.txt"), &["-m", "u:1234:r"]);
    let home = env.dir.path().join("home");
    fs::create_dir(&home).unwrap();
    chown_tree(&home, NOBODY);
    let as_nobody = |args: &[&OsStr]| {
        Command::new("setpriv")
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(binary_for_nobody(&env))
            .args(args)
            .env("HOME", &home)
            .env("XDG_STATE_HOME", home.join(".state"))
            .current_dir(env.dir.path())
            .output()
            .unwrap()
    };
    let quiet = |out: &Output, what: &str| {
        assert_code(out, 0);
        let err = stderr(out);
        assert!(
            !err.contains("owner") && !err.contains("attribute"),
            "{what} said something of owners or attributes:\n{err}"
        );
    };
    let (src, dst) = (env.src.as_os_str(), env.dst.as_os_str());
    let out = as_nobody(&[
        "sync".as_ref(),
        "--xattrs".as_ref(),
        "--acls".as_ref(),
        src,
        dst,
    ]);
    quiet(&out, "sync");
    assert_same_attrs(&env.src, &env.dst);

    let target = env.dir.path().join("restored");
    fs::create_dir(&target).unwrap();
    chown_tree(&target, NOBODY);
    let out = as_nobody(&["restore".as_ref(), dst, target.as_os_str()]);
    quiet(&out, "restore");
    assert_same_attrs(&env.src, &target);

    // The mirror's files are the user's, as the source's: no alarm, from the user or
    // from root.
    quiet(&as_nobody(&["verify".as_ref(), dst]), "verify as the user");
    let out = env.cmd(["verify".as_ref(), dst]).output().unwrap();
    assert_code(&out, 0);
}

#[test]
fn verify_reports_a_changed_xattr_acl_or_owner_and_repair_sets_them_again() {
    if !can_run("verify_reports_a_changed_xattr_acl_or_owner_and_repair_sets_them_again") {
        return;
    }
    let env = TestEnv::new();
    plant(&env);
    env.sync_ok(&["--xattrs", "--acls"]);
    let verify = |extra: &[&str]| {
        let mut args: Vec<&OsStr> = vec!["verify".as_ref()];
        args.extend(extra.iter().map(OsStr::new));
        args.push(env.dst.as_os_str());
        env.cmd(args).output().unwrap()
    };
    assert_code(&verify(&[]), 0);

    setfattr(&env.dst.join("a.txt"), "user.color", "green");
    setfacl(&env.dst.join("shared"), &["-m", "u:1234:rwx"]);
    chown(&env.dst.join("sub/b.txt"), 4321, NOBODY);
    let out = verify(&[]);
    assert_code(&out, 1);
    let said = stdout(&out) + &stderr(&out);
    for line in [
        "damaged: a.txt (extended attributes differ from what was mirrored: user.color)",
        // An ACL entry widens the mask, which is the group's permission bits.
        "damaged: shared/ (mode is 775, the index recorded 755; extended attributes differ \
         from what was mirrored: system.posix_acl_access)",
        "damaged: sub/b.txt (owner is 4321:65534, the index recorded 65534:65534)",
    ] {
        assert!(said.contains(line), "no {line:?} in:\n{said}");
    }
    assert!(
        said.contains("--xattrs --acls"),
        "the advice drops --xattrs --acls:\n{said}"
    );

    let inodes = |names: &[&str]| -> Vec<u64> {
        names
            .iter()
            .map(|n| fs::metadata(env.dst.join(n)).unwrap().ino())
            .collect()
    };
    let before = inodes(&["a.txt", "sub/b.txt"]);
    let src = env.src.to_str().unwrap();
    let repaired = verify(&["--source", src, "--repair"]);
    assert_code(&repaired, 0);
    assert_code(&verify(&[]), 0);
    assert_same_attrs(&env.src, &env.dst);
    // Content was intact: attributes set again in place, nothing copied, no version.
    assert_eq!(inodes(&["a.txt", "sub/b.txt"]), before);
    assert!(
        !env.dst.join(".datasafe/versions").exists(),
        "a version was kept of a file whose content did not change"
    );
    assert!(
        stderr(&repaired).contains("does not have the mode, owner or attributes datasafe set"),
        "{}",
        stderr(&repaired)
    );
}

#[test]
fn sync_repair_sets_changed_owners_and_attributes_again_without_a_copy() {
    if !can_run("sync_repair_sets_changed_owners_and_attributes_again_without_a_copy") {
        return;
    }
    let env = TestEnv::new();
    plant(&env);
    env.sync_ok(&["--xattrs", "--acls"]);
    setfattr(&env.dst.join("a.txt"), "user.color", "green");
    setfattr(&env.dst.join("c.txt"), "user.planted", "by hand");
    chown(&env.dst.join("sub/b.txt"), 4321, NOBODY);
    let ino = |n: &str| fs::metadata(env.dst.join(n)).unwrap().ino();
    let before = [ino("a.txt"), ino("c.txt"), ino("sub/b.txt")];

    // A plain sync trusts the index; --repair looks at what DST holds.
    let out = env.sync_ok(&["--xattrs", "--acls", "--repair"]);
    let said = stderr(&out);
    for name in ["a.txt", "c.txt", "sub/b.txt"] {
        let line = format!(
            "{} in the destination does not have the mode, owner or attributes datasafe set; \
             setting them again",
            env.dst.join(name).display()
        );
        assert!(said.contains(&line), "no {line:?} in:\n{said}");
    }
    assert!(stdout(&out).contains("Updated: 3"), "{}", stdout(&out));
    assert!(stdout(&out).contains("Bytes copied: 0"), "{}", stdout(&out));
    assert_eq!([ino("a.txt"), ino("c.txt"), ino("sub/b.txt")], before);
    assert!(!env.dst.join(".datasafe/versions").exists());
    assert_same_attrs(&env.src, &env.dst);
    let verify = env
        .cmd(["verify".as_ref(), env.dst.as_os_str()])
        .output()
        .unwrap();
    assert_code(&verify, 0);
}

#[test]
fn a_user_restore_sets_the_attributes_it_may_and_says_once_what_it_could_not() {
    let test = "a_user_restore_sets_the_attributes_it_may_and_says_once_what_it_could_not";
    if !can_run(test) {
        return;
    }
    let Some(env) = env_for_nobody(test) else {
        return;
    };
    env.write("a.txt", "alpha");
    env.write("b.txt", "beta");
    // Root mirrors every namespace; a user may set only user.* back.
    setfattr(&env.src.join("a.txt"), "trusted.secret", "s");
    setfattr(&env.src.join("a.txt"), "user.color", "red");
    setfattr(&env.src.join("b.txt"), "trusted.other", "o");
    env.sync_ok(&["--xattrs"]);
    let target = env.dir.path().join("restored");
    fs::create_dir(&target).unwrap();
    chown_tree(&target, NOBODY);
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(binary_for_nobody(&env))
        .args(["restore".as_ref(), "--force".as_ref(), env.dst.as_os_str()])
        .arg(&target)
        .env("HOME", env.dir.path())
        .env("XDG_STATE_HOME", env.dir.path().join(".state"))
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_code(&out, 0);
    let err = stderr(&out);
    assert_eq!(
        err.matches("cannot set the extended attribute").count(),
        1,
        "said once:\n{err}"
    );
    assert!(
        err.contains("trusted.secret") && err.contains("a.txt"),
        "names the attribute and the path:\n{err}"
    );
    let color = run(
        "getfattr",
        &["-n", "user.color", "--only-values"],
        &target.join("a.txt"),
    );
    assert_eq!(color, "red", "what may be set is set");
}
