//! The metadata log as a node replays it (disk, or entries a leader replicates to followers and
//! the active controller ships to broker-only nodes): `MetadataImage::from_snapshot`,
//! `cluster::records::decode_batch` per entry and `apply_batch` onto the image, then the image
//! reads every node does (`digest`, `partitions_per_shard`, `serving_view`, `live_brokers`) and
//! the controller's pure decisions over it (`leaders_away_from`, `leaders_onto`, whose records
//! are applied in turn). Also the pre-metadata-log `LegacyImage` JSON.
//!
//! Input: NUL-separated parts (JSON holds no raw NUL). The first part is tried as a snapshot
//! (the base image when it decodes) and as a legacy image; every part is then one log entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riptide::cluster::metadata::{LegacyImage, MetadataImage};
use riptide::cluster::records::{apply_batch, decode_batch, leaders_away_from, leaders_onto};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    riptide_fuzz::run(|| metadata_records(data));
});

fn metadata_records(data: &[u8]) {
    let parts = riptide_fuzz::split_parts(data, b"\0", 8);
    let mut image =
        MetadataImage::from_snapshot(parts[0]).unwrap_or_else(|_| MetadataImage::empty());
    let _ = serde_json::from_slice::<LegacyImage>(parts[0]);
    for part in &parts {
        let Ok(records) = decode_batch(part) else {
            continue;
        };
        let Some(offset) = image.version.checked_add(1) else {
            return;
        };
        apply_batch(&mut image, offset, &records);
    }
    let _ = image.digest();
    let _ = image.partitions_per_shard(4);
    let _ = image.live_brokers().count();
    let node_ids: Vec<i32> = image.brokers.keys().copied().take(4).collect();
    let image = Arc::new(image);
    for &node_id in &node_ids {
        let _ = MetadataImage::serving_view(image.clone(), node_id);
    }
    let mut image = Arc::unwrap_or_clone(image);
    for node_id in node_ids {
        for records in [
            leaders_away_from(&image, node_id, |_| true),
            leaders_onto(&image, node_id, |_| false),
        ] {
            let Some(offset) = image.version.checked_add(1) else {
                return;
            };
            apply_batch(&mut image, offset, &records);
        }
    }
    let _ = image.to_snapshot();
}
