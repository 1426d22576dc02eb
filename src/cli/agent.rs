//! The `agent` runner: `install`, `uninstall` and `print` of the login agent
//! (`daemon::agent`). Arguments `watch` would refuse are a usage error (2), as for
//! `watch` itself; a service manager that fails is a plain failure (1). The `watch`
//! command line the agent runs is rendered here, from the clap types, so the daemon
//! side only gets the words.

use crate::cli::exit::Exit;
use crate::cli::run::usage_error;
use crate::cli::{
    AgentCommand, MirrorArgs, OutputArgs, PairArgs, PlatformArg, TimingArgs, WatchArgs,
};
use crate::daemon::agent::{AgentError, AgentSpec, Platform, install, uninstall};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `datasafe agent install | uninstall | print`.
pub(super) fn run(action: AgentCommand) -> Exit {
    let result = match action {
        AgentCommand::Install { watch } => match agent_spec(&watch) {
            Ok(spec) => install(&spec),
            Err(e) => return usage_error(&e),
        },
        AgentCommand::Uninstall => uninstall(),
        AgentCommand::Print { watch, platform } => {
            let platform = platform
                .map(|p| match p {
                    PlatformArg::Systemd => Platform::Systemd,
                    PlatformArg::Launchd => Platform::Launchd,
                })
                .or_else(Platform::current)
                .unwrap_or(Platform::Systemd);
            match agent_spec(&watch) {
                Ok(spec) => {
                    print!("{}", spec.render(platform));
                    Ok(String::new())
                }
                Err(e) => return usage_error(&e),
            }
        }
    };
    match result {
        Ok(message) => {
            if !message.is_empty() {
                println!("{message}");
            }
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Problems
        }
    }
}

/// The agent for `watch` as given: this binary running `watch` with every path made
/// absolute (an agent starts in `/`), SRC DST or a config file (the default one when
/// neither is given). Checked as `watch` would check it, so a typo fails now rather
/// than at the next login.
fn agent_spec(watch: &WatchArgs) -> Result<AgentSpec, AgentError> {
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
    AgentSpec::for_this_binary(watch_argv(&watch))
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
            // A remote DST (host:path, sftp://…, s3://…) is not a path on this machine.
            dst: match &watch.pairs.dst {
                Some(dst)
                    if crate::config::Dest::parse(dst.as_os_str()).is_ok_and(|d| d.is_remote()) =>
                {
                    Some(dst.clone())
                }
                dst => abs(dst)?,
            },
            config: abs(&watch.pairs.config)?,
        },
        mirror: MirrorArgs {
            // The environment's ssh command is not the agent's: carried as a flag.
            // Likewise the environment's S3 endpoint (credentials are read from
            // ~/.aws by the agent itself: never written into a unit file).
            s3_endpoint: watch.mirror.s3_endpoint.clone().or_else(|| {
                std::env::var("AWS_ENDPOINT_URL")
                    .ok()
                    .filter(|e| !e.is_empty())
            }),
            ssh_command: watch.mirror.ssh_command.clone().or_else(|| {
                std::env::var(crate::config::dest::SSH_COMMAND_ENV)
                    .ok()
                    .filter(|c| !c.is_empty())
            }),
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
                xattrs,
                acls,
                hard_links,
                no_hard_links,
                exclude,
                keep_versions,
                force,
                max_delete,
                versions_max_size,
                jobs,
                ssh_command,
                s3_endpoint,
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
    flag(*xattrs, "--xattrs");
    flag(*acls, "--acls");
    flag(*hard_links, "--hard-links");
    flag(*no_hard_links, "--no-hard-links");
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
    valued("--ssh-command", ssh_command.as_ref().map(Into::into));
    valued("--s3-endpoint", s3_endpoint.as_ref().map(Into::into));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
