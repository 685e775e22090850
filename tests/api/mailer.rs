//! The mailer against real SMTP servers over TCP on 127.0.0.1, in-process:
//! `mailin-embedded` where it can play the part, and a tiny scripted server on a tokio
//! listener where it cannot (AUTH over plain TCP, a greeting refusal, a server that hangs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use esim_notify::mailer::*;

use crate::smtp::{mailin_server, scripted_server, Mailin};

// ---------------------------------------------------------------------------------------

fn settings(port: u16, tls: Tls, username: &str, timeout: Duration) -> MailerSettings {
    MailerSettings {
        from: "Example eSIM <noreply@example.com>".into(),
        reply_to: Some("Support <support@example.com>".into()),
        transport: TransportSettings::Smtp {
            host: "127.0.0.1".into(),
            port,
            tls,
            username: username.into(),
            password: if username.is_empty() {
                String::new()
            } else {
                "wrong-password".into()
            },
            pool_size: 2,
        },
        send_timeout: timeout,
    }
}

fn plain(port: u16) -> Mailer {
    Mailer::new(settings(port, Tls::None, "", Duration::from_secs(10))).unwrap()
}

fn email(to: &str) -> OutgoingEmail {
    OutgoingEmail {
        to_email: to.into(),
        to_name: Some("Ana López".into()),
        subject: "Less than 10% of your data left".into(),
        text: "Hello Ana, only 10% of your data is left.\n".into(),
        html: "<p>Hello Ana, only <b>10%</b> of your data is left.</p>\n".into(),
        message_id: message_id_for("esim:T1/data/0.1/cycle:5368709120", "noreply@example.com"),
        template: "data_usage".into(),
        list_unsubscribe: Some(ListUnsubscribe {
            target: "https://example.com/unsubscribe?t=tok".into(),
            one_click: true,
        }),
        inline_images: Vec::new(),
    }
}

fn has_header(mail: &str, line: &str) -> bool {
    mail.lines().any(|l| l == line)
}

// 1 ------------------------------------------------------------------------------------

#[tokio::test]
async fn sent_email_arrives_with_all_headers_and_both_parts() {
    let (port, shared) = mailin_server();
    let mailer = plain(port);
    let e = email("ana@example.com");
    mailer.send(&e).await.unwrap();

    let s = shared.lock().unwrap();
    assert_eq!(s.received.len(), 1);
    assert_eq!(s.rcpt_to, vec!["ana@example.com".to_string()]);
    let mail = &s.received[0];
    assert!(
        has_header(mail, "From: \"Example eSIM\" <noreply@example.com>"),
        "{mail}"
    );
    assert!(
        has_header(mail, "Reply-To: Support <support@example.com>"),
        "{mail}"
    );
    let to = mail.lines().find(|l| l.starts_with("To: ")).unwrap();
    assert!(
        to.contains("=?utf-8?") && to.ends_with("<ana@example.com>"),
        "{to}"
    );
    assert!(has_header(mail, "Subject: Less than 10% of your data left"));
    assert!(has_header(mail, &format!("Message-ID: {}", e.message_id)));
    assert!(mail.lines().any(|l| l.starts_with("Date: ")));
    assert!(has_header(
        mail,
        "List-Unsubscribe: <https://example.com/unsubscribe?t=tok>"
    ));
    assert!(has_header(
        mail,
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    ));
    assert!(mail.contains("Content-Type: multipart/alternative;"));
    let text = mail
        .find("Content-Type: text/plain; charset=utf-8")
        .unwrap();
    let html = mail.find("Content-Type: text/html; charset=utf-8").unwrap();
    assert!(text < html, "text part first");
    assert!(mail.contains("Hello Ana, only 10% of your data is left."));
    assert!(mail.contains("<b>10%</b>"));
}

// 2 ------------------------------------------------------------------------------------

