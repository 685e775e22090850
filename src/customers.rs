//! The customer directory's rules: who a recipient is, which identifiers bind
//! them to an eSIM, and the order in which those bindings are tried.
//!
//! The store keeps the bindings; this module decides what a valid binding is,
//! so the admin API, the CLI and CSV import all refuse the same things.

use serde::{Deserialize, Serialize};

use crate::event::Identifiers;

/// One end customer, as the emails address them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A request to bind a recipient to one or more identifiers, as the admin API
/// (`PUT /admin/customers`), `customers add` and CSV rows give it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub iccid: Option<String>,
    #[serde(default)]
    pub esim_tran_no: Option<String>,
    #[serde(default)]
    pub order_no: Option<String>,
    #[serde(default)]
    pub transaction_id: Option<String>,
}

/// Which identifier a binding or lookup goes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdKind {
    EsimTranNo,
    Iccid,
    OrderNo,
    TransactionId,
}

impl IdKind {
    /// The lookup order of SPEC §6: the stable key first, the broadest last.
    pub const LOOKUP_ORDER: [IdKind; 4] = [
        IdKind::EsimTranNo,
        IdKind::Iccid,
        IdKind::OrderNo,
        IdKind::TransactionId,
    ];

    /// A short tag for storage keys.
    pub fn tag(self) -> &'static str {
        match self {
            IdKind::EsimTranNo => "t",
            IdKind::Iccid => "i",
            IdKind::OrderNo => "o",
            IdKind::TransactionId => "x",
        }
    }

    /// The wire / query-string name.
    pub fn wire_name(self) -> &'static str {
        match self {
            IdKind::EsimTranNo => "esimTranNo",
            IdKind::Iccid => "iccid",
            IdKind::OrderNo => "orderNo",
            IdKind::TransactionId => "transactionId",
        }
    }

    pub fn from_wire_name(s: &str) -> Option<IdKind> {
        IdKind::LOOKUP_ORDER
            .into_iter()
            .find(|k| k.wire_name().eq_ignore_ascii_case(s))
    }

    pub fn get(self, ids: &Identifiers) -> Option<&str> {
        match self {
            IdKind::EsimTranNo => ids.esim_tran_no.as_deref(),
            IdKind::Iccid => ids.iccid.as_deref(),
            IdKind::OrderNo => ids.order_no.as_deref(),
            IdKind::TransactionId => ids.transaction_id.as_deref(),
        }
    }
}

/// Why a binding is refused; the text of a 400 or of a rejected CSV row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("`{0}` is not an email address")]
    Email(String),
    #[error("`{0}` cannot be sent to: {1}")]
    Unsendable(String, String),
    #[error("no identifier given: name at least one of iccid, esimTranNo, orderNo, transactionId")]
    NoIdentifier,
    #[error("`{0}` is not an IANA timezone such as \"Europe/Madrid\"")]
    Timezone(String),
    #[error("`{0}` is not a locale such as \"en\" or \"es-MX\"")]
    Locale(String),
    #[error("the name is {0} characters long; at most {MAX_NAME_CHARS} are allowed")]
    NameTooLong(usize),
    #[error("the name contains a control character (a line break, tab or similar)")]
    NameControl,
}

/// Longest name accepted: it goes into the `To:` line, and a name far longer
/// than any person's would only make a header no relay accepts.
pub const MAX_NAME_CHARS: usize = 200;

impl Binding {
    /// Trims fields, turns empty strings into "not given", lower-cases the
    /// address's domain, and refuses what would never deliver.
    pub fn validate(mut self) -> Result<(Recipient, Identifiers), BindingError> {
        fn clean(v: Option<String>) -> Option<String> {
            v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
        }
        let email = normalize_email(&self.email)?;
        let ids = Identifiers {
            esim_tran_no: clean(self.esim_tran_no.take()),
            iccid: clean(self.iccid.take()),
            order_no: clean(self.order_no.take()),
            transaction_id: clean(self.transaction_id.take()),
        };
        if ids.is_empty() {
            return Err(BindingError::NoIdentifier);
        }
        let timezone = clean(self.timezone.take());
        if let Some(tz) = &timezone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(BindingError::Timezone(tz.clone()));
            }
        }
        let locale = clean(self.locale.take());
        if let Some(l) = &locale {
            let ok = l.len() <= 35
                && l.split(['-', '_'])
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
            if !ok {
                return Err(BindingError::Locale(l.clone()));
            }
        }
        let name = clean(self.name.take());
        if let Some(n) = &name {
            let chars = n.chars().count();
            if chars > MAX_NAME_CHARS {
                return Err(BindingError::NameTooLong(chars));
            }
            if n.chars().any(char::is_control) {
                return Err(BindingError::NameControl);
            }
        }
        if let Err(reason) = sendable(&email, name.as_deref()) {
            return Err(BindingError::Unsendable(email, reason));
        }
        Ok((
            Recipient {
                email,
                name,
                locale,
                timezone,
            },
            ids,
        ))
    }
}

