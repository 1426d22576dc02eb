//! The connection to an S3-compatible service ([`Client`]): the AWS SDK's client, built
//! the way every S3 tool reads its settings, on one runtime the process owns, called
//! from the engine's blocking workers; and what a failed request means, as an
//! `io::Error` of the right kind with one line a user can act on ([`Client::error`]).
//!
//! Settings, first found wins: the pair's (`--s3-endpoint`, config `endpoint`, `region`,
//! `profile`), then the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_PROFILE`),
//! then `~/.aws/config` and `~/.aws/credentials` (SSO, web identity and
//! `credential_process` too). A self-hosted endpoint is addressed path-style
//! (`ENDPOINT/bucket/key`); AWS itself virtual-host style. Checksums are sent only where
//! the API requires them (the SDK's default trailing checksums are refused by several
//! S3-compatible servers). Throttling (`SlowDown`, 503) and dropped connections are
//! retried with backoff by the SDK's standard retry mode.

use crate::config::Bucket;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How many times one request is tried (the SDK's backoff in between).
const ATTEMPTS: u32 = 6;
/// The longest one try may wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one try may take (a part of a multipart upload included).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The runtime every S3 request runs on: two threads, shared by all stores of the
/// process (the engine's workers block on it).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3")
            .enable_all()
            .build()
            .expect("the S3 runtime starts")
    })
}

/// A client for one bucket prefix.
pub struct Client {
    pub(super) s3: aws_sdk_s3::Client,
    pub(super) bucket: Bucket,
    /// Where requests go, for messages (`None`: AWS itself).
    endpoint: Option<String>,
    /// The service could not be reached even after the retries: later requests fail at
    /// once (one wait, not one per file), and the store is no longer ready (a watcher
    /// reconnects with a new one).
    down: AtomicBool,
    /// Folders this run made or found (marker key → what it is, and whether its marker
    /// is known to carry that stat's mode and mtime): a folder looked at again costs no
    /// request. Forgotten when removed or moved.
    folders: Mutex<HashMap<String, (crate::store::Stat, bool)>>,
    /// Set while the mirror is known to hold nothing but what this run wrote (a first
    /// mirror into an empty prefix): the hashes of the keys written so far. A look at a
    /// key not among them is answered "nothing there" without a request; a hash that
    /// matches (written, or a collision) is looked at for real.
    fresh: Mutex<Option<HashSet<u64>>>,
    /// Marker keys a worker is putting now ([`Client::making`]), and the signal that
    /// one is done.
    making: Mutex<HashSet<String>>,
    made: Condvar,
}

/// A marker key one worker is making: dropped, others may look at it again.
pub struct Making<'a> {
    client: &'a Client,
    key: String,
}

impl Drop for Making<'_> {
    fn drop(&mut self) {
        let mut making = self.client.making.lock().unwrap_or_else(|p| p.into_inner());
        making.remove(&self.key);
        self.client.made.notify_all();
    }
}

