//! The TOML config file: its schema (serde; an unknown key is an error naming it), `~` and
//! `$HOME` expansion, errors with line and column, and the checks across pairs (two
//! pairs with one DST, a DST inside another pair's SRC, a DST inside its own SRC that
//! the pair does not exclude). Top-level mirror options are defaults for every pair.

use super::{
    Config, ConfigError, Dest, Overrides, Pair, PairSettings, Settings, Timing, display_name,
    excludes, guard, mirror_jobs, output, plan_options, retention, timing, versions_max_size,
};
use crate::config::value::{Retention, Size, TimeSpan};
use crate::output::names::{esc, io_message};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    log_file: Option<String>,
    error_log_file: Option<String>,
    debounce: Option<TimeSpan>,
    rescan: Option<TimeSpan>,
    max_wait: Option<TimeSpan>,
    jobs: Option<u32>,
    ssh_command: Option<String>,
    /// Defaults for the `s3://` pairs (each may say its own).
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    #[serde(flatten)]
    defaults: PairDefaults,
    #[serde(default)]
    mirror: Vec<MirrorEntry>,
}

/// Mirror options that can be set per pair or, as defaults, at the top level.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct PairDefaults {
    pub(crate) compress: Option<bool>,
    pub(crate) checksum: Option<bool>,
    pub(crate) delete: Option<bool>,
    pub(crate) xattrs: Option<bool>,
    pub(crate) acls: Option<bool>,
    pub(crate) hard_links: Option<bool>,
    pub(crate) exclude: Option<Vec<String>>,
    pub(crate) keep_versions: Option<Retention>,
    pub(crate) versions_max_size: Option<Size>,
    pub(crate) max_delete: Option<u64>,
    pub(crate) force: Option<bool>,
}

/// One `[[mirror]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorEntry {
    name: Option<String>,
    source: String,
    dest: String,
    compress: Option<bool>,
    checksum: Option<bool>,
    delete: Option<bool>,
    xattrs: Option<bool>,
    acls: Option<bool>,
    hard_links: Option<bool>,
    exclude: Option<Vec<String>>,
    enabled: Option<bool>,
    keep_versions: Option<Retention>,
    versions_max_size: Option<Size>,
    max_delete: Option<u64>,
    force: Option<bool>,
    ssh_command: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
}

/// `$XDG_CONFIG_HOME/datasafe/config.toml` (or `~/.config/datasafe/config.toml`).
pub fn default_path() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("datasafe").join("config.toml"))
}

/// `$XDG_STATE_HOME/datasafe` (or `~/.local/state/datasafe`): default logs and status.
pub fn state_dir() -> Option<PathBuf> {
    xdg_dir("XDG_STATE_HOME", ".local/state").map(|d| d.join("datasafe"))
}

fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) if Path::new(&v).is_absolute() => Some(PathBuf::from(v)),
        _ => home().map(|h| h.join(fallback)),
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// A path in the file that cannot be expanded; the message quotes it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum ExpandError {
    /// `~` or `$HOME` without a home.
    #[error("{0:?} needs $HOME, which is not set")]
    NoHome(String),
    /// `~user/…`.
    #[error("{0:?}: only ~ and ~/… are understood, not ~user")]
    OtherUser(String),
}

/// Expands a leading `~` and every `$HOME` / `${HOME}`.
fn expand(text: &str) -> Result<PathBuf, ExpandError> {
    if !(text.starts_with('~') || text.contains("$HOME") || text.contains("${HOME}")) {
        return Ok(PathBuf::from(text));
    }
    let home = home().ok_or_else(|| ExpandError::NoHome(text.to_string()))?;
    let home = home.to_string_lossy();
    let replaced = text.replace("${HOME}", &home).replace("$HOME", &home);
    let expanded = match replaced.strip_prefix('~') {
        Some("") => home.to_string(),
        Some(rest) if rest.starts_with('/') => format!("{home}{rest}"),
        Some(_) => return Err(ExpandError::OtherUser(text.to_string())),
        None => replaced,
    };
    Ok(PathBuf::from(expanded))
}

