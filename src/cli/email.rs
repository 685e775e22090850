//! `render` and `send-test`: seeing an email before a customer does.

use std::path::Path;

use chrono::Utc;
use serde_json::Value;

use crate::config::Config;
use crate::customers::Binding;
use crate::event::Identifiers;
use crate::event::{Event, NotifyType};
use crate::mailer::test_send::{send_test_email, TestEmail, TestSendError};
use crate::mailer::{message_id_for, InlineImage};
use crate::policy::{self, EsimState, NoticeKind};
use crate::provider::{qr, Esim, InstallVars, Plan};
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
        esim_tran_no: Some("render".into()),
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
    let mut rules = crate::live::rules_from(config);
    // A sample body must show the email it names whenever it is run: the
    // policy and the time helpers count from the body's own
    // `eventGenerateTime`, as a server receiving it then would, not from
    // today (a validity warning for a plan that ended last year sends nothing).
    let at = event.generated_at.unwrap_or_else(Utc::now);
    if let Some(t) = event.generated_at {
        eprintln!(
            "Note: evaluated as of the body's eventGenerateTime {}, as a server receiving it then would.",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    // Without the provider API a server never sends the install email; render
    // still shows it (with sample install and plan data below) so the
    // template can be seen, and says that a server would not send it.
    if !rules.provider_enabled && matches!(event.notify_type, NotifyType::OrderStatus) {
        rules.provider_enabled = true;
        eprintln!("Note: provider.access_code is empty, so a server sends no install email; shown here as it would be with the provider API on.");
    }
    let mut state = EsimState {
        ids: event.ids.clone(),
        ..Default::default()
    };
    let outcome = policy::apply(&mut state, &event, &rules, at);
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
        let captured = vars::capture(&event, notice, &state);
        let mut all = vars::email_vars(&captured, &recipient, &state.ids, &config.brand, None);
        // The install email needs the provider's answer, which `render` does
        // not ask for (it changes nothing and needs no network): it shows
        // sample install and plan data instead, and says so.
        // A service email (`email.essential`) is sent without one, as here.
        all["unsubscribe_url"] = if config.email.essential.contains(&notice.template) {
            Value::Null
        } else {
            unsubscribe_url(config, true)
        };
        let install = (notice.kind == NoticeKind::Ready).then(|| {
            let esim = sample_esim(&state.ids);
            all["plan"] = crate::provider::plan_vars(esim.plan.as_ref());
            let install = InstallVars::from(&esim);
            all["install"] = install.vars();
            eprintln!("Note: install.* and plan.* below are SAMPLE data: `render` does not query the provider API. A sent install email carries the eSIM's own activation code and plan.");
            install
        });
        let rendered =
            match templates.render_at(&notice.template, recipient.locale.as_deref(), &all, at) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: {e}", notice.template);
                    code = FAILED;
                    continue;
                }
            };
        let images = match install.as_ref().map(|i| i.inline_images(&rendered.html)) {
            None => Vec::new(),
            Some(Ok(images)) => images,
            Some(Err(e)) => {
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
        if let Some(install) = &install {
            print_images(install, &images);
        }
    }
    code
}

/// The made-up eSIM `render` shows an install email for, with the
/// identifiers the webhook body gave and the sample data of the preview.
fn sample_esim(ids: &Identifiers) -> Esim {
    use crate::render::sample as s;
    Esim {
        esim_tran_no: ids.esim_tran_no.clone(),
        iccid: ids.iccid.clone(),
        order_no: ids.order_no.clone(),
        transaction_id: ids.transaction_id.clone(),
        ac: Some(s::SAMPLE_AC.into()),
        qr_code_url: Some(s::SAMPLE_QR_CODE_URL.into()),
        short_url: Some(s::SAMPLE_SHORT_URL.into()),
        apn: Some("internet".into()),
        duration_unit: Some("DAY".into()),
        plan: Some(Plan {
            name: Some(s::SAMPLE_PLAN_NAME.into()),
            slug: Some(s::SAMPLE_PLAN_SLUG.into()),
            volume: Some(s::SAMPLE_PLAN_VOLUME),
            duration: Some(s::SAMPLE_PLAN_DAYS),
            duration_unit: Some("DAY".into()),
            location_code: Some(s::SAMPLE_PLAN_LOCATION.into()),
        }),
        ..Default::default()
    }
}

/// The inline images of an install email: what is embedded, and the QR code
/// itself drawn in the terminal (it scans from the screen).
fn print_images(install: &InstallVars, images: &[InlineImage]) {
    if images.is_empty() {
        println!("(the HTML part does not use install.qrImage: no QR code is embedded)");
        println!();
        return;
    }
    for image in images {
        println!(
            "----- inline {} <{}> ({}, {} bytes): the QR code of install.ac -----",
            image.content_type,
            image.content_id,
            image.filename,
            image.data.len()
        );
        if let Some(art) = install.ac.as_deref().and_then(|ac| qr::terminal(ac).ok()) {
            print!("{art}");
        }
    }
    println!();
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

/// One sample data email through the configured transport, marked as a
/// test (the console's "send me this one" takes the same path).
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
    let runtime = match super::runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let email = TestEmail {
        to,
        subject: &rendered.subject,
        text: &rendered.text,
        html: &rendered.html,
        inline_images: Vec::new(),
    };
    match runtime.block_on(send_test_email(config, email)) {
        Ok(via) => {
            println!("sent a test email to {to} via {via}");
            OK
        }
        Err(TestSendError::BadAddress(e)) => {
            eprintln!("--to: {e}");
            USAGE
        }
        Err(e) => {
            eprintln!("{e}");
            FAILED
        }
    }
}
