//! The login agent: a systemd user unit on Linux, a LaunchAgent on macOS, both running
//! `datasafe watch SRC DST [options]` or `datasafe watch --config FILE [options]` with
//! this binary's absolute path and absolute paths throughout (an agent starts in `/`).
//! `print` renders the file for either platform anywhere (for review and tests);
//! `install` and `uninstall` write it and talk to the service manager, and only work on
//! the platform they are for.

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// `args`: `watch`, then SRC DST or `--config FILE` and options, every path in them
    /// absolute (the `agent` runner renders them from the command line, checked as
    /// `watch` would check them).
    pub fn for_this_binary(args: Vec<OsString>) -> Result<AgentSpec, AgentError> {
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(AgentError::OwnPath)?;
        let log_dir = home()?.join("Library/Logs/datasafe");
        Ok(AgentSpec { exe, args, log_dir })
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
