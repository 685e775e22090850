//! The one error type of the HTTP handlers. Every refusal is
//! `{"error": reason}` with its status (plus fields a client can act on, such
//! as the suppression that blocks a retry); a store that cannot answer is a
//! 503, logged here once, so a script knows a retry may help.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
    /// Further fields of the JSON body, beside `error`.
    extra: Option<Value>,
    /// Seconds for a `Retry-After` header (a 429).
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
            extra: None,
            retry_after: None,
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, reason)
    }

    pub fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, reason)
    }

    /// The store (or its flusher) could not do what was asked.
    pub fn unavailable(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "admin request failed in the store");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store cannot answer: {e}"),
        )
    }

    /// Says, in `Retry-After`, how many seconds to wait before trying again.
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds the fields of `extra` (an object) to the body.
    pub fn with(mut self, extra: Value) -> ApiError {
        self.extra = Some(extra);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "error": self.reason });
        if let (Some(Value::Object(extra)), Value::Object(out)) = (&self.extra, &mut body) {
            out.extend(extra.clone());
        }
        let mut resp = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after {
            resp.insert_header((actix_web::http::header::RETRY_AFTER, s.to_string()));
        }
        resp.json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn the_body_is_the_reason_and_any_extra_fields() {
        let e = ApiError::new(StatusCode::CONFLICT, "held")
            .with(json!({"suppression": {"email": "a"}}));
        let resp = e.error_response();
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        let bytes = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, json!({"error": "held", "suppression": {"email": "a"}}));
    }
}
