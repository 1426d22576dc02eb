//! Hard links inside a pair (issue 16), through the real binary: names of one source
//! file are one file with several names in DST (the same groups of `st_ino`, the same
//! `st_nlink`), copied once; an edit through any name, by `sync` or under `watch`,
//! reaches every name and keeps the old content as a version of each name, all links of
//! the one old file (so `restore --at` and `archive --at` a moment before the edit give
//! every name its old content, as one file again); a name that leaves its group becomes
//! a file of its own; `--no-hard-links` copies each name; `restore` and a `tar.gz`
//! archive extracted by GNU tar give the groups back. A change of membership alone (a
//! name removed, a name added, a name renamed, a new folder of names of files DST holds)
//! copies nothing and keeps no version. No root needed.

use crate::common;

use common::dst::Dst;
use common::watcher::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Regular files under `root` (leaving out `.datasafe`) grouped by inode: each group's
/// names, sorted, with the link count the filesystem gives them. Groups of one name are
/// left out: what matters is which names share a file.
fn groups(root: &Path) -> BTreeSet<(Vec<PathBuf>, u64)> {
    let mut by_ino: BTreeMap<u64, (Vec<PathBuf>, u64)> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".datasafe")
    {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if !meta.is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
        let group = by_ino.entry(meta.ino()).or_default();
        group.0.push(rel);
        group.1 = meta.nlink();
    }
    by_ino
        .into_values()
        .filter(|(names, _)| names.len() > 1)
        .map(|(mut names, nlink)| {
            names.sort();
            (names, nlink)
        })
        .collect()
}

/// A pair (`a`, `d1/a2`), a triple across three folders (`t`, `d1/t2`, `d2/t3`) and a
/// file of its own (`s`). Returns the bytes of content there is once (pair + triple +
/// single).
fn linked_tree(env: &TestEnv) -> u64 {
    env.write("a", "pair-content");
    env.write("t", "triple-content!");
    env.write("s", "single");
    fs::create_dir_all(env.src.join("d1")).unwrap();
    fs::create_dir_all(env.src.join("d2")).unwrap();
    fs::hard_link(env.src.join("a"), env.src.join("d1/a2")).unwrap();
    fs::hard_link(env.src.join("t"), env.src.join("d1/t2")).unwrap();
    fs::hard_link(env.src.join("t"), env.src.join("d2/t3")).unwrap();
    ("pair-content".len() + "triple-content!".len() + "single".len()) as u64
}

/// The groups `linked_tree` makes, as [`groups`] shows them.
fn expected_groups() -> BTreeSet<(Vec<PathBuf>, u64)> {
    let names = |n: &[&str]| n.iter().map(PathBuf::from).collect::<Vec<_>>();
    [
        (names(&["a", "d1/a2"]), 2),
        (names(&["d1/t2", "d2/t3", "t"]), 3),
    ]
    .into_iter()
    .collect()
}

/// The `--json` summary (the last line of stdout).
fn json(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// Every version kept (files and prefix markers), with what a file holds.
fn versions(dst: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let root = dst.join(".datasafe/versions");
    if !root.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(&root)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            let content = e.file_type().is_file().then(|| fs::read(e.path()).unwrap());
            (e.path().strip_prefix(&root).unwrap().to_path_buf(), content)
        })
        .collect()
}

/// The source names the versions in `kept` are of (their stamp taken out), sorted.
fn kept_names(kept: &[(PathBuf, Option<Vec<u8>>)]) -> Vec<String> {
    let mut names: Vec<String> = kept.iter().map(|(p, _)| unstamped(p)).collect();
    names.sort();
    names
}

/// A version's path with its `_YYYYMMDD_HHMMSS` stamp taken out (these names have no
/// extension): the source name it is a version of.
fn unstamped(path: &Path) -> String {
    let text = path.to_string_lossy();
    let cut = text.rfind('_').and_then(|i| text[..i].rfind('_')).unwrap();
    text[..cut].to_string()
}

