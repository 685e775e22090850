//! The shop's API keys on the admin listener (README "Connect your shop"):
//! `GET /admin/keys` lists them (never a key, never its hash), `POST
//! /admin/keys` `{name, scopes, networks?}` creates one and answers its
//! text this once (`201`), `DELETE /admin/keys/{name}` revokes it (`204`),
//! refused at once by every instance since each request reads the store.
//! The CLI's `keys …` and the console's key page go through these.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::Utc;

use crate::api_keys::{self, KeyRequest, KeySummary};
use crate::http::answer::{durable, parse_json, Answer};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::telemetry::escape;

pub async fn list(app: web::Data<AppState>) -> Answer {
    let keys = app.on_store(|s| s.api_keys()).await?;
    let rows: Vec<KeySummary> = keys.iter().map(|k| k.summary()).collect();
    Ok(HttpResponse::Ok().json(rows))
}

pub async fn create(app: web::Data<AppState>, body: web::Bytes) -> Answer {
    let request: KeyRequest = parse_json(&body)?;
    let (key, shown) = request.issue(Utc::now()).map_err(ApiError::bad_request)?;
    let name = key.name.clone();
    if !app.on_store(move |s| s.add_api_key(&key)).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            api_keys::name_taken(&name),
        ));
    }
    durable(&app).await?;
    tracing::info!(key = %escape(&name), "API key created");
    Ok(HttpResponse::Created().json(shown))
}

pub async fn revoke(app: web::Data<AppState>, name: web::Path<String>) -> Answer {
    let wanted = name.to_string();
    if !app.on_store(move |s| s.revoke_api_key(&wanted)).await? {
        return Err(ApiError::not_found(api_keys::no_such_key(&name)));
    }
    durable(&app).await?;
    tracing::info!(key = %escape(&name), "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}
