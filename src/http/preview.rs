//! `GET /admin/preview`: every mapped template in every locale, rendered
//! from sample data as the customer would see it, so an operator can review
//! an edit in a browser before reloading (HTTP Basic with the admin token as
//! password works there).

use actix_web::{web, HttpResponse};

use crate::http::state::AppState;
use crate::live::{current, template_classes};
use crate::render::{brand_vars, sample_now, sample_vars, NoticeClass};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub async fn page(app: web::Data<AppState>) -> HttpResponse {
    let live = current(&app.live);
    let mut locales: Vec<Option<String>> = vec![None];
    locales.extend(live.templates.locales().into_iter().map(Some));
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>esim-notify preview</title>\
         <style>body{font-family:sans-serif;margin:2em}section{border-top:1px solid #ccc;padding:1em 0}\
         pre{background:#f6f6f6;padding:1em;white-space:pre-wrap}iframe{width:100%;height:32em;border:1px solid #ccc}\
         .error{color:#b00}</style></head><body><h1>Template preview</h1>\
         <p>Sample data; minimal samples (unknown values null) follow each full one.</p>",
    );
    for (name, class) in template_classes(&app.config) {
        for locale in &locales {
            for full in [true, false] {
                let mut vars = sample_vars(class, full, &live.brand);
                vars["brand"] = brand_vars(&live.brand, full);
                if let Some(l) = locale {
                    vars["customer"]["locale"] = serde_json::json!(l);
                }
                let title = format!(
                    "{name} ({}) — {}, {} sample",
                    class_name(class),
                    locale
                        .as_deref()
                        .unwrap_or(&app.config.templates.default_locale),
                    if full { "full" } else { "minimal" }
                );
                html.push_str(&format!("<section><h2>{}</h2>", escape(&title)));
                // As of the sample sending instant, so the validity email shows hours left.
                match live
                    .templates
                    .render_at(&name, locale.as_deref(), &vars, sample_now())
                {
                    Ok(r) => html.push_str(&format!(
                        "<p><b>Subject:</b> {}</p><pre>{}</pre><iframe sandbox srcdoc=\"{}\"></iframe>",
                        escape(&r.subject),
                        escape(&r.text),
                        escape(&r.html)
                    )),
                    Err(e) => html.push_str(&format!("<p class=\"error\">{}</p>", escape(&e.to_string()))),
                }
                html.push_str("</section>");
            }
        }
    }
    html.push_str("</body></html>");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html)
}

fn class_name(c: NoticeClass) -> &'static str {
    match c {
        NoticeClass::Data => "data",
        NoticeClass::Validity => "validity",
        NoticeClass::Status => "status",
        NoticeClass::Ready => "esim ready",
    }
}
