//! `datasafe restore` and `datasafe versions` driven through the binary: which content a
//! moment gets (with versions planted at known times, and with versions real sync runs
//! made), byte-for-byte restores of gzipped mirrors with modes and mtimes, the refusals
//! (non-empty or misplaced TARGET, bad --at), PATH filters, damaged versions, planted
//! symlinks, and the versions listing.

use crate::common;

use chrono::{Local, NaiveDateTime, TimeZone};
use common::dst::Dst;
use common::*;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A moment well in the past (2023-11-14), so sync's retention never meets planted
/// versions and tests read the same in any time zone.
const BASE: i64 = 1_700_000_000;

/// The local wall-clock time of a Unix second, as version names and `--at` write it.
fn local(secs: i64) -> NaiveDateTime {
    Local.timestamp_opt(secs, 0).unwrap().naive_local()
}

/// `--at` text for a Unix second.
fn at(secs: i64) -> String {
    local(secs).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Puts `content` in DST's versions folder as the version of stored name `stored`
/// replaced at `replaced` (Unix seconds), with the given mtime and mode; gzipped when
/// `gz` (then `stored` should end in `.gz`). Returns its path relative to DST.
fn plant_version(
    env: &TestEnv,
    stored: &str,
    replaced: i64,
    content: &[u8],
    gz: bool,
    mtime: (i64, u32),
    mode: u32,
) -> PathBuf {
    let name = datasafe::store::versions::version_name(Path::new(stored), local(replaced), 0);
    let rel = Path::new(".datasafe/versions").join(name);
    let path = env.dst.join(&rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = if gz { gzip(content) } else { content.to_vec() };
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(&path, mtime.0, mtime.1);
    rel
}

fn gzip(content: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(content).unwrap();
    enc.finish().unwrap()
}

/// The restore target inside the test's temp folder.
fn target(env: &TestEnv) -> PathBuf {
    env.dir.path().join("restored")
}

/// Runs `datasafe restore DST TARGET ARGS...`, DST as the tree's kind names it (a
/// path, an `sftp://` or an `s3://` URL: a bucket mirror can only be read through it).
fn restore(env: &TestEnv, args: &[&str]) -> Output {
    let mut all: Vec<OsString> = vec!["restore".into(), env.dst_arg(), target(env).into()];
    all.extend(args.iter().map(OsString::from));
    env.cmd(all).output().unwrap()
}

fn restore_ok(env: &TestEnv, args: &[&str]) -> Output {
    let out = restore(env, args);
    assert_code(&out, 0);
    out
}

/// Every regular file under `root` (relative path → content), `.datasafe` left out.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    snapshot(root, false)
        .into_iter()
        .filter_map(|(rel, node)| match node {
            Node::File { content, .. } => Some((rel, content)),
            _ => None,
        })
        .collect()
}

/// Every path under `root` (`.datasafe` included) with its size and mtime, to show a
/// tree was not changed.
fn tree_listing(root: &Path) -> Vec<(PathBuf, u64, (i64, u32))> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let size = if m.is_dir() { 0 } else { m.len() };
            (e.into_path(), size, (m.mtime(), m.mtime_nsec() as u32))
        })
        .collect()
}

fn file_mtime(path: &Path) -> (i64, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.mtime(), m.mtime_nsec() as u32)
}

