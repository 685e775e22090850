//! `GET /admin/suppression-list?q=`: the suppression list, each address with
//! its reason, what it stops and since when, with a search; and
//! `GET /admin/suppression-list/lift?email=`: the step before lifting one,
//! which says what lifting means (for a `bounced` or `complained` address:
//! the mail provider counts mail to it against the account, and may close
//! the account). The lift itself is the admin API's
//! `DELETE /admin/suppressions/{email}`, called by `console.js` with the
//! console's header (`http::csrf`).
//!
//! Addresses are shown in full: this is the page support opens for one
//! customer's address, behind the admin token like the eSIM page.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::page::{self, url_encode, when, Nav};
use crate::engine::{SuppressReason, Suppression};
use crate::http::state::AppState;

#[derive(Deserialize, Default)]
struct Query {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

fn query(req: &HttpRequest) -> Query {
    web::Query::<Query>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

/// What a suppression stops, in words, by the engine's rule
/// (`Suppression::stops`): the service emails (`email.essential`) it lets
/// through, if any.
fn stops_words(s: &Suppression, essential: &[String]) -> String {
    let still: Vec<&str> = essential
        .iter()
        .filter(|t| !s.stops(t, essential))
        .map(String::as_str)
        .collect();
    if still.is_empty() {
        "stops every email".into()
    } else {
        format!(
            "stops the reminders; service emails still go ({})",
            still.join(", ")
        )
    }
}

/// What lifting means for an address suppressed for `reason`.
fn lifting_means(reason: SuppressReason) -> &'static str {
    match reason {
        SuppressReason::Bounced => {
            "The mail server refused this address for good. Mail to an address that bounces counts against your sending account: \
             if it bounces again, your mail provider may suspend or close the account. Lift it only when the customer has \
             confirmed the address works (or has fixed their mailbox)."
        }
        SuppressReason::Complained => {
            "The customer marked an email as spam. Mailing someone who complained is what gets a sending account closed: \
             your mail provider may suspend or close it if they complain again. Lift it only when the customer asked you, \
             in writing, to email them again."
        }
        SuppressReason::Unsubscribed => {
            "The customer unsubscribed. Lifting it sends them the reminders again (data running low, plan ending); \
             do it only when they asked for it."
        }
        SuppressReason::Operator => {
            "An operator suppressed this address. Lifting it lets every email go to it again."
        }
    }
}

/// One row of the list (also the eSIM page's "suppressed" box).
pub fn row(s: &Suppression, essential: &[String], now: DateTime<Utc>) -> Value {
    let forgotten = s.email.starts_with('#');
    json!({
        "email": if forgotten { "a forgotten customer (kept as a hash)".to_string() } else { s.email.clone() },
        "forgotten": forgotten,
        "reason": s.reason.as_str(),
        "detail": s.detail,
        "since": when(s.since, now),
        "stops": stops_words(s, essential),
        "risky": matches!(s.reason, SuppressReason::Bounced | SuppressReason::Complained),
        "lift_href": format!("/admin/suppression-list/lift?email={}", url_encode(&s.email)),
    })
}

pub async fn page(app: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let q = query(&req).q.unwrap_or_default().trim().to_string();
    let (state, needle) = (app.clone(), q.to_lowercase());
    let (status, mut data) = page::read_blocking(move || {
        let now = Utc::now();
        let store = state.store.as_ref();
        let mut all = store.suppressions()?;
        all.sort_by_key(|s| std::cmp::Reverse(s.since));
        let total = all.len();
        let rows: Vec<Value> = all
            .iter()
            .filter(|s| {
                needle.is_empty()
                    || s.email.to_lowercase().contains(&needle)
                    || s.reason.as_str().contains(&needle)
                    || s.detail
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(&needle))
            })
            .map(|s| row(s, &state.config.email.essential, now))
            .collect();
        Ok((StatusCode::OK, json!({"rows": rows, "total": total})))
    })
    .await;
    data["q"] = json!(q);
    show(
        &app,
        status,
        "Suppressions",
        "suppressions",
        data,
        &["error", "rows", "total"],
    )
}

/// Renders one of this file's views; the keys a view tests that the data
/// lacks are null (the views are strict).
fn show(
    app: &AppState,
    status: StatusCode,
    title: &str,
    view: &str,
    mut data: Value,
    keys: &[&str],
) -> HttpResponse {
    for key in keys {
        if data.get(*key).is_none() {
            data[*key] = Value::Null;
        }
    }
    page::render_status(app, status, Nav::Suppressions, title, view, data)
}

pub async fn lift(app: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let email = query(&req).email.unwrap_or_default().trim().to_string();
    let (state, address) = (app.clone(), email.clone());
    let (status, data) = page::read_blocking(move || {
        let store = state.store.as_ref();
        Ok(match store.suppression(&address)? {
            Some(s) => {
                let mut r = row(&s, &state.config.email.essential, Utc::now());
                r["means"] = json!(lifting_means(s.reason));
                r["delete_url"] = json!(format!("/admin/suppressions/{}", url_encode(&address)));
                (StatusCode::OK, json!({"s": r}))
            }
            None => (
                StatusCode::NOT_FOUND,
                json!({"error": format!("{address} is not suppressed")}),
            ),
        })
    })
    .await;
    show(
        &app,
        status,
        "Lift a suppression",
        "lift",
        data,
        &["error", "s"],
    )
}
