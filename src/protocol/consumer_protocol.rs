//! The consumer protocol's payloads, which classic groups carry as opaque bytes: a member's
//! subscription (JoinGroup protocol metadata, `ConsumerProtocolSubscription`) and its
//! assignment (SyncGroup, `ConsumerProtocolAssignment`).
//!
//! Read here rather than with kafka-protocol's generated decoders, which reserve an array's
//! declared element count before checking the input could hold it: six bytes of member metadata
//! (`00 00 7f ff ff ff`) asked for 68 GB, and the metadata is stored in `__consumer_offsets`, so
//! it came back after every restart. These readers allocate in proportion to the input: every
//! array element consumes at least two input bytes, and elements are pushed as they are read.
//!
//! Versions above the newest known (3) read as 3, as Kafka's `ConsumerProtocol` does: newer
//! versions only append fields.

/// Newest payload version whose layout is known; newer versions are read as this one.
const NEWEST_VERSION: i16 = 3;

/// A bounds-checked big-endian reader over a payload.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, size_bytes: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < size_bytes {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(size_bytes);
        self.bytes = rest;
        Some(taken)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A nullable string: `Some(None)` for length -1, `None` if malformed or short.
    fn nullable_string(&mut self) -> Option<Option<String>> {
        let length = self.i16()?;
        if length == -1 {
            return Some(None);
        }
        let length = usize::try_from(length).ok()?;
        let text = std::str::from_utf8(self.take(length)?).ok()?;
        Some(Some(text.to_string()))
    }

    fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }

    /// Nullable bytes, skipped (their content is not needed).
    fn skip_nullable_bytes(&mut self) -> Option<()> {
        let length = self.i32()?;
        if length == -1 {
            return Some(());
        }
        self.take(usize::try_from(length).ok()?)?;
        Some(())
    }

    /// A non-nullable array. `read_element` must consume input (all elements here take at
    /// least two bytes), so a huge declared count ends at the input's end, not in memory.
    fn array<T>(&mut self, mut read_element: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let count = usize::try_from(self.i32()?).ok()?;
        let mut elements = Vec::new();
        for _ in 0..count {
            let before_bytes = self.bytes.len();
            elements.push(read_element(self)?);
            debug_assert!(
                self.bytes.len() < before_bytes,
                "array elements consume input"
            );
        }
        Some(elements)
    }

    fn topic_partitions(&mut self) -> Option<(String, Vec<i32>)> {
        let topic = self.string()?;
        let partitions = self.array(Reader::i32)?;
        Some((topic, partitions))
    }
}

/// Splits off the payload's version (clamped to the newest known) and a reader of the rest.
fn versioned(payload: &[u8]) -> Option<(i16, Reader<'_>)> {
    let mut reader = Reader { bytes: payload };
    let version = reader.i16()?;
    if version < 0 {
        return None;
    }
    Some((version.min(NEWEST_VERSION), reader))
}

/// The topics of a member's subscription; `None` if the payload is not a well-formed
/// `ConsumerProtocolSubscription` of versions 0..=3 (fields after the last known one are
/// ignored).
pub fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let (version, mut reader) = versioned(metadata)?;
    let topics = reader.array(Reader::string)?;
    reader.skip_nullable_bytes()?; // user data
    if version >= 1 {
        reader.array(Reader::topic_partitions)?; // owned partitions
    }
    if version >= 2 {
        reader.i32()?; // generation id
    }
    if version >= 3 {
        reader.nullable_string()?; // rack id
    }
    Some(topics)
}

/// The partitions of a member's assignment, per topic, in payload order; `None` if the payload
/// is not a well-formed `ConsumerProtocolAssignment`.
pub fn assignment_partitions(assignment: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    let (_version, mut reader) = versioned(assignment)?;
    let partitions = reader.array(Reader::topic_partitions)?;
    reader.skip_nullable_bytes()?; // user data
    Some(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedPartitions;
    use kafka_protocol::messages::{
        ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn with_version(version: i16, body: &impl Encodable) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&version.to_be_bytes());
        body.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    fn subscription() -> ConsumerProtocolSubscription {
        ConsumerProtocolSubscription::default()
            .with_topics(vec![
                StrBytes::from_static_str("orders"),
                StrBytes::from_static_str("payments"),
            ])
            .with_user_data(Some(bytes::Bytes::from_static(b"user")))
            .with_owned_partitions(vec![OwnedPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![0, 2])])
            .with_generation_id(7)
            .with_rack_id(Some(StrBytes::from_static_str("rack-a")))
    }

    #[test]
    fn subscriptions_of_every_version_read_as_kafka_protocol_writes_them() {
        for version in 0..=3 {
            let payload = with_version(version, &subscription());
            assert_eq!(
                subscription_topics(&payload),
                Some(vec!["orders".to_string(), "payments".to_string()]),
                "version {version}"
            );
            // One byte short of the last field is refused, whatever the version.
            assert_eq!(subscription_topics(&payload[..payload.len() - 1]), None);
        }
    }

    #[test]
    fn newer_versions_read_as_the_newest_known_with_trailing_fields_ignored() {
        let mut payload = with_version(3, &subscription());
        payload[..2].copy_from_slice(&9i16.to_be_bytes());
        payload.extend_from_slice(b"a field of version 9");
        assert_eq!(subscription_topics(&payload).map(|t| t.len()), Some(2));
        assert_eq!(subscription_topics(&[0xff, 0xff, 0, 0, 0, 0]), None);
    }

    #[test]
    fn assignments_read_as_kafka_protocol_writes_them() {
        let assignment = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(vec![
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_static_str("orders")))
                    .with_partitions(vec![1, 3]),
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_static_str("audit")))
                    .with_partitions(vec![]),
            ])
            .with_user_data(None);
        for version in 0..=3 {
            let payload = with_version(version, &assignment);
            assert_eq!(
                assignment_partitions(&payload),
                Some(vec![
                    ("orders".to_string(), vec![1, 3]),
                    ("audit".to_string(), vec![]),
                ])
            );
        }
    }

    #[test]
    fn declared_counts_past_the_input_are_refused_without_allocating_them() {
        // Topic counts of i32::MAX with nothing after them: kafka-protocol reserved
        // 2^31 x 32 bytes for these before reading an element.
        for payload in [
            &[0u8, 0, 0x7f, 0xff, 0xff, 0xff][..],
            &[0, 1, 0x7f, 0xff, 0xff, 0xff, 0, 1, b'a'][..],
        ] {
            assert_eq!(subscription_topics(payload), None);
            assert_eq!(assignment_partitions(payload), None);
        }
        // A valid topic list whose owned-partition count is huge.
        let mut payload = with_version(1, &ConsumerProtocolSubscription::default());
        let owned_count_at = payload.len() - 4;
        payload[owned_count_at..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(subscription_topics(&payload), None);
    }

    #[test]
    fn fuzzing_reproducers_are_refused() {
        let directory = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/consumer_protocol"
        );
        let mut replayed = 0;
        for entry in std::fs::read_dir(directory).unwrap() {
            let payload = std::fs::read(entry.unwrap().path()).unwrap();
            assert_eq!(subscription_topics(&payload), None);
            assert_eq!(assignment_partitions(&payload), None);
            replayed += 1;
        }
        assert!(replayed >= 2, "reproducers found in {directory}");
    }
}
