//! Message building, checked on the formatted bytes (the file transport is only a stub here:
//! nothing is sent).

use super::*;

fn mailer_with(from: &str, reply_to: Option<&str>) -> (Mailer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(MailerSettings {
        from: from.to_string(),
        reply_to: reply_to.map(str::to_string),
        transport: TransportSettings::File {
            dir: dir.path().join("out"),
        },
        send_timeout: Duration::from_secs(5),
    })
    .unwrap();
    (mailer, dir)
}

fn email() -> OutgoingEmail {
    OutgoingEmail {
        to_email: "ana@example.com".into(),
        to_name: Some("Ana López".into()),
        subject: "Less than 10% of your data left".into(),
        text: "Hello Ana,\nonly 10% left.\n".into(),
        html: "<p>Hello Ana, only <b>10%</b> left.</p>".into(),
        message_id: message_id_for("esim:1/data/0.1/cycle:5368709120", "noreply@example.com"),
        template: "data_usage".into(),
        list_unsubscribe: Some(ListUnsubscribe {
            target: "https://example.com/unsubscribe?t=abc.def".into(),
            one_click: true,
        }),
        inline_images: Vec::new(),
    }
}

fn formatted(m: &Message) -> String {
    String::from_utf8(m.formatted()).unwrap()
}

/// The header block, unfolded, one header per line.
fn headers(raw: &str) -> Vec<String> {
    let head = raw.split("\r\n\r\n").next().unwrap();
    let mut out: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            out.last_mut().unwrap().push_str(line);
        } else {
            out.push(line.to_string());
        }
    }
    out
}

fn header<'a>(hs: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{}: ", name.to_ascii_lowercase());
    hs.iter()
        .find(|h| h.to_ascii_lowercase().starts_with(&prefix))
        .map(|h| &h[prefix.len()..])
}

