//! The one-click unsubscribe pages on the public listener (RFC 8058). GET
//! shows a confirmation page (mail scanners follow links; they must not
//! unsubscribe anyone); POST, which is what a mail client's one-click button
//! sends, suppresses the address named by the token (`crate::unsubscribe`).
//!
//! The pages speak the customer's language: the words are the template
//! folder's `partials/unsubscribe_page.hbs` (translated per locale like any
//! partial with words), and the language is the one sealed in the link's
//! token (the email's locale), else the browser's `Accept-Language`, else
//! `templates.default_locale`. A template folder without that partial (one
//! from before it existed) gets the built-in English page.
//!
//! The pages say which emails stop and which still come: an unsubscribe
//! stops the reminders, not the service emails of `email.essential` (SPEC
//! §6), which the page lists as `page.essential`. They show the customer's
//! full address, so no other site may frame them, no cache keeps them and
//! no link leaks their URL (token included) as a Referer (`SECURITY_HEADERS`).

use actix_web::http::header::{AcceptLanguage, Header, Preference};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use crate::customers::mask_email;
use crate::engine::SuppressReason;
use crate::http::state::AppState;
use crate::live::current;
use crate::render::{page_vars, UNSUBSCRIBE_PAGE};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/unsubscribe", web::get().to(confirm))
        .route("/unsubscribe", web::post().to(unsubscribe));
}

#[derive(serde::Deserialize)]
struct Query {
    t: Option<String>,
}

/// What the page says (`page.state` in the template).
#[derive(Clone, Copy)]
enum State {
    Confirm,
    Done,
    Invalid,
    Incomplete,
    Retry,
    Disabled,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Confirm => "confirm",
            State::Done => "done",
            State::Invalid => "invalid",
            State::Incomplete => "incomplete",
            State::Retry => "retry",
            State::Disabled => "disabled",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            State::Confirm | State::Done => StatusCode::OK,
            State::Invalid | State::Incomplete => StatusCode::BAD_REQUEST,
            State::Retry => StatusCode::SERVICE_UNAVAILABLE,
            State::Disabled => StatusCode::NOT_FOUND,
        }
    }

    /// The built-in English page: (title, body paragraph).
    fn english(self) -> (&'static str, &'static str) {
        match self {
            State::Confirm => ("Unsubscribe", ""),
            State::Done => (
                "Unsubscribed",
                "You will not receive reminders about your data and plan any more. \
                 Service emails (a new eSIM's installation details, a cancellation) still come.",
            ),
            State::Invalid => ("Link not valid", "This unsubscribe link is not valid."),
            State::Incomplete => ("Link incomplete", "This unsubscribe link is incomplete."),
            State::Retry => ("Try again", "Please try again in a few minutes."),
            State::Disabled => ("Not found", "Unsubscribing by link is not enabled."),
        }
    }
}

/// The visitor's languages, most wanted first: the token's, then the browser's.
fn wanted(req: &HttpRequest, from_token: Option<String>) -> Vec<String> {
    let mut out: Vec<String> = from_token.into_iter().collect();
    if let Ok(accept) = AcceptLanguage::parse(req) {
        for pref in accept.ranked() {
            if let Preference::Specific(tag) = pref {
                out.push(tag.to_string());
            }
        }
    }
    out
}

/// A page for a person: the brand's name heads it and its support address
/// and website close it, so the customer sees who they are dealing with.
/// `email` and `token` are set for the confirmation page.
fn page(
    app: &AppState,
    state: State,
    languages: &[String],
    email: Option<&str>,
    token: Option<&str>,
) -> HttpResponse {
    let live = current(&app.live);
    let action = token.map(|t| format!("{}/unsubscribe?t={t}", public_path(&app.config)));
    let vars = page_vars(
        state.name(),
        email,
        action.as_deref(),
        &app.config.email.essential,
        &live.config.brand,
    );
    let html = match live
        .templates
        .render_page(UNSUBSCRIBE_PAGE, languages, &vars)
    {
        Some(Ok(html)) => html,
        Some(Err(e)) => {
            tracing::error!(problem = %e, "the unsubscribe page template fails; showing the built-in page");
            builtin(app, state, email, action.as_deref())
        }
        None => builtin(app, state, email, action.as_deref()),
    };
    let mut response = HttpResponse::build(state.status());
    response.content_type("text/html; charset=utf-8");
    for (name, value) in SECURITY_HEADERS {
        response.insert_header((name, value));
    }
    response.body(html)
}

