//! The mail provider's reports (issue 20, SPEC §4 `/feedback/…`, §6, §8):
//! each provider's real payload shape (from its documentation, see
//! shared/reference/mail-provider-webhooks.md), signed with keys the test
//! makes — an SNS certificate served on loopback (the host rule relaxed only
//! by `feedback.test_only_sns_cert_origin`), a SendGrid P-256 key pair, a
//! Mailgun signing key, a Postmark token. A valid report suppresses the
//! address, is in the eSIM's decision log and the metrics, and the next
//! notice to that address is not sent (the SMTP server sees one message); a
//! forged one is 401 and changes nothing; a transient bounce is recorded
//! only; a report about nothing we sent is acknowledged and counted; a
//! repeated report changes nothing twice.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::helpers::{data_usage, eventually, metric, spawn_app, TestApp};

const LIMIT: Duration = Duration::from_secs(20);
const GIB: u64 = 1 << 30;
const TRAN: &str = "26120412000077";
const ICCID: &str = "8943108170000770077";
const EMAIL: &str = "jane@example.net";
const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:ses-bounces";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What one sent message tells a report about itself.
struct Sent {
    raw: String,
    notice: u64,
    message_id: String,
}

fn header(raw: &str, name: &str) -> Option<String> {
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    mailparse::MailHeaderMap::get_first_value(mail.headers.as_slice(), name)
}

async fn decisions(app: &TestApp) -> Vec<Value> {
    let (_, view) = app
        .get_json(&app.admin_url(&format!("/admin/esims/{TRAN}")))
        .await;
    view["decisions"].as_array().cloned().unwrap_or_default()
}

async fn lines_of(app: &TestApp, what: &str) -> Vec<Value> {
    decisions(app)
        .await
        .into_iter()
        .filter(|d| d["what"] == what)
        .collect()
}

async fn suppression(app: &TestApp, email: &str) -> Option<Value> {
    let (status, body) = app
        .get_json(&app.admin_url(&format!("/admin/suppressions/{email}")))
        .await;
    (status == 200).then_some(body)
}

/// Binds jane to the eSIM and lets its 50 % data notice go out.
async fn send_one(app: &TestApp) -> Sent {
    let (status, _) = app.bind(json!({"email": EMAIL, "esimTranNo": TRAN})).await;
    assert_eq!(status, 200);
    let (status, _) = app
        .post(&data_usage("fb-1", TRAN, ICCID, 10 * GIB, 4 * GIB))
        .await;
    assert_eq!(status, 200);
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    let sent = lines_of(app, "sent").await;
    let notice = sent[0]["notice"]
        .as_u64()
        .expect("the sent line names its notice");
    let raw = app.received()[0].clone();
    let message_id = header(&raw, "Message-ID").expect("Message-ID");
    Sent {
        raw,
        notice,
        message_id,
    }
}

/// The 10 % notice that follows: it must not reach the SMTP server.
async fn next_notice_is_not_sent(app: &TestApp) {
    let (status, _) = app
        .post(&data_usage("fb-2", TRAN, ICCID, 10 * GIB, GIB))
        .await;
    assert_eq!(status, 200);
    assert!(
        eventually(LIMIT, || async {
            !lines_of(app, "suppressed").await.is_empty()
        })
        .await,
        "the next notice is recorded as suppressed: {:#?}",
        decisions(app).await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.received().len(), 1, "nothing more was sent");
}

async fn feedback_metric(app: &TestApp, provider: &str, outcome: &str) -> f64 {
    metric(
        app,
        &format!(
            "esim_notify_feedback_reports_total{{provider=\"{provider}\",outcome=\"{outcome}\"}}"
        ),
    )
    .await
    .unwrap_or(-1.0)
}

async fn notices_metric(app: &TestApp, outcome: &str) -> f64 {
    metric(
        app,
        &format!("esim_notify_notices_total{{template=\"data_usage\",outcome=\"{outcome}\"}}"),
    )
    .await
    .unwrap_or(-1.0)
}

async fn post_raw(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("http://{}{path}", app.public))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.expect("feedback request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// How many reports of a 200 answer did `what` (recorded, unknown, repeated, ignored).
fn answered((status, answer): (u16, Value), what: &str) -> u64 {
    assert_eq!(status, 200, "{answer}");
    answer[what]
        .as_u64()
        .unwrap_or_else(|| panic!("no {what} in {answer}"))
}

/// The report about `sent` was taken once: the address suppressed for
/// `what`, one `what` line about its notice in the decision log, counted in
/// both metrics. Returns that line.
async fn recorded_once(app: &TestApp, sent: &Sent, what: &str, provider: &str) -> Value {
    let s = suppression(app, EMAIL).await.expect("suppressed");
    assert_eq!(s["reason"], what);
    let lines = lines_of(app, what).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["notice"].as_u64(), Some(sent.notice));
    assert_eq!(notices_metric(app, what).await, 1.0);
    assert_eq!(feedback_metric(app, provider, what).await, 1.0);
    lines[0].clone()
}

