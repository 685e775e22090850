//! Cross-site request forgery on the admin listener.
//!
//! A browser sends the operator's HTTP Basic credentials with every request
//! to the admin origin, also with a form that a page on another site posts
//! there. So a state-changing request (anything but GET, HEAD, OPTIONS) is
//! refused with 403 when a browser could have been made to send it:
//!
//! 1. An `Origin` naming another origin (or `null`) is refused, whatever
//!    else the request carries.
//! 2. `Authorization: Bearer …` passes: a browser never attaches a Bearer
//!    token by itself, so whoever sent it holds the token (scripts, the CLI).
//! 3. Otherwise, a request that a browser may have sent — HTTP Basic
//!    credentials, an `Origin`, a `Cookie`, or `Sec-Fetch-Site` other than
//!    `same-origin`/`none` — must carry `X-Esim-Notify-Console` (any value).
//!    A cross-site form cannot set a header, and a cross-site `fetch` that
//!    sets one needs a CORS preflight this listener never grants. The
//!    console's own JavaScript sets it on every call.
//! 4. A request with none of those (a script on a loopback listener without
//!    a token: `curl -X POST …/admin/pause`) passes, as SPEC's API promises.
//!
//! Runs after the Host check (`host_guard.rs`: a rebound name never gets
//! here) and the token check, so a request without the token is still 401.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError};

use crate::http::error::ApiError;

/// The header the console's own requests carry.
pub const CONSOLE_HEADER: &str = "x-esim-notify-console";

/// Why `req` may not change anything, or `None` when it may.
pub fn forgery_refusal(req: &HttpRequest) -> Option<String> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let h = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let origin = req.headers().get(header::ORIGIN);
    if let Some(origin) = origin {
        let host = h(header::HOST).unwrap_or("");
        let origin = origin.to_str().unwrap_or("null");
        if !same_origin(origin, host) {
            return Some(format!(
                "cross-site request refused: Origin {origin:?} is not this admin listener ({host})"
            ));
        }
    }
    let auth = h(header::AUTHORIZATION).unwrap_or("");
    if auth.starts_with("Bearer ") {
        return None;
    }
    let fetch_site = h(header::HeaderName::from_static("sec-fetch-site"));
    let from_browser = auth.starts_with("Basic ")
        || origin.is_some()
        || req.headers().contains_key(header::COOKIE)
        || fetch_site.is_some_and(|s| !matches!(s, "same-origin" | "none"));
    if from_browser && !req.headers().contains_key(CONSOLE_HEADER) {
        return Some(format!(
            "a browser's {} request needs the header X-Esim-Notify-Console (the console's buttons send it); \
             scripts authenticate with Authorization: Bearer <admin.token>",
            req.method()
        ));
    }
    None
}

/// `origin` is `scheme://host[:port]`; the request's `Host` is `host[:port]`.
/// The scheme is not compared: behind a proxy that ends TLS the listener
/// cannot know it, and one host and port serve one scheme anyway.
fn same_origin(origin: &str, host: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") || host.is_empty() {
        return false;
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let strip = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.strip_suffix(default_port)
            .map(str::to_string)
            .unwrap_or(s)
    };
    strip(rest) == strip(host)
}

/// Middleware on the `/admin` scope.
pub async fn refuse_forgeries(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(reason) = forgery_refusal(req.request()) {
        tracing::warn!(method = %req.method(), path = %req.path().escape_debug(), %reason, "admin request refused");
        let resp = ApiError::new(StatusCode::FORBIDDEN, reason).error_response();
        return Ok(req.into_response(resp));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn refused(r: TestRequest) -> bool {
        forgery_refusal(&r.to_http_request()).is_some()
    }

    fn post() -> TestRequest {
        TestRequest::post()
            .uri("/admin/pause")
            .insert_header((header::HOST, "127.0.0.1:8081"))
    }

    #[test]
    fn scripts_pass_without_the_header() {
        assert!(!refused(post()));
        assert!(!refused(
            post().insert_header((header::AUTHORIZATION, "Bearer t"))
        ));
    }

    #[test]
    fn browsers_need_the_header() {
        let basic = || post().insert_header((header::AUTHORIZATION, "Basic b3A6dA=="));
        assert!(refused(basic()));
        assert!(!refused(basic().insert_header((CONSOLE_HEADER, "1"))));
        assert!(refused(post().insert_header((header::COOKIE, "a=b"))));
        assert!(refused(
            post().insert_header(("sec-fetch-site", "same-site"))
        ));
        assert!(!refused(
            post().insert_header(("sec-fetch-site", "same-origin"))
        ));
        let same = || post().insert_header((header::ORIGIN, "http://127.0.0.1:8081"));
        assert!(refused(same()));
        assert!(!refused(same().insert_header((CONSOLE_HEADER, "1"))));
    }

    #[test]
    fn another_origin_is_refused_whatever_it_carries() {
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:8080",
            "http://localhost:8081",
        ] {
            let r = post()
                .insert_header((header::ORIGIN, origin))
                .insert_header((header::AUTHORIZATION, "Bearer t"))
                .insert_header((CONSOLE_HEADER, "1"));
            assert!(refused(r), "{origin}");
        }
        assert!(same_origin("HTTP://LocalHost:8081", "localhost:8081"));
        assert!(same_origin("http://example.com:80", "example.com"));
    }

    #[test]
    fn reads_are_never_refused() {
        let r = TestRequest::get()
            .insert_header((header::ORIGIN, "http://evil.example"))
            .insert_header((header::AUTHORIZATION, "Basic b3A6dA=="));
        assert!(!refused(r));
    }
}
