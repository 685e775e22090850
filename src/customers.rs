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
    #[error("locale `{0}`: {1}")]
    Locale(String, String),
    #[error("iccid `{0}`: an ICCID is 18 to 22 digits (leading zeros kept)")]
    Iccid(String),
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
        // `Ana <ana@example.com>`, as shops export it: the address, and the
        // display part as the name unless a name is given.
        let (display_name, address) = split_mailbox(&self.email);
        if clean(self.name.clone()).is_none() {
            self.name = display_name;
        }
        let email = normalize_email(address)?;
        let ids = Identifiers {
            esim_tran_no: clean(self.esim_tran_no.take()),
            iccid: clean(self.iccid.take()),
            order_no: clean(self.order_no.take()),
            transaction_id: clean(self.transaction_id.take()),
        };
        if ids.is_empty() {
            return Err(BindingError::NoIdentifier);
        }
        if let Some(iccid) = &ids.iccid {
            if !is_iccid(iccid) {
                return Err(BindingError::Iccid(iccid.clone()));
            }
        }
        let timezone = clean(self.timezone.take());
        if let Some(tz) = &timezone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(BindingError::Timezone(tz.clone()));
            }
        }
        let locale = match clean(self.locale.take()) {
            Some(l) => Some(
                crate::locale_tags::known_locale(&l)
                    .map_err(|reason| BindingError::Locale(l.clone(), reason))?,
            ),
            None => None,
        };
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

/// An ICCID (ITU-T E.118): 18 to 22 digits, the last a check digit. Kept as
/// written, leading zeros included; the check digit is not verified, since
/// providers issue test and legacy ICCIDs whose Luhn digit does not add up.
pub fn is_iccid(s: &str) -> bool {
    (18..=22).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits `Ana López <ana@example.com>` (and `"López, Ana" <ana@example.com>`)
/// into the display name and the address; anything else is all address. Shops
/// export recipients this way, and refusing them would only make an operator
/// edit every row.
fn split_mailbox(s: &str) -> (Option<String>, &str) {
    let s = s.trim();
    let Some(inner) = s.strip_suffix('>') else {
        return (None, s);
    };
    let Some((display, address)) = inner.rsplit_once('<') else {
        return (None, s);
    };
    let display = display.trim();
    let display = display
        .strip_prefix('"')
        .and_then(|d| d.strip_suffix('"'))
        .unwrap_or(display)
        .trim();
    let name = (!display.is_empty()).then(|| display.to_string());
    (name, address.trim())
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
    // `x@y`: lettre takes a bare host name, but no public mailbox lives at a
    // domain without a dot, and such an address is nearly always a typo.
    if !parsed.domain().contains('.') {
        return Err(BindingError::Unsendable(
            s.to_string(),
            format!(
                "the domain `{}` has no dot; write the full domain, such as example.com",
                parsed.domain()
            ),
        ));
    }
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
            iccid: Some(" 008944001234567890 ".into()),
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
        assert_eq!(ids.iccid.as_deref(), Some("008944001234567890"));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            binding("nope").validate(),
            Err(BindingError::Email(_))
        ));
        assert!(matches!(
            binding("Ana <a@b.co").validate(),
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
    fn identifiers_locales_and_domains_that_cannot_be_right_are_refused() {
        for bad in [
            "abc",
            "89440012345678901",
            "89440012345678901234567",
            "8944001234567890123a",
            "8944 0012 3456 7890 12",
        ] {
            let b = Binding {
                iccid: Some(bad.into()),
                ..binding("a@b.co")
            };
            assert_eq!(b.validate(), Err(BindingError::Iccid(bad.into())), "{bad}");
        }
        for good in [
            "008944001234567890",
            "8944001234567890123",
            "8944001234567890123456",
        ] {
            let b = Binding {
                iccid: Some(good.into()),
                ..binding("a@b.co")
            };
            assert_eq!(b.validate().unwrap().1.iccid.as_deref(), Some(good));
        }
        for bad in ["english", "xx-YY"] {
            let b = Binding {
                locale: Some(bad.into()),
                ..binding("a@b.co")
            };
            assert!(
                matches!(b.validate(), Err(BindingError::Locale(..))),
                "{bad}"
            );
        }
        for (good, canonical) in [
            ("es-MX", "es-MX"),
            ("pt-BR", "pt-BR"),
            ("es-419", "es-419"),
            ("en", "en"),
            ("pt_br", "pt-BR"),
        ] {
            let b = Binding {
                locale: Some(good.into()),
                ..binding("a@b.co")
            };
            assert_eq!(b.validate().unwrap().0.locale.as_deref(), Some(canonical));
        }
        let err = binding("x@y").validate().unwrap_err();
        assert!(err.to_string().contains("has no dot"), "{err}");
    }

    #[test]
    fn a_mailbox_as_shops_export_it_is_split() {
        let (r, _) = binding("Ana López <Ana@Example.com>").validate().unwrap();
        assert_eq!(r.email, "Ana@example.com");
        assert_eq!(r.name.as_deref(), Some("Ana López"));
        let (r, _) = binding("\"López, Ana\" <ana@example.com>")
            .validate()
            .unwrap();
        assert_eq!(r.name.as_deref(), Some("López, Ana"));
        // A given name wins over the display part.
        let (r, _) = Binding {
            name: Some("Ana".into()),
            ..binding("Ana Maria <ana@example.com>")
        }
        .validate()
        .unwrap();
        assert_eq!(r.name.as_deref(), Some("Ana"));
        let (r, _) = binding("<ana@example.com>").validate().unwrap();
        assert_eq!((r.email.as_str(), r.name), ("ana@example.com", None));
    }

    #[test]
    fn masking_hides_the_local_part() {
        assert_eq!(mask_email("ana.lopez@example.com"), "a***@example.com");
        assert_eq!(mask_email("garbage"), "***");
        assert_eq!(mask_email("\"a@b\"@example.com"), "\"***@example.com");
    }
}
