//! The TCP (and implicit-TLS) stream under an SMTP connection, opened by us
//! rather than by lettre so that Nagle's algorithm can be switched off.
//!
//! lettre writes the end-of-data `.` line as its own small write. With
//! Nagle on, that segment waits for the ACK of the message body, which the
//! server delays (~40 ms) because it has nothing to say until it sees the
//! dot: every message stalls ~40 ms, capping a pool of 4 at ~90 emails/s
//! (measured in BENCHMARKS.md). `TCP_NODELAY` removes the stall.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::SendError;

/// Connects with Nagle off. Refused, unreachable or timing out before any
/// greeting is the transport's trouble, not the message's (SPEC §8): no
/// notice spends an attempt on a relay that is down, sending pauses instead.
pub(super) async fn tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, SendError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| SendError::TransportBroken {
            reason: format!("connecting to {host}:{port}: timed out after {timeout:?}"),
        })?
        .map_err(|e| SendError::TransportBroken {
            reason: format!("connecting to {host}:{port}: {e}"),
        })?;
    stream
        .set_nodelay(true)
        .map_err(|e| SendError::TransportBroken {
            reason: format!("setting TCP_NODELAY: {e}"),
        })?;
    Ok(stream)
}

/// TLS from the first byte (`tls = "tls"`, usually port 465), with the
/// webpki roots lettre itself uses.
pub(super) fn implicit_tls_connector() -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // An explicit provider: more than one is compiled in, so rustls cannot pick a default.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A TLS handshake that fails is the transport's fault (certificate, protocol),
/// not the message's: sending pauses rather than dead-lettering.
pub(super) async fn implicit_tls(
    connector: &TlsConnector,
    host: &str,
    stream: TcpStream,
    timeout: Duration,
) -> Result<TlsTcp, SendError> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
        SendError::TransportBroken {
            reason: format!("TLS: {host:?} is not a valid server name: {e}"),
        }
    })?;
    let tls = tokio::time::timeout(timeout, connector.connect(name, stream))
        .await
        .map_err(|_| SendError::TransportBroken {
            reason: format!("TLS handshake with {host}: timed out after {timeout:?}"),
        })?
        .map_err(|e| SendError::TransportBroken {
            reason: format!("TLS handshake with {host}: {e}"),
        })?;
    Ok(TlsTcp(tls))
}

/// An implicit-TLS stream in the shape lettre accepts for an existing transport.
pub(super) struct TlsTcp(TlsStream<TcpStream>);

impl fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsTcp")
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
