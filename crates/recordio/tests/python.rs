//! spherepipe's RecordIO against an independent reader and writer written in Python from the
//! format's description (`recordio_reference.py`, `struct` only), in both directions. Skipped,
//! saying so, where no python3 runs (CI has one).

use spherepipe_recordio::{IrHeader, Pack, PackWriter};
use std::path::Path;
use std::process::Command;

fn python(args: &[&str]) -> Option<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recordio_reference.py");
    match Command::new("python3").arg(script).args(args).output() {
        Ok(o) => {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            Some(String::from_utf8_lossy(&o.stdout).into_owned())
        }
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "CI needs python3: {e}");
            eprintln!("skipped: no python3 ({e})");
            None
        }
    }
}

/// What the reference reader says of each record: (key, labels, the image's bytes in hex).
fn records(json: &str) -> Vec<(u64, Vec<f32>, String)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("the reference's JSON");
    v["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            let labels = r["labels"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap() as f32).collect();
            (r["key"].as_u64().unwrap(), labels, r["image"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_pack_written_by_python_reads_here_record_for_record() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    if python(&["write", dir]).is_none() {
        return;
    }
    let reference = records(&python(&["read", dir]).unwrap());
    let pack = Pack::open(d.path()).unwrap();
    assert_eq!((pack.property.classes, pack.property.height), (3, 112));
    assert_eq!(pack.image_keys().unwrap(), [1, 2, 3, 4]);
    let mut r = pack.reader().unwrap();
    assert_eq!(reference.len(), pack.index.len());
    for (key, labels, image_hex) in reference {
        let payload = pack.read(&mut r, key).unwrap();
        let (h, image) = IrHeader::unpack(&payload).unwrap();
        let ours = if h.labels.is_empty() { vec![h.label] } else { h.labels.clone() };
        assert_eq!((ours, hex(image)), (labels, image_hex), "record {key}");
    }
}

#[test]
fn a_pack_written_here_reads_in_python_record_for_record() {
    let d = tempfile::tempdir().unwrap();
    let magic = spherepipe_recordio::MAGIC.to_le_bytes();
    let mut tricky = b"1234".to_vec();
    tricky.extend_from_slice(&magic);
    let images = [(0u32, b"first".to_vec()), (1, tricky), (1, magic.repeat(2))];
    let mut w = PackWriter::new(d.path());
    for (c, img) in &images {
        w.push(*c, img.clone());
    }
    w.finish(112, 96).unwrap();
    let Some(out) = python(&["read", d.path().to_str().unwrap()]) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["property"], "2,112,96");
    let records = records(&out);
    // Record 0 (keys 1..4 are images, 4..6 identities), the images, the identities.
    assert_eq!(records[0], (0, vec![4.0, 6.0], hex(b"")));
    for (k, (c, img)) in images.iter().enumerate() {
        assert_eq!(records[k + 1], (k as u64 + 1, vec![*c as f32], hex(img)));
    }
    assert_eq!(records[4].1, [1.0, 2.0]);
    assert_eq!(records[5].1, [2.0, 4.0]);
}