/// Reads, checks and settles the config file at `path`, with `cli` on top.
pub(crate) fn load(path: &Path, cli: &Overrides) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read config file {}: {}",
            esc(path),
            io_message(&e)
        ))
    })?;
    parse(&text, path, cli)
}

/// Settles the text of a config file (`path` is for messages and relative paths).
pub(crate) fn parse(text: &str, path: &Path, cli: &Overrides) -> Result<Settings, ConfigError> {
    let here = |message: String| ConfigError(format!("config {}: {message}", esc(path)));
    let file: FileConfig = toml::from_str(text).map_err(|e| here(describe(&e, text)))?;
    if file.mirror.is_empty() {
        return Err(here(
            "no [[mirror]] table; add one with source and dest".to_string(),
        ));
    }
    let base = Timing {
        debounce: file
            .debounce
            .map_or(Timing::default().debounce, TimeSpan::duration),
        rescan: match file.rescan.map(TimeSpan::duration) {
            Some(every) => (!every.is_zero()).then_some(every),
            None => Timing::default().rescan,
        },
        max_wait: file
            .max_wait
            .map_or(Timing::default().max_wait, TimeSpan::duration),
    };
    let timing = timing(cli.timing.as_ref(), &base).map_err(|e| here(e.0))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let state = state_dir();
    let log_path =
        |given: &Option<String>, default: &str| -> Result<Option<PathBuf>, ConfigError> {
            match given {
                // Relative to the file, like source and dest (an agent runs in `/`).
                Some(p) => expand(p)
                    .map(|e| Some(base_dir.join(e)))
                    .map_err(|e| here(e.to_string())),
                None => Ok(state.as_ref().map(|d| d.join(default))),
            }
        };
    let logs = (
        log_path(&file.log_file, "datasafe.log")?,
        log_path(&file.error_log_file, "error.log")?,
    );
    let output = output(&cli.output, Some(logs));

    let mut pairs = Vec::new();
    for (n, entry) in file.mirror.iter().enumerate() {
        let at = |message: String| here(format!("[[mirror]] #{}: {message}", n + 1));
        let source = base_dir.join(expand(&entry.source).map_err(|e| at(e.to_string()))?);
        let dest = Dest::parse(
            expand(&entry.dest)
                .map_err(|e| at(e.to_string()))?
                .as_os_str(),
        )
        .map_err(|e| at(e.to_string()))?;
        let dest = match dest {
            Dest::Local(path) => Dest::Local(base_dir.join(path)),
            remote => remote
                .with_ssh_command(
                    cli.mirror.ssh_command.as_deref(),
                    entry.ssh_command.as_deref().or(file.ssh_command.as_deref()),
                )
                .with_s3(&super::S3Settings {
                    endpoint: cli
                        .mirror
                        .s3_endpoint
                        .clone()
                        .or_else(|| entry.endpoint.clone())
                        .or_else(|| file.endpoint.clone()),
                    region: entry.region.clone().or_else(|| file.region.clone()),
                    profile: entry.profile.clone().or_else(|| file.profile.clone()),
                }),
        };
        let pair = Pair::locate(&source, &dest).map_err(|e| at(e.0))?;
        let defaults = PairDefaults {
            compress: entry.compress.or(file.defaults.compress),
            checksum: entry.checksum.or(file.defaults.checksum),
            delete: entry.delete.or(file.defaults.delete),
            xattrs: entry.xattrs.or(file.defaults.xattrs),
            acls: entry.acls.or(file.defaults.acls),
            hard_links: entry.hard_links.or(file.defaults.hard_links),
            exclude: None,
            keep_versions: entry.keep_versions.or(file.defaults.keep_versions),
            versions_max_size: entry.versions_max_size.or(file.defaults.versions_max_size),
            max_delete: entry.max_delete.or(file.defaults.max_delete),
            force: entry.force.or(file.defaults.force),
        };
        let mut file_excludes = file.defaults.exclude.clone().unwrap_or_default();
        file_excludes.extend(entry.exclude.iter().flatten().cloned());
        let excludes = excludes(&cli.mirror.exclude, &file_excludes).map_err(|e| at(e.0))?;
        let plan = plan_options(&cli.mirror, &defaults);
        let jobs = mirror_jobs(&pair.dst, plan.compress, cli.mirror.jobs, file.jobs);
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| display_name(&pair.src));
        pairs.push(PairSettings {
            name,
            enabled: entry.enabled.unwrap_or(true),
            config: Config {
                pair,
                plan,
                versions: retention(&cli.mirror, &defaults),
                versions_max_size: versions_max_size(&cli.mirror, &defaults),
                guard: guard(&cli.mirror, &defaults),
                excludes,
                jobs,
                output: output.clone(),
            },
        });
    }
    check_pairs(&pairs).map_err(|e| here(e.to_string()))?;
    Ok(Settings {
        pairs,
        timing,
        output,
        file: Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())),
    })
}

