//! Turning a finished email into a MIME message and handing it to a transport.
//!
//! The mailer knows nothing of the store, the queue, config files or templates:
//! the dispatcher gives it settings once and then one finished [`OutgoingEmail`]
//! per send, and gets back a [`SendError`] whose variant tells it what to do
//! with the notice (retry, dead-letter, suppress, pause sending).

mod file;
pub mod relay_tags;
mod smtp;
mod socket;
pub mod test_send;

use crate::customers::mask_email;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use sha2::{Digest, Sha256};

/// How the SMTP connection is protected.
#[derive(Debug, Clone)]
pub enum Tls {
    /// Plain connection upgraded with STARTTLS; the upgrade is required, never optional,
    /// so a server that stops offering it cannot silently downgrade us to plain text.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
    /// No TLS at all: only for a relay on the same machine and for tests.
    None,
}

/// Where messages go.
#[derive(Clone)]
pub enum TransportSettings {
    /// Every message becomes an `.eml` file in `dir` (created when missing).
    File { dir: PathBuf },
    Smtp {
        host: String,
        port: u16,
        tls: Tls,
        username: String,
        /// "" together with an empty username means no AUTH.
        password: String,
        /// Most connections kept open for reuse, and most sends in flight at once.
        pool_size: u32,
    },
}

// Written by hand so that `{:?}` of the settings, which ends up in logs, never shows the password.
impl fmt::Debug for TransportSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportSettings::File { dir } => f.debug_struct("File").field("dir", dir).finish(),
            TransportSettings::Smtp {
                host,
                port,
                tls,
                username,
                password,
                pool_size,
            } => f
                .debug_struct("Smtp")
                .field("host", host)
                .field("port", port)
                .field("tls", tls)
                .field("username", username)
                .field(
                    "password",
                    &if password.is_empty() {
                        ""
                    } else {
                        "<redacted>"
                    },
                )
                .field("pool_size", pool_size)
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MailerSettings {
    /// "Example eSIM <noreply@example.com>"
    pub from: String,
    pub reply_to: Option<String>,
    pub transport: TransportSettings,
    /// Bounds a whole send (waiting for a connection slot, connecting, the SMTP dialogue):
    /// lettre's own timeout only covers the TCP connect.
    pub send_timeout: Duration,
}

/// One finished email: everything the templates produced for one notice.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    pub to_email: String,
    pub to_name: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Full header value "<...@domain>", from [`message_id_for`].
    pub message_id: String,
    /// The template it was rendered from: the file transport names files by it.
    pub template: String,
    pub list_unsubscribe: Option<ListUnsubscribe>,
    /// Images the HTML part shows by `cid:` (the install email's QR code);
    /// empty for every other email, which then keeps its plain two-part shape.
    pub inline_images: Vec<InlineImage>,
}

/// An image carried in the message and shown by the HTML part as
/// `<img src="cid:{content_id}">`: it shows even where remote images are blocked.
#[derive(Clone)]
pub struct InlineImage {
    /// Without the angle brackets: `esim-qr-…@esim-notify`.
    pub content_id: String,
    /// `image/png`.
    pub content_type: String,
    /// The name a client offers when the image is saved.
    pub filename: String,
    pub data: Vec<u8>,
}

impl InlineImage {
    pub fn png(content_id: &str, filename: &str, data: Vec<u8>) -> InlineImage {
        InlineImage {
            content_id: content_id.to_string(),
            content_type: "image/png".to_string(),
            filename: filename.to_string(),
            data,
        }
    }
}

impl InlineImage {
    /// The image as a `data:` URL, for showing an email in a browser (the
    /// preview page) where `cid:` means nothing: replace `cid:{content_id}`
    /// in the HTML by this.
    pub fn data_url(&self) -> String {
        use base64::Engine;
        format!(
            "data:{};base64,{}",
            self.content_type,
            base64::engine::general_purpose::STANDARD.encode(&self.data)
        )
    }
}

// By hand: the bytes would flood a log line.
impl fmt::Debug for InlineImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InlineImage")
            .field("content_id", &self.content_id)
            .field("content_type", &self.content_type)
            .field("filename", &self.filename)
            .field("bytes", &self.data.len())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ListUnsubscribe {
    /// An `https://`/`http://` URL or a `mailto:` URI.
    pub target: String,
    /// Adds `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058); needs an HTTP(S) target.
    pub one_click: bool,
}

