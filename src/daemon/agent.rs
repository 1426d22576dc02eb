//! The login agent: a systemd user unit on Linux, a LaunchAgent on macOS, both running
//! `datasafe watch SRC DST [options]` or `datasafe watch --config FILE [options]` with
//! this binary's absolute path and absolute paths throughout (an agent starts in `/`).
//! `print` renders the file for either platform anywhere (for review and tests);
//! `install` and `uninstall` write it and talk to the service manager, and only work on
//! the platform they are for.

use crate::cli::{MirrorArgs, OutputArgs, PairArgs, TimingArgs, WatchArgs};
use crate::config::ConfigError;
use crate::output::names::esc;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The systemd unit's file name.
pub const UNIT_NAME: &str = "datasafe.service";
/// The LaunchAgent's label (and file name without `.plist`).
pub const LAUNCHD_LABEL: &str = "io.datasafe.watch";

/// The service managers datasafe can install itself into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    /// A systemd user unit (Linux).
    Systemd,
    /// A launchd LaunchAgent (macOS).
    Launchd,
}

impl Platform {
    /// The platform this binary runs on, if it has a supported service manager.
    pub fn current() -> Option<Platform> {
        if cfg!(target_os = "macos") {
            Some(Platform::Launchd)
        } else if cfg!(target_os = "linux") {
            Some(Platform::Systemd)
        } else {
            None
        }
    }
}

/// Why the agent cannot be set up, installed or removed. The `agent` runner treats an
/// error of [`AgentSpec::for_this_binary`] as a usage error (what `watch` would refuse)
/// and one of [`install`] or [`uninstall`] as a failure of the service manager.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The binary's own path cannot be found.
    #[error("cannot find this program's own path: {0}")]
    OwnPath(#[source] io::Error),
    /// A path given cannot be made absolute.
    #[error("{}: {source}", esc(.path))]
    Absolute {
        /// The path given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Neither SRC DST nor a config file, and no default config file without `$HOME`.
    #[error("no SRC DST or config file given and $HOME is not set; give SRC DST or --config FILE")]
    NoPairs,
    /// The config file the agent would watch is not there.
    #[error(
        "config file {} does not exist; write one first (see examples/config.toml), or give \
         SRC DST",
        esc(.0)
    )]
    NoConfigFile(PathBuf),
    /// What `watch` would refuse.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `$HOME` is needed for the agent's files.
    #[error("$HOME is not set")]
    NoHome,
    /// Neither systemd nor launchd here.
    #[error("no supported service manager on this system (systemd or launchd)")]
    NoServiceManager,
    /// The agent file's folder cannot be made.
    #[error("creating {}: {source}", esc(.path))]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The agent file cannot be written.
    #[error("writing {}: {source}", esc(.path))]
    Write {
        /// The agent file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The agent file cannot be removed.
    #[error("removing {}: {source}", esc(.path))]
    Remove {
        /// The agent file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `systemctl` or `launchctl` cannot be run.
    #[error("cannot run {program}: {source}; is it installed?")]
    Spawn {
        /// The program.
        program: String,
        /// What the OS said.
        source: io::Error,
    },
    /// `systemctl` or `launchctl` failed.
    #[error("`{command}` failed: {message}")]
    Failed {
        /// The command line.
        command: String,
        /// The first line it printed on stderr.
        message: String,
    },
}

/// What the agent runs: this binary, and the arguments it gets (every path absolute).
pub struct AgentSpec {
    /// The datasafe binary.
    pub exe: PathBuf,
    /// The arguments after the binary: `watch`, SRC DST or `--config FILE`, options.
    pub args: Vec<OsString>,
    /// Where launchd writes the agent's output.
    pub log_dir: PathBuf,
}

impl AgentSpec {
    /// This binary (resolved, so a `cargo install` or a checkout both work) running
    /// `watch` as `watch` says: SRC DST and options, or a config file (the default one
    /// when neither is given). Checked as `watch` would check it, so a typo fails now
    /// rather than at the next login.
    pub fn for_this_binary(watch: &WatchArgs) -> Result<AgentSpec, AgentError> {
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(AgentError::OwnPath)?;
        let absolute = |p: &Path| {
            std::path::absolute(p).map_err(|source| AgentError::Absolute {
                path: p.to_path_buf(),
                source,
            })
        };
        let mut watch = absolute_paths(watch, absolute)?;
        if watch.pairs.src.is_none() {
            let config = match watch.pairs.config.take() {
                Some(c) => c,
                None => crate::config::default_path().ok_or(AgentError::NoPairs)?,
            };
            if !config.exists() {
                return Err(AgentError::NoConfigFile(config));
            }
            watch.pairs.config = Some(config);
        }
        watch.settings()?;
        let log_dir = home()?.join("Library/Logs/datasafe");
        Ok(AgentSpec {
            exe,
            args: watch_argv(&watch),
            log_dir,
        })
    }

    /// The unit or plist text.
    pub fn render(&self, platform: Platform) -> String {
        match platform {
            Platform::Systemd => self.systemd_unit(),
            Platform::Launchd => self.launchd_plist(),
        }
    }

    fn systemd_unit(&self) -> String {
        let words: Vec<String> = std::iter::once(self.exe.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|w| systemd_quote(Path::new(w)))
            .collect();
        // A stop by SIGTERM ends the process by that signal, which systemd counts as a
        // clean exit: Restart=on-failure does not restart it.
        format!(
            "[Unit]\n\
             Description=datasafe: live mirrors of your folders\n\
             Documentation=man:datasafe(1)\n\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStart={}\n\
             Restart=on-failure\n\
             RestartSec=10\n\
             \n\
             [Install]\n\
             WantedBy=default.target\n",
            words.join(" ")
        )
    }

    fn launchd_plist(&self) -> String {
        let args: String = std::iter::once(self.exe.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| {
                format!(
                    "        <string>{}</string>\n",
                    xml_escape(&a.to_string_lossy())
                )
            })
            .collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <plist version=\"1.0\">\n\
             <dict>\n\
             \x20   <key>Label</key>\n\
             \x20   <string>{LAUNCHD_LABEL}</string>\n\
             \x20   <key>ProgramArguments</key>\n\
             \x20   <array>\n\
             {args}\
             \x20   </array>\n\
             \x20   <key>RunAtLoad</key>\n\
             \x20   <true/>\n\
             \x20   <key>KeepAlive</key>\n\
             \x20   <true/>\n\
             \x20   <key>StandardOutPath</key>\n\
             \x20   <string>{out}</string>\n\
             \x20   <key>StandardErrorPath</key>\n\
             \x20   <string>{err}</string>\n\
             </dict>\n\
             </plist>\n",
            out = xml_escape(&self.log_dir.join("agent.out.log").display().to_string()),
            err = xml_escape(&self.log_dir.join("agent.err.log").display().to_string()),
        )
    }
}

