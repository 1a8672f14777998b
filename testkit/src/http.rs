//! A minimal HTTP client for the broker's `/readyz`, `/metrics` and `/v1/...` endpoints, small
//! enough that a harness failure is never an HTTP library's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// Minimal HTTP/1.0 GET that waits up to 5 s for the answer; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http_get_within(addr, path, Duration::from_secs(5))
}

/// [`http_get`] that waits up to `patience` for the whole answer (a broker under attack may be
/// slow to answer, and must still answer).
pub fn http_get_within(addr: SocketAddr, path: &str, patience: Duration) -> Result<(u16, String)> {
    http_get_with(addr, path, &[], patience).map(|answer| (answer.status, answer.body))
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (empty when only the head was read).
    pub body: String,
}

impl HttpAnswer {
    /// Every value of the header `name` (lowercase).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// HTTP/1.0 GET with extra request `headers`, waiting up to `patience` for the whole answer.
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    patience: Duration,
) -> Result<HttpAnswer> {
    get(addr, path, headers, patience, true)
}

/// [`http_get_with`] that reads only the status line and headers, for answers that stream
/// without end (a table's change feed).
pub fn http_head_of(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    patience: Duration,
) -> Result<HttpAnswer> {
    get(addr, path, headers, patience, false)
}

fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    patience: Duration,
    whole: bool,
) -> Result<HttpAnswer> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(patience))?;
    s.set_write_timeout(Some(patience))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    if whole {
        s.read_to_end(&mut buf)
            .with_context(|| format!("no complete answer to GET {path} within {patience:?}"))?;
    } else {
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let read = s.read(&mut byte).with_context(|| {
                format!("no head of an answer to GET {path} within {patience:?}")
            })?;
            if read == 0 {
                break;
            }
            buf.push(byte[0]);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Ok(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}
