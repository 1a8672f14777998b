//! Fetch responses sent in pieces, with each partition's record bytes by reference: encoding a
//! Fetch response copies every record into the response buffer (`kafka-protocol` writes
//! `records` with `put_slice`), which cost a sixth of the broker's CPU when serving consumers
//! (`docs/benchmarks.md`, "Fetch without the copy"). Here large record sets are swapped for a
//! 16-byte marker, the small response is encoded, and the pieces around each marker are sent
//! with the records themselves in between and their length written again.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind};

use crate::frame::FRAME_PREFIX_BYTES;
use crate::response::{encode_response, EncodeError};

/// Record sets at least this large are sent by reference; smaller ones are copied, which is
/// cheaper than a separate write.
pub const SPLICED_RECORDS_MIN_BYTES: usize = 16 * 1024;

/// First Fetch version whose fields use the flexible (compact) encoding.
const FIRST_FLEXIBLE_VERSION: i16 = 12;

/// Unlikely bytes that start every marker; the last four are the record set's index.
const MARKER_PREFIX: [u8; 12] = [
    0xc4, 0x05, 0xe7, 0x1a, 0x5f, 0x93, 0x2b, 0xd0, 0x7e, 0x61, 0xa8, 0x3c,
];
const MARKER_BYTES: usize = 16;

fn marker(index: usize) -> [u8; MARKER_BYTES] {
    let mut bytes = [0u8; MARKER_BYTES];
    bytes[..12].copy_from_slice(&MARKER_PREFIX);
    bytes[12..].copy_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes());
    bytes
}

/// The answer to request `correlation_id` at `version` as pieces to write in order, length
/// prefix included: a Fetch response with its large record sets by reference, any other
/// response in one piece.
pub fn encode_response_pieces(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: ResponseKind,
) -> Result<Vec<Bytes>, EncodeError> {
    match body {
        ResponseKind::Fetch(fetch) if api_key == ApiKey::Fetch => {
            encode_fetch(correlation_id, version, fetch)
        }
        body => Ok(vec![encode_response(
            correlation_id,
            api_key,
            version,
            &body,
        )?]),
    }
}

fn encode_fetch(
    correlation_id: i32,
    version: i16,
    mut fetch: FetchResponse,
) -> Result<Vec<Bytes>, EncodeError> {
    // Where each swapped record set was (topic, partition), and the set.
    let mut taken: Vec<((usize, usize), Bytes)> = Vec::new();
    for (t, topic) in fetch.responses.iter_mut().enumerate() {
        for (p, partition) in topic.partitions.iter_mut().enumerate() {
            if let Some(records) = &partition.records {
                if records.len() >= SPLICED_RECORDS_MIN_BYTES {
                    let index = taken.len();
                    taken.push(((t, p), records.clone()));
                    partition.records = Some(Bytes::copy_from_slice(&marker(index)));
                }
            }
        }
    }
    let body = ResponseKind::Fetch(fetch);
    let encoded = encode_response(correlation_id, ApiKey::Fetch, version, &body)?;
    if taken.is_empty() {
        return Ok(vec![encoded]);
    }
    let sets: Vec<Bytes> = taken.iter().map(|(_, set)| set.clone()).collect();
    if let Some(pieces) = splice(&encoded, &sets, version >= FIRST_FLEXIBLE_VERSION) {
        return Ok(pieces);
    }
    // A marker's bytes also appeared elsewhere in the response (inside a small record set):
    // put the records back and copy them, as any response is encoded.
    let ResponseKind::Fetch(mut fetch) = body else {
        return Ok(vec![encoded]);
    };
    for ((t, p), set) in taken {
        if let Some(partition) = fetch
            .responses
            .get_mut(t)
            .and_then(|topic| topic.partitions.get_mut(p))
        {
            partition.records = Some(set);
        }
    }
    Ok(vec![encode_response(
        correlation_id,
        ApiKey::Fetch,
        version,
        &ResponseKind::Fetch(fetch),
    )?])
}

