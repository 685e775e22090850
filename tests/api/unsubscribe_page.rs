//! The unsubscribe page (issue 18): it says which emails stop and which
//! service emails (`email.essential`) still come, in the customer's
//! language; it cannot be framed, cached or leak its URL; and its form posts
//! under the path of `server.public_url`, where a reverse proxy serves us.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{data_usage, eventually, spawn_app};
use crate::suppression_reasons::one_click_link;

const GIB: u64 = 1 << 30;

fn assert_guarded(r: &reqwest::Response) {
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let csp = h("content-security-policy");
    for part in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("referrer-policy"), "no-referrer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_names_the_service_emails_that_still_come_in_the_customers_language() {
    let app = spawn_app(
        "[email]\nlist_unsubscribe = \"one-click\"\n\
         [server]\npublic_url = \"https://x.example/notify/\"\n\
         [brand]\naccent_color = \"#c2185b\"\n",
    )
    .await;
    app.bind(json!({"email": "ana@example.com", "esimTranNo": "P1", "locale": "es"}))
        .await;
    app.post(&data_usage(
        "d-1",
        "P1",
        "8900000000000000601",
        10 * GIB,
        GIB,
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.received().len() == 1
        })
        .await
    );
    let link = one_click_link(&app.received()[0]);
    let prefix = "https://x.example/notify/unsubscribe?t=";
    assert!(link.starts_with(prefix), "{link}");
    // The proxy would send it to us at /unsubscribe.
    let local = format!(
        "http://{}/unsubscribe?t={}",
        app.public,
        &link[prefix.len()..]
    );

    let page = app.http.get(&local).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_guarded(&page);
    let html = page.text().await.unwrap();
    // Handlebars writes `=` as `&#x3D;` in an attribute, which browsers read back.
    let action = html.replace("&#x3D;", "=");
    assert!(
        action.contains(&format!(
            "action=\"/notify/unsubscribe?t={}\"",
            &link[prefix.len()..]
        )),
        "the form posts under public_url's path: {html}"
    );
    // The brand's accent, not the shipped blue; the reviewers' Spanish heading.
    assert!(html.contains("background: #c2185b"), "{html}");
    assert!(!html.contains("#0b57d0"), "{html}");
    assert!(html.contains("<h1>Darse de baja</h1>"), "{html}");
    assert!(
        html.contains("Seguirás recibiendo los correos de servicio"),
        "{html}"
    );
    assert!(
        html.contains("los datos de instalación de cada eSIM"),
        "{html}"
    );
    assert!(
        html.contains("el aviso de que una eSIM se ha cancelado"),
        "{html}"
    );

    let done = app.http.post(&local).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert_guarded(&done);
    let html = done.text().await.unwrap();
    assert!(
        html.contains("No enviaremos más avisos sobre tus datos"),
        "{html}"
    );
    assert!(
        html.contains("los datos de instalación de cada eSIM"),
        "{html}"
    );

    // An error page is guarded too.
    let bad = app
        .http
        .get(format!("http://{}/unsubscribe?t=forged", app.public))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_guarded(&bad);
    app.stop().await;
}
