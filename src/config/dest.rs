//! Where a mirror lives: [`Dest`] is a folder on this machine, one on another machine
//! reached over SSH ([`Remote`]), or a prefix in an S3-compatible bucket ([`Bucket`]),
//! told apart the way rsync, scp and the S3 tools tell them apart.
//!
//! - `s3://bucket[/prefix]` (percent-escapes allowed; the endpoint, region and profile
//!   come from the environment, the config and `--s3-endpoint`, as for every S3 tool),
//! - `sftp://[user@]host[:port]/path` (percent-escapes allowed; `/~/path` is relative to
//!   the login folder),
//! - `[user@]host:path` (a colon before any slash; `path` without a leading `/` is
//!   relative to the login folder; `[user@][v6addr]:path` for an IPv6 address),
//! - anything else is a local path (`./a:b` for a local name with a colon in its first
//!   component).
//!
//! A [`Remote`] is named by its URL ([`Remote::url`]): that is what pairs are compared by
//! and what the local index cache is keyed by. The ssh command that reaches it is carried
//! along but is not part of its identity.

use crate::output::names::esc;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable that gives the ssh command when neither `--ssh-command` nor
/// the config's `ssh_command` does (like rsync's `RSYNC_RSH`).
pub const SSH_COMMAND_ENV: &str = "DATASAFE_SSH_COMMAND";

/// Where a mirror is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A folder on this machine (canonical once a pair is settled).
    Local(PathBuf),
    /// A folder on another machine, over SFTP.
    Sftp(Remote),
    /// A prefix in an S3-compatible bucket.
    S3(Bucket),
}

/// A prefix in a bucket of S3-compatible object storage: each file one object at
/// `prefix/NAME`.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// The bucket's name.
    pub bucket: String,
    /// The key prefix the mirror lives under, without a leading or trailing slash
    /// (empty: the whole bucket).
    pub prefix: String,
    /// The endpoint URL (`--s3-endpoint`, config `endpoint`; else `AWS_ENDPOINT_URL`
    /// or the profile's `endpoint_url`, else AWS itself).
    pub endpoint: Option<String>,
    /// The region (config `region`; else `AWS_REGION` or the profile's).
    pub region: Option<String>,
    /// The credentials profile (config `profile`; else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
}

impl PartialEq for Bucket {
    fn eq(&self, other: &Bucket) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Bucket {}

/// How an `s3://` destination is reached, from the config file and the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `--s3-endpoint`, else the config's `endpoint`.
    pub endpoint: Option<String>,
    /// The config's `region`.
    pub region: Option<String>,
    /// The config's `profile`.
    pub profile: Option<String>,
}

/// A folder on another machine, reached through the user's own OpenSSH client.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The login name, if given (else ssh's own choice: `~/.ssh/config`, then the local
    /// user).
    pub user: Option<String>,
    /// The host as given: a name, an alias from `~/.ssh/config`, or an address (IPv6
    /// without brackets).
    pub host: String,
    /// The port, if given (else ssh's own choice).
    pub port: Option<u16>,
    /// The folder on the remote machine: absolute, or relative to the login folder
    /// (empty: the login folder itself). No trailing slash.
    pub path: String,
    /// The ssh program and its options (`--ssh-command`, `ssh_command`,
    /// `DATASAFE_SSH_COMMAND`); `None`: plain `ssh`.
    pub ssh_command: Option<String>,
}

impl PartialEq for Remote {
    fn eq(&self, other: &Remote) -> bool {
        self.url() == other.url()
    }
}

impl Eq for Remote {}

