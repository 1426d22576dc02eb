//! What only an `sftp://` DST has, through the binary and a real sshd on 127.0.0.1: a
//! second pass that lists nothing remote (counted in the SFTP server's own request log),
//! the local index lost and rebuilt from the mirror's published copy, the scp form
//! `host:path`, `watch` keeping renames as renames, and paths the server resolves
//! through a symlink. The behaviours a local DST shares are the `_sftp` variants in
//! `sync`, `watch`, `versions` and `model` (see `common::dst`).

use crate::common;

use common::dst::Dst;
use common::sshd::{Sshd, SshdOptions};
use common::watcher::*;
use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A server whose SFTP subsystem logs each request with its path (`-l VERBOSE`).
fn logging_sshd() -> Arc<Sshd> {
    Arc::new(Sshd::start_with(SshdOptions {
        sftp_log_level: Some("VERBOSE"),
        ..Default::default()
    }))
}

/// The SFTP log's lines after `from` (a length of [`Sshd::sftp_log`] taken earlier) that
/// record an SFTP request of `kind` (`"opendir"`, `"lstat name"`, `"open"`…).
fn requests(sshd: &Sshd, from: usize, kind: &str) -> Vec<String> {
    let log = sshd.sftp_log();
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains(&format!("{kind} \"")))
        .map(str::to_owned)
        .collect()
}

fn tree(env: &TestEnv) {
    for d in 0..5 {
        for f in 0..20 {
            env.write(format!("d{d}/sub/f{f}.txt"), format!("{d} {f}"));
        }
    }
    symlink("d0/sub/f0.txt", env.src.join("link")).unwrap();
    fs::create_dir_all(env.src.join("empty")).unwrap();
}

/// The issue: "with a local index that matches the remote's generation, a pass lists
/// nothing remote". The server logs every `opendir`; the second pass sends none, and
/// no `lstat` or `open` of a mirrored file either.
#[test]
fn a_second_sync_lists_nothing_remote_and_changes_nothing() {
    let env = TestEnv::on_sshd(logging_sshd());
    let sshd = env.sshd.clone().unwrap();
    tree(&env);
    env.sync_ok(&[]);
    env.assert_mirrored(false);
    // The log holds requests at all (else the counts below prove nothing).
    assert!(
        !requests(&sshd, 0, "open").is_empty(),
        "{}",
        sshd.sftp_log()
    );
    assert!(
        !requests(&sshd, 0, "lstat name").is_empty(),
        "{}",
        sshd.sftp_log()
    );
    let first = sshd.sftp_log().len();
    let started = Instant::now();
    let out = env.sync_ok(&[]);
    let took = started.elapsed();
    assert_eq!(count(&out, "Files backed up"), 0, "{}", stdout(&out));
    assert_eq!(count(&out, "Deleted"), 0);
    assert_eq!(count(&out, "Updated"), 0);
    assert_eq!(count(&out, "Unchanged"), 101, "{}", stdout(&out));
    let listed = requests(&sshd, first, "opendir");
    // Two small folders are listed on purpose: the temp folder (the lock holder sweeps
    // what a killed run left) and the versions folder (retention prunes by the times in
    // the names). The mirror itself is not.
    let listed: Vec<&String> = listed
        .iter()
        .filter(|l| !l.contains("/.datasafe/tmp\"") && !l.contains("/.datasafe/versions"))
        .collect();
    assert!(listed.is_empty(), "the second pass listed: {listed:#?}");
    let looked: Vec<String> = ["lstat name", "stat name", "open"]
        .iter()
        .flat_map(|k| requests(&sshd, first, k))
        .filter(|l| l.contains("/dst/d"))
        .collect();
    assert!(
        looked.is_empty(),
        "the second pass looked at files: {looked:#?}"
    );
    // Loose: one login and a handful of requests, on a loaded CI machine.
    assert!(took < Duration::from_secs(10), "a no-op pass took {took:?}");
}