/// A deliverable address, with its domain lower-cased so that suppression and
/// forgetting match however the address was typed.
///
/// "Deliverable" is decided by lettre, which sends the mail: an address is
/// accepted only if a message to it builds, so nothing is bound that would
/// later dead-letter as an invalid envelope (a quoted local part holding a
/// comma, a domain literal such as `[127.0.0.1]`).
pub fn normalize_email(s: &str) -> Result<String, BindingError> {
    let s = s.trim();
    let refused = || BindingError::Email(s.to_string());
    if s.contains(['<', '>', ' ']) {
        return Err(refused());
    }
    let parsed: lettre::Address = s.parse().map_err(|_| refused())?;
    let email = format!("{}@{}", parsed.user(), parsed.domain().to_ascii_lowercase());
    if let Err(reason) = sendable(&email, None) {
        return Err(BindingError::Unsendable(s.to_string(), reason));
    }
    Ok(email)
}

/// Whether lettre builds a message to this mailbox. Its builder writes the
/// `To:` header and reads the envelope back from it, which is where the
/// addresses the bare address parser accepts but the header parser does not
/// fail; the reason is lettre's.
fn sendable(email: &str, name: Option<&str>) -> Result<(), String> {
    use lettre::message::Mailbox;
    let address: lettre::Address = email.parse().map_err(|e| format!("{e}"))?;
    if address.domain().starts_with('[') {
        return Err(
            "a domain literal such as [127.0.0.1] is not accepted; use a domain name".into(),
        );
    }
    let from: lettre::Address = "check@example.com".parse().map_err(|e| format!("{e}"))?;
    let built = lettre::Message::builder()
        .from(Mailbox::new(None, from))
        .to(Mailbox::new(name.map(str::to_string), address.clone()))
        .subject("check")
        .body(String::new())
        .map_err(|e| e.to_string())?;
    // The envelope is what RCPT TO will name: it must be this address.
    match built.envelope().to() {
        [only] if only == &address => Ok(()),
        _ => Err("the address does not survive the To: header unchanged".into()),
    }
}

/// The key under which suppressions are kept: the whole address lower-cased.
pub fn suppression_key(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// `ana@example.com` -> `a***@example.com`: enough for an operator to
/// recognise a case (or which domain refused) in the logs, not enough to
/// harvest addresses. The only masking function: split at the last `@`,
/// since a quoted local part may hold one (`"a@b"@example.com`).
pub fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(email: &str) -> Binding {
        Binding {
            email: email.into(),
            iccid: Some(" 0089 ".into()),
            ..Default::default()
        }
    }

    #[test]
    fn valid_binding_is_cleaned() {
        let (r, ids) = Binding {
            name: Some("  ".into()),
            timezone: Some("Europe/Madrid".into()),
            ..binding("Ana@Example.COM")
        }
        .validate()
        .unwrap();
        assert_eq!(r.email, "Ana@example.com");
        assert_eq!(r.name, None);
        assert_eq!(ids.iccid.as_deref(), Some("0089"));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            binding("nope").validate(),
            Err(BindingError::Email(_))
        ));
        assert!(matches!(
            binding("Ana <a@b.co>").validate(),
            Err(BindingError::Email(_))
        ));
        let no_id = Binding {
            email: "a@b.co".into(),
            ..Default::default()
        };
        assert_eq!(no_id.validate(), Err(BindingError::NoIdentifier));
        let tz = Binding {
            timezone: Some("Mars/Olympus".into()),
            ..binding("a@b.co")
        };
        assert!(matches!(tz.validate(), Err(BindingError::Timezone(_))));
    }

    #[test]
    fn only_what_lettre_can_send_is_bound() {
        for bad in [
            "\"a,b\"@example.com",
            "ana@[127.0.0.1]",
            "a@b@c.com",
            "a@-x.com",
        ] {
            assert!(
                matches!(
                    binding(bad).validate(),
                    Err(BindingError::Email(_) | BindingError::Unsendable(..))
                ),
                "{bad} was accepted"
            );
        }
        for good in [
            "ana.lopez+esim@example.com",
            "o'brien@example.ie",
            "a@sub.example.co",
        ] {
            assert!(binding(good).validate().is_ok(), "{good} was refused");
        }
        let long = Binding {
            name: Some("x".repeat(201)),
            ..binding("a@b.co")
        };
        assert_eq!(long.validate(), Err(BindingError::NameTooLong(201)));
        let ok = Binding {
            name: Some("é".repeat(200)),
            ..binding("a@b.co")
        };
        assert!(ok.validate().is_ok());
        let ctl = Binding {
            name: Some("Ana\r\nBcc: x@y.z".into()),
            ..binding("a@b.co")
        };
        assert_eq!(ctl.validate(), Err(BindingError::NameControl));
    }

    #[test]
    fn masking_hides_the_local_part() {
        assert_eq!(mask_email("ana.lopez@example.com"), "a***@example.com");
        assert_eq!(mask_email("garbage"), "***");
        assert_eq!(mask_email("\"a@b\"@example.com"), "\"***@example.com");
    }
}
