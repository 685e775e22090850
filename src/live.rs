//! The settings SIGHUP may swap while running (templates, `[notify]`,
//! `[brand]`, `[rate_limit]`, `[delivery]`), shared by the HTTP handlers and
//! the dispatcher: both read [`current`] and never hold the lock across an
//! await.

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::Rules;
use crate::render::{NoticeClass, Templates};

/// What SIGHUP may replace while running: templates and the `[notify]`,
/// `[brand]`, `[rate_limit]` and `[delivery]` sections.
pub struct Live {
    /// The configuration last loaded: readers take `[brand]`, `[rate_limit]`,
    /// `[delivery]` and the template mapping from it. After a reload it is the
    /// file as re-read; what it changes outside those sections still waits
    /// for a restart (readers of those use the start-up config).
    pub config: Arc<Config>,
    /// `[notify]` as the policy reads it.
    pub rules: Arc<Rules>,
    pub templates: Arc<Templates>,
}

pub type SharedLive = Arc<RwLock<Arc<Live>>>;

/// Reads the current live settings; a poisoned lock still holds a whole value.
pub fn current(live: &SharedLive) -> Arc<Live> {
    live.read().unwrap_or_else(|p| p.into_inner()).clone()
}

pub fn rules_from(config: &Config) -> Rules {
    Rules {
        data_enabled: config.notify.data_usage.enabled,
        thresholds: config.notify.data_usage.thresholds.clone(),
        data_template: config.notify.data_usage.template.clone(),
        validity_enabled: config.notify.validity_usage.enabled,
        validity_template: config.notify.validity_usage.template.clone(),
        esim_status: config.notify.esim_status.clone(),
        order_status: config.notify.order_status.clone(),
        provider_enabled: config.provider_enabled(),
    }
}

/// The class of variables each mapped template sees, for `check`.
pub fn template_classes(config: &Config) -> Vec<(String, NoticeClass)> {
    let mut out: Vec<(String, NoticeClass)> = Vec::new();
    let mut add = |name: &str, class| {
        if !out.iter().any(|(n, c)| n == name && *c == class) {
            out.push((name.to_string(), class));
        }
    };
    if config.notify.data_usage.enabled {
        add(&config.notify.data_usage.template, NoticeClass::Data);
    }
    if config.notify.validity_usage.enabled {
        add(
            &config.notify.validity_usage.template,
            NoticeClass::Validity,
        );
    }
    for t in config.notify.esim_status.values() {
        add(t, NoticeClass::Status);
    }
    // Mapped even while the provider API is off (nothing is then sent with
    // them): `check` still checks them and the console still previews them,
    // so setting the access code later holds no surprise.
    for t in config.notify.order_status.values() {
        add(t, NoticeClass::Ready);
    }
    out
}

