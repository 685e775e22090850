//! The shop's API on the public listener (SPEC §4 `/api/v1`), behind its
//! API keys (`auth.rs`, created with `esim-notify keys add`), with a rate
//! per key (`rate.rs`). The customer directory shares its handlers with
//! the admin API (`http::customers`); `esims.rs` is what a shop shows its
//! customer; `openapi.json` describes it all and is served without a key.

mod auth;
mod esims;
mod rate;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};

pub use rate::KeyLimiter;

use crate::api_keys::Scope;
use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The OpenAPI 3.1 document of `/api/v1`, kept by hand beside the code and
/// checked against every answer of the tests (`tests/api/shop_api.rs`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Largest request body `/api/v1` reads (413 above it).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The routes of the public listener's `/api/v1`. Needs a [`KeyLimiter`]
/// as app data.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/openapi.json", web::get().to(openapi))
        .service(
            web::scope("/api/v1")
                // A binding is a few hundred bytes; the default limit (256 KiB) is far more.
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .wrap(from_fn(auth::require_key))
                .route("/customers", web::put().to(put_customer))
                .route("/customers", web::get().to(get_customer))
                .route("/customers", web::delete().to(delete_customer))
                .route("/esims/{identifier}", web::get().to(esims::get))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::not_found("not found"))
                })),
        );
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn put_customer(app: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> Answer {
    auth::require(&req, Scope::Customers)?;
    crate::http::customers::put(app, body).await
}

async fn get_customer(app: web::Data<AppState>, req: HttpRequest) -> Answer {
    auth::require(&req, Scope::Customers)?;
    crate::http::customers::get(app, req).await
}

async fn delete_customer(app: web::Data<AppState>, req: HttpRequest) -> Answer {
    auth::require(&req, Scope::Customers)?;
    crate::http::customers::delete(app, req).await
}
