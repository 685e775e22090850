//! SMTP delivery over lettre's `AsyncSmtpConnection`, with a small pool of our own.
//!
//! Why not lettre's pooled `AsyncSmtpTransport`: its errors carry the reply code but not
//! the stage of the dialogue, and SPEC §8 needs both (550 at RCPT means "this address does
//! not exist, suppress it"; 550 after DATA means "this content was refused"). Driving
//! MAIL/RCPT/DATA ourselves over the connection gives exact stage knowledge, at the price
//! of a few dozen lines of pooling.

use std::fmt;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::Error as SmtpError;
use lettre::Message;
use tokio::sync::Semaphore;

use super::{mask_addresses, socket, MailerError, SendError, Tls};

/// Servers commonly drop idle clients after 60 s to 5 min; past this we reconnect rather
/// than find out by a failed NOOP.
const MAX_IDLE: Duration = Duration::from_secs(50);
/// A polite QUIT on a connection we are dropping must not hold anything up.
const QUIT_GRACE: Duration = Duration::from_secs(5);

pub(super) struct SmtpParams {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub username: String,
    pub password: String,
    pub pool_size: u32,
}

pub(super) struct SmtpPool {
    host: String,
    port: u16,
    tls: Tls,
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    pool_size: usize,
    connect_timeout: Duration,
    /// For `tls = "tls"`: the handshake is ours, since the socket is (see socket.rs).
    implicit_tls: Option<tokio_rustls::TlsConnector>,
    idle: Mutex<Vec<Idle>>,
    /// Bounds connections open at once to pool_size even if the caller oversubscribes.
    slots: Semaphore,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// Where in the SMTP dialogue a failure happened: the same code means different things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Connect,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    EndOfData,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect/greeting/EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "end of DATA",
        })
    }
}

