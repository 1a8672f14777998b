//! The client side of one request: encode a request frame, read and decode its response. Generic
//! over any byte stream so it stays free of sockets; the CLI and the tests bring the stream.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use crate::frame::FRAME_PREFIX_BYTES;

/// Largest response frame a client accepts.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why a request did not get a decoded response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading or writing the stream failed (including the peer closing it).
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The request could not be encoded at that version.
    #[error("cannot encode request: {0}")]
    Encode(String),
    /// The response did not decode.
    #[error("cannot decode response: {0}")]
    Decode(String),
    /// The response answers another request.
    #[error("response for correlation id {got}, expected {expected}")]
    CorrelationMismatch {
        /// Sent.
        expected: i32,
        /// Received.
        got: i32,
    },
    /// The response frame announces an impossible length.
    #[error("response frame of {0} bytes refused")]
    FrameLength(i64),
    /// The answer is HTTP: the address is an HTTP listener, not a Kafka one.
    #[error("the server answered in HTTP: this looks like an HTTP listener, not a Kafka one (point the client at the broker's Kafka port)")]
    HttpListener,
}

/// Encodes `request` as a frame (length prefix included).
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Result<Bytes, ClientError> {
    let api_key = ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::Encode(format!("unknown API key {}", R::KEY)))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .map_err(|e| ClientError::Encode(e.to_string()))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| ClientError::Encode(e.to_string()))?;
    let length = i32::try_from(buf.len() - FRAME_PREFIX_BYTES)
        .map_err(|_| ClientError::Encode("request too large".into()))?;
    buf[..FRAME_PREFIX_BYTES].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

/// Reads one length-prefixed frame body from `stream`.
pub fn read_frame(stream: &mut impl Read) -> Result<Bytes, ClientError> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    stream.read_exact(&mut prefix)?;
    if &prefix == b"HTTP" {
        return Err(ClientError::HttpListener);
    }
    let length = i32::from_be_bytes(prefix);
    let length = usize::try_from(length)
        .ok()
        .filter(|l| *l <= RESPONSE_BYTES_MAX)
        .ok_or(ClientError::FrameLength(i64::from(length)))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// Decodes a response frame body to `request`'s response type; returns its correlation id too.
pub fn decode_response<R: Request>(
    mut body: Bytes,
    version: i16,
) -> Result<(i32, R::Response), ClientError> {
    let api_key = ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::Decode(format!("unknown API key {}", R::KEY)))?;
    let header = ResponseHeader::decode(&mut body, api_key.response_header_version(version))
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    let response =
        R::Response::decode(&mut body, version).map_err(|e| ClientError::Decode(e.to_string()))?;
    Ok((header.correlation_id, response))
}

/// Sends `request` and waits for its response.
pub fn call<S: Read + Write, R: Request>(
    stream: &mut S,
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Result<R::Response, ClientError> {
    stream.write_all(&encode_request(
        request,
        version,
        correlation_id,
        client_id,
    )?)?;
    stream.flush()?;
    let (got, response) = decode_response::<R>(read_frame(stream)?, version)?;
    if got != correlation_id {
        return Err(ClientError::CorrelationMismatch {
            expected: correlation_id,
            got,
        });
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::decode_request;
    use kafka_protocol::messages::{MetadataRequest, RequestKind};

    #[test]
    fn encoded_request_decodes_on_the_broker_side() {
        let frame = encode_request(&MetadataRequest::default(), 12, 5, "test").expect("encodes");
        let request = decode_request(frame.slice(FRAME_PREFIX_BYTES..)).expect("decodes");
        assert_eq!(request.header.correlation_id, 5);
        assert!(matches!(request.body, RequestKind::Metadata(_)));
    }

    #[test]
    fn an_http_answer_is_named_as_such() {
        let mut stream: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        let error = read_frame(&mut stream).expect_err("not Kafka");
        assert!(matches!(error, ClientError::HttpListener));
        assert!(error.to_string().contains("HTTP listener"));
    }

    #[test]
    fn oversized_response_frame_is_refused() {
        let mut stream: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut stream),
            Err(ClientError::FrameLength(_))
        ));
    }
}
