//! The `agent` runner: `install`, `uninstall` and `print` of the login agent
//! (`daemon::agent`). Arguments `watch` would refuse are a usage error (2), as for
//! `watch` itself; a service manager that fails is a plain failure (1).

use crate::cli::AgentCommand;
use crate::cli::exit::Exit;
use crate::cli::run::usage_error;
use crate::daemon::agent::{AgentSpec, Platform, install, uninstall};

/// `datasafe agent install | uninstall | print`.
pub(super) fn run(action: AgentCommand) -> Exit {
    let result = match action {
        AgentCommand::Install { watch } => match AgentSpec::for_this_binary(&watch) {
            Ok(spec) => install(&spec),
            Err(e) => return usage_error(&e),
        },
        AgentCommand::Uninstall => uninstall(),
        AgentCommand::Print { watch, platform } => {
            let platform = platform
                .or_else(Platform::current)
                .unwrap_or(Platform::Systemd);
            match AgentSpec::for_this_binary(&watch) {
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