impl Client {
    /// A client for `bucket`, its settings read (no request is sent).
    pub fn new(bucket: &Bucket) -> io::Result<Client> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(profile) = &bucket.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &bucket.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &bucket.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = block_on(loader.load());
        let endpoint = shared.endpoint_url().map(str::to_string);
        let place = match &endpoint {
            Some(endpoint) => format!("bucket {} at {endpoint}", bucket.bucket),
            None => format!("bucket {}", bucket.bucket),
        };
        // Credentials are looked for once, here, so that their absence is said as such
        // (not as a request that could not be sent).
        use aws_credential_types::provider::ProvideCredentials;
        let found = shared
            .credentials_provider()
            .map(|provider| block_on(async move { provider.provide_credentials().await }));
        if !matches!(found, Some(Ok(_))) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "no S3 credentials for {place}: set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, or name a profile of ~/.aws/credentials (AWS_PROFILE \
                     or the config's profile)"
                ),
            ));
        }
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            // A self-hosted server is rarely set up for bucket names in host names.
            .force_path_style(endpoint.is_some())
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if shared.region().is_none() {
            // Self-hosted servers take any region; AWS finds the bucket's from it.
            config = config.region(aws_config::Region::new("us-east-1"));
        }
        Ok(Client {
            s3: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: bucket.clone(),
            endpoint,
            down: AtomicBool::new(false),
            folders: Mutex::default(),
            fresh: Mutex::default(),
            making: Mutex::default(),
            made: Condvar::new(),
        })
    }

    /// Runs a request to completion from a blocking thread.
    pub fn run<F: Future>(&self, request: F) -> F::Output {
        block_on(request)
    }

    /// Sends a request (`send()` of a request builder) unless the service was found
    /// unreachable; a failure as [`Client::error`] says it.
    pub fn call<T, E>(
        &self,
        request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> io::Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.check_up()?;
        self.run(request).map_err(|e| self.error(e))
    }

    /// `Err` (the connection kind, one line) once the service was found unreachable.
    pub fn check_up(&self) -> io::Result<()> {
        match self.down.load(Ordering::Relaxed) {
            false => Ok(()),
            true => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "cannot reach {}; written again once it is back",
                    self.place()
                ),
            )),
        }
    }

    /// True once the service was found unreachable (see [`Client::check_up`]).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// The folder whose marker key is `key`, if this run made or found it.
    pub fn known_folder(&self, key: &str) -> Option<crate::store::Stat> {
        self.folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|(stat, _)| *stat)
    }

    /// True if the marker `key` is known to carry `mode` and `mtime` (this run wrote or
    /// read them there): setting them again would change nothing.
    pub fn marked_as(&self, key: &str, mode: u32, mtime: filetime::FileTime) -> bool {
        self.folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|(stat, marked)| *marked && stat.mode == mode && stat.mtime == mtime)
    }

    /// Notes the folder whose marker key is `key`: `marked` if `stat` was read from its
    /// marker or written into it, not just implied by keys under it.
    pub fn note_folder(&self, key: &str, stat: crate::store::Stat, marked: bool) {
        self.folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), (stat, marked));
    }

    /// Notes that a folder is at the marker key `key`, unless more is known of it (a
    /// marker put meanwhile by another worker, with the metadata it carries).
    pub fn note_implied_folder(&self, key: &str) {
        self.folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_insert_with(|| (crate::store::s3::implied_folder(), false));
    }

    /// Forgets the folders at and under the marker key `key` (removed or moved), and ends
    /// a first mirror's shortcut ([`Client::set_fresh`]).
    pub fn forget_folders(&self, key: &str) {
        // What a removed or moved folder held is no longer known from the keys written:
        // every look is a real one from now on.
        self.end_fresh();
        self.folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !k.starts_with(key));
    }

    /// Claims the marker key `key` for this worker, after waiting while another has it.
    pub fn making(&self, key: &str) -> Making<'_> {
        let mut making = self.making.lock().unwrap_or_else(|p| p.into_inner());
        while making.contains(key) {
            making = self.made.wait(making).unwrap_or_else(|p| p.into_inner());
        }
        making.insert(key.to_string());
        Making {
            client: self,
            key: key.to_string(),
        }
    }

    /// Notes that the mirror holds nothing but what this run writes from now on.
    pub fn set_fresh(&self) {
        *self.fresh.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashSet::new());
    }

    /// Ends what [`Client::set_fresh`] began (the first pass is over).
    pub fn end_fresh(&self) {
        *self.fresh.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// True if `key` is known to hold nothing: the mirror is fresh and this run never
    /// wrote it.
    pub fn surely_absent(&self, key: &str) -> bool {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|written| !written.contains(&key_hash(key)))
    }

    /// Notes that this run wrote `key`.
    pub fn note_written(&self, key: &str) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        let Some(written) = fresh.as_mut() else {
            return;
        };
        written.insert(key_hash(key));
        drop(fresh);
        // The folders on its way are there now (as a listing would show them), made
        // by nothing else in a fresh mirror: a look at one must not say "nothing".
        let mut folders = self.folders.lock().unwrap_or_else(|p| p.into_inner());
        for (at, _) in key.match_indices('/') {
            folders
                .entry(key[..=at].to_string())
                .or_insert_with(|| (crate::store::s3::implied_folder(), false));
        }
    }

    /// Where requests go, for messages.
    pub fn place(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("bucket {} at {endpoint}", self.bucket.bucket),
            None => format!("bucket {}", self.bucket.bucket),
        }
    }

    /// What a failed request means: an `io::Error` of the kind the engine acts on
    /// (`NotFound`, `AlreadyExists`, `PermissionDenied`, `ConnectionRefused`…) with one
    /// line that names the bucket and what to do.
    pub fn error<E>(&self, err: SdkError<E, HttpResponse>) -> io::Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let place = self.place();
        let status = match &err {
            SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
            _ => None,
        };
        if matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
        ) {
            self.down.store(true, Ordering::Relaxed);
        }
        match &err {
            SdkError::DispatchFailure(e) => {
                let why = e
                    .as_connector_error()
                    .map(|c| source_chain(c))
                    .unwrap_or_else(|| "the request could not be sent".to_string());
                return io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("cannot reach {place}: {why}; check the endpoint and the network"),
                );
            }
            SdkError::TimeoutError(_) => {
                return io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{place} did not answer in time; check the endpoint and the network"),
                );
            }
            SdkError::ResponseError(_) => {
                return io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("{place} sent an answer that could not be read"),
                );
            }
            SdkError::ConstructionFailure(_) => {
                let why = source_chain(&err);
                return io::Error::other(format!(
                    "cannot send a request to {place}: {why}; check the credentials \
                     (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in \
                     ~/.aws/credentials)"
                ));
            }
            _ => {}
        }
        let code = err.code().unwrap_or_default().to_string();
        let message = err.message().unwrap_or_default().to_string();
        let (kind, line) = match (code.as_str(), status) {
            ("NoSuchBucket", _) => (
                io::ErrorKind::NotFound,
                format!(
                    "{place} does not exist: create it first, or check its name and the endpoint"
                ),
            ),
            (
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "InvalidToken"
                | "ExpiredToken"
                | "AuthorizationHeaderMalformed",
                _,
            ) => (
                io::ErrorKind::PermissionDenied,
                format!(
                    "{place} refused the credentials ({code}); check AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, or the profile in ~/.aws/credentials"
                ),
            ),
            ("AccessDenied", _) | (_, Some(403)) => (
                io::ErrorKind::PermissionDenied,
                format!(
                    "{place} denied access ({}); check the credentials' permissions on it",
                    nonempty(&message, &code)
                ),
            ),
            ("NoSuchKey" | "NotFound" | "NoSuchUpload", _) | (_, Some(404)) => {
                (io::ErrorKind::NotFound, format!("not found in {place}"))
            }
            ("PreconditionFailed" | "ConditionalRequestConflict", _) | (_, Some(412 | 409)) => (
                io::ErrorKind::AlreadyExists,
                format!("already exists in {place}"),
            ),
            ("SlowDown" | "RequestLimitExceeded" | "ServiceUnavailable", _) | (_, Some(503)) => (
                io::ErrorKind::ResourceBusy,
                format!(
                    "{place} asks to slow down and still did after {ATTEMPTS} tries; run again later"
                ),
            ),
            ("EntityTooLarge" | "QuotaExceeded", _) => (
                io::ErrorKind::StorageFull,
                format!("{place} has no room: {}", nonempty(&message, &code)),
            ),
            _ => (
                io::ErrorKind::Other,
                format!("{place}: {}", nonempty(&message, &code)),
            ),
        };
        io::Error::new(kind, line)
    }
}

fn key_hash(key: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key)
}

/// `text`, or `or` if it is empty, or a generic phrase.
fn nonempty<'a>(text: &'a str, or: &'a str) -> &'a str {
    match (text.is_empty(), or.is_empty()) {
        (false, _) => text,
        (true, false) => or,
        (true, true) => "the request failed",
    }
}

/// An error and its causes in one line.
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}
