//! A plain S3 client for the tests, independent of datasafe's own: what a test uses to
//! make buckets, put objects behind datasafe's back, and see what a bucket really holds.
//!
//! Two ordinary tools, each where it shows the raw truth:
//! - Debian's `rclone` (1.60) makes buckets, puts (`rcat`) and lists unfinished
//!   multipart uploads (`backend list-multipart-uploads`), with the remote given inline
//!   (`:s3,provider=Other,env_auth=true,endpoint='…':BUCKET/KEY`), no config file.
//! - `curl --aws-sigv4` gets (`rclone cat` of a missing key succeeds with nothing: it
//!   reads it as an empty folder), puts with user metadata, starts multipart uploads,
//!   lists (ListObjectsV2, every page, `encoding-type=url`) and HEADs each object. rclone's own listing would hide what a test must see: it shows no
//!   ETag, and it reads `x-amz-meta-mtime`/`btime` as its own modification times and
//!   reports S3's LastModified under the same names. Here `Object::metadata` is exactly
//!   the `x-amz-meta-*` headers the server returns (names lowercased, prefix cut).
//!   curl 7.88 signs the query string in the order given, so parameters are written
//!   sorted, as SigV4 wants them.
//!
//! Every call gets the environment from [`S3Endpoint::set_env`]: the test credentials,
//! and none of the CA variables this machine sets for its proxy (rclone refuses a
//! custom CA bundle it cannot use even for plain http). Failures panic with the tool's
//! message: these are test helpers.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The access key every test server accepts (an admin identity).
pub const ACCESS_KEY: &str = "datasafetest";
/// Its secret.
pub const SECRET_KEY: &str = "datasafe-test-secret-0123456789";
/// The region clients sign for (SeaweedFS accepts any).
pub const REGION: &str = "us-east-1";
/// Variables removed from a client's environment: the CA bundles this machine points
/// at its proxy's certificates (useless against plain http on loopback, and fatal to
/// some clients), and AWS settings that would pull in another identity or endpoint.
pub const REMOVED_VARS: &[&str] = &[
    "AWS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "NIX_SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL_S3",
];

/// One object as a plain listing and HEAD show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    /// The ETag without quotes (`md5hex`, or `md5hex-N` after a multipart upload).
    pub etag: Option<String>,
    /// S3's LastModified as listed (`2026-12-06T14:12:04Z`): the upload time.
    pub mtime: Option<String>,
    /// The `x-amz-meta-*` headers of a HEAD: names lowercased without the prefix.
    pub metadata: BTreeMap<String, String>,
}

/// One unfinished multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
    pub initiated: String,
}

/// What every test server offers: an endpoint and the plain client above.
pub trait S3Endpoint {
    /// `http://127.0.0.1:PORT`, the S3 gateway.
    fn endpoint(&self) -> String;

