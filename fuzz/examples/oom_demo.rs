//! Decodes a `request` target input (a request frame) as the broker does, with the broker
//! binary's global allocator (mimalloc, as `src/main.rs` sets it) and no sanitizer: shows what
//! the broker process does with a frame whose array count is huge.
//!
//!     cargo +nightly run --release --example oom_demo -- FILE
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, MetadataRequest, RequestHeader};
use kafka_protocol::protocol::Decodable;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let path = std::env::args().nth(1).expect("FILE");
    let mut frame = Bytes::from(std::fs::read(path).unwrap());
    let key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).unwrap();
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    RequestHeader::decode(&mut frame, key.request_header_version(version)).unwrap();
    assert_eq!(key, ApiKey::Metadata, "this demo decodes Metadata requests");
    eprintln!(
        "decoding a {}-byte Metadata v{version} body with mimalloc",
        frame.len()
    );
    let outcome = MetadataRequest::decode(&mut frame, version).map(|_| ());
    let peak = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("VmHWM") || line.starts_with("VmPeak"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "decoded without aborting: {:?}; {peak}",
        outcome.map_err(|e| e.to_string())
    );
}
