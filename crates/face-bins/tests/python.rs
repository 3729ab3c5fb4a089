//! Verification bins against Python's own `pickle`, both ways: bins Python 3 writes (protocols
//! 3 to 5, as insightface's scripts do with HIGHEST_PROTOCOL) read here, and what this writes
//! loads in Python (`pickle.load(f, encoding='bytes')`, as insightface's `load_bin` does).
//! Skipped, saying so, where no python3 runs (CI has one).

use spherepipe_face_bins::{read_bin, write_bin, VerificationBin};
use std::process::Command;

fn python(script: &str, args: &[&str]) -> Option<String> {
    match Command::new("python3").arg("-c").arg(script).args(args).output() {
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

const WRITE: &str = r#"
import pickle, sys
images = [bytes([i % 251]) * (i * 37 % 700) for i in range(20)]
same = [i % 3 == 0 for i in range(10)]
with open(sys.argv[1], "wb") as f:
    pickle.dump((images, same), f, protocol=int(sys.argv[2]))
"#;

#[test]
fn bins_python_writes_read_here() {
    let d = tempfile::tempdir().unwrap();
    for protocol in ["3", "4", "5"] {
        let path = d.path().join(format!("p{protocol}.bin"));
        if python(WRITE, &[path.to_str().unwrap(), protocol]).is_none() {
            return;
        }
        let bin = read_bin(&path).unwrap_or_else(|e| panic!("protocol {protocol}: {e}"));
        let want: Vec<Vec<u8>> = (0..20).map(|i: usize| vec![(i % 251) as u8; i * 37 % 700]).collect();
        assert_eq!(bin.images, want, "protocol {protocol}");
        assert_eq!(bin.same, (0..10).map(|i| i % 3 == 0).collect::<Vec<_>>());
    }
}

#[test]
fn a_bin_written_here_loads_in_python() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("out.bin");
    let bin = VerificationBin {
        images: vec![b"\xff\xd8\xff".to_vec(), b"png".to_vec(), vec![7; 1000], Vec::new()],
        same: vec![false, true],
    };
    write_bin(&path, &bin).unwrap();
    let read = r#"
import json, pickle, sys
images, same = pickle.load(open(sys.argv[1], "rb"), encoding="bytes")
print(json.dumps({"images": [i.hex() for i in images], "same": same}))
"#;
    let Some(out) = python(read, &[path.to_str().unwrap()]) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let images: Vec<String> = bin.images.iter().map(|i| hex(i)).collect();
    assert_eq!(v["images"], serde_json::json!(images));
    assert_eq!(v["same"], serde_json::json!([false, true]));
}
