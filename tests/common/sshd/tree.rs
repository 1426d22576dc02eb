//! The process tree under a listening sshd: each connection's sshd is its child, and
//! the session process below that. Found through `/proc/*/stat` (parent pids), and
//! ended as a whole with the tree frozen first. Only the listener the harness started
//! and what descends from it are ever signalled. `common::seaweed` ends its `weed`
//! processes (and anything they might start) with the same [`end_tree`].

use crate::common::watcher::{DEADLINE, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::{Child, ExitStatus};

/// Every process's parent, from `/proc/*/stat` (zombies left out: they are gone for
/// our purposes and cannot be signalled anyway).
pub(super) fn parents() -> BTreeMap<u32, u32> {
    let mut map = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((state, ppid)) = stat_of(pid) else {
            continue;
        };
        if state != 'Z' {
            map.insert(pid, ppid);
        }
    }
    map
}

/// The state letter and parent of `pid`, if it exists.
fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the rest follows
    // its last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

pub(super) fn children_of(pid: u32, parents: &BTreeMap<u32, u32>) -> Vec<u32> {
    parents
        .iter()
        .filter(|&(_, &ppid)| ppid == pid)
        .map(|(&p, _)| p)
        .collect()
}

fn alive(pid: u32) -> bool {
    stat_of(pid).is_some_and(|(state, _)| state != 'Z')
}

fn signal(pid: u32, sig: i32) {
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Ends the listener `child` and every process below it with `sig` (SIGTERM or
/// SIGKILL) and waits until all are gone; after [`DEADLINE`] the rest get SIGKILL and
/// the error says who was stuck. Only `child` and its descendants are signalled.
pub(crate) fn end_tree(mut child: Child, sig: i32) -> Result<(), String> {
    let root = child.id();
    // Freeze the tree first, so no process forks (the listener accepting a connection)
    // or dies (its children moving to init, out of our sight) while it is collected:
    // stop the listener, then whatever is found below, until a pass finds nothing new.
    signal(root, libc::SIGSTOP);
    let mut tree = BTreeSet::new();
    loop {
        let parents = parents();
        let mut todo = vec![root];
        let mut new = Vec::new();
        while let Some(pid) = todo.pop() {
            for kid in children_of(pid, &parents) {
                if tree.insert(kid) {
                    new.push(kid);
                }
                todo.push(kid);
            }
        }
        if new.is_empty() {
            break;
        }
        for &pid in &new {
            signal(pid, libc::SIGSTOP);
        }
    }
    for &pid in tree.iter().chain([&root]) {
        signal(pid, sig);
        // A stopped process acts on SIGTERM only once continued (SIGKILL needs no help).
        signal(pid, libc::SIGCONT);
    }
    let mut status: Option<ExitStatus> = None;
    let done = wait_until(DEADLINE, || {
        if status.is_none() {
            status = child.try_wait().unwrap();
        }
        status.is_some() && tree.iter().all(|&p| !alive(p))
    });
    if done {
        return Ok(());
    }
    let stuck: Vec<u32> = tree.iter().copied().filter(|&p| alive(p)).collect();
    for &pid in &stuck {
        signal(pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "process {root} (signal {sig}) had not ended within {DEADLINE:?}: listener exited: {}, still running: {stuck:?}",
        status.is_some()
    ))
}
