//! The read side: commands that read a mirror and never write it. `history` opens a
//! mirror read-only (its live files and kept versions), `restore` and `archive` give
//! them back, `verify` checks them.

pub mod archive;
pub mod history;
pub mod restore;
pub mod verify;
