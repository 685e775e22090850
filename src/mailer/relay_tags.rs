//! The notice's id in each configured relay's custom-data header, so the
//! relay's bounce and complaint reports name the notice they are about:
//! only Mailgun (and SendGrid on some events) echo our Message-ID, SES only
//! with original headers on, Postmark never (`/feedback/…`, SPEC §4).
//!
//! - SendGrid (SMTP API): `X-SMTPAPI: {"unique_args":{"notice_id":"42"}}`,
//!   echoed at the top level of each event.
//! - Postmark: `X-PM-Metadata-notice_id: 42`, echoed in `Metadata`.
//! - Mailgun: `X-Mailgun-Variables: {"notice_id":"42"}`, echoed in
//!   `user-variables`.
//! - Amazon SES: `X-SES-MESSAGE-TAGS: notice_id=42`, echoed in `mail.tags`
//!   of configuration-set event publishing (`{"notice_id":["42"]}`).
//!
//! A relay removes its own header before delivery; another relay passes it
//! on unread, which tells the recipient nothing but a number.

use crate::config::Feedback;

/// The custom-data field that carries the notice's id, in every relay.
pub const NOTICE_ID: &str = "notice_id";

/// Which relays' headers go on each message: those `[feedback]` turns on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayTags {
    pub ses: bool,
    pub sendgrid: bool,
    pub postmark: bool,
    pub mailgun: bool,
}

impl RelayTags {
    pub fn from_config(feedback: &Feedback) -> RelayTags {
        RelayTags {
            ses: feedback.ses_on(),
            sendgrid: feedback.sendgrid_on(),
            postmark: feedback.postmark_on(),
            mailgun: feedback.mailgun_on(),
        }
    }

    /// The headers (name, value) for notice `notice`.
    pub fn headers(&self, notice: u64) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if self.sendgrid {
            h.push((
                "X-SMTPAPI",
                serde_json::json!({ "unique_args": { NOTICE_ID: notice.to_string() } }).to_string(),
            ));
        }
        if self.postmark {
            h.push(("X-PM-Metadata-notice_id", notice.to_string()));
        }
        if self.mailgun {
            h.push((
                "X-Mailgun-Variables",
                serde_json::json!({ NOTICE_ID: notice.to_string() }).to_string(),
            ));
        }
        if self.ses {
            h.push(("X-SES-MESSAGE-TAGS", format!("{NOTICE_ID}={notice}")));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_header_per_configured_relay() {
        assert!(RelayTags::default().headers(7).is_empty());
        let all = RelayTags {
            ses: true,
            sendgrid: true,
            postmark: true,
            mailgun: true,
        };
        let h = all.headers(42);
        assert_eq!(
            h,
            vec![
                (
                    "X-SMTPAPI",
                    r#"{"unique_args":{"notice_id":"42"}}"#.to_string()
                ),
                ("X-PM-Metadata-notice_id", "42".to_string()),
                ("X-Mailgun-Variables", r#"{"notice_id":"42"}"#.to_string()),
                ("X-SES-MESSAGE-TAGS", "notice_id=42".to_string()),
            ]
        );
    }
}
