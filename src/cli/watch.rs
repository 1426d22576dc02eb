//! The `watch` runner: settles the arguments (again on each reload of the config file),
//! runs the event loop (`daemon::run`) until Ctrl-C or SIGTERM, and maps its end to an
//! [`Exit`]: a watcher that cannot start is a fatal error (2); a stopped one dies by the
//! signal that stopped it.

use crate::cli::WatchArgs;
use crate::cli::exit::Exit;
use crate::cli::run::{ended, start};

/// `datasafe watch`.
pub(super) fn run(args: &WatchArgs) -> Exit {
    // A lost connection to a remote DST stalls no request for long: the watcher's
    // loop says "reconnecting", keeps collecting changes and tries again itself.
    #[cfg(unix)]
    crate::store::sftp::conn::set_patience(std::time::Duration::from_secs(3));
    let (settings, stop) = match start(args.settings()) {
        Ok(started) => started,
        Err(exit) => return exit,
    };
    let reload = || args.settings();
    let exit = match crate::daemon::run(settings, &reload, &stop) {
        Ok(()) => Exit::Success,
        Err(e) => {
            // Logged, so an agent's error log has it too.
            log::error!("{e}");
            Exit::Usage
        }
    };
    ended(exit)
}
