//! Regressions for issue 10, item 7 and the notes beside it: a mirror changed behind
//! datasafe's back (a file edited, replaced by a symlink, a folder flipped to a file)
//! is repaired by `sync --repair` and `verify --source SRC --repair`; the command verify
//! advises really repairs; a plain full pass notices a type flip; the watcher's fallback
//! rescan notices a file changed in DST; an index of the previous schema is upgraded;
//! a source's own `.datasafe` folder is never passed over in silence.

use crate::common;

use common::watcher::{self, DEADLINE, Watcher, wait_until};
use common::{TestEnv, assert_code, assert_mirrored, stderr, stdout};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

/// A small tree: files at the top and in a folder, and a symlink.
fn tree(env: &TestEnv) {
    env.write("a.txt", "alpha\n");
    env.write("b.txt", "bravo\n");
    env.write("d/c.txt", "charlie\n");
    env.write("keep.txt", "kept as it is\n");
    std::os::unix::fs::symlink("a.txt", env.src.join("link")).unwrap();
}

fn verify(env: &TestEnv, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify".to_string(),
        env.dst.display().to_string(),
        "--source".to_string(),
        env.src.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    env.cmd(&args).output().unwrap()
}

/// Changes the mirror behind datasafe's back in every way the issue names: a file edited
/// (other size), a bit flipped under the same size and mtime, a file replaced by a
/// symlink, a folder replaced by a file, a symlink replaced by a file.
fn damage(env: &TestEnv) {
    damage_as(env, false);
}

/// [`damage`] on a mirror stored gzipped (`gz`) or plain.
fn damage_as(env: &TestEnv, gz: bool) {
    let dst = &env.dst;
    let ext = if gz { ".gz" } else { "" };
    fs::write(dst.join(format!("a.txt{ext}")), "edited in the mirror\n").unwrap();
    let b = dst.join(format!("b.txt{ext}"));
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&b).unwrap());
    let len = fs::metadata(&b).unwrap().len() as usize;
    let mut bytes = fs::read(&b).unwrap();
    // One bit, in the middle (in a gzip stream: the compressed data).
    bytes[len / 2] ^= 0x10;
    fs::write(&b, bytes).unwrap();
    filetime::set_file_mtime(&b, mtime).unwrap();
    let k = dst.join(format!("keep.txt{ext}"));
    fs::remove_file(&k).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &k).unwrap();
    fs::remove_dir_all(dst.join("d")).unwrap();
    fs::write(dst.join("d"), "a file where a folder was").unwrap();
    fs::remove_file(dst.join("link")).unwrap();
    fs::write(dst.join("link"), "a file where a link was").unwrap();
}

#[test]
fn regression_sync_repair_rewrites_what_was_changed_in_dst_behind_the_index() {
    let env = TestEnv::new();
    tree(&env);
    env.sync_ok(&["-q"]);
    damage(&env);
    assert_code(&verify(&env, &[]), 1);

    let out = env.sync_ok(&["--repair"]);
    assert_mirrored(&env.src, &env.dst, false);
    let err = stderr(&out);
    for name in ["a.txt", "b.txt", "keep.txt", "d", "link"] {
        assert!(
            err.contains(&format!(
                "{} in the destination",
                env.dst.join(name).display()
            )),
            "{name} is named as repaired:\n{err}"
        );
    }
    // What it replaced is kept, per the usual rules: the edited file was a file.
    let versions = stdout(
        &env.cmd(["versions", env.dst.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(versions.contains("a.txt"), "{versions}");
    assert_code(&verify(&env, &[]), 0);

    // A second repair finds nothing.
    let again = env.sync_ok(&["--repair"]);
    assert_eq!(
        common::count(&again, "Files backed up"),
        0,
        "{}",
        stdout(&again)
    );
    assert!(
        !stderr(&again).contains("in the destination"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn regression_sync_repair_repairs_a_gzipped_mirror_and_an_index_without_digests() {
    let env = TestEnv::new();
    tree(&env);
    env.sync_ok(&["-q", "--compress"]);
    // A gzipped copy whose content was swapped under the same mtime.
    let gz = env.dst.join("b.txt.gz");
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&gz).unwrap());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, b"brAvo\n").unwrap();
    fs::write(&gz, enc.finish().unwrap()).unwrap();
    filetime::set_file_mtime(&gz, mtime).unwrap();
    env.sync_ok(&["-q", "--compress", "--repair"]);
    assert_mirrored(&env.src, &env.dst, true);
    assert_code(&verify(&env, &[]), 0);

    // No index: the rebuilt records have no digest, so the repair compares with SRC.
    let plain = TestEnv::new();
    tree(&plain);
    plain.sync_ok(&["-q"]);
    let state = plain.dst.join(".datasafe");
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = fs::remove_file(state.join(f));
    }
    let b = plain.dst.join("b.txt");
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&b).unwrap());
    fs::write(&b, "brAvo\n").unwrap();
    filetime::set_file_mtime(&b, mtime).unwrap();
    plain.sync_ok(&["-q", "--repair"]);
    assert_mirrored(&plain.src, &plain.dst, false);
    // The digests it learned are recorded: verify checks every file now.
    let out = verify(&plain, &[]);
    assert_code(&out, 0);
    assert_eq!(common::count(&out, "Unchecked"), 0, "{}", stdout(&out));
}

