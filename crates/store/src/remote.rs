//! A remote store that several machines share: a shared directory (`file:///path`), an
//! S3-compatible bucket (`s3://bucket/prefix`), or memory (`memory://name`, for tests),
//! all through the Apache Arrow project's `object_store` behind the one [`RemoteStore`]
//! trait. What is kept there, and how it is trusted, is [`crate::mirror`]'s business; this
//! module only moves bytes and says clearly what went wrong and how to fix it.

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What a create-if-absent put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// This call created the object.
    New,
    /// The object was already there; it was left as it was.
    Exists,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteObject {
    /// Its key, relative to the store's prefix.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, in seconds since the Unix epoch.
    pub modified_unix: i64,
}

/// A remote operation that failed: which store, what was being done, why, and the fix.
#[derive(Debug, thiserror::Error)]
#[error("store {url}: {doing}: {why}; {fix}")]
pub struct RemoteError {
    /// The store's URL.
    pub url: String,
    /// What was being done (`reading index/…`).
    pub doing: String,
    /// What the store (or the network) said.
    pub why: String,
    /// What the user can do about it.
    pub fix: String,
    /// spherepipe refused what the store sent (more bytes than expected, or it could not be
    /// kept), rather than the store failing: the object is bad, the store is fine.
    pub refused: bool,
}

