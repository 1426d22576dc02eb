//! `datasafe archive` driven through the binary, each archive opened with the ordinary
//! tools (`unzip`, Python's `zipfile`, GNU tar, 7-Zip): a folder's tree comes back with
//! its modes, mtimes, links and empty folders; a mirror's archive holds exactly what
//! `restore --at` writes; OUT as a file, a folder or `-`; the refusals (`--at` on a
//! folder, an existing OUT without `--force`); OUT inside SOURCE; unreadable files;
//! `--prefix`, PATH and `--exclude`; `-v` and `--json`; Ctrl-C.

use crate::common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A tree with a bit of everything: nested files, a file large enough to be streamed
/// (over 1 MiB), an empty file, an empty folder, links (one dangling), odd modes and
/// mtimes with nanoseconds.
fn sample_tree(env: &TestEnv) {
    env.write("docs/a.txt", "alpha");
    env.write("docs/deep/er/b.md", "beta".repeat(1000));
    env.write("top.bin", vec![7u8; 300_000]);
    env.write("big.bin", faults::noise(7, 3 << 20));
    env.write("empty.txt", "");
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
    set_mtime(&env.src.join("big.bin"), 1_600_000_003, 0);
    set_mtime(&env.src.join("link"), 1_500_000_000, 5);
    set_mtime(&env.src.join("docs/deep"), 1_400_000_000, 42);
}

/// Runs `datasafe archive ARGS...` in the test's folder.
fn archive(env: &TestEnv, args: &[&str]) -> Output {
    let mut all: Vec<OsString> = vec!["archive".into()];
    all.extend(args.iter().map(OsString::from));
    env.cmd(all).output().unwrap()
}

fn archive_ok(env: &TestEnv, args: &[&str]) -> Output {
    let out = archive(env, args);
    assert_code(&out, 0);
    out
}

