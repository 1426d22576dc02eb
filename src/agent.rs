//! The login agent: a systemd user unit on Linux, a LaunchAgent on macOS, both running
//! `datasafe watch --config FILE` with this binary's absolute path. `print` renders the
//! file for either platform anywhere (for review and tests); `install` and `uninstall`
//! write it and talk to the service manager, and only work on the platform they are for.

use crate::names::esc;
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

/// What the agent runs: this binary and the config file, both absolute.
pub struct AgentSpec {
    /// The datasafe binary.
    pub exe: PathBuf,
    /// The config file `watch` reads.
    pub config: PathBuf,
    /// Where launchd writes the agent's output.
    pub log_dir: PathBuf,
}

impl AgentSpec {
    /// This binary (resolved, so a `cargo install` or a checkout both work) and `config`
    /// (or the default config path).
    pub fn for_this_binary(config: Option<&Path>) -> Result<AgentSpec, String> {
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| format!("cannot find this program's own path: {e}"))?;
        let config = match config {
            Some(c) => std::path::absolute(c).map_err(|e| format!("{}: {e}", esc(c)))?,
            None => crate::config::default_path()
                .ok_or("no config file given and $HOME is not set; use --config FILE")?,
        };
        if !config.exists() {
            return Err(format!(
                "config file {} does not exist; write one first (see examples/config.toml)",
                esc(&config)
            ));
        }
        let log_dir = home()?.join("Library/Logs/datasafe");
        Ok(AgentSpec {
            exe,
            config,
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
        format!(
            "[Unit]\n\
             Description=datasafe: live mirrors of your folders\n\
             Documentation=https://github.com/datasafe/datasafe\n\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStart={} watch --config {}\n\
             Restart=on-failure\n\
             RestartSec=10\n\
             \n\
             [Install]\n\
             WantedBy=default.target\n",
            systemd_quote(&self.exe),
            systemd_quote(&self.config)
        )
    }

    fn launchd_plist(&self) -> String {
        let args = [
            self.exe.display().to_string(),
            "watch".into(),
            "--config".into(),
            self.config.display().to_string(),
        ];
        let args: String = args
            .iter()
            .map(|a| format!("        <string>{}</string>\n", xml_escape(a)))
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
pub fn agent_path(platform: Platform) -> Result<PathBuf, String> {
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
pub fn install(spec: &AgentSpec) -> Result<String, String> {
    let platform = Platform::current()
        .ok_or("no supported service manager on this system (systemd or launchd)")?;
    let path = agent_path(platform)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", esc(dir)))?;
    }
    if platform == Platform::Launchd {
        let _ = std::fs::create_dir_all(&spec.log_dir);
    }
    std::fs::write(&path, spec.render(platform))
        .map_err(|e| format!("writing {}: {e}", esc(&path)))?;
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
pub fn uninstall() -> Result<String, String> {
    let platform = Platform::current()
        .ok_or("no supported service manager on this system (systemd or launchd)")?;
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
    std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", esc(&path)))?;
    if platform == Platform::Systemd {
        let _ = run(&["systemctl", "--user", "daemon-reload"]);
    }
    Ok(format!("stopped and removed {}", path.display()))
}

fn run(argv: &[&str]) -> Result<(), String> {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}; is it installed?", argv[0]))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!(
        "`{}` failed: {}",
        argv.join(" "),
        stderr.trim().lines().next().unwrap_or("no message")
    ))
}

fn home() -> Result<PathBuf, String> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| "$HOME is not set".to_string())
}

/// A path as one systemd command-line word (quoted if it holds spaces or quotes).
fn systemd_quote(path: &Path) -> String {
    let s = path.display().to_string().replace('%', "%%");
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
            config: PathBuf::from("/home/u/.config/datasafe/config.toml"),
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
