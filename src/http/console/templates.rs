//! `GET /admin/preview`: the templates page. Every mapped template in every
//! locale, rendered from the files on disk with sample data (the list shows
//! each subject), and one of them opened: subject, HTML part, text part,
//! the sample to edit, and whether the sender (which changes only on
//! reload) sends the same. `preview.js` re-renders as the sample changes.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::disk::{self, RenderRequest};
use super::disk_cache::DiskCache;
use super::page::{self, url_encode, Nav};
use crate::http::state::AppState;
use crate::render::NoticeClass;

/// Timezones offered besides the default and whatever is selected.
const TIMEZONES: &[&str] = &[
    "UTC",
    "Europe/London",
    "Europe/Madrid",
    "Europe/Paris",
    "Europe/Berlin",
    "America/New_York",
    "America/Mexico_City",
    "America/Sao_Paulo",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
];

#[derive(Deserialize, Default)]
struct Query {
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
}

fn class_name(c: NoticeClass) -> &'static str {
    match c {
        NoticeClass::Data => "data",
        NoticeClass::Validity => "validity",
        NoticeClass::Status => "status",
        NoticeClass::Ready => "eSIM ready",
    }
}

fn href(template: &str, locale: &str, timezone: &str) -> String {
    format!(
        "/admin/preview?template={}&locale={}&timezone={}",
        url_encode(template),
        url_encode(locale),
        url_encode(timezone)
    )
}

/// The URL of the HTML part's own document (see `preview_api::frame`).
fn frame_src(template: &str, locale: &str, timezone: &str) -> String {
    format!(
        "/admin/preview/frame?template={}&locale={}&timezone={}",
        url_encode(template),
        url_encode(locale),
        url_encode(timezone)
    )
}

pub async fn page(
    app: web::Data<AppState>,
    cache: web::Data<DiskCache>,
    req: HttpRequest,
) -> HttpResponse {
    let q = web::Query::<Query>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let state = app.clone();
    let built = web::block(move || build(&state, &cache, q)).await;
    match built {
        Ok(data) => page::render(&app, Nav::Templates, "Templates", "templates", data),
        Err(e) => page::html(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "<!doctype html><p>cannot build the page: {}</p>",
                page::escape(&e.to_string())
            ),
        ),
    }
}

fn build(app: &AppState, cache: &DiskCache, q: Query) -> Value {
    // The configuration last loaded (at start or by a reload): its mapping
    // and folder, as read with it.
    let (live, disk, _) = cache.get(&app.live);
    let config = &live.config;
    let locales = disk.locales(config, &live.templates);
    let pick = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let timezone = pick(q.timezone)
        .filter(|t| t.parse::<chrono_tz::Tz>().is_ok())
        .unwrap_or_else(|| config.templates.default_timezone.clone());
    let selected_template = pick(q.template)
        .filter(|t| disk.class_of(t).is_some())
        .or_else(|| disk.mapped.first().map(|(n, _)| n.clone()))
        .unwrap_or_default();
    let selected_locale = pick(q.locale).unwrap_or_else(|| config.templates.default_locale.clone());

    let mut list = Vec::new();
    for (name, class) in &disk.mapped {
        let mut cells = Vec::new();
        for locale in &locales {
            let subject = disk.sample_subject(&live.config.brand, name, locale, &timezone);
            cells.push(json!({
                "locale": locale,
                "subject": subject,
                "href": href(name, locale, &timezone),
                "selected": *name == selected_template && locale.eq_ignore_ascii_case(&selected_locale),
            }));
        }
        list.push(json!({"name": name, "class": class_name(*class), "locales": cells}));
    }
    let unmapped: Vec<String> = match &disk.templates {
        Ok(t) => t
            .names()
            .into_iter()
            .filter(|n| disk.class_of(n).is_none())
            .collect(),
        Err(_) => Vec::new(),
    };

    let selected = if selected_template.is_empty() {
        Value::Null
    } else {
        let req = RenderRequest {
            template: selected_template.clone(),
            locale: Some(selected_locale.clone()),
            timezone: Some(timezone.clone()),
            vars: None,
        };
        match disk::render(config, &app.live, &disk, &req) {
            Ok(a) => json!({
                "error": null,
                "template": selected_template,
                "locale": selected_locale,
                "timezone": timezone,
                "subject": a.subject,
                "text": a.text,
                "problems": a.problems,
                "sender": a.sender,
                "sender_same": a.sender == "same",
                "sender_note": a.sender_note(),
                "frame": frame_src(&selected_template, &selected_locale, &timezone),
                "vars_json": serde_json::to_string_pretty(&a.vars).unwrap_or_default(),
            }),
            Err(e) => json!({"error": e.reason()}),
        }
    };
    let mut locale_options: Vec<Value> = locales
        .iter()
        .map(|l| json!({"value": l, "selected": l.eq_ignore_ascii_case(&selected_locale)}))
        .collect();
    if !locales
        .iter()
        .any(|l| l.eq_ignore_ascii_case(&selected_locale))
    {
        locale_options.push(json!({"value": selected_locale, "selected": true}));
    }
    let mut zones: Vec<String> = vec![config.templates.default_timezone.clone()];
    for z in TIMEZONES
        .iter()
        .map(|z| z.to_string())
        .chain([timezone.clone()])
    {
        if !zones.contains(&z) {
            zones.push(z);
        }
    }
    let timezone_options: Vec<Value> = zones
        .iter()
        .map(|z| json!({"value": z, "selected": *z == timezone}))
        .collect();
    json!({
        "dir": config.templates.dir.display().to_string(),
        "problems": disk.all_problems(&live.config.brand),
        "list": list,
        "unmapped": unmapped,
        "selected": selected,
        "locale_options": locale_options,
        "timezone_options": timezone_options,
    })
}
