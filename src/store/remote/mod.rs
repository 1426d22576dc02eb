//! What every remote store shares: the local side of its index (`cache`), and the facts a
//! lock in a remote mirror is judged by (who holds it: this machine's name, whether a
//! process of this machine is alive).

pub(crate) mod cache;

pub(crate) use crate::platform::{hostname, process_alive as alive};
