//! The template page's JSON and frame endpoints:
//! `POST /admin/preview/render` (SPEC §4: `{template, locale?, timezone?,
//! vars?}` → `{subject, text, html, problems[]}`), `GET
//! /admin/preview/frame` (the HTML part as its own sandboxed document), and
//! `POST /admin/preview/send` ("send me this one", marked as a test).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::disk::{self, Refusal, RenderRequest};
use super::disk_cache::{DiskCache, Freshness};
use super::page::escape;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::mailer::test_send::{send_test_email, TestEmail, TestSendError};

type Answer = Result<HttpResponse, ApiError>;

/// The email's own document: no script at all (`sandbox` without
/// `allow-scripts`, and no script source), inline styles as emails have
/// them, images only from `data:`, no form, no navigation of the console.
pub const FRAME_CSP: &str = "sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; \
     style-src 'unsafe-inline'; img-src data:; font-src data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'self'";

fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::UnknownTemplate(s) => ApiError::not_found(s),
        Refusal::Bad(s) => ApiError::bad_request(s),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

/// The header saying whether the template folder was read for this answer
/// (`read`) or had not changed since it last was (`cached`).
pub const FOLDER_HEADER: &str = "x-esim-notify-templates";

/// Reads the folder (when it changed) and renders in a blocking thread:
/// both touch the disk and compile templates, which must not stall the
/// admin listener's worker.
async fn render_blocking(
    app: web::Data<AppState>,
    cache: web::Data<DiskCache>,
    req: RenderRequest,
) -> Result<(disk::RenderAnswer, Freshness), ApiError> {
    let (out, freshness) = web::block(move || {
        let (live, d, freshness) = cache.get(&app.live);
        (disk::render(&live.config, &app.live, &d, &req), freshness)
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("rendering failed: {e}")))?;
    out.map(|a| (a, freshness)).map_err(refusal)
}

pub async fn render(
    app: web::Data<AppState>,
    cache: web::Data<DiskCache>,
    body: web::Bytes,
) -> Answer {
    let req: RenderRequest = parse(&body)?;
    if req.template.trim().is_empty() {
        return Err(ApiError::bad_request("`template` is missing"));
    }
    let (answer, freshness) = render_blocking(app, cache, req).await?;
    Ok(HttpResponse::Ok()
        .insert_header((FOLDER_HEADER, freshness.as_str()))
        .json(json!({
        "subject": answer.subject,
        "text": answer.text,
        "html": answer.html,
        "problems": answer.problems,
        "sender": answer.sender,
        "sender_subject": answer.sender_subject,
        "sender_note": answer.sender_note(),
        })))
}

#[derive(Deserialize)]
pub struct FrameQuery {
    template: String,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    /// The variables as JSON text; the sample when absent.
    #[serde(default)]
    vars: Option<String>,
}

/// The HTML part alone, for the preview's `<iframe src>`. A GET, so it
/// changes nothing; what it shows is escaped by the template engine, and
/// the document may run nothing.
pub async fn frame(
    app: web::Data<AppState>,
    cache: web::Data<DiskCache>,
    req: HttpRequest,
) -> HttpResponse {
    let q = match web::Query::<FrameQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => return frame_page(StatusCode::BAD_REQUEST, &format!("unreadable query: {e}")),
    };
    let vars = match q.vars.as_deref().map(serde_json::from_str).transpose() {
        Ok(v) => v,
        Err(e) => return frame_page(StatusCode::BAD_REQUEST, &format!("sample JSON: {e}")),
    };
    let request = RenderRequest {
        template: q.template,
        locale: q.locale,
        timezone: q.timezone,
        vars,
    };
    let (answer, freshness) = match render_blocking(app, cache, request).await {
        Ok(a) => a,
        Err(e) => return frame_page(e_status(&e), &e.to_string()),
    };
    let mut resp = match answer.html {
        Some(html) => frame_response(StatusCode::OK, html),
        None => {
            let list: Vec<String> = answer
                .problems
                .iter()
                .map(|p| format!("{}{}", p.file, loc(p.line, p.column)) + ": " + &p.message)
                .collect();
            frame_page(
                StatusCode::OK,
                &format!("Cannot render:\n{}", list.join("\n")),
            )
        }
    };
    resp.headers_mut().insert(
        header::HeaderName::from_static(FOLDER_HEADER),
        header::HeaderValue::from_static(freshness.as_str()),
    );
    resp
}

fn e_status(e: &ApiError) -> StatusCode {
    actix_web::ResponseError::status_code(e)
}

fn loc(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn frame_page(status: StatusCode, message: &str) -> HttpResponse {
    frame_response(
        status,
        format!(
            "<!doctype html><meta charset=\"utf-8\"><body style=\"font:14px/1.5 system-ui,sans-serif;color:#8a1c1c;padding:16px\"><pre style=\"white-space:pre-wrap\">{}</pre>",
            escape(message)
        ),
    )
}

fn frame_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", FRAME_CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-store"))
        .body(body)
}

#[derive(Deserialize)]
struct SendRequest {
    #[serde(flatten)]
    render: RenderRequest,
    #[serde(default)]
    to: String,
}

/// Renders as the preview does and sends it to `to` through the configured
/// transport, marked as a test (the CLI's `send-test` path).
pub async fn send(
    app: web::Data<AppState>,
    cache: web::Data<DiskCache>,
    body: web::Bytes,
) -> Answer {
    let SendRequest { mut render, to } = parse(&body)?;
    let to = match crate::customers::normalize_email(&to) {
        Ok(t) => t,
        Err(e) => return Err(ApiError::bad_request(format!("`to`: {e}"))),
    };
    // The sample greets the address it goes to, as `send-test` does.
    let mut vars = render.vars.take().unwrap_or(serde_json::Value::Null);
    if vars.is_null() {
        let name = render.template.trim();
        let class = crate::live::template_classes(&crate::live::current(&app.live).config)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| ApiError::not_found(format!("unknown template `{name}`")))?;
        vars =
            crate::render::sample_vars(class, true, &crate::live::current(&app.live).config.brand);
    }
    if vars.get("customer").is_some_and(|c| c.is_object()) {
        vars["customer"]["email"] = json!(to);
    }
    render.vars = Some(vars.clone());
    let (answer, _) = render_blocking(app.clone(), cache, render).await?;
    let (Some(subject), Some(text), Some(html)) = (answer.subject, answer.text, answer.html) else {
        let first = answer
            .problems
            .first()
            .map(|p| format!("{}{}: {}", p.file, loc(p.line, p.column), p.message))
            .unwrap_or_else(|| "it cannot be rendered".into());
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("nothing sent: the template cannot be rendered: {first}"),
        )
        .with(json!({"problems": answer.problems})));
    };
    // The install email's QR code travels inside the message, as it would.
    let inline_images = crate::provider::install::images_in_vars(&vars, &html)
        .map_err(|e| ApiError::bad_request(format!("the QR code cannot be drawn: {e}")))?;
    let email = TestEmail {
        to: &to,
        subject: &subject,
        text: &text,
        html: &html,
        inline_images,
    };
    match send_test_email(&app.config, email).await {
        Ok(via) => {
            tracing::info!(to = %crate::customers::mask_email(&to), via = %via, "console test email sent");
            Ok(HttpResponse::Ok().json(json!({"sent": true, "to": to, "via": via, "subject": format!("{}{subject}", crate::mailer::test_send::TEST_SUBJECT_PREFIX)})))
        }
        Err(TestSendError::BadAddress(e)) => Err(ApiError::bad_request(format!("`to`: {e}"))),
        // The transport (or its settings) failed, not the request.
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}