/// Derived from the notice's full identity so a retry carries the same Message-ID (receivers
/// can then drop the duplicate that an at-least-once crash may cause) and a re-armed notice
/// (new epoch) a new one: "<hex(sha256(identity))[..32]@domain-of-from>".
pub fn message_id_for(identity: &str, from: &str) -> String {
    let digest = hex::encode(Sha256::digest(identity.as_bytes()));
    format!("<{}@{}>", &digest[..32], domain_of(from))
}

/// The domain of a `From` value, for Message-IDs: the parsed mailbox when it parses, else a
/// best effort on the raw text, so a Message-ID can always be made.
fn domain_of(from: &str) -> String {
    if let Ok(mb) = from.parse::<Mailbox>() {
        return mb.email.domain().to_string();
    }
    let domain: String = from
        .rsplit('@')
        .next()
        .unwrap_or("")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    if from.contains('@') && !domain.is_empty() {
        domain
    } else {
        "localhost".to_string()
    }
}

/// Masks every address-looking word of a free text, such as a server reply
/// ("550 5.1.1 <ana@example.com>: user unknown"), before it is stored or logged.
pub fn mask_addresses(text: &str) -> String {
    let is_sep = |c: char| c.is_whitespace() || "<>\"'(),;:[]".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') && !word.starts_with('@') {
            out.push_str(&mask_email(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_sep(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A setting the mailer cannot work with; `setting` is the config key to fix.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct MailerError {
    pub setting: &'static str,
    pub reason: String,
}

impl MailerError {
    fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        MailerError {
            setting,
            reason: reason.into(),
        }
    }
}

/// Why a send failed, classified as SPEC §8 wants: the variant decides the notice's fate.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// 550/551/553 at RCPT: dead letter; the caller suppresses the address ("user unknown").
    #[error("recipient rejected ({code}): {message}")]
    RecipientRejected { code: u16, message: String },
    /// 552/554 (or any other 5xx) at MAIL, at DATA or after the message: dead letter.
    #[error("message rejected ({code}): {message}")]
    MessageRejected { code: u16, message: String },
    /// 421, 4xx, connection lost or timing out after the greeting: retry with backoff.
    #[error("temporary failure: {reason}")]
    Transient { reason: String },
    /// Connection refused, reset or timing out before the greeting, TLS failure, authentication
    /// refused, 5xx at greeting/EHLO: pause sending, never spend an attempt nor dead-letter.
    #[error("transport broken: {reason}")]
    TransportBroken { reason: String },
    /// The email itself cannot be built (bad address...): dead letter.
    #[error("invalid email: {reason}")]
    Invalid { reason: String },
}

impl SendError {
    /// The SMTP reply code, for the two permanent refusals that carry one.
    pub fn code(&self) -> Option<u16> {
        match self {
            SendError::RecipientRejected { code, .. } | SendError::MessageRejected { code, .. } => {
                Some(*code)
            }
            _ => None,
        }
    }

    /// Stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::RecipientRejected { .. } => "recipient_rejected",
            SendError::MessageRejected { .. } => "message_rejected",
            SendError::Transient { .. } => "transient",
            SendError::TransportBroken { .. } => "transport_broken",
            SendError::Invalid { .. } => "invalid",
        }
    }
}

/// Cheap to clone: clones share the SMTP connection pool.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    send_timeout: Duration,
    transport: Transport,
}

enum Transport {
    File {
        dir: PathBuf,
    },
    /// Boxed: the pool is large and the file transport is a path.
    Smtp(Box<smtp::SmtpPool>),
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match &self.inner.transport {
            Transport::File { dir } => format!("file:{}", dir.display()),
            Transport::Smtp(pool) => format!("smtp:{}", pool.describe()),
        };
        f.debug_struct("Mailer")
            .field("transport", &transport)
            .finish()
    }
}