/// Waits until the wall clock is in a later second than when called, so two sync runs
/// stamp their versions differently. Polls the clock; never sleeps a guessed time.
fn next_second() {
    let now = Local::now().timestamp();
    while Local::now().timestamp() == now {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A mirror of one file `f.txt` ("v3", written at BASE+200) whose earlier contents
/// "v1" (written at BASE) and "v2" (written at BASE+100) were replaced at BASE+100 and
/// BASE+200; `gone.txt` ("old", written at BASE) was deleted at BASE+150.
fn planted_history(gz: bool) -> TestEnv {
    let env = TestEnv::new();
    let f = env.write("f.txt", "v3");
    set_mtime(&f, BASE + 200, 3);
    env.write("other.txt", "stays");
    if gz {
        env.sync_ok(&["--compress"]);
    } else {
        env.sync_ok(&[]);
    }
    let ext = if gz { ".gz" } else { "" };
    let name = |n: &str| format!("{n}{ext}");
    plant_version(
        &env,
        &name("f.txt"),
        BASE + 100,
        b"v1",
        gz,
        (BASE, 1),
        0o600,
    );
    plant_version(
        &env,
        &name("f.txt"),
        BASE + 200,
        b"v2",
        gz,
        (BASE + 100, 2),
        0o640,
    );
    plant_version(
        &env,
        &name("gone.txt"),
        BASE + 150,
        b"old",
        gz,
        (BASE, 7),
        0o604,
    );
    env
}

#[test]
fn at_between_two_versions_restores_the_middle_content_with_its_mode_and_mtime() {
    for gz in [false, true] {
        let env = planted_history(gz);
        let out = restore_ok(&env, &["--at", &at(BASE + 150)]);
        let t = target(&env);
        assert_eq!(fs::read(t.join("f.txt")).unwrap(), b"v2", "gz {gz}");
        assert_eq!(file_mtime(&t.join("f.txt")), (BASE + 100, 2));
        assert_eq!(
            fs::metadata(t.join("f.txt")).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        // gone.txt was deleted at BASE+150: still there at that second.
        assert_eq!(fs::read(t.join("gone.txt")).unwrap(), b"old");
        let text = stdout(&out);
        assert!(text.contains("Restored file: f.txt\n"), "{text}");
        let summary = text.lines().last().unwrap();
        assert!(
            summary.starts_with("Restore completed at ")
                && summary.contains(", Duration: ")
                && summary.ends_with(" seconds, Files restored: 2"),
            "{summary}"
        );
    }
}

#[test]
fn each_moment_gets_the_content_current_then() {
    let env = planted_history(true);
    type Expected = Option<&'static [u8]>;
    let cases: [(i64, Expected, Expected); 6] = [
        // Before v1 was written: neither file existed.
        (BASE - 10, None, None),
        (BASE + 50, Some(b"v1"), Some(b"old")),
        (BASE + 100, Some(b"v1"), Some(b"old")),
        (BASE + 101, Some(b"v2"), Some(b"old")),
        // After gone.txt was deleted, before f.txt's last replacement.
        (BASE + 151, Some(b"v2"), None),
        (BASE + 300, Some(b"v3"), None),
    ];
    for (secs, f, gone) in cases {
        let t = target(&env);
        let _ = fs::remove_dir_all(&t);
        restore_ok(&env, &["--at", &at(secs)]);
        assert_eq!(fs::read(t.join("f.txt")).ok().as_deref(), f, "at {secs}");
        assert_eq!(
            fs::read(t.join("gone.txt")).ok().as_deref(),
            gone,
            "at {secs}"
        );
    }
}

#[test]
fn without_at_only_the_live_mirror_is_restored() {
    let env = planted_history(false);
    let out = restore_ok(&env, &[]);
    let t = target(&env);
    assert_eq!(
        files(&t).into_keys().collect::<Vec<_>>(),
        [PathBuf::from("f.txt"), PathBuf::from("other.txt")]
    );
    assert_eq!(fs::read(t.join("f.txt")).unwrap(), b"v3");
    assert_eq!(file_mtime(&t.join("f.txt")), (BASE + 200, 3));
    assert_eq!(count(&out, "Files restored"), 2);
}

fn sample_tree(env: &TestEnv) {
    env.write("docs/a.txt", "alpha");
    env.write("docs/deep/er/b.md", "beta".repeat(1000));
    env.write("top.bin", vec![7u8; 300_000]);
    env.write("empty.txt", "");
    env.write("archive.tar.gz", gzip(b"already gzipped"));
    fs::create_dir_all(env.src.join("empty/nested")).unwrap();
    symlink("docs/a.txt", env.src.join("link")).unwrap();
    symlink("/nowhere/at/all", env.src.join("dangling")).unwrap();
    fs::set_permissions(env.src.join("top.bin"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(
        env.src.join("docs/a.txt"),
        fs::Permissions::from_mode(0o604),
    )
    .unwrap();
    fs::set_permissions(env.src.join("docs/deep"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(env.src.join("empty"), fs::Permissions::from_mode(0o711)).unwrap();
    set_mtime(&env.src.join("docs/a.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&env.src.join("top.bin"), 1_600_000_001, 999_999_999);
    set_mtime(&env.src.join("link"), 1_500_000_000, 5);
    set_mtime(&env.src.join("docs/deep"), 1_400_000_000, 42);
}

#[test]
fn a_gzipped_mirror_restores_to_the_source_byte_for_byte() {
    a_gzipped_mirror_restores_to_the_source_byte_for_byte_on(Dst::Local);
}

/// An SFTP-written mirror holds whole seconds and links with the time they were made;
/// restore gives back the index's exact times where the stored names agree to the
/// second: the `_sftp` variant compares at the mirror's precision (`Dst::coarse`), the
/// `_to_the_nanosecond` one to the nanosecond, as a local mirror gives it.
#[test]
fn a_gzipped_mirror_restores_to_the_source_byte_for_byte_sftp() {
    a_gzipped_mirror_restores_to_the_source_byte_for_byte_on(Dst::Sftp);
}

#[test]
fn a_gzipped_mirror_restores_to_the_source_byte_for_byte_sftp_to_the_nanosecond() {
    a_restored_gzipped_mirror(Dst::Sftp, Dst::Local);
}

/// A bucket keeps mtimes to the nanosecond (`x-amz-meta-mtime`): compared exactly.
#[test]
fn a_gzipped_mirror_restores_to_the_source_byte_for_byte_s3() {
    a_gzipped_mirror_restores_to_the_source_byte_for_byte_on(Dst::S3);
}

fn a_gzipped_mirror_restores_to_the_source_byte_for_byte_on(dst: Dst) {
    a_restored_gzipped_mirror(dst, dst);
}

/// Syncs with `--compress` to a DST of kind `dst` and restores, comparing the restored
/// tree with the source as far as a mirror of kind `precision` can keep it.
fn a_restored_gzipped_mirror(dst: Dst, precision: Dst) {
    let env = TestEnv::on(dst);
    sample_tree(&env);
    env.sync_ok(&["--compress"]);
    let dst_before = env.dst_listing();
    let out = restore_ok(&env, &[]);
    let t = target(&env);
    assert_same_trees(
        &precision.coarse(snapshot(&env.src, false)),
        &precision.coarse(snapshot(&t, false)),
    );
    assert_eq!(env.dst_listing(), dst_before, "restore wrote into DST");
    // Folders get their recorded mtime too (after their content was written), to the
    // nanosecond from any mirror: the index records it.
    assert_eq!(file_mtime(&t.join("docs/deep")), (1_400_000_000, 42));
    // Files and links count, folders do not.
    assert_eq!(count(&out, "Files restored"), 7, "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Restored file: docs/deep/er/b.md\n"),
        "{text}"
    );
    assert!(
        text.contains("Restored link: link -> docs/a.txt\n"),
        "{text}"
    );
    // No temp file is left behind.
    let leftovers: Vec<_> = walkdir::WalkDir::new(&t)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(".datasafe-restore")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_restore_before_real_edits_gives_back_the_tree_as_it_was() {
    a_restore_before_real_edits_gives_back_the_tree_as_it_was_on(Dst::Local);
}

#[test]
fn a_restore_before_real_edits_gives_back_the_tree_as_it_was_sftp() {
    a_restore_before_real_edits_gives_back_the_tree_as_it_was_on(Dst::Sftp);
}

#[test]
fn a_restore_before_real_edits_gives_back_the_tree_as_it_was_s3() {
    a_restore_before_real_edits_gives_back_the_tree_as_it_was_on(Dst::S3);
}

fn a_restore_before_real_edits_gives_back_the_tree_as_it_was_on(dst: Dst) {
    let env = TestEnv::on(dst);
    sample_tree(&env);
    env.sync_ok(&["--compress"]);
    let before = env.kind().coarse(snapshot(&env.src, false));

    // Edit, delete and add, then let sync keep the old copies as versions.
    next_second();
    let edited_at = Local::now().timestamp();
    env.write("docs/a.txt", "alpha, edited");
    fs::remove_file(env.src.join("top.bin")).unwrap();
    env.write("new.txt", "did not exist before");
    set_mtime(&env.src.join("new.txt"), edited_at + 5, 0);
    env.sync_ok(&["--compress"]);

    // Every version was stamped at or after `edited_at`, and the edits are newer than
    // anything in `before`: restoring at the second before the edits gives `before`.
    restore_ok(&env, &["--at", &at(edited_at - 1)]);
    let after = env.kind().coarse(snapshot(&target(&env), false));
    if before != after {
        panic!("restored tree differs:\nbefore {before:#?}\nrestored {after:#?}");
    }
}

#[test]
fn versions_made_by_real_syncs_restore_the_middle_content() {
    versions_made_by_real_syncs_restore_the_middle_content_on(Dst::Local);
}

#[test]
fn versions_made_by_real_syncs_restore_the_middle_content_sftp() {
    versions_made_by_real_syncs_restore_the_middle_content_on(Dst::Sftp);
}

#[test]
fn versions_made_by_real_syncs_restore_the_middle_content_s3() {
    versions_made_by_real_syncs_restore_the_middle_content_on(Dst::S3);
}

fn versions_made_by_real_syncs_restore_the_middle_content_on(dst: Dst) {
    let env = TestEnv::on(dst);
    env.write("keep.txt", "so the source is never empty");
    env.write("f.txt", "v1");
    env.write("d.txt", "doomed");
    env.sync_ok(&[]);
    next_second();
    env.write("f.txt", "v2");
    env.sync_ok(&[]);
    next_second();
    env.write("f.txt", "v3");
    fs::remove_file(env.src.join("d.txt")).unwrap();
    env.sync_ok(&[]);

    // Read the stamps back from the listing: f.txt's two versions and d.txt's one (a
    // folder DST, even one written over SFTP, is read on this machine).
    let mirror = match dst {
        Dst::S3 => env.dst_arg(),
        _ => env.dst.clone().into(),
    };
    let out = env
        .cmd([OsStr::new("versions"), &mirror, OsStr::new("--json")])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let times = |path: &str| -> Vec<String> {
        listed
            .iter()
            .filter(|v| v["path"] == path)
            .map(|v| v["time"].as_str().unwrap().to_string())
            .collect()
    };
    let (f_times, d_times) = (times("f.txt"), times("d.txt"));
    assert_eq!(f_times.len(), 2, "{listed:?}");
    assert_eq!(d_times.len(), 1, "{listed:?}");

    // At the second f.txt's v2 was replaced, v2 was current; at its first
    // replacement, v1 was.
    restore_ok(&env, &["--at", &f_times[1]]);
    assert_eq!(fs::read(target(&env).join("f.txt")).unwrap(), b"v2");
    assert_eq!(fs::read(target(&env).join("d.txt")).unwrap(), b"doomed");
    fs::remove_dir_all(target(&env)).unwrap();
    restore_ok(&env, &["--at", &f_times[0]]);
    assert_eq!(fs::read(target(&env).join("f.txt")).unwrap(), b"v1");

    // A second after its deletion, d.txt is not restored.
    let deleted = NaiveDateTime::parse_from_str(&d_times[0], "%Y-%m-%d %H:%M:%S").unwrap();
    let after = (deleted + chrono::TimeDelta::seconds(1))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    fs::remove_dir_all(target(&env)).unwrap();
    restore_ok(&env, &["--at", &after]);
    assert!(!target(&env).join("d.txt").exists());
    assert_eq!(fs::read(target(&env).join("f.txt")).unwrap(), b"v3");
}

#[test]
fn a_non_empty_target_is_refused_without_force_and_left_untouched() {
    let env = planted_history(false);
    let t = target(&env);
    fs::create_dir(&t).unwrap();
    fs::write(t.join("f.txt"), "mine").unwrap();
    fs::write(t.join("unrelated"), "also mine").unwrap();
    let before = snapshot(&t, false);

    let out = restore(&env, &[]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(snapshot(&t, false), before);

    restore_ok(&env, &["--force"]);
    assert_eq!(fs::read(t.join("f.txt")).unwrap(), b"v3");
    assert_eq!(fs::read(t.join("unrelated")).unwrap(), b"also mine");
}

#[test]
fn a_target_inside_the_mirror_or_around_it_is_refused() {
    let env = planted_history(false);
    let before = tree_listing(&env.dst);
    for bad in [
        env.dst.join("inside"),
        env.dst.join(".datasafe/versions/x"),
        env.dst.clone(),
        env.dir.path().to_path_buf(),
    ] {
        let out = env
            .cmd([
                "restore".as_ref(),
                env.dst.as_os_str(),
                bad.as_os_str(),
                "--force".as_ref(),
            ])
            .output()
            .unwrap();
        assert_code(&out, 2);
        assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
        assert!(stderr(&out).contains("inside"), "{}", stderr(&out));
    }
    assert_eq!(tree_listing(&env.dst), before, "the mirror changed");
}

#[test]
fn paths_restrict_the_restore_to_a_file_or_a_folder() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.sync_ok(&["--compress"]);
    restore_ok(&env, &["docs/deep", "./top.bin"]);
    assert_eq!(
        files(&target(&env)).into_keys().collect::<Vec<_>>(),
        [PathBuf::from("docs/deep/er/b.md"), PathBuf::from("top.bin")]
    );
    // The folders above a restored path get their recorded mode.
    let mode = fs::metadata(target(&env).join("docs/deep")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700);

    // A name that only shares a prefix is not inside the folder.
    fs::remove_dir_all(target(&env)).unwrap();
    let out = restore(&env, &["doc"]);
    assert_code(&out, 2);
    assert!(!target(&env).exists(), "TARGET was created for nothing");
    assert!(
        stderr(&out).contains("at or under doc;"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_at_says_the_format() {
    let env = planted_history(false);
    for bad in [
        "yesterday",
        "2026-11-24",
        "2026-11-24T10:00:00",
        "2026-13-01 00:00:00",
    ] {
        let out = restore(&env, &["--at", bad]);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ") && err.contains("YYYY-MM-DD HH:MM:SS"),
            "{err}"
        );
    }
    assert!(!target(&env).exists(), "a refused restore created TARGET");
}

#[test]
fn a_folder_that_is_no_mirror_is_refused() {
    let env = TestEnv::new();
    env.write("a.txt", "not a mirror");
    let out = env
        .cmd([
            "restore".as_ref(),
            env.src.as_os_str(),
            target(&env).as_os_str(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("no index and no versions"),
        "{}",
        stderr(&out)
    );
    let missing = env.dir.path().join("missing");
    let out = env
        .cmd([
            "restore".as_ref(),
            missing.as_os_str(),
            target(&env).as_os_str(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn a_damaged_gzip_version_is_named_and_the_rest_is_restored() {
    let env = planted_history(true);
    // Truncate f.txt's first version in the middle of its deflate stream.
    let version = env.dst.join(format!(
        ".datasafe/versions/{}",
        datasafe::store::versions::version_name(Path::new("f.txt.gz"), local(BASE + 100), 0)
            .display()
    ));
    let damaged = gzip(&vec![b'x'; 100_000]);
    fs::write(&version, &damaged[..damaged.len() / 2]).unwrap();
    set_mtime(&version, BASE, 0);

    let out = restore(&env, &["--at", &at(BASE + 50)]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("cannot restore f.txt") && err.contains("damaged"),
        "{err}"
    );
    assert!(err.contains(&version.display().to_string()), "{err}");
    assert_eq!(fs::read(target(&env).join("gone.txt")).unwrap(), b"old");
    assert!(!target(&env).join("f.txt").exists());
    assert_eq!(count(&out, "Files restored"), 1);
}

/// A version-named symlink to a file outside the mirror (no prefix marker), and a
/// versions subfolder that is a link to a folder of version-named files outside, all
/// old enough to be restored at any moment asked: what neither `restore` nor `versions`
/// may read through.
fn plant_links_in_versions(env: &TestEnv) {
    let secret = env.dir.path().join("secret");
    fs::write(&secret, "do not copy").unwrap();
    set_mtime(&secret, BASE, 0);
    let name = datasafe::store::versions::version_name(Path::new("evil.txt"), local(BASE + 100), 0);
    symlink(&secret, env.dst.join(".datasafe/versions").join(name)).unwrap();
    let outside = env.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let inner = datasafe::store::versions::version_name(Path::new("x.txt"), local(BASE + 100), 0);
    fs::write(outside.join(&inner), "outside").unwrap();
    set_mtime(&outside.join(&inner), BASE, 0);
    symlink(&outside, env.dst.join(".datasafe/versions/sub")).unwrap();
}

#[test]
fn symlinks_planted_in_the_mirror_are_never_followed() {
    let env = planted_history(false);
    plant_links_in_versions(&env);
    // A live folder replaced behind datasafe's back by a link to elsewhere.
    env.write("dir/in.txt", "inside");
    env.sync_ok(&["--keep-versions", "0"]);
    fs::remove_dir_all(env.dst.join("dir")).unwrap();
    fs::create_dir(env.dir.path().join("elsewhere")).unwrap();
    fs::write(env.dir.path().join("elsewhere/in.txt"), "elsewhere").unwrap();
    // Old enough to be restored at the moment asked, if it were followed.
    set_mtime(&env.dir.path().join("elsewhere/in.txt"), BASE, 0);
    symlink(env.dir.path().join("elsewhere"), env.dst.join("dir")).unwrap();

    let out = restore_ok(&env, &["--at", &at(BASE + 50)]);
    let got = files(&target(&env));
    assert!(!got.contains_key(Path::new("evil.txt")), "{got:?}");
    assert!(!got.contains_key(Path::new("sub/x.txt")), "{got:?}");
    assert!(!got.contains_key(Path::new("dir/in.txt")), "{got:?}");
    assert!(
        stderr(&out).contains("in the index but not in the mirror"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn versions_never_lists_through_a_symlink_planted_in_the_mirror() {
    let env = planted_history(false);
    plant_links_in_versions(&env);
    let out = env
        .cmd([OsStr::new("versions"), env.dst.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let listed: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split("  ").nth(2).map(str::to_string))
        .collect();
    assert_eq!(listed, ["f.txt", "f.txt", "gone.txt"], "{}", stdout(&out));

    // The versions folder itself swapped for a link: no version is read through it.
    let versions = env.dst.join(".datasafe/versions");
    fs::rename(&versions, env.dir.path().join("real-versions")).unwrap();
    symlink(env.dir.path().join("real-versions"), &versions).unwrap();
    let out = env
        .cmd([OsStr::new("versions"), env.dst.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a folder (a symlink?)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn versions_lists_each_version_with_time_size_path_and_file() {
    let env = planted_history(true);
    // A bigger version, so the size shows the original (un-gzipped) size.
    plant_version(
        &env,
        "docs/big.bin.gz",
        BASE + 10,
        &vec![0u8; 5000],
        true,
        (BASE, 0),
        0o644,
    );
    let run = |args: &[&str]| {
        let mut all: Vec<&OsStr> = vec!["versions".as_ref(), env.dst.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        env.cmd(all).output().unwrap()
    };
    let out = run(&[]);
    assert_code(&out, 0);
    let line = |secs: i64, size: &str, path: &str, stored: &str| {
        let file = datasafe::store::versions::version_name(Path::new(stored), local(secs), 0);
        format!(
            "{}  {size}  {path}  .datasafe/versions/{}",
            at(secs),
            file.display()
        )
    };
    let want = [
        line(BASE + 10, "4.9 KiB", "docs/big.bin", "docs/big.bin.gz"),
        line(BASE + 100, "2 B", "f.txt", "f.txt.gz"),
        line(BASE + 200, "2 B", "f.txt", "f.txt.gz"),
        line(BASE + 150, "3 B", "gone.txt", "gone.txt.gz"),
    ];
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want);

    let out = run(&["f.txt", "--json"]);
    assert_code(&out, 0);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = datasafe::store::versions::version_name(Path::new("f.txt.gz"), local(BASE + 100), 0);
    assert_eq!(
        json[0],
        serde_json::json!({
            "path": "f.txt",
            "time": at(BASE + 100),
            "size": 2,
            "file": format!(".datasafe/versions/{}", file.display()),
        })
    );
    assert_eq!(json.as_array().unwrap().len(), 2);

    let out = run(&["docs"]);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));

    let out = run(&["nothing/here"]);
    assert_code(&out, 0);
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).contains("no versions of nothing/here"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn versions_of_a_mirror_without_any_says_so_and_a_missing_mirror_is_an_error() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.sync_ok(&[]);
    let out = env
        .cmd(["versions".as_ref(), env.dst.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).starts_with("no versions in "),
        "{}",
        stderr(&out)
    );

    let missing = env.dir.path().join("missing");
    let out = env
        .cmd(["versions".as_ref(), missing.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
}

/// A mirror holding a path of over 6,000 bytes (50 folders of 120-byte names, past
/// `PATH_MAX`), planted by hand (bash `cd`s down one folder at a time; dash cannot) and
/// recorded in its index, so this needs nothing of `sync`: `verify`, `restore` and
/// `archive` read it through the store, and `restore` writes it into TARGET folder by
/// folder.
#[test]
fn a_mirror_path_longer_than_path_max_verifies_restores_and_archives() {
    use datasafe::model::{Kind, Meta, Record, Stored};
    let env = TestEnv::new();
    env.write("top.txt", "top");
    env.sync_ok(&[]);
    let name = "n".repeat(120);
    let content = "at the bottom";
    // Every step is relative to the shell's current folder, which may be that deep.
    let down = format!("mkdir {name} && cd {name} && ").repeat(50);
    let made = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("{down}printf '{content}' > leaf.txt"))
        .current_dir(&env.dst)
        .status()
        .unwrap();
    assert!(made.success());
    let (mut idx, _) = datasafe::index::Index::open(&env.dst.join(".datasafe")).unwrap();
    let meta = |size, mode| Meta {
        size,
        mtime: filetime::FileTime::from_unix_time(BASE, 7),
        mode,
    };
    let record = |kind, meta, sha256| Record {
        kind,
        meta,
        sha256,
        stored: Stored::Plain,
        target: None,
        disk: None,
        attrs: Default::default(),
        link: None,
    };
    let mut rel = PathBuf::new();
    for _ in 0..50 {
        rel.push(&name);
        idx.put(&rel, &record(Kind::Dir, meta(0, 0o755), None))
            .unwrap();
    }
    let leaf = rel.join("leaf.txt");
    assert!(leaf.as_os_str().len() > 6000);
    let digest = datasafe::hash::hash_reader(content.as_bytes()).unwrap();
    let leaf_record = record(Kind::File, meta(content.len() as u64, 0o644), Some(digest));
    idx.put(&leaf, &leaf_record).unwrap();
    idx.commit().unwrap();
    drop(idx);

    let out = env
        .cmd([OsStr::new("verify"), env.dst.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(count(&out, "Files verified"), 2, "{}", stdout(&out));

    restore_ok(&env, &[]);
    let got = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{}cat leaf.txt",
            format!("cd {name} && ").repeat(50)
        ))
        .current_dir(target(&env))
        .output()
        .unwrap();
    assert_eq!(stdout(&got), content, "{}", stderr(&got));

    let tar = env.dir.path().join("deep.tar");
    let out = env
        .cmd([OsStr::new("archive"), env.dst.as_os_str(), tar.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let names = stdout(&listed);
    assert!(
        names
            .lines()
            .any(|l| l.len() > 6000 && l.ends_with("/leaf.txt")),
        "{}",
        &names[..names.len().min(300)]
    );
}
