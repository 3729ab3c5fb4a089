//! What the engine's unit tests share: an observer that says nothing, a memory store whose
//! reads can be watched and whose uploads can be refused, and a stage kind that writes a file.

use crate::job::Job;
use crate::run::{Observer, Outcome};
use spherepipe_stage::{InputSpec, ParamSpec, ProgressSink, Stage, StageContext};
use spherepipe_store::remote::{Created, RemoteObject, RemoteStore};
use spherepipe_store::{ObjectRemote, RemoteError};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Progress and run events, dropped.
pub(crate) struct Quiet;

impl ProgressSink for Quiet {
    fn set_length(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn message(&self, _: &str) {}
}

impl Observer for Quiet {
    fn started(&self, _: &str) -> Arc<dyn ProgressSink> {
        Arc::new(Quiet)
    }
    fn finished(&self, _: &Outcome) {}
    fn note(&self, _: &str) {}
}

/// A memory store that counts reads of index entries and can refuse uploads of blobs (a job
/// killed, or the store refusing, while an artifact goes up).
pub(crate) struct Watched {
    pub inner: ObjectRemote,
    pub index_reads: AtomicUsize,
    pub refuse_blobs: AtomicBool,
}

impl Watched {
    /// A fresh `memory://name` store, watched.
    pub fn memory(name: &str) -> Arc<Watched> {
        Arc::new(Watched {
            inner: ObjectRemote::open(&format!("memory://{name}")).expect("a memory store"),
            index_reads: AtomicUsize::new(0),
            refuse_blobs: AtomicBool::new(false),
        })
    }

    fn refusal(&self, key: &str) -> Result<(), RemoteError> {
        if key.starts_with("blobs/") && self.refuse_blobs.load(Ordering::SeqCst) {
            return Err(RemoteError {
                url: self.inner.url().to_owned(),
                doing: format!("writing {key}"),
                why: "the job's time limit ended the upload".into(),
                fix: "rerun".into(),
                refused: false,
            });
        }
        Ok(())
    }
}

impl RemoteStore for Watched {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn get_into(&self, key: &str, limit: u64, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> Result<Option<u64>, RemoteError> {
        if key.starts_with("index/") {
            self.index_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get_into(key, limit, sink)
    }
    fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        self.inner.head(key)
    }
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        self.refusal(key)?;
        self.inner.put(key, bytes)
    }
    fn put_stream(
        &self,
        key: &str,
        len: u64,
        source: &mut dyn std::io::Read,
        finish: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), RemoteError> {
        self.refusal(key)?;
        self.inner.put_stream(key, len, source, finish)
    }
    fn create(&self, key: &str, bytes: Vec<u8>) -> Result<Created, RemoteError> {
        self.inner.create(key, bytes)
    }
    fn list(&self, prefix: &str) -> Result<Vec<RemoteObject>, RemoteError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), RemoteError> {
        self.inner.delete(key)
    }
    fn check(&self) -> Result<(), RemoteError> {
        self.inner.check()
    }
}

/// A stage kind with no params or inputs that writes one small file.
pub(crate) struct Writes;

impl Stage for Writes {
    fn kind(&self) -> &'static str {
        "writes"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        std::fs::write(ctx.out_dir.join("model.bin"), b"trained")?;
        Ok(())
    }
}

/// A `Writes` job named `name` under fingerprint `fp`: one whole stage, no inputs.
pub(crate) fn writes_job(name: &str, fp: &str) -> Job {
    Job {
        index: 0,
        fingerprint: fp.to_owned(),
        name: name.to_owned(),
        kind: Arc::new(Writes),
        params: spherepipe_stage::Params(Default::default()),
        inputs: spherepipe_stage::Inputs::default(),
        seed: 0,
        sink: Arc::new(Quiet),
        parts: 1,
        forced: false,
        facts: Default::default(),
    }
}
