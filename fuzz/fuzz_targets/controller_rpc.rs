//! The controller listener's wire format (`cluster::rpc`): `read_frame` over the byte stream,
//! then each frame's payload by kind: raft-rs `Message` protobuf (`KIND_RAFT`, between voters),
//! `ControllerRequest` JSON (`KIND_REQUEST`, brokers to the active controller) and
//! `ControllerResponse` JSON (`KIND_RESPONSE`, the answer a broker reads, with the metadata log
//! entries and snapshot of a `Metadata` answer decoded as a broker-only node does). The server loop that
//! does this is private (`cluster::server`); the decoders it calls are these public ones.
//!
//! Input: the bytes a peer sends on one connection (up to 8 frames are read).
#![no_main]

use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;
use protobuf::Message as _;
use riptide::cluster::metadata::MetadataImage;
use riptide::cluster::quorum::RaftMessage;
use riptide::cluster::records::decode_batch;
use riptide::cluster::rpc::{
    read_frame, ControllerRequest, ControllerResponse, KIND_RAFT, KIND_REQUEST, KIND_RESPONSE,
};

fuzz_target!(|data: &[u8]| {
    riptide_fuzz::run(|| controller_rpc(data));
});

fn controller_rpc(data: &[u8]) {
    let mut stream = Cursor::new(data);
    for _ in 0..8 {
        let Ok(Some((kind, payload))) = futures::executor::block_on(read_frame(&mut stream)) else {
            return;
        };
        match kind {
            KIND_RAFT => drop(RaftMessage::parse_from_bytes(&payload)),
            KIND_REQUEST => drop(serde_json::from_slice::<ControllerRequest>(&payload)),
            KIND_RESPONSE => {
                // A broker-only node applies the metadata a FetchMetadata answer carries.
                if let Ok(ControllerResponse::Metadata(chunk)) =
                    serde_json::from_slice::<ControllerResponse>(&payload)
                {
                    if let Some((_, snapshot)) = &chunk.snapshot {
                        let _ = MetadataImage::from_snapshot(snapshot);
                    }
                    for (_, entry) in &chunk.entries {
                        let _ = decode_batch(entry);
                    }
                }
            }
            _ => {}
        }
    }
}