/// The pieces of `encoded` with the record sets put where their markers are, or `None` when a
/// marker is not exactly once where it belongs.
fn splice(encoded: &Bytes, records: &[Bytes], flexible: bool) -> Option<Vec<Bytes>> {
    let marker_length: &[u8] = if flexible {
        &[MARKER_BYTES as u8 + 1]
    } else {
        &[0, 0, 0, MARKER_BYTES as u8]
    };
    let mut pieces = Vec::with_capacity(records.len() * 3 + 1);
    let mut cursor = 0;
    let mut total = encoded.len();
    for (index, set) in records.iter().enumerate() {
        let wanted = marker(index);
        let mut found = encoded
            .windows(MARKER_BYTES)
            .enumerate()
            .filter(|(_, window)| *window == wanted)
            .map(|(at, _)| at);
        let (Some(at), None) = (found.next(), found.next()) else {
            return None;
        };
        let length_at = at.checked_sub(marker_length.len())?;
        if length_at < cursor.max(FRAME_PREFIX_BYTES) || &encoded[length_at..at] != marker_length {
            return None;
        }
        let mut length = BytesMut::with_capacity(5);
        if flexible {
            put_unsigned_varint(&mut length, u32::try_from(set.len() + 1).ok()?);
        } else {
            length.put_i32(i32::try_from(set.len()).ok()?);
        }
        total = total - marker_length.len() - MARKER_BYTES + length.len() + set.len();
        pieces.push(encoded.slice(cursor..length_at));
        pieces.push(length.freeze());
        pieces.push(set.clone());
        cursor = at + MARKER_BYTES;
    }
    pieces.push(encoded.slice(cursor..));
    let body_bytes = i32::try_from(total - FRAME_PREFIX_BYTES).ok()?;
    let mut first = BytesMut::from(&pieces[0][..]);
    first[..FRAME_PREFIX_BYTES].copy_from_slice(&body_bytes.to_be_bytes());
    pieces[0] = first.freeze();
    Some(pieces)
}

fn put_unsigned_varint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn response(sets: &[(&str, usize)]) -> FetchResponse {
        let partitions: Vec<PartitionData> = sets
            .iter()
            .enumerate()
            .map(|(i, (_, len))| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(7)
                    .with_records(Some(Bytes::from(vec![i as u8 + 1; *len])))
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_string(sets[0].0.to_owned())))
            .with_partitions(partitions)])
    }

    fn joined(pieces: &[Bytes]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn the_pieces_are_byte_for_byte_the_copying_encoding_in_every_version() {
        for version in 4..=16 {
            for sets in [
                vec![("t", 100_000), ("t", 10), ("t", 20_000)],
                vec![("t", 5)],
                vec![("topic", 2_000_000)],
            ] {
                let fetch = response(&sets);
                let copied = encode_response(
                    9,
                    ApiKey::Fetch,
                    version,
                    &ResponseKind::Fetch(fetch.clone()),
                )
                .expect("encode");
                let pieces =
                    encode_response_pieces(9, ApiKey::Fetch, version, ResponseKind::Fetch(fetch))
                        .expect("pieces");
                assert_eq!(joined(&pieces), copied.to_vec(), "v{version} {sets:?}");
                let large = sets
                    .iter()
                    .filter(|(_, len)| *len >= SPLICED_RECORDS_MIN_BYTES)
                    .count();
                assert_eq!(pieces.len(), if large == 0 { 1 } else { 3 * large + 1 });
            }
        }
    }

    #[test]
    fn a_marker_found_elsewhere_falls_back_to_copying() {
        // A small (copied) record set holding marker 0's bytes.
        let mut fetch = response(&[("t", 100_000), ("t", 64)]);
        let clash: Vec<u8> = marker(0).iter().copied().chain([0u8; 48]).collect();
        fetch.responses[0].partitions[1].records = Some(Bytes::from(clash));
        let copied = encode_response(1, ApiKey::Fetch, 13, &ResponseKind::Fetch(fetch.clone()))
            .expect("encode");
        let pieces = encode_response_pieces(1, ApiKey::Fetch, 13, ResponseKind::Fetch(fetch))
            .expect("pieces");
        assert_eq!(pieces.len(), 1, "fell back to one copied piece");
        assert_eq!(joined(&pieces), copied.to_vec());
    }
}