/// Stricter than the test above: with versions kept, a no-op pass lists nothing remote
/// either. Pruning by retention lists the versions folder (to prune by the times in the
/// names); on a remote DST it runs when the pass kept versions, else at most once an hour.
#[test]
fn a_second_sync_with_versions_kept_lists_nothing_remote() {
    let env = TestEnv::on_sshd(logging_sshd());
    let sshd = env.sshd.clone().unwrap();
    tree(&env);
    env.sync_ok(&[]);
    for d in 0..5 {
        env.write(format!("d{d}/sub/f0.txt"), "changed: the old one is kept");
    }
    env.sync_ok(&[]);
    let first = sshd.sftp_log().len();
    let out = env.sync_ok(&[]);
    assert_eq!(count(&out, "Files backed up"), 0, "{}", stdout(&out));
    let listed: Vec<String> = requests(&sshd, first, "opendir")
        .into_iter()
        .filter(|l| !l.contains("/.datasafe/tmp\""))
        .collect();
    assert!(listed.is_empty(), "the second pass listed: {listed:#?}");
}

/// The local index (under `XDG_STATE_HOME`) lost: the next pass takes the mirror's own
/// copy, `DST/.datasafe/index.db`, and copies nothing; a change after is mirrored.
#[test]
fn an_index_lost_locally_is_taken_from_the_mirror_and_nothing_is_copied() {
    let env = TestEnv::on(Dst::Sftp);
    tree(&env);
    env.sync_ok(&["--compress"]);
    assert!(
        env.dst.join(".datasafe/index.db").is_file(),
        "no published index"
    );
    fs::remove_dir_all(env.state_home()).unwrap();
    let out = env.sync_ok(&["--compress"]);
    assert_eq!(count(&out, "Files backed up"), 0, "{}", stdout(&out));
    assert_eq!(count(&out, "Updated"), 0, "{}", stdout(&out));
    assert_eq!(count(&out, "Deleted"), 0, "{}", stdout(&out));
    env.assert_mirrored(true);
    env.write("d1/sub/f1.txt", "changed");
    let out = env.sync_ok(&["--compress"]);
    assert_eq!(count(&out, "Files backed up"), 1, "{}", stdout(&out));
    env.assert_mirrored(true);
}

/// `dstest:/abs/path` (an alias from the ssh config) names the same mirror as the URL.
#[test]
fn the_scp_form_mirrors_like_the_url() {
    let env = TestEnv::on(Dst::Sftp);
    let sshd = env.sshd.clone().unwrap();
    tree(&env);
    let scp = sshd.scp_form(&env.dst);
    let run = |args: &[&str]| {
        let mut all = vec!["sync", env.src.to_str().unwrap(), &scp];
        all.extend(args);
        env.cmd(all).output().unwrap()
    };
    let out = run(&[]);
    assert_code(&out, 0);
    env.assert_mirrored(false);
    let again = run(&[]);
    assert_code(&again, 0);
    assert_eq!(count(&again, "Files backed up"), 0, "{}", stdout(&again));
}

/// `watch` to an sftp DST: a file and a folder renamed in SRC are renamed in DST (the
/// log says so, and the inodes are kept: nothing was copied again).
#[test]
fn watch_renames_stay_renames() {
    let _lock = shared();
    let env = TestEnv::on(Dst::Sftp);
    env.write("a.txt", "a file to rename");
    env.write("dir/inner.txt", "in a folder to rename");
    let w = Watcher::ready(&env, &[], "w");
    w.wait_env_mirrored(&env, false);
    let ino = |p: &str| fs::symlink_metadata(env.dst.join(p)).unwrap().ino();
    let (file, inner) = (ino("a.txt"), ino("dir/inner.txt"));

    fs::rename(env.src.join("a.txt"), env.src.join("b.txt")).unwrap();
    fs::rename(env.src.join("dir"), env.src.join("dir2")).unwrap();
    w.wait_env_mirrored(&env, false);
    let said = wait_until(DEADLINE, || {
        let out = w.stdout();
        out.lines().any(|l| l == "renamed a.txt -> b.txt")
            && out.lines().any(|l| l == "renamed dir -> dir2")
    });
    assert!(said, "no rename lines{}", w.context());
    assert_eq!(ino("b.txt"), file, "a.txt was copied again{}", w.context());
    assert_eq!(
        ino("dir2/inner.txt"),
        inner,
        "dir was copied again{}",
        w.context()
    );
    assert!(!w.stdout().contains("copied b.txt"), "{}", w.context());
}

