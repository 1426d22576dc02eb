//! The runners of the read side: `verify`, `restore`, `versions` and `archive`. Each
//! turns its clap arguments into the read side's own request, sets up its output and
//! Ctrl-C, runs the command, prints the error that keeps it from running (one line) and
//! maps what it returns (a [`read::Outcome`], or what `archive` did) to an [`Exit`].

use crate::cli::exit::Exit;
use crate::cli::run::{ended, install_stop_handler, plain_output, usage_error};
use crate::cli::{ArchiveArgs, ArchiveFormat, RestoreArgs, VerifyArgs, VersionsArgs};
use crate::config::dest::DestError;
use crate::config::{Dest, S3Settings};
use crate::output::logging;
use crate::read::{self, Outcome};
use std::path::Path;

/// What the first Ctrl-C says during `verify`, which has nothing to save.
const STOP_VERIFY: &str = "interrupted: stopping the check (Ctrl-C again to quit now)";
/// What the first Ctrl-C says during `restore`: the file in flight is rolled back.
const STOP_RESTORE: &str =
    "interrupted: removing the file in flight and stopping (Ctrl-C again to quit now)";
/// What the first Ctrl-C says during `archive`: the unfinished archive is removed.
const STOP_ARCHIVE: &str =
    "interrupted: removing the unfinished archive (Ctrl-C again to quit now)";

/// The exit for how a read-side command went.
fn exit_of(outcome: Outcome) -> Exit {
    match outcome {
        Outcome::Clean => Exit::Success,
        Outcome::Problems => Exit::Problems,
        Outcome::Unusable => Exit::Usage,
        Outcome::Interrupted => Exit::Interrupted,
    }
}

/// A mirror as given on the command line: a local folder, one on another machine
/// reached with `ssh_command` (`--ssh-command`, else `$DATASAFE_SSH_COMMAND`), or a
/// bucket prefix at `s3_endpoint` (`--s3-endpoint`).
fn mirror(
    arg: &Path,
    ssh_command: Option<&str>,
    s3_endpoint: Option<&str>,
) -> Result<Dest, DestError> {
    Ok(Dest::parse(arg.as_os_str())?
        .with_ssh_command(ssh_command, None)
        .with_s3(&S3Settings {
            endpoint: s3_endpoint.map(str::to_string),
            ..S3Settings::default()
        }))
}

/// `datasafe verify`: 0 intact (or repaired), 1 damage or differences found, 2 usage
/// error or a mirror that could not be checked.
pub(super) fn verify(args: &VerifyArgs) -> Exit {
    let dst = match args.dst.as_deref().map(|dst| {
        mirror(
            dst,
            args.ssh_command.as_deref(),
            args.s3_endpoint.as_deref(),
        )
    }) {
        Some(Err(e)) => return usage_error(&e),
        Some(Ok(dst)) => Some(dst),
        None => None,
    };
    let request = read::verify::Request {
        dst,
        config: args.config.clone(),
        source: args.source.clone(),
        repair: args.repair,
        force: args.force,
        exclude: args.exclude.clone(),
        jobs: args.jobs,
        deep: args.deep,
        json: args.json,
        log_file: args.log_file.clone(),
        verbose: args.verbose,
        quiet: args.quiet,
        ssh_command: args.ssh_command.clone(),
    };
    let plan = match read::verify::Plan::from_request(&request) {
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
    ended(exit_of(read::verify::run(&plan, &stop)))
}

/// `datasafe restore`: 0 all done, 1 some files failed, 2 bad input.
pub(super) fn restore(args: &RestoreArgs) -> Exit {
    let dst = match mirror(
        &args.dst,
        args.ssh_command.as_deref(),
        args.s3_endpoint.as_deref(),
    ) {
        Ok(dst) => dst,
        Err(e) => return usage_error(&e),
    };
    let request = read::restore::Request {
        dst,
        target: args.target.clone(),
        at: args.at.clone(),
        force: args.force,
        paths: args.paths.clone(),
        numeric_ids: args.numeric_ids,
    };
    let stop = match plain_output().and_then(|()| install_stop_handler(STOP_RESTORE)) {
        Ok(stop) => stop,
        Err(e) => return usage_error(&e),
    };
    let exit = match read::restore::run(&request, &stop) {
        Ok(outcome) => exit_of(outcome),
        Err(e) => usage_error(&e),
    };
    ended(exit)
}

/// `datasafe versions`: 0, or 2 for a mirror that cannot be read.
pub(super) fn versions(args: &VersionsArgs) -> Exit {
    if let Err(e) = plain_output() {
        return usage_error(&e);
    }
    let dst = match mirror(
        &args.dst,
        args.ssh_command.as_deref(),
        args.s3_endpoint.as_deref(),
    ) {
        Ok(dst) => dst,
        Err(e) => return usage_error(&e),
    };
    match read::history::list_command(&dst, args.path.as_deref(), args.json, args.summary) {
        Ok(()) => Exit::Success,
        Err(e) => usage_error(&e),
    }
}

/// `datasafe archive`: 0 all archived, 1 some files could not be read, 2 bad input or
/// an archive that could not be written, 130 interrupted (see [`Exit::Interrupted`]).
pub(super) fn archive(args: &ArchiveArgs) -> Exit {
    use crate::read::archive::{Archived, Format, Request};
    let source = match mirror(
        &args.source,
        args.ssh_command.as_deref(),
        args.s3_endpoint.as_deref(),
    ) {
        Ok(source) => source,
        Err(e) => return usage_error(&e),
    };
    let request = Request {
        source,
        out: args.out.clone(),
        at: args.at.clone(),
        format: args.format.map(|format| match format {
            ArchiveFormat::Zip => Format::Zip,
            ArchiveFormat::Tar => Format::Tar,
            ArchiveFormat::TarGz => Format::TarGz,
            ArchiveFormat::TarZst => Format::TarZst,
        }),
        level: args.level,
        exclude: args.exclude.clone(),
        prefix: args.prefix.clone(),
        force: args.force,
        quiet: args.quiet,
        verbose: args.verbose,
        json: args.json,
        paths: args.paths.clone(),
    };
    let stop = match plain_output().and_then(|()| install_stop_handler(STOP_ARCHIVE)) {
        Ok(stop) => stop,
        Err(e) => return usage_error(&e),
    };
    let exit = match crate::read::archive::run(&request, &stop) {
        Ok(Archived::Whole { failed }) => Exit::problems_unless(failed == 0),
        Ok(Archived::Interrupted) => Exit::Interrupted,
        Err(e) => usage_error(&e),
    };
    ended(exit)
}
