//! Email templates: loading the operator's `templates/` folder, rendering one notice into
//! subject, text and HTML in the customer's language, and `check`, which finds mistakes
//! before a customer does.
//!
//! Two handlebars registries per language ("scope") are kept because escaping is a
//! registry-wide setting (the subject and text parts must show `&` and `<` as typed, the
//! HTML part must escape them) and partials are looked up by name (each language needs its
//! own `{{> footer}}`). All run in strict mode so a misspelt variable fails loudly instead
//! of rendering "". What only the render knows (the email's locale, the sending instant)
//! reaches the helpers under [`RENDER_KEY`].

mod check;
pub mod format;
mod helpers;
mod load;
pub mod sample;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use handlebars::template::Template;
use handlebars::Handlebars;
use serde_json::Value;

pub use sample::{page_vars, sample_now, sample_vars, PAGE_STATES};

/// The three files that make up one template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    fn suffix(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Text => "txt",
            Part::Html => "html",
        }
    }

    fn from_suffix(s: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.suffix() == s)
    }
}

/// Which variable groups a template can use; decided by the notice it is mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeClass {
    Data,
    Validity,
    Status,
    Ready,
}

/// One mistake in the templates, located well enough for an operator to open the file at
/// the right line.
#[derive(Debug, Clone)]
pub struct TemplateProblem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl TemplateProblem {
    fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TemplateProblem {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn at(mut self, pos: Option<(usize, usize)>) -> Self {
        if let Some((line, column)) = pos {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown template `{0}`")]
    UnknownTemplate(String),
    /// The problem names the file (a locale variant or a partial) that failed.
    #[error("cannot render template `{template}`: {problem}")]
    Template {
        template: String,
        problem: TemplateProblem,
    },
}

/// One rendered email. The subject is a single trimmed line, ready for a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A loaded, compiled template folder. Immutable: a reload builds a new one and swaps an
/// `Arc`, so a send in flight never sees half of an edit.
pub struct Templates {
    dir: PathBuf,
    default_locale: String,
    default_timezone: chrono_tz::Tz,
    /// Template names whose three base parts exist.
    base: BTreeSet<String>,
    /// Normalized locale ("es-mx") -> folder name as found on disk ("es-MX").
    locale_dirs: BTreeMap<String, String>,
    /// (locale folder, template name) -> parts that folder has (all three, once loaded).
    overrides: BTreeMap<(String, String), BTreeSet<Part>>,
    /// None: the base files with the base partials; Some(folder): that locale.
    scopes: BTreeMap<Option<String>, Scope>,
    /// Registry key -> file, to turn a handlebars error back into a path.
    files: HashMap<String, PathBuf>,
    /// What loads but deserves the operator's eye (see [`Templates::warnings`]).
    warnings: Vec<TemplateProblem>,
}

/// Every helper a template may call: handlebars' own and ours.
fn helper_names() -> BTreeSet<&'static str> {
    helpers::BUILTIN_HELPERS
        .iter()
        .chain(helpers::CUSTOM_HELPERS)
        .copied()
        .collect()
}

/// Partial name -> its file and compiled template, for the checker.
type PartialAsts<'a> = BTreeMap<String, (PathBuf, &'a Template)>;

/// The registries one language renders with. Partials are registered by name, so
/// each locale needs its own registries to give `{{> footer}}` its own words.
struct Scope {
    /// Subject and text parts (and partials), no escaping.
    plain: Handlebars<'static>,
    /// HTML parts (and partials), HTML escaping.
    html: Handlebars<'static>,
    /// Partial name -> the file this scope uses for it.
    partials: BTreeMap<String, PathBuf>,
}

impl Scope {
    /// Each partial's file and syntax tree, for `check`'s walk into `{{> partial}}`.
    fn partial_asts(&self) -> PartialAsts<'_> {
        self.partials
            .iter()
            .filter_map(|(n, f)| {
                self.html
                    .get_template(n)
                    .map(|t| (n.clone(), (f.clone(), t)))
            })
            .collect()
    }

    fn registry(&self, part: Part) -> &Handlebars<'static> {
        match part {
            Part::Html => &self.html,
            Part::Subject | Part::Text => &self.plain,
        }
    }
}

/// How one email is rendered: which folder's files, which scope's partials, and the
/// locale the helpers format numbers and dates for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Choice {
    /// The folder whose parts are used; None: the base files.
    folder: Option<String>,
    /// The scope whose partials are used.
    scope: Option<String>,
    /// BCP 47 tag for formatting and `{{lang}}`: the customer's own locale when it is
    /// in the email's language ("es-MX" reading the `es` files gets Mexican numbers),
    /// else the language the email is written in.
    locale: String,
}

