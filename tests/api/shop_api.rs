//! The shop's API (issue 21, SPEC §2 `keys`, §4 `/api/v1`): keys an
//! operator creates and revokes, the customer directory and the eSIM page
//! behind them, the rate per key, networks, and the OpenAPI document, which
//! every `/api/v1` answer of these tests is checked against ([`Shop::call`]).

mod schema;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    cli, data_usage, esim_status, eventually, on_postgres, spawn_app, spawn_app_in, Binary, TestApp,
};

const GIB: u64 = 1 << 30;
const LIMIT: Duration = Duration::from_secs(20);

/// One answer of `/api/v1`, already checked against the OpenAPI document.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// A shop calling `/api/v1` on one public listener, with the document that
/// listener serves.
struct Shop {
    base: String,
    http: reqwest::Client,
    doc: Value,
}

impl Shop {
    async fn of(public: std::net::SocketAddr) -> Shop {
        let base = format!("http://{public}/api/v1");
        let http = reqwest::Client::new();
        let r = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the document needs no key");
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let shop = Shop { base, http, doc };
        // The document's own answer is checked too.
        let doc = shop.doc.clone();
        shop.check("/openapi.json", "get", 200, None, &doc);
        shop
    }

    /// Calls `path` (below /api/v1, with its query) with `key` (if any) and
    /// checks the answer against the document: the status must be one it
    /// lists for that operation, the body must match that status's schema
    /// (none for a 204), and a 429 must say `Retry-After`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_from(method, path, key, body, None).await
    }

    async fn get(&self, path: &str, key: &str) -> Answer {
        self.call(Method::GET, path, Some(key), None).await
    }

    async fn delete(&self, path: &str, key: &str) -> Answer {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// `PUT /customers`.
    async fn bind(&self, key: &str, body: Value) -> Answer {
        self.call(Method::PUT, "/customers", Some(key), Some(body))
            .await
    }

    async fn call_from(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        forwarded_for: Option<&str>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(f) = forwarded_for {
            req = req.header("x-forwarded-for", f);
        }
        let r = req.send().await.expect("api request");
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let cache = r
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_string());
        let text = r.text().await.unwrap();
        if (200..300).contains(&status) && key.is_some() {
            assert_eq!(
                cache.as_deref(),
                Some("no-store"),
                "{path}: a customer's data is not cached"
            );
        }
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        let template = self.template_of(path);
        let response = self.check(
            &template,
            &method.as_str().to_ascii_lowercase(),
            status,
            retry_after.as_deref(),
            &body,
        );
        if response.get("content").is_none() {
            assert!(text.is_empty(), "{status} should have no body: {text}");
        }
        Answer {
            status,
            retry_after,
            body,
        }
    }

    /// The document's path template that `path` (query stripped) matches.
    fn template_of(&self, path: &str) -> String {
        let path = path.split('?').next().unwrap();
        let segs: Vec<&str> = path.split('/').collect();
        for t in self.doc["paths"].as_object().unwrap().keys() {
            let ts: Vec<&str> = t.split('/').collect();
            if ts.len() == segs.len()
                && ts
                    .iter()
                    .zip(&segs)
                    .all(|(a, b)| a == b || (a.starts_with('{') && !b.is_empty()))
            {
                return t.clone();
            }
        }
        panic!("{path} is not in the OpenAPI document");
    }

    /// Checks one answer; returns the document's response object for it.
    fn check(
        &self,
        template: &str,
        method: &str,
        status: u16,
        retry_after: Option<&str>,
        body: &Value,
    ) -> Value {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let mut response = op["responses"][status.to_string()].clone();
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which the document does not list: {body}"
        );
        if let Some(r) = response.get("$ref").and_then(Value::as_str) {
            response = schema::resolve(&self.doc, r).clone();
        }
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, h) in headers {
                if h["required"] == true {
                    assert!(
                        name.eq_ignore_ascii_case("retry-after"),
                        "a header the test does not read: {name}"
                    );
                    let v = retry_after
                        .unwrap_or_else(|| panic!("{status} without {name}"))
                        .parse::<i64>()
                        .unwrap_or_else(|_| panic!("{name} is not a number"));
                    let errors = schema::validate(&self.doc, &h["schema"], &json!(v));
                    assert!(errors.is_empty(), "{name}: {errors:?}");
                }
            }
        }
        if let Some(s) = response.pointer("/content/application~1json/schema") {
            let errors = schema::validate(&self.doc, s, body);
            assert!(
                errors.is_empty(),
                "{method} {template} {status} does not match the document: {errors:?}\n{body}"
            );
        }
        response
    }
}

