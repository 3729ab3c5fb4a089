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
}

/// Bytes by key, shared by machines. Keys are `/`-separated and relative to the URL's prefix.
pub trait RemoteStore: Send + Sync {
    /// The URL it was opened from.
    fn url(&self) -> &str;
    /// The object's bytes; `None` when there is no such object.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RemoteError>;
    /// Whether the object exists.
    fn exists(&self, key: &str) -> Result<bool, RemoteError>;
    /// Writes the object, replacing what was there (for content-addressed keys, where any
    /// writer writes the same bytes).
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError>;
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

/// A [`RemoteStore`] over `object_store`, driven from synchronous code by a small runtime of
/// its own.
pub struct ObjectRemote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Runtime,
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
            url: url.to_owned(),
            doing: "opening".into(),
            why,
            fix: fix.to_owned(),
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string(), "rerun"))?;
        Ok(ObjectRemote {
            url: url.to_owned(),
            store,
            prefix,
            rt,
        })
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
            why: said,
            fix: fix.into(),
        }
    }
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
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry);
    if endpoint.starts_with("http://") {
        b = b.with_allow_http(true);
    }
    if std::env::var("AWS_DEFAULT_REGION").is_err() && std::env::var("AWS_REGION").is_err() {
        b = b.with_region("us-east-1");
    }
    b.build().map_err(|e| e.to_string())
}

impl RemoteStore for ObjectRemote {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let path = self.path(key);
        let got = self.rt.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| self.error(format!("reading {key}"), e))
    }

    fn exists(&self, key: &str) -> Result<bool, RemoteError> {
        let path = self.path(key);
        match self.rt.block_on(self.store.head(&path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
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