const PARTIALS_DIR: &str = "partials";

/// The partial the one-click unsubscribe pages are rendered from (`page.state` is one of
/// [`sample::PAGE_STATES`]); a locale folder translates it like any partial with words.
pub const UNSUBSCRIBE_PAGE: &str = "unsubscribe_page";

/// The key under which [`Templates::render_at`] hands the helpers what only the
/// render knows: the email's locale and the sending instant. Not a template variable
/// (`check` reports a template that reads it).
pub(crate) const RENDER_KEY: &str = "_render";

fn template_key(locale: Option<&str>, name: &str, part: Part) -> String {
    match locale {
        Some(l) => format!("{l}/{name}.{}.hbs", part.suffix()),
        None => format!("{name}.{}.hbs", part.suffix()),
    }
}

/// Locales are matched case-insensitively and with `_` or `-`, because customer records
/// come from shop systems that spell them either way ("pt_BR", "pt-br").
fn normalize_locale(l: &str) -> String {
    l.trim().replace('_', "-").to_ascii_lowercase()
}

fn canonical_locale(l: &str) -> Option<String> {
    format::parse_locale(l).map(|l| l.to_string())
}

fn new_registry(html: bool, tz: chrono_tz::Tz, default_locale: &str) -> Handlebars<'static> {
    let mut reg = Handlebars::new();
    reg.set_strict_mode(true);
    if !html {
        reg.register_escape_fn(handlebars::no_escape);
    }
    helpers::register(&mut reg, tz, default_locale);
    reg
}

/// Whole numbers computed as f64 (percentages, thresholds) would print as "10.0";
/// customers should read "10".
fn tidy_numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(tidy_numbers).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), tidy_numbers(v)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// Sections a template skips (`{{#if}}` on a null) leave blank lines behind; a plain-text
/// email with gaps of five empty lines looks broken, so runs of blank lines become one.
fn tidy_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank_run = 0;
    for line in s.trim_start_matches(['\n', '\r']).lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    out
}