/// A source folder replaced by a symlink to a folder (here outside the mirror) holding
/// a file of the same name as one the old folder held: the old file's record is deleted
/// by a path the SFTP server resolves through the new symlink, and must not reach what
/// the link points at. Found by `model::sync_mirrors_random_operations_sftp` (the link
/// pointed at another folder of the mirror, whose file went into the versions folder
/// and stayed missing: the index still listed it).
#[test]
fn regression_a_folder_replaced_by_a_symlink_is_never_followed_on_the_server() {
    let env = TestEnv::on(Dst::Sftp);
    let outside = env.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("a"), "not the mirror's").unwrap();
    env.write("b/a", "inside");
    env.write("b/c/d", "deeper");
    env.write("f/a", "a folder of the mirror");
    env.sync_ok(&[]);
    for target in [Path::new("../f"), outside.as_path()] {
        fs::remove_dir_all(env.src.join("b")).unwrap();
        symlink(target, env.src.join("b")).unwrap();
        env.sync_ok(&[]);
        assert_eq!(
            fs::read(outside.join("a")).unwrap(),
            b"not the mirror's",
            "a file outside the mirror was touched"
        );
        env.assert_mirrored(false);
        // Back to a folder for the next round.
        fs::remove_file(env.src.join("b")).unwrap();
        env.write("b/a", "inside");
        env.write("b/c/d", "deeper");
        env.sync_ok(&[]);
        env.assert_mirrored(false);
    }
    assert!(outside.join("a").exists());
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        1,
        "{outside:?} changed"
    );
}

/// `sync` with this tree's DST and ssh command, but the state folder `state` (another
/// machine, as far as the remote mirror's index goes).
fn sync_from(env: &TestEnv, state: &Path, src: &Path) -> std::process::Output {
    let mut cmd = env.cmd([
        std::ffi::OsStr::new("sync"),
        src.as_os_str(),
        env.dst_arg().as_os_str(),
    ]);
    cmd.env("XDG_STATE_HOME", state);
    cmd.output().unwrap()
}

