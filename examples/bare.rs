//! The intake benchmark's baseline: a bare actix-web server with the same
//! worker count as esim-notify's public listener (2) answering every POST
//! with the same small JSON 200 and doing no work at all.
//!
//! `cargo run --release --example bare -- 127.0.0.1:18080`

use actix_web::{web, App, HttpResponse, HttpServer};

async fn accept() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "accepted"}))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    HttpServer::new(|| App::new().default_service(web::to(accept)))
        .workers(2)
        .bind(&addr)?
        .run()
        .await
}
