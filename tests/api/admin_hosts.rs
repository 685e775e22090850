//! DNS rebinding (issue 18, SPEC §4): the admin listener answers only a
//! `Host` that names it, on every path, token or not; anything else is 421.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A request to the admin listener carrying `host` as its Host header.
async fn with_host(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    host: &str,
) -> reqwest::RequestBuilder {
    app.http
        .request(method, app.admin_url(path))
        .header("host", host)
}

async fn status_and_json(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.expect("admin request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The reproduction: a page on rebind.example, rebound to
/// 127.0.0.1, posts same-origin with the console's header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_name_cannot_pause_sending() {
    let app = spawn_app("").await;
    let port = app.admin.port();
    let evil = format!("rebind.example:{port}");
    let r = with_host(&app, reqwest::Method::POST, "/admin/pause", &evil)
        .await
        .header("origin", format!("http://{evil}"))
        .header("x-esim-notify-console", "1");
    let (status, body) = status_and_json(r).await;
    assert_eq!(status, 421, "{body}");
    let reason = body["error"].as_str().unwrap_or_default();
    assert!(reason.contains("admin.allowed_hosts"), "{reason}");
    assert!(!app.dispatch.is_paused(), "a rebound page paused sending");

    // The operator's own names still work.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let r = with_host(&app, reqwest::Method::POST, "/admin/pause", &host).await;
        assert_eq!(status_and_json(r).await.0, 200, "{host}");
        assert!(app.dispatch.is_paused());
        let r = with_host(&app, reqwest::Method::POST, "/admin/resume", &host).await;
        assert_eq!(status_and_json(r).await.0, 200, "{host}");
    }
    app.stop().await;
}

/// Every path of the admin listener, with the right token, with a port
/// that is not the listener's, or without a port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_refuses_another_host_even_with_the_token() {
    let app = spawn_app("[admin]\ntoken = \"s3cret-admin\"\n").await;
    let port = app.admin.port();
    let paths = [
        "/admin/",
        "/admin/preview",
        "/admin/customers?iccid=8943108170001029631",
        "/admin/outbox",
        "/admin/no-such-page",
        "/metrics",
        "/healthz",
        "/readyz",
        "/nowhere",
    ];
    for host in [
        format!("rebind.example:{port}"),
        format!("localhost:{}", port.wrapping_add(1)),
        "localhost".to_string(),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        for path in paths {
            let r = with_host(&app, reqwest::Method::GET, path, &host)
                .await
                .bearer_auth("s3cret-admin");
            let (status, body) = status_and_json(r).await;
            assert_eq!(status, 421, "{host} {path}: {body}");
            assert!(body["error"].is_string(), "{host} {path}: {body}");
        }
    }
    // The same requests with the listener's own name pass the Host check
    // (and then meet the token check as before).
    for path in ["/healthz", "/readyz", "/metrics", "/admin/outbox"] {
        let r = with_host(&app, reqwest::Method::GET, path, &format!("[::1]:{port}"))
            .await
            .bearer_auth("s3cret-admin");
        assert_eq!(status_and_json(r).await.0, 200, "{path}");
    }
    let r = with_host(
        &app,
        reqwest::Method::GET,
        "/admin/outbox",
        &format!("LOCALHOST:{port}"),
    )
    .await;
    assert_eq!(status_and_json(r).await.0, 401);
    app.stop().await;
}

/// HTTP/1.0 without a Host header, written by hand (clients add one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_host_is_refused() {
    let app = spawn_app("").await;
    let mut sock = tokio::net::TcpStream::connect(app.admin).await.unwrap();
    sock.write_all(b"POST /admin/pause HTTP/1.0\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 421"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    assert!(!app.dispatch.is_paused());
    app.stop().await;
}

/// `admin.allowed_hosts`: a name without a port on any port, with a port
/// only on that one; case does not matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_are_answered() {
    let app =
        spawn_app("[admin]\nallowed_hosts = [\"Admin.Example.com\", \"tunnel.example:9000\"]\n")
            .await;
    for (host, expected) in [
        ("admin.example.com", 200),
        ("ADMIN.example.com:443", 200),
        ("tunnel.example:9000", 200),
        ("tunnel.example:9001", 421),
        ("tunnel.example", 421),
        ("other.example.com", 421),
    ] {
        let r = with_host(&app, reqwest::Method::POST, "/admin/pause", host).await;
        assert_eq!(status_and_json(r).await.0, expected, "{host}");
    }
    let r = with_host(&app, reqwest::Method::GET, "/admin/", "admin.example.com").await;
    assert_eq!(status_and_json(r).await.0, 200);
    app.stop().await;
}

#[test]
fn a_bad_allowed_host_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = test_config_toml(
        dir.path(),
        25,
        "[admin]\nallowed_hosts = [\"localhost\", \"http://admin.example.com/\"]\n",
    );
    let err = esim_notify::config::Config::from_sources(&text, std::iter::empty())
        .unwrap_err()
        .to_string();
    assert!(err.contains("admin.allowed_hosts[1]"), "{err}");
}