impl SmtpPool {
    pub(super) fn new(p: SmtpParams, send_timeout: Duration) -> Result<Self, MailerError> {
        let host = p.host.trim().to_string();
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(MailerError::new(
                "email.smtp.host",
                format!("{:?} is not a host name or IP address", p.host),
            ));
        }
        if p.port == 0 {
            return Err(MailerError::new("email.smtp.port", "must be 1-65535"));
        }
        if p.pool_size == 0 {
            return Err(MailerError::new(
                "email.smtp.pool_size",
                "must be at least 1",
            ));
        }
        let tls_parameters = match p.tls {
            Tls::None | Tls::Implicit => None,
            Tls::StartTls => Some(TlsParameters::new(host.clone()).map_err(|e| {
                MailerError::new("email.smtp.host", format!("cannot set up TLS for it: {e}"))
            })?),
        };
        let implicit_tls = match p.tls {
            Tls::Implicit => Some(socket::implicit_tls_connector().map_err(|e| {
                MailerError::new("email.smtp.tls", format!("cannot set up TLS: {e}"))
            })?),
            _ => None,
        };
        let credentials = if p.username.is_empty() {
            None
        } else {
            if matches!(p.tls, Tls::None) {
                tracing::warn!(
                    host = %host,
                    "email.smtp.tls = \"none\" with a username: the password crosses the network in clear text"
                );
            }
            Some(Credentials::new(p.username, p.password))
        };
        Ok(SmtpPool {
            host,
            port: p.port,
            tls: p.tls,
            tls_parameters,
            credentials,
            hello: ClientId::default(),
            pool_size: p.pool_size as usize,
            connect_timeout: send_timeout,
            implicit_tls,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(p.pool_size as usize),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("{}:{} ({:?})", self.host, self.port, self.tls)
    }

    /// Sends one message. `deadline` is the end of the caller's `send_timeout`: opening
    /// a connection (TCP, greeting, EHLO, TLS, AUTH) is bounded by the same instant so that a
    /// server that never greets is reported as the transport's trouble, not the message's.
    pub(super) async fn send(
        &self,
        message: &Message,
        deadline: tokio::time::Instant,
    ) -> Result<(), SendError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SendError::Transient {
                reason: "mailer is shutting down".into(),
            })?;
        let body = message.formatted();
        let (mut conn, reused) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (self.connect(deadline).await?, false),
        };
        let mut result = transact(&mut conn, message.envelope(), &body).await;
        if let Err(Failed {
            connection_was_gone: true,
            ..
        }) = &result
        {
            if reused {
                // The server closed it while it sat idle; nothing was sent.
                discard(conn);
                conn = self.connect(deadline).await?;
                result = transact(&mut conn, message.envelope(), &body).await;
            }
        }
        match result {
            Ok(()) => {
                self.put_idle(conn);
                Ok(())
            }
            Err(failed) => {
                // Lettre's connection state after an error reply is not something to build on:
                // drop it and let the next send open a fresh one.
                discard(conn);
                Err(failed.error)
            }
        }
    }

    pub(super) async fn close(&self) {
        let idle: Vec<Idle> = std::mem::take(&mut *self.idle.lock().unwrap());
        for mut i in idle {
            let _ = tokio::time::timeout(QUIT_GRACE, i.conn.quit()).await;
        }
    }

    /// An idle connection young enough to reuse. No NOOP first (a round trip
    /// per message): a connection the server closed meanwhile fails at MAIL
    /// with nothing sent, and `send` then retries once on a fresh one.
    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let idle = self.idle.lock().unwrap().pop()?;
            if idle.since.elapsed() > MAX_IDLE {
                discard(idle.conn);
                continue;
            }
            tracing::trace!("reusing SMTP connection");
            return Some(idle.conn);
        }
    }

    fn put_idle(&self, conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.pool_size {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        } else {
            drop(idle);
            discard(conn);
        }
    }

    /// A new connection, ready for MAIL, opened before `deadline`. Every failure here
    /// comes before a mail transaction, so none is a single message's fault.
    async fn connect(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<AsyncSmtpConnection, SendError> {
        tokio::time::timeout_at(deadline, self.open())
            .await
            .unwrap_or_else(|_| {
                Err(SendError::TransportBroken {
                    reason: format!(
                        "{}: no greeting or no answer while opening the connection within send_timeout",
                        self.describe()
                    ),
                })
            })
    }

    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = socket::tcp(&self.host, self.port, self.connect_timeout).await?;
        let stream: Box<dyn AsyncTokioStream> = match &self.implicit_tls {
            Some(connector) => Box::new(
                socket::implicit_tls(connector, &self.host, tcp, self.connect_timeout).await?,
            ),
            None => Box::new(tcp),
        };
        // Reads the greeting and sends EHLO.
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| classify(Stage::Connect, &e))?;
        if let (Tls::StartTls, Some(params)) = (&self.tls, &self.tls_parameters) {
            if let Err(e) = conn.starttls(params.clone(), &self.hello).await {
                discard(conn);
                return Err(classify(Stage::StartTls, &e));
            }
        }
        if let Some(credentials) = &self.credentials {
            if let Err(e) = conn
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
            {
                discard(conn);
                return Err(classify(Stage::Auth, &e));
            }
        }
        tracing::debug!(server = %self.describe(), "SMTP connection opened");
        Ok(conn)
    }
}

/// One mail transaction on an open connection, each step mapped with its stage.
/// Why a transaction failed, and whether the connection was already gone
/// when it started (no reply at all to MAIL): then nothing was sent and the
/// same message may go at once on a fresh connection.
struct Failed {
    error: SendError,
    connection_was_gone: bool,
}

impl From<SendError> for Failed {
    fn from(error: SendError) -> Failed {
        Failed {
            error,
            connection_was_gone: false,
        }
    }
}

