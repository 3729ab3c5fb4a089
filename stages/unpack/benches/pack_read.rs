//! Reading an insightface pack (issue 25): every image record of `train.rec` in index order,
//! framed and its IRHeader parsed, then the JPEG decoded — the work of the Python peer
//! (`../shared/bench/recordio_python.py`: `struct` framing, OpenCV decode, one thread) — on
//! one thread and on all of them. Prints records/s and MB/s for framing alone and with decode.
//!
//!   cargo bench -p spherepipe-stage-unpack --bench pack_read [--features libjpeg-turbo] -- PACK_DIR
//!
//! `crates/cli/benches/pack_read.sh` makes a pack with `synth` and runs this and the peer one
//! right after the other.

use rayon::prelude::*;
use spherepipe_recordio::{IrHeader, Pack};
use std::time::Instant;

fn main() {
    let decoder = if cfg!(feature = "libjpeg-turbo") {
        "libjpeg-turbo"
    } else {
        "zune-jpeg"
    };
    println!("decoder: {decoder} (build with --features libjpeg-turbo for libjpeg-turbo)");
    let Some(dir) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench -p spherepipe-stage-unpack --bench pack_read -- PACK_DIR");
        std::process::exit(2);
    };
    let pack = Pack::open(std::path::Path::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
    let keys = pack.image_keys().unwrap_or_else(|e| panic!("{e}"));

    // Framing and headers only, one thread.
    let t = Instant::now();
    let mut reader = pack.reader().expect("reader");
    let mut images: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
    let mut bytes = 0usize;
    for &k in &keys {
        let rec = pack.read(&mut reader, k).expect("record");
        bytes += rec.len();
        let (_, img) = IrHeader::unpack(&rec).expect("header");
        images.push(img.to_vec());
    }
    let framing = t.elapsed().as_secs_f64();
    report("framing + IRHeader, 1 thread", keys.len(), bytes, framing);

    // Framing and JPEG decode, one thread (the peer's work).
    let t = Instant::now();
    let mut reader = pack.reader().expect("reader");
    let mut decoded = 0;
    for &k in &keys {
        let rec = pack.read(&mut reader, k).expect("record");
        let (_, img) = IrHeader::unpack(&rec).expect("header");
        decoded += usize::from(spherepipe_stage_unpack::decode_face(img).is_ok());
    }
    report("framing + decode, 1 thread", decoded, bytes, t.elapsed().as_secs_f64());

    // Framing on one thread, decode on all (as `unpack` does, less its PNG encode).
    let t = Instant::now();
    let ok = images
        .par_iter()
        .filter(|img| spherepipe_stage_unpack::decode_face(img).is_ok())
        .count();
    let all = t.elapsed().as_secs_f64() + framing;
    report(
        &format!("framing + decode, {} threads", rayon::current_num_threads()),
        ok,
        bytes,
        all,
    );
}

fn report(what: &str, n: usize, bytes: usize, secs: f64) {
    println!(
        "spherepipe {what}: {n} images in {secs:.2}s = {:.0} records/s, {:.0} MB/s",
        n as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}
