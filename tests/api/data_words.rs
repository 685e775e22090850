//! Issue 22, the words and numbers of the data emails at their edges, over
//! SMTP: the real share under the level crossed, no decimals below a GB,
//! French units, nothing left.

use crate::helpers::{data_usage, spawn_app};
use crate::locales::{bind, nth_mail, post, visible};

const GIB: u64 = 1024 * 1024 * 1024;

#[tokio::test]
async fn a_50_percent_level_crossed_at_21_percent_leads_with_21_percent() {
    let app = spawn_app("").await;
    let tran = "26060200000001";
    bind(&app, tran, None, "UTC").await;
    let remain = (5 * GIB) * 21 / 100; // 1.05 GB
    post(&app, data_usage("w-1", tran, "89w1", 5 * GIB, remain)).await;
    let mail = nth_mail(&app, 1).await;
    assert_eq!(mail.subject, "50% or less of your data left");
    let html = visible(&mail.html);
    assert!(html.contains("1.05 GB of 5 GB left (21%)"), "{html}");
    // The figure comes first in the text part; the level is the subject's.
    let first = mail.text.lines().nth(2).unwrap_or_default();
    assert_eq!(first, "1.05 GB of 5 GB left (21%).", "{}", mail.text);
    // Said once: the headline, not again in the first sentence.
    assert_eq!(html.matches("50% or less").count(), 1, "{html}");
}

#[tokio::test]
async fn below_a_gigabyte_there_are_no_decimals() {
    let app = spawn_app("").await;
    let tran = "26060200000002";
    bind(&app, tran, None, "UTC").await;
    // 9.97 % of 5 GB: 510.46 MB.
    post(&app, data_usage("w-2", tran, "89w2", 5 * GIB, 535_260_299)).await;
    let mail = nth_mail(&app, 1).await;
    for part in [&mail.text, &visible(&mail.html)] {
        assert!(part.contains("510 MB of 5 GB left (10%)"), "{part}");
        assert!(!part.contains("510.46"), "{part}");
    }
}

#[tokio::test]
async fn french_customers_read_go_and_mo_and_one_sur() {
    let app = spawn_app("").await;
    let tran = "26060200000003";
    bind(&app, tran, Some("fr"), "Europe/Paris").await;
    // Under 1 % left: the "almost used up" wording.
    post(
        &app,
        data_usage("w-3", tran, "89w3", 5 * GIB, 40 * 1024 * 1024),
    )
    .await;
    let mail = nth_mail(&app, 1).await;
    for part in [&mail.text, &visible(&mail.html)] {
        assert!(
            part.contains("Il ne vous reste que 40 Mo sur 5 Go"),
            "{part}"
        );
        assert!(!part.contains(" MB") && !part.contains(" GB"), "{part}");
        assert!(!part.contains("sur 5 Go sur"), "{part}");
    }
}

#[tokio::test]
async fn nothing_left_says_the_allowance_used_in_every_language() {
    let app = spawn_app("").await;
    for (i, (locale, subject, not)) in [
        ("en", "You've used all 5 GB of your plan", "0 B"),
        ("es", "Has usado los 5 GB de tu plan", "0 B"),
        ("fr", "Vous avez utilisé les 5 Go de votre forfait", "0 o"),
        ("de", "Sie haben die 5 GB Ihres Tarifs verbraucht", "0 B"),
        ("pt", "Você usou todos os 5 GB do seu plano", "0 B"),
    ]
    .into_iter()
    .enumerate()
    {
        let tran = format!("2606020000010{i}");
        bind(&app, &tran, Some(locale), "UTC").await;
        post(
            &app,
            data_usage(&format!("z-{i}"), &tran, &format!("89z{i}"), 5 * GIB, 0),
        )
        .await;
        let mail = nth_mail(&app, i + 1).await;
        assert_eq!(mail.subject, subject, "{locale}");
        for part in [&mail.subject, &mail.text, &visible(&mail.html)] {
            assert!(!part.contains(not), "{locale}: {part}");
            assert!(
                part.contains(if locale == "fr" { "5 Go" } else { "5 GB" }),
                "{locale}: {part}"
            );
        }
    }
}