/// Headers are one line; operators write subjects over several lines for readability.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Templates {
    /// Not errors, but an operator should hear of them (`check`, start-up, reload):
    /// a locale that translates templates but not a partial with words.
    pub fn warnings(&self) -> &[TemplateProblem] {
        &self.warnings
    }

    /// True when the base set has all three parts of `name`.
    pub fn has(&self, name: &str) -> bool {
        self.base.contains(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.base.iter().cloned().collect()
    }

    /// Locale folders found, as spelt on disk.
    pub fn locales(&self) -> Vec<String> {
        self.locale_dirs.values().cloned().collect()
    }

    /// A folder and the folders of its CLDR parents: "es-MX" then "es-419" then "es"
    /// (those that exist): whose partials an email from that folder uses.
    fn folder_chain<'a>(&'a self, folder: &'a str) -> Vec<&'a str> {
        let mut out = vec![folder];
        for d in self.folders_for(folder) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    /// The folders a locale matches, most specific first, by CLDR's parent locales:
    /// "es-MX" then "es-419" then "es" (SPEC §7: a customer's `es-MX` falls back to
    /// `es`; Latin-American Spanish goes through `es-419` on the way).
    fn folders_for(&self, locale: &str) -> Vec<&str> {
        let norm = normalize_locale(locale);
        let mut keys: Vec<String> = format::parent_chain(&norm)
            .iter()
            .map(|l| normalize_locale(l))
            .collect();
        if keys.is_empty() {
            // Not a locale ICU reads: the tag, then what precedes its first `-`.
            keys.push(norm.clone());
            if let Some((lang, _)) = norm.split_once('-') {
                keys.push(lang.to_owned());
            }
        }
        let mut out: Vec<&str> = Vec::new();
        for k in keys {
            if let Some(d) = self.locale_dirs.get(&k) {
                if !out.contains(&d.as_str()) {
                    out.push(d.as_str());
                }
            }
        }
        out
    }

    /// The folders to try, most specific first (SPEC §7): the customer's ("es-MX",
    /// then "es"), then the default locale's; a template found in none of them
    /// comes from the base files. Two chains, because the one the template is
    /// found in also gives the partials (see [`Templates::choose`]).
    fn locale_chains(&self, locale: Option<&str>) -> [Vec<&str>; 2] {
        let own = locale.map(|l| self.folders_for(l)).unwrap_or_default();
        let default = self
            .folders_for(&self.default_locale)
            .into_iter()
            .filter(|d| !own.contains(d))
            .collect();
        [own, default]
    }

    /// For a page (not an email): the first of the `wanted` locales (most wanted
    /// first: the one the link carries, then the browser's) that has a folder or is
    /// the default locale's language, else the default.
    fn page_choice(&self, wanted: &[String]) -> (Option<String>, String) {
        let default_lang = format::language_of(&self.default_locale);
        for w in wanted {
            let Some(tag) = canonical_locale(w) else {
                continue;
            };
            if let Some(f) = self.folders_for(&tag).first() {
                return (Some((*f).to_owned()), tag);
            }
            if format::language_of(&tag) == default_lang {
                let scope = self
                    .folders_for(&self.default_locale)
                    .first()
                    .map(|f| (*f).to_owned());
                return (scope, tag);
            }
        }
        let scope = self
            .folders_for(&self.default_locale)
            .first()
            .map(|f| (*f).to_owned());
        let tag = canonical_locale(&self.default_locale).unwrap_or_else(|| "en".to_owned());
        (scope, tag)
    }

    /// Renders the page partial `name` (HTML, escaped) for a visitor who wants the
    /// `wanted` locales, most wanted first. None when the template folder has no such
    /// partial (a folder from before it existed): the caller has a built-in page.
    pub fn render_page(
        &self,
        name: &str,
        wanted: &[String],
        vars: &Value,
    ) -> Option<Result<String, RenderError>> {
        let (scope_name, locale) = self.page_choice(wanted);
        let scope = self.scope(&scope_name);
        scope.partials.get(name)?;
        let vars = with_render_context(vars, &locale, Utc::now());
        Some(
            self.render_key(scope, Part::Html, name, &vars)
                .map_err(|problem| RenderError::Template {
                    template: name.to_owned(),
                    problem,
                }),
        )
    }

    /// Which files, partials and formatting locale an email for a customer of
    /// `locale` uses. One email is in one language: the parts come from one folder
    /// (all three, see `load`), the partials from the same language.
    fn choose(&self, name: &str, locale: Option<&str>) -> Choice {
        // The first folder holding the template, and the first folder of its chain,
        // whose partials come first: an es-MX customer reading `es/` files gets
        // `es-MX/partials/` over `es/partials/`, never another language's.
        let found = self.locale_chains(locale).into_iter().find_map(|chain| {
            let folder = chain.iter().find(|d| {
                self.overrides
                    .contains_key(&((**d).to_owned(), name.to_owned()))
            })?;
            Some(((*folder).to_owned(), chain[0].to_owned()))
        });
        let folder = found.as_ref().map(|(f, _)| f.clone());
        let (scope, written_in) = match found {
            Some((f, first)) => (Some(first), f),
            None => (None, self.default_locale.clone()),
        };
        let written_in = canonical_locale(&written_in).unwrap_or_else(|| "en".to_owned());
        let customer = locale.and_then(canonical_locale);
        let locale = match customer {
            // The folder is one of the customer's CLDR parents ("es-AR" reading
            // `es-419/`): the customer's own numbers ("4,98" in Argentina).
            Some(c)
                if format::parent_chain(&c)
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&written_in)) =>
            {
                c
            }
            Some(c) if format::language_of(&c) == format::language_of(&written_in) => {
                // The more specific of the two: "es-MX" over "es", but an "es-MX" folder
                // read by an "es" customer formats as that folder is written.
                if c.len() >= written_in.len() {
                    c
                } else {
                    written_in
                }
            }
            _ => written_in,
        };
        Choice {
            folder,
            scope,
            locale,
        }
    }

    fn scope(&self, scope: &Option<String>) -> &Scope {
        self.scopes
            .get(scope)
            .or_else(|| self.scopes.get(&None))
            .expect("load always builds the base scope")
    }

    fn render_key(
        &self,
        scope: &Scope,
        part: Part,
        key: &str,
        vars: &Value,
    ) -> Result<String, TemplateProblem> {
        let reg = scope.registry(part);
        let result = catch_unwind(AssertUnwindSafe(|| reg.render(key, vars)));
        let own_file = || {
            self.files
                .get(key)
                .cloned()
                .unwrap_or_else(|| self.dir.join(key))
        };
        match result {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                let file = e
                    .template_name
                    .as_ref()
                    .and_then(|n| scope.partials.get(n).or_else(|| self.files.get(n)))
                    .cloned()
                    .unwrap_or_else(own_file);
                let pos = e.line_no.zip(e.column_no);
                let mut p = TemplateProblem::new(file, render_reason(&e)).at(pos);
                if p.line.is_none() {
                    p.line = e.line_no;
                }
                Err(p)
            }
            Err(_) => Err(TemplateProblem::new(
                own_file(),
                "the template engine failed on this template",
            )),
        }
    }

    /// Renders the three parts of `name` for a customer's locale, as if sent now.
    /// `vars` is the object of SPEC §7 (`customer`, `brand`, `esim`, `event`, `plan`,
    /// `unsubscribe_url` and the class's group).
    pub fn render(
        &self,
        name: &str,
        locale: Option<&str>,
        vars: &Value,
    ) -> Result<Rendered, RenderError> {
        self.render_at(name, locale, vars, Utc::now())
    }

    /// [`render`](Self::render) as if sent at `now`: the instant the time helpers
    /// (`hours_left`, `days_left`) count from. The dispatcher passes the moment it
    /// sends, so a validity email says how long is actually left then, however long
    /// the notice waited in the queue; tests pass a fixed instant.
    pub fn render_at(
        &self,
        name: &str,
        locale: Option<&str>,
        vars: &Value,
        now: DateTime<Utc>,
    ) -> Result<Rendered, RenderError> {
        if !self.has(name) {
            return Err(RenderError::UnknownTemplate(name.to_owned()));
        }
        let choice = self.choose(name, locale);
        self.render_choice(name, &choice, vars, now)
            .map_err(|problem| RenderError::Template {
                template: name.to_owned(),
                problem,
            })
    }

    fn render_choice(
        &self,
        name: &str,
        choice: &Choice,
        vars: &Value,
        now: DateTime<Utc>,
    ) -> Result<Rendered, TemplateProblem> {
        let vars = with_render_context(vars, &choice.locale, now);
        let scope = self.scope(&choice.scope);
        let part = |p: Part| {
            let key = template_key(choice.folder.as_deref(), name, p);
            self.render_key(scope, p, &key, &vars)
        };
        Ok(Rendered {
            subject: one_line(&part(Part::Subject)?),
            text: tidy_text(&part(Part::Text)?),
            html: part(Part::Html)?,
        })
    }

    /// Every way `name` can be rendered: the base files, and for each locale folder
    /// the files its customers get (its own, or its language folder's) with its
    /// partials. `check` covers what any customer could receive.
    fn choices_for(&self, name: &str) -> Vec<Choice> {
        let mut out = vec![Choice {
            folder: None,
            scope: None,
            locale: canonical_locale(&self.default_locale).unwrap_or_else(|| "en".to_owned()),
        }];
        for folder in self.locale_dirs.values() {
            let c = self.choose(name, Some(folder));
            if c.folder.is_some() && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// For each (template, class): walks every variant of every part (and the partials
    /// they include) for variables that do not exist for that class, in every branch,
    /// then renders each with full and with minimal sample data. Strict mode alone is
    /// not enough: it only sees the branches the sample data happens to take.
    /// Returns all problems; empty means fine.
    pub fn check(
        &self,
        wanted: &[(String, NoticeClass)],
        brand: &BTreeMap<String, String>,
    ) -> Vec<TemplateProblem> {
        let mut problems: Vec<TemplateProblem> = Vec::new();
        let mut seen_pairs = BTreeSet::new();
        let helper_names = helper_names();

        for (name, class) in wanted {
            if !seen_pairs.insert((name.clone(), format!("{class:?}"))) {
                continue;
            }
            if !self.has(name) {
                problems.push(TemplateProblem::new(
                    self.dir.join(template_key(None, name, Part::Subject)),
                    format!(
                        "template `{name}` not found: it needs {name}.subject.hbs, {name}.txt.hbs and {name}.html.hbs in {}",
                        self.dir.display()
                    ),
                ));
                continue;
            }
            let full = sample_vars(*class, true, brand);
            let minimal = sample_vars(*class, false, brand);
            self.each_part(name, |choice, scope, partial_asts, part, key, tpl| {
                let file = self
                    .files
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| self.dir.join(key));
                let mut checker = check::Checker::new(&full, *class, partial_asts, &helper_names);
                checker.walk_root(tpl, &file);
                let found = checker.into_problems();
                for (label, data) in [("full", &full), ("minimal", &minimal)] {
                    let data = with_render_context(data, &choice.locale, sample::sample_now());
                    if let Err(mut p) = self.render_key(scope, part, key, &data) {
                        let dup = found
                            .iter()
                            .chain(problems.iter())
                            .any(|q| q.file == p.file && q.line == p.line);
                        if !dup {
                            p.message =
                                format!("{} (rendering {key} with {label} sample data)", p.message);
                            problems.push(p);
                        }
                    }
                }
                problems.extend(found);
            });
        }

        problems.extend(self.check_pages(brand, &helper_names));
        let mut seen = BTreeSet::new();
        problems.retain(|p| seen.insert(p.to_string()));
        problems
    }

    /// The top-level variables (`plan`, `install`, `usage`...) that any part
    /// of `name`, in any locale, branch or partial, refers to; for warnings
    /// such as "uses `plan` while the provider API is off".
    pub fn variables_used(&self, name: &str, brand: &BTreeMap<String, String>) -> BTreeSet<String> {
        let mut used = BTreeSet::new();
        let helper_names = helper_names();
        let root = sample_vars(NoticeClass::Ready, true, brand);
        self.each_part(name, |_, _, partial_asts, _, key, tpl| {
            let mut checker =
                check::Checker::new(&root, NoticeClass::Ready, partial_asts, &helper_names);
            checker.walk_root(tpl, &self.dir.join(key));
            used.extend(checker.into_used());
        });
        used
    }

    /// Calls `f` with every part of `name` in every folder an email of it can
    /// come from: the choice, its scope and partials, the part, its registry
    /// key and the compiled template.
    fn each_part<'a>(
        &'a self,
        name: &str,
        mut f: impl FnMut(&Choice, &'a Scope, &PartialAsts<'a>, Part, &str, &'a Template),
    ) {
        for choice in self.choices_for(name) {
            let scope = self.scope(&choice.scope);
            let partial_asts = scope.partial_asts();
            for part in Part::ALL {
                let key = template_key(choice.folder.as_deref(), name, part);
                if let Some(tpl) = scope.registry(part).get_template(&key) {
                    f(&choice, scope, &partial_asts, part, &key, tpl);
                }
            }
        }
    }

    /// The unsubscribe page partial, in every scope that has it, in every state.
    fn check_pages(
        &self,
        brand: &BTreeMap<String, String>,
        helper_names: &BTreeSet<&str>,
    ) -> Vec<TemplateProblem> {
        let mut problems = Vec::new();
        let full = sample::sample_page_vars("confirm", brand);
        for (scope_name, scope) in &self.scopes {
            let Some(file) = scope.partials.get(UNSUBSCRIBE_PAGE) else {
                continue;
            };
            let Some(tpl) = scope.html.get_template(UNSUBSCRIBE_PAGE) else {
                continue;
            };
            let partial_asts = scope.partial_asts();
            let mut checker =
                check::Checker::new(&full, NoticeClass::Status, &partial_asts, helper_names);
            checker.walk_root(tpl, file);
            let found = checker.into_problems();
            let locale = scope_name
                .as_deref()
                .and_then(canonical_locale)
                .or_else(|| canonical_locale(&self.default_locale))
                .unwrap_or_else(|| "en".to_owned());
            for state in sample::PAGE_STATES {
                let data = with_render_context(
                    &sample::sample_page_vars(state, brand),
                    &locale,
                    sample::sample_now(),
                );
                if let Err(mut p) = self.render_key(scope, Part::Html, UNSUBSCRIBE_PAGE, &data) {
                    if !found.iter().any(|q| q.file == p.file && q.line == p.line) {
                        p.message = format!(
                            "{} (rendering the {state} page with sample data)",
                            p.message
                        );
                        problems.push(p);
                    }
                }
            }
            problems.extend(found);
        }
        problems
    }
}

/// The variables plus [`RENDER_KEY`], with whole floats made integers.
fn with_render_context(vars: &Value, locale: &str, now: DateTime<Utc>) -> Value {
    let mut v = tidy_numbers(vars);
    if let Value::Object(m) = &mut v {
        m.insert(
            RENDER_KEY.to_owned(),
            serde_json::json!({
                "locale": locale,
                "now": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }),
        );
    }
    v
}

fn render_reason(e: &handlebars::RenderError) -> String {
    use handlebars::RenderErrorReason as R;
    match e.reason() {
        R::MissingVariable(Some(path)) => format!("unknown variable `{path}`"),
        R::MissingVariable(None) => "unknown variable".to_owned(),
        R::PartialNotFound(p) => format!("unknown partial `{p}`"),
        R::HelperNotFound(h) => format!("unknown helper `{h}`"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