/// Every template the configuration maps, once each (the `template` label
/// values of `esim_notify_notices_total`).
pub fn template_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = template_classes(config)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Loads the templates and checks that every mapped one exists, naming the
/// config key that maps a missing one.
pub fn load_templates(config: &Config) -> Result<Templates, Vec<String>> {
    let templates = Templates::load(
        &config.templates.dir,
        &config.templates.default_locale,
        config.default_tz(),
    )
    .map_err(|problems| problems.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
    let missing: Vec<String> = config
        .template_keys()
        .into_iter()
        .filter(|(_, name)| !templates.has(name))
        .map(|(key, name)| {
            format!(
                "{key}: template `{name}` does not exist in {} (needs {name}.subject.hbs, {name}.txt.hbs and {name}.html.hbs)",
                config.templates.dir.display()
            )
        })
        .collect();
    if missing.is_empty() {
        Ok(templates)
    } else {
        Err(missing)
    }
}

/// What `check`, start-up and a reload say about templates that load: the
/// templates' own warnings, then [`provider_warnings`].
pub fn template_warnings(config: &Config, templates: &Templates) -> Vec<String> {
    let mut w: Vec<String> = templates.warnings().iter().map(|p| p.to_string()).collect();
    w.extend(provider_warnings(config, templates));
    w
}

/// With the provider API off (no access code), the templates that use what
/// only it fills: `plan` is then always null, and an `install` template
/// mapped in `[notify.order_status]` is never sent. Not errors: running
/// without the API is a choice, and the shipped templates read well without
/// a plan; but an operator who forgot the access code should hear of it.
pub fn provider_warnings(config: &Config, templates: &Templates) -> Vec<String> {
    if config.provider_enabled() {
        return Vec::new();
    }
    let uses = |name: &String, var: &str| {
        templates.has(name) && templates.variables_used(name, &config.brand).contains(var)
    };
    // The templates that are sent: those of [notify.order_status] are not.
    let mut plan: Vec<String> = template_classes(config)
        .into_iter()
        .filter(|(n, class)| *class != NoticeClass::Ready && uses(n, "plan"))
        .map(|(n, _)| n)
        .collect();
    plan.sort();
    plan.dedup();
    let mut install: Vec<String> = config
        .notify
        .order_status
        .values()
        .filter(|n| uses(n, "install"))
        .cloned()
        .collect();
    install.dedup();
    let mut w = Vec::new();
    if !plan.is_empty() {
        w.push(format!(
            "provider.access_code is empty (the provider API is off), so `plan` is always null in {}: set ESIM_NOTIFY_PROVIDER__ACCESS_CODE to show plan names",
            plan.join(", ")
        ));
    }
    if !install.is_empty() {
        w.push(format!(
            "provider.access_code is empty (the provider API is off), so {} (`install`, the install email of [notify.order_status]) is never sent",
            install.join(", ")
        ));
    }
    w
}

/// Everything SIGHUP may swap, built and validated from a config.
pub fn build_live(config: &Config) -> Result<Live, Vec<String>> {
    let templates = load_templates(config)?;
    let problems: Vec<String> = templates
        .check(&template_classes(config), &config.brand)
        .iter()
        .map(|p| p.to_string())
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Live {
        config: Arc::new(config.clone()),
        rules: Arc::new(rules_from(config)),
        templates: Arc::new(templates),
    })
}

/// What one reload did, for whoever asked (SIGHUP logs it; `POST
/// /admin/reload` answers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Swapped in. `restart_needed` names what changed outside the live
    /// sections: it stays as it was until a restart.
    Applied { restart_needed: Vec<String> },
    /// Refused, each problem with its key or file and line; the previous
    /// configuration stays in force.
    Refused { problems: Vec<String> },
    /// The configuration came from no file, so there is nothing to re-read.
    NoFile,
}

/// SIGHUP: re-read the file, validate everything that may change, swap it in
/// at once or keep the old set.
/// `running` is the configuration the process started with: what differs
/// from it outside the live sections is named as needing a restart.
pub fn reload(
    running: &Config,
    shared: &SharedLive,
    path: Option<&std::path::Path>,
    metrics: &Metrics,
) -> ReloadOutcome {
    let Some(path) = path else {
        tracing::warn!("reload requested but the config came from no file");
        return ReloadOutcome::NoFile;
    };
    let result = Config::load(path)
        .map_err(|e| vec![e.to_string()])
        .and_then(|mut c| {
            if c.server.public_url.is_empty() {
                c.server.public_url = running.server.public_url.clone();
            }
            build_live(&c).map(|l| (c, l))
        });
    match result {
        Ok((new, live)) => {
            let restart_needed: Vec<String> = running
                .restart_changes(&new)
                .into_iter()
                .map(|what| format!("{what} changed: it takes effect after a restart"))
                .collect();
            for what in &restart_needed {
                tracing::warn!("{what}");
            }
            for w in template_warnings(&new, &live.templates) {
                tracing::warn!("{w}");
            }
            *shared.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
            metrics.reload(true);
            metrics.zero(&template_names(&new));
            tracing::info!("configuration and templates reloaded");
            ReloadOutcome::Applied { restart_needed }
        }
        Err(problems) => {
            metrics.reload(false);
            tracing::error!(problems = %problems.join("; "), "reload refused; the previous configuration stays in force");
            ReloadOutcome::Refused { problems }
        }
    }
}
