//! Decoding one request frame: the fixed preamble (API key, version, correlation id) is read by
//! hand so that every refusal can still name the request; the header and body go through
//! `kafka-protocol` only once the key and version are known to be served.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use crate::versions;

/// Bytes of `api_key` (i16), `api_version` (i16) and `correlation_id` (i32).
const PREAMBLE_BYTES: usize = 8;

/// A decoded request, ready for a handler.
#[derive(Debug)]
pub struct Request {
    /// The API.
    pub api_key: ApiKey,
    /// The request's version, which the response must use too.
    pub version: i16,
    /// Header, with correlation and client ids.
    pub header: RequestHeader,
    /// The typed body.
    pub body: RequestKind,
}

/// Why a frame could not become a [`Request`]. Each variant carries what the broker needs to
/// answer (or log) before it closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Fewer bytes than the fixed preamble.
    #[error("request of {0} bytes is shorter than its header")]
    TooShort(usize),
    /// An API key that Kafka does not define or that we do not implement.
    #[error("API key {api_key} is not implemented")]
    UnknownApiKey {
        /// The key as sent.
        api_key: i16,
        /// For the log.
        correlation_id: i32,
    },
    /// An implemented API at a version we do not serve.
    #[error("{api_key:?} version {version} is not supported")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version as sent.
        version: i16,
        /// To answer ApiVersions with UNSUPPORTED_VERSION.
        correlation_id: i32,
    },
    /// Header or body do not decode at the announced version.
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version.
        version: i16,
        /// For the log.
        correlation_id: i32,
        /// What the decoder said.
        reason: String,
    },
}

/// Decodes a frame body (length prefix already removed).
pub fn decode_request(frame: Bytes) -> Result<Request, RequestError> {
    if frame.len() < PREAMBLE_BYTES {
        return Err(RequestError::TooShort(frame.len()));
    }
    let mut preamble = &frame[..PREAMBLE_BYTES];
    let raw_key = preamble.get_i16();
    let version = preamble.get_i16();
    let correlation_id = preamble.get_i32();
    let api_key = ApiKey::try_from(raw_key)
        .ok()
        .filter(|key| versions::supported(*key).is_some())
        .ok_or(RequestError::UnknownApiKey {
            api_key: raw_key,
            correlation_id,
        })?;
    if !versions::serves(api_key, version) {
        return Err(RequestError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |reason: String| RequestError::Malformed {
        api_key,
        version,
        correlation_id,
        reason,
    };
    let mut rest = frame;
    let header = RequestHeader::decode(&mut rest, api_key.request_header_version(version))
        .map_err(|e| malformed(e.to_string()))?;
    let body =
        RequestKind::decode(api_key, &mut rest, version).map_err(|e| malformed(e.to_string()))?;
    Ok(Request {
        api_key,
        version,
        header,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::MetadataRequest;
    use kafka_protocol::protocol::Encodable;

    fn frame(api_key: i16, version: i16, body: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(version)
            .with_correlation_id(7);
        let header_version = ApiKey::try_from(api_key)
            .map(|k| k.request_header_version(version))
            .unwrap_or(1);
        header
            .encode(&mut buf, header_version)
            .expect("header encodes");
        body(&mut buf);
        buf.freeze()
    }

    #[test]
    fn metadata_request_decodes() {
        let f = frame(ApiKey::Metadata as i16, 12, |buf| {
            MetadataRequest::default()
                .encode(buf, 12)
                .expect("body encodes")
        });
        let request = decode_request(f).expect("decodes");
        assert_eq!(request.api_key, ApiKey::Metadata);
        assert_eq!(request.header.correlation_id, 7);
        assert!(matches!(request.body, RequestKind::Metadata(_)));
    }

    #[test]
    fn unknown_key_is_named() {
        let f = frame(9999, 0, |_| {});
        assert!(matches!(
            decode_request(f),
            Err(RequestError::UnknownApiKey { api_key: 9999, .. })
        ));
    }

    #[test]
    fn unsupported_version_is_named() {
        let f = frame(ApiKey::ApiVersions as i16, 99, |_| {});
        assert!(matches!(
            decode_request(f),
            Err(RequestError::UnsupportedVersion {
                version: 99,
                correlation_id: 7,
                ..
            })
        ));
    }

    #[test]
    fn truncated_body_is_malformed_not_a_panic() {
        let f = frame(ApiKey::Metadata as i16, 12, |buf| {
            buf.put_u8(5);
        });
        assert!(matches!(
            decode_request(f),
            Err(RequestError::Malformed { .. })
        ));
    }

    #[test]
    fn short_frame_is_refused() {
        assert_eq!(
            decode_request(Bytes::from_static(&[0, 3, 0])).err(),
            Some(RequestError::TooShort(3))
        );
    }

    proptest::proptest! {
        #[test]
        fn random_bodies_never_panic(key in 0i16..70, version in 0i16..14, body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let f = frame(key, version, |buf| buf.put_slice(&body));
            let _ = decode_request(f);
        }
    }
}