#[test]
fn regression_verify_repair_rewrites_what_verify_found() {
    let env = TestEnv::new();
    tree(&env);
    env.sync_ok(&["-q"]);
    damage(&env);
    let out = verify(&env, &["--repair"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("damaged: b.txt"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("Repair completed: "),
        "{}",
        stdout(&out)
    );
    assert_mirrored(&env.src, &env.dst, false);
    assert_code(&verify(&env, &[]), 0);

    // --repair needs the source to repair from.
    let out = env
        .cmd(["verify", env.dst.to_str().unwrap(), "--repair"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--source SRC"), "{}", stderr(&out));
}

#[test]
fn regression_verify_config_repair_repairs_each_pair_with_its_settings() {
    let env = TestEnv::new();
    tree(&env);
    let config = env.dir.path().join("datasafe.toml");
    fs::write(
        &config,
        format!(
            "[[mirror]]\nname = \"p\"\nsource = \"{}\"\ndest = \"{}\"\ncompress = true\n",
            env.src.display(),
            env.dst.display()
        ),
    )
    .unwrap();
    let conf = config.to_str().unwrap();
    assert_code(
        &env.cmd(["sync", "--config", conf, "-q"]).output().unwrap(),
        0,
    );
    fs::write(env.dst.join("a.txt.gz"), "not gzip at all").unwrap();
    fs::remove_dir_all(env.dst.join("d")).unwrap();
    fs::write(env.dst.join("d"), "flipped").unwrap();
    let out = env
        .cmd(["verify", "--config", conf, "--source"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!("datasafe verify --config {conf} --repair")),
        "{}",
        stderr(&out)
    );
    let out = env
        .cmd(["verify", "--config", conf, "--repair"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    // Still gzipped (the pair's own settings), and right.
    assert_mirrored(&env.src, &env.dst, true);
    let out = env
        .cmd(["verify", "--config", conf, "--source"])
        .output()
        .unwrap();
    assert_code(&out, 0);
}

/// The commands in verify's advice (`run: datasafe …`, `or datasafe …`), as arguments.
fn advised(err: &str) -> Vec<Vec<String>> {
    let line = err
        .lines()
        .find(|l| l.contains("run: datasafe"))
        .unwrap_or_else(|| panic!("no advice in:\n{err}"));
    line.split("datasafe ")
        .skip(1)
        .map(|cmd| {
            let cmd = cmd.split(" (").next().unwrap().trim_end_matches(['.', ',']);
            cmd.split_whitespace().map(str::to_string).collect()
        })
        .collect()
}

#[test]
fn regression_every_command_verify_advises_repairs_the_mirror() {
    for compress in [false, true] {
        let probe = TestEnv::new();
        tree(&probe);
        let flags: &[&str] = if compress {
            &["-q", "--compress"]
        } else {
            &["-q"]
        };
        probe.sync_ok(flags);
        damage_as(&probe, compress);
        let commands = advised(&stderr(&verify(&probe, &[])));
        assert_eq!(commands.len(), 2, "{commands:?}");
        for command in commands {
            let env = TestEnv::new();
            tree(&env);
            env.sync_ok(flags);
            damage_as(&env, compress);
            // The advice names the probe's folders: run it on this tree's.
            let (src, dst) = (
                probe.src.display().to_string(),
                probe.dst.display().to_string(),
            );
            let args: Vec<String> = command
                .iter()
                .map(|a| {
                    if *a == src {
                        env.src.display().to_string()
                    } else if *a == dst {
                        env.dst.display().to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let out = env.cmd(&args).output().unwrap();
            assert_code(&out, 0);
            assert_mirrored(&env.src, &env.dst, compress);
            assert_code(&verify(&env, &[]), 0);
        }
    }
    // Without --source the advice names SRC for the user to fill in.
    let env = TestEnv::new();
    tree(&env);
    env.sync_ok(&["-q"]);
    fs::write(env.dst.join("a.txt"), "edited").unwrap();
    let out = env
        .cmd(["verify", env.dst.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 1);
    let commands = advised(&stderr(&out));
    assert_eq!(commands[0][..2], ["sync", "--repair"], "{commands:?}");
    let mut args = commands[0].clone();
    for a in &mut args {
        if a == "SRC" {
            *a = env.src.display().to_string();
        }
    }
    assert_code(&env.cmd(&args).output().unwrap(), 0);
    assert_mirrored(&env.src, &env.dst, false);
}

#[test]
fn regression_a_plain_sync_rewrites_a_dst_entry_whose_type_flipped() {
    let env = TestEnv::new();
    tree(&env);
    env.sync_ok(&["-q"]);
    // Every flip readdir can see: file → symlink, folder → file, symlink → file,
    // file → folder.
    fs::remove_file(env.dst.join("keep.txt")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", env.dst.join("keep.txt")).unwrap();
    fs::remove_dir_all(env.dst.join("d")).unwrap();
    fs::write(env.dst.join("d"), "a file where a folder was").unwrap();
    fs::remove_file(env.dst.join("link")).unwrap();
    fs::write(env.dst.join("link"), "a file where a link was").unwrap();
    fs::remove_file(env.dst.join("b.txt")).unwrap();
    fs::create_dir(env.dst.join("b.txt")).unwrap();
    let out = env.sync_ok(&[]);
    assert_mirrored(&env.src, &env.dst, false);
    assert!(
        stderr(&out).contains("is a file where the index says a folder"),
        "{}",
        stderr(&out)
    );
    assert_code(&verify(&env, &[]), 0);
}

#[test]
fn regression_watch_fallback_rescan_recopies_a_file_changed_in_dst() {
    let _lock = watcher::shared();
    let env = TestEnv::new();
    tree(&env);
    let w = Watcher::ready(&env, &["--rescan", "1s"], "w");
    w.wait_mirrored(&env.src, &env.dst, false);
    // Another size.
    fs::write(env.dst.join("a.txt"), "edited in the mirror\n").unwrap();
    // Same size and mtime, another inode (a copy put in its place).
    let b = env.dst.join("b.txt");
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&b).unwrap());
    let ino = fs::metadata(&b).unwrap().ino();
    let other = env.dir.path().join("other");
    fs::write(&other, "brAvo\n").unwrap();
    filetime::set_file_mtime(&other, mtime).unwrap();
    fs::rename(&other, &b).unwrap();
    assert_ne!(fs::metadata(&b).unwrap().ino(), ino);
    // A folder flipped to a file.
    fs::remove_dir_all(env.dst.join("d")).unwrap();
    fs::write(env.dst.join("d"), "flipped").unwrap();
    w.wait_mirrored(&env.src, &env.dst, false);
    let ok = wait_until(DEADLINE, || {
        w.stderr()
            .contains("b.txt in the destination is not what datasafe wrote")
    });
    assert!(ok, "the rescan names what it recopies{}", w.context());
}

/// The `files` table as the previous version (schema 1) wrote it.
const OLD_SCHEMA: &str = "
    BEGIN;
    CREATE TABLE old_files (
        name BLOB PRIMARY KEY,
        kind INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_s INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        mode INTEGER NOT NULL,
        sha256 BLOB,
        gz INTEGER NOT NULL,
        target BLOB
    ) WITHOUT ROWID;
    INSERT INTO old_files
        SELECT name, kind, size, mtime_s, mtime_ns, mode, sha256, gz, target FROM files;
    DROP TABLE files;
    ALTER TABLE old_files RENAME TO files;
    PRAGMA user_version = 1;
    COMMIT;";

fn columns(db: &Path) -> (i64, Vec<String>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('files')")
        .unwrap();
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (version, names)
}

#[test]
fn regression_an_index_of_the_previous_schema_is_upgraded_and_keeps_working() {
    let env = TestEnv::new();
    tree(&env);
    env.sync_ok(&["-q"]);
    let db = env.dst.join(".datasafe/index.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(OLD_SCHEMA)
        .unwrap();
    assert_eq!(columns(&db).0, 1);
    // Read as it is (verify writes nothing, so it reads the old schema).
    assert_code(&verify(&env, &[]), 0);
    assert_eq!(columns(&db).0, 1, "verify changed the index");
    // The writer upgrades it in place: nothing is copied again (as root, names get
    // their owners once: files in place, a symlink made again).
    let out = env.sync_ok(&[]);
    let copied = stdout(&out).lines().any(|l| l.starts_with("copied "));
    assert!(!copied, "{}", stdout(&out));
    let (version, names) = columns(&db);
    assert_eq!(version, 3);
    for column in [
        "disk_ino",
        "disk_size",
        "uid",
        "gid",
        "xattrs",
        "link_dev",
        "link_ino",
    ] {
        assert!(names.iter().any(|n| n == column), "{column}: {names:?}");
    }
    assert_code(&verify(&env, &[]), 0);
    // And it works: a change is mirrored, a damage repaired.
    env.write("a.txt", "alpha, changed\n");
    fs::write(env.dst.join("b.txt"), "edited").unwrap();
    env.sync_ok(&["-q", "--repair"]);
    assert_mirrored(&env.src, &env.dst, false);
    assert_code(&verify(&env, &[]), 0);
}

#[test]
fn regression_a_sources_own_datasafe_folder_is_said_to_be_left_out() {
    let env = TestEnv::new();
    tree(&env);
    // SRC is itself a mirror: it has a state folder of its own.
    env.write(".datasafe/versions/a_20260101_000000.txt", "old alpha");
    let out = env.sync_ok(&[]);
    let state = env.src.join(".datasafe");
    let warning = format!("{} is left out", state.display());
    assert_eq!(
        stderr(&out).matches(&warning).count(),
        1,
        "said once:\n{}",
        stderr(&out)
    );
    // verify --source does not call it clean: it names it (and in --json).
    let out = verify(&env, &["--json"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains(&format!("{} is not in the mirror", state.display())),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("\"left_out\":["), "{}", stdout(&out));
    // The advice works: the folder mirrors on its own.
    let other = env.dir.path().join("other");
    let out = env
        .cmd(["sync", state.to_str().unwrap(), other.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_mirrored(&state, &other, false);

    // watch says it once too.
    let _lock = watcher::shared();
    let w = Watcher::start(&env, &env.src, &env.dst, &[], "w");
    let ok = wait_until(DEADLINE, || w.stdout().contains("watching"));
    assert!(ok, "watch starts{}", w.context());
    let ok = wait_until(DEADLINE, || w.stderr().contains(&warning));
    assert!(ok, "watch names it{}", w.context());
    assert_eq!(w.stderr().matches(&warning).count(), 1, "{}", w.context());
}

#[test]
fn regression_the_guards_advice_works_under_verify_repair() {
    let env = TestEnv::new();
    tree(&env);
    env.sync_ok(&["-q"]);
    fs::remove_dir_all(&env.src).unwrap();
    fs::create_dir(&env.src).unwrap();
    // An emptied source: the repair holds the deletions back and says how to go on.
    let out = verify(&env, &["--repair"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("run again with --force"),
        "{}",
        stderr(&out)
    );
    assert!(env.dst.join("a.txt").exists());
    let out = verify(&env, &["--repair", "--force"]);
    assert_code(&out, 0);
    assert_mirrored(&env.src, &env.dst, false);
}