/// Why a DST cannot be understood.
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    /// `host::module`, rsync's daemon syntax.
    #[error(
        "destination {0:?} uses rsync's daemon syntax (host::module); datasafe reaches other \
         machines over SSH: write host:path or sftp://host/path"
    )]
    RsyncDaemon(String),
    /// A URL scheme datasafe does not speak.
    #[error(
        "destination {0:?}: {1}:// is not a destination datasafe can write; use a local \
         folder, host:path or sftp://[user@]host[:port]/path (for a local folder with that \
         name, write ./{0})"
    )]
    Scheme(String, String),
    /// The remote root or login folder itself: mirroring into it would displace
    /// everything there.
    #[error(
        "destination {0:?} is the {1} itself; give a folder inside it (for example \
         {2}) — a mirror holds only what its source holds"
    )]
    WholeFolder(String, &'static str, String),
    /// An `s3://` URL that does not parse.
    #[error("destination {0:?} is not a valid S3 location ({1}); write s3://bucket/prefix")]
    BadBucket(String, &'static str),
    /// An `sftp://` URL that does not parse.
    #[error(
        "destination {0:?} is not a valid sftp URL ({1}); write sftp://[user@]host[:port]/path"
    )]
    BadUrl(String, &'static str),
}

impl Dest {
    /// Reads DST as given on the command line or in a config file.
    pub fn parse(arg: &OsStr) -> Result<Dest, DestError> {
        let Some(text) = arg.to_str() else {
            // Not UTF-8: only a local path can be that.
            return Ok(Dest::Local(PathBuf::from(arg)));
        };
        if let Some((scheme, _)) = text.split_once("://")
            && !scheme.is_empty()
            && !scheme.contains('/')
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return match scheme.to_ascii_lowercase().as_str() {
                "sftp" | "ssh" => Dest::Sftp(Remote::from_url(text)?).checked(text),
                "s3" => Ok(Dest::S3(Bucket::from_url(text)?)),
                _ => Err(DestError::Scheme(text.to_string(), scheme.to_string())),
            };
        }
        match Remote::from_scp(text)? {
            Some(remote) => Dest::Sftp(remote).checked(text),
            None => Ok(Dest::Local(PathBuf::from(arg))),
        }
    }

    /// Refuses a remote DST that is the server's root or the login folder itself.
    fn checked(self, text: &str) -> Result<Dest, DestError> {
        if let Dest::Sftp(remote) = &self {
            let (what, example) = match remote.path.as_str() {
                "/" => ("remote machine's root folder", "/srv/backup/notes"),
                "" => ("login folder", "backup/notes"),
                _ => return Ok(self),
            };
            let example = format!("{}:{example}", remote.destination());
            return Err(DestError::WholeFolder(text.to_string(), what, example));
        }
        Ok(self)
    }

    /// The local folder, if DST is one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Dest::Local(path) => Some(path),
            Dest::Sftp(_) | Dest::S3(_) => None,
        }
    }

    /// The folder on another machine, if DST is one.
    pub fn remote(&self) -> Option<&Remote> {
        match self {
            Dest::Sftp(remote) => Some(remote),
            Dest::Local(_) | Dest::S3(_) => None,
        }
    }

    /// The bucket prefix, if DST is one.
    pub fn bucket(&self) -> Option<&Bucket> {
        match self {
            Dest::S3(bucket) => Some(bucket),
            Dest::Local(_) | Dest::Sftp(_) => None,
        }
    }

    /// True if DST is not on this machine (reached over a network: its index is kept
    /// in a local cache, a pass lists nothing there).
    pub fn is_remote(&self) -> bool {
        !matches!(self, Dest::Local(_))
    }

    /// The name a remote DST is known by, for messages: the host, or the bucket.
    pub fn host(&self) -> Option<String> {
        match self {
            Dest::Local(_) => None,
            Dest::Sftp(remote) => Some(remote.host.clone()),
            Dest::S3(bucket) => Some(bucket.host()),
        }
    }

    /// How DST is shown (and how a user would type it again): the path or the URL.
    pub fn display(&self) -> PathBuf {
        match self {
            Dest::Local(path) => path.clone(),
            Dest::Sftp(remote) => PathBuf::from(remote.url()),
            Dest::S3(bucket) => PathBuf::from(bucket.url()),
        }
    }

    /// `name` inside DST, as shown to a user.
    pub fn join(&self, name: &Path) -> PathBuf {
        match self {
            Dest::Local(path) => path.join(name),
            Dest::Sftp(remote) => PathBuf::from(remote.url_of(name)),
            Dest::S3(bucket) => PathBuf::from(bucket.url_of(name)),
        }
    }

    /// Sets how an `s3://` DST is reached (nothing for another kind): `settings`
    /// fill in what the URL does not say.
    pub fn with_s3(mut self, settings: &S3Settings) -> Dest {
        if let Dest::S3(bucket) = &mut self {
            bucket.endpoint = settings.endpoint.clone().filter(|e| !e.is_empty());
            bucket.region = settings.region.clone().filter(|r| !r.is_empty());
            bucket.profile = settings.profile.clone().filter(|p| !p.is_empty());
        }
        self
    }

    /// Sets the ssh command of a remote DST (nothing for a local one): `flag`
    /// (`--ssh-command`), else [`SSH_COMMAND_ENV`], else `config` (`ssh_command`).
    pub fn with_ssh_command(mut self, flag: Option<&str>, config: Option<&str>) -> Dest {
        if let Dest::Sftp(remote) = &mut self {
            remote.ssh_command = flag
                .map(str::to_string)
                .or_else(|| {
                    std::env::var(SSH_COMMAND_ENV)
                        .ok()
                        .filter(|c| !c.is_empty())
                })
                .or(config.map(str::to_string));
        }
        self
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Local(path) => write!(f, "{}", esc(path)),
            Dest::Sftp(remote) => f.write_str(&remote.url()),
            Dest::S3(bucket) => f.write_str(&bucket.url()),
        }
    }
}

