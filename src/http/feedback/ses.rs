//! Amazon SES through SNS (HTTP/S subscription): the body is an SNS message
//! (sent as `text/plain`, parsed as JSON whatever its type), verified as
//! SNS documents it: the string to sign (each present key of a fixed list,
//! in order, as `key\nvalue\n`) carries an RSA PKCS#1 v1.5 signature,
//! SHA-1 for `SignatureVersion` "1", SHA-256 for "2", under the key of the
//! certificate at `SigningCertURL`.
//!
//! That URL, and a confirmation's `SubscribeURL`, are fetched only when
//! they are `https://sns.<region>.amazonaws.com[.cn]/…` (a region such as
//! `eu-west-1`: an S3 bucket host such as `sns.s3-eu-west-1.amazonaws.com`
//! is not one), the certificate's path `/SimpleNotificationService-….pem`
//! — both have been SSRF holes elsewhere. Redirects are not followed.
//! Certificates are cached by URL. `feedback.test_only_sns_cert_origin`
//! lets a test serve its own from loopback.
//!
//! A verified `SubscriptionConfirmation` is confirmed by fetching its
//! `SubscribeURL`; a `Notification` carries SES's `Bounce` or `Complaint`
//! (identity notifications' `notificationType` or event publishing's
//! `eventType`), one report per recipient, found by the `notice_id`
//! message tag, else our Message-ID in the original headers. The SNS
//! `MessageId` (kept on SNS retries) and the recipient make a repeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use ring::signature::{
    UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256,
};
use serde_json::{json, Value};

use super::{bad_request, body, notice_id, off, take, text, unauthorized, FeedbackState};
use crate::engine::{Report, ReportKind};
use crate::http::state::AppState;
use crate::mailer::relay_tags::NOTICE_ID;
use crate::telemetry::escape;

const PROVIDER: &str = "ses";

/// The keys signed, in order, by message type.
const NOTIFICATION_KEYS: [&str; 6] = [
    "Message",
    "MessageId",
    "Subject",
    "Timestamp",
    "TopicArn",
    "Type",
];
const CONFIRMATION_KEYS: [&str; 7] = [
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
];

/// How many certificates are kept (SNS rotates them rarely).
const CACHED: usize = 16;
/// The largest certificate read.
const CERT_MAX: usize = 64 * 1024;

/// The RSA public keys (PKCS#1 DER) of the certificates fetched, by URL.
#[derive(Default)]
pub struct Certificates(Mutex<HashMap<String, Arc<Vec<u8>>>>);

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    app: web::Data<AppState>,
    fb: web::Data<FeedbackState>,
) -> HttpResponse {
    let settings = &app.config.feedback;
    if !settings.ses_on() {
        return off(PROVIDER);
    }
    let test_origin = crate::config::test_origin(&settings.test_only_sns_cert_origin);
    let raw = match body(&app, PROVIDER, &req, payload).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let msg: Value = match serde_json::from_slice(&raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return bad_request(
                &app,
                PROVIDER,
                "the body is not an SNS message (JSON object)",
            )
        }
    };
    let kind = text(&msg, "Type").unwrap_or_default();
    let keys: &[&str] = match kind.as_str() {
        "Notification" => &NOTIFICATION_KEYS,
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => &CONFIRMATION_KEYS,
        _ => return bad_request(&app, PROVIDER, "not an SNS message type"),
    };
    let topic = text(&msg, "TopicArn").unwrap_or_default();
    if !settings.ses_topic_arns.is_empty() && !settings.ses_topic_arns.contains(&topic) {
        return unauthorized(
            &app,
            PROVIDER,
            "topic not listed in feedback.ses_topic_arns",
        );
    }
    let sha256 = match text(&msg, "SignatureVersion").as_deref() {
        None | Some("1") => false,
        Some("2") => true,
        Some(_) => return unauthorized(&app, PROVIDER, "unknown SignatureVersion"),
    };
    let cert_url = text(&msg, "SigningCertURL").unwrap_or_default();
    if !sns_url_ok(&cert_url, true, test_origin.as_deref()) {
        return unauthorized(
            &app,
            PROVIDER,
            "SigningCertURL is not an SNS certificate URL",
        );
    }
    let key = match fb.certs.key(&fb.client, &cert_url).await {
        Ok(k) => k,
        Err(e) => {
            return unauthorized(
                &app,
                PROVIDER,
                &format!("signing certificate not usable: {e}"),
            )
        }
    };
    let Some(signature) = text(&msg, "Signature").and_then(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
    }) else {
        return unauthorized(&app, PROVIDER, "missing or unreadable Signature");
    };
    let alg = if sha256 {
        &RSA_PKCS1_2048_8192_SHA256
    } else {
        &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
    };
    if UnparsedPublicKey::new(alg, key.as_slice())
        .verify(string_to_sign(&msg, keys).as_bytes(), &signature)
        .is_err()
    {
        return unauthorized(&app, PROVIDER, "signature does not verify");
    }

    match kind.as_str() {
        "SubscriptionConfirmation" => confirm(&app, &fb, &msg, test_origin.as_deref()).await,
        "UnsubscribeConfirmation" => {
            tracing::warn!(topic = %escape(&topic), "SNS says /feedback/ses was unsubscribed from a topic");
            app.metrics.feedback(PROVIDER, "ignored", 1);
            HttpResponse::Ok().json(json!({"status": "ignored"}))
        }
        _ => {
            let sns_id = text(&msg, "MessageId").unwrap_or_default();
            let inner: Value = text(&msg, "Message")
                .and_then(|m| serde_json::from_str(&m).ok())
                .unwrap_or(Value::Null);
            let reports = read(&inner, &sns_id);
            let ignored = usize::from(reports.is_empty());
            take(&app, PROVIDER, reports, ignored).await
        }
    }
}

