//! An S3 endpoint nobody listens on: the first operation fails within seconds, naming the URL
//! and the fix. (Its own test binary, because it sets `AWS_ENDPOINT_URL` for the process.)

use spherepipe_store::ObjectRemote;

#[test]
fn an_unreachable_s3_endpoint_is_reported_quickly_with_the_fix() {
    // Port 9 (discard) on loopback: nothing listens there on these machines.
    std::env::set_var("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    std::env::set_var("AWS_ACCESS_KEY_ID", "x");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "x");
    let start = std::time::Instant::now();
    let e = ObjectRemote::connect("s3://bucket/prefix").err().unwrap().to_string();
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
    assert!(e.starts_with("store s3://bucket/prefix: listing the store:"), "{e}");
    assert!(e.contains("AWS_ENDPOINT_URL") && e.contains("reachable"), "{e}");
}