    /// The variables a child (datasafe, rclone, curl) needs to reach this server as
    /// every S3 tool reads them.
    fn env_pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    /// Points `cmd` at this server: sets [`S3Endpoint::env_pairs`] and removes
    /// [`REMOVED_VARS`]. Only the child's environment changes, never this process's.
    fn set_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for var in REMOVED_VARS {
            cmd.env_remove(var);
        }
        for (key, value) in self.env_pairs() {
            cmd.env(key, value);
        }
        cmd
    }

    /// rclone's inline remote for `bucket/path` on this server.
    fn rclone_remote(&self, bucket: &str, path: &str) -> String {
        let path = path.trim_start_matches('/');
        format!(
            ":s3,provider=Other,env_auth=true,endpoint='{}':{bucket}/{path}",
            self.endpoint()
        )
    }

    /// `rclone --config /dev/null` with [`S3Endpoint::set_env`], one try per request
    /// (a test wants the failure, not a retry that hides it), not yet run.
    fn rclone(&self) -> Command {
        let mut cmd = Command::new(require_tool("rclone", "rclone"));
        cmd.args([
            "--config",
            "/dev/null",
            "--retries",
            "1",
            "--low-level-retries",
            "1",
        ]);
        self.set_env(&mut cmd);
        cmd
    }

    /// Makes bucket `name` (ok if it exists).
    fn create_bucket(&self, name: &str) {
        let out = self
            .rclone()
            .arg("mkdir")
            .arg(self.rclone_remote(name, ""))
            .output()
            .unwrap();
        check(&out, &format!("rclone mkdir {name}"));
    }

    /// Makes a bucket with a name no other test of any process uses
    /// (`ds-PID-N-HINT`, cut to S3's 63 characters) and returns the name.
    fn new_bucket(&self, hint: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let hint: String = hint
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut name = format!(
            "ds-{}-{}-{hint}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        name.truncate(63);
        let name = name.trim_end_matches('-').to_owned();
        self.create_bucket(&name);
        name
    }

    /// Puts `data` at `bucket/key` in one request (rclone rcat).
    fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let mut child = self
            .rclone()
            .arg("rcat")
            .arg(self.rclone_remote(bucket, key))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        check(&out, &format!("rclone rcat {bucket}/{key}"));
    }

    /// Puts `data` at `bucket/key` with user metadata `meta` (`x-amz-meta-NAME: VALUE`
    /// headers) in one signed PUT with curl: what another client of the bucket writes.
    fn put_with_metadata(&self, bucket: &str, key: &str, data: &[u8], meta: &[(&str, &str)]) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), data).unwrap();
        let mut args: Vec<String> = vec!["-T".into(), file.path().display().to_string()];
        for (name, value) in meta {
            args.push("-H".into());
            args.push(format!("x-amz-meta-{name}: {value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, body) = self.curl(&args, &format!("/{bucket}/{}", encode(key, true)));
        assert_eq!(
            status,
            200,
            "PUT {bucket}/{key}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Starts a multipart upload of `bucket/key` and leaves it unfinished (as a killed
    /// client would); returns its upload id.
    fn create_multipart_upload(&self, bucket: &str, key: &str) -> String {
        // `?uploads=`: curl 7.88 signs a bare `?uploads` differently from the server.
        let (status, body) = self.curl(
            &["-X", "POST"],
            &format!("/{bucket}/{}?uploads=", encode(key, true)),
        );
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 200, "CreateMultipartUpload {bucket}/{key}: {body}");
        tag(&body, "UploadId").unwrap_or_else(|| panic!("no UploadId in {body}"))
    }

    /// Uploads part `part` of the unfinished upload `upload_id`.
    fn upload_part(&self, bucket: &str, key: &str, upload_id: &str, part: u32, data: &[u8]) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), data).unwrap();
        let path = file.path().display().to_string();
        let (status, body) = self.curl(
            &["-T", &path],
            &format!(
                "/{bucket}/{}?partNumber={part}&uploadId={}",
                encode(key, true),
                encode(upload_id, false)
            ),
        );
        assert_eq!(
            status,
            200,
            "UploadPart {part} of {bucket}/{key}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// The bytes of `bucket/key` (a signed GET with curl), or the status and error.
    /// (Not `rclone cat`: it reads a missing key as an empty folder and succeeds.)
    fn try_get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
        let (status, body) =
            self.try_curl(&["-X", "GET"], &format!("/{bucket}/{}", encode(key, true)))?;
        if status == 200 {
            Ok(body)
        } else {
            Err(format!(
                "GET {bucket}/{key}: {status} {}",
                String::from_utf8_lossy(&body)
            ))
        }
    }

    /// Deletes `bucket/key` (a signed DELETE with curl); panics unless it answers 204.
    fn delete(&self, bucket: &str, key: &str) {
        let (status, body) = self.curl(
            &["-X", "DELETE"],
            &format!("/{bucket}/{}", encode(key, true)),
        );
        assert_eq!(
            status,
            204,
            "DELETE {bucket}/{key}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// The bytes of `bucket/key`; panics if it cannot be read.
    fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.try_get(bucket, key)
            .unwrap_or_else(|e| panic!("rclone cat {bucket}/{key}: {e}"))
    }

    /// Every object under `prefix` in key order, with ETag, size, LastModified and its
    /// user metadata (one HEAD each).
    fn list(&self, bucket: &str, prefix: &str) -> Vec<Object> {
        let mut objects = self.list_keys(bucket, prefix, 1000);
        for object in &mut objects {
            object.metadata = self.head(bucket, &object.key).metadata;
        }
        objects
    }

    /// Every object under `prefix` from ListObjectsV2 alone (no metadata), asking
    /// `page` keys per request.
    fn list_keys(&self, bucket: &str, prefix: &str, page: usize) -> Vec<Object> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // SigV4 with curl 7.88: the query must already be in sorted order.
            let mut query = String::new();
            if let Some(t) = &token {
                query.push_str(&format!("continuation-token={}&", encode(t, false)));
            }
            query.push_str(&format!(
                "encoding-type=url&list-type=2&max-keys={page}&prefix={}",
                encode(prefix, false)
            ));
            let (status, body) = self.curl(&["-X", "GET"], &format!("/{bucket}?{query}"));
            let body = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(
                status, 200,
                "ListObjectsV2 {bucket} prefix {prefix:?}: {body}"
            );
            for contents in body.split("<Contents>").skip(1) {
                let field = |name: &str| tag(contents, name);
                objects.push(Object {
                    key: decode(&field("Key").unwrap_or_default()),
                    size: field("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                    etag: field("ETag").map(|e| unxml(&e).trim_matches('"').to_owned()),
                    mtime: field("LastModified"),
                    metadata: BTreeMap::new(),
                });
            }
            match (
                tag(&body, "IsTruncated").as_deref(),
                tag(&body, "NextContinuationToken"),
            ) {
                (Some("true"), Some(next)) => token = Some(unxml(&next)),
                (Some("true"), None) => panic!("truncated listing without a token: {body}"),
                _ => return objects,
            }
        }
    }

    /// HEAD `bucket/key`: size, ETag, Last-Modified (as the header gives it) and the
    /// user metadata; panics if the object is missing.
    fn head(&self, bucket: &str, key: &str) -> Object {
        let (status, head) = self.curl(&["-I"], &format!("/{bucket}/{}", encode(key, true)));
        let head = String::from_utf8_lossy(&head).into_owned();
        assert_eq!(status, 200, "HEAD {bucket}/{key}:\n{head}");
        let mut object = Object {
            key: key.to_owned(),
            size: 0,
            etag: None,
            mtime: None,
            metadata: BTreeMap::new(),
        };
        for line in head.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if let Some(meta) = name.strip_prefix("x-amz-meta-") {
                object.metadata.insert(meta.to_owned(), value);
            } else if name == "content-length" {
                object.size = value.parse().unwrap_or(0);
            } else if name == "etag" {
                object.etag = Some(value.trim_matches('"').to_owned());
            } else if name == "last-modified" {
                object.mtime = Some(value);
            }
        }
        object
    }

    /// The unfinished multipart uploads in `bucket` (rclone backend
    /// list-multipart-uploads).
    fn list_multipart_uploads(&self, bucket: &str) -> Vec<Upload> {
        let out = self
            .rclone()
            .args(["backend", "list-multipart-uploads"])
            .arg(self.rclone_remote(bucket, ""))
            .output()
            .unwrap();
        check(
            &out,
            &format!("rclone backend list-multipart-uploads {bucket}"),
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "rclone backend list-multipart-uploads printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
        json[bucket]
            .as_array()
            .map(|uploads| {
                uploads
                    .iter()
                    .map(|u| Upload {
                        key: text(u, "Key"),
                        upload_id: text(u, "UploadId"),
                        initiated: text(u, "Initiated"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A signed ListBuckets: `Ok` once the gateway answers it with 200 (the server is
    /// up, reaches its filer and knows the credentials).
    fn s3_answers(&self) -> Result<(), String> {
        let (status, body) = self.try_curl(&["-X", "GET", "--max-time", "5"], "/")?;
        if status == 200 {
            Ok(())
        } else {
            Err(format!(
                "ListBuckets: {status} {}",
                String::from_utf8_lossy(&body)
            ))
        }
    }

    /// A signed request with curl to `path_and_query` (already encoded): status, body.
    fn curl(&self, args: &[&str], path_and_query: &str) -> (u16, Vec<u8>) {
        self.try_curl(args, path_and_query)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`S3Endpoint::curl`], with curl's failure (no connection, timeout) as `Err`.
    fn try_curl(&self, args: &[&str], path_and_query: &str) -> Result<(u16, Vec<u8>), String> {
        let mut cmd = Command::new(require_tool("curl", "curl"));
        cmd.args(["-sS", "--max-time", "60", "--aws-sigv4"])
            .arg(format!("aws:amz:{REGION}:s3"))
            .arg("--user")
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .args(["--write-out", "%{stderr}%{http_code}"])
            .args(args)
            .arg(format!("{}{path_and_query}", self.endpoint()));
        self.set_env(&mut cmd);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let code = err.trim().rsplit('\n').next().unwrap_or_default();
        match code.trim().parse::<u16>() {
            Ok(status) if out.status.success() && status != 0 => Ok((status, out.stdout)),
            _ => Err(format!(
                "curl {path_and_query} ({}): {}",
                out.status,
                err.trim()
            )),
        }
    }
}

/// The program `name` from PATH, or a one-line panic naming the Debian package.
pub fn require_tool(name: &str, package: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is missing: install it (`apt-get install {package}`; .ci/run does)")
        })
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Percent-encodes `s` for a URL: every byte but `A-Za-z0-9-._~` (and `/` if
/// `keep_slash`, for a key in the path).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes `encoding-type=url` (`+` is a space there, as SeaweedFS writes it).
fn decode(s: &str) -> String {
    let s = unxml(s);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// XML character references and the five entities.
fn unxml(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find(';') else {
            break;
        };
        let entity = &rest[at + 1..at + end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&rest[at..=at + end]),
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The text of the first `<name>…</name>` in `xml`.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + end].to_owned())
}

#[test]
fn decode_undoes_seaweeds_url_encoding() {
    assert_eq!(decode("sp/we+ird%2B%26%3C%C3%A9.txt"), "sp/we ird+&<é.txt");
    assert_eq!(unxml("&#34;ab&#34;&amp;"), "\"ab\"&");
    assert_eq!(encode("a b/é", true), "a%20b/%C3%A9");
}