async fn send_with(
    rcpt: Option<(u16, &'static str)>,
    data_end: Option<(u16, &'static str)>,
) -> (SendError, Mailin) {
    send_with_mail(None, rcpt, data_end).await
}

async fn send_with_mail(
    mail: Option<(u16, &'static str)>,
    rcpt: Option<(u16, &'static str)>,
    data_end: Option<(u16, &'static str)>,
) -> (SendError, Mailin) {
    let (port, shared) = mailin_server();
    {
        let mut s = shared.lock().unwrap();
        s.mail.extend(mail);
        s.rcpt.extend(rcpt);
        s.data_end.extend(data_end);
    }
    let err = plain(port)
        .send(&email("ana@example.com"))
        .await
        .unwrap_err();
    (err, shared)
}

#[tokio::test]
async fn temporary_refusal_at_rcpt_is_transient() {
    let (err, _) = send_with(Some((451, "4.7.1 greylisted, try later")), None).await;
    match &err {
        SendError::Transient { reason } => {
            assert!(
                reason.contains("451") && reason.contains("RCPT"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.kind(), "transient");
}

#[tokio::test]
async fn user_unknown_at_rcpt_is_recipient_rejected_and_masked() {
    let (err, _) = send_with(Some((550, "5.1.1 <ana@example.com>: user unknown")), None).await;
    match &err {
        SendError::RecipientRejected { code: 550, message } => {
            assert!(message.contains("user unknown"), "{message}");
            assert!(
                !message.contains("ana@example.com"),
                "address masked: {message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), Some(550));
}

#[tokio::test]
async fn mailbox_name_not_allowed_at_rcpt_is_recipient_rejected() {
    let (err, _) = send_with(Some((553, "5.1.3 bad address syntax")), None).await;
    assert!(
        matches!(err, SendError::RecipientRejected { code: 553, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn other_5xx_at_rcpt_is_message_rejected_not_a_suppression() {
    let (err, _) = send_with(Some((554, "5.7.1 relay access denied")), None).await;
    assert!(
        matches!(err, SendError::MessageRejected { code: 554, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn refusals_at_mail_from() {
    let (err, _) = send_with_mail(Some((552, "5.3.4 message too big")), None, None).await;
    assert!(
        matches!(err, SendError::MessageRejected { code: 552, .. }),
        "{err:?}"
    );
    let (err, _) = send_with_mail(Some((530, "5.7.0 authentication required")), None, None).await;
    assert!(matches!(err, SendError::TransportBroken { .. }), "{err:?}");
    let (err, _) = send_with_mail(Some((421, "4.7.0 closing")), None, None).await;
    assert!(matches!(err, SendError::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn refusal_after_data_is_message_rejected() {
    let (err, shared) = send_with(None, Some((554, "5.6.0 message refused"))).await;
    assert!(
        matches!(err, SendError::MessageRejected { code: 554, .. }),
        "{err:?}"
    );
    assert!(shared.lock().unwrap().received.is_empty());
}

#[tokio::test]
async fn content_policy_550_after_data_is_message_rejected_not_recipient() {
    let (err, _) = send_with(None, Some((550, "5.7.1 content rejected by policy"))).await;
    assert!(
        matches!(err, SendError::MessageRejected { code: 550, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn temporary_refusal_after_data_is_transient() {
    let (err, _) = send_with(None, Some((452, "4.3.1 insufficient storage"))).await;
    assert!(matches!(err, SendError::Transient { .. }), "{err:?}");
}

// 3 ------------------------------------------------------------------------------------

#[tokio::test]
async fn auth_refused_is_transport_broken() {
    // mailin-embedded offers AUTH only over TLS, so a scripted server plays this part.
    let port = scripted_server(Some("220 scripted ESMTP\r\n"), |line| {
        Some(if line.starts_with("EHLO") {
            "250-scripted\r\n250 AUTH PLAIN LOGIN\r\n".into()
        } else if line.starts_with("AUTH") {
            "535 5.7.8 Authentication credentials invalid\r\n".into()
        } else {
            "503 bad sequence\r\n".into()
        })
    })
    .await;
    let mailer = Mailer::new(settings(port, Tls::None, "user", Duration::from_secs(10))).unwrap();
    let err = mailer.send(&email("ana@example.com")).await.unwrap_err();
    match &err {
        SendError::TransportBroken { reason } => {
            assert!(reason.contains("535"), "{reason}");
            assert!(!reason.contains("wrong-password"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn refusal_at_greeting_is_transport_broken_and_421_is_transient() {
    let port = scripted_server(Some("554 5.7.1 no service for you\r\n"), |_| {
        Some("503 bad sequence\r\n".into())
    })
    .await;
    let err = plain(port)
        .send(&email("ana@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::TransportBroken { .. }), "{err:?}");

    let port = scripted_server(Some("421 4.3.2 too busy, try later\r\n"), |_| None).await;
    let err = plain(port)
        .send(&email("ana@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn required_starttls_not_offered_is_transport_broken() {
    let (port, shared) = mailin_server();
    let mailer = Mailer::new(settings(port, Tls::StartTls, "", Duration::from_secs(10))).unwrap();
    let err = mailer.send(&email("ana@example.com")).await.unwrap_err();
    match &err {
        SendError::TransportBroken { reason } => assert!(reason.contains("STARTTLS"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(shared.lock().unwrap().received.is_empty());
}

#[tokio::test]
async fn implicit_tls_against_a_plain_server_is_transport_broken() {
    let (port, _) = mailin_server();
    let mailer = Mailer::new(settings(port, Tls::Implicit, "", Duration::from_secs(10))).unwrap();
    let err = mailer.send(&email("ana@example.com")).await.unwrap_err();
    assert!(matches!(err, SendError::TransportBroken { .. }), "{err:?}");
}

// 4 ------------------------------------------------------------------------------------

#[tokio::test]
async fn silent_server_before_the_greeting_is_transport_broken() {
    let port = scripted_server(None, |_| None).await;
    let mailer = Mailer::new(settings(port, Tls::None, "", Duration::from_millis(500))).unwrap();
    let started = Instant::now();
    let err = mailer.send(&email("ana@example.com")).await.unwrap_err();
    assert!(matches!(err, SendError::TransportBroken { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn server_that_stops_answering_after_rcpt_times_out_as_transient() {
    // Greets, says EHLO/MAIL/RCPT fine, then never answers DATA.
    let port = scripted_server(Some("220 scripted ESMTP\r\n"), |line| {
        if line.starts_with("EHLO") {
            Some("250 scripted\r\n".into())
        } else if line.starts_with("MAIL") || line.starts_with("RCPT") {
            Some("250 ok\r\n".into())
        } else {
            None
        }
    })
    .await;
    let mailer = Mailer::new(settings(port, Tls::None, "", Duration::from_millis(500))).unwrap();
    let err = mailer.send(&email("ana@example.com")).await.unwrap_err();
    assert!(matches!(err, SendError::Transient { .. }), "{err:?}");
}

// 5 ------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_refused_is_transport_broken() {
    // Bind then drop: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = plain(port)
        .send(&email("ana@example.com"))
        .await
        .unwrap_err();
    // SPEC §8: a relay that is down is the transport's trouble, not the notice's.
    assert!(matches!(err, SendError::TransportBroken { .. }), "{err:?}");
}

#[test]
fn mailer_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Mailer>();
}

// 6 ------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_is_reused_and_replaced_after_an_error() {
    let (port, shared) = mailin_server();
    let mailer = plain(port);
    mailer.send(&email("ana@example.com")).await.unwrap();
    mailer.send(&email("bob@example.com")).await.unwrap();
    assert_eq!(
        shared.lock().unwrap().ehlos,
        1,
        "second send reused the connection"
    );
    assert_eq!(shared.lock().unwrap().received.len(), 2);

    shared
        .lock()
        .unwrap()
        .rcpt
        .push_back((451, "4.3.0 try later"));
    let err = mailer.send(&email("carl@example.com")).await.unwrap_err();
    assert!(matches!(err, SendError::Transient { .. }), "{err:?}");

    mailer.send(&email("carl@example.com")).await.unwrap();
    let (ehlos, received) = {
        let s = shared.lock().unwrap();
        (s.ehlos, s.received.len())
    };
    assert_eq!(
        ehlos, 2,
        "the failed connection was dropped, a fresh one opened"
    );
    assert_eq!(received, 3);
    mailer.close().await;
}

#[tokio::test]
async fn idle_connection_closed_by_the_server_is_replaced() {
    // Accepts one message per connection, then hangs up without a word.
    let port = scripted_server(Some("220 scripted ESMTP\r\n"), |line| {
        if line.starts_with("EHLO") {
            Some("250 scripted\r\n".into())
        } else if line.starts_with("MAIL") || line.starts_with("RCPT") {
            Some("250 ok\r\n".into())
        } else if line == "DATA" {
            Some("354 go ahead\r\n".into())
        } else if line == "." {
            Some("!250 queued\r\n".into())
        } else {
            None
        }
    })
    .await;
    let mailer = plain(port);
    mailer.send(&email("ana@example.com")).await.unwrap();
    mailer.send(&email("bob@example.com")).await.unwrap();
}

#[tokio::test]
async fn concurrent_sends_share_the_pool() {
    let (port, shared) = mailin_server();
    let mailer = plain(port);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let m = mailer.clone();
        tasks.push(tokio::spawn(async move {
            m.send(&email(&format!("user{i}@example.com"))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let s = shared.lock().unwrap();
    assert_eq!(s.received.len(), 6);
    assert!(s.ehlos <= 2, "at most pool_size connections: {}", s.ehlos);
}

// 7 ------------------------------------------------------------------------------------

#[tokio::test]
async fn file_transport_writes_one_eml_with_the_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("mail-out"); // does not exist yet
    let mailer = Mailer::new(MailerSettings {
        from: "Example eSIM <noreply@example.com>".into(),
        reply_to: None,
        transport: TransportSettings::File { dir: dir.clone() },
        send_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let e = email("ana@example.com");
    mailer.send(&e).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().unwrap(), "eml");
    let mail = std::fs::read_to_string(&files[0]).unwrap();
    assert!(mail.contains("From: \"Example eSIM\" <noreply@example.com>"));
    assert!(mail.contains(&format!("Message-ID: {}", e.message_id)));
    assert!(mail.contains("Subject: Less than 10% of your data left"));
    assert!(mail.contains("List-Unsubscribe: <https://example.com/unsubscribe?t=tok>"));
    assert!(mail.contains("multipart/alternative"));
}

// 8 ------------------------------------------------------------------------------------

#[test]
fn message_id_is_stable_per_identity() {
    let from = "Example eSIM <noreply@example.com>";
    let a = message_id_for("esim:T1/data/0.1/cycle:5368709120", from);
    assert_eq!(a, message_id_for("esim:T1/data/0.1/cycle:5368709120", from));
    assert_ne!(
        a,
        message_id_for("esim:T1/data/0.1/cycle:10737418240", from)
    );
    assert!(a.starts_with('<') && a.ends_with("@example.com>"), "{a}");
}

#[tokio::test]
async fn bad_recipient_is_invalid_before_any_connection() {
    let (port, shared) = mailin_server();
    let err = plain(port)
        .send(&email("not an address"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Invalid { .. }), "{err:?}");
    assert_eq!(shared.lock().unwrap().ehlos, 0);
}

/// The file transport names each `.eml` for when, which template and to whom
/// (masked as in the logs), so `ls mail-out/` lists them in the order sent:
/// `esim_activated` first though `data_usage` sorts first by name.
#[tokio::test]
async fn file_transport_names_say_when_what_and_whom_and_sort_by_time() {
    use crate::helpers::{data_usage, esim_status, eventually, spawn_app};
    let app = spawn_app("[email]\ntransport = \"file\"\n").await;
    let (s, v) = app
        .bind(serde_json::json!({"email": "ana.lopez@example.com", "esimTranNo": "F1"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let dir = app.dir.path().join("mail-out");
    let names = || -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // A message being written is a hidden `.tmp` until whole.
                    .filter(|n| n.ends_with(".eml"))
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        n
    };
    let iccid = "890000000000000001";
    let (s, _) = app.post(&esim_status("f-1", "F1", iccid, "IN_USE")).await;
    assert_eq!(s, 200);
    assert!(eventually(Duration::from_secs(20), || async { names().len() == 1 }).await);
    let gb = 1024 * 1024 * 1024;
    let (s, _) = app.post(&data_usage("f-2", "F1", iccid, 10 * gb, gb)).await;
    assert_eq!(s, 200);
    assert!(
        eventually(Duration::from_secs(20), || async { names().len() == 2 }).await,
        "{:?}",
        names()
    );
    let names = names();
    for (name, template) in names.iter().zip(["esim_activated", "data_usage"]) {
        // 20261204T161502.123Z_<template>_a***@example.com_<id>.eml
        let (when, rest) = name.split_once('_').unwrap();
        assert_eq!(when.len(), "20261204T161502.123Z".len(), "{name}");
        assert!(
            chrono::NaiveDateTime::parse_from_str(when, "%Y%m%dT%H%M%S%.3fZ").is_ok(),
            "{name}"
        );
        assert!(
            rest.starts_with(&format!("{template}_a***@example.com_")),
            "{name}"
        );
        assert!(
            name.ends_with(".eml") && !name.contains([':', '/']),
            "{name}"
        );
        assert!(!name.contains("ana.lopez"), "{name}");
    }
    app.stop().await;
}