/// What `GET /api/v1/esims/none` on the public port answers with `key`:
/// 404 for a key that is let in, 401 for one that is not.
pub(crate) async fn key_status(public: u16, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{public}/api/v1/esims/none"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `POST /admin/keys` with `body`: the status and the answer.
async fn post_key(app: &TestApp, body: Value) -> (u16, Value) {
    app.send_json(Method::POST, &app.admin_url("/admin/keys"), body)
        .await
}

/// Creates a key through the admin API; returns its text.
async fn add_key(app: &TestApp, name: &str, scopes: &[&str], networks: &[&str]) -> String {
    let (status, v) = post_key(
        app,
        json!({"name": name, "scopes": scopes, "networks": networks}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["name"], name);
    let key = v["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("esn_"), "{key}");
    key
}

async fn revoke_key(app: &TestApp, name: &str) -> u16 {
    app.http
        .delete(app.admin_url(&format!("/admin/keys/{name}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_key_binds_at_checkout_and_the_next_webhook_email_reaches_that_address() {
    let app = spawn_app("").await;
    let shop = Shop::of(app.public).await;
    let key = add_key(&app, "shop", &["customers"], &[]).await;

    // At checkout the shop ordered with transactionId tx-S1 and binds it.
    let a = shop.bind(&key, json!({"email": "ana@shop.example", "name": "Ana", "locale": "es", "transactionId": "tx-S1"}))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        a.body,
        json!({"status": "bound", "released": 0, "superseded": 0, "replaced": []})
    );
    let a = shop.get("/customers?transactionId=tx-S1", &key).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["email"], "ana@shop.example");
    assert_eq!(a.body["locale"], "es");

    // The provider's webhook names the eSIM by all its identifiers.
    let (s, _) = app
        .post(&data_usage(
            "s-1",
            "S1",
            "8900000000000000901",
            10 * GIB,
            GIB,
        ))
        .await;
    assert_eq!(s, 200);
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    let mail = app.received().remove(0);
    assert!(mail.contains("ana@shop.example"), "{mail}");

    // The same answers as the admin API, `replaced` included.
    let a = shop
        .bind(
            &key,
            json!({"email": "bo@shop.example", "transactionId": "tx-S1"}),
        )
        .await;
    assert_eq!(
        a.body["replaced"],
        json!([{"identifier": "transactionId", "value": "tx-S1", "email": "a***@shop.example"}])
    );
    let bad = shop
        .bind(
            &key,
            json!({"email": "not an address", "transactionId": "tx-S1"}),
        )
        .await;
    assert_eq!(bad.status, 400);
    let none = shop.bind(&key, json!({"email": "bo@shop.example"})).await;
    assert_eq!(none.status, 400);
    assert!(none.body["error"].as_str().unwrap().contains("identifier"));
    let huge = shop
        .bind(
            &key,
            json!({"email": "bo@shop.example", "name": "x".repeat(20_000), "transactionId": "tx-S1"}),
        )
        .await;
    assert_eq!(huge.status, 413, "{:?}", huge.body);
    let a = shop.delete("/customers?transactionId=tx-S1", &key).await;
    assert_eq!(a.status, 204);
    let a = shop.get("/customers?transactionId=tx-S1", &key).await;
    assert_eq!(a.status, 404);
    let a = shop.delete("/customers?transactionId=tx-S1", &key).await;
    assert_eq!(a.status, 404);
    let a = shop.get("/customers", &key).await;
    assert_eq!(a.status, 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_that_arrives_after_the_webhook_releases_the_parked_email() {
    let app = spawn_app("").await;
    let shop = Shop::of(app.public).await;
    let key = add_key(&app, "shop", &["customers", "esims:read"], &[]).await;
    let (s, _) = app
        .post(&data_usage(
            "p-1",
            "P1",
            "8900000000000000902",
            10 * GIB,
            GIB,
        ))
        .await;
    assert_eq!(s, 200);
    let a = shop.get("/esims/tx-P1", &key).await;
    assert_eq!(a.status, 200);
    let emails = a.body["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 1, "{}", a.body);
    assert_eq!(emails[0]["state"], "parked");
    assert_eq!(emails[0]["template"], "data_usage");
    assert!(app.received().is_empty());

    let a = shop
        .bind(
            &key,
            json!({"email": "cy@shop.example", "transactionId": "tx-P1"}),
        )
        .await;
    assert_eq!(a.body["released"], 1, "{:?}", a.body);
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    assert!(app.received()[0].contains("cy@shop.example"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_401_when_missing_unknown_or_revoked_and_403_without_the_scope() {
    let app = spawn_app("").await;
    let shop = Shop::of(app.public).await;
    let reader = add_key(&app, "reader", &["esims:read"], &[]).await;
    let binder = add_key(&app, "binder", &["customers"], &[]).await;
    let q = "/customers?iccid=8900000000000000903";

    let a = shop.call(Method::GET, q, None, None).await;
    assert_eq!(a.status, 401);
    let a = shop.call(Method::GET, q, Some("esn_guessed"), None).await;
    assert_eq!(a.status, 401);
    // An empty key is no key.
    let a = shop.call(Method::GET, "/esims/X", Some(""), None).await;
    assert_eq!(a.status, 401);

    let a = shop.get(q, &reader).await;
    assert_eq!(a.status, 403);
    assert!(a.body["error"].as_str().unwrap().contains("customers"));
    let a = shop
        .bind(
            &reader,
            json!({"email": "a@shop.example", "iccid": "8900000000000000903"}),
        )
        .await;
    assert_eq!(a.status, 403);
    let a = shop.get("/esims/X", &binder).await;
    assert_eq!(a.status, 403);

    let a = shop.get(q, &binder).await;
    assert_eq!(a.status, 404);
    assert_eq!(revoke_key(&app, "binder").await, 204);
    let a = shop.get(q, &binder).await;
    assert_eq!(a.status, 401, "a revoked key is refused at once");
    assert_eq!(revoke_key(&app, "binder").await, 404);
    // The other key still works.
    let a = shop.get("/esims/X", &reader).await;
    assert_eq!(a.status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_manages_keys_and_never_shows_one_again() {
    let app = spawn_app("").await;
    let shop = Shop::of(app.public).await;
    let key = add_key(&app, "shop-1", &["customers,esims:read"], &["127.0.0.0/8"]).await;
    let (s, v) = post_key(&app, json!({"name": "shop-1", "scopes": ["customers"]})).await;
    assert_eq!(s, 409, "{v}");
    for bad in [
        json!({"name": "x", "scopes": ["esims:write"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "two words", "scopes": ["customers"]}),
        json!({"name": "x", "scopes": ["customers"], "networks": ["10.0.0.0/33"]}),
        json!({"name": "x"}),
    ] {
        let (s, v) = post_key(&app, bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["error"].is_string());
    }

    let a = shop.get("/esims/none", &key).await;
    assert_eq!(a.status, 404);
    let (s, list) = app.get_json(&app.admin_url("/admin/keys")).await;
    assert_eq!(s, 200);
    let text = list.to_string();
    assert!(!text.contains(&key[4..]), "the key is shown again: {text}");
    let row = &list[0];
    assert_eq!(row["name"], "shop-1");
    assert_eq!(row["scopes"], json!(["customers", "esims:read"]));
    assert_eq!(row["networks"], json!(["127.0.0.0/8"]));
    assert!(
        row.get("hash").is_none() && row.get("key").is_none(),
        "{row}"
    );
    // "last used" is written off the request's path.
    assert!(
        eventually(LIMIT, || async {
            let (_, l) = app.get_json(&app.admin_url("/admin/keys")).await;
            l[0]["last_used"].is_string()
        })
        .await
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_rate_and_is_told_when_to_retry() {
    let app = spawn_app("[api]\nper_minute = 1\nburst = 2\n").await;
    let shop = Shop::of(app.public).await;
    let busy = add_key(&app, "busy", &["esims:read"], &[]).await;
    let calm = add_key(&app, "calm", &["esims:read"], &[]).await;
    for _ in 0..2 {
        let a = shop.get("/esims/none", &busy).await;
        assert_eq!(a.status, 404);
    }
    let a = shop.get("/esims/none", &busy).await;
    assert_eq!(a.status, 429, "{:?}", a.body);
    let wait: u64 = a.retry_after.unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let a = shop.get("/esims/none", &calm).await;
    assert_eq!(a.status, 404, "another key has its own rate");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_restricted_to_networks_refuses_other_senders() {
    // The test's requests come from loopback, which is a trusted proxy here:
    // the sender is then the right-most X-Forwarded-For address.
    let app = spawn_app("[security]\ntrusted_proxies = [\"127.0.0.1/32\"]\n").await;
    let shop = Shop::of(app.public).await;
    let office = add_key(&app, "office", &["esims:read"], &["203.0.113.0/24"]).await;
    let anywhere = add_key(&app, "anywhere", &["esims:read"], &[]).await;
    let get = |key: &str, from: Option<&'static str>| {
        let (shop, key) = (&shop, key.to_string());
        async move {
            shop.call_from(Method::GET, "/esims/none", Some(&key), None, from)
                .await
                .status
        }
    };
    assert_eq!(get(&office, Some("203.0.113.9")).await, 404);
    assert_eq!(get(&office, Some("198.51.100.1")).await, 403);
    // A hop a client wrote left of the real one changes nothing.
    assert_eq!(get(&office, Some("203.0.113.9, 198.51.100.1")).await, 403);
    assert_eq!(
        get(&office, None).await,
        403,
        "loopback itself is not in the network"
    );
    assert_eq!(get(&office, Some("unknown")).await, 403);
    assert_eq!(get(&anywhere, Some("198.51.100.1")).await, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_esim_page_shows_data_and_emails_and_nothing_internal() {
    let app = spawn_app("").await;
    let shop = Shop::of(app.public).await;
    let key = add_key(&app, "shop", &["customers", "esims:read"], &[]).await;
    shop.bind(
        &key,
        json!({"email": "dee@shop.example", "transactionId": "tx-E1"}),
    )
    .await;
    let iccid = "8900000000000000904";
    app.post(&esim_status("e-0", "E1", iccid, "IN_USE")).await;
    app.post(&data_usage("e-1", "E1", iccid, 10 * GIB, GIB))
        .await;
    assert!(eventually(LIMIT, || async { app.received().len() == 2 }).await);

    for id in ["E1", iccid, "BE1", "tx-E1"] {
        let a = shop.get(&format!("/esims/{id}"), &key).await;
        assert_eq!(a.status, 200, "{id}");
        assert_eq!(a.body["identifiers"]["esimTranNo"], "E1");
    }
    let sent_both = eventually(LIMIT, || async {
        let a = shop.get("/esims/E1", &key).await;
        a.body["emails"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["state"] == "sent")
            .count()
            == 2
    })
    .await;
    let a = shop.get("/esims/E1", &key).await;
    assert!(sent_both, "{}", a.body);
    let v = &a.body;
    assert_eq!(v["status"], "IN_USE");
    assert_eq!(
        v["data"],
        json!({"total": 10 * GIB, "remaining": GIB, "remainingPercent": 10.0})
    );
    let templates: Vec<&str> = v["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["template"].as_str().unwrap())
        .collect();
    assert!(
        templates.contains(&"esim_activated") && templates.contains(&"data_usage"),
        "{v}"
    );
    // Nothing internal: not the recipient, not the decision log's wording.
    let text = v.to_string();
    for internal in [
        "dee@",
        "d***@",
        "cycle-0",
        "decisions",
        "detail",
        "recipient",
    ] {
        assert!(!text.contains(internal), "{internal} in {text}");
    }
    let a = shop.get("/esims/NOPE", &key).await;
    assert_eq!(a.status, 404);
    app.stop().await;
}

/// The CLI: `keys add` on a store no server holds, then `list` and `revoke`
/// through the running server's admin listener; the revoked key is refused
/// by the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_and_revokes_keys_with_or_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    // The server writes the config the CLI reads.
    let server = Binary::serve(dir.path(), "").await;
    let config = dir.path().join("config.toml");
    let cli = |args: &[&str]| cli(&config, args);
    let (code, out, err) = cli(&["keys", "add", "shop", "--scope", "customers,esims:read"]);
    assert_eq!(code, 0, "{out}{err}");
    let key = out.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("esn_") && key.len() > 40, "{out}");

    let (code, _, err) = cli(&["keys", "add", "shop", "--scope", "customers"]);
    assert_eq!(code, 1, "a name taken is a failure: {err}");
    assert!(err.contains("exists"), "{err}");
    let (code, _, err) = cli(&["keys", "add", "other", "--scope", "esims:write"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = cli(&["keys", "add", "other"]);
    assert_eq!(code, 2, "--scope is required");

    assert_eq!(key_status(server.public, &key).await, 404);
    let (code, out, err) = cli(&["keys", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("shop") && out.contains("customers,esims:read"),
        "{out}"
    );
    assert!(!out.contains(&key[4..]), "{out}");
    let (code, out, err) = cli(&["keys", "revoke", "shop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(key_status(server.public, &key).await, 401);
    let (code, _, err) = cli(&["keys", "revoke", "shop"]);
    assert_eq!(code, 1, "{err}");
    assert!(server.terminate());

    // No server: the CLI writes the store itself; a server started later
    // knows the key.
    let (code, out, err) = cli(&["keys", "add", "later", "--scope", "esims:read"]);
    assert_eq!(code, 0, "{out}{err}");
    let later = out.lines().last().unwrap().trim().to_string();
    let server = Binary::serve(dir.path(), "").await;
    assert_eq!(key_status(server.public, &later).await, 404);
    assert!(server.terminate());
}

/// Two instances of a group (PostgreSQL): a key revoked on one is refused
/// by the other on its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_instance_is_refused_by_the_other_at_once() {
    if !on_postgres() {
        eprintln!("skipped on sled: one process holds a sled store");
        return;
    }
    let one = spawn_app("").await;
    let url = crate::helpers::database_for(&one.store_path());
    let (port, smtp) = crate::smtp::mailin_server();
    let two = spawn_app_in(
        tempfile::tempdir().unwrap(),
        &format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\n"),
        port,
        smtp,
    )
    .await;
    let key = add_key(&one, "shop", &["esims:read"], &[]).await;
    let shop_two = Shop::of(two.public).await;
    let a = shop_two.get("/esims/none", &key).await;
    assert_eq!(
        a.status, 404,
        "a key made on one instance works on the other"
    );
    assert_eq!(revoke_key(&one, "shop").await, 204);
    let a = shop_two.get("/esims/none", &key).await;
    assert_eq!(a.status, 401);
    two.stop().await;
    one.stop().await;
}

/// The console's key page: keys listed with a revoke button and a form
/// (script from the binary, under the console's CSP), never a key; a
/// browser's create call without the console's header, or from another
/// origin, is refused like every other change on the admin listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_keys_and_guards_their_creation() {
    let app = spawn_app("[admin]\ntoken = \"t0ken\"\n").await;
    let create = |headers: &'static [(&'static str, &'static str)], name: &'static str| {
        let app = &app;
        async move {
            let mut r = app
                .http
                .post(app.admin_url("/admin/keys"))
                .basic_auth("operator", Some("t0ken"))
                .json(&json!({"name": name, "scopes": ["customers"]}));
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(
        create(&[], "a").await,
        403,
        "a browser's call needs the console's header"
    );
    assert_eq!(
        create(
            &[
                ("x-esim-notify-console", "1"),
                ("origin", "http://evil.example")
            ],
            "a"
        )
        .await,
        403
    );
    assert_eq!(
        create(&[("x-esim-notify-console", "1")], "console-made").await,
        201
    );
    let r = app
        .http
        .post(app.admin_url("/admin/keys"))
        .json(&json!({"name": "x", "scopes": ["customers"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the admin token is needed");

    let r = app
        .http
        .get(app.admin_url("/admin/api-keys"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains("<code>console-made</code>"), "{html}");
    assert!(
        html.contains("data-url=\"/admin/keys/console-made\""),
        "{html}"
    );
    assert!(html.contains("/admin/assets/keys.js"));
    assert!(!html.contains("esn_"), "no key in the page");
    assert!(!html.contains("<script>"), "no inline script");
    let js = app
        .http
        .get(app.admin_url("/admin/assets/keys.js"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().contains("/admin/keys"));
    app.stop().await;
}

/// With the provider configured, the install email carries the activation
/// code and install links; the eSIM page shows the plan's name and that the
/// email was sent, and none of those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_esim_page_names_the_plan_and_never_shows_the_activation_code() {
    use crate::fake_provider::{self as fake, FakeProvider};
    const ORDER: &str = "B26042217160077";
    const TX: &str = "7544949834056-1-TR_50_30";
    const AC: &str = "LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B2677";
    let provider = FakeProvider::start_with(vec![], |_| {
        fake::page(
            vec![fake::esim(
                "26042217160077",
                "8943108170000775677",
                ORDER,
                AC,
            )],
            1,
            1,
        )
    })
    .await;
    let app = spawn_app(&format!(
        "[provider]\naccess_code = \"fake-code\"\nbase_url = \"{}\"\ntimeout = \"1s\"\n",
        provider.base_url
    ))
    .await;
    let shop = Shop::of(app.public).await;
    let key = add_key(&app, "shop", &["customers", "esims:read"], &[]).await;
    let a = shop
        .bind(
            &key,
            json!({"email": "eve@shop.example", "transactionId": TX}),
        )
        .await;
    assert_eq!(a.status, 200);
    let order = json!({
        "notifyType": "ORDER_STATUS", "notifyId": "o-77",
        "content": {"orderNo": ORDER, "orderStatus": "GOT_RESOURCE", "transactionId": TX}
    });
    assert_eq!(app.post(&order.to_string()).await.0, 200);
    assert!(eventually(LIMIT, || async { app.received().len() == 1 }).await);
    assert!(app.received()[0].contains("43DE23C67EE747BCAD6B63E8B67B2677"));

    let sent = eventually(LIMIT, || async {
        let a = shop.get("/esims/26042217160077", &key).await;
        a.body["emails"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["template"] == "esim_ready" && e["state"] == "sent")
        })
    })
    .await;
    let a = shop.get("/esims/26042217160077", &key).await;
    assert!(sent, "{}", a.body);
    assert_eq!(a.body["planName"], "Spain 5GB 30Days");
    let text = a.body.to_string();
    for secret in [
        "LPA:",
        "43DE23C67EE747BCAD6B63E8B67B2677",
        "qrsim.net",
        "eve@",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    app.stop().await;
}
