//! Issue 12, over SMTP: customers get every part of an email in their own
//! language with their own number and date formats, and the words at the
//! edges (half the data, none left, hours left, an unused plan, a revoked
//! eSIM) are true. The real app, the shipped templates, a real SMTP server.

use std::time::Duration;

use chrono::{Datelike, Utc};
use serde_json::{json, Value};

use crate::helpers::{data_usage, esim_status, eventually, spawn_app, TestApp};

const GIB: u64 = 1024 * 1024 * 1024;
const LIMIT: Duration = Duration::from_secs(15);

/// One received email, decoded.
pub(crate) struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub raw: String,
}

pub(crate) fn parse(raw: &str) -> Mail {
    let m = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("a MIME message");
    Mail {
        subject: m.subject().unwrap_or_default().to_string(),
        text: m.body_text(0).expect("a text part").to_string(),
        html: m.body_html(0).expect("an HTML part").to_string(),
        raw: raw.to_string(),
    }
}

/// What a reader sees of an HTML part: no head, no tags, entities as text.
pub(crate) fn visible(html: &str) -> String {
    let body = html.split("<body").nth(1).unwrap_or(html);
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
}

/// Waits for the `n`th email (1-based) and returns it.
pub(crate) async fn nth_mail(app: &TestApp, n: usize) -> Mail {
    let arrived = eventually(LIMIT, || async { app.received().len() >= n }).await;
    assert!(arrived, "email {n} did not arrive");
    parse(&app.received()[n - 1])
}

