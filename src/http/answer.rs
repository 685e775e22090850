//! What the JSON handlers of both listeners share: the answer type, reading
//! a JSON body with serde's reason on a 400, and waiting for durability
//! before a change is acknowledged.

use actix_web::HttpResponse;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// What every handler answers: a response, or the one error type.
pub type Answer = Result<HttpResponse, ApiError>;

/// Waits until every change committed so far is on disk.
pub async fn durable(app: &AppState) -> Result<(), ApiError> {
    match app.store.durable().await {
        Ok(result) => result.map_err(ApiError::unavailable),
        Err(_) => Err(ApiError::unavailable("the store flusher has stopped")),
    }
}

/// Reads a JSON body ourselves so that a bad one is a 400 with serde's
/// reason rather than actix's plain-text default.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}
