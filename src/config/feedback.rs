//! `[feedback]`: which mail providers may report bounces and complaints
//! (SPEC §3, §4 `/feedback/…`, §8), and with which key each is verified.
//! A provider whose key is empty (or `ses = false`) is off: its endpoint
//! answers 404 and its custom-data header is not added to sent messages.

use serde::Deserialize;

use super::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// Amazon SES through SNS: `POST /feedback/ses`, every message checked
    /// against the SNS signing certificate.
    pub ses: bool,
    /// The SNS topics whose messages are taken (`arn:aws:sns:…`). Empty:
    /// any topic, which means any AWS account that subscribes this URL to a
    /// topic of its own (warned at start).
    pub ses_topic_arns: Vec<String>,
    /// SendGrid's Event Webhook verification key: base64 of the DER
    /// SubjectPublicKeyInfo of an ECDSA P-256 key, as its settings page
    /// shows it. Public, so not a [`Secret`].
    pub sendgrid_public_key: String,
    /// Postmark: the token its webhook URL carries (`?token=`).
    pub postmark_token: Secret,
    /// Mailgun: the HTTP webhook signing key.
    pub mailgun_signing_key: Secret,
    /// TEST ONLY. An `http://` origin on loopback (`http://127.0.0.1:PORT`)
    /// from which SNS signing certificates and subscription confirmations
    /// are also fetched, so a test can serve its own certificate. "" (the
    /// default) in every real deployment: then only
    /// `https://sns.<region>.amazonaws.com` is fetched from.
    pub test_only_sns_cert_origin: String,
}

/// How long a SendGrid key is once decoded: a P-256 SubjectPublicKeyInfo.
const P256_SPKI_LEN: usize = 91;

/// `id-ecPublicKey` and the `prime256v1` (P-256) curve.
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const P256: &str = "1.2.840.10045.3.1.7";

impl Feedback {
    pub fn ses_on(&self) -> bool {
        self.ses
    }
    pub fn sendgrid_on(&self) -> bool {
        !self.sendgrid_public_key.trim().is_empty()
    }
    pub fn postmark_on(&self) -> bool {
        !self.postmark_token.is_blank()
    }
    pub fn mailgun_on(&self) -> bool {
        !self.mailgun_signing_key.is_blank()
    }

    /// SendGrid's key as the uncompressed P-256 point (65 bytes) a
    /// signature is checked against; `None` when off.
    pub fn sendgrid_point(&self) -> Option<Vec<u8>> {
        self.sendgrid_on()
            .then(|| sendgrid_point(&self.sendgrid_public_key).ok())
            .flatten()
    }

    /// Each impossible value with its key.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.sendgrid_on() {
            if let Err(e) = sendgrid_point(&self.sendgrid_public_key) {
                p.push(("feedback.sendgrid_public_key".into(), e));
            }
        }
        for (i, arn) in self.ses_topic_arns.iter().enumerate() {
            if !arn.starts_with("arn:aws") || arn.split(':').count() != 6 {
                p.push((
                    format!("feedback.ses_topic_arns[{i}]"),
                    format!("`{arn}` is not an SNS topic ARN such as \"arn:aws:sns:eu-west-1:123456789012:ses-bounces\""),
                ));
            }
        }
        let origin = self.test_only_sns_cert_origin.trim();
        if !origin.is_empty() && test_origin(origin).is_none() {
            p.push((
                "feedback.test_only_sns_cert_origin".into(),
                format!("`{origin}` must be \"\" (always, outside tests) or http://<loopback address>:<port>"),
            ));
        }
        p
    }

    /// Legal, but probably not what was meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.ses && self.ses_topic_arns.is_empty() {
            w.push("feedback.ses is on with feedback.ses_topic_arns empty: an SNS topic of any AWS account that subscribes /feedback/ses can report bounces; list your topic".to_string());
        }
        if !self.test_only_sns_cert_origin.trim().is_empty() {
            w.push(format!(
                "feedback.test_only_sns_cert_origin = {}: SNS certificates are also taken from there; a setting for tests only",
                self.test_only_sns_cert_origin.trim()
            ));
        }
        w
    }
}

