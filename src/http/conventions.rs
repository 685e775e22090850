//! Conventions both listeners keep, whatever answers a request.
//!
//! Handlers answer their own errors as JSON, but some 4xx come from actix
//! before a handler runs (a body over the size limit, a query string that
//! does not deserialize) and are plain text; a script reading `error` would
//! find nothing. And `HEAD` should work wherever `GET` does, which actix's
//! method guards do not do by themselves.

use actix_web::body::{self, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;

use crate::http::error::ApiError;

/// Longest original error text carried into the JSON reason.
const MAX_REASON: usize = 500;

/// Serves `HEAD` as `GET` (actix's HTTP/1 codec still sends no body, since
/// it remembers the method it decoded) and turns a non-JSON 4xx into
/// `{"error": …}`. HTML pages meant for people (the unsubscribe pages) are
/// left as they are.
pub async fn conventions(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    // Extractor errors (body too large, bad query) arrive here as responses:
    // actix's handler service turns them into one before returning.
    let resp = next.call(req).await?.map_into_boxed_body();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !status.is_client_error()
        || content_type.starts_with("application/json")
        || content_type.starts_with("text/html")
    {
        return Ok(resp);
    }
    let (req, res) = resp.into_parts();
    let text = body::to_bytes_limited(res.into_body(), MAX_REASON * 4)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("bad request")
                .to_string()
        });
    let reason: String = text.chars().take(MAX_REASON).collect();
    let json = actix_web::ResponseError::error_response(&ApiError::new(status, reason));
    Ok(ServiceResponse::new(req, json))
}