/// The versions in DST that are links of one file: each group's source names, sorted,
/// with the file's link count (which counts live names too).
fn version_groups(dst: &Path) -> Vec<(Vec<String>, u64)> {
    groups(&dst.join(".datasafe/versions"))
        .into_iter()
        .map(|(names, nlink)| {
            let mut names: Vec<String> = names.iter().map(|n| unstamped(n)).collect();
            names.sort();
            (names, nlink)
        })
        .collect()
}

/// Replaces `rel` in SRC by a separate file with the same bytes, mode and mtime (as
/// `cp -p` and a rename would): only the inode says it left its group.
fn separate(env: &TestEnv, rel: &str) {
    let path = env.src.join(rel);
    let meta = fs::metadata(&path).unwrap();
    let tmp = env.dir.path().join("separate.tmp");
    fs::copy(&path, &tmp).unwrap();
    let mtime = filetime::FileTime::from_last_modification_time(&meta);
    filetime::set_file_mtime(&tmp, mtime).unwrap();
    fs::rename(&tmp, &path).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().nlink(), 1);
}

/// Extracts `archive` (a tar.gz) with GNU tar into a new folder of the env; its path.
fn extract_tar_gz(env: &TestEnv, archive: &std::path::Path) -> std::path::PathBuf {
    let x = env.dir.path().join("x");
    fs::create_dir(&x).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(&x)
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    x
}

#[test]
fn names_of_one_file_are_one_file_in_dst_copied_once() {
    names_of_one_file_are_one_file_in_dst_copied_once_on(Dst::Local);
}

/// Over SFTP the links are `hardlink@openssh.com`; the server keeps no inode numbers
/// for the index, so the recorded key, metadata and digest say which names are one.
#[test]
fn names_of_one_file_are_one_file_in_dst_copied_once_sftp() {
    names_of_one_file_are_one_file_in_dst_copied_once_on(Dst::Sftp);
}

fn names_of_one_file_are_one_file_in_dst_copied_once_on(dst: Dst) {
    let env = TestEnv::on(dst);
    let once = linked_tree(&env);
    assert_eq!(groups(&env.src), expected_groups());
    let out = env.sync_ok(&["--json"]);
    let summary = json(&out);
    assert_eq!(summary["bytes_copied"], once, "{}", stdout(&out));
    assert_eq!(summary["copied"], 6, "every name counts as backed up");
    env.assert_mirrored(false);
    assert_eq!(groups(&env.dst), expected_groups());

    // A second pass has nothing to do.
    let out = env.sync_ok(&["--json"]);
    assert_eq!(json(&out)["copied"], 0, "{}", stdout(&out));
    assert_eq!(json(&out)["unchanged"], 6);

    // An edit through one name: every name shows it, still one file, copied once, and
    // the old content kept as a version of each name: links of the one old file.
    fs::write(env.src.join("d1/a2"), "edited-pair").unwrap();
    let out = env.sync_ok(&["--json"]);
    assert_eq!(json(&out)["bytes_copied"], "edited-pair".len() as u64);
    env.assert_mirrored(false);
    assert_eq!(groups(&env.dst), expected_groups());
    assert_eq!(fs::read(env.dst.join("a")).unwrap(), b"edited-pair");
    let kept = versions(&env.dst);
    assert_eq!(kept_names(&kept), ["a", "d1/a2"], "{kept:?}");
    assert!(
        kept.iter()
            .all(|(_, bytes)| bytes.as_deref() == Some(&b"pair-content"[..])),
        "{kept:?}"
    );
    assert_eq!(
        version_groups(&env.dst),
        [(vec!["a".to_string(), "d1/a2".to_string()], 2)],
        "one old file with two names in versions"
    );

    // A name replaced by a separate file (same bytes, mode and mtime) leaves the group.
    separate(&env, "d1/t2");
    env.sync_ok(&[]);
    env.assert_mirrored(false);
    assert_eq!(groups(&env.dst), groups(&env.src));
    let t2 = fs::metadata(env.dst.join("d1/t2")).unwrap();
    assert_eq!(t2.nlink(), 1);
    assert_ne!(t2.ino(), fs::metadata(env.dst.join("t")).unwrap().ino());

    // A new name of a file DST holds is a link, not a copy.
    fs::hard_link(env.src.join("s"), env.src.join("d2/s2")).unwrap();
    let out = env.sync_ok(&["--json"]);
    assert_eq!(json(&out)["bytes_copied"], 0, "{}", stdout(&out));
    assert_eq!(groups(&env.dst), groups(&env.src));
}

