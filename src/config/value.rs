//! The value types a user writes both as a flag and in the config file: [`TimeSpan`]
//! (`--debounce 2s`, `rescan = "10m"`), [`Retention`] (`--keep-versions 7d`) and
//! [`Size`] (`--versions-max-size 10GiB`). Each reads its text through one `FromStr`,
//! which clap uses as the flag's value parser and serde as the file's deserializer, so a
//! value means the same in both places and a bad one gets the same message. Each also
//! writes itself back (`Display`) in a form `FromStr` reads (the login agent passes
//! flags on that way).
//!
//! Pure: no I/O, no defaults (those are settled in `config`).

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration as people write it: `50ms`, `2s`, `10m`, `1h`, `1d`, `1w` (a fraction is
/// fine: `1.5s`), and a bare `0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeSpan(Duration);

impl TimeSpan {
    /// The span as a [`Duration`].
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl From<Duration> for TimeSpan {
    fn from(d: Duration) -> TimeSpan {
        TimeSpan(d)
    }
}

impl From<TimeSpan> for Duration {
    fn from(span: TimeSpan) -> Duration {
        span.0
    }
}

/// Why a text is not a [`TimeSpan`]; each message quotes the (trimmed) text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeSpanError {
    /// No number before the unit.
    #[error("{0:?} is not a duration; write it like 50ms, 2s, 10m or 1h")]
    NotANumber(String),
    /// A unit datasafe does not know (or none, on a number other than 0).
    #[error("{0:?} has no known unit; write it like 50ms, 2s, 10m or 1h")]
    NoUnit(String),
    /// More seconds than a `Duration` holds.
    #[error("{text:?}: {source}")]
    OutOfRange {
        /// The text given.
        text: String,
        /// Why the standard library refused it.
        source: std::time::TryFromFloatSecsError,
    },
}

impl FromStr for TimeSpan {
    type Err = TimeSpanError;

    fn from_str(text: &str) -> Result<TimeSpan, TimeSpanError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| TimeSpanError::NotANumber(text.to_string()))?;
        let seconds = match unit.trim() {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            "w" => value * 7.0 * 86400.0,
            "" if value == 0.0 => 0.0,
            _ => return Err(TimeSpanError::NoUnit(text.to_string())),
        };
        Duration::try_from_secs_f64(seconds)
            .map(TimeSpan)
            .map_err(|source| TimeSpanError::OutOfRange {
                text: text.to_string(),
                source,
            })
    }
}

impl fmt::Display for TimeSpan {
    /// Whole seconds as `Ns`, anything finer as `Nms` (possibly with a fraction).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_secs_f64() * 1000.0)
        }
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    /// A string only (`debounce = "2s"`), read by [`FromStr`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TimeSpan, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How long versions are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// No versions: replaced and deleted files are gone.
    Off,
    /// Everything for an hour, then one per hour for a day, one per day for 30 days,
    /// nothing older.
    Staggered,
    /// Everything younger than this.
    Younger(Duration),
}

impl Retention {
    /// True unless versions are off.
    pub fn keeps(self) -> bool {
        self != Retention::Off
    }
}

/// A text that is not a [`Retention`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid retention '{0}': use 0 (no versions), staggered, or a duration such as 7d or 12h")]
pub struct RetentionError(String);

impl FromStr for Retention {
    type Err = RetentionError;

    /// Reads `0` / `off`, `staggered`, or a duration such as `7d` or `12h`.
    fn from_str(text: &str) -> Result<Retention, RetentionError> {
        match text.trim() {
            "0" | "off" | "none" => Ok(Retention::Off),
            "staggered" | "default" => Ok(Retention::Staggered),
            other => match other.parse::<TimeSpan>() {
                Ok(d) if d.0.is_zero() => Ok(Retention::Off),
                Ok(d) => Ok(Retention::Younger(d.0)),
                Err(_) => Err(RetentionError(other.to_string())),
            },
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Off => f.write_str("0"),
            Retention::Staggered => f.write_str("staggered"),
            Retention::Younger(d) => TimeSpan(*d).fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for Retention {
    /// `keep_versions`: `0`, or a string (`"staggered"`, `"7d"`, `"0"`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Retention, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(0) => Ok(Retention::Off),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "keep_versions = {n}: write a duration such as \"{n}d\", \"staggered\", or 0"
            ))),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A number of bytes as people write it (`--versions-max-size`, `versions_max_size`):
/// plain bytes, or a number (a fraction is fine) with a unit: `KiB`, `MiB`, `GiB`, `TiB`
/// (powers of 1024; also `K`, `M`, `G`, `T` and `k`), `KB`, `MB`, `GB`, `TB` (powers of
/// 1000), `B`. At least one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(u64);

impl Size {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// A text that is not a [`Size`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size '{0}': write bytes or a number with a unit, such as 500MB, 1G or \
     10GiB (for no versions at all, use --keep-versions 0)"
)]
pub struct SizeError(String);