pub(crate) async fn bind(app: &TestApp, tran: &str, locale: Option<&str>, tz: &str) {
    let (status, body) = app
        .bind(
            json!({"email": format!("{tran}@example.com"), "name": "Alex Kim",
                      "locale": locale, "timezone": tz, "esimTranNo": tran}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

pub(crate) async fn post(app: &TestApp, body: String) {
    let (status, answer) = app.post(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted", "{answer}");
}

fn validity(notify_id: &str, tran: &str, expires: chrono::DateTime<Utc>) -> String {
    json!({
        "notifyType": "VALIDITY_USAGE", "notifyId": notify_id,
        "eventGenerateTime": Utc::now().to_rfc3339(),
        "content": {"esimTranNo": tran, "iccid": format!("89{tran}"), "orderNo": format!("B{tran}"),
                    "durationUnit": "DAY", "totalDuration": 30, "remain": 1,
                    "expiredTime": expires.to_rfc3339()}
    })
    .to_string()
}

/// What a customer of each language must read. The data figures are those of
/// the provider's sample: 5351505742 of 53687091200 bytes left (9.97 %).
struct Expect {
    locale: &'static str,
    tz: &'static str,
    data_subject: &'static str,
    data_figure: &'static str,
    data_percent: &'static str,
    hours: &'static str,
    months: [&'static str; 12],
    /// Words of the English emails that must not show up.
    english: &'static [&'static str],
}

const ENGLISH: &[&str] = &[
    "Questions?",
    "Unsubscribe",
    " left",
    "Hello",
    "Hi ",
    "your plan",
];

const LANGUAGES: [Expect; 4] = [
    Expect {
        locale: "es",
        tz: "Europe/Madrid",
        data_subject: "Te queda el 10\u{a0}% o menos de tus datos",
        data_figure: "4,98 GB de 50 GB",
        data_percent: "(10\u{a0}%)",
        hours: "termina en 37 horas",
        months: [
            "enero",
            "febrero",
            "marzo",
            "abril",
            "mayo",
            "junio",
            "julio",
            "agosto",
            "septiembre",
            "octubre",
            "noviembre",
            "diciembre",
        ],
        english: ENGLISH,
    },
    Expect {
        locale: "fr",
        tz: "Europe/Paris",
        data_subject: "Il vous reste 10\u{a0}% ou moins de vos données",
        data_figure: "4,98 Go sur 50 Go",
        data_percent: "(10\u{a0}%)",
        hours: "se termine dans 37 heures",
        months: [
            "janvier",
            "février",
            "mars",
            "avril",
            "mai",
            "juin",
            "juillet",
            "août",
            "septembre",
            "octobre",
            "novembre",
            "décembre",
        ],
        english: ENGLISH,
    },
    Expect {
        locale: "de",
        tz: "Europe/Berlin",
        data_subject: "Nur noch 10\u{a0}% oder weniger Ihres Datenvolumens übrig",
        data_figure: "4,98 GB von 50 GB",
        data_percent: "(10\u{a0}%)",
        hours: "endet in 37 Stunden",
        months: [
            "Januar",
            "Februar",
            "März",
            "April",
            "Mai",
            "Juni",
            "Juli",
            "August",
            "September",
            "Oktober",
            "November",
            "Dezember",
        ],
        english: ENGLISH,
    },
    Expect {
        locale: "pt-BR",
        tz: "America/Sao_Paulo",
        data_subject: "Restam 10% ou menos dos seus dados",
        data_figure: "4,98 GB de 50 GB",
        data_percent: "(10%)",
        hours: "termina em 37 horas",
        months: [
            "janeiro",
            "fevereiro",
            "março",
            "abril",
            "maio",
            "junho",
            "julho",
            "agosto",
            "setembro",
            "outubro",
            "novembro",
            "dezembro",
        ],
        english: ENGLISH,
    },
];

#[tokio::test]
async fn each_customer_gets_every_part_in_their_language_with_their_numbers_and_dates() {
    let app = spawn_app("").await;
    for (i, lang) in LANGUAGES.iter().enumerate() {
        let tran = format!("2605010000{i:04}");
        bind(&app, &tran, Some(lang.locale), lang.tz).await;

        post(
            &app,
            data_usage(
                &format!("d-{i}"),
                &tran,
                &format!("89{tran}"),
                50 * GIB,
                5351505742,
            ),
        )
        .await;
        let data = nth_mail(&app, 2 * i + 1).await;
        assert_eq!(data.subject, lang.data_subject, "{}", lang.locale);
        for part in [&data.text, &visible(&data.html)] {
            assert!(part.contains(lang.data_figure), "{}: {part}", lang.locale);
            assert!(part.contains(lang.data_percent), "{}: {part}", lang.locale);
        }

        // 37 hours and a half before the plan ends: the email counts at sending.
        let expires = Utc::now() + chrono::Duration::minutes(37 * 60 + 30);
        post(&app, validity(&format!("v-{i}"), &tran, expires)).await;
        let val = nth_mail(&app, 2 * i + 2).await;
        assert!(
            val.subject.contains(lang.hours),
            "{}: {}",
            lang.locale,
            val.subject
        );
        let local = expires.with_timezone(&lang.tz.parse::<chrono_tz::Tz>().unwrap());
        let date = format!("{}", local.day());
        let month = lang.months[local.month0() as usize];
        for part in [&val.text, &visible(&val.html)] {
            assert!(part.contains(lang.hours), "{}: {part}", lang.locale);
            assert!(
                part.contains(month) && part.contains(&date),
                "{}: {month} {date} in {part}",
                lang.locale
            );
        }

        for mail in [&data, &val] {
            let lang_attr = format!("<html lang=\"{}\">", lang.locale);
            assert!(mail.html.contains(&lang_attr), "{}", lang.locale);
            assert!(mail.raw.contains("multipart/alternative"));
            for word in lang.english {
                for part in [&mail.subject, &mail.text, &visible(&mail.html)] {
                    assert!(
                        !part.contains(word),
                        "{}: English `{word}` in {part}",
                        lang.locale
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn data_emails_say_what_is_true_at_half_and_at_nothing_left() {
    let app = spawn_app("").await;
    let tran = "26050200000001";
    bind(&app, tran, None, "UTC").await;
    // Exactly at the 50 % level: the level in the subject, the figure in the body, once.
    post(&app, data_usage("h-1", tran, "89h1", 50 * GIB, 25 * GIB)).await;
    let half = nth_mail(&app, 1).await;
    assert_eq!(half.subject, "50% or less of your data left");
    for part in [&half.text, &visible(&half.html)] {
        assert!(part.contains("25 GB of 50 GB left (50%)"), "{part}");
        assert!(!part.contains("Less than"), "{part}");
    }
    assert_eq!(
        visible(&half.html)
            .matches("or less of your data left")
            .count(),
        1,
        "the level is said once: {}",
        visible(&half.html)
    );

    // Nothing left: the allowance used, never "0 B", subject included.
    post(&app, data_usage("h-2", tran, "89h1", 50 * GIB, 0)).await;
    let none = nth_mail(&app, 2).await;
    assert_eq!(none.subject, "You've used all 50 GB of your plan");
    for part in [&none.text, &visible(&none.html)] {
        assert!(
            part.contains("You've used all 50 GB of your plan"),
            "{part}"
        );
        assert!(part.contains("can't go online"), "{part}");
        assert!(!part.contains("0 B"), "{part}");
        assert!(!part.contains("or less"), "{part}");
    }
}

#[tokio::test]
async fn an_unused_plan_that_expired_gets_its_own_email_once() {
    let app = spawn_app("").await;
    let tran = "26050300000001";
    bind(&app, tran, Some("de"), "Europe/Berlin").await;
    post(&app, esim_status("u-1", tran, "89u1", "UNUSED_EXPIRED")).await;
    let mail = nth_mail(&app, 1).await;
    assert_eq!(mail.subject, "Ihre eSIM ist ungenutzt abgelaufen");
    assert!(mail.text.contains("wurde nie genutzt"), "{}", mail.text);

    // The other expiry status afterwards is the same fact: no second email.
    post(&app, esim_status("u-2", tran, "89u1", "USED_EXPIRED")).await;
    let (_, esim) = app
        .get_json(&app.admin_url(&format!("/admin/esims/{tran}")))
        .await;
    let decisions = esim.to_string();
    assert!(decisions.contains("expiry already told"), "{decisions}");
    assert_eq!(app.received().len(), 1);
}

#[tokio::test]
async fn revoked_and_cancelled_state_the_fact_and_offer_a_contact_button() {
    // With a support page, the button leads there.
    let app = spawn_app("[brand]\nsupport_url = \"https://help.example.com/contact\"\n").await;
    let tran = "26050400000001";
    bind(&app, tran, None, "UTC").await;
    post(&app, esim_status("r-1", tran, "89r1", "REVOKED")).await;
    let revoked = nth_mail(&app, 1).await;
    assert_eq!(revoked.subject, "Your eSIM has been deactivated");
    assert!(
        revoked
            .html
            .contains("href=\"https://help.example.com/contact\""),
        "{}",
        revoked.html
    );
    assert!(revoked.html.contains(">Contact us</a>"));
    assert!(revoked.text.contains("https://help.example.com/contact"));
    for part in [&revoked.text, &revoked.html] {
        assert!(
            !part.contains("by the network"),
            "no cause is claimed: {part}"
        );
    }
    app.stop().await;

    // Without one, it writes to the support address.
    let app = spawn_app("").await;
    let tran = "26050400000002";
    bind(&app, tran, Some("fr"), "Europe/Paris").await;
    post(&app, esim_status("c-1", tran, "89c1", "CANCEL")).await;
    let cancelled = nth_mail(&app, 1).await;
    assert_eq!(cancelled.subject, "Votre eSIM a été annulée");
    assert!(
        cancelled
            .html
            .contains("href=\"mailto:support@example.com\""),
        "{}",
        cancelled.html
    );
    assert!(cancelled.html.contains(">Nous contacter</a>"));
    assert!(cancelled.text.contains("support@example.com"));
}

#[tokio::test]
async fn the_footer_shows_the_unsubscribe_link_and_the_postal_address_when_configured() {
    let app = spawn_app(
        "[email]\nlist_unsubscribe = \"mailto:unsubscribe@example.com\"\n[brand]\naddress = \"Example eSIM SL, Calle Mayor 1, 28013 Madrid\"\n",
    )
    .await;
    let tran = "26050500000001";
    bind(&app, tran, Some("es"), "Europe/Madrid").await;
    post(&app, esim_status("a-1", tran, "89a1", "IN_USE")).await;
    let mail = nth_mail(&app, 1).await;
    assert_eq!(mail.subject, "Tu eSIM ya está activa");
    assert!(
        mail.html
            .contains("href=\"mailto:unsubscribe@example.com\""),
        "{}",
        mail.html
    );
    assert!(mail.html.contains("Dejar de recibir estos correos"));
    assert!(
        mail.text
            .contains("Dejar de recibir estos correos: mailto:unsubscribe@example.com"),
        "{}",
        mail.text
    );
    for part in [&mail.text, &mail.html] {
        assert!(part.contains("Calle Mayor 1, 28013 Madrid"), "{part}");
    }
    app.stop().await;

    // Not configured: no link, no address line.
    let app = spawn_app("").await;
    bind(&app, tran, Some("es"), "Europe/Madrid").await;
    post(&app, esim_status("a-2", tran, "89a1", "IN_USE")).await;
    let mail = nth_mail(&app, 1).await;
    assert!(!mail.html.contains("Dejar de recibir"));
    assert!(!mail.text.contains("Dejar de recibir"));
}

/// The preheader: hidden text first in the body, its own words, not the subject.
#[tokio::test]
async fn each_email_has_a_hidden_preheader_of_its_own() {
    let app = spawn_app("").await;
    let tran = "26050600000001";
    bind(&app, tran, Some("pt"), "America/Sao_Paulo").await;
    post(&app, data_usage("p-1", tran, "89p1", 50 * GIB, 5351505742)).await;
    let mail = nth_mail(&app, 1).await;
    let body = mail.html.split("<body").nth(1).expect("a body");
    let first_div = body.split("<div").nth(1).expect("the preheader");
    assert!(first_div.contains("display:none"), "{first_div}");
    let preheader: Value = json!(first_div
        .split('>')
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap());
    assert!(
        preheader
            .as_str()
            .unwrap()
            .contains("Restam 4,98 GB de 50 GB"),
        "{preheader}"
    );
    assert!(!preheader.as_str().unwrap().contains(&mail.subject));
}

/// The one-click link opens a page in the email's language (the locale is
/// sealed in the token); a link without one follows the browser's.
#[tokio::test]
async fn the_unsubscribe_pages_speak_the_customers_language() {
    let app = spawn_app("[email]\nlist_unsubscribe = \"one-click\"\n").await;
    let tran = "26050700000001";
    bind(&app, tran, Some("de-AT"), "Europe/Vienna").await;
    post(&app, esim_status("o-1", tran, "89o1", "IN_USE")).await;
    let mail = nth_mail(&app, 1).await;
    let unfolded = mail.raw.replace("\r\n ", " ").replace("\r\n\t", " ");
    let url = unfolded
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: <"))
        .and_then(|l| l.strip_suffix('>'))
        .expect("List-Unsubscribe")
        .to_string();
    // The footer shows the same link (HTML-escaped in the attribute).
    assert!(mail.text.contains(&url), "{}", mail.text);
    assert!(visible(&mail.html).contains("Diese E-Mails abbestellen"));

    let page = app
        .http
        .get(&url)
        .header("accept-language", "en-US,en;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<html lang=\"de-AT\">"), "{html}");
    assert!(
        html.contains("Möchten Sie an <strong>")
            && html.contains("keine E-Mails mehr zu Ihrer eSIM erhalten?"),
        "{html}"
    );
    assert!(html.contains(">Abbestellen</button>"), "{html}");
    let done = app.http.post(&url).send().await.unwrap();
    assert_eq!(done.status().as_u16(), 200);
    assert!(done.text().await.unwrap().contains("Sie sind abgemeldet"));

    // A broken link: the browser's language, then the default.
    let broken = format!("http://{}/unsubscribe?t=broken", app.public);
    let fr = app
        .http
        .get(&broken)
        .header("accept-language", "it;q=0.9, fr-CH, en;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(fr.status().as_u16(), 400);
    let html = fr.text().await.unwrap();
    assert!(html.contains("Ce lien n’est pas valide"), "{html}");
    assert!(html.contains("<html lang=\"fr-CH\">"), "{html}");
    let en = app.http.get(&broken).send().await.unwrap();
    assert_eq!(en.status().as_u16(), 400);
    assert!(en.text().await.unwrap().contains("This link is not valid"));
}