/// Two enabled pairs (or a pair and itself) that would mirror into each other.
#[derive(Debug, thiserror::Error)]
enum Overlap {
    /// A DST inside its own SRC that the pair does not exclude.
    #[error(
        "pair {name:?}: its dest {} is inside its source; add exclude = [{:?}] to it or \
         choose a dest outside the source",
        esc(.dst),
        .rel.to_string_lossy()
    )]
    DestInSource {
        /// The pair.
        name: String,
        /// Its DST.
        dst: PathBuf,
        /// DST relative to SRC.
        rel: PathBuf,
    },
    /// Two pairs with one DST.
    #[error("pairs {a:?} and {b:?} have the same dest {}; give each its own", esc(.dst))]
    SameDest {
        /// The first pair.
        a: String,
        /// The second pair.
        b: String,
        /// Their DST.
        dst: PathBuf,
    },
    /// One pair's DST and another's SRC, one inside the other.
    #[error(
        "pair {name:?}: its dest {} overlaps the source of pair {other:?} ({}); one \
         would mirror the other",
        esc(.dst),
        esc(.src)
    )]
    Crossed {
        /// The pair whose DST it is.
        name: String,
        /// Its DST.
        dst: PathBuf,
        /// The other pair.
        other: String,
        /// The other pair's SRC.
        src: PathBuf,
    },
}