/// Where the agent file goes for `platform`.
pub fn agent_path(platform: Platform) -> Result<PathBuf, AgentError> {
    match platform {
        Platform::Systemd => {
            let config = match std::env::var_os("XDG_CONFIG_HOME") {
                Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
                _ => home()?.join(".config"),
            };
            Ok(config.join("systemd/user").join(UNIT_NAME))
        }
        Platform::Launchd => Ok(home()?
            .join("Library/LaunchAgents")
            .join(format!("{LAUNCHD_LABEL}.plist"))),
    }
}

/// Writes the agent file and enables and starts it.
pub fn install(spec: &AgentSpec) -> Result<String, AgentError> {
    let platform = Platform::current().ok_or(AgentError::NoServiceManager)?;
    let path = agent_path(platform)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| AgentError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    if platform == Platform::Launchd {
        let _ = std::fs::create_dir_all(&spec.log_dir);
    }
    std::fs::write(&path, spec.render(platform)).map_err(|source| AgentError::Write {
        path: path.clone(),
        source,
    })?;
    match platform {
        Platform::Systemd => {
            run(&["systemctl", "--user", "daemon-reload"])?;
            run(&["systemctl", "--user", "enable", "--now", UNIT_NAME])?;
        }
        Platform::Launchd => {
            let p = path.display().to_string();
            run(&["launchctl", "load", "-w", &p])?;
        }
    }
    Ok(format!("installed and started {}", path.display()))
}

