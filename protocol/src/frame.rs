//! Length-prefixed framing: every Kafka request and response is a big-endian `i32` length
//! followed by that many bytes. Checking is separate from parsing so that a partial frame is a
//! normal "read more" outcome and an oversized one is refused before any buffer grows for it.

/// Bytes of the length prefix in front of every frame.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// What the bytes buffered so far hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// Not yet a whole frame; `needed` is the total buffered size that would make one (once the
    /// prefix is known), so the reader can reserve exactly that.
    Incomplete {
        /// Total bytes (prefix included) the buffer must reach, if the prefix was readable.
        needed: Option<usize>,
    },
    /// A whole frame of `body_bytes` follows the prefix.
    Complete {
        /// Length of the frame body, prefix excluded.
        body_bytes: usize,
    },
}

/// A length prefix that can never be served; the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The prefix announces more than `socket.request.max.bytes`.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced body size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The prefix is negative.
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    /// The "length" is the start of an HTTP request (`GET `, `POST`, ...): a client speaking
    /// HTTP to the Kafka port.
    #[error("an HTTP request ({0:?}...) on the Kafka port; HTTP is served on the HTTP listener")]
    Http(&'static str),
}

/// HTTP method prefixes, as the four bytes a Kafka reader would take for a length.
const HTTP_STARTS: [&str; 9] = [
    "GET ", "POST", "PUT ", "HEAD", "DELE", "OPTI", "PATC", "CONN", "TRAC",
];

/// The HTTP method `prefix` starts, if it is one.
pub fn http_start(prefix: [u8; FRAME_PREFIX_BYTES]) -> Option<&'static str> {
    HTTP_STARTS
        .iter()
        .find(|start| start.as_bytes() == prefix)
        .copied()
}

/// Looks at the start of `buffered` and says whether a whole frame is there.
pub fn check_frame(buffered: &[u8], body_bytes_max: usize) -> Result<FrameCheck, FrameError> {
    let Some(prefix) = buffered.get(..FRAME_PREFIX_BYTES) else {
        return Ok(FrameCheck::Incomplete { needed: None });
    };
    let length = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let body_bytes = usize::try_from(length).map_err(|_| FrameError::NegativeLength(length))?;
    if body_bytes > body_bytes_max {
        if let Some(method) = http_start([prefix[0], prefix[1], prefix[2], prefix[3]]) {
            return Err(FrameError::Http(method));
        }
        return Err(FrameError::TooLarge {
            size: body_bytes,
            max: body_bytes_max,
        });
    }
    if buffered.len() - FRAME_PREFIX_BYTES < body_bytes {
        return Ok(FrameCheck::Incomplete {
            needed: Some(FRAME_PREFIX_BYTES + body_bytes),
        });
    }
    Ok(FrameCheck::Complete { body_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_prefix_needs_more() {
        assert_eq!(
            check_frame(&[0, 0], 100),
            Ok(FrameCheck::Incomplete { needed: None })
        );
    }

    #[test]
    fn partial_body_says_how_much_is_needed() {
        assert_eq!(
            check_frame(&[0, 0, 0, 5, 1, 2], 100),
            Ok(FrameCheck::Incomplete { needed: Some(9) })
        );
    }

    #[test]
    fn whole_frame_is_complete() {
        assert_eq!(
            check_frame(&[0, 0, 0, 2, 1, 2, 3], 100),
            Ok(FrameCheck::Complete { body_bytes: 2 })
        );
    }

    #[test]
    fn oversized_frame_is_refused_before_its_body_arrives() {
        assert_eq!(
            check_frame(&[0, 0, 1, 0], 255),
            Err(FrameError::TooLarge {
                size: 256,
                max: 255
            })
        );
    }

    #[test]
    fn negative_length_is_refused() {
        assert_eq!(
            check_frame(&[0xff, 0xff, 0xff, 0xff], 255),
            Err(FrameError::NegativeLength(-1))
        );
    }

    #[test]
    fn an_http_request_is_named_as_such() {
        assert_eq!(
            check_frame(b"GET /metrics HTTP/1.1\r\n", 104_857_600),
            Err(FrameError::Http("GET "))
        );
        assert_eq!(
            check_frame(b"POST /v1 HTTP/1.1\r\n", 104_857_600),
            Err(FrameError::Http("POST"))
        );
    }
}