impl Bucket {
    /// `s3://bucket[/prefix]`.
    fn from_url(text: &str) -> Result<Bucket, DestError> {
        let bad = |why| DestError::BadBucket(text.to_string(), why);
        let (_, rest) = text.split_once("://").ok_or(bad("no scheme"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        // What S3 allows in a bucket's name (lower case, digits, dots, hyphens; 3 to 63
        // characters); servers that allow more (underscores, capitals) are served too.
        let fine = |b: u8| b.is_ascii_alphanumeric() || b"-._".contains(&b);
        if !bucket.bytes().all(fine) || bucket.len() > 63 {
            return Err(bad("a bucket name is letters, digits, dots and hyphens"));
        }
        let prefix = decode(prefix).ok_or(bad("bad %-escape"))?;
        if prefix.contains('\0') {
            return Err(bad("a NUL byte in the prefix"));
        }
        let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(bad("no . or .. in a prefix: keys are taken as written"));
        }
        Ok(Bucket {
            bucket: bucket.to_string(),
            prefix: parts.join("/"),
            endpoint: None,
            region: None,
            profile: None,
        })
    }

    /// The URL that names this place: `s3://bucket[/prefix]`.
    pub fn url(&self) -> String {
        let mut url = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            url.push('/');
            url.push_str(&encode(self.prefix.as_bytes(), true));
        }
        url
    }

    /// What tells two mirrors apart: the endpoint too (the same bucket name on two
    /// servers is two places).
    pub fn key(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{} at {}", self.url(), endpoint.trim_end_matches('/')),
            None => self.url(),
        }
    }

    /// The bucket and where it is, for messages.
    pub fn host(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("bucket {} at {endpoint}", self.bucket),
            None => format!("bucket {}", self.bucket),
        }
    }

    /// The URL of `name` inside this place, for messages.
    pub fn url_of(&self, name: &Path) -> String {
        let url = self.url();
        if name.as_os_str().is_empty() {
            return url;
        }
        let name = name.as_os_str().as_encoded_bytes();
        format!("{url}/{}", encode(name, true))
    }

    /// The object key of `name` inside the mirror (`name` empty: the prefix itself,
    /// with its slash).
    pub fn key_of(&self, name: &Path) -> String {
        let name = name.to_string_lossy();
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => name.into_owned(),
            (false, true) => format!("{}/", self.prefix),
            (false, false) => format!("{}/{name}", self.prefix),
        }
    }
}

