//! Where an archive goes: OUT read as a file name (the format from its extension), a
//! folder (a dated `NAME_YYYYMMDD_HHMMSS` archive inside it) or `-` (stdout), and the
//! temp file beside OUT that becomes it only once the archive is whole.
//!
//! Nothing here writes archive content; [`Partial`] only creates, renames or removes
//! the one temp file, so an interrupted or failed run never leaves a partial archive
//! under the final name.

use crate::output::names::{esc, io_message};
use chrono::{DateTime, Local};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The formats `archive` writes (the runner reads them from `--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Zip, deflated (zip64 where needed).
    Zip,
    /// Plain tar.
    Tar,
    /// Gzipped tar.
    TarGz,
    /// Zstandard-compressed tar.
    TarZst,
}

impl Format {
    /// How the format is named on the command line and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Format::Zip => "zip",
            Format::Tar => "tar",
            Format::TarGz => "tar.gz",
            Format::TarZst => "tar.zst",
        }
    }

    /// The format a file name's extension stands for, if it is an archive's.
    pub fn of_name(name: &OsStr) -> Option<Format> {
        let name = name.to_string_lossy().to_lowercase();
        let table = [
            (".tar.gz", Format::TarGz),
            (".tgz", Format::TarGz),
            (".tar.zst", Format::TarZst),
            (".tzst", Format::TarZst),
            (".tar", Format::Tar),
            (".zip", Format::Zip),
        ];
        table
            .into_iter()
            .find(|(ext, _)| name.len() > ext.len() && name.ends_with(ext))
            .map(|(_, format)| format)
    }

    /// The levels the format takes, and its default.
    pub fn levels(self) -> Option<(std::ops::RangeInclusive<i32>, i32)> {
        match self {
            Format::Zip | Format::TarGz => Some((0..=9, 6)),
            Format::TarZst => Some((1..=22, 3)),
            Format::Tar => None,
        }
    }
}

/// Why OUT cannot take the archive; nothing was written. Each message names the path
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OutError {
    /// OUT's extension and `--format` disagree.
    #[error(
        "{} names a {} archive but --format is {}; make the name end in .{} or drop --format",
        esc(.out),
        .named.name(),
        .given.name(),
        .given.name()
    )]
    FormatMismatch {
        /// OUT.
        out: PathBuf,
        /// The format OUT's name stands for.
        named: Format,
        /// `--format`.
        given: Format,
    },
    /// OUT is a folder (only at creation: [`resolve`] writes into a folder).
    #[error("{} is a folder; give a file name for the archive", esc(.0))]
    IsFolder(PathBuf),
    /// OUT exists and `--force` was not given.
    #[error("{} already exists; add --force to replace it, or give another name", esc(.0))]
    Exists(PathBuf),
    /// OUT's folder cannot be made.
    #[error(
        "cannot create the folder {}: {}; check the path and its permissions",
        esc(.path),
        io_message(.source)
    )]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The temp file beside OUT cannot be created.
    #[error(
        "cannot write {}: {}; check the folder's permissions and free space",
        esc(.path),
        io_message(.source)
    )]
    Temp {
        /// The temp file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Where the archive is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// This file (replaced only with `--force`).
    File(PathBuf),
    /// Standard output.
    Stdout,
}

/// Reads OUT: `-`, an archive file name, or a folder. `now` dates a folder's archive;
/// `name` is the source folder's name. Errors are usage errors.
pub fn resolve(
    out: &Path,
    format: Option<Format>,
    name: &OsStr,
    now: DateTime<Local>,
) -> Result<(Dest, Format), OutError> {
    if out.as_os_str() == "-" {
        return Ok((Dest::Stdout, format.unwrap_or(Format::Tar)));
    }
    let is_dir = std::fs::metadata(out).is_ok_and(|m| m.is_dir());
    let named = out.file_name().and_then(Format::of_name);
    match named {
        Some(from_name) if !is_dir => match format {
            Some(f) if f != from_name => Err(OutError::FormatMismatch {
                out: out.to_path_buf(),
                named: from_name,
                given: f,
            }),
            _ => Ok((Dest::File(out.to_path_buf()), from_name)),
        },
        _ => {
            let format = format.unwrap_or(Format::Zip);
            let file = format!(
                "{}_{}.{}",
                name.to_string_lossy(),
                now.format("%Y%m%d_%H%M%S"),
                format.name()
            );
            Ok((Dest::File(out.join(file)), format))
        }
    }
}

/// The archive's file, asking the kernel to start writing it out every few MiB, so
/// the fsync before the rename does not wait for the whole archive at once.
pub struct Trickle {
    /// The temp file.
    pub file: File,
    /// Bytes written since writeback was last started.
    pending: u64,
}

impl Trickle {
    /// Every this many bytes, writeback starts.
    const EVERY: u64 = 4 << 20;

    /// Wraps the temp file.
    pub fn new(file: File) -> Trickle {
        Trickle { file, pending: 0 }
    }
}

impl io::Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pending += n as u64;
        if self.pending >= Trickle::EVERY {
            self.pending = 0;
            crate::platform::start_writeback(&self.file);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl io::Seek for Trickle {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// The archive being written: a temp file beside OUT, removed on drop unless
/// [`Partial::install`] renamed it into place.
pub struct Partial {
    /// The temp file.
    temp: PathBuf,
    /// OUT.
    path: PathBuf,
    /// Still to be removed on drop.
    armed: bool,
}

impl Partial {
    /// The temp name that stands beside `out` while it is written.
    pub fn temp_name(out: &Path) -> PathBuf {
        let name = out.file_name().unwrap_or(OsStr::new("archive"));
        let mut temp = std::ffi::OsString::from(".");
        temp.push(name);
        temp.push(format!(".datasafe-{}.tmp", std::process::id()));
        out.with_file_name(temp)
    }

    /// Checks OUT (an existing one needs `force`), makes its folder, creates the temp
    /// file. Errors are usage errors: nothing was written.
    pub fn create(out: &Path, force: bool) -> Result<(Partial, File), OutError> {
        match std::fs::symlink_metadata(out) {
            Ok(m) if m.is_dir() => return Err(OutError::IsFolder(out.to_path_buf())),
            Ok(_) if !force => return Err(OutError::Exists(out.to_path_buf())),
            _ => {}
        }
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| OutError::Folder {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let temp = Partial::temp_name(out);
        let file = File::create_new(&temp).map_err(|source| OutError::Temp {
            path: temp.clone(),
            source,
        })?;
        Ok((
            Partial {
                temp,
                path: out.to_path_buf(),
                armed: true,
            },
            file,
        ))
    }

    /// Renames the finished archive into place.
    pub fn install(mut self) -> io::Result<()> {
        std::fs::rename(&self.temp, &self.path)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn out_names_a_file_a_folder_or_stdout() {
        let now = Local.with_ymd_and_hms(2026, 11, 27, 17, 5, 9).unwrap();
        let name = OsStr::new("notes");
        let go = |out: &str, format| resolve(Path::new(out), format, name, now);
        use Format::*;
        let table = [
            ("x.zip", None, Dest::File("x.zip".into()), Zip),
            ("x.TAR.GZ", None, Dest::File("x.TAR.GZ".into()), TarGz),
            ("x.tgz", None, Dest::File("x.tgz".into()), TarGz),
            (
                "x.tar.zst",
                Some(TarZst),
                Dest::File("x.tar.zst".into()),
                TarZst,
            ),
            ("x.tar", None, Dest::File("x.tar".into()), Tar),
            (
                "backups",
                None,
                Dest::File("backups/notes_20261127_170509.zip".into()),
                Zip,
            ),
            (
                "backups",
                Some(TarZst),
                Dest::File("backups/notes_20261127_170509.tar.zst".into()),
                TarZst,
            ),
            ("-", None, Dest::Stdout, Tar),
            ("-", Some(Zip), Dest::Stdout, Zip),
        ];
        for (out, format, dest, want) in table {
            assert_eq!(go(out, format).ok(), Some((dest, want)), "{out}");
        }
        assert_eq!(
            go("x.zip", Some(TarGz)).unwrap_err().to_string(),
            "x.zip names a zip archive but --format is tar.gz; make the name end in .tar.gz or \
             drop --format"
        );
    }
}
