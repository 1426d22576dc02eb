//! What a user reads: log lines and their destinations (`logging`), summaries and
//! progress (`report`), and how names and errors are spelled (`names`).

pub mod logging;
pub mod names;
pub mod report;