/// Bytes by key, shared by machines. Keys are `/`-separated and relative to the URL's prefix.
///
/// Reads are bounded: a caller says how many bytes it accepts, and an object that holds more is
/// an error before more than that is held in memory or written anywhere.
pub trait RemoteStore: Send + Sync {
    /// The URL it was opened from.
    fn url(&self) -> &str;
    /// The object's bytes; `None` when there is no such object; an error when it holds more
    /// than `limit` bytes.
    fn get(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, RemoteError> {
        let mut out = Vec::new();
        let got = self.get_into(key, limit, &mut |piece| {
            out.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(got.map(|_| out))
    }
    /// Streams the object to `sink`, a piece at a time, without holding it whole; returns its
    /// size, or `None` when there is no such object. More than `limit` bytes is an error, and
    /// so is an error from `sink` (the transfer stops there).
    fn get_into(&self, key: &str, limit: u64, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> Result<Option<u64>, RemoteError>;
    /// Streams an object the caller knows to hold `size` bytes to `sink`, in order; a large
    /// one may travel as several ranges at once. An object of another size is refused (as
    /// [`RemoteError::refused`]); `None` when there is no such object.
    fn get_sized(&self, key: &str, size: u64, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> Result<Option<u64>, RemoteError> {
        self.get_into(key, size, sink)
    }
    /// The object's size and age, or `None` when there is no such object.
    fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError>;
    /// Writes the object, replacing what was there (for content-addressed keys, where any
    /// writer writes the same bytes).
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError>;
    /// Writes the object from `source` (`len` bytes, as far as the caller knows), read once and
    /// in order, without holding it whole (multipart above one part). `finish` is called
    /// after the last byte was read and before the object becomes visible: its error aborts
    /// the upload and nothing is written.
    fn put_stream(
        &self,
        key: &str,
        len: u64,
        source: &mut dyn std::io::Read,
        finish: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), RemoteError>;
    /// Writes the object only if there is none: of several racing writers exactly one gets
    /// [`Created::New`].
    fn create(&self, key: &str, bytes: Vec<u8>) -> Result<Created, RemoteError>;
    /// Every object whose key starts with `prefix/`.
    fn list(&self, prefix: &str) -> Result<Vec<RemoteObject>, RemoteError>;
    /// Removes the object (no error when it is already gone).
    fn delete(&self, key: &str) -> Result<(), RemoteError>;
    /// Asks the store for one listing, so that an unreachable server, refused credentials or
    /// a missing bucket is reported before any work starts (a read of a missing key alone
    /// cannot tell a missing bucket from an empty one).
    fn check(&self) -> Result<(), RemoteError>;
}

/// The size of one part of a multipart upload, and so the most an upload holds in memory per
/// part in flight. S3 wants parts of at least 5 MiB (but the last) and at most 10,000 parts, so
/// a file over 160 GB gets larger parts.
pub const DEFAULT_PART_SIZE: usize = 16 << 20;
const S3_MIN_PART: usize = 5 << 20;
const MAX_PARTS: u64 = 10_000;
/// Parts uploaded at once (so at most this many parts are held in memory, plus the one being
/// read).
const PARTS_IN_FLIGHT: usize = 8;

/// A [`RemoteStore`] over `object_store`, driven from synchronous code by a small runtime of
/// its own.
pub struct ObjectRemote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Runtime,
    part_size: usize,
}

/// The stores `memory://name` names in this process, so that opening one twice gives the same.
fn memory_stores() -> &'static Mutex<HashMap<String, Arc<dyn ObjectStore>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

impl ObjectRemote {
    /// Opens `url` and checks that the store answers (see [`RemoteStore::check`]).
    pub fn connect(url: &str) -> Result<ObjectRemote, RemoteError> {
        let r = ObjectRemote::open(url)?;
        r.check()?;
        Ok(r)
    }

    /// Opens `url`: `file:///path` (the directory must exist), `s3://bucket[/prefix]`
    /// (endpoint, region and credentials from the standard `AWS_*` variables, such as
    /// `AWS_ENDPOINT_URL`), or `memory://name`. Nothing is read or written yet.
    pub fn open(url: &str) -> Result<ObjectRemote, RemoteError> {
        let fail = |why: String, fix: &str| RemoteError {
            url: redact_url(url),
            doing: "opening".into(),
            why,
            fix: fix.to_owned(),
            refused: false,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| fail("not a URL".into(), "write file:///path, s3://bucket/prefix or memory://name"))?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match scheme {
            "file" => (Arc::new(local_dir(rest).map_err(|(why, fix)| fail(why, fix))?), String::new()),
            "memory" => {
                let mut stores = memory_stores()
                    .lock()
                    .map_err(|_| fail("a memory store panicked".into(), "rerun"))?;
                let s = stores
                    .entry(rest.to_owned())
                    .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()));
                (s.clone(), String::new())
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                (
                    Arc::new(s3_bucket(bucket).map_err(|why| fail(why, S3_FIX))?),
                    prefix.trim_matches('/').to_owned(),
                )
            }
            other => return Err(fail(format!("unknown scheme `{other}`"), "use file://, s3:// or memory://")),
        };
        // Two workers: the parts of an upload travel on them while the caller reads (and
        // hashes) the next part from disk.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string(), "rerun"))?;
        Ok(ObjectRemote {
            url: redact_url(url),
            store,
            prefix,
            rt,
            part_size: DEFAULT_PART_SIZE,
        })
    }

    /// The same store with uploads cut into parts of `bytes` (at least S3's 5 MiB on `s3://`):
    /// tests use small parts so that the multipart path runs on small files.
    pub fn with_part_size(mut self, bytes: usize) -> ObjectRemote {
        let floor = if self.url.starts_with("s3://") { S3_MIN_PART } else { 1 };
        self.part_size = bytes.max(floor);
        self
    }

    /// The part size for an upload of `len` bytes (0 when unknown): large enough that the
    /// parts fit S3's count.
    fn part_size_for(&self, len: u64) -> usize {
        let needed = len.div_ceil(MAX_PARTS) as usize;
        self.part_size.max(needed)
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn error(&self, doing: String, e: object_store::Error) -> RemoteError {
        // S3 servers name the problem in the response body, which object_store passes on.
        let said = e.to_string();
        let said_any = |codes: &[&str]| codes.iter().any(|c| said.contains(c));
        let fix = match &e {
            _ if said_any(&["NoSuchBucket"]) => "the bucket does not exist: create it, or check the bucket name and AWS_ENDPOINT_URL",
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => CREDENTIALS_FIX,
            _ if said_any(&["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"]) => CREDENTIALS_FIX,
            _ if self.url.starts_with("s3://") => S3_FIX,
            _ => "check that the directory exists, is writable and is the same mount on every machine",
        };
        RemoteError {
            url: self.url.clone(),
            doing,
            why: redact(&said),
            fix: fix.into(),
            refused: false,
        }
    }
}

/// S3 servers echo a refused request's signing material in their error body; none of it may
/// reach a message, a log or a page.
const SECRET_ELEMENTS: [&str; 6] = [
    "StringToSign",
    "StringToSignBytes",
    "CanonicalRequest",
    "CanonicalRequestBytes",
    "SignatureProvided",
    "AWSAccessKeyId",
];
/// Query parameters and header fields whose value is a signature or a credential.
const SECRET_FIELDS: [&str; 6] = [
    "X-Amz-Signature=",
    "X-Amz-Credential=",
    "X-Amz-Security-Token=",
    "Signature=",
    "Credential=",
    "AWSAccessKeyId=",
];
const REDACTED: &str = "[redacted]";

/// `text` without signatures, credentials, a URL's user-info or the values of the
/// `AWS_*` secrets set in this process: what may be shown of a store's error.
pub fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    for tag in SECRET_ELEMENTS {
        out = redact_between(&out, &format!("<{tag}>"), |rest| rest.find('<').unwrap_or(rest.len()));
    }
    for field in SECRET_FIELDS {
        out = redact_between(&out, field, |rest| {
            rest.find(|c: char| c == '&' || c == ',' || c == '"' || c == '<' || c == '\'' || c.is_whitespace())
                .unwrap_or(rest.len())
        });
    }
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"] {
        // Short values (a test's `ci`) would blank ordinary words; real keys are 16+ characters.
        if let Ok(v) = std::env::var(var) {
            if v.len() >= 8 {
                out = out.replace(&v, REDACTED);
            }
        }
    }
    redact_user_info(&out)
}

/// Replaces what follows each `start` up to where `end` says (an offset into the rest).
fn redact_between(text: &str, start: &str, end: impl Fn(&str) -> usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(start) {
        out.push_str(&rest[..at + start.len()]);
        rest = &rest[at + start.len()..];
        let n = end(rest);
        if n > 0 {
            out.push_str(REDACTED);
        }
        rest = &rest[n..];
    }
    out.push_str(rest);
    out
}

/// Every `scheme://user:password@host` with its user-info removed.
fn redact_user_info(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        out.push_str(&rest[..at + 3]);
        rest = &rest[at + 3..];
        let authority = rest.find(|c: char| c == '/' || c.is_whitespace() || c == '"').unwrap_or(rest.len());
        if let Some(user) = rest[..authority].rfind('@') {
            out.push_str(REDACTED);
            rest = &rest[user..];
        }
    }
    out.push_str(rest);
    out
}