/// `key\nvalue\n` for each key present, in the order given.
pub fn string_to_sign(msg: &Value, keys: &[&str]) -> String {
    let mut out = String::new();
    for k in keys {
        if let Some(v) = msg.get(*k).and_then(Value::as_str) {
            out.push_str(k);
            out.push('\n');
            out.push_str(v);
            out.push('\n');
        }
    }
    out
}

/// Whether `url` may be fetched: `https://sns.<region>.amazonaws.com[.cn]`
/// with no user, port or other host, and for a certificate (`pem`) the path
/// `/SimpleNotificationService-….pem`; or, only when a test set it, the
/// loopback `test_origin` with the same path rule.
pub fn sns_url_ok(url: &str, pem: bool, test_origin: Option<&str>) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let path = u.path();
    let path_ok = !pem
        || (path.starts_with("/SimpleNotificationService-")
            && path.ends_with(".pem")
            && !path[1..].contains('/'));
    if !path_ok || !u.username().is_empty() || u.password().is_some() || u.fragment().is_some() {
        return false;
    }
    if let (Some(origin), Some(host), Some(port)) = (test_origin, u.host_str(), u.port()) {
        if u.scheme() == "http" && format!("http://{host}:{port}") == origin {
            return true;
        }
    }
    if u.scheme() != "https" || u.port().is_some() {
        return false;
    }
    let Some(host) = u.domain() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| {
            h.strip_suffix(".amazonaws.com")
                .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
        })
        .unwrap_or("");
    is_region(region)
}

/// `eu-west-1`, `us-gov-west-1`, `cn-north-1`: two letters, words, a number.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

impl Certificates {
    /// The RSA key of the certificate at `url` (checked by [`sns_url_ok`]).
    async fn key(&self, client: &reqwest::Client, url: &str) -> Result<Arc<Vec<u8>>, String> {
        if let Some(k) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(url) {
            return Ok(k.clone());
        }
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("fetch failed: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("fetch answered {}", resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n as usize > CERT_MAX) {
            return Err("certificate too large".into());
        }
        let pem = resp
            .bytes()
            .await
            .map_err(|_| "certificate could not be read".to_string())?;
        if pem.len() > CERT_MAX {
            return Err("certificate too large".into());
        }
        let key = Arc::new(rsa_key_of(&pem)?);
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(url.to_string(), key.clone());
        Ok(key)
    }
}

/// The RSA public key (PKCS#1 `RSAPublicKey` DER, as ring reads it) of a
/// PEM certificate that is valid now.
pub fn rsa_key_of(pem: &[u8]) -> Result<Vec<u8>, String> {
    use x509_cert::der::Decode;
    let text = std::str::from_utf8(pem).map_err(|_| "certificate is not PEM text")?;
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect::<String>()
        .split_whitespace()
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "certificate is not PEM")?;
    let cert = x509_cert::Certificate::from_der(&der).map_err(|_| "not an X.509 certificate")?;
    let tbs = &cert.tbs_certificate;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let v = &tbs.validity;
    if now < v.not_before.to_unix_duration() || now > v.not_after.to_unix_duration() {
        return Err("certificate is not valid now".into());
    }
    let spki = &tbs.subject_public_key_info;
    if spki.algorithm.oid.to_string() != "1.2.840.113549.1.1.1" {
        return Err("certificate key is not RSA".into());
    }
    spki.subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "certificate key is unreadable".into())
}