/// The pages need no script, image or frame: inline styles, and a form
/// that posts back to this site.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
];

/// The path of `server.public_url` without its trailing slash (`""` at the
/// root): behind a proxy that serves us under `/notify/`, the form must post
/// to `/notify/unsubscribe`, where the proxy sends it back to us.
fn public_path(config: &crate::config::Config) -> String {
    reqwest::Url::parse(&config.public_url())
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

fn builtin(app: &AppState, state: State, email: Option<&str>, action: Option<&str>) -> String {
    let live = current(&app.live);
    let brand = |k: &str| {
        live.config
            .brand
            .get(k)
            .map(|v| escape(v.trim()))
            .filter(|v| !v.is_empty())
    };
    let name = brand("name").unwrap_or_default();
    let mut footer = String::new();
    if let Some(support) = brand("support_email") {
        footer.push_str(&format!("<a href=\"mailto:{support}\">{support}</a>"));
    }
    if let Some(site) = brand("website") {
        if !footer.is_empty() {
            footer.push_str(" · ");
        }
        footer.push_str(&format!("<a href=\"{site}\">{site}</a>"));
    }
    let (title, text) = state.english();
    let body = match (state, email, action) {
        (State::Confirm, Some(email), Some(action)) => format!(
            "<p>Stop reminders about your data and plan to <b>{}</b>? \
             Service emails (a new eSIM's installation details, a cancellation) still come.</p>\
             <form method=\"post\" action=\"{}\"><button type=\"submit\">Unsubscribe</button></form>",
            escape(email),
            escape(action)
        ),
        _ => format!("<p>{text}</p>"),
    };
    let full_title = if name.is_empty() {
        title.to_string()
    } else {
        format!("{title} · {name}")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{full_title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">\
         <p style=\"font-weight:bold\">{name}</p><h1>{title}</h1>{body}\
         <hr><p style=\"font-size:small\">{footer}</p></body></html>"
    )
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

async fn confirm(app: web::Data<AppState>, req: HttpRequest, q: web::Query<Query>) -> HttpResponse {
    if !enabled(&app) {
        return page(&app, State::Disabled, &wanted(&req, None), None, None);
    }
    let Some(token) = q.t.as_deref() else {
        return page(&app, State::Incomplete, &wanted(&req, None), None, None);
    };
    match app.unsubscribe.verify_with_locale(token) {
        Some((email, locale)) => page(
            &app,
            State::Confirm,
            &wanted(&req, locale),
            Some(&email),
            Some(token),
        ),
        None => page(&app, State::Invalid, &wanted(&req, None), None, None),
    }
}

async fn unsubscribe(
    app: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<Query>,
) -> HttpResponse {
    if !enabled(&app) {
        return page(&app, State::Disabled, &wanted(&req, None), None, None);
    }
    let Some((email, locale)) =
        q.t.as_deref()
            .and_then(|t| app.unsubscribe.verify_with_locale(t))
    else {
        return page(&app, State::Invalid, &wanted(&req, None), None, None);
    };
    let languages = wanted(&req, locale);
    let (address, now) = (email.clone(), Utc::now());
    let suppressed = app
        .on_store(move |s| {
            s.suppress(&address, SuppressReason::Unsubscribed, Some("one-click"), now)
        })
        .await;
    if let Err(e) = suppressed {
        tracing::error!(error = %e, "unsubscribe not recorded");
        return page(&app, State::Retry, &languages, None, None);
    }
    let flushed = app
        .store
        .durable()
        .await
        .unwrap_or_else(|_| Err("flusher stopped".into()));
    if flushed.is_err() {
        return page(&app, State::Retry, &languages, None, None);
    }
    tracing::info!(recipient = %mask_email(&email), "unsubscribed (one-click)");
    page(&app, State::Done, &languages, None, None)
}
