//! Kafka wire protocol: the table of APIs and versions Riptide serves, request header decoding and
//! response framing, and record batch validation ([`record_batch`]).
//!
//! Message bodies use the `kafka-protocol` crate's schemas; record batches stay `Bytes` slices of
//! the request frame, never copied or decompressed on the way in.

pub mod consumer_protocol;
pub mod record_batch;
pub mod records;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// One supported API and the inclusive range of versions served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SupportedApi {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn api(key: ApiKey, min_version: i16, max_version: i16) -> SupportedApi {
    SupportedApi {
        key,
        min_version,
        max_version,
    }
}

/// Every API Riptide answers. Produce starts at 3 and Fetch at 4: the first versions that carry
/// record batch v2, the only format stored. Keep README's table in step with this one.
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    api(ApiKey::Produce, 3, 11),
    api(ApiKey::Fetch, 4, 17),
    api(ApiKey::ListOffsets, 1, 9),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::DescribeQuorum, 0, 2),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    api(ApiKey::ConsumerGroupDescribe, 0, 1),
    api(ApiKey::WriteTxnMarkers, 1, 1),
    api(ApiKey::DescribeProducers, 0, 0),
    api(ApiKey::AddPartitionsToTxn, 0, 5),
    api(ApiKey::AddOffsetsToTxn, 0, 4),
    api(ApiKey::EndTxn, 0, 4),
    api(ApiKey::TxnOffsetCommit, 0, 4),
    api(ApiKey::DescribeTransactions, 0, 0),
    api(ApiKey::ListTransactions, 0, 1),
    // v0 handshakes are followed by raw SASL tokens; every client we serve uses v1 framing.
    // v0: the SASL tokens follow as raw frames (librdkafka before 2.1 needs v0 advertised).
    api(ApiKey::SaslHandshake, 0, 1),
    api(ApiKey::SaslAuthenticate, 0, 2),
    api(ApiKey::DescribeUserScramCredentials, 0, 0),
    api(ApiKey::AlterUserScramCredentials, 0, 0),
    // v0 is gone from Kafka 4 and from the codec; every client negotiates v1 or later.
    api(ApiKey::CreateAcls, 1, 3),
    api(ApiKey::DescribeAcls, 1, 3),
    api(ApiKey::DeleteAcls, 1, 3),
    api(ApiKey::DescribeClientQuotas, 0, 1),
    api(ApiKey::AlterClientQuotas, 0, 1),
];

pub fn supported_api(key: ApiKey) -> Option<&'static SupportedApi> {
    SUPPORTED_APIS.iter().find(|api| api.key == key)
}

/// The fixed-position start of every request header (all header versions agree on it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestPreamble {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestPreamble {
    pub fn read(frame: &[u8]) -> Option<RequestPreamble> {
        if frame.len() < 8 {
            return None;
        }
        Some(RequestPreamble {
            api_key: i16::from_be_bytes([frame[0], frame[1]]),
            api_version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        })
    }
}

/// Decodes the request header for a known key and version; the frame is left at the body.
pub fn decode_request_header(
    frame: &mut Bytes,
    key: ApiKey,
    version: i16,
) -> anyhow::Result<RequestHeader> {
    RequestHeader::decode(frame, key.request_header_version(version))
}

/// Frames a response: size prefix, header for `key`/`version`, then the body.
pub fn encode_response<M: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> anyhow::Result<BytesMut> {
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buffer, key.response_header_version(version))?;
    body.encode(&mut buffer, version)?;
    let size = i32::try_from(buffer.len() - 4)?;
    buffer[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_stays_inside_what_the_codec_supports() {
        for api in SUPPORTED_APIS {
            let codec = api.key.valid_versions();
            assert!(
                api.min_version >= codec.min && api.max_version <= codec.max,
                "{:?} {}..={} outside codec range {:?}",
                api.key,
                api.min_version,
                api.max_version,
                codec
            );
            assert!(api.min_version <= api.max_version);
        }
    }

    #[test]
    fn preamble_needs_eight_bytes() {
        assert_eq!(RequestPreamble::read(&[0; 7]), None);
        let preamble = RequestPreamble::read(&[0, 18, 0, 3, 0, 0, 0, 9]).unwrap();
        assert_eq!(
            preamble,
            RequestPreamble {
                api_key: 18,
                api_version: 3,
                correlation_id: 9
            }
        );
    }
}