/// Runs a tool and asserts it succeeded, printing what it said otherwise. A tool that
/// is not installed fails the test loudly (CI installs them: see `.ci/run`).
fn tool(program: &str, args: &[&str], dir: &Path) -> Output {
    let out = Command::new(program)
        .args(args.iter().map(OsString::from))
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; install it (apt-get install unzip zstd p7zip-full)")
        });
    assert!(
        out.status.success(),
        "{program} failed\n--- stdout\n{}\n--- stderr\n{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Extracts a tar archive (any compression GNU tar recognises) into a new folder.
fn untar(archive: &Path, into: &Path, flag: &str) {
    fs::create_dir_all(into).unwrap();
    tool(
        "tar",
        &[
            flag,
            "-xpf",
            archive.to_str().unwrap(),
            "-C",
            into.to_str().unwrap(),
        ],
        into,
    );
}

/// The member names of an archive, as Python's `zipfile` (zip) or GNU tar lists them.
fn names(archive: &Path) -> Vec<String> {
    let path = archive.to_str().unwrap();
    let out = if path.ends_with(".zip") {
        let script =
            "import sys, zipfile\nprint('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))";
        tool("python3", &["-c", script, path], Path::new("/"))
    } else {
        tool("tar", &["-tf", path], Path::new("/"))
    };
    stdout(&out).lines().map(str::to_string).collect()
}

/// Files' content and mode, links' targets, and folders, with mtimes to the second
/// (what every format keeps) for files: what a zip gives back.
fn coarse(root: &Path) -> BTreeMap<PathBuf, String> {
    snapshot(root, false)
        .into_iter()
        .map(|(rel, node)| {
            let text = match node {
                Node::File {
                    content,
                    mode,
                    mtime,
                } => {
                    format!("file {:o} {} {}", mode, mtime.0, content.len())
                        + &format!(" {:x}", content.iter().map(|&b| u64::from(b)).sum::<u64>())
                }
                Node::Dir { mode } => format!("dir {mode:o}"),
                Node::Link { target, .. } => format!("link {}", target.display()),
            };
            (rel, text)
        })
        .collect()
}

fn assert_same_trees(want: &Path, got: &Path) {
    let (a, b) = (snapshot(want, false), snapshot(got, false));
    if a != b {
        let keys: BTreeSet<_> = a.keys().chain(b.keys()).collect();
        let mut diff = String::new();
        for k in keys {
            if a.get(k) != b.get(k) {
                diff.push_str(&format!(
                    "{}\n  want {:?}\n  got  {:?}\n",
                    k.display(),
                    a.get(k),
                    b.get(k)
                ));
            }
        }
        panic!("trees differ:\n{diff}");
    }
}

#[test]
fn a_folder_as_tar_zst_tar_gz_and_tar_extracts_with_gnu_tar_to_the_same_tree() {
    let env = TestEnv::new();
    sample_tree(&env);
    for (name, flag) in [
        ("a.tar.zst", "--zstd"),
        ("a.tar.gz", "-z"),
        ("a.tar", "--no-auto-compress"),
    ] {
        let out = archive_ok(&env, &["src", name]);
        let file = env.dir.path().join(name);
        let text = stdout(&out);
        let format = name.strip_prefix("a.").unwrap();
        assert!(text.contains(&format!("Archive: {name} (")), "{text}");
        assert!(text.contains(&format!(", {format})\n")), "{text}");
        let x = env.dir.path().join(format!("x-{format}"));
        untar(&file, &x, flag);
        // Modes, mtimes to the nanosecond (PAX), links and empty folders.
        assert_same_trees(&env.src, &x);
        // Files and links count (5 files, 2 links), folders do not.
        assert_eq!(count(&out, "Files backed up"), 7, "{text}");
    }
}

#[test]
fn a_folder_as_zip_passes_unzip_t_and_python_reads_its_modes_and_mtimes() {
    let env = TestEnv::new();
    sample_tree(&env);
    archive_ok(&env, &["src", "a.zip"]);
    let zip = env.dir.path().join("a.zip");
    let test = tool("unzip", &["-t", "a.zip"], env.dir.path());
    assert!(
        stdout(&test).contains("No errors detected"),
        "{}",
        stdout(&test)
    );
    // Python: every member's Unix mode, and its DOS time equal to the local time of
    // the mtime (to two seconds, as zip keeps it).
    let script = r#"
import os, sys, time, zipfile, stat
root, path = sys.argv[1], sys.argv[2]
bad = []
for info in zipfile.ZipFile(path).infolist():
    full = os.path.join(root, info.filename.rstrip('/'))
    st = os.lstat(full)
    mode = info.external_attr >> 16
    if stat.S_IMODE(mode) != stat.S_IMODE(st.st_mode) and not stat.S_ISLNK(st.st_mode):
        bad.append(f"{info.filename}: mode {oct(mode)} vs {oct(st.st_mode)}")
    if stat.S_IFMT(mode) != stat.S_IFMT(st.st_mode):
        bad.append(f"{info.filename}: type {oct(mode)} vs {oct(st.st_mode)}")
    if stat.S_ISREG(st.st_mode):
        t = time.localtime(st.st_mtime_ns // 10**9)
        want = (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec // 2 * 2)
        if info.date_time != want:
            bad.append(f"{info.filename}: time {info.date_time} vs {want}")
        with open(full, 'rb') as f:
            if zipfile.ZipFile(path).read(info.filename) != f.read():
                bad.append(f"{info.filename}: content")
print("\n".join(bad))
sys.exit(1 if bad else 0)
"#;
    tool(
        "python3",
        &[
            "-c",
            script,
            env.src.to_str().unwrap(),
            zip.to_str().unwrap(),
        ],
        env.dir.path(),
    );
    // unzip gives back content, modes, mtimes to the second (its extended timestamp),
    // links and empty folders.
    let x = env.dir.path().join("x");
    tool("unzip", &["-q", "a.zip", "-d", "x"], env.dir.path());
    assert_eq!(coarse(&env.src), coarse(&x));
}

#[test]
fn seven_zip_tests_the_zip_and_the_tar_zst() {
    let env = TestEnv::new();
    sample_tree(&env);
    archive_ok(&env, &["src", "a.zip"]);
    archive_ok(&env, &["src", "a.tar"]);
    let seven = ["7z", "7zz", "7za"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("i")
                .stdout(Stdio::null())
                .status()
                .is_ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "7-Zip is not installed: apt-get install -y p7zip-full (or 7zip), as .ci/run does"
            )
        });
    for name in ["a.zip", "a.tar"] {
        let out = tool(seven, &["t", name], env.dir.path());
        assert!(
            stdout(&out).contains("Everything is Ok"),
            "{}",
            stdout(&out)
        );
    }
}

/// A gzipped mirror of the sample tree, then edits synced a second later, so the
/// versions folder holds the first state. Returns the moment (`--at` text) of the
/// first state.
fn mirror_with_history(env: &TestEnv) -> String {
    sample_tree(env);
    env.sync_ok(&["--compress"]);
    let then = chrono::Local::now();
    let now = then.timestamp();
    while chrono::Local::now().timestamp() == now {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let at = then.format("%Y-%m-%d %H:%M:%S").to_string();
    while chrono::Local::now().timestamp() <= now + 1 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    env.write("docs/a.txt", "alpha, edited");
    env.write("new.txt", "new");
    fs::remove_file(env.src.join("top.bin")).unwrap();
    env.write("big.bin", faults::noise(8, 2 << 20));
    env.sync_ok(&["--compress"]);
    at
}

#[test]
fn a_mirror_archive_at_a_moment_holds_exactly_what_restore_at_writes() {
    let env = TestEnv::new();
    let at = mirror_with_history(&env);
    let restored = env.dir.path().join("restored");
    let out = env
        .cmd([
            OsString::from("restore"),
            env.dst.clone().into(),
            restored.clone().into(),
            "--at".into(),
            at.clone().into(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(fs::read(restored.join("docs/a.txt")).unwrap(), b"alpha");
    assert!(restored.join("top.bin").exists());
    for (name, flag) in [("m.tar.zst", "--zstd"), ("m.tar.gz", "-z")] {
        archive_ok(&env, &["dst", name, "--at", &at]);
        let x = env.dir.path().join(format!("x-{name}"));
        untar(&env.dir.path().join(name), &x, flag);
        assert_same_trees(&restored, &x);
        assert!(
            names(&env.dir.path().join(name))
                .iter()
                .all(|n| !n.starts_with(".datasafe")),
            "the mirror's state is never archived"
        );
    }
    archive_ok(&env, &["dst", "m.zip", "--at", &at]);
    // docs/a.txt was then the start of its later copy (it was appended to): written out
    // beside OUT for the archive, and that scratch folder is gone afterwards.
    let left: Vec<_> = fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parts") || n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "left beside OUT: {left:?}");
    tool("unzip", &["-q", "m.zip", "-d", "x-zip"], env.dir.path());
    assert_eq!(coarse(&restored), coarse(&env.dir.path().join("x-zip")));
    // Without --at: the live mirror, as restore without --at (and the source) has it.
    archive_ok(&env, &["dst", "now.tar"]);
    untar(
        &env.dir.path().join("now.tar"),
        &env.dir.path().join("x-now"),
        "-a",
    );
    assert_same_trees(&env.src, &env.dir.path().join("x-now"));
}

#[test]
fn symlinks_planted_in_a_mirror_are_never_followed_into_the_archive() {
    let env = TestEnv::new();
    env.write("dir/in.txt", "inside");
    env.write("keep.txt", "keep");
    env.write("stays.txt", "stays");
    env.sync_ok(&[]);
    // A folder of the mirror swapped for a link to a look-alike outside it, and a file
    // swapped for a link to a secret: both recorded in the index as what they were.
    let elsewhere = env.dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("in.txt"), "elsewhere").unwrap();
    fs::remove_dir_all(env.dst.join("dir")).unwrap();
    symlink(&elsewhere, env.dst.join("dir")).unwrap();
    let secret = env.dir.path().join("secret");
    fs::write(&secret, "do not copy").unwrap();
    fs::remove_file(env.dst.join("keep.txt")).unwrap();
    symlink(&secret, env.dst.join("keep.txt")).unwrap();
    let out = archive(&env, &["dst", "m.tar"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("in the index but not in the mirror"),
        "{}",
        stderr(&out)
    );
    let x = env.dir.path().join("x");
    untar(&env.dir.path().join("m.tar"), &x, "-a");
    let got = coarse(&x);
    let names: Vec<&PathBuf> = got.keys().collect();
    assert_eq!(names, [Path::new("stays.txt")], "{got:?}");
}

#[test]
fn at_is_refused_for_a_plain_folder() {
    let env = TestEnv::new();
    sample_tree(&env);
    let out = archive(&env, &["src", "a.zip", "--at", "2026-01-01 00:00:00"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("--at needs a datasafe mirror"),
        "{}",
        stderr(&out)
    );
    assert!(!env.dir.path().join("a.zip").exists());
}

#[test]
fn an_existing_out_needs_force_and_is_left_untouched_without_it() {
    let env = TestEnv::new();
    sample_tree(&env);
    let out_path = env.dir.path().join("a.zip");
    fs::write(&out_path, "precious").unwrap();
    let out = archive(&env, &["src", "a.zip"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(fs::read(&out_path).unwrap(), b"precious");
    archive_ok(&env, &["src", "a.zip", "--force"]);
    tool("unzip", &["-tq", "a.zip"], env.dir.path());
    let leftovers: Vec<_> = fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_folder_out_gets_a_dated_archive_named_after_the_source() {
    let env = TestEnv::new();
    sample_tree(&env);
    fs::create_dir(env.dir.path().join("backups")).unwrap();
    archive_ok(&env, &["src", "backups"]);
    // A name without an archive extension is a folder, made with its parents.
    archive_ok(&env, &["src", "more/daily", "--format", "tar.zst"]);
    let dated = |dir: &str, ext: &str| {
        let found: Vec<String> = fs::read_dir(env.dir.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        let name = &found[0];
        let stamp = name
            .strip_prefix("src_")
            .and_then(|n| n.strip_suffix(ext))
            .unwrap_or_else(|| panic!("{name}"));
        assert!(
            stamp.len() == 15
                && stamp.as_bytes()[8] == b'_'
                && stamp.chars().filter(char::is_ascii_digit).count() == 14,
            "{name}"
        );
        env.dir.path().join(dir).join(name)
    };
    tool(
        "unzip",
        &["-tq", dated("backups", ".zip").to_str().unwrap()],
        env.dir.path(),
    );
    let zst = dated("more/daily", ".tar.zst");
    untar(&zst, &env.dir.path().join("x"), "--zstd");
    assert_same_trees(&env.src, &env.dir.path().join("x"));
}

#[test]
fn dash_writes_a_tar_stream_to_stdout_and_the_lines_to_stderr() {
    let env = TestEnv::new();
    sample_tree(&env);
    for (format, flag) in [(None, "--no-auto-compress"), (Some("tar.zst"), "--zstd")] {
        let mut args: Vec<&str> = vec!["src", "-"];
        if let Some(f) = format {
            args.push("--format");
            args.push(f);
        }
        let out = archive_ok(&env, &args);
        assert!(stderr(&out).contains("Archive: - ("), "{}", stderr(&out));
        let file = env.dir.path().join("stream");
        fs::write(&file, &out.stdout).unwrap();
        let x = env.dir.path().join(format!("x{}", format.unwrap_or("")));
        untar(&file, &x, flag);
        assert_same_trees(&env.src, &x);
    }
}

#[test]
fn entries_have_no_leading_folder_and_prefix_adds_one() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.write("d/b.txt", "b");
    archive_ok(&env, &["src", "plain.zip"]);
    assert_eq!(
        names(&env.dir.path().join("plain.zip")),
        ["a.txt", "d/", "d/b.txt"]
    );
    archive_ok(&env, &["src", "p.tar", "--prefix", "proj/"]);
    let listed = names(&env.dir.path().join("p.tar"));
    assert_eq!(listed, ["proj/", "proj/a.txt", "proj/d/", "proj/d/b.txt"]);
}

#[test]
fn an_out_inside_the_source_is_left_out_and_said_so() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    let out_path = env.src.join("self.zip");
    let out = archive_ok(&env, &["src", "src/self.zip"]);
    assert!(
        stderr(&out).contains("left out of the archive"),
        "{}",
        stderr(&out)
    );
    assert_eq!(names(&out_path), ["a.txt"]);
    // Again, with the first archive now in SOURCE.
    archive_ok(&env, &["src", "src/self.zip", "--force"]);
    assert_eq!(names(&out_path), ["a.txt"]);
}

#[test]
fn a_file_that_cannot_be_read_is_named_skipped_and_makes_exit_1() {
    let env = TestEnv::new();
    sample_tree(&env);
    env.sync_ok(&["--compress"]);
    // A damaged gzip in the mirror cannot be read, even by root.
    fs::write(env.dst.join("docs/a.txt.gz"), b"\x1f\x8b\x08\x00garbage").unwrap();
    let out = archive(&env, &["dst", "m.tar.zst"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("docs/a.txt.gz"), "{}", stderr(&out));
    let listed = names(&env.dir.path().join("m.tar.zst"));
    assert!(!listed.contains(&"docs/a.txt".to_string()), "{listed:?}");
    assert!(
        listed.contains(&"docs/deep/er/b.md".to_string()),
        "{listed:?}"
    );
    if !is_root() {
        fs::set_permissions(env.src.join("top.bin"), fs::Permissions::from_mode(0o000)).unwrap();
        let out = archive(&env, &["src", "s.zip"]);
        assert_code(&out, 1);
        assert!(stderr(&out).contains("top.bin"), "{}", stderr(&out));
        assert!(!names(&env.dir.path().join("s.zip")).contains(&"top.bin".to_string()));
    }
}

#[test]
fn json_ends_stdout_with_one_object_and_verbose_names_each_file() {
    let env = TestEnv::new();
    sample_tree(&env);
    let out = archive_ok(&env, &["src", "a.zip", "--json", "-v"]);
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["files"], 7);
    assert_eq!(v["format"], "zip");
    assert_eq!(v["path"], "a.zip");
    // The files' bytes (links and folders carry none).
    assert_eq!(v["bytes_in"], 5 + 4000 + 300_000 + (3 << 20));
    assert_eq!(
        v["bytes_out"].as_u64().unwrap(),
        fs::metadata(env.dir.path().join("a.zip")).unwrap().len()
    );
    assert!(v["duration_s"].as_f64().is_some());
    assert!(
        text.contains("Archived file: docs/deep/er/b.md\n"),
        "{text}"
    );
    assert!(
        text.contains("Archived link: link -> docs/a.txt\n"),
        "{text}"
    );
    assert!(text.contains("Backup completed at "), "{text}");
    let quiet = archive_ok(&env, &["src", "b.zip", "-q"]);
    assert!(
        !stdout(&quiet).contains("Archived file"),
        "{}",
        stdout(&quiet)
    );
}

#[test]
fn paths_and_excludes_limit_the_archive() {
    let env = TestEnv::new();
    sample_tree(&env);
    archive_ok(&env, &["src", "p.zip", "docs/deep", "top.bin"]);
    assert_eq!(
        names(&env.dir.path().join("p.zip")),
        [
            "docs/",
            "docs/deep/",
            "docs/deep/er/",
            "docs/deep/er/b.md",
            "top.bin"
        ]
    );
    archive_ok(
        &env,
        &["src", "e.tar", "--exclude", "*.bin", "--exclude", "docs"],
    );
    let listed = names(&env.dir.path().join("e.tar"));
    assert!(
        listed
            .iter()
            .all(|n| !n.ends_with(".bin") && !n.starts_with("docs")),
        "{listed:?}"
    );
    assert!(listed.contains(&"empty/nested/".to_string()), "{listed:?}");
}

#[test]
fn a_level_out_of_range_and_a_format_that_contradicts_the_name_are_refused() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    let out = archive(&env, &["src", "a.zip", "--level", "12"]);
    assert_code(&out, 2);
    let out = archive(&env, &["src", "a.zip", "--format", "tar.gz"]);
    assert_code(&out, 2);
    assert!(!env.dir.path().join("a.zip").exists());
    archive_ok(&env, &["src", "z.tar.zst", "--level", "19"]);
}

#[test]
fn ctrl_c_leaves_no_archive_under_the_final_name_and_dies_by_sigint() {
    let env = TestEnv::new();
    for i in 0..8 {
        env.write(format!("f{i}.bin"), faults::noise(i, 16 << 20));
    }
    let child = env
        .cmd([
            OsString::from("archive"),
            env.src.clone().into(),
            "a.zip".into(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = env.dir.path().to_path_buf();
    let temp_seen = watcher::wait_until(std::time::Duration::from_secs(20), || {
        fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).any(|e| {
            e.file_name().to_string_lossy().ends_with(".tmp")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    });
    assert!(temp_seen, "no temp file beside OUT");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    // As sync: the clean-up done, the process dies by the signal (a shell shows 130).
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{:?}", out.status);
    let left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        !left
            .iter()
            .any(|n| n == "a.zip" || n.to_string_lossy().ends_with(".tmp")),
        "{left:?}"
    );
}

#[test]
fn a_file_growing_while_archived_is_read_again_and_the_archive_stays_valid() {
    let env = TestEnv::new();
    env.write("steady.txt", "steady");
    let hot = env.write("hot.log", "start\n");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&hot).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = f.write_all(b"line\n");
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let mut codes = Vec::new();
    for i in 0..3 {
        let name = format!("g{i}.zip");
        let out = archive(&env, &["src", &name]);
        codes.push(out.status.code());
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
        if out.status.code() == Some(1) {
            assert!(
                stderr(&out).contains("hot.log kept changing"),
                "{}",
                stderr(&out)
            );
        }
        tool("unzip", &["-tq", name.as_str()], env.dir.path());
        assert!(names(&env.dir.path().join(&name)).contains(&"steady.txt".to_string()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let _ = codes;
}

/// Issue 12: a folder whose deepest path passes `PATH_MAX` (50 levels of 120-byte names,
/// over 6,000 bytes) is archived whole: every folder and link is reached from the one
/// above it, never through a whole path the kernel would refuse.
#[test]
fn regression_a_folder_deeper_than_path_max_is_archived_whole() {
    use datasafe::store::local::beneath::Dir;
    let env = TestEnv::new();
    let name = "n".repeat(120);
    let mut here = Dir::open_root(&env.src).unwrap();
    let mut rel = PathBuf::new();
    for _ in 0..50 {
        rustix::fs::mkdirat(&here, name.as_str(), rustix::fs::Mode::RWXU).unwrap();
        here = here.dir(Path::new(&name)).unwrap();
        rel.push(&name);
    }
    let leaf = rustix::fs::openat(
        &here,
        "leaf.txt",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .unwrap();
    rustix::io::write(&leaf, b"deep content").unwrap();
    rustix::fs::symlinkat("leaf.txt", &here, "link").unwrap();
    rel.push("leaf.txt");
    assert!(rel.as_os_str().len() > 6000);
    let out = env.dir.path().join("deep.tar");
    archive_ok(&env, &["src", out.to_str().unwrap()]);
    let listed = names(&out);
    let leaf_name = rel.to_str().unwrap();
    assert!(
        listed.iter().any(|n| n == leaf_name),
        "{} names",
        listed.len()
    );
    assert!(listed.iter().any(|n| n.ends_with("/link")));
    let content = tool(
        "tar",
        &["-xOf", out.to_str().unwrap(), leaf_name],
        Path::new("/"),
    );
    assert_eq!(stdout(&content), "deep content");
}

/// The headers of a tar archive (gzipped if its name ends in `.gz`), read with the
/// `tar` crate: each entry's path, type, mtime, mode and link target.
fn headers(archive: &Path) -> BTreeMap<String, (tar::EntryType, u64, u32, Option<String>)> {
    let file = fs::File::open(archive).unwrap();
    let reader: Box<dyn std::io::Read> = match archive.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::read::GzDecoder::new(file)),
        _ => Box::new(file),
    };
    let mut tar = tar::Archive::new(reader);
    tar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                (h.entry_type(), h.mtime().unwrap(), h.mode().unwrap(), link),
            )
        })
        .collect()
}

/// Inode numbers of `names` under `root`.
fn inodes(root: &Path, names: &[&str]) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    names
        .iter()
        .map(|n| fs::metadata(root.join(n)).unwrap().ino())
        .collect()
}

/// QA on issue 16: a plain folder's tar kept no hard links (each name a full copy),
/// and a hard-link entry's header said mtime 0 (1970 in `tar -tvf`). Names of one file
/// are now a file and hard-link entries to it, whose headers carry the file's mode and
/// mtime; GNU tar extracts one file with several names. A zip, which has no hard links,
/// stores each name whole.
#[test]
fn a_folder_tar_keeps_hard_links_with_the_files_mtime_and_a_zip_stores_each_name() {
    let env = TestEnv::new();
    env.write("a", "shared bytes");
    fs::create_dir_all(env.src.join("d")).unwrap();
    fs::hard_link(env.src.join("a"), env.src.join("d/b")).unwrap();
    fs::hard_link(env.src.join("a"), env.src.join("d/c")).unwrap();
    env.write("big", faults::noise(3, 2 << 20));
    fs::hard_link(env.src.join("big"), env.src.join("d/big2")).unwrap();
    env.write("single", "one name");
    fs::set_permissions(env.src.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&env.src.join("a"), 1_600_000_000, 0);
    set_mtime(&env.src.join("big"), 1_600_000_100, 0);
    // From the plain folder, and from its mirror (which did it already).
    env.sync_ok(&[]);
    for (from, out) in [(&env.src, "folder.tar.gz"), (&env.dst, "mirror.tar.gz")] {
        let archive = env.dir.path().join(out);
        archive_ok(&env, &[from.to_str().unwrap(), archive.to_str().unwrap()]);
        let h = headers(&archive);
        let file = |name: &str| h.get(name).unwrap_or_else(|| panic!("{name}: {h:?}"));
        assert_eq!(file("a").0, tar::EntryType::Regular, "{h:?}");
        assert_eq!(file("big").0, tar::EntryType::Regular, "{h:?}");
        for (name, first, mtime) in [
            ("d/b", "a", 1_600_000_000),
            ("d/c", "a", 1_600_000_000),
            ("d/big2", "big", 1_600_000_100),
        ] {
            let (kind, at, mode, link) = file(name);
            assert_eq!(*kind, tar::EntryType::Link, "{name}: {h:?}");
            assert_eq!(link.as_deref(), Some(first), "{name}");
            assert_eq!(*at, mtime, "{name}: the file's mtime, not 0");
            assert_eq!(*mode, file(first).2, "{name}: the file's mode");
        }
        assert_eq!(file("single").0, tar::EntryType::Regular);
        // What GNU tar lists and extracts: one file with three names.
        let listing = stdout(&tool(
            "tar",
            &["-tvzf", archive.to_str().unwrap()],
            env.dir.path(),
        ));
        assert!(!listing.contains("1970-01-01"), "{listing}");
        let x = env.dir.path().join(format!("x-{out}"));
        untar(&archive, &x, "-z");
        let ino = inodes(&x, &["a", "d/b", "d/c", "big", "d/big2", "single"]);
        assert!(ino[0] == ino[1] && ino[1] == ino[2], "{ino:?}");
        assert!(
            ino[3] == ino[4] && ino[3] != ino[0] && ino[5] != ino[0],
            "{ino:?}"
        );
        assert_eq!(fs::read(x.join("d/c")).unwrap(), b"shared bytes");
        assert_eq!(
            fs::read(x.join("d/big2")).unwrap(),
            fs::read(env.src.join("big")).unwrap()
        );
    }

    // A zip stores each name whole.
    let zip = env.dir.path().join("folder.zip");
    archive_ok(&env, &[env.src.to_str().unwrap(), zip.to_str().unwrap()]);
    let x = env.dir.path().join("x-zip");
    fs::create_dir(&x).unwrap();
    tool(
        "unzip",
        &["-q", zip.to_str().unwrap(), "-d", x.to_str().unwrap()],
        env.dir.path(),
    );
    for name in ["a", "d/b", "d/c"] {
        assert_eq!(fs::read(x.join(name)).unwrap(), b"shared bytes", "{name}");
    }
    assert_eq!(
        fs::read(x.join("d/big2")).unwrap(),
        fs::read(env.src.join("big")).unwrap()
    );
}
