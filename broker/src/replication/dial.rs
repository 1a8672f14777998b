//! Connecting to a peer region's Kafka listener for the private replication API keys: plain TCP,
//! or mutual TLS with `--replication-tls` (this region's certificate presented, the peer's
//! checked against the regions' authority and the host in its `--peer`).

use std::io;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::broker::Broker;

/// The reading half of a connection to a peer.
pub type PeerReader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection to a peer.
pub type PeerWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Connects to `addr` (`HOST:PORT`), with TLS when links use it; the caller bounds the time.
pub async fn dial(broker: &Broker, addr: &str) -> io::Result<(PeerReader, PeerWriter)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let Some(connector) = broker.tls.as_ref().and_then(|tls| tls.link_connector()) else {
        let (reader, writer) = stream.into_split();
        return Ok((Box::new(reader), Box::new(writer)));
    };
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("peer host {host:?}: {e}"),
        )
    })?;
    let stream = connector.connect(name, stream).await?;
    let (reader, writer) = tokio::io::split(stream);
    Ok((Box::new(reader), Box::new(writer)))
}
