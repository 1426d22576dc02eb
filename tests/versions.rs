//! Versions and the deletion guard, driven through the binary: old copies kept on modify
//! and delete with the right names (gzipped for a gzipped mirror), moved rather than
//! recopied, pruned by retention, none with `--keep-versions 0`; the guard on an emptied
//! source and on a mass delete, for sync and while watching.

use crate::common;

use common::dst::Dst;
use common::watcher::*;
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where versions are kept, relative to DST.
const VERSIONS: &str = ".datasafe/versions";

/// Every version in the mirror, relative to the versions folder, sorted (in a bucket:
/// the keys under `dst/.datasafe/versions/`, from a plain listing).
fn versions(env: &TestEnv) -> Vec<PathBuf> {
    env.dst_files(VERSIONS)
}

/// The content of the version `rel` (relative to the versions folder).
fn read_version(env: &TestEnv, rel: &Path) -> Vec<u8> {
    let path = Path::new(VERSIONS).join(rel);
    env.dst_read(&path)
        .unwrap_or_else(|| panic!("no version {}", path.display()))
}

/// True if `name` is `<stem>_YYYYMMDD_HHMMSS<rest>` (optionally `-N` after the seconds).
fn is_version_of(name: &Path, stem: &str, rest: &str) -> bool {
    let name = name.to_string_lossy();
    let Some(tail) = name.strip_prefix(&format!("{stem}_")) else {
        return false;
    };
    let Some(stamp) = tail.strip_suffix(rest) else {
        return false;
    };
    let (stamp, _seq) = stamp.split_once('-').unwrap_or((stamp, ""));
    stamp.len() == 15
        && stamp.bytes().enumerate().all(|(i, b)| {
            if i == 8 {
                b == b'_'
            } else {
                b.is_ascii_digit()
            }
        })
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn modify_and_delete_keep_the_old_copy_under_a_timestamped_name() {
    modify_and_delete_keep_the_old_copy_under_a_timestamped_name_on(Dst::Local);
}

#[test]
fn modify_and_delete_keep_the_old_copy_under_a_timestamped_name_sftp() {
    modify_and_delete_keep_the_old_copy_under_a_timestamped_name_on(Dst::Sftp);
}

#[test]
fn modify_and_delete_keep_the_old_copy_under_a_timestamped_name_s3() {
    modify_and_delete_keep_the_old_copy_under_a_timestamped_name_on(Dst::S3);
}

fn modify_and_delete_keep_the_old_copy_under_a_timestamped_name_on(dst: Dst) {
    let env = TestEnv::on(dst);
    env.write("docs/report.txt", "first");
    env.write("notes", "keep me");
    env.sync_ok(&[]);
    // A bucket has no inodes: there a version is a copy made on the server.
    let inode = |rel: &Path| match dst {
        Dst::S3 => None,
        _ => Some(fs::metadata(env.dst.join(rel)).unwrap().ino()),
    };
    let old_inode = inode(Path::new("docs/report.txt"));

    env.write("docs/report.txt", "second!");
    fs::remove_file(env.src.join("notes")).unwrap();
    env.sync_ok(&[]);

    env.assert_mirrored(false);
    let kept = versions(&env);
    assert_eq!(kept.len(), 2, "{kept:?}");
    let report = kept
        .iter()
        .find(|p| p.parent() == Some(Path::new("docs")))
        .unwrap_or_else(|| panic!("no version in docs/: {kept:?}"));
    assert!(
        is_version_of(Path::new(report.file_name().unwrap()), "report", ".txt"),
        "{report:?}"
    );
    assert_eq!(read_version(&env, report), b"first");
    assert_eq!(
        inode(&Path::new(VERSIONS).join(report)),
        old_inode,
        "the old copy was recopied, not moved"
    );
    let notes = kept
        .iter()
        .find(|p| p.parent() == Some(Path::new("")))
        .unwrap();
    assert!(is_version_of(notes, "notes", ""), "{notes:?}");
    assert_eq!(read_version(&env, notes), b"keep me");

    // An unchanged run keeps nothing more.
    env.sync_ok(&[]);
    assert_eq!(versions(&env).len(), 2);
}

#[test]
fn a_gzipped_mirror_keeps_gzipped_versions_and_a_deleted_folder_keeps_its_files() {
    a_gzipped_mirror_keeps_gzipped_versions_and_a_deleted_folder_keeps_its_files_on(Dst::Local);
}

#[test]
fn a_gzipped_mirror_keeps_gzipped_versions_and_a_deleted_folder_keeps_its_files_sftp() {
    a_gzipped_mirror_keeps_gzipped_versions_and_a_deleted_folder_keeps_its_files_on(Dst::Sftp);
}

#[test]
fn a_gzipped_mirror_keeps_gzipped_versions_and_a_deleted_folder_keeps_its_files_s3() {
    a_gzipped_mirror_keeps_gzipped_versions_and_a_deleted_folder_keeps_its_files_on(Dst::S3);
}

fn a_gzipped_mirror_keeps_gzipped_versions_and_a_deleted_folder_keeps_its_files_on(dst: Dst) {
    let env = TestEnv::on(dst);
    env.write("dir/a.txt", "alpha");
    env.write("dir/sub/b.md", "beta");
    env.write("c.tar", "tarball");
    env.sync_ok(&["--compress"]);
    // Not an append (an appended file keeps a prefix marker, not a copy).
    env.write("c.tar", "a new tarball");
    fs::remove_dir_all(env.src.join("dir")).unwrap();
    env.sync_ok(&["--compress"]);
    env.assert_mirrored(true);

    let kept = versions(&env);
    assert_eq!(kept.len(), 3, "{kept:?}");
    let find = |dir: &str, stem: &str, rest: &str| -> Vec<u8> {
        let hit = kept
            .iter()
            .find(|p| {
                p.parent() == Some(Path::new(dir))
                    && is_version_of(Path::new(p.file_name().unwrap()), stem, rest)
            })
            .unwrap_or_else(|| panic!("no {dir}/{stem}_…{rest} in {kept:?}"));
        read_version(&env, hit)
    };
    assert_eq!(gunzip(&find("", "c", ".tar.gz")), b"tarball");
    assert_eq!(gunzip(&find("dir", "a", ".txt.gz")), b"alpha");
    assert_eq!(gunzip(&find("dir/sub", "b", ".md.gz")), b"beta");
}

#[test]
fn keep_versions_0_keeps_none_and_turning_compression_on_keeps_none() {
    keep_versions_0_keeps_none_and_turning_compression_on_keeps_none_on(Dst::Local);
}

#[test]
fn keep_versions_0_keeps_none_and_turning_compression_on_keeps_none_sftp() {
    keep_versions_0_keeps_none_and_turning_compression_on_keeps_none_on(Dst::Sftp);
}

#[test]
fn keep_versions_0_keeps_none_and_turning_compression_on_keeps_none_s3() {
    keep_versions_0_keeps_none_and_turning_compression_on_keeps_none_on(Dst::S3);
}

fn keep_versions_0_keeps_none_and_turning_compression_on_keeps_none_on(dst: Dst) {
    let env = TestEnv::on(dst);
    env.write("a.txt", "one");
    env.sync_ok(&["--keep-versions", "0"]);
    env.write("a.txt", "two");
    env.sync_ok(&["--keep-versions", "0"]);
    assert!(versions(&env).is_empty());
    // A conversion is not a change of content.
    env.sync_ok(&["--compress"]);
    assert!(versions(&env).is_empty(), "{:?}", versions(&env));
    assert!(env.dst_has("a.txt.gz") && !env.dst_has("a.txt"));
}

/// `report_<local time of now - age>.txt` planted in DST's versions folder; its path
/// relative to DST.
fn plant_version(env: &TestEnv, age: chrono::Duration, seq: &str) -> PathBuf {
    let at = chrono::Local::now().naive_local() - age;
    let name = format!("report_{}{seq}.txt", at.format("%Y%m%d_%H%M%S"));
    let rel = Path::new(VERSIONS).join("docs").join(name);
    env.dst_put(&rel, "old");
    rel
}

#[test]
fn retention_prunes_versions_by_the_time_in_their_names() {
    retention_prunes_versions_by_the_time_in_their_names_on(Dst::Local);
}

#[test]
fn retention_prunes_versions_by_the_time_in_their_names_sftp() {
    retention_prunes_versions_by_the_time_in_their_names_on(Dst::Sftp);
}

#[test]
fn retention_prunes_versions_by_the_time_in_their_names_s3() {
    retention_prunes_versions_by_the_time_in_their_names_on(Dst::S3);
}

fn retention_prunes_versions_by_the_time_in_their_names_on(dst: Dst) {
    let env = TestEnv::on(dst);
    env.write("docs/report.txt", "now");
    env.sync_ok(&[]);
    let h = chrono::Duration::hours;
    let d = chrono::Duration::days;
    let recent = plant_version(&env, chrono::Duration::minutes(10), "");
    let recent2 = plant_version(&env, chrono::Duration::minutes(20), "");
    let hour_a = plant_version(&env, h(3) + chrono::Duration::minutes(10), "");
    let hour_b = plant_version(&env, h(3) + chrono::Duration::minutes(40), "");
    let day_a = plant_version(&env, d(5) + h(1), "");
    let day_b = plant_version(&env, d(5) + h(5), "");
    let ancient = plant_version(&env, d(40), "");
    let unrelated = Path::new(VERSIONS).join("docs/not-a-version.txt");
    env.dst_put(&unrelated, "x");
    if dst.is_remote() {
        // A remote DST prunes when a pass keeps a version (else at most once an hour,
        // so a no-op pass lists nothing remote): this pass keeps one.
        env.write("docs/report.txt", "changed");
    }

    let out = env.sync_ok(&["-v"]);
    let exists = |p: &PathBuf| env.dst_has(p);
    // Staggered: all of the last hour; one per hour; one per day; nothing past 30 days.
    assert!(exists(&recent) && exists(&recent2), "{}", stderr(&out));
    assert!(exists(&hour_a) && !exists(&hour_b), "{}", stderr(&out));
    assert!(exists(&day_a) && !exists(&day_b), "{}", stderr(&out));
    assert!(!exists(&ancient));
    assert!(
        exists(&unrelated),
        "a file not named like a version is not touched"
    );
    let log = stderr(&out) + &stdout(&out);
    assert!(
        log.contains("Pruned version: .datasafe/versions/docs/report_"),
        "{log}"
    );

    // A plain duration keeps everything younger.
    let out = env.sync_ok(&["--keep-versions", "2h"]);
    assert!(exists(&recent) && exists(&recent2), "{}", stderr(&out));
    assert!(!exists(&hour_a) && !exists(&day_a));
}

#[test]
fn an_emptied_source_deletes_nothing_without_force() {
    an_emptied_source_deletes_nothing_without_force_on(Dst::Local);
}

#[test]
fn an_emptied_source_deletes_nothing_without_force_sftp() {
    an_emptied_source_deletes_nothing_without_force_on(Dst::Sftp);
}

#[test]
fn an_emptied_source_deletes_nothing_without_force_s3() {
    an_emptied_source_deletes_nothing_without_force_on(Dst::S3);
}

fn an_emptied_source_deletes_nothing_without_force_on(dst: Dst) {
    let env = TestEnv::on(dst);
    env.write("a.txt", "a");
    env.write("sub/b.txt", "b");
    env.sync_ok(&[]);
    fs::remove_file(env.src.join("a.txt")).unwrap();
    fs::remove_dir_all(env.src.join("sub")).unwrap();

    let out = env.sync(&[]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("is empty") && err.contains("--force"), "{err}");
    assert!(err.contains(&env.src.display().to_string()), "{err}");
    assert!(env.dst_has("a.txt") && env.dst_has("sub/b.txt"));

    let out = env.sync_ok(&["--force"]);
    assert_eq!(count(&out, "Deleted"), 2);
    assert!(!env.dst_has("a.txt") && !env.dst_has("sub"));
    assert_eq!(versions(&env).len(), 2, "forced deletions stay recoverable");
}

#[test]
fn a_mass_delete_is_held_while_the_rest_is_mirrored() {
    a_mass_delete_is_held_while_the_rest_is_mirrored_on(Dst::Local);
}

#[test]
fn a_mass_delete_is_held_while_the_rest_is_mirrored_sftp() {
    a_mass_delete_is_held_while_the_rest_is_mirrored_on(Dst::Sftp);
}

#[test]
fn a_mass_delete_is_held_while_the_rest_is_mirrored_s3() {
    a_mass_delete_is_held_while_the_rest_is_mirrored_on(Dst::S3);
}

fn a_mass_delete_is_held_while_the_rest_is_mirrored_on(dst: Dst) {
    let env = TestEnv::on(dst);
    for i in 0..150 {
        env.write(format!("f/{i:03}.txt"), format!("{i}"));
    }
    env.write("keep.txt", "k");
    env.sync_ok(&[]);
    for i in 0..120 {
        fs::remove_file(env.src.join(format!("f/{i:03}.txt"))).unwrap();
    }
    env.write("new.txt", "new");
    env.write("keep.txt", "k2");

    let out = env.sync(&[]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("held back 120 deletions"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(env.dst_has("f/000.txt"), "a held deletion went through");
    assert_eq!(env.dst_read("new.txt").unwrap(), b"new");
    assert_eq!(env.dst_read("keep.txt").unwrap(), b"k2");

    // Below the threshold (100 files) nothing is held.
    let few = TestEnv::on(dst);
    for i in 0..150 {
        few.write(format!("{i:03}"), "x");
    }
    few.sync_ok(&[]);
    for i in 0..100 {
        fs::remove_file(few.src.join(format!("{i:03}"))).unwrap();
    }
    few.sync_ok(&[]);

    // --max-delete sets the limit; --force lets everything through.
    let out = env.sync(&["--max-delete", "119"]);
    assert_code(&out, 1);
    env.sync_ok(&["--max-delete", "120"]);
    env.assert_mirrored(false);
}

#[test]
fn max_delete_and_force_from_the_config_file() {
    max_delete_and_force_from_the_config_file_on(Dst::Local);
}

#[test]
fn max_delete_and_force_from_the_config_file_sftp() {
    max_delete_and_force_from_the_config_file_on(Dst::Sftp);
}

#[test]
fn max_delete_and_force_from_the_config_file_s3() {
    max_delete_and_force_from_the_config_file_on(Dst::S3);
}

fn max_delete_and_force_from_the_config_file_on(dst: Dst) {
    let env = TestEnv::on(dst);
    for i in 0..10 {
        env.write(format!("{i}.txt"), "x");
    }
    env.sync_ok(&[]);
    for i in 0..5 {
        fs::remove_file(env.src.join(format!("{i}.txt"))).unwrap();
    }
    let config = env.dir.path().join("c.toml");
    // An sftp:// dest with the config's own ssh_command (the variable, which would
    // win over it, is taken away below).
    let ssh = match &env.sshd {
        Some(sshd) => format!("ssh_command = {:?}\n", sshd.ssh_command()),
        None => String::new(),
    };
    let write_config = |extra: &str| {
        let text = format!(
            "[[mirror]]\nsource = {:?}\ndest = {:?}\nmax_delete = 3\n{ssh}{extra}",
            env.src.display().to_string(),
            env.dst_arg().to_string_lossy()
        );
        fs::write(&config, text).unwrap();
    };
    write_config("");
    let run = || {
        env.cmd(["sync", "--config", config.to_str().unwrap()])
            .env_remove(common::sshd::SSH_COMMAND_VAR)
            .output()
            .unwrap()
    };
    let out = run();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("max_delete = 3"), "{}", stderr(&out));
    write_config("force = true\n");
    assert_code(&run(), 0);
    env.assert_mirrored(false);
}

#[test]
fn watch_keeps_versions_of_the_deletions_that_empty_the_source() {
    watch_keeps_versions_of_the_deletions_that_empty_the_source_on(Dst::Local);
}

#[test]
fn watch_keeps_versions_of_the_deletions_that_empty_the_source_sftp() {
    watch_keeps_versions_of_the_deletions_that_empty_the_source_on(Dst::Sftp);
}

#[test]
fn watch_keeps_versions_of_the_deletions_that_empty_the_source_s3() {
    watch_keeps_versions_of_the_deletions_that_empty_the_source_on(Dst::S3);
}

fn watch_keeps_versions_of_the_deletions_that_empty_the_source_on(dst: Dst) {
    let _lock = shared();
    let env = TestEnv::on(dst);
    env.write("a.txt", "one");
    env.write("b.txt", "bee");
    let w = Watcher::ready(&env, &[], "w");

    env.write("a.txt", "two");
    w.wait_env_mirrored(&env, false);
    assert!(
        wait_until(DEADLINE, || versions(&env)
            .iter()
            .any(|p| is_version_of(p, "a", ".txt"))),
        "no version of a.txt{}",
        w.context()
    );

    // Everything removed at once: deletions that arrive as events are mirrored even when
    // they empty the source (issue 10), each kept as a version.
    for name in ["a.txt", "b.txt", "probe.txt"] {
        fs::remove_file(env.src.join(name)).unwrap();
    }
    assert!(
        wait_until(DEADLINE, || !env.dst_has("b.txt")
            && versions(&env).iter().any(|p| is_version_of(p, "b", ".txt"))),
        "the emptied source was not mirrored with versions kept{}",
        w.context()
    );

    // And the pair goes on watching.
    env.write("c.txt", "sea");
    assert!(
        wait_until(DEADLINE, || env.dst_has("c.txt")),
        "did not go on watching{}",
        w.context()
    );
}

#[test]
fn regression_a_compression_toggle_with_a_changed_file_keeps_the_old_content() {
    regression_a_compression_toggle_with_a_changed_file_keeps_the_old_content_on(Dst::Local);
}

#[test]
fn regression_a_compression_toggle_with_a_changed_file_keeps_the_old_content_sftp() {
    regression_a_compression_toggle_with_a_changed_file_keeps_the_old_content_on(Dst::Sftp);
}

#[test]
fn regression_a_compression_toggle_with_a_changed_file_keeps_the_old_content_s3() {
    regression_a_compression_toggle_with_a_changed_file_keeps_the_old_content_on(Dst::S3);
}

fn regression_a_compression_toggle_with_a_changed_file_keeps_the_old_content_on(dst: Dst) {
    let env = TestEnv::on(dst);
    env.write("a.txt", "one");
    env.sync_ok(&[]);
    env.write("a.txt", "two");
    env.sync_ok(&[]);
    env.write("a.txt", "three");
    env.sync_ok(&["--compress"]);
    let kept: Vec<Vec<u8>> = versions(&env)
        .iter()
        .map(|p| read_version(&env, p))
        .collect();
    assert!(
        kept.contains(&b"two".to_vec()),
        "'two' was lost in the conversion: {kept:?}"
    );
    // A conversion alone keeps nothing more.
    env.sync_ok(&[]);
    assert_eq!(versions(&env).len(), kept.len());
}

#[test]
fn regression_sync_checksum_replaces_a_mirror_file_damaged_behind_its_back() {
    let env = TestEnv::new();
    env.write("p.bin", vec![7u8; 5000]);
    env.sync_ok(&[]);
    let file = env.dst.join("p.bin");
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&file).unwrap());
    let mut bytes = fs::read(&file).unwrap();
    bytes[100] ^= 1;
    fs::write(&file, &bytes).unwrap();
    filetime::set_file_mtime(&file, mtime).unwrap();
    env.sync_ok(&["--checksum"]);
    assert_mirrored(&env.src, &env.dst, false);
}