impl Mailer {
    /// Checks every setting up front so that a typo is reported at start, naming its key,
    /// rather than as a failed send hours later.
    pub fn new(settings: MailerSettings) -> Result<Mailer, MailerError> {
        let from: Mailbox = settings
            .from
            .trim()
            .parse()
            .map_err(|e| MailerError::new("email.from", format!("not an address: {e}")))?;
        let reply_to =
            match settings.reply_to.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(r) => Some(r.parse::<Mailbox>().map_err(|e| {
                    MailerError::new("email.reply_to", format!("not an address: {e}"))
                })?),
            };
        if settings.send_timeout.is_zero() {
            return Err(MailerError::new(
                "email.send_timeout",
                "must be greater than zero",
            ));
        }
        let transport = match settings.transport {
            TransportSettings::File { dir } => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    MailerError::new(
                        "email.file_dir",
                        format!("cannot create {}: {e}", dir.display()),
                    )
                })?;
                Transport::File { dir }
            }
            TransportSettings::Smtp {
                host,
                port,
                tls,
                username,
                password,
                pool_size,
            } => Transport::Smtp(Box::new(smtp::SmtpPool::new(
                smtp::SmtpParams {
                    host,
                    port,
                    tls,
                    username,
                    password,
                    pool_size,
                },
                settings.send_timeout,
            )?)),
        };
        Ok(Mailer {
            inner: Arc::new(Inner {
                from,
                reply_to,
                send_timeout: settings.send_timeout,
                transport,
            }),
        })
    }

    /// Builds the MIME message exactly as it will be sent (also used by `render` and tests).
    pub fn build(&self, email: &OutgoingEmail) -> Result<Message, SendError> {
        let invalid = |reason: String| SendError::Invalid { reason };
        let address: Address = email.to_email.trim().parse().map_err(|e| {
            invalid(format!(
                "recipient {} is not an address: {e}",
                mask_email(&email.to_email)
            ))
        })?;
        let name = email
            .to_name
            .as_deref()
            .map(one_line)
            .filter(|n| !n.is_empty());
        let to = Mailbox::new(name, address);
        check_message_id(&email.message_id).map_err(invalid)?;

        let mut builder = Message::builder()
            .from(self.inner.from.clone())
            .to(to)
            // Templates usually end with a newline; a subject must be one line.
            .subject(one_line(&email.subject))
            .message_id(Some(email.message_id.clone()))
            .date_now();
        if let Some(reply_to) = &self.inner.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        if let Some(unsub) = &email.list_unsubscribe {
            check_unsubscribe(unsub).map_err(invalid)?;
            builder = builder.header(ListUnsubscribeHeader(unsub.target.clone()));
            if unsub.one_click {
                builder = builder.header(ListUnsubscribePost);
            }
        }
        builder
            .multipart(body(email).map_err(invalid)?)
            .map_err(|e| invalid(format!("cannot build message: {e}")))
    }

    /// Sends one email, bounded by `send_timeout` via `tokio::time::timeout`: lettre's own
    /// timeout only covers connect, so a server that stops answering would hang forever.
    pub async fn send(&self, email: &OutgoingEmail) -> Result<(), SendError> {
        self.send_tagged(email, &[]).await
    }

    /// [`Mailer::send`] with further headers: the relays' custom data
    /// ([`relay_tags`]), names and values checked by the caller to be
    /// printable ASCII.
    pub async fn send_tagged(
        &self,
        email: &OutgoingEmail,
        headers: &[(&'static str, String)],
    ) -> Result<(), SendError> {
        let mut message = self.build(email)?;
        for (name, value) in headers {
            message.headers_mut().insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.clone(),
            ));
        }
        let result = self.deliver_within_timeout(&message, email).await;
        match &result {
            Ok(()) => {
                tracing::debug!(to = %mask_email(&email.to_email), message_id = %email.message_id, "email handed over")
            }
            Err(e) => {
                tracing::debug!(to = %mask_email(&email.to_email), message_id = %email.message_id, kind = e.kind(), error = %e, "email not sent")
            }
        }
        result
    }

    /// Hands `message` to the transport within `send_timeout`. Opening a connection is
    /// bounded by the same deadline inside the SMTP pool, so a timeout before the greeting
    /// is reported as a broken transport and one later in the dialogue as passing trouble.
    pub(super) async fn deliver_within_timeout(
        &self,
        message: &Message,
        email: &OutgoingEmail,
    ) -> Result<(), SendError> {
        let limit = self.inner.send_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        match tokio::time::timeout_at(deadline, self.deliver(message, email, deadline)).await {
            Ok(result) => result,
            // Dropping the future drops the connection it held, so a hung one never returns to the pool.
            Err(_) => Err(SendError::Transient {
                reason: format!("no answer within send_timeout ({limit:?})"),
            }),
        }
    }

    /// Says goodbye (QUIT) to the idle SMTP connections, for a clean shutdown.
    pub async fn close(&self) {
        if let Transport::Smtp(pool) = &self.inner.transport {
            pool.close().await;
        }
    }

    async fn deliver(
        &self,
        message: &Message,
        email: &OutgoingEmail,
        deadline: tokio::time::Instant,
    ) -> Result<(), SendError> {
        match &self.inner.transport {
            Transport::File { dir } => {
                // The directory may have been removed since start (cleanup scripts).
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| SendError::Transient {
                        reason: format!("cannot create {}: {e}", dir.display()),
                    })?;
                let stem = file::eml_stem(
                    chrono::Utc::now(),
                    &email.template,
                    &email.to_email,
                    &email.message_id,
                );
                file::write_eml(dir, &stem, &message.formatted())
                    .await
                    .map(|_path| ())
                    .map_err(|e| SendError::Transient {
                        reason: format!("cannot write .eml into {}: {e}", dir.display()),
                    })
            }
            Transport::Smtp(pool) => pool.send(message, deadline).await,
        }
    }
}