/// A URL as it may be shown: without user-info.
fn redact_url(url: &str) -> String {
    redact_user_info(url)
}

const CREDENTIALS_FIX: &str = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the directory's permissions)";
const S3_FIX: &str =
    "check the bucket name, AWS_ENDPOINT_URL (for an S3-compatible server), AWS_DEFAULT_REGION and that the server is reachable";

/// A local or shared directory as an object store; it must exist already (a typo in a mount
/// path should not quietly make a local directory).
fn local_dir(path: &str) -> Result<object_store::local::LocalFileSystem, (String, &'static str)> {
    let dir = std::path::Path::new(path);
    if !dir.is_dir() {
        return Err((
            format!("{path} is not a directory"),
            "create it, or check that the shared file system is mounted here",
        ));
    }
    object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| (e.to_string(), "check the directory's permissions"))
}

/// An S3 bucket configured from the `AWS_*` environment; plain HTTP is allowed when the
/// endpoint says `http://` (a local S3-compatible server).
fn s3_bucket(bucket: &str) -> Result<object_store::aws::AmazonS3, String> {
    if bucket.is_empty() {
        return Err("no bucket named".into());
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .unwrap_or_default();
    // A few quick retries: an unreachable server should be reported in seconds, not minutes.
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(20),
    };
    // A request may carry gigabytes (a multipart completion of a MegaFace feature table takes
    // the server a while; a download of one streams for minutes on a slow link), so no
    // request has a total deadline (object_store's default is 30 s); a connection that stalls
    // for two minutes is given up instead.
    use object_store::aws::AmazonS3ConfigKey::Client;
    use object_store::ClientConfigKey::{ReadTimeout, Timeout};
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .with_config(Client(Timeout), "24h")
        .with_config(Client(ReadTimeout), "120s");
    if endpoint.starts_with("http://") {
        b = b.with_allow_http(true);
    }
    if std::env::var("AWS_DEFAULT_REGION").is_err() && std::env::var("AWS_REGION").is_err() {
        b = b.with_region("us-east-1");
    }
    b.build().map_err(|e| e.to_string())
}

