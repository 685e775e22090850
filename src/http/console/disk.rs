//! The console's renders: templates as they are on disk (read again as soon
//! as a file changes, `disk_cache.rs`), so an operator sees an edit before
//! reloading, next to what the sender (which changes only on reload or
//! SIGHUP) would send for the same input.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Config;
use crate::live::{current, template_classes};
use crate::render::{sample_vars, NoticeClass, RenderError, Rendered, TemplateProblem, Templates};

/// One template problem as the console shows it: file, line, column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl From<&TemplateProblem> for Problem {
    fn from(p: &TemplateProblem) -> Problem {
        Problem {
            file: p.file.display().to_string(),
            line: p.line,
            column: p.column,
            message: p.message.clone(),
        }
    }
}

impl Problem {
    fn of_render(e: &RenderError) -> Problem {
        match e {
            RenderError::Template { problem, .. } => Problem::from(problem),
            other => Problem {
                file: String::new(),
                line: None,
                column: None,
                message: other.to_string(),
            },
        }
    }
}

/// The template folder as it is on disk now.
pub struct Disk {
    /// The loaded set, or every problem that kept it from loading.
    pub templates: Result<Templates, Vec<Problem>>,
    /// Mapped templates that do not exist on disk, with the config key.
    pub missing: Vec<(String, Problem)>,
    /// The templates `[notify]` maps, with the variables each one sees.
    pub mapped: Vec<(String, NoticeClass)>,
    /// What `check` found per template, and for the whole folder: checking
    /// renders every part, so it is done once per read of the folder (the
    /// brand it checks with comes from the configuration it was read with).
    checked: Mutex<HashMap<String, Vec<Problem>>>,
    all_checked: OnceLock<Vec<Problem>>,
}

impl Disk {
    pub fn read(config: &Config) -> Disk {
        let dir = &config.templates.dir;
        let templates = Templates::load(dir, &config.templates.default_locale, config.default_tz())
            .map_err(|ps| ps.iter().map(Problem::from).collect::<Vec<_>>());
        let missing = match &templates {
            Ok(t) => config
                .template_keys()
                .into_iter()
                .filter(|(_, name)| !t.has(name))
                .map(|(key, name)| {
                    let problem = Problem {
                        file: dir.join(format!("{name}.subject.hbs")).display().to_string(),
                        line: None,
                        column: None,
                        message: format!(
                            "{key} maps template `{name}`, which does not exist (needs {name}.subject.hbs, {name}.txt.hbs and {name}.html.hbs)"
                        ),
                    };
                    (name, problem)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Disk {
            templates,
            missing,
            mapped: template_classes(config),
            checked: Mutex::new(HashMap::new()),
            all_checked: OnceLock::new(),
        }
    }

    /// The problems `check` finds in one loaded template, checked once.
    fn check_one(
        &self,
        t: &Templates,
        name: &str,
        class: NoticeClass,
        brand: &BTreeMap<String, String>,
    ) -> Vec<Problem> {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked
            .entry(name.to_string())
            .or_insert_with(|| {
                t.check(&[(name.to_string(), class)], brand)
                    .iter()
                    .map(Problem::from)
                    .collect()
            })
            .clone()
    }

    pub fn class_of(&self, name: &str) -> Option<NoticeClass> {
        self.mapped.iter().find(|(n, _)| n == name).map(|(_, c)| *c)
    }

    /// The default locale first, then every locale folder on disk (those
    /// the sender loaded while the folder does not load).
    pub fn locales(&self, config: &Config, live: &Templates) -> Vec<String> {
        let mut out = vec![config.templates.default_locale.clone()];
        let found = match &self.templates {
            Ok(t) => t.locales(),
            Err(_) => live.locales(),
        };
        for l in found {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(&l)) {
                out.push(l);
            }
        }
        out
    }

    /// The subject of `name` rendered with its sample in one locale, or
    /// None when it cannot be rendered: the list of the templates page.
    pub fn sample_subject(
        &self,
        brand: &BTreeMap<String, String>,
        name: &str,
        locale: &str,
        timezone: &str,
    ) -> Option<String> {
        let class = self.class_of(name)?;
        let t = self.templates.as_ref().ok()?;
        let req = RenderRequest {
            template: name.to_string(),
            locale: Some(locale.to_string()),
            timezone: Some(timezone.to_string()),
            vars: None,
        };
        let vars = vars_for(&req, class, brand).ok()?;
        t.render_at(name, Some(locale), &vars, crate::render::sample_now())
            .ok()
            .map(|r| r.subject)
    }

    /// Every problem `check` (and reload) would report for the whole folder.
    pub fn all_problems(&self, brand: &BTreeMap<String, String>) -> Vec<Problem> {
        self.all_checked
            .get_or_init(|| self.check_all(brand))
            .clone()
    }

    fn check_all(&self, brand: &BTreeMap<String, String>) -> Vec<Problem> {
        let mut out: Vec<Problem> = self.missing.iter().map(|(_, p)| p.clone()).collect();
        match &self.templates {
            Err(ps) => out.extend(ps.iter().cloned()),
            Ok(t) => {
                let wanted: Vec<_> = self
                    .mapped
                    .iter()
                    .filter(|(n, _)| t.has(n))
                    .cloned()
                    .collect();
                out.extend(t.check(&wanted, brand).iter().map(Problem::from));
            }
        }
        dedup(out)
    }
}

fn dedup(problems: Vec<Problem>) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    for p in problems {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// What to render: a template, a locale, a timezone and the variables
/// (the class's sample when none are given). `POST /admin/preview/render`'s body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RenderRequest {
    pub template: String,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub vars: Option<Value>,
}

/// A request that cannot be rendered at all (4xx), as opposed to a
/// template with problems (shown as problems).
#[derive(Debug)]
pub enum Refusal {
    UnknownTemplate(String),
    Bad(String),
}

/// The answer: the parts (null when the template cannot be rendered), every
/// problem found, and whether the sender would send the same thing.
#[derive(Debug, Clone, Serialize)]
pub struct RenderAnswer {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub problems: Vec<Problem>,
    /// `same`: the running sender renders this identically; `differs`: it
    /// still uses the version loaded at start or the last reload;
    /// `cannot`: it cannot render this at all (a new template).
    pub sender: &'static str,
    /// The subject the running sender would send for the same input, if
    /// it can render it.
    pub sender_subject: Option<String>,
    /// The variables rendered with, locale and timezone applied.
    pub vars: Value,
}

impl RenderAnswer {
    /// What the page says about the sender, in words.
    pub fn sender_note(&self) -> String {
        match (self.sender, &self.sender_subject) {
            ("differs", Some(s)) if self.subject.is_none() => format!(
                "The files on disk cannot be rendered, so a reload would be refused; the sender keeps the templates it loaded and would send the subject “{s}”."
            ),
            ("same", _) => "The sender sends exactly this: the files on disk are the ones it loaded.".into(),
            ("differs", Some(s)) => format!(
                "The sender still uses the templates it loaded at start or at the last reload, and would send the subject “{s}”. Reload now to send what you see."
            ),
            _ => "The sender cannot render this with the templates it has loaded. Reload now (once any problem is fixed) to take the files on disk.".into(),
        }
    }
}

impl Refusal {
    pub fn reason(&self) -> String {
        match self {
            Refusal::UnknownTemplate(s) | Refusal::Bad(s) => s.clone(),
        }
    }
}

/// The variables for `req`: the sample with the given ones laid over it
/// (so `{"customer":{"name":"Ana"}}` changes the name and keeps the rest a
/// strict template needs), with the selected locale and timezone written
/// into `customer`, where the helpers read them.
pub fn vars_for(
    req: &RenderRequest,
    class: NoticeClass,
    brand: &BTreeMap<String, String>,
) -> Result<Value, Refusal> {
    let mut vars = sample_vars(class, true, brand);
    match &req.vars {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => overlay(&mut vars, v),
        Some(_) => return Err(Refusal::Bad("`vars` must be a JSON object".into())),
    }
    if !vars.get("customer").is_some_and(Value::is_object) {
        vars["customer"] = json!({});
    }
    if let Some(l) = req
        .locale
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        vars["customer"]["locale"] = json!(l);
    }
    if let Some(tz) = req
        .timezone
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(Refusal::Bad(format!(
                "unknown timezone `{tz}`: use an IANA name such as Europe/Madrid"
            )));
        }
        vars["customer"]["timezone"] = json!(tz);
    }
    Ok(vars)
}

