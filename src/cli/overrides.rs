//! The clap types turned into `config`'s plain [`Overrides`], so that `config` never
//! sees a clap struct: each flag group maps field by field onto its override group, and
//! [`SyncArgs::settings`] / [`WatchArgs::settings`] settle a run from them (flag > file
//! pair > file top level > default, as `config` decides).

use crate::cli::{MirrorArgs, OutputArgs, PairArgs, SyncArgs, TimingArgs, WatchArgs};
use crate::config::{
    ConfigError, MirrorOverrides, OutputOverrides, Overrides, Settings, TimingOverrides,
};

impl From<&MirrorArgs> for MirrorOverrides {
    fn from(m: &MirrorArgs) -> MirrorOverrides {
        // Destructured in full: a new flag fails to compile here until it is passed on.
        let MirrorArgs {
            compress,
            checksum,
            no_delete,
            xattrs,
            acls,
            hard_links,
            no_hard_links,
            exclude,
            keep_versions,
            versions_max_size,
            force,
            max_delete,
            jobs,
            ssh_command,
            s3_endpoint,
        } = m;
        MirrorOverrides {
            compress: *compress,
            checksum: *checksum,
            no_delete: *no_delete,
            xattrs: *xattrs,
            acls: *acls,
            hard_links: match (hard_links, no_hard_links) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            exclude: exclude.clone(),
            keep_versions: *keep_versions,
            versions_max_size: *versions_max_size,
            force: *force,
            max_delete: *max_delete,
            jobs: *jobs,
            ssh_command: ssh_command.clone(),
            s3_endpoint: s3_endpoint.clone(),
        }
    }
}

impl From<&OutputArgs> for OutputOverrides {
    fn from(o: &OutputArgs) -> OutputOverrides {
        let OutputArgs {
            dry_run,
            json,
            log_file,
            error_log,
            verbose,
            quiet,
        } = o;
        OutputOverrides {
            dry_run: *dry_run,
            json: *json,
            log_file: log_file.clone(),
            error_log: error_log.clone(),
            verbose: *verbose,
            quiet: *quiet,
        }
    }
}

impl From<&TimingArgs> for TimingOverrides {
    fn from(t: &TimingArgs) -> TimingOverrides {
        let TimingArgs {
            debounce,
            rescan,
            max_wait,
        } = t;
        TimingOverrides {
            debounce: *debounce,
            rescan: *rescan,
            max_wait: *max_wait,
        }
    }
}

impl PairArgs {
    fn settle(&self, overrides: &Overrides) -> Result<Settings, ConfigError> {
        Settings::settle(
            self.src.as_deref(),
            self.dst.as_deref(),
            self.config.as_deref(),
            overrides,
        )
    }
}

impl SyncArgs {
    /// Settles `datasafe sync`: SRC DST from the command line, or a config file.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        self.pairs.settle(&Overrides {
            mirror: (&self.mirror).into(),
            output: (&self.output).into(),
            timing: None,
        })
    }
}

impl WatchArgs {
    /// Settles `datasafe watch`: as `sync`, plus timing. Called again on every reload
    /// of the config file.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        self.pairs.settle(&Overrides {
            mirror: (&self.mirror).into(),
            output: (&self.output).into(),
            timing: Some((&self.timing).into()),
        })
    }
}