#[test]
fn no_hard_links_copies_every_name_and_turning_them_on_links_again() {
    let env = TestEnv::new();
    linked_tree(&env);
    let out = env.sync_ok(&["--json", "--no-hard-links"]);
    let all = fs::read_dir(&env.src).unwrap().count(); // a, t, s, d1, d2
    assert_eq!(all, 5);
    let every_name = 2 * "pair-content".len() + 3 * "triple-content!".len() + "single".len();
    assert_eq!(json(&out)["bytes_copied"], every_name as u64);
    env.assert_mirrored(false);
    assert!(groups(&env.dst).is_empty(), "{:?}", groups(&env.dst));

    // Back on: the names are linked, nothing copied.
    let out = env.sync_ok(&["--json"]);
    assert_eq!(json(&out)["bytes_copied"], 0, "{}", stdout(&out));
    assert_eq!(groups(&env.dst), expected_groups());
    env.assert_mirrored(false);

    // And off again: separate copies again.
    env.sync_ok(&["--no-hard-links"]);
    assert!(groups(&env.dst).is_empty(), "{:?}", groups(&env.dst));
    env.assert_mirrored(false);
}

#[test]
fn restore_and_a_tar_archive_give_the_groups_back() {
    let env = TestEnv::new();
    linked_tree(&env);
    env.sync_ok(&[]);

    let target = env.dir.path().join("restored");
    let out = env
        .cmd(["restore".as_ref(), env.dst.as_os_str(), target.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_same_trees(&snapshot(&env.src, false), &snapshot(&target, false));
    assert_eq!(groups(&target), expected_groups());

    let archive = env.dir.path().join("a.tar.gz");
    let out = env
        .cmd([
            "archive".as_ref(),
            "--format".as_ref(),
            "tar.gz".as_ref(),
            env.dst.as_os_str(),
            archive.as_os_str(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let x = extract_tar_gz(&env, &archive);
    assert_same_trees(&snapshot(&env.src, false), &snapshot(&x, false));
    assert_eq!(groups(&x), expected_groups());
}

#[test]
fn an_edit_through_any_name_under_watch_reaches_every_name() {
    let _lock = shared();
    let env = TestEnv::new();
    linked_tree(&env);
    let w = Watcher::ready(&env, &[], "w");
    w.wait_env_mirrored(&env, false);
    let ok = wait_until(DEADLINE, || groups(&env.dst) == expected_groups());
    assert!(ok, "{:?}{}", groups(&env.dst), w.context());

    // The event names d2/t3 only; t and d1/t2 follow it.
    fs::write(env.src.join("d2/t3"), "triple-edited").unwrap();
    let ok = wait_until(DEADLINE, || {
        ["t", "d1/t2", "d2/t3"]
            .iter()
            .all(|n| fs::read(env.dst.join(n)).unwrap_or_default() == b"triple-edited")
            && groups(&env.dst) == expected_groups()
    });
    assert!(ok, "{:?}{}", groups(&env.dst), w.context());
    // Each name keeps a version, all of them links of the one old file.
    let kept = versions(&env.dst);
    assert_eq!(kept_names(&kept), ["d1/t2", "d2/t3", "t"], "{kept:?}");
    assert!(
        kept.iter()
            .all(|(_, bytes)| bytes.as_deref() == Some(&b"triple-content!"[..])),
        "{kept:?}"
    );
    assert_eq!(
        version_groups(&env.dst),
        [(vec!["d1/t2".into(), "d2/t3".into(), "t".into()], 3)]
    );

    // A new name made while watching is linked to the file DST holds.
    fs::hard_link(env.src.join("a"), env.src.join("d2/a3")).unwrap();
    let ok = wait_until(DEADLINE, || groups(&env.dst) == groups(&env.src));
    assert!(ok, "{:?}{}", groups(&env.dst), w.context());

    // A name that leaves its group becomes a file of its own.
    separate(&env, "d1/a2");
    let ok = wait_until(DEADLINE, || {
        groups(&env.dst) == groups(&env.src) && env.is_mirrored(false)
    });
    assert!(ok, "{:?}{}", groups(&env.dst), w.context());
    assert!(w.stdout().contains("hard-linked"), "{}", w.context());
}

/// `restore --at` and `archive --at` gave only the edited name its old content (QA on
/// issue 16): the other names came back with the new content. Every name now has a
/// version (a link of the one old file): all come back old, as one file again; the
/// versions list per name, count their bytes once, and are pruned like any.
#[test]
fn restore_at_a_moment_before_an_edit_gives_every_name_its_old_content() {
    let env = TestEnv::new();
    linked_tree(&env);
    // Old content from well before the edit, so it existed at the moment restored.
    for name in ["a", "t", "s"] {
        set_mtime(&env.src.join(name), 1_600_000_000, 0);
    }
    env.sync_ok(&[]);
    let before = snapshot(&env.src, false);
    fs::write(env.src.join("d1/a2"), "edited-pair").unwrap();
    fs::write(env.src.join("t"), "triple-edited").unwrap();
    env.sync_ok(&[]);
    assert_eq!(groups(&env.dst), expected_groups());

    // Listed per name, five versions; their bytes counted once per old file.
    let out = env
        .cmd(["versions".as_ref(), env.dst.as_os_str(), "--json".as_ref()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let listed = json(&out);
    let mut paths: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["a", "d1/a2", "d1/t2", "d2/t3", "t"]);
    // The first second a version was made in (one pass may cross a second).
    let at = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["time"].as_str().unwrap().to_string())
        .min()
        .unwrap();
    let out = env
        .cmd([
            "versions".as_ref(),
            env.dst.as_os_str(),
            "--summary".as_ref(),
            "--json".as_ref(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let usage = json(&out);
    assert_eq!(usage["total"]["count"], 5);
    let once = "pair-content".len() + "triple-content!".len();
    assert_eq!(usage["total"]["bytes"], once as u64, "{usage}");

    // The moment the versions were made: every name as it was, one file per group.
    let target = env.dir.path().join("restored");
    let out = env
        .cmd([
            "restore".as_ref(),
            "--at".as_ref(),
            at.as_ref(),
            env.dst.as_os_str(),
            target.as_os_str(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_same_trees(&before, &snapshot(&target, false));
    assert_eq!(groups(&target), expected_groups());

    // The same through a tar.gz, extracted by GNU tar.
    let archive = env.dir.path().join("then.tar.gz");
    let out = env
        .cmd([
            "archive".as_ref(),
            "--at".as_ref(),
            at.as_ref(),
            env.dst.as_os_str(),
            archive.as_os_str(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let x = extract_tar_gz(&env, &archive);
    assert_same_trees(&before, &snapshot(&x, false));
    assert_eq!(groups(&x), expected_groups());

    // Now: the edited content, still one file per group.
    let now = env.dir.path().join("now");
    let out = env
        .cmd(["restore".as_ref(), env.dst.as_os_str(), now.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_same_trees(&snapshot(&env.src, false), &snapshot(&now, false));
    assert_eq!(groups(&now), expected_groups());

    // A name deleted (no content changed) keeps one version, as any deleted file.
    fs::remove_file(env.src.join("d1/a2")).unwrap();
    env.sync_ok(&[]);
    let kept = versions(&env.dst);
    assert_eq!(
        kept_names(&kept),
        ["a", "d1/a2", "d1/a2", "d1/t2", "d2/t3", "t"],
        "{kept:?}"
    );

    // Retention prunes them like any version: made old (by their names), all go.
    let root = env.dst.join(".datasafe/versions");
    for (path, _) in versions(&env.dst) {
        let old = root.join(format!("{}_20200101_000000", unstamped(&path)));
        fs::rename(root.join(&path), old).unwrap();
    }
    let out = env.sync_ok(&["-v"]);
    assert!(versions(&env.dst).is_empty(), "{}", stderr(&out));
}

/// The same over SFTP and S3, which give no inode numbers to read back: every name
/// still has a version (SFTP: a `hardlink@openssh.com` link of the old file; S3: a
/// copy made on the server) and gets its old content back, each as a file of its own.
#[test]
fn restore_at_a_moment_before_an_edit_gives_every_name_its_old_content_sftp() {
    every_name_restores_its_old_content_on(Dst::Sftp);
}

#[test]
fn restore_at_a_moment_before_an_edit_gives_every_name_its_old_content_s3() {
    every_name_restores_its_old_content_on(Dst::S3);
}

fn every_name_restores_its_old_content_on(dst: Dst) {
    let env = TestEnv::on(dst);
    env.write("a", "pair-content");
    fs::create_dir_all(env.src.join("d1")).unwrap();
    fs::hard_link(env.src.join("a"), env.src.join("d1/a2")).unwrap();
    set_mtime(&env.src.join("a"), 1_600_000_000, 0);
    env.sync_ok(&[]);
    fs::write(env.src.join("d1/a2"), "edited-pair").unwrap();
    env.sync_ok(&[]);
    let kept: Vec<String> = env
        .dst_files(".datasafe/versions")
        .iter()
        .map(|p| unstamped(p))
        .collect();
    assert_eq!(kept, ["a", "d1/a2"], "{dst:?}");

    let dst_arg = env.dst_arg();
    let mut versions = env.cmd(["versions".as_ref(), dst_arg.as_os_str(), "--json".as_ref()]);
    let out = env.set_dst_env(&mut versions).output().unwrap();
    assert_code(&out, 0);
    let at = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["time"].as_str().unwrap().to_string())
        .min()
        .unwrap();
    let target = env.dir.path().join("restored");
    let mut restore = env.cmd([
        "restore".as_ref(),
        "--at".as_ref(),
        at.as_ref(),
        dst_arg.as_os_str(),
        target.as_os_str(),
    ]);
    let out = env.set_dst_env(&mut restore).output().unwrap();
    assert_code(&out, 0);
    for name in ["a", "d1/a2"] {
        assert_eq!(
            fs::read(target.join(name)).unwrap(),
            b"pair-content",
            "{name}"
        );
    }
}

/// A file with several names that only grew (a log appended to through one name):
/// every name keeps a prefix marker, no bytes, as a file of one name does, and comes
/// back with its old content.
#[test]
fn an_append_through_one_name_keeps_a_prefix_marker_for_every_name() {
    let env = TestEnv::new();
    env.write("log", "line 1\n");
    fs::create_dir_all(env.src.join("d1")).unwrap();
    fs::hard_link(env.src.join("log"), env.src.join("d1/log2")).unwrap();
    set_mtime(&env.src.join("log"), 1_600_000_000, 0);
    env.sync_ok(&[]);
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(env.src.join("d1/log2"))
        .unwrap();
    std::io::Write::write_all(&mut file, b"line 2\n").unwrap();
    drop(file);
    env.sync_ok(&[]);
    let kept = versions(&env.dst);
    assert_eq!(kept_names(&kept), ["d1/log2", "log"], "{kept:?}");
    assert!(
        kept.iter().all(|(_, bytes)| bytes.is_none()),
        "markers only: {kept:?}"
    );

    // The first second a marker was made in (one pass may cross a second).
    let stamp = kept
        .iter()
        .map(|(name, _)| {
            let text = name.to_string_lossy();
            text[text.len() - 15..].to_string()
        })
        .min()
        .unwrap();
    let at = format!(
        "{}-{}-{} {}:{}:{}",
        &stamp[..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    let target = env.dir.path().join("restored");
    let out = env
        .cmd([
            "restore".as_ref(),
            "--at".as_ref(),
            at.as_ref(),
            env.dst.as_os_str(),
            target.as_os_str(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    for name in ["log", "d1/log2"] {
        assert_eq!(fs::read(target.join(name)).unwrap(), b"line 1\n", "{name}");
    }
}

/// DST's inode number for `rel`.
fn ino(env: &TestEnv, rel: &str) -> u64 {
    fs::metadata(env.dst.join(rel)).unwrap().ino()
}

/// Runs `verify` on the env's mirror and asserts it finds nothing wrong (exit 0).
fn verify_clean(env: &TestEnv) {
    let dst = env.dst_arg();
    let out = env
        .cmd(["verify".as_ref(), dst.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
}

#[test]
fn a_change_of_link_membership_alone_copies_nothing_and_keeps_no_version() {
    a_change_of_link_membership_alone_copies_nothing_and_keeps_no_version_on(Dst::Local);
}

#[test]
fn a_change_of_link_membership_alone_copies_nothing_and_keeps_no_version_sftp() {
    a_change_of_link_membership_alone_copies_nothing_and_keeps_no_version_on(Dst::Sftp);
}

/// A group shrinking to one name (`rm b` of `a`, `b`) left the survivor's record with
/// a key its source (now `st_nlink` 1) no longer gives: it was copied again. A file
/// joining a group (`ln x c`) must not be copied either: `c` is a name of DST's `x`.
fn a_change_of_link_membership_alone_copies_nothing_and_keeps_no_version_on(dst: Dst) {
    let env = TestEnv::on(dst);
    env.write("a", "pair-content");
    env.write("x", "single-content");
    fs::hard_link(env.src.join("a"), env.src.join("b")).unwrap();
    env.sync_ok(&[]);
    let (a, x) = (ino(&env, "a"), ino(&env, "x"));
    assert_eq!(ino(&env, "b"), a);

    // The group shrinks to one name: only b's deletion (kept as a version).
    fs::remove_file(env.src.join("b")).unwrap();
    let out = env.sync_ok(&["--json"]);
    let summary = json(&out);
    assert_eq!(summary["copied"], 0, "{}", stdout(&out));
    assert_eq!(summary["bytes_copied"], 0, "{}", stdout(&out));
    assert_eq!(summary["updated"], 0, "{}", stdout(&out));
    assert_eq!(summary["deleted"], 1, "{}", stdout(&out));
    assert_eq!(ino(&env, "a"), a, "a was written again");
    assert_eq!(versions(&env.dst).len(), 1, "{:?}", versions(&env.dst));
    env.assert_mirrored(false);
    verify_clean(&env);
    let out = env.sync_ok(&["--json"]);
    assert_eq!(json(&out)["unchanged"], 2, "{}", stdout(&out));

    // A file of one name gains a second: linked to DST's file, nothing copied.
    fs::hard_link(env.src.join("x"), env.src.join("c")).unwrap();
    let out = env.sync_ok(&["--json"]);
    let summary = json(&out);
    assert_eq!(summary["bytes_copied"], 0, "{}", stdout(&out));
    assert_eq!(summary["updated"], 0, "{}", stdout(&out));
    assert_eq!((ino(&env, "x"), ino(&env, "c")), (x, x));
    assert_eq!(groups(&env.dst), groups(&env.src));
    assert_eq!(versions(&env.dst).len(), 1, "{:?}", versions(&env.dst));
    env.assert_mirrored(false);
    verify_clean(&env);
    let out = env.sync_ok(&["--json"]);
    assert_eq!(json(&out)["unchanged"], 3, "{}", stdout(&out));

    // Shrinking with a chmod: a metadata update, still no copy.
    fs::remove_file(env.src.join("c")).unwrap();
    let mut mode = fs::metadata(env.src.join("x")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o600);
    fs::set_permissions(env.src.join("x"), mode).unwrap();
    let out = env.sync_ok(&["--json"]);
    let summary = json(&out);
    assert_eq!(summary["bytes_copied"], 0, "{}", stdout(&out));
    assert_eq!(summary["updated"], 1, "{}", stdout(&out));
    assert_eq!(ino(&env, "x"), x);
    env.assert_mirrored(false);
    verify_clean(&env);

    // A name replaced by a separate file is still a file of its own.
    fs::hard_link(env.src.join("a"), env.src.join("b")).unwrap();
    env.sync_ok(&[]);
    separate(&env, "b");
    env.sync_ok(&[]);
    assert_ne!(ino(&env, "b"), ino(&env, "a"));
    assert!(groups(&env.dst).is_empty(), "{:?}", groups(&env.dst));
    env.assert_mirrored(false);
    verify_clean(&env);

    // Under --checksum the compared name leads the new one: no copy, no version.
    let before = versions(&env.dst).len();
    fs::hard_link(env.src.join("x"), env.src.join("c")).unwrap();
    let out = env.sync_ok(&["--json", "--checksum"]);
    assert_eq!(json(&out)["bytes_copied"], 0, "{}", stdout(&out));
    assert_eq!((ino(&env, "x"), ino(&env, "c")), (x, x));
    assert_eq!(versions(&env.dst).len(), before, "{:?}", versions(&env.dst));
    verify_clean(&env);
}

#[test]
fn names_in_a_new_folder_are_linked_to_names_outside_it_under_watch() {
    names_in_a_new_folder_are_linked_to_names_outside_it_under_watch_on(Dst::Local);
}

/// Over SFTP the index has no inode numbers: the recorded key, metadata and digest.
#[test]
fn names_in_a_new_folder_are_linked_to_names_outside_it_under_watch_sftp() {
    names_in_a_new_folder_are_linked_to_names_outside_it_under_watch_on(Dst::Sftp);
}

/// A new folder's pass grouped only the names inside it: `mkdir new && ln a new/b`
/// copied `a` again as `new/b` until the next full pass linked it.
fn names_in_a_new_folder_are_linked_to_names_outside_it_under_watch_on(dst: Dst) {
    let _lock = shared();
    let env = TestEnv::on(dst);
    env.write("a.txt", "mirrored-alone");
    env.write("g1", "mirrored-in-a-group");
    fs::hard_link(env.src.join("g1"), env.src.join("g2")).unwrap();
    let w = Watcher::ready(&env, &[], "w");
    w.wait_env_mirrored(&env, false);
    let linked = |a: &str, b: &str| {
        let (a, b) = (env.dst.join(a), env.dst.join(b));
        matches!((fs::metadata(a), fs::metadata(b)), (Ok(a), Ok(b)) if a.ino() == b.ino())
    };
    let (a, g) = (ino(&env, "a.txt"), ino(&env, "g1"));
    let started = w.stdout().len();

    // A name of a file recorded in a group, and of one mirrored while it had one name.
    fs::create_dir(env.src.join("new")).unwrap();
    fs::hard_link(env.src.join("g1"), env.src.join("new/g3")).unwrap();
    fs::hard_link(env.src.join("a.txt"), env.src.join("new/b.txt")).unwrap();
    let ok = wait_until(DEADLINE, || {
        linked("g1", "new/g3") && linked("a.txt", "new/b.txt")
    });
    assert!(ok, "{:?}{}", groups(&env.dst), w.context());
    assert_eq!((ino(&env, "a.txt"), ino(&env, "g1")), (a, g));

    // Both names in one new folder; a new folder linked to a name in another new one.
    fs::create_dir(env.src.join("n")).unwrap();
    fs::write(env.src.join("n/a"), "new-pair").unwrap();
    fs::hard_link(env.src.join("n/a"), env.src.join("n/b")).unwrap();
    fs::create_dir(env.src.join("p")).unwrap();
    fs::create_dir(env.src.join("q")).unwrap();
    fs::write(env.src.join("p/y"), "across-folders").unwrap();
    fs::hard_link(env.src.join("p/y"), env.src.join("q/y2")).unwrap();
    let ok = wait_until(DEADLINE, || {
        linked("n/a", "n/b") && linked("p/y", "q/y2") && env.is_mirrored(false)
    });
    assert!(ok, "{:?}{}", groups(&env.dst), w.context());

    // A file of one name gains a second in its own folder: linked, not copied.
    fs::hard_link(env.src.join("probe.txt"), env.src.join("probe2.txt")).unwrap();
    let ok = wait_until(DEADLINE, || linked("probe.txt", "probe2.txt"));
    assert!(ok, "{:?}{}", groups(&env.dst), w.context());

    w.signal(libc::SIGTERM);
    let mut w = w;
    w.wait_exit(DEADLINE);
    let log = w.stdout()[started..].to_string();
    for name in ["new/g3", "new/b.txt", "q/y2", "n/b", "probe2.txt"] {
        assert!(
            !log.contains(&format!("copied {name} ")),
            "{name}{}",
            w.context()
        );
        assert!(
            log.contains(&format!("hard-linked {name}")),
            "{name}{}",
            w.context()
        );
    }
    assert_eq!(groups(&env.dst), groups(&env.src));
    assert!(versions(&env.dst).is_empty(), "{:?}", versions(&env.dst));
    env.assert_mirrored(false);
    verify_clean(&env);
}

/// Under a watcher, `rm b` deletes b; the next full pass (the rescan) found `a`'s
/// record keyed and copied it again. A rename of a name in a group stays one file,
/// also into a new folder (whose pass may link the new name first, making the move
/// one between two names of one file, which rename(2) leaves undone).
#[test]
fn a_group_shrinking_or_renamed_under_watch_copies_nothing() {
    let _lock = shared();
    let env = TestEnv::new();
    env.write("a", "pair-content");
    fs::hard_link(env.src.join("a"), env.src.join("b")).unwrap();
    env.write("t", "triple-content");
    fs::hard_link(env.src.join("t"), env.src.join("t2")).unwrap();
    fs::hard_link(env.src.join("t"), env.src.join("t3")).unwrap();
    let mut w = Watcher::ready(&env, &["--rescan", "1s"], "w");
    w.wait_env_mirrored(&env, false);
    let ok = wait_until(DEADLINE, || groups(&env.dst) == groups(&env.src));
    assert!(ok, "{:?}{}", groups(&env.dst), w.context());
    let (a, t) = (ino(&env, "a"), ino(&env, "t"));
    let started = w.stdout().len();

    fs::remove_file(env.src.join("b")).unwrap();
    fs::rename(env.src.join("t"), env.src.join("z")).unwrap();
    // Into a new folder: its pass may link m/t2 before the move's events come, and
    // rename(2) between two names of one file does nothing: t2 must go all the same.
    fs::create_dir(env.src.join("m")).unwrap();
    fs::rename(env.src.join("t2"), env.src.join("m/t2")).unwrap();
    let ok = wait_until(DEADLINE, || {
        !env.dst.join("b").exists()
            && env.dst.join("z").exists()
            && !env.dst.join("t2").exists()
            && env.dst.join("m/t2").exists()
    });
    assert!(ok, "{}", w.context());
    // Two rescans after that: a marker removed from DST behind the watcher's back
    // comes back only by one, and twice means one full pass ran from its start.
    for _ in 0..2 {
        fs::remove_file(env.dst.join("probe.txt")).unwrap();
        let ok = wait_until(DEADLINE, || env.dst.join("probe.txt").exists());
        assert!(ok, "no rescan{}", w.context());
    }
    assert_eq!(ino(&env, "a"), a, "{}", w.context());
    assert_eq!(ino(&env, "z"), t, "{}", w.context());
    assert_eq!(ino(&env, "m/t2"), t, "{}", w.context());
    // The names alone: a move into a folder the watcher did not watch yet comes as a
    // deletion (t2 kept as a version, one more name of its file) and a new name.
    let names = |root: &Path| groups(root).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&env.dst), names(&env.src), "{}", w.context());
    w.signal(libc::SIGTERM);
    w.wait_exit(DEADLINE);
    let log = w.stdout()[started..].to_string();
    assert!(log.contains("renamed t -> z"), "{}", w.context());
    for name in ["a", "z", "m/t2", "t3"] {
        assert!(
            !log.contains(&format!("copied {name} ")),
            "{name}{}",
            w.context()
        );
    }
    // Deleted names only (b, and t2 if its move came as a deletion), never a copy.
    let kept = versions(&env.dst);
    assert!(
        kept.iter().all(|(v, _)| ["b_", "t2_"]
            .iter()
            .any(|n| v.to_string_lossy().starts_with(n))),
        "{kept:?}"
    );
    env.assert_mirrored(false);
    verify_clean(&env);
}