#[test]
fn builds_every_header_of_spec_section_7() {
    let (m, _d) = mailer_with(
        "Example eSIM <noreply@example.com>",
        Some("support@example.com"),
    );
    let e = email();
    let raw = formatted(&m.build(&e).unwrap());
    let hs = headers(&raw);
    assert_eq!(
        header(&hs, "From"),
        Some("\"Example eSIM\" <noreply@example.com>")
    );
    assert_eq!(header(&hs, "Reply-To"), Some("support@example.com"));
    let to = header(&hs, "To").unwrap();
    assert!(to.ends_with("<ana@example.com>"), "{to}");
    assert!(
        to.contains("=?utf-8?"),
        "non-ASCII name is RFC 2047 encoded: {to}"
    );
    assert_eq!(
        header(&hs, "Subject"),
        Some("Less than 10% of your data left")
    );
    assert_eq!(header(&hs, "Message-ID"), Some(e.message_id.as_str()));
    assert!(header(&hs, "Date").is_some());
    assert_eq!(header(&hs, "MIME-Version"), Some("1.0"));
    assert_eq!(
        header(&hs, "List-Unsubscribe"),
        Some("<https://example.com/unsubscribe?t=abc.def>")
    );
    assert_eq!(
        header(&hs, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(header(&hs, "Content-Type")
        .unwrap()
        .starts_with("multipart/alternative"));
    // exactly one Message-ID: lettre must not add its own
    assert_eq!(
        hs.iter()
            .filter(|h| h.to_ascii_lowercase().starts_with("message-id:"))
            .count(),
        1
    );
}

#[test]
fn text_part_comes_before_html_part_both_utf8() {
    let (m, _d) = mailer_with("noreply@example.com", None);
    let mut e = email();
    e.text = "Hola Ana, te queda poco. ¡Recarga!".into();
    e.html = "<p>Hola Ana, ¡recarga!</p>".into();
    let raw = formatted(&m.build(&e).unwrap());
    let plain = raw.find("text/plain; charset=utf-8").expect("text part");
    let html = raw.find("text/html; charset=utf-8").expect("html part");
    assert!(plain < html);
    // The whole message is 7-bit clean: non-ASCII bodies are transfer-encoded.
    assert!(raw.is_ascii());
}

#[test]
fn no_reply_to_and_no_unsubscribe_when_not_configured() {
    let (m, _d) = mailer_with("noreply@example.com", Some(""));
    let mut e = email();
    e.list_unsubscribe = None;
    e.to_name = None;
    let raw = formatted(&m.build(&e).unwrap());
    let hs = headers(&raw);
    assert!(header(&hs, "Reply-To").is_none());
    assert!(header(&hs, "List-Unsubscribe").is_none());
    assert!(header(&hs, "List-Unsubscribe-Post").is_none());
    assert_eq!(header(&hs, "To"), Some("ana@example.com"));
}

#[test]
fn mailto_unsubscribe_without_one_click() {
    let (m, _d) = mailer_with("noreply@example.com", None);
    let mut e = email();
    e.list_unsubscribe = Some(ListUnsubscribe {
        target: "mailto:unsubscribe@example.com?subject=unsubscribe".into(),
        one_click: false,
    });
    let raw = formatted(&m.build(&e).unwrap());
    let hs = headers(&raw);
    assert_eq!(
        header(&hs, "List-Unsubscribe"),
        Some("<mailto:unsubscribe@example.com?subject=unsubscribe>")
    );
    assert!(header(&hs, "List-Unsubscribe-Post").is_none());
}

#[test]
fn bad_unsubscribe_targets_are_invalid() {
    let (m, _d) = mailer_with("noreply@example.com", None);
    for (target, one_click) in [
        ("javascript:alert(1)", false),
        ("https://example.com/a b", false),
        ("https://example.com/\r\nBcc: x@evil.test", false),
        ("mailto:u@example.com", true),
    ] {
        let mut e = email();
        e.list_unsubscribe = Some(ListUnsubscribe {
            target: target.into(),
            one_click,
        });
        assert!(
            matches!(m.build(&e), Err(SendError::Invalid { .. })),
            "{target:?}"
        );
    }
}

#[test]
fn names_with_quotes_are_quoted() {
    let (m, _d) = mailer_with("noreply@example.com", None);
    let mut e = email();
    e.to_name = Some("Ana \"La Jefa\" Perez".into());
    let raw = formatted(&m.build(&e).unwrap());
    let to = header(&headers(&raw), "To").unwrap().to_string();
    assert_eq!(to, r#""Ana \"La Jefa\" Perez" <ana@example.com>"#);
}

#[test]
fn subject_and_name_are_kept_on_one_line() {
    let (m, _d) = mailer_with("noreply@example.com", None);
    let mut e = email();
    e.subject = "Your eSIM is active\n".into();
    e.to_name = Some("Ana\r\nBcc: evil@example.net".into());
    let raw = formatted(&m.build(&e).unwrap());
    let hs = headers(&raw);
    assert_eq!(header(&hs, "Subject"), Some("Your eSIM is active"));
    assert!(header(&hs, "Bcc").is_none());
}

#[test]
fn bad_recipient_is_invalid_and_masked() {
    let (m, _d) = mailer_with("noreply@example.com", None);
    for bad in ["", "not-an-address", "ana@", "ana smith@example.com"] {
        let mut e = email();
        e.to_email = bad.into();
        match m.build(&e) {
            Err(SendError::Invalid { reason }) => {
                assert!(!reason.contains("smith@example.com"), "{reason}")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn malformed_message_id_is_invalid() {
    let (m, _d) = mailer_with("noreply@example.com", None);
    for bad in [
        "",
        "abc@example.com",
        "<abc>",
        "<a b@example.com>",
        "<x@y>\r\nBcc: a@b",
    ] {
        let mut e = email();
        e.message_id = bad.into();
        assert!(
            matches!(m.build(&e), Err(SendError::Invalid { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn new_names_the_bad_setting() {
    let base = MailerSettings {
        from: "noreply@example.com".into(),
        reply_to: None,
        transport: TransportSettings::Smtp {
            host: "localhost".into(),
            port: 587,
            tls: Tls::None,
            username: String::new(),
            password: String::new(),
            pool_size: 2,
        },
        send_timeout: Duration::from_secs(5),
    };
    let err = |s: MailerSettings| Mailer::new(s).unwrap_err().setting;

    let mut s = base.clone();
    s.from = "Example eSIM <nobody>".into();
    assert_eq!(err(s), "email.from");

    let mut s = base.clone();
    s.reply_to = Some("not an address".into());
    assert_eq!(err(s), "email.reply_to");

    let mut s = base.clone();
    s.send_timeout = Duration::ZERO;
    assert_eq!(err(s), "email.send_timeout");

    let with = |host: &str, port: u16, pool_size: u32| {
        let mut s = base.clone();
        s.transport = TransportSettings::Smtp {
            host: host.into(),
            port,
            tls: Tls::StartTls,
            username: String::new(),
            password: String::new(),
            pool_size,
        };
        s
    };
    assert_eq!(err(with("", 587, 1)), "email.smtp.host");
    assert_eq!(err(with("smtp example.com", 587, 1)), "email.smtp.host");
    assert_eq!(err(with("smtp.example.com", 0, 1)), "email.smtp.port");
    assert_eq!(
        err(with("smtp.example.com", 587, 0)),
        "email.smtp.pool_size"
    );
    assert!(Mailer::new(with("smtp.example.com", 587, 4)).is_ok());
}

#[test]
fn debug_output_never_shows_the_password() {
    let t = TransportSettings::Smtp {
        host: "smtp.example.com".into(),
        port: 587,
        tls: Tls::StartTls,
        username: "user".into(),
        password: "hunter2-secret".into(),
        pool_size: 1,
    };
    let s = format!("{t:?}");
    assert!(!s.contains("hunter2"), "{s}");
    assert!(s.contains("<redacted>"));
}

#[test]
fn message_id_is_stable_and_uses_the_from_domain() {
    let a = message_id_for(
        "esim:X/data/0.1/5368709120",
        "Example eSIM <noreply@mail.example.com>",
    );
    let b = message_id_for(
        "esim:X/data/0.1/5368709120",
        "Example eSIM <noreply@mail.example.com>",
    );
    let c = message_id_for(
        "esim:X/data/0.1/10737418240",
        "Example eSIM <noreply@mail.example.com>",
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(
        a.starts_with('<') && a.ends_with("@mail.example.com>"),
        "{a}"
    );
    assert_eq!(a.len(), 1 + 32 + 1 + "mail.example.com".len() + 1);
    assert!(check_message_id(&a).is_ok());
    assert!(message_id_for("x", "garbage").ends_with("@localhost>"));
}

#[test]
fn masks_addresses_in_text() {
    assert_eq!(
        crate::customers::mask_email("ana@example.com"),
        "a***@example.com"
    );
    assert_eq!(
        mask_addresses("550 5.1.1 <ana.lopez@example.com>: Recipient address rejected"),
        "550 5.1.1 <a***@example.com>: Recipient address rejected"
    );
    assert_eq!(mask_addresses("no address here"), "no address here");
}

#[test]
fn send_error_code_and_kind() {
    let e = SendError::RecipientRejected {
        code: 550,
        message: "user unknown".into(),
    };
    assert_eq!((e.code(), e.kind()), (Some(550), "recipient_rejected"));
    let e = SendError::Transient { reason: "x".into() };
    assert_eq!((e.code(), e.kind()), (None, "transient"));
    assert_eq!(
        SendError::TransportBroken { reason: "x".into() }.kind(),
        "transport_broken"
    );
    assert_eq!(
        SendError::MessageRejected {
            code: 554,
            message: "x".into()
        }
        .kind(),
        "message_rejected"
    );
    assert_eq!(SendError::Invalid { reason: "x".into() }.kind(), "invalid");
}

#[test]
fn inline_image_as_a_data_url_for_browsers() {
    let img = InlineImage::png("qr@esim-notify", "qr.png", vec![0x89, b'P', b'N', b'G']);
    assert_eq!(img.data_url(), "data:image/png;base64,iVBORw==");
    assert!(format!("{img:?}").contains("bytes: 4"));
}
