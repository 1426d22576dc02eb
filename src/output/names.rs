//! How paths and sizes are shown to people. Paths stay `OsStr` everywhere else; only here
//! are they turned into text, and never lossily: bytes that are not UTF-8 show as `\xNN`
//! and control characters (a newline in a name) as escapes, so one log line is always
//! one operation and a name can be told apart from its neighbours.

use std::fmt;
use std::path::Path;

/// A path that formats with escapes for control characters and non-UTF-8 bytes.
pub struct Escaped<'a>(pub &'a Path);

/// Shorthand for [`Escaped`].
pub fn esc(path: &Path) -> Escaped<'_> {
    Escaped(path)
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0.as_os_str().as_encoded_bytes();
        if bytes.is_empty() {
            return f.write_str(".");
        }
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_control() => write!(f, "{}", c.escape_default())?,
                    c => write!(f, "{c}")?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// `path` as one shell word, for a command a message advises: escaped as [`esc`] shows
/// it, and in single quotes when it holds anything a shell would split or expand (a
/// space in `My Backup`), so the command can be copied and run as printed.
pub fn shell_word(path: &Path) -> String {
    quote_word(&esc(path).to_string())
}

/// `text` as one shell word: as it is when it holds nothing a shell would expand or
/// split, else in single quotes.
pub fn quote_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `n` and a noun in the right number: `1 file`, `3 files`.
pub fn count_of(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A byte count in binary units, one decimal: `12.3 KiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// An I/O error as a lowercase phrase (`no space left on device (os error 28)`), the way
/// every message in datasafe reads.
pub fn io_message(err: &std::io::Error) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_what_a_shell_would_split() {
        assert_eq!(
            shell_word(Path::new("/mnt/backup/notes")),
            "/mnt/backup/notes"
        );
        assert_eq!(
            shell_word(Path::new("/My Backup/it's")),
            r"'/My Backup/it'\''s'"
        );
        assert_eq!(quote_word("*.tmp"), "'*.tmp'");
    }

    #[test]
    fn escapes_control_and_invalid_bytes() {
        assert_eq!(esc(Path::new("a\nb")).to_string(), "a\\nb");
        assert_eq!(esc(Path::new("dir/café")).to_string(), "dir/café");
        assert_eq!(esc(Path::new("")).to_string(), ".");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let p = Path::new(std::ffi::OsStr::from_bytes(b"x\xff\xfey"));
            assert_eq!(esc(p).to_string(), "x\\xff\\xfey");
        }
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(12_595), "12.3 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn io_messages_are_lowercase() {
        let e = std::io::Error::from_raw_os_error(28);
        assert!(
            io_message(&e).starts_with("no space left on device"),
            "{}",
            io_message(&e)
        );
    }
}
