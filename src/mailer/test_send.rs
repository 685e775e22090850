//! Test emails: `esim-notify send-test` and the console's "send me this
//! one". A rendered sample goes at once through the configured transport,
//! marked so that nobody takes it for a real notice: "[TEST]" before the
//! subject and an `X-Esim-Notify-Test: yes` header (a filter can drop it).
//! It bypasses the queue, the limits and the suppression list on purpose:
//! it tests the templates and the transport, nothing else.

use chrono::Utc;
use lettre::message::header::{HeaderName, HeaderValue};

use super::{message_id_for, settings_from, Mailer, OutgoingEmail, SendError, Tls};
use super::{MailerError, TransportSettings};
use crate::config::Config;

/// The header that marks a test email.
pub const TEST_HEADER: &str = "X-Esim-Notify-Test";
/// What a test email's subject starts with.
pub const TEST_SUBJECT_PREFIX: &str = "[TEST] ";

/// The parts of a rendered email to send as a test.
pub struct TestEmail<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    pub html: &'a str,
    /// Images the HTML part shows by `cid:` (the install email's QR code).
    pub inline_images: Vec<super::InlineImage>,
}

#[derive(Debug, thiserror::Error)]
pub enum TestSendError {
    /// The address typed in is not one: bad usage, nothing was tried.
    #[error("{0}")]
    BadAddress(String),
    /// The `[email]` settings do not make a mailer.
    #[error("{0}")]
    Settings(#[from] MailerError),
    /// The transport refused or failed; `via` says which one it was.
    #[error("sending to {to} via {via} failed ({}): {error}", error.kind())]
    Failed {
        to: String,
        via: String,
        error: SendError,
    },
}

/// Checks the address, sends the email marked as a test through a mailer
/// built from `[email]` (its own connection, closed afterwards), and says
/// which transport took it ("the file transport (into mail-out)").
pub async fn send_test_email(
    config: &Config,
    email: TestEmail<'_>,
) -> Result<String, TestSendError> {
    let to = crate::customers::normalize_email(email.to)
        .map_err(|e| TestSendError::BadAddress(e.to_string()))?;
    let settings = settings_from(config);
    let via = describe(&settings.transport);
    let mailer = Mailer::new(settings)?;
    let outgoing = OutgoingEmail {
        to_email: to.clone(),
        to_name: None,
        subject: format!("{TEST_SUBJECT_PREFIX}{}", email.subject),
        text: email.text.to_string(),
        html: email.html.to_string(),
        message_id: message_id_for(
            &format!(
                "send-test/{}",
                Utc::now().timestamp_nanos_opt().unwrap_or(0)
            ),
            &config.email.from,
        ),
        template: "send-test".to_string(),
        list_unsubscribe: None,
        inline_images: email.inline_images,
    };
    let result = mailer.send_marked_test(&outgoing).await;
    mailer.close().await;
    match result {
        Ok(()) => Ok(via),
        Err(error) => Err(TestSendError::Failed { to, via, error }),
    }
}

impl Mailer {
    /// [`Mailer::send`] with the test header added, bounded by `send_timeout` as every send is.
    async fn send_marked_test(&self, email: &OutgoingEmail) -> Result<(), SendError> {
        let mut message = self.build(email)?;
        message.headers_mut().insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str(TEST_HEADER),
            "yes".to_string(),
        ));
        self.deliver_within_timeout(&message, email).await
    }
}

/// The transport in words: where the mail went, never the credentials.
pub fn describe(t: &TransportSettings) -> String {
    match t {
        TransportSettings::File { dir } => format!("the file transport (into {})", dir.display()),
        TransportSettings::Smtp {
            host, port, tls, ..
        } => {
            let tls = match tls {
                Tls::StartTls => "STARTTLS",
                Tls::Implicit => "implicit TLS",
                Tls::None => "no TLS",
            };
            format!("SMTP at {host}:{port} ({tls})")
        }
    }
}
