//! The suppression list: addresses not mailed, why ([`SuppressReason`]:
//! which decides what still goes, `Suppression::stops`), and which of them a
//! dead letter's retry may lift (only the "user unknown" it caused itself).
//!
//! A forgotten customer's suppression is kept only as a keyed hash of the
//! address, so the address is no longer stored but is still never mailed.

use chrono::{DateTime, Utc};

use super::model::{SuppressReason, Suppression};
use super::records::meta;
use super::tx::Tx;
use crate::customers::suppression_key;
use crate::store::{Space, StoreError};

/// The secret that keys the hashes of forgotten addresses.
pub const FORGOTTEN_SECRET: &str = "forgotten";

/// `#` and HMAC-SHA256(secret, address lower-cased) in hex: the same
/// address always gives the same key, and the key gives back no address
/// without the store's secret. It holds no `@`, so it never equals the key
/// of an address still stored in clear.
pub fn forgotten_key(secret: &[u8], email: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(suppression_key(email).as_bytes());
    format!("#{}", hex::encode(mac.finalize().into_bytes()))
}

/// The key a forgotten address's suppression is kept under, if any address
/// was ever forgotten (reads the secret without creating it).
fn forgotten_suppression_key(tx: &mut Tx, email: &str) -> Result<Option<String>, StoreError> {
    let secret = tx.get_raw(Space::Meta, &meta::secret(FORGOTTEN_SECRET))?;
    Ok(secret.map(|k| forgotten_key(&k, email)))
}

/// The suppression that stops mail to `email`, in clear or as a forgotten hash.
pub fn active_suppression(tx: &mut Tx, email: &str) -> Result<Option<Suppression>, StoreError> {
    let plain = suppression_key(email);
    if let Some(s) = tx.get(Space::Suppress, plain.as_bytes())? {
        return Ok(Some(s));
    }
    match forgotten_suppression_key(tx, email)? {
        Some(k) => tx.get(Space::Suppress, k.as_bytes()),
        None => Ok(None),
    }
}

/// An operator's, an unsubscribe's or a complaint's suppression: never
/// lifted by a retry. It replaces whatever suppression the address had, so
/// the list says the latest reason and since when.
pub fn suppress(
    tx: &mut Tx,
    email: &str,
    reason: SuppressReason,
    detail: Option<&str>,
    now: DateTime<Utc>,
) {
    let key = suppression_key(email);
    tx.put(
        Space::Suppress,
        key.as_bytes(),
        &Suppression {
            email: key.clone(),
            reason,
            since: now,
            detail: detail.map(str::to_string),
            auto_for: Vec::new(),
        },
    );
}

pub fn unsuppress(tx: &mut Tx, email: &str) -> Result<bool, StoreError> {
    let mut key = suppression_key(email);
    if tx.get_raw(Space::Suppress, key.as_bytes())?.is_none() {
        match forgotten_suppression_key(tx, email)? {
            Some(k) if tx.get_raw(Space::Suppress, k.as_bytes())?.is_some() => key = k,
            _ => return Ok(false),
        }
    }
    tx.delete(Space::Suppress, key.as_bytes());
    Ok(true)
}

/// The automatic suppression (`bounced`, the mail server's words as its
/// detail) a refusal at RCPT ("user unknown") of notice `id` adds. Never
/// turns a suppression an operator or the customer made into an automatic
/// one a retry could lift.
pub fn suppress_for_dead_letter(
    tx: &mut Tx,
    email: &str,
    why: &str,
    id: u64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let key = suppression_key(email);
    let s = match tx.get::<Suppression>(Space::Suppress, key.as_bytes())? {
        Some(s) if s.auto_for.is_empty() => None,
        Some(mut s) => {
            if !s.added_by(id) {
                s.auto_for.push(id);
            }
            Some(s)
        }
        None => Some(Suppression {
            email: key.clone(),
            reason: SuppressReason::Bounced,
            since: now,
            detail: Some(why.to_string()),
            auto_for: vec![id],
        }),
    };
    if let Some(s) = s {
        tx.put(Space::Suppress, key.as_bytes(), &s);
    }
    Ok(())
}

/// On forgetting a customer: a suppression in clear becomes a hashed one.
pub fn hash_on_forget(tx: &mut Tx, secret: &[u8], email: &str) -> Result<(), StoreError> {
    let plain = suppression_key(email);
    if let Some(s) = tx.get::<Suppression>(Space::Suppress, plain.as_bytes())? {
        let hashed = forgotten_key(secret, email);
        tx.delete(Space::Suppress, plain.as_bytes());
        tx.put(
            Space::Suppress,
            hashed.as_bytes(),
            &Suppression {
                email: hashed.clone(),
                ..s
            },
        );
    }
    Ok(())
}