/// QA: two machines syncing one remote mirror within the same second, with index copies
/// of the same size: the first machine's next sync must see that the mirror changed
/// (each copy has its own id in `.datasafe/index.id`), not trust its own index.
#[test]
fn regression_a_copy_published_by_another_machine_in_the_same_second_is_noticed() {
    let env = TestEnv::on(Dst::Sftp);
    let (a, b) = (env.dir.path().join("sa"), env.dir.path().join("sb"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("a"), "A").unwrap();
    fs::write(b.join("b"), "B").unwrap();
    let (state_a, state_b) = (
        env.dir.path().join("state-a"),
        env.dir.path().join("state-b"),
    );
    for _ in 0..3 {
        assert_code(&sync_from(&env, &state_a, &a), 0);
        assert_code(&sync_from(&env, &state_b, &b), 0);
        let out = sync_from(&env, &state_a, &a);
        assert_code(&out, 0);
        assert!(env.dst.join("a").exists(), "{}", stdout(&out));
        assert!(!env.dst.join("b").exists(), "{}", stdout(&out));
    }
}

/// QA: a watcher killed with -9 leaves commits its mirror's copy of the index does not
/// hold (it is published at most every 30 s). A sync from a fresh state folder (another
/// machine) must not trust that copy: a file made and then deleted in the source meanwhile
/// is deleted from the mirror, not left there forever.
#[test]
fn regression_an_index_copy_of_a_killed_writer_is_not_trusted_without_a_listing() {
    let env = TestEnv::on(Dst::Sftp);
    env.write("base", "b");
    env.sync_ok(&[]);
    let watcher = Watcher::ready(&env, &["--debounce", "50ms"], "w");
    for i in 1..=3 {
        env.write(format!("n{i}"), format!("{i}"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(1..=3).all(|i| env.dst.join(format!("n{i}")).exists()) {
        assert!(
            Instant::now() < deadline,
            "the watcher never mirrored n1..n3"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL: no last publication, no clean close.
    unsafe { libc::kill(watcher.pid(), libc::SIGKILL) };
    drop(watcher);
    fs::remove_file(env.src.join("n1")).unwrap();
    let fresh = env.dir.path().join("fresh-state");
    let out = sync_from(&env, &fresh, &env.src);
    assert_code(&out, 0);
    assert!(!env.dst.join("n1").exists(), "{}", stdout(&out));
    env.assert_mirrored(false);
    // Nothing was copied again: the listing matched what was there.
    assert_eq!(count(&out, "Files backed up"), 0, "{}", stdout(&out));
}

/// QA: a DST that is a symlink to a folder on the server was refused ("Failure"); it is
/// followed, as for a local DST and by rsync (inside the mirror nothing is followed).
#[test]
fn a_dst_that_is_a_symlink_to_a_folder_on_the_server_is_followed() {
    let env = TestEnv::on(Dst::Sftp);
    env.write("a.txt", "a");
    let real = env.dir.path().join("real");
    fs::create_dir_all(&real).unwrap();
    let link = env.dir.path().join("link");
    symlink(&real, &link).unwrap();
    let url = env.sshd.as_ref().unwrap().url(&link);
    let out = env
        .cmd(["sync".as_ref(), env.src.as_os_str(), url.as_ref()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(fs::read_to_string(real.join("a.txt")).unwrap(), "a");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // A DST that is a file says so in one line.
    let file = env.dir.path().join("a-file");
    fs::write(&file, "x").unwrap();
    let url = env.sshd.as_ref().unwrap().url(&file);
    let out = env
        .cmd(["sync".as_ref(), env.src.as_os_str(), url.as_ref()])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("is not a folder"), "{}", stderr(&out));
}

/// QA: a lock file that does not say who holds it was taken over at once — but another
/// process's exclusive create leaves it empty for a moment. Young, it is respected; old
/// (30 s), it is taken over with a warning.
#[test]
fn a_young_lock_without_a_holder_is_respected_and_an_old_one_taken_over() {
    let env = TestEnv::on(Dst::Sftp);
    env.write("a.txt", "a");
    env.sync_ok(&[]);
    let lock = env.dst.join(".datasafe/lock");
    fs::write(&lock, "").unwrap();
    let out = env.sync(&[]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("another datasafe process"),
        "{}",
        stderr(&out)
    );
    let old = chrono::Utc::now().timestamp() - 120;
    set_mtime(&lock, old, 0);
    let out = env.sync(&[]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("does not say who holds it"),
        "{}",
        stderr(&out)
    );
}

/// QA: `agent print` with `DATASAFE_SSH_COMMAND` set wrote a unit running plain `ssh`:
/// the environment's ssh command is carried into the unit as `--ssh-command`.
#[test]
fn the_agent_carries_the_environments_ssh_command_into_the_unit() {
    let env = TestEnv::on(Dst::Sftp);
    let out = env
        .cmd([
            "agent".as_ref(),
            "print".as_ref(),
            "--platform".as_ref(),
            "systemd".as_ref(),
            env.src.as_os_str(),
            env.dst_arg().as_os_str(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let unit = stdout(&out);
    let ssh = env.sshd.as_ref().unwrap().ssh_command();
    assert!(unit.contains("--ssh-command"), "{unit}");
    assert!(unit.contains(&ssh), "{unit}");
    // A remote DST is not made a path on this machine.
    assert!(unit.contains("sftp://"), "{unit}");
}

/// A file that is already in the mirror but not in the index (a pass whose answer to an
/// install was lost with the connection, then resumed) is written again without a
/// version of itself: the server keeps whole seconds, so the time it reports is the
/// source's cut to its second, and the content is the same.
#[test]
fn regression_a_file_already_in_the_mirror_unrecorded_is_not_kept_as_a_version_of_itself() {
    let env = TestEnv::on(Dst::Sftp);
    tree(&env);
    env.sync_ok(&[]);
    // The source's time has a fraction of a second; the copy that is already in DST
    // (written behind the index's back) has the same content and time.
    env.write("late.txt", "late content");
    let mtime = filetime::FileTime::from_unix_time(1_700_000_000, 500_000_000);
    filetime::set_file_mtime(env.src.join("late.txt"), mtime).unwrap();
    fs::copy(env.src.join("late.txt"), env.dst.join("late.txt")).unwrap();
    filetime::set_file_mtime(env.dst.join("late.txt"), mtime).unwrap();
    let out = env.sync_ok(&[]);
    assert_eq!(count(&out, "Files backed up"), 1, "{}", stdout(&out));
    assert!(
        !stdout(&out).contains("Kept version"),
        "a version of identical content was kept:\n{}",
        stdout(&out)
    );
    let versions = env.dst.join(".datasafe/versions");
    let kept: Vec<_> = fs::read_dir(&versions)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "versions kept: {kept:?}");
    env.assert_mirrored(false);
}

/// The issue: "SFTP keeps owner/group (numeric)". As root (the test server logs in as
/// the user running the tests), files of other owners keep their numbers in the mirror,
/// and a chown alone is a metadata update (no copy, no version).
#[test]
fn owners_are_kept_by_number_and_a_chown_alone_is_an_update() {
    if !is_root() {
        eprintln!("skipped: owners are mirrored only when run as root");
        return;
    }
    let env = TestEnv::on_sshd(Arc::new(Sshd::start()));
    env.write("mine.txt", "root's");
    env.write("d/theirs.txt", "nobody's");
    env.write("d/odd.txt", "an id with no name");
    let chown = |rel: &str, uid: u32, gid: u32| {
        std::os::unix::fs::lchown(env.src.join(rel), Some(uid), Some(gid)).unwrap()
    };
    chown("d", 65534, 65534);
    chown("d/theirs.txt", 65534, 65534);
    chown("d/odd.txt", 1234, 4321);
    env.sync_ok(&[]);
    let ids = |rel: &str| {
        let m = fs::symlink_metadata(env.dst.join(rel)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(ids("mine.txt"), (0, 0));
    assert_eq!(ids("d"), (65534, 65534));
    assert_eq!(ids("d/theirs.txt"), (65534, 65534));
    assert_eq!(ids("d/odd.txt"), (1234, 4321));
    chown("d/odd.txt", 4321, 1234);
    let out = env.sync_ok(&[]);
    assert_eq!(count(&out, "Files backed up"), 0, "{}", stdout(&out));
    assert_eq!(count(&out, "Updated"), 1, "{}", stdout(&out));
    assert_eq!(ids("d/odd.txt"), (4321, 1234));
    assert!(
        !env.dst.join(".datasafe/versions").exists()
            || walkdir::WalkDir::new(env.dst.join(".datasafe/versions"))
                .into_iter()
                .filter_map(Result::ok)
                .all(|e| !e.file_type().is_file()),
        "a chown alone kept a version"
    );
}