/// The loopback `http://IP:PORT` a test serves SNS certificates from, as
/// (scheme+host+port) text without a trailing slash.
pub fn test_origin(origin: &str) -> Option<String> {
    let url = reqwest::Url::parse(origin.trim()).ok()?;
    let host = url.host_str()?;
    let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
    let port = url.port()?;
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    (url.scheme() == "http" && ip.is_loopback() && bare).then(|| format!("http://{host}:{port}"))
}

/// The 65-byte point of a base64 (optionally PEM-armoured) P-256
/// SubjectPublicKeyInfo, or why it is not one.
pub fn sendgrid_point(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    use spki::der::Decode;
    let b64: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| {
            "not base64 (copy the verification key from SendGrid's Event Webhook settings)"
                .to_string()
        })?;
    let not_p256 = || {
        format!(
            "not an ECDSA P-256 public key (expected the {P256_SPKI_LEN}-byte key SendGrid shows)"
        )
    };
    let spki = spki::SubjectPublicKeyInfoRef::from_der(&der).map_err(|_| not_p256())?;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<spki::ObjectIdentifier>().ok());
    let alg_ok = spki.algorithm.oid.to_string() == EC_PUBLIC_KEY
        && curve.is_some_and(|c| c.to_string() == P256);
    let point = spki.subject_public_key.raw_bytes();
    if !alg_ok || point.len() != 65 || point[0] != 4 {
        return Err(not_p256());
    }
    Ok(point.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key as SendGrid shows one: base64 of its SubjectPublicKeyInfo.
    fn fresh_key() -> String {
        use base64::Engine;
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        der.extend_from_slice(pair.public_key().as_ref());
        base64::engine::general_purpose::STANDARD.encode(der)
    }

    #[test]
    fn sendgrid_keys() {
        let key = fresh_key();
        assert_eq!(sendgrid_point(&key).unwrap().len(), 65);
        let armoured = format!("-----BEGIN PUBLIC KEY-----\n{key}\n-----END PUBLIC KEY-----\n");
        assert!(sendgrid_point(&armoured).is_ok());
        assert!(sendgrid_point("not base64!").is_err());
        assert!(sendgrid_point("AAAA").is_err());
    }

    #[test]
    fn problems_name_their_key_and_secrets_stay_hidden() {
        let load = |toml: &str| crate::config::Config::from_sources(toml, std::iter::empty());
        let err = load("[feedback]\nsendgrid_public_key = \"AAAA\"\nses_topic_arns = [\"x\"]\ntest_only_sns_cert_origin = \"http://10.0.0.1:80\"\n")
            .unwrap_err()
            .to_string();
        for key in [
            "feedback.sendgrid_public_key",
            "feedback.ses_topic_arns[0]",
            "feedback.test_only_sns_cert_origin",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
        let c = load("[feedback]\nses = true\npostmark_token = \"pm-secret-1\"\nmailgun_signing_key = \"mg-secret-2\"\n").unwrap();
        assert!(c.feedback.ses_on() && c.feedback.postmark_on() && c.feedback.mailgun_on());
        assert!(!c.feedback.sendgrid_on());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pm-secret-1") && !shown.contains("mg-secret-2"),
            "{shown}"
        );
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.contains("feedback.ses_topic_arns")));
        let env = [(
            "ESIM_NOTIFY_FEEDBACK__MAILGUN_SIGNING_KEY".to_string(),
            "from-env".to_string(),
        )];
        let c = crate::config::Config::from_sources("", env).unwrap();
        assert_eq!(c.feedback.mailgun_signing_key.expose(), "from-env");
        let off = load("").unwrap();
        assert!(
            !off.feedback.ses_on() && !off.feedback.postmark_on() && !off.feedback.mailgun_on()
        );
    }

    #[test]
    fn test_origins_are_loopback_only() {
        assert_eq!(
            test_origin("http://127.0.0.1:4000").as_deref(),
            Some("http://127.0.0.1:4000")
        );
        for bad in [
            "https://127.0.0.1:4000",
            "http://127.0.0.1",
            "http://10.0.0.1:80",
            "http://example.com:80",
            "http://127.0.0.1:4000/x",
        ] {
            assert!(test_origin(bad).is_none(), "{bad}");
        }
    }
}
