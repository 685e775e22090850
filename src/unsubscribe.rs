//! One-click unsubscribe (RFC 8058): the tokens in the links. The pages that
//! take them are `http::unsubscribe`.
//!
//! The link carries the address encrypted and authenticated
//! (ChaCha20-Poly1305) with a key kept in the store: nobody can unsubscribe
//! someone else by guessing, nothing needs to be looked up to check it, and
//! the address does not appear readable in proxy or mail logs that record
//! the URL. Tokens of the older signed-but-readable form (`base64(address).mac`)
//! still work, so links in emails already sent keep working. GET shows a confirmation page (mail
//! scanners follow links; they must not unsubscribe anyone); POST, which is
//! what a mail client's one-click button sends, suppresses the address.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks unsubscribe tokens.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Signer {
        Signer { key }
    }

    /// The encryption key, derived from the stored secret so that the one
    /// secret serves both token forms without the two uses sharing a key.
    fn aead_key(&self) -> LessSafeKey {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"esim-notify unsubscribe token v2");
        let bytes = mac.finalize().into_bytes();
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("32 bytes is a ChaCha20 key"),
        )
    }

    #[cfg(test)]
    fn mac(&self, email: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(email.to_ascii_lowercase().as_bytes());
        mac.finalize().into_bytes()[..16].to_vec()
    }

    /// `base64url(nonce || ciphertext || tag)`, a fresh random nonce each time.
    pub fn token(&self, email: &str) -> String {
        self.seal(email.as_bytes().to_vec())
    }

    /// A token that also carries the customer's locale, so the page the link
    /// opens speaks the email's language (sealed with the address: it cannot be
    /// changed, and a proxy log does not show it either). The plaintext is
    /// `address NUL locale`; neither can contain a NUL.
    pub fn token_with_locale(&self, email: &str, locale: Option<&str>) -> String {
        let mut plain = email.as_bytes().to_vec();
        if let Some(l) = locale.filter(|l| !l.is_empty() && !l.contains('\0')) {
            plain.push(0);
            plain.extend_from_slice(l.as_bytes());
        }
        self.seal(plain)
    }

    fn seal(&self, plain: Vec<u8>) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = plain;
        self.aead_key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .expect("an address is far below ChaCha20's message limit");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// The address a token names, if it is authentic.
    pub fn verify(&self, token: &str) -> Option<String> {
        self.verify_with_locale(token).map(|(email, _)| email)
    }

    /// The address a token names and the locale it carries, if it is authentic.
    pub fn verify_with_locale(&self, token: &str) -> Option<(String, Option<String>)> {
        if token.contains('.') {
            return self.verify_v1(token).map(|e| (e, None));
        }
        let raw = B64.decode(token).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let mut sealed = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .aead_key()
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .ok()?;
        let plain = String::from_utf8(plain.to_vec()).ok()?;
        Some(match plain.split_once('\0') {
            Some((email, locale)) => (email.to_owned(), Some(locale.to_owned())),
            None => (plain, None),
        })
    }

    /// The first form, `base64url(email).base64url(mac)`, still in old emails.
    fn verify_v1(&self, token: &str) -> Option<String> {
        let (who, sig) = token.split_once('.')?;
        let email = String::from_utf8(B64.decode(who).ok()?).ok()?;
        let sig = B64.decode(sig).ok()?;
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(email.to_ascii_lowercase().as_bytes());
        // verify_truncated_left compares in constant time.
        mac.verify_truncated_left(&sig).ok()?;
        (sig.len() == 16).then_some(email)
    }
}

/// The `List-Unsubscribe` target for one recipient in one-click mode.
pub fn link(base_url: &str, signer: &Signer, email: &str) -> String {
    link_with_locale(base_url, signer, email, None)
}

/// [`link`] whose page opens in the customer's language.
pub fn link_with_locale(
    base_url: &str,
    signer: &Signer,
    email: &str,
    locale: Option<&str>,
) -> String {
    format!(
        "{}/unsubscribe?t={}",
        base_url.trim_end_matches('/'),
        signer.token_with_locale(email, locale)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let s = Signer::new(b"k".to_vec());
        let t = s.token("Ana@Example.com");
        assert_eq!(s.verify(&t).as_deref(), Some("Ana@Example.com"));
        let other = Signer::new(b"other".to_vec());
        assert_eq!(other.verify(&t), None);
        assert_eq!(s.verify("garbage"), None);
        // A flipped bit anywhere is refused.
        let mut raw = B64.decode(&t).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(s.verify(&B64.encode(raw)), None);
    }

    #[test]
    fn tokens_do_not_show_the_address() {
        let s = Signer::new(b"k".to_vec());
        let t = s.token("ana.lopez@example.com");
        let raw = B64.decode(&t).unwrap();
        let shown = String::from_utf8_lossy(&raw);
        assert!(!shown.contains("ana.lopez"), "{shown}");
        assert!(!t.contains('.'));
    }

    #[test]
    fn a_token_can_carry_the_locale_sealed_with_the_address() {
        let s = Signer::new(b"k".to_vec());
        let t = s.token_with_locale("ana@example.com", Some("es-MX"));
        assert_eq!(s.verify(&t).as_deref(), Some("ana@example.com"));
        assert_eq!(
            s.verify_with_locale(&t),
            Some(("ana@example.com".to_owned(), Some("es-MX".to_owned())))
        );
        let plain = s.token("ana@example.com");
        assert_eq!(
            s.verify_with_locale(&plain),
            Some(("ana@example.com".to_owned(), None))
        );
        assert!(!String::from_utf8_lossy(&B64.decode(&t).unwrap()).contains("es-MX"));
    }

    /// Links in emails sent before tokens were encrypted still unsubscribe.
    #[test]
    fn first_form_tokens_still_verify_and_forgeries_do_not() {
        let s = Signer::new(b"k".to_vec());
        let v1 = |email: &str, mac: &[u8]| format!("{}.{}", B64.encode(email), B64.encode(mac));
        let good = v1("Ana@Example.com", &s.mac("Ana@Example.com"));
        assert_eq!(s.verify(&good).as_deref(), Some("Ana@Example.com"));
        let forged = v1("mallory@example.com", &s.mac("Ana@Example.com"));
        assert_eq!(s.verify(&forged), None);
    }
}
