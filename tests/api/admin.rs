//! The admin listener of SPEC §4 over real HTTP, on a real sled store.

use crate::helpers::{data_usage, spawn_app, TestApp};
use esim_notify::customers::IdKind;
use reqwest::Method;
use serde_json::{json, Value};

const GB: u64 = 1024 * 1024 * 1024;

/// One admin request; the status and the JSON answer (Null when empty).
async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.http.request(method, app.admin_url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("admin request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

/// Sending stays off so that what is queued stays visible in the outbox,
/// whatever the dispatcher does.
async fn pause(app: &TestApp) {
    let (s, v) = call(app, Method::POST, "/admin/pause", None).await;
    assert_eq!((s, v), (200, json!({"paused": true})));
}

/// 50 %, 20 % then 10 % left for an eSIM nobody is bound to yet.
async fn park_three(app: &TestApp, tran: &str, iccid: &str) {
    let total = 50 * GB;
    for (i, remain) in [total / 2, total / 5, total / 10].into_iter().enumerate() {
        let (s, v) = app
            .post(&data_usage(
                &format!("{tran}-{i}"),
                tran,
                iccid,
                total,
                remain,
            ))
            .await;
        assert_eq!((s, &v["status"]), (200, &json!("accepted")), "{v}");
    }
}

fn count(decisions: &Value, what: &str) -> usize {
    decisions
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["what"] == what)
        .count()
}

#[tokio::test]
async fn the_admin_token_is_required_as_bearer_or_basic_password() {
    let app = spawn_app("[admin]\ntoken = \"s3cret-admin\"\n").await;
    let url = app.admin_url("/admin/outbox");

    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");

    let r = app
        .http
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Unknown paths under /admin do not tell an outsider they do not exist.
    let r = app
        .http
        .get(app.admin_url("/admin/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let r = app
        .http
        .get(&url)
        .bearer_auth("s3cret-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));

    let r = app
        .http
        .get(&url)
        .basic_auth("anyone", Some("s3cret-admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = app
        .http
        .get(&url)
        .basic_auth("anyone", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // /metrics is not an /admin path.
    let r = app
        .http
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    app.stop().await;
}

#[tokio::test]
async fn customers_are_bound_read_and_removed() {
    let app = spawn_app("").await;
    let (s, v) = app
        .bind(
            json!({"email": "Ana@Example.COM", "name": "Ana", "locale": "es",
                     "timezone": "Europe/Madrid", "iccid": "008900000000000001", "orderNo": "B1"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "bound", "released": 0, "superseded": 0, "replaced": []})
    );

    let (s, v) = call(
        &app,
        Method::GET,
        "/admin/customers?iccid=008900000000000001",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"email": "Ana@example.com", "name": "Ana", "locale": "es", "timezone": "Europe/Madrid"})
    );
    let (s, v) = call(&app, Method::GET, "/admin/customers?orderNo=B1", None).await;
    assert_eq!((s, v["email"].as_str()), (200, Some("Ana@example.com")));
    let (s, _) = call(&app, Method::GET, "/admin/customers?esimTranNo=none", None).await;
    assert_eq!(s, 404);

    for (query, why) in [
        ("", "no identifier"),
        ("?colour=red", "unknown identifier"),
        ("?iccid=1&orderNo=2", "exactly one"),
        ("?iccid=", "empty"),
    ] {
        let (s, v) = call(&app, Method::GET, &format!("/admin/customers{query}"), None).await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(error_of(&v).contains(why), "{query}: {v}");
    }

    let (s, v) = call(
        &app,
        Method::DELETE,
        "/admin/customers?iccid=008900000000000001",
        None,
    )
    .await;
    assert_eq!((s, v), (204, Value::Null));
    let (s, _) = call(
        &app,
        Method::DELETE,
        "/admin/customers?iccid=008900000000000001",
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &app,
        Method::GET,
        "/admin/customers?iccid=008900000000000001",
        None,
    )
    .await;
    assert_eq!(s, 404);
    // The other identifier of the same customer is still bound.
    let (s, _) = call(&app, Method::GET, "/admin/customers?orderNo=B1", None).await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn bad_customer_bindings_are_400_with_a_reason() {
    let app = spawn_app("").await;
    for (body, why) in [
        (
            json!({"email": "not-an-address", "iccid": "1"}),
            "not an email address",
        ),
        (json!({"email": "a@b.co"}), "no identifier"),
        (json!({"email": "a@b.co", "iccid": "  "}), "no identifier"),
        (
            json!({"email": "a@b.co", "iccid": "890100000000000001", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
        (
            json!({"email": "a@b.co", "iccid": "abc"}),
            "an ICCID is 18 to 22 digits",
        ),
        (
            json!({"email": "a@b.co", "iccid": "89010000000000001"}),
            "an ICCID is 18 to 22 digits",
        ),
        (
            json!({"email": "a@b.co", "esimTranNo": "T1", "locale": "english"}),
            "locale `english`: not a language tag",
        ),
        (
            json!({"email": "a@b.co", "esimTranNo": "T1", "locale": "xx-YY"}),
            "not a language CLDR knows",
        ),
        (
            json!({"email": "a@b.co", "esimTranNo": "T1", "locale": "en-YY"}),
            "not a region CLDR knows",
        ),
        (json!({"email": "x@y", "esimTranNo": "T1"}), "has no dot"),
        (json!({"iccid": "1"}), "email"),
        (json!({"email": 7, "iccid": "1"}), "JSON"),
    ] {
        let (s, v) = app.bind(body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(error_of(&v).contains(why), "{body}: {v}");
    }
    let r = app
        .http
        .put(app.admin_url("/admin/customers"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(error_of(&v).contains("JSON"), "{v}");
    app.stop().await;
}

#[tokio::test]
async fn parked_notices_are_released_by_binding_the_customer() {
    let app = spawn_app("").await;
    pause(&app).await;
    park_three(&app, "26042216320015", "8910300000059824319").await;

    let (s, v) = call(&app, Method::GET, "/admin/esims/8910300000059824319", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["parked"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(count(&v["decisions"], "parked"), 3, "{v}");
    assert_eq!(v["recipient"], Value::Null);
    assert_eq!(v["identifiers"]["esimTranNo"], "26042216320015");

    let (s, v) = app
        .bind(json!({"email": "ana@example.com", "iccid": "8910300000059824319"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "bound", "released": 1, "superseded": 2, "replaced": []})
    );

    let (s, v) = call(&app, Method::GET, "/admin/esims/8910300000059824319", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["parked"], json!([]));
    let d = &v["decisions"];
    assert_eq!(count(d, "parked"), 3, "{v}");
    assert_eq!(count(d, "released"), 1, "{v}");
    assert_eq!(count(d, "superseded"), 2, "{v}");
    assert_eq!(v["recipient"]["email"], "ana@example.com");
    // Oldest first: the parking comes before the release.
    let whats: Vec<&str> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    let first_parked = whats.iter().position(|w| *w == "parked").unwrap();
    let released = whats.iter().position(|w| *w == "released").unwrap();
    assert!(first_parked < released, "{whats:?}");

    let (s, outbox) = call(&app, Method::GET, "/admin/outbox", None).await;
    assert_eq!(s, 200);
    let rows = outbox.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{outbox}");
    let row = &rows[0];
    assert_eq!(row["template"], "data_usage");
    assert_eq!(row["level"], 0.1);
    assert_eq!(row["esim"], "26042216320015");
    assert_eq!(row["recipient"], "ana@example.com");
    assert_eq!(row["attempts"], 0);
    for key in ["id", "next_attempt", "waiting_for", "last_error"] {
        assert!(row.get(key).is_some(), "{key} missing in {row}");
    }
    assert!(chrono::DateTime::parse_from_rfc3339(row["next_attempt"].as_str().unwrap()).is_ok());
    app.stop().await;
}

#[tokio::test]
async fn queued_notices_can_be_cancelled() {
    let app = spawn_app("").await;
    pause(&app).await;
    park_three(&app, "T100", "8900100").await;
    app.bind(json!({"email": "c@example.com", "esimTranNo": "T100"}))
        .await;
    let (_, outbox) = call(&app, Method::GET, "/admin/outbox", None).await;
    let id = outbox[0]["id"].as_u64().expect("one queued notice");

    let (s, v) = call(&app, Method::DELETE, &format!("/admin/outbox/{id}"), None).await;
    assert_eq!((s, v), (204, Value::Null));
    let (s, v) = call(&app, Method::DELETE, &format!("/admin/outbox/{id}"), None).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(&app, Method::DELETE, "/admin/outbox/abc", None).await;
    assert_eq!(s, 400, "{v}");
    let (_, outbox) = call(&app, Method::GET, "/admin/outbox", None).await;
    assert_eq!(outbox, json!([]));
    let (_, view) = call(&app, Method::GET, "/admin/esims/T100", None).await;
    assert_eq!(count(&view["decisions"], "cancelled"), 1, "{view}");

    // Nothing is dead yet; retrying what is not there is a 404.
    let (s, v) = call(&app, Method::GET, "/admin/dead", None).await;
    assert_eq!((s, v), (200, json!([])));
    let (s, _) = call(&app, Method::POST, &format!("/admin/dead/{id}/retry"), None).await;
    assert_eq!(s, 404);
    app.stop().await;
}

#[tokio::test]
async fn forgetting_a_customer_removes_bindings_and_queued_notices() {
    let app = spawn_app("").await;
    pause(&app).await;
    park_three(&app, "T200", "890000000000000200").await;
    app.bind(
        json!({"email": "gone@example.com", "iccid": "890000000000000200", "orderNo": "BT200"}),
    )
    .await;
    let (s, v) = call(
        &app,
        Method::POST,
        "/admin/customers/forget",
        Some(json!({"email": "GONE@example.com"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["bindings"], 2);
    assert_eq!(v["cancelled"], 1);
    let (_, outbox) = call(&app, Method::GET, "/admin/outbox", None).await;
    assert_eq!(outbox, json!([]));
    let (s, _) = call(&app, Method::GET, "/admin/customers?iccid=8900200", None).await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &app,
        Method::POST,
        "/admin/customers/forget",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 400);
    app.stop().await;
}

#[tokio::test]
async fn the_suppression_list_is_read_added_to_and_removed_from() {
    let app = spawn_app("").await;
    let (s, v) = call(&app, Method::GET, "/admin/suppressions", None).await;
    assert_eq!((s, v), (200, json!([])));

    let (s, v) = call(
        &app,
        Method::PUT,
        "/admin/suppressions/bounce@example.com",
        Some(json!({"reason": "complained"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["email"], "bounce@example.com");
    assert_eq!(v["reason"], "complained");
    let (s, v) = call(
        &app,
        Method::PUT,
        "/admin/suppressions/Other@Example.com",
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["reason"], "operator");
    let (s, v) = call(
        &app,
        Method::PUT,
        "/admin/suppressions/not-an-address",
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");

    let (_, list) = call(&app, Method::GET, "/admin/suppressions", None).await;
    let emails: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["bounce@example.com", "other@example.com"]);

    let (s, v) = call(
        &app,
        Method::GET,
        "/admin/suppressions/other@example.com",
        None,
    )
    .await;
    assert_eq!((s, &v["reason"]), (200, &json!("operator")));
    let (s, _) = call(
        &app,
        Method::DELETE,
        "/admin/suppressions/other@example.com",
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        &app,
        Method::DELETE,
        "/admin/suppressions/other@example.com",
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &app,
        Method::GET,
        "/admin/suppressions/other@example.com",
        None,
    )
    .await;
    assert_eq!(s, 404);
    app.stop().await;
}

#[tokio::test]
async fn pause_and_resume_set_the_flag() {
    let app = spawn_app("").await;
    pause(&app).await;
    let (_, ready) = app.get_json(&app.admin_url("/readyz")).await;
    assert_eq!(ready["paused"], true);
    let (s, v) = call(&app, Method::POST, "/admin/resume", None).await;
    assert_eq!((s, v), (200, json!({"paused": false})));
    let (_, ready) = app.get_json(&app.admin_url("/readyz")).await;
    assert_eq!(ready["paused"], false);

    // The flag is kept in the store: a restart starts paused.
    pause(&app).await;
    let app = app.restart().await;
    let (_, ready) = app.get_json(&app.admin_url("/readyz")).await;
    assert_eq!(ready["paused"], true);
    app.stop().await;
}

#[tokio::test]
async fn a_backup_is_a_store_that_opens() {
    let app = spawn_app("").await;
    park_three(&app, "T300", "8900300").await;
    app.bind(json!({"email": "b@example.com", "orderNo": "BT300"}))
        .await;
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().join("copy");

    let (s, v) = call(
        &app,
        Method::POST,
        "/admin/backup",
        Some(json!({"dir": dir})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &app,
        Method::POST,
        "/admin/backup",
        Some(json!({"dir": dir})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("not empty"), "{v}");
    // File-system trouble about the target is the client's: a 400 with why.
    std::os::unix::fs::symlink(
        target.path().join("nowhere"),
        target.path().join("dangling"),
    )
    .unwrap();
    for (bad, why) in [
        (json!(app.store_path().join("inside")), "inside the store"),
        (
            json!(app.config.templates.dir.join("x")),
            "inside the templates",
        ),
        (json!(target.path().join("dangling")), "symbolic link"),
        (json!("copy\u{0}x"), "NUL"),
    ] {
        let (s, v) = call(
            &app,
            Method::POST,
            "/admin/backup",
            Some(json!({"dir": bad})),
        )
        .await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(error_of(&v).contains(why), "{bad}: {v}");
    }
    // A relative dir is taken from the config file's directory.
    let (s, v) = call(
        &app,
        Method::POST,
        "/admin/backup",
        Some(json!({"dir": "relative-copy"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let written = app.dir.path().join("relative-copy");
    assert!(written.join("db").exists(), "{v}");
    let (s, _) = call(
        &app,
        Method::POST,
        "/admin/backup",
        Some(json!({"folder": "x"})),
    )
    .await;
    assert_eq!(s, 400);

    let copy = crate::helpers::open_engine(&dir, std::time::Duration::from_secs(3600))
        .expect("the backup opens");
    let view = copy
        .esim_view(None, "8900300")
        .unwrap()
        .expect("the eSIM is in the copy");
    assert_eq!(view.ids.esim_tran_no.as_deref(), Some("T300"));
    assert_eq!(
        copy.recipient_by(IdKind::OrderNo, "BT300")
            .unwrap()
            .map(|r| r.email),
        Some("b@example.com".to_string())
    );
    app.stop().await;
}

#[tokio::test]
async fn an_esim_is_found_by_any_of_its_identifiers() {
    let app = spawn_app("").await;
    park_three(&app, "T400", "8900400").await;
    for id in ["8900400", "T400", "BT400", "tx-T400"] {
        let (s, v) = call(&app, Method::GET, &format!("/admin/esims/{id}"), None).await;
        assert_eq!(s, 200, "{id}: {v}");
        assert_eq!(v["identifiers"]["iccid"], "8900400", "{id}");
        assert_eq!(v["identifiers"]["orderNo"], "BT400", "{id}");
    }
    let (s, v) = call(&app, Method::GET, "/admin/esims/unknown", None).await;
    assert_eq!(s, 404);
    assert!(v["error"].is_string());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_renders_every_mapped_template_for_a_browser() {
    let app = crate::helpers::spawn_app("[admin]\ntoken = \"adm1n\"\n").await;
    let url = app.admin_url("/admin/preview");
    let refused = app.http.get(&url).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Basic"),
        "a browser must be asked for a password: {challenge}"
    );
    let r = app
        .http
        .get(&url)
        .basic_auth("operator", Some("adm1n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    for needle in [
        "10% or less of your data left",
        "esim_expired",
        "esim_activated",
        "validity_usage",
        "data-locale=\"es\"",
    ] {
        assert!(page.contains(needle), "preview lacks {needle}");
    }
    assert!(
        !page.contains("cannot render"),
        "a shipped template failed to render in the preview"
    );
    app.stop().await;
}

#[tokio::test]
async fn parked_notices_are_listed_with_when_they_expire() {
    let app = spawn_app("[customers]\npark_for = \"72h\"\n").await;
    pause(&app).await;
    let (s, v) = call(&app, Method::GET, "/admin/parked", None).await;
    assert_eq!((s, v), (200, json!([])));
    park_three(&app, "26042216320015", "8910300000059824319").await;

    let (s, v) = call(&app, Method::GET, "/admin/parked", None).await;
    assert_eq!(s, 200, "{v}");
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    let levels: Vec<f64> = rows.iter().map(|r| r["level"].as_f64().unwrap()).collect();
    assert_eq!(levels, vec![0.5, 0.2, 0.1]);
    for r in rows {
        assert_eq!(
            r["esim"],
            json!({"esimTranNo": "26042216320015", "iccid": "8910300000059824319",
                   "orderNo": "B26042216320015", "transactionId": "tx-26042216320015"}),
            "{r}"
        );
        // The same identifiers at the top level, as SPEC §4 lists them.
        assert_eq!(r["esimTranNo"], "26042216320015", "{r}");
        assert_eq!(r["iccid"], "8910300000059824319", "{r}");
        assert_eq!(r["orderNo"], "B26042216320015", "{r}");
        assert_eq!(r["transactionId"], "tx-26042216320015", "{r}");
        assert_eq!(r["template"], "data_usage");
        let at = |k: &str| chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap()).unwrap();
        assert_eq!(
            at("expires_at") - at("parked_at"),
            chrono::Duration::hours(72)
        );
    }

    app.bind(json!({"email": "ana@example.com", "iccid": "8910300000059824319"}))
        .await;
    let (s, v) = call(&app, Method::GET, "/admin/parked", None).await;
    assert_eq!((s, v), (200, json!([])), "released or superseded");
    app.stop().await;
}

#[tokio::test]
async fn every_notice_waits_for_the_operator_while_paused() {
    let app = spawn_app("").await;
    app.bind(json!({"email": "ana@example.com", "esimTranNo": "T1"}))
        .await;
    pause(&app).await;
    let (s, _) = app
        .post(&data_usage("n1", "T1", "8900001", 10 * GB, GB))
        .await;
    assert_eq!(s, 200);
    let (_, outbox) = call(&app, Method::GET, "/admin/outbox", None).await;
    assert_eq!(outbox.as_array().unwrap().len(), 1, "{outbox}");
    assert_eq!(outbox[0]["waiting_for"], "paused by operator", "{outbox}");

    call(&app, Method::POST, "/admin/resume", None).await;
    assert!(
        crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
            app.received().len() == 1
        })
        .await
    );
    app.stop().await;
}

/// Posts one notice for `email` and waits until it is a dead letter; its id.
async fn one_dead_letter(app: &TestApp, email: &str, tran: &str) -> u64 {
    app.bind(json!({"email": email, "esimTranNo": tran})).await;
    let (s, _) = app
        .post(&data_usage(
            &format!("{tran}-n"),
            tran,
            "8900002",
            10 * GB,
            GB,
        ))
        .await;
    assert_eq!(s, 200);
    let found = crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
        let dead = call(app, Method::GET, "/admin/dead", None).await.1;
        dead.as_array().is_some_and(|d| d.len() == 1)
    })
    .await;
    let dead = call(app, Method::GET, "/admin/dead", None).await.1;
    assert!(found, "{dead}");
    dead[0]["id"].as_u64().unwrap()
}

#[tokio::test]
async fn a_dead_letter_retry_lifts_the_suppression_its_own_user_unknown_added() {
    let app = spawn_app("").await;
    app.smtp
        .0
        .lock()
        .unwrap()
        .rcpt
        .push_back((550, "5.1.1 user unknown"));
    let id = one_dead_letter(&app, "ana@example.com", "T1").await;
    let (s, v) = call(
        &app,
        Method::GET,
        "/admin/suppressions/ana@example.com",
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");

    let (s, v) = call(&app, Method::POST, &format!("/admin/dead/{id}/retry"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], id);
    assert_eq!(v["lifted_suppression"]["reason"], "bounced", "{v}");
    assert!(
        v["lifted_suppression"]["detail"]
            .as_str()
            .is_some_and(|r| r.contains("user unknown")),
        "{v}"
    );
    let (s, _) = call(
        &app,
        Method::GET,
        "/admin/suppressions/ana@example.com",
        None,
    )
    .await;
    assert_eq!(s, 404, "lifted");
    assert!(
        crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
            app.received().len() == 1
        })
        .await,
        "delivered"
    );
    let (_, view) = call(&app, Method::GET, "/admin/esims/T1", None).await;
    assert!(
        view["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["what"] == "note" && d["detail"].as_str().unwrap().contains("lifted")),
        "{view}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_dead_letter_retry_is_409_while_an_operator_suppression_holds_it() {
    let app = spawn_app("").await;
    app.smtp
        .0
        .lock()
        .unwrap()
        .data_end
        .push_back((554, "5.6.0 message refused"));
    let id = one_dead_letter(&app, "bob@example.com", "T2").await;
    let (s, _) = call(
        &app,
        Method::PUT,
        "/admin/suppressions/bob@example.com",
        Some(json!({"reason": "complaint"})),
    )
    .await;
    assert_eq!(s, 200);

    let (s, v) = call(&app, Method::POST, &format!("/admin/dead/{id}/retry"), None).await;
    assert_eq!(s, 409, "{v}");
    let reason = error_of(&v);
    assert!(reason.contains("complaint"), "{reason}");
    assert!(
        reason.contains("esim-notify suppress remove bob@example.com"),
        "{reason}"
    );
    let (_, dead) = call(&app, Method::GET, "/admin/dead", None).await;
    assert_eq!(dead.as_array().unwrap().len(), 1, "the dead letter stays");
    let (_, outbox) = call(&app, Method::GET, "/admin/outbox", None).await;
    assert_eq!(outbox, json!([]));
    let (s, _) = call(
        &app,
        Method::GET,
        "/admin/suppressions/bob@example.com",
        None,
    )
    .await;
    assert_eq!(s, 200, "never lifted by a retry");
    app.stop().await;
}

/// CLDR tags are taken in their canonical form, ICCIDs keep their leading
/// zeros, and `Name <address>` (as shops export customers) is split.
#[tokio::test]
async fn known_locales_iccids_and_shop_mailboxes_are_bound() {
    let app = spawn_app("").await;
    for (i, (locale, canonical)) in [
        ("es-MX", "es-MX"),
        ("pt-BR", "pt-BR"),
        ("es-419", "es-419"),
        ("en", "en"),
        ("pt_br", "pt-BR"),
    ]
    .into_iter()
    .enumerate()
    {
        let tran = format!("L{i}");
        let (s, v) = app
            .bind(json!({"email": "ana@example.com", "locale": locale, "esimTranNo": tran}))
            .await;
        assert_eq!(s, 200, "{locale}: {v}");
        let (_, v) = call(
            &app,
            Method::GET,
            &format!("/admin/customers?esimTranNo={tran}"),
            None,
        )
        .await;
        assert_eq!(v["locale"], canonical, "{locale}: {v}");
    }
    let (s, v) = app
        .bind(json!({"email": "Ana López <Ana@Example.com>", "iccid": "0089440012345678901"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &app,
        Method::GET,
        "/admin/customers?iccid=0089440012345678901",
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["email"].as_str(), v["name"].as_str()),
        (Some("Ana@example.com"), Some("Ana López"))
    );
    // A name given wins over the display part.
    app.bind(json!({"email": "Shop Export <bob@example.com>", "name": "Bob", "esimTranNo": "B1"}))
        .await;
    let (_, v) = call(&app, Method::GET, "/admin/customers?esimTranNo=B1", None).await;
    assert_eq!(
        (v["email"].as_str(), v["name"].as_str()),
        (Some("bob@example.com"), Some("Bob"))
    );
    app.stop().await;
}

/// What lettre cannot send to is never bound: these used to be bound and
/// then dead-lettered as an invalid envelope at every notice.
#[tokio::test]
async fn only_sendable_addresses_and_sane_names_are_bound() {
    let app = spawn_app("").await;
    for email in ["\"a,b\"@example.com", "ana@[127.0.0.1]"] {
        let (s, v) = app
            .bind(json!({"email": email, "iccid": "890100000000000001"}))
            .await;
        assert_eq!(s, 400, "{email}: {v}");
        assert!(error_of(&v).contains(email), "{v}");
    }
    let (s, v) = app
        .bind(json!({"email": "ana@example.com", "name": "x".repeat(200_000), "iccid": "890100000000000001"}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("at most 200"), "{v}");
    let (s, v) = app
        .bind(json!({"email": "ana@example.com", "name": "Ana\r\nBcc: x@example.net", "iccid": "890100000000000001"}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("control character"), "{v}");
    let (s, v) = app
        .bind(
            json!({"email": "ana@example.com", "name": "Ana López", "iccid": "890100000000000001"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// A body over the limit is refused by actix before any handler runs; it
/// used to answer text/plain.
#[tokio::test]
async fn an_over_large_admin_body_is_a_json_413() {
    let app = spawn_app("").await;
    let r = app
        .http
        .put(app.admin_url("/admin/customers"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"email\":\"ana@example.com\",\"iccid\":\"{}\"}}",
            "8".repeat(300_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = r.json().await.unwrap();
    assert!(!error_of(&v).is_empty());
}

/// `HEAD` answers where `GET` does, with the same status and no body.
#[tokio::test]
async fn head_works_where_get_does() {
    let app = spawn_app("").await;
    for url in [
        app.admin_url("/healthz"),
        app.admin_url("/admin/outbox"),
        format!("http://{}/healthz", app.public),
        format!("http://{}/readyz", app.public),
    ] {
        let r = app.http.head(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{url}");
        assert!(r.bytes().await.unwrap().is_empty(), "{url}");
    }
    let r = app
        .http
        .head(app.admin_url("/admin/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

/// A non-ASCII address is bound (lettre can send it with SMTPUTF8), and
/// with a relay that does not announce SMTPUTF8 it ends as a dead letter
/// that says so, rather than being sent mangled.
#[tokio::test]
async fn a_non_ascii_address_needs_smtputf8() {
    let app = spawn_app("").await;
    let (s, v) = app
        .bind(json!({"email": "josé@example.com", "esimTranNo": "N1"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = app
        .post(&crate::helpers::esim_status(
            "n-1",
            "N1",
            "8900000000000000401",
            "IN_USE",
        ))
        .await;
    assert_eq!(s, 200);
    let died = crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
        let (_, dead) = call(&app, Method::GET, "/admin/dead", None).await;
        dead.as_array().is_some_and(|d| {
            d.iter()
                .any(|r| r["reason"].as_str().unwrap_or("").contains("SMTPUTF8"))
        })
    })
    .await;
    assert!(died, "dead letter naming SMTPUTF8");
    assert!(app.received().is_empty());
}