/// The checks that need every pair at once.
fn check_pairs(pairs: &[PairSettings]) -> Result<(), Overlap> {
    let enabled: Vec<&PairSettings> = pairs.iter().filter(|p| p.enabled).collect();
    for (i, a) in enabled.iter().enumerate() {
        let pa = &a.config.pair;
        if let Some(rel) = &pa.dst_in_src
            && !a.config.excludes.covers(rel)
        {
            return Err(Overlap::DestInSource {
                name: a.name.clone(),
                dst: pa.dst.display(),
                rel: rel.clone(),
            });
        }
        for b in &enabled[i + 1..] {
            let pb = &b.config.pair;
            if pa.dst == pb.dst {
                return Err(Overlap::SameDest {
                    a: a.name.clone(),
                    b: b.name.clone(),
                    dst: pa.dst.display(),
                });
            }
            for (x, y) in [(a, b), (b, a)] {
                let (px, py) = (&x.config.pair, &y.config.pair);
                // A remote DST cannot overlap a source on this machine.
                let Some(dst) = px.dst_local() else {
                    continue;
                };
                if dst.starts_with(&py.src) || py.src.starts_with(dst) {
                    return Err(Overlap::Crossed {
                        name: x.name.clone(),
                        dst: dst.to_path_buf(),
                        other: y.name.clone(),
                        src: py.src.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A TOML error as one line: `line L, column C: message`.
fn describe(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorOverrides;
    use std::time::Duration;

    fn settle(text: &str, mirror: &MirrorOverrides) -> Result<Settings, ConfigError> {
        let cli = Overrides {
            mirror: mirror.clone(),
            ..Overrides::default()
        };
        parse(text, Path::new("/etc/datasafe.toml"), &cli)
    }

    #[test]
    fn defaults_pairs_and_precedence() {
        let mut mirror = MirrorOverrides::default();
        let text = r#"
            debounce = "2s"
            jobs = 3
            compress = true
            exclude = ["*.tmp"]
            [[mirror]]
            source = "/data/music"
            dest = "/backup/music"
            exclude = [".stfolder"]
            [[mirror]]
            name = "docs"
            source = "/data/docs"
            dest = "/backup/docs"
            compress = false
            delete = false
            enabled = false
        "#;
        let s = settle(text, &mirror).unwrap();
        assert_eq!(s.timing.debounce, Duration::from_secs(2));
        assert_eq!(s.pairs.len(), 2);
        let music = &s.pairs[0];
        assert_eq!(music.name, "music");
        assert!(music.config.plan.compress && music.config.plan.delete);
        assert!(music.config.excludes.is_excluded(Path::new("a.tmp")));
        assert!(music.config.excludes.is_excluded(Path::new("x/.stfolder")));
        assert_eq!(music.config.jobs, 3);
        let docs = &s.pairs[1];
        assert_eq!(docs.name, "docs");
        assert!(!docs.enabled && !docs.config.plan.compress && !docs.config.plan.delete);
        assert_eq!(s.enabled().count(), 1);

        mirror.jobs = Some(1);
        mirror.no_delete = true;
        let s = settle(text, &mirror).unwrap();
        assert_eq!(s.pairs[0].config.jobs, 1, "a flag beats the file");
        assert!(!s.pairs[0].config.plan.delete);
    }

    #[test]
    fn errors_name_key_line_and_column() {
        let mirror = MirrorOverrides::default();
        let table = [
            (
                "[[mirror]]\nsource = \"/a\"\ndestination = \"/b\"\n",
                vec!["line 3, column 1", "destination"],
            ),
            (
                "jobs = \"four\"\n[[mirror]]\nsource = \"/a\"\ndest = \"/b\"\n",
                vec!["line 1, column 8"],
            ),
            ("debounce = \"soon\"\n", vec!["line 1", "soon"]),
            ("log_file = \"x\"\n", vec!["no [[mirror]]"]),
            (
                "[[mirror]]\nsource = \"/a\"\ndest = \"/b\"\n[[mirror]]\nsource = \"/c\"\ndest = \"/b/\"\n",
                vec!["same dest"],
            ),
            (
                "[[mirror]]\nsource = \"/a\"\ndest = \"/c/x\"\n[[mirror]]\nsource = \"/c\"\ndest = \"/d\"\n",
                vec!["overlaps the source"],
            ),
            (
                "[[mirror]]\nsource = \"/a\"\ndest = \"/a/backup\"\n",
                vec!["inside its source", "exclude"],
            ),
            (
                "[[mirror]]\nsource = \"/a\"\ndest = \"/a\"\n",
                vec!["same directory"],
            ),
        ];
        for (text, wants) in table {
            let err = settle(text, &mirror).unwrap_err().0;
            assert!(!err.contains('\n'), "one line: {err}");
            for want in wants {
                assert!(err.contains(want), "{want:?} not in {err:?} for {text:?}");
            }
        }
        let ok = "[[mirror]]\nsource = \"/a\"\ndest = \"/a/backup\"\nexclude = [\"backup\"]\n";
        assert!(settle(ok, &mirror).is_ok());
    }

    #[test]
    fn home_expands() {
        let home = home().unwrap_or_else(|| PathBuf::from("/root"));
        let h = home.to_string_lossy();
        assert_eq!(
            expand("~/Music").unwrap(),
            PathBuf::from(format!("{h}/Music"))
        );
        assert_eq!(expand("$HOME/x").unwrap(), PathBuf::from(format!("{h}/x")));
        assert_eq!(
            expand("${HOME}/y").unwrap(),
            PathBuf::from(format!("{h}/y"))
        );
        assert_eq!(expand("/abs").unwrap(), PathBuf::from("/abs"));
        assert!(expand("~bob/x").is_err());
    }
}