/// Reads up to `n` bytes (fewer only at the end of `source`).
fn read_part(source: &mut dyn std::io::Read, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    source.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Why a multipart upload stopped: the store's error, or ours (already worded).
type PartError = Result<RemoteError, object_store::Error>;

/// A spawned part's end: its own error, or the task's (a panic in the HTTP client).
fn joined(done: Result<object_store::Result<()>, tokio::task::JoinError>) -> Result<(), PartError> {
    match done {
        Ok(r) => r.map_err(Err),
        Err(e) => Err(Err(object_store::Error::Generic {
            store: "upload",
            source: Box::new(e),
        })),
    }
}

impl ObjectRemote {
    /// Sends `first` and the rest of `source` as parts, at most [`PARTS_IN_FLIGHT`] at once,
    /// then asks `finish`.
    async fn upload_parts(
        &self,
        upload: &mut dyn object_store::MultipartUpload,
        first: Vec<u8>,
        source: &mut dyn std::io::Read,
        part: usize,
        finish: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), PartError> {
        use futures::StreamExt;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut next = Some(first);
        while let Some(bytes) = next.take() {
            let last = bytes.len() < part;
            if !bytes.is_empty() {
                in_flight.push(tokio::spawn(upload.put_part(PutPayload::from(bytes))));
            }
            while in_flight.len() >= PARTS_IN_FLIGHT {
                if let Some(done) = in_flight.next().await {
                    joined(done)?;
                }
            }
            if !last {
                let more = read_part(source, part).map_err(|e| Ok(self.refusal("reading the file to upload".into(), e.to_string())))?;
                next = Some(more);
            }
        }
        while let Some(done) = in_flight.next().await {
            joined(done)?;
        }
        finish().map_err(|why| Ok(self.refusal("finishing the upload".into(), why)))
    }

    /// Fetches `path` as ranges of `range` bytes, at most [`PARTS_IN_FLIGHT`] at once on the
    /// runtime's workers, and hands them to `sink` in order (so a hash over them is the
    /// object's). At most that many ranges are held in memory.
    async fn ranges_in_order(
        &self,
        path: &ObjectPath,
        size: u64,
        range: u64,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, PartError> {
        use futures::StreamExt;
        let mut pending = futures::stream::FuturesOrdered::new();
        let (mut start, mut got) = (0u64, 0u64);
        loop {
            while pending.len() < PARTS_IN_FLIGHT && start < size {
                let end = (start + range).min(size);
                let (store, path) = (self.store.clone(), path.clone());
                pending.push_back(tokio::spawn(async move {
                    let opts = object_store::GetOptions {
                        range: Some((start..end).into()),
                        ..Default::default()
                    };
                    store.get_opts(&path, opts).await?.bytes().await
                }));
                start = end;
            }
            let Some(done) = pending.next().await else { break };
            let bytes = match done {
                Ok(r) => r.map_err(Err)?,
                Err(e) => return Err(Ok(self.refusal("reading a range".into(), e.to_string()))),
            };
            got += bytes.len() as u64;
            sink(&bytes).map_err(|e| Ok(self.refusal("reading a range".into(), format!("could not keep what was read: {e}"))))?;
        }
        Ok(got)
    }

    /// An error of ours (not the store's) while `doing`.
    fn refusal(&self, doing: String, why: String) -> RemoteError {
        RemoteError {
            url: self.url.clone(),
            doing,
            why,
            fix: "nothing from it was kept or written".into(),
            refused: true,
        }
    }
}

impl RemoteStore for ObjectRemote {
    fn url(&self) -> &str {
        &self.url
    }

    fn get_into(&self, key: &str, limit: u64, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> Result<Option<u64>, RemoteError> {
        use futures::StreamExt;
        let path = self.path(key);
        let doing = || format!("reading {key}");
        self.rt.block_on(async {
            let got = match self.store.get(&path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error(doing(), e)),
            };
            if got.meta.size > limit {
                return Err(self.refusal(doing(), format!("it holds {} bytes, more than the {limit} expected", got.meta.size)));
            }
            let mut stream = got.into_stream();
            let mut n = 0u64;
            while let Some(piece) = stream.next().await {
                let piece = piece.map_err(|e| self.error(doing(), e))?;
                n += piece.len() as u64;
                if n > limit {
                    return Err(self.refusal(doing(), format!("it holds more than the {limit} bytes expected")));
                }
                sink(&piece).map_err(|e| self.refusal(doing(), format!("could not keep what was read: {e}")))?;
            }
            Ok(Some(n))
        })
    }

    fn get_sized(&self, key: &str, size: u64, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> Result<Option<u64>, RemoteError> {
        let range = self.part_size as u64;
        if size <= range {
            return self.get_into(key, size, sink);
        }
        let path = self.path(key);
        let doing = || format!("reading {key}");
        self.rt.block_on(async {
            match self.store.head(&path).await {
                Ok(m) if m.size == size => {}
                Ok(m) => return Err(self.refusal(doing(), format!("it holds {} bytes, not the {size} expected", m.size))),
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error(doing(), e)),
            }
            self.ranges_in_order(&path, size, range, sink)
                .await
                .map_err(|e| e.unwrap_or_else(|e| self.error(doing(), e)))
                .map(Some)
        })
    }

    fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        let path = self.path(key);
        match self.rt.block_on(self.store.head(&path)) {
            Ok(m) => Ok(Some(RemoteObject {
                key: key.to_owned(),
                size: m.size,
                modified_unix: m.last_modified.timestamp(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(format!("looking for {key}"), e)),
        }
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        let path = self.path(key);
        self.rt
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.error(format!("writing {key}"), e))
    }

    fn put_stream(
        &self,
        key: &str,
        len: u64,
        source: &mut dyn std::io::Read,
        finish: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), RemoteError> {
        let part = self.part_size_for(len);
        let doing = || format!("writing {key}");
        let first = read_part(source, part).map_err(|e| self.refusal(doing(), e.to_string()))?;
        if first.len() < part {
            // One part holds it all: a plain put, once `finish` agrees.
            finish().map_err(|why| self.refusal(doing(), why))?;
            return self.put(key, first);
        }
        let path = self.path(key);
        self.rt.block_on(async {
            let mut upload = self.store.put_multipart(&path).await.map_err(|e| self.error(doing(), e))?;
            match self.upload_parts(upload.as_mut(), first, source, part, finish).await {
                Ok(()) => upload.complete().await.map(|_| ()).map_err(|e| self.error(doing(), e)),
                Err(why) => {
                    let _ = upload.abort().await;
                    Err(why.unwrap_or_else(|e| self.error(doing(), e)))
                }
            }
        })
    }

    fn create(&self, key: &str, bytes: Vec<u8>) -> Result<Created, RemoteError> {
        let path = self.path(key);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.rt.block_on(self.store.put_opts(&path, PutPayload::from(bytes), opts)) {
            Ok(_) => Ok(Created::New),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(Created::Exists),
            Err(e) => Err(self.error(format!("creating {key}"), e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<RemoteObject>, RemoteError> {
        use futures::TryStreamExt;
        let path = self.path(prefix);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(|e| self.error(format!("listing {prefix}/"), e))?;
        let mut out: Vec<RemoteObject> = metas
            .into_iter()
            .map(|m| RemoteObject {
                key: m.location.as_ref().strip_prefix(&strip).unwrap_or(m.location.as_ref()).to_owned(),
                size: m.size,
                modified_unix: m.last_modified.timestamp(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn check(&self) -> Result<(), RemoteError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        match self.rt.block_on(self.store.list_with_delimiter(prefix.as_ref())) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error("listing the store".into(), e)),
        }
    }

    fn delete(&self, key: &str) -> Result<(), RemoteError> {
        let path = self.path(key);
        match self.rt.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("deleting {key}"), e)),
        }
    }
}
