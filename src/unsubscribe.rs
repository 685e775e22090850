//! One-click unsubscribe (RFC 8058) on the public listener.
//!
//! The link names the address in a token signed with a key kept in the
//! store, so nobody can unsubscribe someone else by guessing, and nothing
//! needs to be looked up to check it. GET shows a confirmation page (mail
//! scanners follow links; they must not unsubscribe anyone); POST, which is
//! what a mail client's one-click button sends, suppresses the address.

use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::customers::mask_email;
use crate::startup::AppState;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks unsubscribe tokens.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Signer {
        Signer { key }
    }

    fn mac(&self, email: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(email.to_ascii_lowercase().as_bytes());
        mac.finalize().into_bytes()[..16].to_vec()
    }

    /// `base64url(email).base64url(mac)`
    pub fn token(&self, email: &str) -> String {
        format!("{}.{}", B64.encode(email), B64.encode(self.mac(email)))
    }

    /// The address a token names, if the signature holds.
    pub fn verify(&self, token: &str) -> Option<String> {
        let (who, sig) = token.split_once('.')?;
        let email = String::from_utf8(B64.decode(who).ok()?).ok()?;
        let sig = B64.decode(sig).ok()?;
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(email.to_ascii_lowercase().as_bytes());
        // verify_truncated_left compares in constant time.
        mac.verify_truncated_left(&sig).ok()?;
        (sig.len() == 16).then_some(email)
    }
}

/// The `List-Unsubscribe` target for one recipient in one-click mode.
pub fn link(base_url: &str, signer: &Signer, email: &str) -> String {
    format!(
        "{}/unsubscribe?t={}",
        base_url.trim_end_matches('/'),
        signer.token(email)
    )
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/unsubscribe", web::get().to(confirm))
        .route("/unsubscribe", web::post().to(unsubscribe));
}

#[derive(serde::Deserialize)]
struct Query {
    t: Option<String>,
}

fn page(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\"><h1>{title}</h1>{body}</body></html>"
        ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn enabled(app: &AppState) -> bool {
    app.config.email.list_unsubscribe == "one-click"
}

async fn confirm(app: web::Data<AppState>, q: web::Query<Query>) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    if !enabled(&app) {
        return page(
            S::NOT_FOUND,
            "Not found",
            "<p>Unsubscribing by link is not enabled.</p>",
        );
    }
    let Some(token) = q.t.as_deref() else {
        return page(
            S::BAD_REQUEST,
            "Link incomplete",
            "<p>This unsubscribe link is incomplete.</p>",
        );
    };
    match app.unsubscribe.verify(token) {
        Some(email) => page(
            S::OK,
            "Unsubscribe",
            &format!(
                "<p>Stop emails about your eSIM to <b>{}</b>?</p>\
                 <form method=\"post\" action=\"/unsubscribe?t={}\"><button type=\"submit\">Unsubscribe</button></form>",
                escape(&email),
                escape(token)
            ),
        ),
        None => page(S::BAD_REQUEST, "Link not valid", "<p>This unsubscribe link is not valid.</p>"),
    }
}

async fn unsubscribe(app: web::Data<AppState>, q: web::Query<Query>) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    if !enabled(&app) {
        return page(
            S::NOT_FOUND,
            "Not found",
            "<p>Unsubscribing by link is not enabled.</p>",
        );
    }
    let Some(email) = q.t.as_deref().and_then(|t| app.unsubscribe.verify(t)) else {
        return page(
            S::BAD_REQUEST,
            "Link not valid",
            "<p>This unsubscribe link is not valid.</p>",
        );
    };
    if let Err(e) = app
        .store
        .suppress(&email, "unsubscribed (one-click)", Utc::now())
    {
        tracing::error!(error = %e, "unsubscribe not recorded");
        return page(
            S::SERVICE_UNAVAILABLE,
            "Try again",
            "<p>Please try again in a few minutes.</p>",
        );
    }
    let flushed = app
        .store
        .durable()
        .await
        .unwrap_or_else(|_| Err("flusher stopped".into()));
    if flushed.is_err() {
        return page(
            S::SERVICE_UNAVAILABLE,
            "Try again",
            "<p>Please try again in a few minutes.</p>",
        );
    }
    tracing::info!(recipient = %mask_email(&email), "unsubscribed (one-click)");
    page(
        S::OK,
        "Unsubscribed",
        "<p>You will not receive these emails any more.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let s = Signer::new(b"k".to_vec());
        let t = s.token("Ana@Example.com");
        assert_eq!(s.verify(&t).as_deref(), Some("Ana@Example.com"));
        let other = Signer::new(b"other".to_vec());
        assert_eq!(other.verify(&t), None);
        let (_, sig) = t.split_once('.').unwrap();
        let forged = format!("{}.{sig}", B64.encode("mallory@example.com"));
        assert_eq!(s.verify(&forged), None);
        assert_eq!(s.verify("garbage"), None);
    }
}
