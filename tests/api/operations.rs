//! Operating it (SPEC §9): SIGHUP reload of templates and settings, and
//! `POST /admin/reload`, which does the same. The reload metric belongs to
//! the app (each has its own recorder), so the steps below read only their
//! own reloads.

use std::time::Duration;

use crate::helpers::*;

/// Sends SIGHUP's reload request and waits until the reload gauge says
/// `accepted` (it flips on each reload, so each step here changes it).
async fn reload(app: &TestApp, accepted: bool) -> bool {
    app.reload.send(()).unwrap();
    let want = Some(if accepted { 1.0 } else { 0.0 });
    eventually(Duration::from_secs(10), || async {
        metric(app, "esim_notify_config_last_reload_successful").await == want
    })
    .await
}

/// `POST /admin/reload`: its status and answer.
async fn http_reload(app: &TestApp) -> (u16, serde_json::Value) {
    let r = app
        .http
        .post(app.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The data subject the running sender would send now (the console renders
/// the files on disk, and says what the sender would send beside them).
async fn preview(app: &TestApp) -> String {
    let v: serde_json::Value = app
        .http
        .post(app.admin_url("/admin/preview/render"))
        .json(&serde_json::json!({"template": "data_usage"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["sender_subject"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_old_templates_on_error_and_swaps_in_good_ones() {
    let templates = tempfile::tempdir().unwrap();
    copy_dir(std::path::Path::new(TEMPLATES), templates.path());
    let app = spawn_app(&format!(
        "[templates]\ndir = \"{}\"\n",
        templates.path().display()
    ))
    .await;
    assert_eq!(
        metric(&app, "esim_notify_config_last_reload_successful").await,
        Some(1.0)
    );
    let subject = templates.path().join("data_usage.subject.hbs");

    // A broken template: the reload is refused, the old set stays in force.
    std::fs::write(&subject, "Less than {{#if usage.thresholdPercent}}% left").unwrap();
    assert!(
        reload(&app, false).await,
        "a broken template must set the reload metric to 0"
    );
    assert!(preview(&app)
        .await
        .contains("10% or less of your data left"));

    // A good edit is swapped in without a restart.
    std::fs::write(
        &subject,
        "Only {{usage.thresholdPercent}}% of your data is left",
    )
    .unwrap();
    assert!(reload(&app, true).await);
    assert!(preview(&app)
        .await
        .contains("Only 10% of your data is left"));

    // An unknown variable inside {{#if}} is refused too (check walks the tree).
    std::fs::write(&subject, "{{#if usage.remian}}x{{/if}}Low data").unwrap();
    assert!(reload(&app, false).await);
    assert!(preview(&app)
        .await
        .contains("Only 10% of your data is left"));

    // A notice queued before a reload survives it and goes out with the new templates.
    let ok = |r: reqwest::Response| r.status().as_u16() == 200;
    assert!(ok(app
        .http
        .post(app.admin_url("/admin/pause"))
        .send()
        .await
        .unwrap()));
    let bound = app
        .bind(serde_json::json!({"email": "ana@example.com", "esimTranNo": "RL1"}))
        .await;
    assert_eq!(bound.0, 200);
    assert_eq!(
        app.post(&data_usage("rl-1", "RL1", "8900000000000000301", 100, 10))
            .await
            .0,
        200
    );
    std::fs::write(
        &subject,
        "Just {{usage.thresholdPercent}}% of your data is left",
    )
    .unwrap();
    // `[brand]` is reloaded with the templates (SPEC §9).
    let config = app.dir.path().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[brand]\nname = \"Reloaded Brand\"\n");
    std::fs::write(&config, text).unwrap();
    assert!(reload(&app, true).await);
    assert!(ok(app
        .http
        .post(app.admin_url("/admin/resume"))
        .send()
        .await
        .unwrap()));
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.received().len() == 1
        })
        .await
    );
    let mail = app.received().remove(0);
    assert!(
        mail.contains("Subject: Just 10% of your data is left"),
        "{mail}"
    );
    assert!(mail.contains("Reloaded Brand"), "{mail}");

    // POST /admin/reload does what SIGHUP does, and answers how it went.
    std::fs::write(&subject, "{{#if usage.remian}}x{{/if}}Low data").unwrap();
    let (status, v) = http_reload(&app).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["reloaded"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("data_usage.subject.hbs"),
        "the reason names the file: {v}"
    );
    assert!(v["problems"][0].as_str().unwrap().contains("remian"), "{v}");
    std::fs::write(&subject, "Under {{usage.thresholdPercent}}% of your data").unwrap();
    let (status, v) = http_reload(&app).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["reloaded"], true);
    assert_eq!(v["restart_needed"], serde_json::json!([]));
    assert_eq!(preview(&app).await, "Under 10% of your data");
    app.stop().await;
}