/// Lays `given` over `base`: objects key by key, anything else (null
/// included) replaces what was there.
fn overlay(base: &mut Value, given: &Value) {
    match (base, given) {
        (Value::Object(b), Value::Object(g)) => {
            for (k, v) in g {
                match b.get_mut(k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Renders `req` from disk, with every problem of that template, and
/// compares with what the running sender would send.
pub fn render(
    config: &Config,
    live: &crate::live::SharedLive,
    disk: &Disk,
    req: &RenderRequest,
) -> Result<RenderAnswer, Refusal> {
    let name = req.template.trim();
    let Some(class) = disk.class_of(name) else {
        let known: Vec<&str> = disk.mapped.iter().map(|(n, _)| n.as_str()).collect();
        return Err(Refusal::UnknownTemplate(format!(
            "unknown template `{name}`: [notify] maps {}",
            known.join(", ")
        )));
    };
    let live = current(live);
    let mut vars = vars_for(req, class, &live.config.brand)?;
    // As the sender does: no unsubscribe link unless `list_unsubscribe` is
    // configured, and none in a service email (`email.essential`).
    let email = &live.config.email;
    if email.list_unsubscribe.trim().is_empty() || email.essential.iter().any(|e| e == name) {
        vars["unsubscribe_url"] = Value::Null;
    }
    let locale = req
        .locale
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or(&config.templates.default_locale);
    let mut problems: Vec<Problem> = disk
        .missing
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, p)| p.clone())
        .collect();
    let mut rendered: Option<Rendered> = None;
    match &disk.templates {
        Err(ps) => problems.extend(ps.iter().cloned()),
        Ok(t) if t.has(name) => {
            problems.extend(disk.check_one(t, name, class, &live.config.brand));
            match t.render_at(name, Some(locale), &vars, crate::render::sample_now()) {
                Ok(r) => rendered = Some(r),
                Err(e) => problems.insert(0, Problem::of_render(&e)),
            }
        }
        Ok(_) => {}
    }
    let by_sender = live
        .templates
        .render_at(name, Some(locale), &vars, crate::render::sample_now())
        .ok();
    let sender = match (&by_sender, &rendered) {
        (Some(l), Some(r)) if l == r => "same",
        (Some(_), _) => "differs",
        (None, _) => "cannot",
    };
    let (subject, text, html) = match rendered {
        Some(r) => (Some(r.subject), Some(r.text), Some(r.html)),
        None => (None, None, None),
    };
    Ok(RenderAnswer {
        subject,
        text,
        html,
        problems: dedup(problems),
        sender,
        sender_subject: by_sender.map(|r| r.subject),
        vars,
    })
}
