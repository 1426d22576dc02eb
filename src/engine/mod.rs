//! The engine: makes DST a mirror of SRC. `scan` walks SRC read-only, `plan` decides
//! (pure), `exec` carries decisions out, `mirror` runs passes and hints (one pair's
//! long-lived `Mirror`), `repair` says how far a pass distrusts the index. It decides
//! *what* to do; the daemon decides *when*.

pub mod exec;
pub mod mirror;
pub mod plan;
pub mod repair;
pub mod scan;
pub mod source;