/// The body of SPEC §7: `multipart/alternative` with a text and an HTML part.
/// With inline images the HTML part becomes `multipart/related` [HTML, images…],
/// so the top level stays an alternative of text and HTML, which clients
/// that show only text (and the acceptance suite) read as before.
fn body(email: &OutgoingEmail) -> Result<MultiPart, String> {
    if email.inline_images.is_empty() {
        return Ok(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ));
    }
    let mut related = MultiPart::related().singlepart(SinglePart::html(email.html.clone()));
    for image in &email.inline_images {
        check_content_id(&image.content_id)?;
        let content_type = ContentType::parse(&image.content_type)
            .map_err(|e| format!("inline image type {:?}: {e}", image.content_type))?;
        let filename = one_line(&image.filename);
        let attachment = if filename.is_empty() {
            Attachment::new_inline(image.content_id.clone())
        } else {
            Attachment::new_inline_with_name(image.content_id.clone(), filename)
        };
        related = related.singlepart(attachment.body(image.data.clone(), content_type));
    }
    Ok(MultiPart::alternative()
        .singlepart(SinglePart::plain(email.text.clone()))
        .multipart(related))
}

/// A Content-ID goes into a header between `<>` and into `cid:` URLs: printable
/// ASCII without spaces, brackets or quotes, with an `@` (RFC 2392).
fn check_content_id(id: &str) -> Result<(), String> {
    let ok = id.contains('@')
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>\"()[]\\,;:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "inline image content id {id:?} is not of the form left@right"
        ))
    }
}

/// Collapses line breaks (and the blanks around them) into one space.
fn one_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_message_id(id: &str) -> Result<(), String> {
    let ok = id.len() > 4
        && id.starts_with('<')
        && id.ends_with('>')
        && id[1..id.len() - 1].contains('@')
        && id[1..id.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    if ok {
        Ok(())
    } else {
        Err(format!("message_id {id:?} is not of the form <left@right>"))
    }
}

fn check_unsubscribe(unsub: &ListUnsubscribe) -> Result<(), String> {
    let t = &unsub.target;
    let lower = t.to_ascii_lowercase();
    let is_http = lower.starts_with("https://") || lower.starts_with("http://");
    if !(is_http || lower.starts_with("mailto:")) {
        return Err("list_unsubscribe target must be an http(s) URL or a mailto: URI".into());
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
    {
        return Err("list_unsubscribe target must be printable ASCII without spaces or <>".into());
    }
    if unsub.one_click && !is_http {
        return Err("one-click unsubscribe (RFC 8058) needs an http(s) target".into());
    }
    Ok(())
}

#[derive(Clone)]
struct ListUnsubscribeHeader(String);

impl Header for ListUnsubscribeHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribeHeader(
            s.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string(),
        ))
    }

    // Pre-encoded on purpose: the target was checked to be printable ASCII without spaces,
    // and an RFC 2047 encoded-word or a fold inside the <...> would break the URI.
    fn display(&self) -> HeaderValue {
        let value = format!("<{}>", self.0);
        HeaderValue::dangerous_new_pre_encoded(Self::name(), value.clone(), value)
    }
}

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}

/// The mailer as `[email]` describes it.
pub fn settings_from(config: &crate::config::Config) -> MailerSettings {
    let transport = match config.email.transport {
        crate::config::TransportKind::File => TransportSettings::File {
            dir: config.email.file_dir.clone(),
        },
        crate::config::TransportKind::Smtp => TransportSettings::Smtp {
            host: config.email.smtp.host.clone(),
            port: config.email.smtp.port,
            tls: match config.email.smtp.tls {
                crate::config::TlsMode::Starttls => Tls::StartTls,
                crate::config::TlsMode::Tls => Tls::Implicit,
                crate::config::TlsMode::None => Tls::None,
            },
            username: config.email.smtp.username.clone(),
            password: config.email.smtp.password.expose().to_string(),
            pool_size: config.email.smtp.pool_size,
        },
    };
    MailerSettings {
        from: config.email.from.clone(),
        reply_to: Some(config.email.reply_to.clone()).filter(|s| !s.is_empty()),
        transport,
        send_timeout: config.email.send_timeout.0,
    }
}

#[cfg(test)]
mod tests;