impl Remote {
    /// `sftp://[user@]host[:port]/path` (or `ssh://`).
    fn from_url(text: &str) -> Result<Remote, DestError> {
        let bad = |why| DestError::BadUrl(text.to_string(), why);
        let (_, rest) = text.split_once("://").ok_or(bad("no scheme"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) => (Some(decode(user).ok_or(bad("bad %-escape"))?), hostport),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).ok_or(bad("bad host or port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if user.as_deref() == Some("") {
            return Err(bad("empty user name"));
        }
        let path = decode(path).ok_or(bad("bad %-escape"))?;
        if path.contains('\0') {
            return Err(bad("a NUL byte in the path"));
        }
        // `/~/x` and `/~` are relative to the login folder, as in most sftp clients.
        let path = match path.strip_prefix("/~") {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                rest.trim_start_matches('/').to_string()
            }
            _ if path.is_empty() => String::new(),
            _ => path,
        };
        Ok(Remote {
            user,
            host,
            port,
            path: trim_path(&path),
            ssh_command: None,
        })
    }

    /// `[user@]host:path`, if `text` is written that way (a colon before any slash).
    fn from_scp(text: &str) -> Result<Option<Remote>, DestError> {
        let Some(colon) = scp_colon(text) else {
            return Ok(None);
        };
        let (authority, path) = (&text[..colon], &text[colon + 1..]);
        if path.starts_with(':') {
            return Err(DestError::RsyncDaemon(text.to_string()));
        }
        let (user, host) = match authority.rsplit_once('@') {
            Some((user, host)) if !user.is_empty() => (Some(user.to_string()), host),
            Some(_) => return Ok(None),
            None => (None, authority),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Ok(None);
        }
        let path = match path.strip_prefix("~/") {
            Some(rest) => rest,
            None if path == "~" => "",
            None => path,
        };
        Ok(Some(Remote {
            user,
            host: host.to_string(),
            port: None,
            path: trim_path(path),
            ssh_command: None,
        }))
    }

    /// The URL that names this remote folder: `sftp://[user@]host[:port]/path`
    /// (`/~/path` for a path relative to the login folder).
    pub fn url(&self) -> String {
        let mut url = String::from("sftp://");
        if let Some(user) = &self.user {
            url.push_str(&encode(user.as_bytes(), false));
            url.push('@');
        }
        if self.host.contains(':') {
            url.push('[');
            url.push_str(&self.host);
            url.push(']');
        } else {
            url.push_str(&self.host);
        }
        if let Some(port) = self.port {
            url.push_str(&format!(":{port}"));
        }
        if self.path.starts_with('/') {
            url.push_str(&encode(self.path.as_bytes(), true));
        } else {
            url.push_str("/~");
            if !self.path.is_empty() {
                url.push('/');
                url.push_str(&encode(self.path.as_bytes(), true));
            }
        }
        url
    }

    /// The URL of `name` inside this remote folder, for messages.
    pub fn url_of(&self, name: &Path) -> String {
        let url = self.url();
        if name.as_os_str().is_empty() {
            url
        } else {
            // Shown as the user would type it: only what a URL cannot hold is escaped
            // (a byte that is not UTF-8 too, never replaced).
            let name = name.as_os_str().as_encoded_bytes();
            let sep = if url.ends_with('/') { "" } else { "/" };
            format!("{url}{sep}{}", encode(name, true))
        }
    }

    /// `[user@]host` as ssh takes it, and the host alone for messages.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// The path on the remote machine of `name` inside the mirror: what the SFTP server
    /// is asked for (relative paths are resolved by the server against the login
    /// folder).
    pub fn remote_path(&self, name: &Path) -> String {
        let name = name.to_string_lossy();
        match (self.path.is_empty(), name.is_empty()) {
            (true, true) => ".".to_string(),
            (true, false) => name.into_owned(),
            (false, true) => self.path.clone(),
            (false, false) if self.path == "/" => format!("/{name}"),
            (false, false) => format!("{}/{name}", self.path),
        }
    }
}