/// Confirms a verified subscription by fetching its `SubscribeURL`.
async fn confirm(
    app: &AppState,
    fb: &FeedbackState,
    msg: &Value,
    test_origin: Option<&str>,
) -> HttpResponse {
    let topic = text(msg, "TopicArn").unwrap_or_default();
    let url = text(msg, "SubscribeURL").unwrap_or_default();
    if !sns_url_ok(&url, false, test_origin) {
        return bad_request(
            app,
            PROVIDER,
            "SubscribeURL is not an SNS URL: not confirmed",
        );
    }
    match fb.client.get(&url).send().await {
        Ok(r) if r.status().is_success() => {
            tracing::info!(topic = %escape(&topic), "SNS subscription of /feedback/ses confirmed");
            HttpResponse::Ok().json(json!({"status": "confirmed"}))
        }
        Ok(r) => bad_request(
            app,
            PROVIDER,
            format!(
                "SubscribeURL answered {}: not confirmed",
                r.status().as_u16()
            ),
        ),
        Err(e) => bad_request(
            app,
            PROVIDER,
            format!(
                "SubscribeURL could not be fetched ({}): not confirmed",
                e.without_url()
            ),
        ),
    }
}

/// The reports in an SES notification: one per recipient of a `Bounce`
/// or a `Complaint`; none for any other kind.
fn read(n: &Value, sns_id: &str) -> Vec<Report> {
    let kind_name = text(n, "notificationType")
        .or_else(|| text(n, "eventType"))
        .unwrap_or_default();
    let mail = n.get("mail").cloned().unwrap_or(Value::Null);
    let notice = notice_id(mail.get("tags").and_then(|t| t.get(NOTICE_ID)));
    let message_id = mail
        .get("commonHeaders")
        .and_then(|h| text(h, "messageId"))
        .or_else(|| {
            mail.get("headers")?.as_array()?.iter().find_map(|h| {
                text(h, "name")
                    .filter(|n| n.eq_ignore_ascii_case("message-id"))
                    .and_then(|_| text(h, "value"))
            })
        });
    let (kind, list, what) = match kind_name.as_str() {
        "Bounce" => {
            let b = n.get("bounce").cloned().unwrap_or(Value::Null);
            let kind = match text(&b, "bounceType").as_deref() {
                Some("Permanent") => ReportKind::PermanentBounce,
                _ => ReportKind::TransientBounce,
            };
            let what = format!(
                "{} {}",
                text(&b, "bounceType").unwrap_or_default(),
                text(&b, "bounceSubType").unwrap_or_default()
            );
            (kind, b.get("bouncedRecipients").cloned(), what)
        }
        "Complaint" => {
            let c = n.get("complaint").cloned().unwrap_or(Value::Null);
            let what = format!(
                "complaint {}",
                text(&c, "complaintFeedbackType").unwrap_or_default()
            );
            (
                ReportKind::Complaint,
                c.get("complainedRecipients").cloned(),
                what,
            )
        }
        _ => return Vec::new(),
    };
    let recipients = list.and_then(|l| l.as_array().cloned()).unwrap_or_default();
    recipients
        .iter()
        .enumerate()
        .map(|(i, r)| Report {
            provider: PROVIDER,
            event_id: format!("{sns_id}/{i}"),
            kind,
            recipient: text(r, "emailAddress"),
            notice,
            message_id: message_id.clone(),
            diagnostic: format!(
                "{}: {}",
                what.trim(),
                text(r, "diagnosticCode")
                    .or_else(|| text(r, "status"))
                    .unwrap_or_default()
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_urls() {
        let ok = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem";
        assert!(sns_url_ok(ok, true, None));
        assert!(sns_url_ok(
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem",
            true,
            None
        ));
        assert!(sns_url_ok(
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-x.pem",
            true,
            None
        ));
        for bad in [
            "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.s3-eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-abc.pem",
            "https://evil.example/sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.eu-west-1.amazonaws.com/other.pem",
            "https://sns.eu-west-1.amazonaws.com/x/SimpleNotificationService-abc.pem",
            "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
            "https://user@sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.amazonaws.com/SimpleNotificationService-abc.pem",
            "http://127.0.0.1:4000/SimpleNotificationService-abc.pem",
        ] {
            assert!(!sns_url_ok(bad, true, None), "{bad}");
        }
        let origin = Some("http://127.0.0.1:4000");
        assert!(sns_url_ok(
            "http://127.0.0.1:4000/SimpleNotificationService-abc.pem",
            true,
            origin
        ));
        assert!(!sns_url_ok(
            "http://127.0.0.1:4001/SimpleNotificationService-abc.pem",
            true,
            origin
        ));
        assert!(sns_url_ok(
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
            false,
            None
        ));
    }

    #[test]
    fn string_to_sign_skips_absent_keys() {
        let m = json!({"Type":"Notification","MessageId":"1","Message":"m","Timestamp":"t","TopicArn":"a"});
        assert_eq!(
            string_to_sign(&m, &NOTIFICATION_KEYS),
            "Message\nm\nMessageId\n1\nTimestamp\nt\nTopicArn\na\nType\nNotification\n"
        );
    }
}
