//! `POST /admin/esims/{id}/resend` with `{template}`: an email of an eSIM
//! queued again for its current recipient, as the operator asked (the
//! engine's `resend`). Answers `202 {"status":"queued","notice":…}` once
//! the queued notice is on disk (202: it is queued, not sent yet); `404` an
//! unknown eSIM; `400` an unknown template or nothing to resend (no
//! recipient bound, no such email for this eSIM), with the reason; `409`
//! when the recipient is suppressed for a reason that stops that email,
//! with the suppression.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::customers::mask_email;
use crate::engine::Resend;
use crate::http::answer::{durable, parse_json};
use crate::http::error::ApiError;
use crate::http::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResendBody {
    template: String,
}

pub async fn resend(
    app: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ResendBody { template } = parse_json(&body)?;
    let template = template.trim().to_string();
    if template.is_empty() {
        return Err(ApiError::bad_request("`template` is empty"));
    }
    let (label, rules, now) = (id.trim().to_string(), app.rules(), Utc::now());
    let wanted = template.clone();
    let (outcome, decisions) = app
        .on_store(move |s| s.resend(&label, &wanted, &rules, now))
        .await?;
    match outcome {
        Resend::Queued(q) => {
            durable(&app).await?;
            app.metrics.decisions(&decisions);
            tracing::info!(
                notice = q.id,
                template = %q.notice.template,
                recipient = %mask_email(&q.recipient.email),
                "resend queued at the operator's request"
            );
            let answer = json!({
                "status": "queued",
                "notice": q.id,
                "template": q.notice.template,
                "recipient": mask_email(&q.recipient.email),
            });
            app.dispatch.enqueue(vec![*q]);
            Ok(HttpResponse::Accepted().json(answer))
        }
        Resend::NotFound => Err(ApiError::not_found(format!("no eSIM known as {id}"))),
        Resend::Refused(why) => Err(ApiError::bad_request(why)),
        Resend::Suppressed(s) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} is suppressed ({}), which stops {template}: lift the suppression first if the customer asks for it",
                mask_email(&s.email),
                s.describe()
            ),
        )
        .with(json!({ "suppression": s }))),
    }
}