/// Where the colon of `[user@]host:path` is, if `text` is written that way: before any
/// slash, after a non-empty host (a one-letter "host" is a drive on Windows).
fn scp_colon(text: &str) -> Option<usize> {
    let slash = text.find('/').unwrap_or(text.len());
    // `user@[v6addr]:path`: the colon after the closing bracket.
    let start = match text.find('[') {
        Some(open) if open < slash => open + text[open..].find(']')?,
        _ => 0,
    };
    let colon = start + text[start..].find(':')?;
    if colon > slash || colon == 0 {
        return None;
    }
    if cfg!(windows) && colon == 1 {
        return None;
    }
    Some(colon)
}

/// `host[:port]`, `[v6addr][:port]`.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            after => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
    };
    Some((decode(host)?, port))
}

/// A path in its plain form: no `.` components, no empty ones, `..` taken back against
/// the component before it (lexically: the server may have symlinks, but a mirror's
/// path is named as the user wrote it, like rsync's), no trailing slash (`/` stays
/// `/`; a relative path that comes back to the login folder is empty).
fn trim_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                // `/..` is `/`; a relative path may climb above the login folder.
                _ if absolute => {}
                _ => parts.push(".."),
            },
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// `%XX` escapes decoded; `None` if one is malformed or the result is not UTF-8.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `text` with what a URL cannot hold as is escaped (`/` kept in a path).
fn encode(text: &[u8], path: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        let plain = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
        if plain || (path && (b == b'/' || b == b':')) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(arg: &str) -> Remote {
        match Dest::parse(OsStr::new(arg)).unwrap() {
            Dest::Sftp(r) => r,
            other => panic!("{arg} parsed as {other:?}"),
        }
    }

    fn is_local(arg: &str) -> bool {
        matches!(Dest::parse(OsStr::new(arg)).unwrap(), Dest::Local(p) if p == Path::new(arg))
    }

    #[test]
    fn urls_parse_into_their_parts() {
        let r = remote("sftp://backup@nas:2222/srv/backup/notes/");
        assert_eq!(r.user.as_deref(), Some("backup"));
        assert_eq!((r.host.as_str(), r.port), ("nas", Some(2222)));
        assert_eq!(r.path, "/srv/backup/notes");
        assert_eq!(r.url(), "sftp://backup@nas:2222/srv/backup/notes");
        let r = remote("sftp://nas/~/notes");
        assert_eq!((r.user, r.port, r.path.as_str()), (None, None, "notes"));
        assert_eq!(remote("sftp://[::1]:22/x").host, "::1");
        assert_eq!(remote("sftp://[::1]:22/x").url(), "sftp://[::1]:22/x");
        assert_eq!(remote("sftp://h/my%20notes").path, "/my notes");
        assert_eq!(remote("sftp://h/my%20notes").url(), "sftp://h/my%20notes");
        assert_eq!(remote("SFTP://h/x").path, "/x");
    }

    #[test]
    fn scp_forms_parse_like_rsync() {
        let r = remote("backup@nas:/srv/notes");
        assert_eq!(
            (r.user.as_deref(), r.host.as_str(), r.path.as_str()),
            (Some("backup"), "nas", "/srv/notes")
        );
        assert_eq!(remote("nas:notes").path, "notes");
        assert_eq!(remote("nas:~/notes").path, "notes");
        assert_eq!(remote("nas:notes").url(), "sftp://nas/~/notes");
        assert_eq!(remote("me@[fe80::1]:x").host, "fe80::1");
        assert_eq!(remote("nas:a:b").path, "a:b");
        assert_eq!(remote("nas:/srv/./x/../y//z/").path, "/srv/y/z");
        assert_eq!(remote("nas:../up").path, "../up");
        assert_eq!(remote("sftp://nas/srv/x/..").path, "/srv");
    }

    #[test]
    fn local_paths_stay_local() {
        for arg in [
            "./a:b", "/mnt/a:b", "backup", "../x", "a/b:c", ":x", "@:x", "",
        ] {
            assert!(is_local(arg), "{arg}");
        }
    }

    #[test]
    fn the_same_place_is_the_same_dest_however_it_is_written() {
        assert_eq!(remote("nas:/srv/x"), remote("sftp://nas/srv/x/"));
        assert_eq!(remote("nas:x"), remote("sftp://nas/~/x"));
        assert_ne!(remote("nas:/x"), remote("sftp://nas:2/x"));
    }

    #[test]
    fn bad_destinations_say_what_to_write() {
        for (arg, says) in [
            ("nas::module", "rsync's daemon syntax"),
            ("gs://bucket/x", "gs:// is not a destination"),
            ("s3://", "no bucket"),
            ("s3:///x", "no bucket"),
            ("s3://My Bucket/x", "letters, digits"),
            ("s3://b/a/../c", "no . or .."),
            ("sftp://", "no host"),
            ("sftp://h:port/x", "bad host or port"),
            ("sftp://h:0/x", "bad host or port"),
            ("sftp://h/%zz", "bad %-escape"),
            ("nas:", "the login folder itself"),
            ("nas:~", "the login folder itself"),
            ("sftp://nas", "the login folder itself"),
            ("sftp://nas/~/", "the login folder itself"),
            ("nas:/", "root folder itself"),
            ("nas:.", "the login folder itself"),
            ("nas:./", "the login folder itself"),
            ("nas:x/..", "the login folder itself"),
            ("nas:/tmp/..", "root folder itself"),
            ("sftp://nas/a/../..", "root folder itself"),
            ("sftp://nas/nul%00x", "a NUL byte"),
            (
                "sftp://me@nas//",
                "root folder itself; give a folder inside it (for example me@nas:/srv",
            ),
        ] {
            let err = Dest::parse(OsStr::new(arg)).unwrap_err().to_string();
            assert!(err.contains(says), "{arg}: {err}");
        }
    }

    fn bucket(arg: &str) -> Bucket {
        match Dest::parse(OsStr::new(arg)).unwrap() {
            Dest::S3(b) => b,
            other => panic!("{arg} parsed as {other:?}"),
        }
    }

    #[test]
    fn s3_urls_name_a_bucket_and_a_prefix() {
        let b = bucket("s3://backups/home/notes/");
        assert_eq!(
            (b.bucket.as_str(), b.prefix.as_str()),
            ("backups", "home/notes")
        );
        assert_eq!(b.url(), "s3://backups/home/notes");
        assert_eq!(b.key_of(Path::new("a b/c")), "home/notes/a b/c");
        assert_eq!(b.url_of(Path::new("a b")), "s3://backups/home/notes/a%20b");
        assert_eq!(bucket("s3://backups").prefix, "");
        assert_eq!(bucket("s3://backups").key_of(Path::new("x")), "x");
        assert_eq!(bucket("S3://b-1//x//y").prefix, "x/y");
        assert_eq!(bucket("s3://b/my%20notes").prefix, "my notes");
        // The same bucket on two servers is two places.
        let here = Dest::parse(OsStr::new("s3://b/x")).unwrap();
        let there = here.clone().with_s3(&S3Settings {
            endpoint: Some("http://127.0.0.1:8333".into()),
            ..S3Settings::default()
        });
        assert_ne!(here, there);
        assert_eq!(
            there.bucket().unwrap().key(),
            "s3://b/x at http://127.0.0.1:8333"
        );
    }

    #[test]
    fn remote_paths_join_names() {
        assert_eq!(remote("h:/srv").remote_path(Path::new("a")), "/srv/a");
        assert_eq!(remote("h:/srv").remote_path(Path::new("")), "/srv");
        assert_eq!(
            remote("h:/srv").url_of(Path::new("a b/c")),
            "sftp://h/srv/a%20b/c"
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let name = Path::new(OsStr::from_bytes(b"x\xff\xfe"));
            assert_eq!(remote("h:/srv").url_of(name), "sftp://h/srv/x%FF%FE");
        }
    }
}
