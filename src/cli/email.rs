//! `render` and `send-test`: seeing an email before a customer does.

use std::path::Path;

use chrono::Utc;
use serde_json::Value;

use crate::config::Config;
use crate::customers::Binding;
use crate::event::Event;
use crate::mailer::{message_id_for, Mailer, OutgoingEmail, Tls, TransportSettings};
use crate::policy::{self, EsimState};
use crate::render::{sample_vars, NoticeClass, Rendered, Templates};
use crate::vars;

use super::{FAILED, OK, USAGE};

pub struct RenderArgs<'a> {
    pub file: &'a Path,
    pub email: &'a str,
    pub name: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
}

fn templates(config: &Config) -> Result<Templates, u8> {
    crate::live::load_templates(config).map_err(|problems| {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("templates cannot be loaded; run `esim-notify check`");
        FAILED
    })
}

/// Runs the policy on a fresh eSIM state, as for a customer seen for the
/// first time, and prints every email it would cause. Touches no store.
pub fn render(config: &Config, args: RenderArgs<'_>) -> u8 {
    let text = match std::fs::read(args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            return FAILED;
        }
    };
    let event = match Event::parse(&text) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            return FAILED;
        }
    };
    // Validated as a binding would be, so a bad address or timezone is
    // refused here just as `customers add` refuses it.
    let recipient = match (Binding {
        email: args.email.to_string(),
        name: args.name,
        locale: args.locale,
        timezone: args.timezone,
        iccid: Some("render".into()),
        ..Default::default()
    })
    .validate()
    {
        Ok((r, _)) => r,
        Err(e) => {
            eprintln!("{e}");
            return USAGE;
        }
    };
    let templates = match templates(config) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let rules = crate::live::rules_from(config);
    let mut state = EsimState {
        ids: event.ids.clone(),
        ..Default::default()
    };
    let outcome = policy::apply(&mut state, &event, &rules, Utc::now());
    if outcome.notices.is_empty() {
        println!("This delivery sends no email.");
        for note in &outcome.notes {
            println!("  {note}");
        }
        return OK;
    }
    let esim_key = state
        .ids
        .esim_tran_no
        .clone()
        .unwrap_or_else(|| "esim-new".to_string());
    let count = outcome.notices.len();
    let mut code = OK;
    for (i, notice) in outcome.notices.iter().enumerate() {
        if count > 1 {
            println!("===== email {} of {count} =====", i + 1);
        }
        let captured = vars::event_vars(&event, notice, &state);
        let mut all = vars::email_vars(&captured, &recipient, &state.ids, &config.brand, None);
        all["unsubscribe_url"] = unsubscribe_url(config, true);
        let rendered = match templates.render(&notice.template, recipient.locale.as_deref(), &all) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: {e}", notice.template);
                code = FAILED;
                continue;
            }
        };
        let message_id = message_id_for(&notice.identity(&esim_key), &config.email.from);
        print_email(
            config,
            &recipient.email,
            recipient.name.as_deref(),
            &rendered,
            &message_id,
            &notice.template,
        );
    }
    code
}

/// `unsubscribe_url` outside the dispatcher: the configured `mailto:` or URL as
/// is; in one-click mode a real link needs the key kept in the store, so
/// `render` shows its shape (`…/unsubscribe?t=EXAMPLE-TOKEN`) and `send-test`,
/// whose email leaves the machine, none.
fn unsubscribe_url(config: &Config, preview: bool) -> Value {
    match config.email.list_unsubscribe.trim() {
        "" => Value::Null,
        "one-click" if preview => Value::String(format!(
            "{}/unsubscribe?t=EXAMPLE-TOKEN",
            config.public_url().trim_end_matches('/')
        )),
        "one-click" => Value::Null,
        other => Value::String(other.to_string()),
    }
}

fn print_email(
    config: &Config,
    to: &str,
    name: Option<&str>,
    r: &Rendered,
    message_id: &str,
    template: &str,
) {
    println!("Template: {template}");
    println!("From: {}", config.email.from);
    if !config.email.reply_to.is_empty() {
        println!("Reply-To: {}", config.email.reply_to);
    }
    match name {
        Some(n) => println!("To: {n} <{to}>"),
        None => println!("To: {to}"),
    }
    println!("Subject: {}", r.subject);
    println!("Message-ID: {message_id}");
    println!();
    println!("----- text/plain -----");
    println!("{}", r.text.trim_end());
    println!("----- text/html -----");
    println!("{}", r.html.trim_end());
    println!();
}

/// One sample data email through the configured transport. It bypasses the
/// queue, the limits and the suppression list on purpose: it tests the
/// transport, nothing else.
pub fn send_test(config: &Config, to: &str) -> u8 {
    // A malformed address is bad usage, refused for the reason a binding
    // would be, before anything is rendered or connected.
    let to = match crate::customers::normalize_email(to) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("--to: {e}");
            return USAGE;
        }
    };
    let to = to.as_str();
    let templates = match templates(config) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let mut vars = sample_vars(NoticeClass::Data, true, &config.brand);
    vars["customer"]["email"] = Value::String(to.to_string());
    vars["unsubscribe_url"] = unsubscribe_url(config, false);
    let name = config.notify.data_usage.template.clone();
    let rendered = match templates.render(&name, None, &vars) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: {e}");
            return FAILED;
        }
    };
    let settings = crate::mailer::settings_from(config);
    let via = describe(&settings.transport);
    let mailer = match Mailer::new(settings) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return FAILED;
        }
    };
    let email = OutgoingEmail {
        to_email: to.to_string(),
        to_name: None,
        subject: format!("[test] {}", rendered.subject),
        text: rendered.text,
        html: rendered.html,
        message_id: message_id_for(
            &format!(
                "send-test/{}",
                Utc::now().timestamp_nanos_opt().unwrap_or(0)
            ),
            &config.email.from,
        ),
        list_unsubscribe: None,
    };
    let runtime = match super::runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let result = mailer.send(&email).await;
        mailer.close().await;
        match result {
            Ok(()) => {
                println!("sent a test email to {to} via {via}");
                OK
            }
            Err(e) => {
                eprintln!("sending to {to} failed ({}): {e}", e.kind());
                FAILED
            }
        }
    })
}

/// The transport in words, for `send-test`: where the mail went, never the
/// credentials.
fn describe(t: &TransportSettings) -> String {
    match t {
        TransportSettings::File { dir } => format!("the file transport (into {})", dir.display()),
        TransportSettings::Smtp {
            host, port, tls, ..
        } => {
            let tls = match tls {
                Tls::StartTls => "STARTTLS",
                Tls::Implicit => "implicit TLS",
                Tls::None => "no TLS",
            };
            format!("SMTP at {host}:{port} ({tls})")
        }
    }
}