#[test]
fn regression_a_dst_reached_through_a_symlink_works_like_the_folder() {
    let env = TestEnv::new();
    env.write("a.txt", "one");
    env.sync_ok(&[]);
    let link = env.dir.path().join("link");
    std::os::unix::fs::symlink(&env.dst, &link).unwrap();
    env.write("a.txt", "two");
    let out = env
        .cmd(["sync".as_ref(), env.src.as_os_str(), link.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(!stderr(&out).contains("index"), "{}", stderr(&out));
    let out = env
        .cmd(["verify".as_ref(), link.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_mirrored(&env.src, &env.dst, false);
}

#[test]
fn regression_verify_right_after_a_watched_change_sees_it_in_the_index() {
    let _lock = shared();
    let env = TestEnv::new();
    for i in 0..5 {
        env.write(format!("f{i}"), format!("{i}"));
    }
    let w = Watcher::ready(&env, &[], "w");
    env.write("f1", "changed");
    env.write("created", "new");
    assert!(wait_until(DEADLINE, || {
        fs::read(env.dst.join("f1")).ok().as_deref() == Some(b"changed".as_slice())
            && env.dst.join("created").exists()
    }));
    // The index is committed with the change (give the commit a moment: it follows the
    // rename that made the file visible).
    let clean = wait_until(std::time::Duration::from_secs(1), || {
        let out = env
            .cmd([
                "verify".as_ref(),
                env.dst.as_os_str(),
                "--source".as_ref(),
                env.src.as_os_str(),
            ])
            .output()
            .unwrap();
        out.status.code() == Some(0)
    });
    assert!(clean, "verify kept failing after the change{}", w.context());
}

#[test]
fn regression_a_record_of_a_file_gone_from_both_sides_is_forgotten() {
    // As after a run killed between deleting a file and committing the index.
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("b.txt", "b");
    env.sync_ok(&[]);
    fs::remove_file(env.src.join("a.txt")).unwrap();
    fs::remove_file(env.dst.join("a.txt")).unwrap();
    env.sync_ok(&[]);
    let out = env
        .cmd(["verify".as_ref(), env.dst.as_os_str()])
        .output()
        .unwrap();
    assert_code(&out, 0);
}
