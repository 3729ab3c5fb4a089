//! One large file through the shared store and back: `push` (multipart upload, re-hashed on
//! the way) and `fetch` (streamed download, re-hashed), with the process's peak resident set.
//! Not a test: run it against the S3 server the figures are for, one right after the other
//! with its peer, `benches/transfer_boto3.py`, on the same server.
//!
//! ```sh
//! STORE=s3://bench/transfer GIB=6 AWS_ENDPOINT_URL=http://127.0.0.1:PORT \
//!   AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x cargo bench -p spherepipe-store --bench transfer
//! ```

use spherepipe_store::{IndexEntry, Mirror, ObjectRemote, Store};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// Peak resident set of this process so far, in MB.
fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

fn main() {
    let Ok(url) = std::env::var("STORE") else {
        eprintln!("set STORE=s3://bucket/prefix (and AWS_ENDPOINT_URL, credentials) to run this bench");
        return;
    };
    let gib: f64 = std::env::var("GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(6.0);
    let bytes = (gib * (1u64 << 30) as f64) as u64;
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).expect("tempdir");
    let a = Store::open(dir.path().join("a")).expect("store a");
    let staging = a.new_staging_dir("bench").expect("staging");
    write_file(&staging.join("features.parquet"), bytes);
    let m = a.commit(&staging).expect("commit");
    let fingerprint = blake3::hash(format!("transfer bench {bytes} {}", std::process::id()).as_bytes())
        .to_hex()
        .to_string();
    let entry = IndexEntry {
        fingerprint: fingerprint.clone(),
        artifact: m.hash.clone(),
        provenance: serde_json::Value::Null,
    };
    a.record(&entry).expect("record");
    println!(
        "file: {:.2} GiB; peak RSS after writing and hashing it: {:.0} MB",
        gib,
        peak_rss_mb()
    );
    let mut remote = ObjectRemote::open(&url).expect("open the store");
    if let Some(mb) = std::env::var("PART_MB").ok().and_then(|v| v.parse::<usize>().ok()) {
        remote = remote.with_part_size(mb << 20);
    }
    let mirror = Mirror::new(Arc::new(remote));

    let t = Instant::now();
    mirror.push(&a, &entry).expect("push");
    let up = t.elapsed().as_secs_f64();
    println!(
        "push  {:.1} s, {:.0} MB/s, peak RSS {:.0} MB",
        up,
        bytes as f64 / up / 1e6,
        peak_rss_mb()
    );
    std::fs::remove_dir_all(a.root()).expect("remove the first cache");

    let b = Store::open(dir.path().join("b")).expect("store b");
    let t = Instant::now();
    mirror.fetch(&b, &fingerprint).expect("fetch").expect("the artifact is there");
    let down = t.elapsed().as_secs_f64();
    println!(
        "fetch {:.1} s, {:.0} MB/s, peak RSS {:.0} MB",
        down,
        bytes as f64 / down / 1e6,
        peak_rss_mb()
    );
}

/// `n` bytes that do not compress (and differ from run to run, so that nothing is in the
/// store already), written 16 MiB at a time.
fn write_file(path: &std::path::Path, n: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ nanos | 1;
    let mut buf = vec![0u8; 16 << 20];
    let mut left = n;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let w = state.to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        let k = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..k]).expect("write");
        left -= k as u64;
    }
    f.flush().expect("flush");
}