/// Nothing was recorded for jane: no suppression, no report line, no count.
async fn nothing_changed(app: &TestApp) {
    assert!(suppression(app, EMAIL).await.is_none(), "not suppressed");
    assert!(lines_of(app, "bounced").await.is_empty());
    assert!(lines_of(app, "complained").await.is_empty());
    assert_eq!(notices_metric(app, "bounced").await, 0.0);
    assert_eq!(notices_metric(app, "complained").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_not_configured_answer_404_and_add_no_header() {
    let app = spawn_app("").await;
    for p in ["ses", "sendgrid", "postmark", "mailgun"] {
        let (status, body) = post_raw(&app, &format!("/feedback/{p}"), &[], "{}").await;
        assert_eq!(status, 404, "{p}: {body}");
    }
    let sent = send_one(&app).await;
    for h in [
        "X-SMTPAPI",
        "X-PM-Metadata-notice_id",
        "X-Mailgun-Variables",
        "X-SES-MESSAGE-TAGS",
    ] {
        assert!(header(&sent.raw, h).is_none(), "{h} without its provider");
    }
}

// ------------------------------------------------------------------ Mailgun

const MAILGUN_KEY: &str = "key-test-signing-3f9a1c";

fn mailgun_signature(key: &str, timestamp: &str, token: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn token50() -> String {
    let bytes: [u8; 25] = rand::random();
    hex::encode(bytes)
}

/// Mailgun's `failed`/`complained` webhook body, signed with `key` at `timestamp`.
fn mailgun_body(key: &str, timestamp: i64, token: &str, event: Value) -> String {
    let ts = timestamp.to_string();
    json!({
        "signature": {"timestamp": ts, "token": token, "signature": mailgun_signature(key, &ts, token)},
        "event-data": event,
    })
    .to_string()
}

fn mailgun_failed(id: &str, severity: &str, recipient: &str, sent: Option<&Sent>) -> Value {
    json!({
        "event": "failed", "severity": severity, "reason": "generic", "id": id,
        "timestamp": 1740300320.51, "recipient": recipient,
        "delivery-status": {"code": 550, "enhanced-code": "5.1.1", "message": format!("5.1.1 <{recipient}>: user unknown")},
        "message": {"headers": {"message-id": sent.map(|s| s.message_id.trim_matches(['<', '>']).to_string()).unwrap_or_else(|| "zzz@elsewhere.example".into())}},
        "user-variables": sent.map(|s| json!({"notice_id": s.notice.to_string()})).unwrap_or(json!({})),
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

const MAILGUN: &str = r#"[feedback]
mailgun_signing_key = "key-test-signing-3f9a1c""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_permanent_failure_suppresses_is_logged_counted_and_stops_the_next_notice() {
    let app = spawn_app(MAILGUN).await;
    let sent = send_one(&app).await;
    let vars: Value = serde_json::from_str(
        &header(&sent.raw, "X-Mailgun-Variables").expect("X-Mailgun-Variables"),
    )
    .unwrap();
    assert_eq!(vars["notice_id"], sent.notice.to_string());

    let event = mailgun_failed("pl271FzxTTmGRW8Uj3dUWw", "permanent", EMAIL, Some(&sent));
    let (status, body) = post_raw(
        &app,
        "/feedback/mailgun",
        &[],
        &mailgun_body(MAILGUN_KEY, now(), &token50(), event.clone()),
    )
    .await;
    assert_eq!(
        (status, body["recorded"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let bounced = recorded_once(&app, &sent, "bounced", "mailgun").await;
    let detail = bounced["detail"].as_str().unwrap();
    assert!(
        detail.contains("user unknown") && detail.contains("mailgun"),
        "{detail}"
    );
    assert!(!detail.contains(EMAIL), "addresses masked: {detail}");

    // Mailgun retries with a fresh signature: the same event changes nothing twice.
    let (status, body) = post_raw(
        &app,
        "/feedback/mailgun",
        &[],
        &mailgun_body(MAILGUN_KEY, now(), &token50(), event),
    )
    .await;
    assert_eq!(
        (status, body["repeated"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    assert_eq!(lines_of(&app, "bounced").await.len(), 1);
    assert_eq!(notices_metric(&app, "bounced").await, 1.0);
    assert_eq!(feedback_metric(&app, "mailgun", "repeated").await, 1.0);

    next_notice_is_not_sent(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_forged_stale_and_replayed_signatures_are_401_and_change_nothing() {
    let app = spawn_app(MAILGUN).await;
    let sent = send_one(&app).await;
    let event = |id: &str| mailgun_failed(id, "permanent", EMAIL, Some(&sent));
    let post = |body: String| {
        let app = &app;
        async move { post_raw(app, "/feedback/mailgun", &[], &body).await.0 }
    };
    assert_eq!(
        post(mailgun_body("another-key", now(), &token50(), event("a"))).await,
        401,
        "wrong key"
    );
    assert_eq!(
        post(mailgun_body(
            MAILGUN_KEY,
            now() - 3600,
            &token50(),
            event("b")
        ))
        .await,
        401,
        "an hour old"
    );
    assert_eq!(
        post(json!({"event-data": event("c")}).to_string()).await,
        401,
        "no signature"
    );
    // A genuine signature block, captured, carrying other event data.
    let token = token50();
    let genuine = mailgun_body(
        MAILGUN_KEY,
        now(),
        &token,
        json!({"event": "delivered", "id": "d", "recipient": EMAIL}),
    );
    assert_eq!(post(genuine).await, 200);
    assert_eq!(
        post(mailgun_body(MAILGUN_KEY, now(), &token, event("e"))).await,
        401,
        "token replayed"
    );
    nothing_changed(&app).await;
    assert_eq!(feedback_metric(&app, "mailgun", "rejected").await, 4.0);
    assert_eq!(feedback_metric(&app, "mailgun", "ignored").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_temporary_failure_is_recorded_only_and_unknown_messages_are_acknowledged() {
    let app = spawn_app(MAILGUN).await;
    let sent = send_one(&app).await;
    let body = mailgun_body(
        MAILGUN_KEY,
        now(),
        &token50(),
        mailgun_failed("t1", "temporary", EMAIL, Some(&sent)),
    );
    assert_eq!(
        answered(
            post_raw(&app, "/feedback/mailgun", &[], &body).await,
            "recorded"
        ),
        1
    );
    let notes: Vec<Value> = lines_of(&app, "note").await;
    assert!(
        notes
            .iter()
            .any(|n| n["detail"].as_str().unwrap().contains("transient bounce")),
        "{notes:#?}"
    );
    assert_eq!(feedback_metric(&app, "mailgun", "transient").await, 1.0);
    nothing_changed(&app).await;

    let stranger = "nobody@elsewhere.example";
    let body = mailgun_body(
        MAILGUN_KEY,
        now(),
        &token50(),
        mailgun_failed("u1", "permanent", stranger, None),
    );
    assert_eq!(
        answered(
            post_raw(&app, "/feedback/mailgun", &[], &body).await,
            "unknown"
        ),
        1
    );
    assert!(suppression(&app, stranger).await.is_none());
    assert_eq!(feedback_metric(&app, "mailgun", "unknown").await, 1.0);
}

// ----------------------------------------------------------------- Postmark

const POSTMARK_TOKEN: &str = "pm-7f3e9b2a41c8";

fn postmark_complaint(id: u64, email: &str, notice: Option<u64>) -> String {
    json!({
        "RecordType": "SpamComplaint", "ID": id, "Type": "SpamComplaint", "TypeCode": 100001,
        "Name": "Spam complaint", "Tag": "", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "MessageStream": "outbound", "ServerID": 23, "Description": "The subscriber explicitly marked this message as spam.",
        "Details": "Test spam complaint details", "Email": email, "From": "noreply@example.com",
        "BouncedAt": "2026-12-05T10:15:08Z", "DumpAvailable": true, "Inactive": true, "CanActivate": false,
        "Subject": "Test subject", "Metadata": notice.map(|n| json!({"notice_id": n.to_string()})).unwrap_or(json!({})),
    })
    .to_string()
}

fn postmark_bounce(id: u64, kind: &str, email: &str, notice: Option<u64>) -> String {
    json!({
        "RecordType": "Bounce", "ID": id, "Type": kind, "TypeCode": 4096, "Name": "Soft bounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "MessageStream": "outbound",
        "Details": "smtp;452 4.2.2 mailbox full", "Email": email, "From": "noreply@example.com",
        "BouncedAt": "2026-12-05T10:15:08Z", "Inactive": false, "CanActivate": true,
        "Metadata": notice.map(|n| json!({"notice_id": n.to_string()})).unwrap_or(json!({})),
    })
    .to_string()
}

const POSTMARK: &str = r#"[feedback]
postmark_token = "pm-7f3e9b2a41c8""#;

fn postmark_path(token: &str) -> String {
    format!("/feedback/postmark?token={token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmark_spam_complaint_suppresses_is_logged_counted_and_stops_the_next_notice() {
    let app = spawn_app(POSTMARK).await;
    let sent = send_one(&app).await;
    assert_eq!(
        header(&sent.raw, "X-PM-Metadata-notice_id"),
        Some(sent.notice.to_string())
    );
    let body = postmark_complaint(4323372036, EMAIL, Some(sent.notice));
    assert_eq!(
        answered(
            post_raw(&app, &postmark_path(POSTMARK_TOKEN), &[], &body).await,
            "recorded"
        ),
        1
    );
    recorded_once(&app, &sent, "complained", "postmark").await;

    assert_eq!(
        answered(
            post_raw(&app, &postmark_path(POSTMARK_TOKEN), &[], &body).await,
            "repeated"
        ),
        1
    );
    assert_eq!(lines_of(&app, "complained").await.len(), 1);
    assert_eq!(notices_metric(&app, "complained").await, 1.0);

    next_notice_is_not_sent(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmark_wrong_or_missing_token_is_401_and_changes_nothing() {
    let app = spawn_app(POSTMARK).await;
    let sent = send_one(&app).await;
    let body = postmark_complaint(1, EMAIL, Some(sent.notice));
    for path in [
        postmark_path("pm-7f3e9b2a41c9"),
        postmark_path(""),
        "/feedback/postmark".to_string(),
    ] {
        let (status, answer) = post_raw(&app, &path, &[], &body).await;
        assert_eq!(status, 401, "{path}: {answer}");
        assert!(!answer.to_string().contains(POSTMARK_TOKEN));
    }
    nothing_changed(&app).await;
    assert_eq!(feedback_metric(&app, "postmark", "rejected").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmark_soft_bounce_is_recorded_only_and_an_unknown_address_is_acknowledged() {
    let app = spawn_app(POSTMARK).await;
    let sent = send_one(&app).await;
    let body = postmark_bounce(2, "SoftBounce", EMAIL, Some(sent.notice));
    let (status, _) = post_raw(&app, &postmark_path(POSTMARK_TOKEN), &[], &body).await;
    assert_eq!(status, 200);
    assert_eq!(feedback_metric(&app, "postmark", "transient").await, 1.0);
    nothing_changed(&app).await;
    // Found by the address alone (no metadata): a hard bounce then suppresses.
    let body = postmark_bounce(3, "HardBounce", EMAIL, None);
    let (status, answer) = post_raw(&app, &postmark_path(POSTMARK_TOKEN), &[], &body).await;
    assert_eq!(
        (status, answer["recorded"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    assert_eq!(
        suppression(&app, EMAIL).await.expect("suppressed")["reason"],
        "bounced"
    );

    let body = postmark_bounce(4, "HardBounce", "nobody@elsewhere.example", None);
    assert_eq!(
        answered(
            post_raw(&app, &postmark_path(POSTMARK_TOKEN), &[], &body).await,
            "unknown"
        ),
        1
    );
    assert!(suppression(&app, "nobody@elsewhere.example")
        .await
        .is_none());
}

// ----------------------------------------------------------------- SendGrid

struct SendGridKey {
    pair: ring::signature::EcdsaKeyPair,
    /// base64 DER SubjectPublicKeyInfo, as SendGrid's settings show it.
    public: String,
}

fn sendgrid_key() -> SendGridKey {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING point }
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(pair.public_key().as_ref());
    SendGridKey {
        pair,
        public: b64(&spki),
    }
}

fn sendgrid_headers(key: &SendGridKey, timestamp: &str, body: &str) -> Vec<(&'static str, String)> {
    let rng = ring::rand::SystemRandom::new();
    let signed = [timestamp.as_bytes(), body.as_bytes()].concat();
    let sig = key.pair.sign(&rng, &signed).unwrap();
    vec![
        ("content-type", "application/json".to_string()),
        ("X-Twilio-Email-Event-Webhook-Signature", b64(sig.as_ref())),
        (
            "X-Twilio-Email-Event-Webhook-Timestamp",
            timestamp.to_string(),
        ),
    ]
}

/// A batch as SendGrid posts it: events separated by `\r\n`.
fn sendgrid_batch(events: &[Value]) -> String {
    let items: Vec<String> = events.iter().map(Value::to_string).collect();
    format!("[{}]\r\n", items.join(",\r\n"))
}

fn sendgrid_bounce(id: &str, kind: &str, email: &str, sent: Option<&Sent>) -> Value {
    let mut e = json!({
        "email": email, "timestamp": 1740300320, "event": "bounce", "type": kind,
        "smtp-id": sent.map(|s| s.message_id.clone()).unwrap_or_else(|| "<x@elsewhere.example>".into()),
        "sg_event_id": id, "sg_message_id": "euo2iKxd.recvd-5b7c8d9f-abc-1-0",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist", "status": "5.1.1",
        "tls": 1, "category": ["notice"],
    });
    if let Some(s) = sent {
        e["notice_id"] = s.notice.to_string().into();
    }
    e
}

async fn post_sendgrid(app: &TestApp, key: &SendGridKey, ts: &str, body: &str) -> (u16, Value) {
    post_raw(
        app,
        "/feedback/sendgrid",
        &sendgrid_headers(key, ts, body),
        body,
    )
    .await
}

fn sendgrid_config(key: &SendGridKey) -> String {
    format!("[feedback]\nsendgrid_public_key = \"{}\"\n", key.public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendgrid_bounce_in_a_batch_suppresses_is_logged_counted_and_stops_the_next_notice() {
    let key = sendgrid_key();
    let app = spawn_app(&sendgrid_config(&key)).await;
    let sent = send_one(&app).await;
    let smtpapi: Value =
        serde_json::from_str(&header(&sent.raw, "X-SMTPAPI").expect("X-SMTPAPI")).unwrap();
    assert_eq!(smtpapi["unique_args"]["notice_id"], sent.notice.to_string());

    let body = sendgrid_batch(&[
        json!({"email": EMAIL, "timestamp": 1740300300, "event": "delivered", "sg_event_id": "dlv-1", "smtp-id": sent.message_id}),
        sendgrid_bounce("Ym91bmNlLTE", "bounce", EMAIL, Some(&sent)),
        json!({"email": "bob@example.org", "event": "deferred", "response": "451 4.7.1 try later", "attempt": "3", "sg_event_id": "def-1"}),
    ]);
    let ts = now().to_string();
    let (status, answer) = post_sendgrid(&app, &key, &ts, &body).await;
    assert_eq!(
        (
            status,
            answer["recorded"].as_u64(),
            answer["ignored"].as_u64()
        ),
        (200, Some(1), Some(2)),
        "{answer}"
    );
    recorded_once(&app, &sent, "bounced", "sendgrid").await;

    // The same batch again (SendGrid retries): nothing twice.
    let (status, answer) = post_sendgrid(&app, &key, &ts, &body).await;
    assert_eq!(
        (status, answer["repeated"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    assert_eq!(lines_of(&app, "bounced").await.len(), 1);

    next_notice_is_not_sent(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendgrid_forged_signatures_are_401_and_change_nothing() {
    let key = sendgrid_key();
    let app = spawn_app(&sendgrid_config(&key)).await;
    let sent = send_one(&app).await;
    let body = sendgrid_batch(&[sendgrid_bounce("f1", "bounce", EMAIL, Some(&sent))]);
    let ts = now().to_string();
    let other = sendgrid_key();
    let post = |headers: Vec<(&'static str, String)>, body: String| {
        let app = &app;
        async move { post_raw(app, "/feedback/sendgrid", &headers, &body).await.0 }
    };
    assert_eq!(
        post(sendgrid_headers(&other, &ts, &body), body.clone()).await,
        401,
        "another key"
    );
    // Re-serialised JSON (the classic integration bug) is not what was signed.
    let reserialised = serde_json::from_str::<Value>(&body).unwrap().to_string();
    assert_eq!(
        post(sendgrid_headers(&key, &ts, &body), reserialised).await,
        401,
        "body changed"
    );
    let mut headers = sendgrid_headers(&key, &ts, &body);
    headers[2].1 = (now() + 1).to_string();
    assert_eq!(post(headers, body.clone()).await, 401, "timestamp changed");
    assert_eq!(
        post(
            vec![("content-type", "application/json".into())],
            body.clone()
        )
        .await,
        401,
        "unsigned"
    );
    nothing_changed(&app).await;
    assert_eq!(feedback_metric(&app, "sendgrid", "rejected").await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendgrid_blocked_is_recorded_only_and_a_spamreport_for_nobody_is_acknowledged() {
    let key = sendgrid_key();
    let app = spawn_app(&sendgrid_config(&key)).await;
    let sent = send_one(&app).await;
    let body = sendgrid_batch(&[
        sendgrid_bounce("blk-1", "blocked", EMAIL, Some(&sent)),
        json!({"email": "eve@elsewhere.example", "timestamp": 1740390000, "event": "spamreport", "sg_event_id": "spam-9", "sg_message_id": "x"}),
    ]);
    let ts = now().to_string();
    let (status, answer) = post_sendgrid(&app, &key, &ts, &body).await;
    assert_eq!(
        (
            status,
            answer["recorded"].as_u64(),
            answer["unknown"].as_u64()
        ),
        (200, Some(1), Some(1)),
        "{answer}"
    );
    assert_eq!(feedback_metric(&app, "sendgrid", "transient").await, 1.0);
    assert_eq!(feedback_metric(&app, "sendgrid", "unknown").await, 1.0);
    assert!(suppression(&app, "eve@elsewhere.example").await.is_none());
    nothing_changed(&app).await;
}

// ---------------------------------------------------------------- SES / SNS

/// One RSA key and its self-signed certificate (PEM) for the whole binary:
/// generating a key takes a moment.
fn sns_key() -> &'static (rsa::RsaPrivateKey, String) {
    static KEY: OnceLock<(rsa::RsaPrivateKey, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let pem = certificate(&key);
        (key, pem)
    })
}

/// A self-signed X.509 certificate of `key`, valid from an hour ago for a day.
fn certificate(key: &rsa::RsaPrivateKey) -> String {
    use rsa::pkcs8::EncodePublicKey;
    use std::str::FromStr;
    use x509_cert::der::asn1::{BitString, UtcTime};
    use x509_cert::der::{Decode, Encode};
    use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
    use x509_cert::time::{Time, Validity};

    let spki_der = key.to_public_key().to_public_key_der().unwrap();
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).unwrap();
    let alg = AlgorithmIdentifierOwned {
        oid: ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11"),
        parameters: Some(x509_cert::der::asn1::Any::null()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let name = x509_cert::name::Name::from_str("CN=sns.amazonaws.com").unwrap();
    let tbs = x509_cert::TbsCertificate {
        version: x509_cert::Version::V3,
        serial_number: x509_cert::serial_number::SerialNumber::new(&[1, 2, 3]).unwrap(),
        signature: alg.clone(),
        issuer: name.clone(),
        validity: Validity {
            not_before: Time::UtcTime(
                UtcTime::from_unix_duration(now - Duration::from_secs(3600)).unwrap(),
            ),
            not_after: Time::UtcTime(
                UtcTime::from_unix_duration(now + Duration::from_secs(86400)).unwrap(),
            ),
        },
        subject: name,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: None,
    };
    let signature = rsa_sign(key, &tbs.to_der().unwrap(), true);
    let cert = x509_cert::Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&signature).unwrap(),
    };
    let body = b64(&cert.to_der().unwrap());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// RSA PKCS#1 v1.5 with SHA-256 or SHA-1, as SNS signs.
fn rsa_sign(key: &rsa::RsaPrivateKey, msg: &[u8], sha256: bool) -> Vec<u8> {
    use sha1::Digest as _;
    if sha256 {
        let digest = sha2::Sha256::digest(msg);
        key.sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
            .unwrap()
    } else {
        let digest = sha1::Sha1::digest(msg);
        key.sign(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &digest)
            .unwrap()
    }
}

/// A loopback HTTP server that serves the certificate at
/// `/SimpleNotificationService-test.pem` and answers 200 to anything else,
/// remembering every path asked for.
struct CertServer {
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
}

impl CertServer {
    async fn start(pem: String) -> CertServer {
        CertServer::start_redirecting(pem, String::new()).await
    }

    /// Also answers `/SimpleNotificationService-moved.pem` with a redirect to `to`.
    async fn start_redirecting(pem: String, to: String) -> CertServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        tokio::spawn(async move {
            // Bounded: a test asks for a handful of URLs.
            for _ in 0..100 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(path.clone());
                let (status, body) = match path.as_str() {
                    "/SimpleNotificationService-test.pem" => ("200 OK".to_string(), pem.clone()),
                    "/SimpleNotificationService-moved.pem" => {
                        (format!("302 Found\r\nlocation: {to}"), String::new())
                    }
                    _ => (
                        "200 OK".to_string(),
                        "<ConfirmSubscriptionResponse/>".into(),
                    ),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        CertServer { port, hits }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cert_url(&self) -> String {
        format!("{}/SimpleNotificationService-test.pem", self.origin())
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

/// The string SNS signs: each present key of `keys`, in order, `key\nvalue\n`.
fn sns_string_to_sign(m: &Value, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|k| {
            m.get(*k)
                .and_then(Value::as_str)
                .map(|v| format!("{k}\n{v}\n"))
        })
        .collect()
}

/// An SNS HTTP notification carrying `message` (SES's JSON), signed.
fn sns_notification(sns_id: &str, message: &Value, version: u8, cert_url: &str) -> String {
    let mut m = json!({
        "Type": "Notification", "MessageId": sns_id, "TopicArn": TOPIC,
        "Message": message.to_string(), "Timestamp": "2026-12-05T10:15:09.123Z",
        "SignatureVersion": version.to_string(), "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    });
    let keys = [
        "Message",
        "MessageId",
        "Subject",
        "Timestamp",
        "TopicArn",
        "Type",
    ];
    let signature = rsa_sign(
        &sns_key().0,
        sns_string_to_sign(&m, &keys).as_bytes(),
        version == 2,
    );
    m["Signature"] = b64(&signature).into();
    m.to_string()
}

fn ses_bounce(kind: &str, email: &str, sent: Option<&Sent>) -> Value {
    let mid = sent
        .map(|s| s.message_id.clone())
        .unwrap_or_else(|| "<x@elsewhere.example>".into());
    json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": kind, "bounceSubType": if kind == "Permanent" { "NoEmail" } else { "MailboxFull" },
            "feedbackId": "0102018f-feed", "timestamp": "2026-12-05T10:15:08.000Z",
            "bouncedRecipients": [{"emailAddress": email, "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"messageId": "0102018f-aaaa-000000", "destination": [email],
            "headers": [{"name": "Message-ID", "value": mid}], "commonHeaders": {"messageId": mid}},
    })
}

fn ses_complaint(email: &str, sent: &Sent) -> Value {
    json!({
        "eventType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": email}], "complaintFeedbackType": "abuse",
            "feedbackId": "0102018f-comp", "timestamp": "2026-12-05T10:20:00.000Z"},
        "mail": {"messageId": "0102018f-aaaa-000000", "destination": [email],
            "tags": {"notice_id": [sent.notice.to_string()], "ses:configuration-set": ["esim"]}},
    })
}

fn ses_config(server: &CertServer) -> String {
    format!(
        "[feedback]\nses = true\nses_topic_arns = [\"{TOPIC}\"]\ntest_only_sns_cert_origin = \"{}\"\n",
        server.origin()
    )
}

async fn post_sns(app: &TestApp, body: &str) -> (u16, Value) {
    post_raw(
        app,
        "/feedback/ses",
        &[("content-type", "text/plain; charset=UTF-8".into())],
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_permanent_bounce_suppresses_is_logged_counted_and_stops_the_next_notice() {
    let server = CertServer::start(sns_key().1.clone()).await;
    let app = spawn_app(&ses_config(&server)).await;
    let sent = send_one(&app).await;
    assert_eq!(
        header(&sent.raw, "X-SES-MESSAGE-TAGS"),
        Some(format!("notice_id={}", sent.notice))
    );

    // Signature version 1 (SHA1withRSA), found by our Message-ID.
    let body = sns_notification(
        "sns-1",
        &ses_bounce("Permanent", EMAIL, Some(&sent)),
        1,
        &server.cert_url(),
    );
    let (status, answer) = post_sns(&app, &body).await;
    assert_eq!(
        (status, answer["recorded"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    recorded_once(&app, &sent, "bounced", "ses").await;

    // SNS retries keep the MessageId: nothing twice.
    assert_eq!(answered(post_sns(&app, &body).await, "repeated"), 1);
    assert_eq!(lines_of(&app, "bounced").await.len(), 1);

    // Signature version 2 (SHA256withRSA), a complaint found by the message tag.
    let body = sns_notification("sns-2", &ses_complaint(EMAIL, &sent), 2, &server.cert_url());
    assert_eq!(answered(post_sns(&app, &body).await, "recorded"), 1);
    assert_eq!(lines_of(&app, "complained").await.len(), 1);
    assert_eq!(notices_metric(&app, "complained").await, 1.0);
    // The certificate was fetched once, then taken from the cache.
    let fetched = server.hits().iter().filter(|p| p.ends_with(".pem")).count();
    assert_eq!(fetched, 1, "{:?}", server.hits());

    next_notice_is_not_sent(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_forged_messages_and_certificates_from_other_hosts_are_401_and_change_nothing() {
    // Another loopback host serving the same certificate: not the allowed origin.
    let elsewhere = CertServer::start(sns_key().1.clone()).await;
    let server = CertServer::start_redirecting(sns_key().1.clone(), elsewhere.cert_url()).await;
    let app = spawn_app(&ses_config(&server)).await;
    let sent = send_one(&app).await;
    let bounce = ses_bounce("Permanent", EMAIL, Some(&sent));

    let valid: Value =
        serde_json::from_str(&sns_notification("f-1", &bounce, 1, &server.cert_url())).unwrap();
    let mut tampered = valid.clone();
    tampered["Message"] = ses_bounce("Permanent", "other@example.net", Some(&sent))
        .to_string()
        .into();
    assert_eq!(
        post_sns(&app, &tampered.to_string()).await.0,
        401,
        "message changed after signing"
    );

    let mut other_topic = valid.clone();
    other_topic["TopicArn"] = "arn:aws:sns:eu-west-1:999999999999:attacker".into();
    assert_eq!(
        post_sns(&app, &other_topic.to_string()).await.0,
        401,
        "topic not listed"
    );

    for url in [
        elsewhere.cert_url(),
        "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-test.pem"
            .to_string(),
        "https://sns.s3-eu-west-1.amazonaws.com/SimpleNotificationService-test.pem".to_string(),
        format!("{}/certs/evil.pem", server.origin()),
        // Allowed, but it redirects elsewhere: redirects are not followed.
        format!("{}/SimpleNotificationService-moved.pem", server.origin()),
    ] {
        let body = sns_notification("f-2", &bounce, 1, &url);
        assert_eq!(post_sns(&app, &body).await.0, 401, "{url}");
    }
    assert!(
        elsewhere.hits().is_empty(),
        "never fetched from another host: {:?}",
        elsewhere.hits()
    );
    assert!(
        server
            .hits()
            .iter()
            .all(|p| p.starts_with("/SimpleNotificationService-")),
        "only the certificate path is fetched: {:?}",
        server.hits()
    );

    let mut bad_version = valid.clone();
    bad_version["SignatureVersion"] = "3".into();
    assert_eq!(
        post_sns(&app, &bad_version.to_string()).await.0,
        401,
        "unknown version"
    );

    nothing_changed(&app).await;
    assert_eq!(feedback_metric(&app, "ses", "rejected").await, 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_transient_bounce_is_recorded_only_unknown_is_acknowledged_and_a_subscription_is_confirmed(
) {
    let server = CertServer::start(sns_key().1.clone()).await;
    let app = spawn_app(&ses_config(&server)).await;
    let sent = send_one(&app).await;
    let body = sns_notification(
        "t-1",
        &ses_bounce("Transient", EMAIL, Some(&sent)),
        2,
        &server.cert_url(),
    );
    assert_eq!(answered(post_sns(&app, &body).await, "recorded"), 1);
    assert_eq!(feedback_metric(&app, "ses", "transient").await, 1.0);
    nothing_changed(&app).await;

    let body = sns_notification(
        "u-1",
        &ses_bounce("Permanent", "nobody@elsewhere.example", None),
        2,
        &server.cert_url(),
    );
    assert_eq!(answered(post_sns(&app, &body).await, "unknown"), 1);
    assert!(suppression(&app, "nobody@elsewhere.example")
        .await
        .is_none());

    // A subscription confirmation, signed, confirmed by fetching SubscribeURL.
    let subscribe = format!(
        "{}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37",
        server.origin()
    );
    let mut m = json!({
        "Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37", "TopicArn": TOPIC,
        "Message": format!("You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
        "SubscribeURL": subscribe, "Timestamp": "2026-12-05T10:00:00.000Z",
        "SignatureVersion": "1", "SigningCertURL": server.cert_url(),
    });
    let keys = [
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ];
    let signature = rsa_sign(
        &sns_key().0,
        sns_string_to_sign(&m, &keys).as_bytes(),
        false,
    );
    m["Signature"] = b64(&signature).into();
    // A confirmation whose SubscribeURL points elsewhere is not fetched.
    let mut elsewhere = m.clone();
    elsewhere["SubscribeURL"] = "http://127.0.0.2:9/?Action=ConfirmSubscription".into();
    assert_eq!(
        post_sns(&app, &elsewhere.to_string()).await.0,
        401,
        "signature covers SubscribeURL"
    );
    let (status, answer) = post_sns(&app, &m.to_string()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("confirmed")),
        "{answer}"
    );
    assert!(
        server
            .hits()
            .iter()
            .any(|p| p.starts_with("/?Action=ConfirmSubscription")),
        "{:?}",
        server.hits()
    );
}

// ------------------------------------------- what a report finds, and how long

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_report_finds_goes_with_a_forgotten_customer_and_past_history() {
    let complaint = |id: u64, notice: u64| postmark_complaint(id, EMAIL, Some(notice));
    let path = postmark_path(POSTMARK_TOKEN);

    // Forgotten: the sent message is no longer known by its id nor its address.
    let app = spawn_app(POSTMARK).await;
    let sent = send_one(&app).await;
    let soft = postmark_bounce(19, "SoftBounce", EMAIL, Some(sent.notice));
    assert_eq!(
        answered(post_raw(&app, &path, &[], &soft).await, "recorded"),
        1,
        "found before"
    );
    let r = app
        .http
        .post(app.admin_url("/admin/customers/forget"))
        .json(&json!({"email": EMAIL}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let answer = post_raw(&app, &path, &[], &complaint(20, sent.notice)).await;
    assert_eq!(answered(answer, "unknown"), 1);
    assert!(lines_of(&app, "complained").await.is_empty());

    // Past store.history: retention removes what reports are matched against.
    let app = spawn_app(POSTMARK).await;
    let sent = send_one(&app).await;
    let soft = postmark_bounce(18, "SoftBounce", EMAIL, Some(sent.notice));
    assert_eq!(
        answered(post_raw(&app, &path, &[], &soft).await, "recorded"),
        1,
        "found before"
    );
    let engine = app.engine.clone();
    tokio::task::spawn_blocking(move || {
        let ages = esim_notify::engine::Ages {
            delivery_dedup: Duration::from_secs(3600),
            history: Duration::from_secs(60),
            park_for: Duration::from_secs(3600),
        };
        engine.retain(chrono::Utc::now() + chrono::Duration::seconds(120), &ages)
    })
    .await
    .unwrap()
    .unwrap();
    let answer = post_raw(&app, &path, &[], &complaint(21, sent.notice)).await;
    assert_eq!(answered(answer, "unknown"), 1);
    assert!(suppression(&app, EMAIL).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_client_sends_is_never_a_5xx_and_bodies_are_bounded() {
    let key = sendgrid_key();
    let app = spawn_app(&format!(
        "{}\nses = true\npostmark_token = \"{POSTMARK_TOKEN}\"\nmailgun_signing_key = \"{MAILGUN_KEY}\"\n",
        sendgrid_config(&key)
    ))
    .await;
    let huge = "x".repeat(1024 * 1024 + 1);
    for path in [
        "/feedback/ses".to_string(),
        "/feedback/sendgrid".to_string(),
        postmark_path(POSTMARK_TOKEN),
        "/feedback/mailgun".to_string(),
    ] {
        for body in [
            "not json",
            "{}",
            "[]",
            "null",
            "{\"Type\": 7}",
            huge.as_str(),
        ] {
            let (status, answer) = post_raw(&app, &path, &[], body).await;
            // Postmark's token is in the URL: an authenticated `{}` is no
            // report and is acknowledged; everything else is refused.
            assert!(status < 500, "{path} {:.20}: {status} {answer}", body);
            if status != 200 {
                assert!(answer["error"].is_string(), "{path}: {answer}");
            }
        }
        assert_eq!(post_raw(&app, &path, &[], &huge).await.0, 413, "{path}");
    }
    // The body limit holds for a signed request too.
    let big_batch = format!("[{}]", vec!["{}"; 400_000].join(","));
    let headers = sendgrid_headers(&key, &now().to_string(), &big_batch);
    assert_eq!(
        post_raw(&app, "/feedback/sendgrid", &headers, &big_batch)
            .await
            .0,
        413
    );
}