async fn transact(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    body: &[u8],
) -> Result<(), Failed> {
    let mut params = Vec::new();
    let non_ascii = envelope
        .from()
        .is_some_and(|a| !AsRef::<str>::as_ref(a).is_ascii())
        || envelope
            .to()
            .iter()
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(SendError::Invalid {
                reason: "address with non-ASCII characters, and the server lacks SMTPUTF8".into(),
            }
            .into());
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    // Lettre encodes parts as 7bit/quoted-printable/base64, so this is a safety net.
    if !body.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(SendError::Invalid {
                reason: "8-bit message and the server lacks 8BITMIME".into(),
            }
            .into());
        }
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), params))
        .await
        .map_err(|e| Failed {
            connection_was_gone: e.status().is_none() && is_connection_trouble(&e),
            error: classify(Stage::Mail, &e),
        })?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), vec![]))
            .await
            .map_err(|e| classify(Stage::Rcpt, &e))?;
    }
    conn.command(Data)
        .await
        .map_err(|e| classify(Stage::Data, &e))?;
    conn.message(body)
        .await
        .map_err(|e| classify(Stage::EndOfData, &e))?;
    Ok(())
}

/// Drops a connection after a polite QUIT, in the background so that a slow server never
/// turns an already known outcome into a timeout.
fn discard(mut conn: AsyncSmtpConnection) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                let _ = tokio::time::timeout(QUIT_GRACE, conn.abort()).await;
            });
        }
        Err(_) => drop(conn),
    }
}

/// SPEC §8, by reply code and stage.
pub(super) fn classify(stage: Stage, err: &SmtpError) -> SendError {
    let detail = mask_addresses(&reply_text(err));
    if let Some(code) = err.status() {
        let code: u16 = code.into();
        let reason = format!("{code} at {stage}: {detail}");
        return match (stage, code) {
            // Authentication required / too weak / failed / encryption required, wherever they come.
            (_, 530 | 534 | 535 | 538) => SendError::TransportBroken { reason },
            (_, 400..=499) => SendError::Transient { reason },
            // 5xx before any mail transaction: this server will not talk to us as configured.
            (Stage::Connect | Stage::StartTls | Stage::Auth, _) => {
                SendError::TransportBroken { reason }
            }
            (Stage::Rcpt, 550 | 551 | 553) => SendError::RecipientRejected {
                code,
                message: detail,
            },
            _ => SendError::MessageRejected {
                code,
                message: detail,
            },
        };
    }
    let reason = format!("{stage}: {}", mask_addresses(&err.to_string()));
    // Refused, reset or timing out before the greeting: the relay is down or
    // unreachable, which says nothing about this message (SPEC §8), so the
    // dispatcher pauses and probes instead of spending the notice's attempts.
    if stage == Stage::Connect {
        return SendError::TransportBroken { reason };
    }
    if is_connection_trouble(err) {
        return SendError::Transient { reason };
    }
    match stage {
        // TLS handshake or certificate failure, STARTTLS not offered, no usable AUTH
        // mechanism, unresolvable host: configuration-level, so pause rather than dead-letter.
        Stage::Connect | Stage::StartTls | Stage::Auth => SendError::TransportBroken { reason },
        _ => SendError::Transient { reason },
    }
}

/// The server's own words for a negative reply, else lettre's description.
fn reply_text(err: &SmtpError) -> String {
    match std::error::Error::source(err) {
        Some(source) => source.to_string(),
        None => err.to_string(),
    }
}

/// Refused, reset, closed or timed out: the network or the server's mood, not our setup.
fn is_connection_trouble(err: &SmtpError) -> bool {
    // "incomplete response" is how lettre reports the server closing the connection.
    if err.is_timeout() || err.is_response() || err.is_transport_shutdown() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | UnexpectedEof
                    | TimedOut
                    | AddrNotAvailable
                    | HostUnreachable
                    | NetworkUnreachable
                    | Interrupted
            ) {
                return true;
            }
        }
        source = e.source();
    }
    false
}