/// Stops and disables the agent and removes its file.
pub fn uninstall() -> Result<String, AgentError> {
    let platform = Platform::current().ok_or(AgentError::NoServiceManager)?;
    let path = agent_path(platform)?;
    if !path.exists() {
        return Ok(format!(
            "no agent installed ({} does not exist)",
            path.display()
        ));
    }
    match platform {
        Platform::Systemd => {
            run(&["systemctl", "--user", "disable", "--now", UNIT_NAME])?;
        }
        Platform::Launchd => {
            let p = path.display().to_string();
            run(&["launchctl", "unload", "-w", &p])?;
        }
    }
    std::fs::remove_file(&path).map_err(|source| AgentError::Remove {
        path: path.clone(),
        source,
    })?;
    if platform == Platform::Systemd {
        let _ = run(&["systemctl", "--user", "daemon-reload"]);
    }
    Ok(format!("stopped and removed {}", path.display()))
}

fn run(argv: &[&str]) -> Result<(), AgentError> {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|source| AgentError::Spawn {
            program: argv[0].to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(AgentError::Failed {
        command: argv.join(" "),
        message: stderr
            .trim()
            .lines()
            .next()
            .unwrap_or("no message")
            .to_string(),
    })
}

fn home() -> Result<PathBuf, AgentError> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or(AgentError::NoHome)
}

/// `watch` with every path in it made absolute by `absolute`.
fn absolute_paths(
    watch: &WatchArgs,
    absolute: impl Fn(&Path) -> Result<PathBuf, AgentError>,
) -> Result<WatchArgs, AgentError> {
    let abs = |p: &Option<PathBuf>| p.as_deref().map(&absolute).transpose();
    Ok(WatchArgs {
        pairs: PairArgs {
            src: abs(&watch.pairs.src)?,
            dst: abs(&watch.pairs.dst)?,
            config: abs(&watch.pairs.config)?,
        },
        mirror: MirrorArgs {
            exclude: watch.mirror.exclude.clone(),
            ..watch.mirror
        },
        timing: TimingArgs { ..watch.timing },
        output: OutputArgs {
            log_file: abs(&watch.output.log_file)?,
            error_log: abs(&watch.output.error_log)?,
            ..watch.output
        },
    })
}

/// The command line that gives `watch` back: `watch`, then SRC DST or `--config FILE`,
/// then every option set.
fn watch_argv(watch: &WatchArgs) -> Vec<OsString> {
    // Destructured in full: a new option fails to compile here until it is passed on.
    let WatchArgs {
        pairs: PairArgs { src, dst, config },
        mirror:
            MirrorArgs {
                compress,
                checksum,
                no_delete,
                exclude,
                keep_versions,
                force,
                max_delete,
                versions_max_size,
                jobs,
            },
        timing:
            TimingArgs {
                debounce,
                rescan,
                max_wait,
            },
        output:
            OutputArgs {
                dry_run,
                json,
                log_file,
                error_log,
                verbose,
                quiet,
            },
    } = watch;
    let mut argv: Vec<OsString> = vec!["watch".into()];
    let mut flag = |on: bool, name: &str| {
        if on {
            argv.push(name.into());
        }
    };
    flag(*compress, "--compress");
    flag(*checksum, "--checksum");
    flag(*no_delete, "--no-delete");
    flag(*force, "--force");
    flag(*dry_run, "--dry-run");
    flag(*json, "--json");
    flag(*quiet, "--quiet");
    for _ in 0..*verbose {
        argv.push("--verbose".into());
    }
    for pattern in exclude {
        // One word with `=`: a pattern that starts with `-` must not read as a flag.
        argv.push(format!("--exclude={pattern}").into());
    }
    let mut valued = |name: &str, value: Option<OsString>| {
        if let Some(value) = value {
            argv.push(name.into());
            argv.push(value);
        }
    };
    valued(
        "--keep-versions",
        keep_versions.map(|r| r.to_string().into()),
    );
    valued("--max-delete", max_delete.map(|n| n.to_string().into()));
    valued(
        "--versions-max-size",
        versions_max_size.map(|n| n.to_string().into()),
    );
    valued("--jobs", jobs.map(|n| n.to_string().into()));
    valued("--debounce", debounce.map(|d| d.to_string().into()));
    valued("--rescan", rescan.map(|d| d.to_string().into()));
    valued("--max-wait", max_wait.map(|d| d.to_string().into()));
    valued("--log-file", log_file.clone().map(PathBuf::into_os_string));
    valued(
        "--error-log",
        error_log.clone().map(PathBuf::into_os_string),
    );
    valued("--config", config.clone().map(PathBuf::into_os_string));
    if let (Some(src), Some(dst)) = (src, dst) {
        // After `--`, so a folder named like a flag stays a folder.
        argv.push("--".into());
        argv.push(src.clone().into_os_string());
        argv.push(dst.clone().into_os_string());
    }
    argv
}

