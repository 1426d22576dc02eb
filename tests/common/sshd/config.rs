//! The text of the two configs an [`super::Sshd`] runs with: the server's
//! `sshd_config` and the client's `ssh_config`. Pure text; the caller writes the files.

use super::{ALIAS, HOST_KEY_ALIAS, PROXY_ALIAS, SshdOptions};
use std::path::Path;

/// The `sshd_config`: 127.0.0.1:`port`, keys from `dir`, public keys only,
/// `internal-sftp` refusing `options.deny`; `options.extra_config` first, so it wins.
pub(super) fn server(dir: &Path, port: u16, options: &SshdOptions) -> String {
    let mut text = String::new();
    for line in &options.extra_config {
        text.push_str(line);
        text.push('\n');
    }
    let dir = dir.display();
    let mut sftp = match options.sftp_log_level {
        // sshd runs an external subsystem through the login shell, so `2>>` works.
        Some(level) => format!("{} -e -l {level}", super::SFTP_SERVER),
        None => String::from("internal-sftp"),
    };
    if !options.deny.is_empty() {
        sftp.push_str(" -P ");
        sftp.push_str(&options.deny.join(","));
    }
    if options.sftp_log_level.is_some() {
        sftp.push_str(&format!(" 2>>{dir}/sftp.log"));
    }
    text.push_str(&format!(
        "Port {port}
ListenAddress 127.0.0.1
AddressFamily inet
HostKey {dir}/host_key
AuthorizedKeysFile {dir}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
UseDNS no
StrictModes no
PidFile {dir}/sshd.pid
LogLevel VERBOSE
# Tests open many connections at once; the default (10:30:100) drops some early.
MaxStartups 100:30:200
Subsystem sftp {sftp}
"
    ));
    text
}

/// The `ssh_config`: the alias `dstest` for 127.0.0.1:`port`, `dsproxy` for
/// `proxy_port` once there is one, and for both (and a plain 127.0.0.1, as a URL names
/// it) the login `user`, the user key from `dir`, the host key pinned in `dir`'s
/// `known_hosts` under one name whatever the port, and never a question asked.
pub(super) fn client(dir: &Path, port: u16, proxy_port: Option<u16>, user: &str) -> String {
    let dir = dir.display();
    let mut text = format!("Host {ALIAS}\n    HostName 127.0.0.1\n    Port {port}\n");
    if let Some(port) = proxy_port {
        text.push_str(&format!(
            "Host {PROXY_ALIAS}\n    HostName 127.0.0.1\n    Port {port}\n"
        ));
    }
    text.push_str(&format!(
        "Host {ALIAS} {PROXY_ALIAS} 127.0.0.1 localhost
    User {user}
    IdentityFile {dir}/user_key
    IdentitiesOnly yes
    IdentityAgent none
    HostKeyAlias {HOST_KEY_ALIAS}
    UserKnownHostsFile {dir}/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    CheckHostIP no
    BatchMode yes
    ConnectTimeout 10
    ServerAliveInterval 5
    ServerAliveCountMax 3
"
    ));
    text
}
