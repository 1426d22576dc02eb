//! The destination side: what a mirror holds and how it is named. `versions` is the
//! naming contract of kept versions.

pub mod versions;