/// A path as one systemd command-line word (quoted if it holds spaces or quotes; `%`
/// and `$` escaped, as systemd would expand them).
fn systemd_quote(path: &Path) -> String {
    let s = path
        .display()
        .to_string()
        .replace('%', "%%")
        .replace('$', "$$");
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AgentSpec {
        AgentSpec {
            exe: PathBuf::from("/opt/data safe/datasafe"),
            args: ["watch", "--config", "/home/u/.config/datasafe/config.toml"]
                .map(OsString::from)
                .to_vec(),
            log_dir: PathBuf::from("/Users/u/Library/Logs/datasafe"),
        }
    }

    /// `datasafe agent install ARGS...` as parsed.
    fn parsed(args: &[&str]) -> WatchArgs {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["datasafe", "agent", "install"].iter().chain(args))
                .unwrap();
        match cli.command {
            crate::cli::Command::Agent(crate::cli::AgentCommand::Install { watch }) => watch,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn systemd_unit_runs_watch_with_the_config() {
        let unit = spec().render(Platform::Systemd);
        assert!(unit.contains(
            "ExecStart=\"/opt/data safe/datasafe\" watch --config /home/u/.config/datasafe/config.toml\n"
        ), "{unit}");
        assert!(unit.contains("Restart=on-failure\n"));
        assert!(unit.contains("WantedBy=default.target\n"));
        assert!(unit.contains("Documentation=man:datasafe(1)\n"), "{unit}");
    }

    #[test]
    fn watch_arguments_come_back_as_they_were_given() {
        let given = [
            "/s",
            "/d",
            "--compress",
            "--checksum",
            "--no-delete",
            "--exclude",
            "*.tmp",
            "--exclude=-odd",
            "--exclude",
            "/docs",
            "--keep-versions",
            "7d",
            "--force",
            "--max-delete",
            "50",
            "-j",
            "3",
            "--debounce",
            "1.5s",
            "--rescan",
            "0",
            "--max-wait",
            "2m",
            "-vv",
            "--log-file",
            "/l/log",
            "--error-log",
            "/l/err",
        ];
        let watch = parsed(&given);
        let argv = watch_argv(&watch);
        assert_eq!(argv[0], "watch");
        let words: Vec<String> = argv[1..]
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        let again = parsed(&words.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(format!("{again:?}"), format!("{watch:?}"), "{words:?}");
        let span = crate::config::TimeSpan::from(std::time::Duration::from_millis(1500));
        assert_eq!(span.to_string(), "1500ms");
        assert_eq!(crate::config::Retention::Off.to_string(), "0");

        let with_config = parsed(&["--config", "/c.toml", "--compress"]);
        let words = watch_argv(&with_config);
        assert_eq!(words, ["watch", "--compress", "--config", "/c.toml"]);
    }

    #[test]
    fn systemd_words_escape_what_systemd_expands() {
        assert_eq!(systemd_quote(Path::new("/a/50%")), "/a/50%%");
        assert_eq!(systemd_quote(Path::new("/a/$HOME")), "/a/$$HOME");
        assert_eq!(systemd_quote(Path::new("/a b")), "\"/a b\"");
    }

    #[test]
    fn launchd_plist_runs_at_load_and_keeps_alive() {
        let plist = spec().render(Platform::Launchd);
        assert!(plist.contains("<string>io.datasafe.watch</string>"));
        assert!(
            plist.contains(
                "<string>/opt/data safe/datasafe</string>\n        <string>watch</string>"
            )
        );
        assert!(plist.contains("<key>RunAtLoad</key>\n    <true/>"));
        assert!(plist.contains("<key>KeepAlive</key>\n    <true/>"));
    }
}
