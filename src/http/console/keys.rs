//! `GET /admin/api-keys`: the shop's API keys (README "Connect your
//! shop"): each with its scopes, networks, when it was made and last used,
//! and a revoke button (after a confirmation, `DELETE /admin/keys/{name}`
//! through `console.js`); a form that creates one (`POST /admin/keys`
//! through `keys.js`) and shows the new key this once, with a copy button.
//! The key's text is never in this page's HTML: only the answer to the
//! create call carries it, and only the browser that made it sees it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde_json::{json, Value};

use super::page::{self, when, Nav};
use crate::http::state::AppState;

pub async fn page(app: web::Data<AppState>) -> HttpResponse {
    let state = app.clone();
    let (status, mut data) = page::read_blocking(move || {
        let now = Utc::now();
        let keys: Vec<Value> = state
            .store
            .api_keys()?
            .iter()
            .map(|k| {
                json!({
                    "name": k.name,
                    "scopes": k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    "networks": k.networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "created": when(k.created, now),
                    "last_used": k.last_used.map(|t| when(t, now)),
                    "confirm": format!(
                        "Revoke the API key “{}”? Every request with it is refused from the next one on, on every instance. This cannot be undone: the shop needs a new key.",
                        k.name
                    ),
                })
            })
            .collect();
        Ok((StatusCode::OK, json!({ "keys": keys })))
    })
    .await;
    if data.get("error").is_none() {
        data["error"] = Value::Null;
    }
    if data.get("keys").is_none() {
        data["keys"] = json!([]);
    }
    page::render_status(&app, status, Nav::Keys, "API keys", "keys", data)
}
