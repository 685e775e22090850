//! The operator console on the admin listener: server-rendered pages and a
//! little plain JavaScript, all embedded in the binary (no build step, no
//! CDN), behind the admin token like every `/admin` path, with state
//! changes guarded against cross-site forgery (`http::csrf`).
//!
//! | path | page |
//! |---|---|
//! | `GET /admin/` | overview (`overview.rs`), with what was sent (`chart.rs`) |
//! | `GET /admin/preview` | templates × locales, live preview (`templates.rs`, `preview.js`) |
//! | `POST /admin/preview/render`, `GET /admin/preview/frame`, `POST /admin/preview/send` | its endpoints (`preview_api.rs`) |
//! | `GET /admin/esims?q=` | one eSIM and its decision timeline (`esims.rs`) |
//! | `GET /admin/queue` | outbox, parked, dead letters (`queue.rs`) |
//! | `GET /admin/suppression-list`, `…/lift?email=` | the suppression list, search, lift with its warning (`suppressions.rs`) |
//! | `GET /admin/api-keys` | the shop's API keys: create, revoke (`keys.rs`, `keys.js`) |
//! | `GET /admin/assets/{file}` | the stylesheet and scripts |
//!
//! The template folder is read once and kept until a file in it changes
//! ([`DiskCache`], registered by `startup` as app data of the admin app).

mod chart;
mod disk;
mod disk_cache;
mod esims;
mod keys;
mod overview;
mod page;
mod preview_api;
mod queue;
mod suppressions;
mod templates;
mod timeline;

use actix_web::{web, HttpResponse};

pub use disk_cache::DiskCache;
pub use page::PAGE_CSP;
pub use preview_api::FRAME_CSP;

/// The console's routes, inside the `/admin` scope.
pub fn routes(scope: &mut web::ServiceConfig) {
    scope
        .route("/", web::get().to(overview::page))
        .route("", web::get().to(overview::page))
        .route("/preview", web::get().to(templates::page))
        .route("/preview/render", web::post().to(preview_api::render))
        .route("/preview/frame", web::get().to(preview_api::frame))
        .route("/preview/send", web::post().to(preview_api::send))
        .route("/esims", web::get().to(esims::page))
        .route("/queue", web::get().to(queue::page))
        .route("/suppression-list", web::get().to(suppressions::page))
        .route("/suppression-list/lift", web::get().to(suppressions::lift))
        .route("/api-keys", web::get().to(keys::page))
        .route("/assets/{file}", web::get().to(asset));
}

const ASSETS: [(&str, &str, &str); 5] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "chart.css",
        "text/css; charset=utf-8",
        include_str!("assets/chart.css"),
    ),
    (
        "preview.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/preview.js"),
    ),
    (
        "keys.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/keys.js"),
    ),
];

async fn asset(file: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(name, _, _)| *name == file.as_str()) {
        Some((_, content_type, body)) => HttpResponse::Ok()
            .content_type(*content_type)
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .insert_header(("Cache-Control", "no-cache"))
            .body(*body),
        None => HttpResponse::NotFound().json(serde_json::json!({"error": "no such asset"})),
    }
}
