//! Metrics (SPEC §9). The recorder is process-wide, so this binary starts
//! one app and checks every series from one test: deltas stay exact.


use crate::helpers::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_webhooks_decisions_and_unreadable_fields() {
    let app = spawn_app("").await;
    let before = metric(
        &app,
        "esim_notify_webhooks_total{type=\"VALIDITY_USAGE\",outcome=\"accepted\"}",
    )
    .await
    .unwrap_or(0.0);
    let body = r#"{"notifyType":"VALIDITY_USAGE","notifyId":"metrics-1","content":{"esimTranNo":"M1","remain":1,"durationUnit":"DAY","expiredTime":"2099-01-01T00:00:00Z"}}"#;
    assert_eq!(app.post(body).await.0, 200);
    let after = metric(
        &app,
        "esim_notify_webhooks_total{type=\"VALIDITY_USAGE\",outcome=\"accepted\"}",
    )
    .await;
    assert_eq!(after, Some(before + 1.0));
    let text = app
        .http
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "esim_notify_outbox_depth",
        "esim_notify_outbox_oldest_age_seconds",
        "esim_notify_parked",
        "esim_notify_dead_letters",
        "esim_notify_sending_paused",
        "esim_notify_last_webhook_timestamp_seconds",
        "esim_notify_config_last_reload_successful",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    let unreadable =
        "esim_notify_unreadable_fields_total{type=\"DATA_USAGE\",field=\"orderUsage\"}";
    let parked = "esim_notify_notices_total{template=\"validity_usage\",outcome=\"parked\"}";
    let (u0, p0) = (
        metric(&app, unreadable).await.unwrap_or(0.0),
        metric(&app, parked).await.unwrap_or(0.0),
    );
    let body = r#"{"notifyType":"DATA_USAGE","notifyId":"mu-1","content":{"esimTranNo":"MU1","totalVolume":100,"remain":60,"orderUsage":"forty"}}"#;
    assert_eq!(app.post(body).await, (200, json!({"status": "accepted"})));
    let body = r#"{"notifyType":"VALIDITY_USAGE","notifyId":"mu-2","content":{"esimTranNo":"MU2","remain":1,"durationUnit":"DAY","expiredTime":"2099-01-01T00:00:00Z"}}"#;
    assert_eq!(app.post(body).await.0, 200);
    assert_eq!(metric(&app, unreadable).await, Some(u0 + 1.0));
    assert_eq!(metric(&app, parked).await, Some(p0 + 1.0));
    assert_eq!(
        metric(&app, "esim_notify_parked").await,
        Some(2.0),
        "M1 and MU2 wait for a customer"
    );
    app.stop().await;
}

/// After a restart of the built binary every series is there before any
/// event: the webhook counters for every type and outcome at 0, the notice
/// counters for every configured template, and the stored
/// time of the last accepted webhook (the "no webhooks" alert needs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_is_exported_after_a_restart_with_the_stored_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::serve(dir.path(), "").await;
    let body = r#"{"notifyType":"DATA_USAGE","notifyId":"restart-1","content":{"esimTranNo":"R1","totalVolume":100,"remain":5}}"#;
    let r = reqwest::Client::new()
        .post(server.webhook_url())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = server.metrics().await;
    let stamp = sample(&before, "esim_notify_last_webhook_timestamp_seconds").unwrap();
    assert!(stamp > 1.7e9, "{stamp}");
    server.kill();

    let server = Binary::serve(dir.path(), "").await;
    let text = server.metrics().await;
    assert_eq!(
        sample(&text, "esim_notify_last_webhook_timestamp_seconds"),
        Some(stamp),
        "{text}"
    );
    for t in [
        "CHECK_HEALTH",
        "ORDER_STATUS",
        "ESIM_STATUS",
        "SMDP_EVENT",
        "DATA_USAGE",
        "VALIDITY_USAGE",
        "unknown",
    ] {
        for o in esim_notify::metrics::WEBHOOK_OUTCOMES {
            let series = format!("esim_notify_webhooks_total{{type=\"{t}\",outcome=\"{o}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
        }
    }
    let config = load_config(&std::fs::read_to_string(dir.path().join("config.toml")).unwrap());
    let templates = esim_notify::live::template_names(&config);
    assert!(
        templates.contains(&"data_usage".to_string()),
        "{templates:?}"
    );
    for t in &templates {
        for o in esim_notify::metrics::NOTICE_OUTCOMES {
            let series = format!("esim_notify_notices_total{{template=\"{t}\",outcome=\"{o}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
        }
    }
    for series in [
        "esim_notify_send_duration_seconds_bucket{le=\"+Inf\"}",
        "esim_notify_send_duration_seconds_count",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in\n{text}");
    }
    assert_eq!(
        text.matches("# TYPE esim_notify_send_duration_seconds histogram")
            .count(),
        1,
        "{text}"
    );
    server.kill();
}
