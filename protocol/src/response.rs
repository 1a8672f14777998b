//! Encoding a response: length prefix, response header (v0 or flexible v1 depending on the API
//! and version) and body, in one buffer that the connection writes as is.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

use crate::frame::FRAME_PREFIX_BYTES;
use crate::versions::SUPPORTED_APIS;

/// A response that the codec refused to encode: a broker bug (a field set that the version
/// lacks), reported instead of sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api_key:?} v{version} response: {reason}")]
pub struct EncodeError {
    /// The API.
    pub api_key: ApiKey,
    /// The version.
    pub version: i16,
    /// What the encoder said.
    pub reason: String,
}

/// Encodes `body` as the answer to request `correlation_id` of `api_key` at `version`,
/// length prefix included.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let fail = |reason: String| EncodeError {
        api_key,
        version,
        reason,
    };
    let mut buf = BytesMut::with_capacity(
        FRAME_PREFIX_BYTES + HEADER_BYTES_MAX + body_size_hint(body, version),
    );
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(|e| fail(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| fail(e.to_string()))?;
    let body_bytes = i32::try_from(buf.len() - FRAME_PREFIX_BYTES)
        .map_err(|_| fail(format!("{} bytes do not fit a frame", buf.len())))?;
    buf[..FRAME_PREFIX_BYTES].copy_from_slice(&body_bytes.to_be_bytes());
    Ok(buf.freeze())
}

/// Room for the largest response header (correlation id and an empty tagged-field list).
const HEADER_BYTES_MAX: usize = 8;

/// Expected body size, so the buffer is allocated once: Fetch bodies carry megabytes of records,
/// and growing a buffer by doubling would copy them several times.
fn body_size_hint(body: &ResponseKind, version: i16) -> usize {
    const SMALL_BODY_BYTES: usize = 1024;
    match body {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(SMALL_BODY_BYTES),
        _ => SMALL_BODY_BYTES,
    }
}

/// The ApiVersions body listing every implemented API with `error_code`; also the v0 answer to
/// an ApiVersions request at a version we do not know, as Kafka gives.
pub fn api_versions_body(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min)
                .with_max_version(api.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn api_versions_round_trips_at_every_version() {
        for version in 0..=3 {
            let body = ResponseKind::ApiVersions(api_versions_body(0));
            let bytes = encode_response(42, ApiKey::ApiVersions, version, &body).expect("encodes");
            let mut rest = bytes.slice(FRAME_PREFIX_BYTES..);
            let header = ResponseHeader::decode(&mut rest, 0).expect("header");
            assert_eq!(header.correlation_id, 42);
            let decoded = ApiVersionsResponse::decode(&mut rest, version).expect("body");
            assert_eq!(decoded.api_keys.len(), SUPPORTED_APIS.len());
            assert!(rest.is_empty(), "trailing bytes at v{version}");
        }
    }

    #[test]
    fn api_versions_v3_leaves_default_tagged_fields_out() {
        let body = ResponseKind::ApiVersions(api_versions_body(0));
        let bytes = encode_response(1, ApiKey::ApiVersions, 3, &body).expect("encodes");
        // The body ends with throttle_time_ms (4 bytes) and an empty tagged-field count (1 byte).
        assert_eq!(&bytes[bytes.len() - 5..], &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn length_prefix_counts_the_rest() {
        let body = ResponseKind::ApiVersions(api_versions_body(35));
        let bytes = encode_response(9, ApiKey::ApiVersions, 0, &body).expect("encodes");
        let announced = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        assert_eq!(announced as usize, bytes.len() - FRAME_PREFIX_BYTES);
    }
}
