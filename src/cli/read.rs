//! The runners of the read side: `verify`, `restore`, `versions` and `archive`. Each
//! sets up its output and Ctrl-C, runs the command and maps its result to an [`Exit`].
//! `verify`, `restore` and `versions` still return a process code of their own, which
//! is only mapped here ([`Exit::from_code`]); `archive` returns what it did.

use crate::cli::exit::Exit;
use crate::cli::run::{ended, install_stop_handler, plain_output, usage_error};
use crate::cli::{ArchiveArgs, RestoreArgs, VerifyArgs, VersionsArgs};
use crate::output::logging;

/// What the first Ctrl-C says during `verify`, which has nothing to save.
const STOP_VERIFY: &str = "interrupted: stopping the check (Ctrl-C again to quit now)";
/// What the first Ctrl-C says during `restore`: the file in flight is rolled back.
const STOP_RESTORE: &str =
    "interrupted: removing the file in flight and stopping (Ctrl-C again to quit now)";
/// What the first Ctrl-C says during `archive`: the unfinished archive is removed.
const STOP_ARCHIVE: &str =
    "interrupted: removing the unfinished archive (Ctrl-C again to quit now)";

/// `datasafe verify`: 0 intact (or repaired), 1 damage or differences found, 2 usage
/// error or a mirror that could not be checked.
pub(super) fn verify(args: &VerifyArgs) -> Exit {
    let plan = match crate::read::verify::Plan::from_args(args) {
        Ok(plan) => plan,
        Err(e) => return usage_error(&e),
    };
    if let Err(e) = logging::init(&plan.output) {
        return usage_error(&e);
    }
    let stop = match install_stop_handler(STOP_VERIFY) {
        Ok(stop) => stop,
        Err(e) => return usage_error(&e),
    };
    ended(Exit::from_code(crate::read::verify::run(&plan, &stop)))
}

/// `datasafe restore`: 0 all done, 1 some files failed, 2 bad input.
pub(super) fn restore(args: &RestoreArgs) -> Exit {
    let stop = match plain_output().and_then(|()| install_stop_handler(STOP_RESTORE)) {
        Ok(stop) => stop,
        Err(e) => return usage_error(&e),
    };
    ended(Exit::from_code(crate::read::restore::run(args, &stop)))
}

/// `datasafe versions`.
pub(super) fn versions(args: &VersionsArgs) -> Exit {
    if let Err(e) = plain_output() {
        return usage_error(&e);
    }
    Exit::from_code(crate::read::history::list_command(
        &args.dst,
        args.path.as_deref(),
        args.json,
        args.summary,
    ))
}

/// `datasafe archive`: 0 all archived, 1 some files could not be read, 2 bad input or
/// an archive that could not be written, 130 interrupted (see [`Exit::Interrupted`]).
pub(super) fn archive(args: &ArchiveArgs) -> Exit {
    use crate::read::archive::Archived;
    let stop = match plain_output().and_then(|()| install_stop_handler(STOP_ARCHIVE)) {
        Ok(stop) => stop,
        Err(e) => return usage_error(&e),
    };
    let exit = match crate::read::archive::run(args, &stop) {
        Ok(Archived::Whole { failed }) => Exit::problems_unless(failed == 0),
        Ok(Archived::Interrupted) => Exit::Interrupted,
        Err(e) => usage_error(&e),
    };
    ended(exit)
}
