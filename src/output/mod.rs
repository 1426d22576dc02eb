//! What a user reads: log lines and their destinations (`logging`), summaries and
//! progress (`report`), and how names and errors are spelled (`names`).

pub mod logging;
pub mod names;
pub mod report;

/// How every line a user reads writes a local time, to the second (summaries, status,
/// `versions`, `restore --at` and `archive --at` read it back the same way).
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The local time now, as [`TIME_FORMAT`] writes it.
pub fn now() -> String {
    chrono::Local::now().format(TIME_FORMAT).to_string()
}