impl FromStr for Size {
    type Err = SizeError;

    fn from_str(text: &str) -> Result<Size, SizeError> {
        let text = text.trim();
        let bad = || SizeError(text.to_string());
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let scale: u64 = match unit.trim() {
            "" | "B" | "b" => 1,
            "K" | "k" | "KiB" | "Ki" => 1 << 10,
            "M" | "MiB" | "Mi" => 1 << 20,
            "G" | "GiB" | "Gi" => 1 << 30,
            "T" | "TiB" | "Ti" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        let value: f64 = number.parse().map_err(|_| bad())?;
        let bytes = value * scale as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(Size(bytes as u64))
    }
}

impl fmt::Display for Size {
    /// Plain bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    /// Bytes as a number, or a string such as `"10GiB"` or `"500MB"`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(text) => text,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A command line with one flag of each type, parsed by clap as `--debounce` and
    /// `--keep-versions` are.
    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long)]
        span: Option<TimeSpan>,
        #[arg(long)]
        retention: Option<Retention>,
        #[arg(long)]
        size: Option<Size>,
    }

    /// A TOML file with one key of each type, read by serde as the config file is.
    #[derive(Debug, Deserialize)]
    struct File {
        span: Option<TimeSpan>,
        retention: Option<Retention>,
        size: Option<Size>,
    }

    fn clap_parse(flag: &str, text: &str) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(["t", &format!("--{flag}"), text])
    }

    fn serde_parse(key: &str, text: &str) -> Result<File, toml::de::Error> {
        toml::from_str(&format!("{key} = {text:?}"))
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let table = [
            ("50ms", Some(Duration::from_millis(50))),
            ("2s", Some(Duration::from_secs(2))),
            ("10m", Some(Duration::from_secs(600))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1d", Some(Duration::from_secs(86400))),
            ("1w", Some(Duration::from_secs(7 * 86400))),
            ("1.5s", Some(Duration::from_millis(1500))),
            (" 2 s ", Some(Duration::from_secs(2))),
            ("0", Some(Duration::ZERO)),
            ("5", None),
            ("2 weeks", None),
            ("ms", None),
            ("-1s", None),
        ];
        for (text, want) in table {
            let got = text.parse::<TimeSpan>().ok().map(TimeSpan::duration);
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        let err = |text: &str| text.parse::<TimeSpan>().unwrap_err().to_string();
        assert_eq!(
            err(" soon"),
            "\"soon\" is not a duration; write it like 50ms, 2s, 10m or 1h"
        );
        assert_eq!(
            err("5"),
            "\"5\" has no known unit; write it like 50ms, 2s, 10m or 1h"
        );
        assert!(err("99999999999999999999w").starts_with("\"99999999999999999999w\": "));
    }

    #[test]
    fn retention_reads_off_staggered_and_durations() {
        let table = [
            ("0", Retention::Off),
            ("off", Retention::Off),
            ("none", Retention::Off),
            ("0s", Retention::Off),
            ("staggered", Retention::Staggered),
            ("default", Retention::Staggered),
            ("7d", Retention::Younger(Duration::from_secs(7 * 86400))),
            (" 12h ", Retention::Younger(Duration::from_secs(12 * 3600))),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Retention>(), Ok(want), "{text}");
        }
        assert_eq!(
            " soon ".parse::<Retention>().unwrap_err().to_string(),
            "invalid retention 'soon': use 0 (no versions), staggered, or a duration such as \
             7d or 12h"
        );
    }

    #[test]
    fn sizes_read_with_binary_and_decimal_units() {
        for (text, want) in [
            ("10GiB", 10u64 << 30),
            ("500MB", 500_000_000),
            ("1G", 1 << 30),
            ("1.5M", 3 << 19),
            ("4096", 4096),
            (" 2 KiB ", 2048),
            ("3kB", 3000),
        ] {
            assert_eq!(text.parse::<Size>().map(Size::bytes), Ok(want), "{text}");
        }
        for text in ["", "0", "GiB", "10 parsecs", "-5M", "1e3", "0.1"] {
            assert!(text.parse::<Size>().is_err(), "{text}");
        }
        assert_eq!(
            "10 parsecs".parse::<Size>().unwrap_err().to_string(),
            "invalid size '10 parsecs': write bytes or a number with a unit, such as 500MB, \
             1G or 10GiB (for no versions at all, use --keep-versions 0)"
        );
    }

    #[test]
    fn clap_and_serde_read_the_same_values() {
        for text in ["50ms", "2s", "1.5s", "10m", "1h", "1d", "0"] {
            let flag = clap_parse("span", text).unwrap().span;
            let key = serde_parse("span", text).unwrap().span;
            assert_eq!(flag, key, "{text}");
            assert_eq!(flag, text.parse().ok(), "{text}");
        }
        for text in ["0", "off", "staggered", "7d", "12h"] {
            let flag = clap_parse("retention", text).unwrap().retention;
            let key = serde_parse("retention", text).unwrap().retention;
            assert_eq!(flag, key, "{text}");
            assert_eq!(flag, text.parse().ok(), "{text}");
        }
        for text in ["10GiB", "500MB", "1G", "4096"] {
            let flag = clap_parse("size", text).unwrap().size;
            let key = serde_parse("size", text).unwrap().size;
            assert_eq!(flag, key, "{text}");
            assert_eq!(flag, text.parse().ok(), "{text}");
        }
        // TOML numbers where the file allows them.
        let file: File = toml::from_str("retention = 0\nsize = 4096").unwrap();
        assert_eq!(file.retention, Some(Retention::Off));
        assert_eq!(file.size, "4096".parse().ok());
    }

    #[test]
    fn clap_and_serde_refuse_with_the_same_message() {
        for (flag, text) in [
            ("span", "soon"),
            ("span", "5"),
            ("retention", "soon"),
            ("size", "10 parsecs"),
        ] {
            let message = match flag {
                "span" => text.parse::<TimeSpan>().unwrap_err().to_string(),
                "retention" => text.parse::<Retention>().unwrap_err().to_string(),
                _ => text.parse::<Size>().unwrap_err().to_string(),
            };
            let from_clap = clap_parse(flag, text).unwrap_err().to_string();
            assert!(
                from_clap.contains(&format!(
                    "for '--{flag} <{}>': {message}\n",
                    flag.to_uppercase()
                )),
                "{from_clap:?} lacks {message:?}"
            );
            assert_eq!(
                serde_parse(flag, text).unwrap_err().message().trim(),
                message
            );
        }
        // The file's own message for a number that is not 0.
        let err = toml::from_str::<File>("retention = 7").unwrap_err();
        assert_eq!(
            err.message().trim(),
            "keep_versions = 7: write a duration such as \"7d\", \"staggered\", or 0"
        );
    }

    #[test]
    fn each_value_reads_back_what_it_writes() {
        for text in ["50ms", "2s", "1.5s", "10m", "0", "1d"] {
            let span: TimeSpan = text.parse().unwrap();
            assert_eq!(span.to_string().parse::<TimeSpan>(), Ok(span), "{text}");
        }
        assert_eq!(TimeSpan::from(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(
            TimeSpan::from(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        for r in [
            Retention::Off,
            Retention::Staggered,
            Retention::Younger(Duration::from_secs(7 * 86400)),
        ] {
            assert_eq!(r.to_string().parse::<Retention>(), Ok(r));
        }
        assert_eq!(Retention::Off.to_string(), "0");
        assert_eq!(Retention::Staggered.to_string(), "staggered");
        let size: Size = "1.5M".parse().unwrap();
        assert_eq!(size.to_string(), "1572864");
        assert_eq!(size.to_string().parse::<Size>(), Ok(size));
    }
}
