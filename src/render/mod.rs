//! Email templates: loading the operator's `templates/` folder, rendering one notice into
//! subject, text and HTML, and `check`, which finds mistakes before a customer does.
//!
//! Two handlebars registries are kept because escaping is a registry-wide setting: the
//! subject and text parts must show `&` and `<` as typed, the HTML part must escape them.
//! Both run in strict mode so a misspelt variable fails loudly instead of rendering "".

mod check;
mod helpers;
mod sample;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use handlebars::template::Template;
use handlebars::Handlebars;
use serde_json::Value;

pub use helpers::{format_bytes, format_percent, DEFAULT_DATETIME_FORMAT};
pub use sample::{brand_vars, sample_vars};

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
    /// Subject and text parts (and partials), no escaping.
    plain: Handlebars<'static>,
    /// HTML parts (and partials), HTML escaping.
    html: Handlebars<'static>,
    default_locale: String,
    /// Template names whose three base parts exist.
    base: BTreeSet<String>,
    /// Normalized locale ("es-mx") -> folder name as found on disk ("es-MX").
    locale_dirs: BTreeMap<String, String>,
    /// (locale folder, template name) -> parts that folder overrides.
    overrides: BTreeMap<(String, String), BTreeSet<Part>>,
    /// Partial name -> file.
    partials: BTreeMap<String, PathBuf>,
    /// Registry key -> file, to turn a handlebars error back into a path.
    files: HashMap<String, PathBuf>,
}

const PARTIALS_DIR: &str = "partials";

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

/// handlebars' parser has `unwrap`s on paths the grammar should make unreachable; an
/// operator's template must never take the service down, so a panic becomes a problem.
fn compile(source: &str, key: &str, file: &Path) -> Result<Template, TemplateProblem> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        Template::compile_with_name(source, key.to_owned())
    }));
    match result {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(TemplateProblem::new(file, e.reason().to_string()).at(e.pos())),
        Err(_) => Err(TemplateProblem::new(
            file,
            "the template engine could not parse this file",
        )),
    }
}

fn new_registry(html: bool, tz: chrono_tz::Tz) -> Handlebars<'static> {
    let mut reg = Handlebars::new();
    reg.set_strict_mode(true);
    if !html {
        reg.register_escape_fn(handlebars::no_escape);
    }
    helpers::register(&mut reg, tz);
    reg
}

fn hbs_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(fname) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if path.is_file() && fname.ends_with(".hbs") {
            out.push((fname, path));
        }
    }
    out.sort();
    Ok(out)
}

fn split_template_file(fname: &str) -> Option<(String, Part)> {
    let stem = fname.strip_suffix(".hbs")?;
    let (name, part) = stem.rsplit_once('.')?;
    if name.is_empty() {
        return None;
    }
    Some((name.to_owned(), Part::from_suffix(part)?))
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
    /// Loads `dir`: `NAME.subject.hbs`, `NAME.txt.hbs`, `NAME.html.hbs`; locale folders
    /// `dir/<locale>/NAME.*.hbs` override file by file; `dir/partials/*.hbs` are partials
    /// named by file stem. Every problem is collected, not just the first, so an operator
    /// fixes them in one pass. A locale file for a template with no base files is a
    /// problem too: it is almost always a misspelt name that would silently never be used.
    pub fn load(
        dir: &Path,
        default_locale: &str,
        default_timezone: chrono_tz::Tz,
    ) -> Result<Templates, Vec<TemplateProblem>> {
        let mut problems = Vec::new();
        let mut t = Templates {
            dir: dir.to_owned(),
            plain: new_registry(false, default_timezone),
            html: new_registry(true, default_timezone),
            default_locale: normalize_locale(default_locale),
            base: BTreeSet::new(),
            locale_dirs: BTreeMap::new(),
            overrides: BTreeMap::new(),
            partials: BTreeMap::new(),
            files: HashMap::new(),
        };

        let entries = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                return Err(vec![TemplateProblem::new(
                    dir,
                    format!("cannot read the template folder: {e}"),
                )])
            }
        };
        let mut subdirs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if let Some(n) = entry.file_name().to_str() {
                if path.is_dir() && !n.starts_with('.') {
                    subdirs.push((n.to_owned(), path));
                }
            }
        }
        subdirs.sort();

        let mut base_parts: BTreeMap<String, BTreeSet<Part>> = BTreeMap::new();
        match hbs_files(dir) {
            Ok(files) => {
                for (fname, path) in files {
                    let Some((name, part)) = split_template_file(&fname) else {
                        problems.push(TemplateProblem::new(
                            &path,
                            "not a template part: expected NAME.subject.hbs, NAME.txt.hbs or NAME.html.hbs (partials go in partials/)",
                        ));
                        continue;
                    };
                    // Recorded even when it fails to compile: its syntax error is the
                    // problem to report, not a "missing part".
                    t.add(None, &name, part, &path, &mut problems);
                    base_parts.entry(name).or_default().insert(part);
                }
            }
            Err(e) => problems.push(TemplateProblem::new(
                dir,
                format!("cannot read the template folder: {e}"),
            )),
        }

        for (dname, dpath) in &subdirs {
            let files = match hbs_files(dpath) {
                Ok(f) => f,
                Err(e) => {
                    problems.push(TemplateProblem::new(dpath, format!("cannot read: {e}")));
                    continue;
                }
            };
            if dname == PARTIALS_DIR {
                for (fname, path) in files {
                    let stem = fname.trim_end_matches(".hbs").to_owned();
                    t.add_partial(&stem, &path, &mut problems);
                }
                continue;
            }
            let norm = normalize_locale(dname);
            if let Some(other) = t.locale_dirs.get(&norm) {
                problems.push(TemplateProblem::new(
                    dpath,
                    format!("locale folder `{dname}` is the same locale as `{other}`"),
                ));
                continue;
            }
            t.locale_dirs.insert(norm, dname.clone());
            for (fname, path) in files {
                let Some((name, part)) = split_template_file(&fname) else {
                    problems.push(TemplateProblem::new(
                        &path,
                        "not a template part: expected NAME.subject.hbs, NAME.txt.hbs or NAME.html.hbs",
                    ));
                    continue;
                };
                t.add(Some(dname), &name, part, &path, &mut problems);
                t.overrides
                    .entry((dname.clone(), name))
                    .or_default()
                    .insert(part);
            }
        }

        for (name, parts) in &base_parts {
            let missing: Vec<_> = Part::ALL
                .into_iter()
                .filter(|p| !parts.contains(p))
                .collect();
            if missing.is_empty() {
                t.base.insert(name.clone());
            }
            for p in missing {
                problems.push(TemplateProblem::new(
                    dir.join(template_key(None, name, p)),
                    format!(
                        "missing: template `{name}` has no {} part, and every template needs all three (subject, txt, html)",
                        p.suffix()
                    ),
                ));
            }
        }
        for ((locale, name), parts) in &t.overrides {
            if !base_parts.contains_key(name) {
                for p in parts {
                    problems.push(TemplateProblem::new(
                        dir.join(template_key(Some(locale), name, *p)),
                        format!(
                            "overrides template `{name}`, which has no base files in {}",
                            dir.display()
                        ),
                    ));
                }
            }
        }

        if problems.is_empty() {
            Ok(t)
        } else {
            Err(problems)
        }
    }

    fn add(
        &mut self,
        locale: Option<&str>,
        name: &str,
        part: Part,
        path: &Path,
        problems: &mut Vec<TemplateProblem>,
    ) {
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                problems.push(TemplateProblem::new(path, format!("cannot read: {e}")));
                return;
            }
        };
        let key = template_key(locale, name, part);
        match compile(&source, &key, path) {
            Ok(tpl) => {
                let reg = match part {
                    Part::Html => &mut self.html,
                    Part::Subject | Part::Text => &mut self.plain,
                };
                reg.register_template(&key, tpl);
                self.files.insert(key, path.to_owned());
            }
            Err(p) => problems.push(p),
        }
    }

    fn add_partial(&mut self, name: &str, path: &Path, problems: &mut Vec<TemplateProblem>) {
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                problems.push(TemplateProblem::new(path, format!("cannot read: {e}")));
                return;
            }
        };
        match compile(&source, name, path) {
            Ok(tpl) => {
                self.plain.register_template(name, tpl.clone());
                self.html.register_template(name, tpl);
                self.partials.insert(name.to_owned(), path.to_owned());
                self.files.insert(name.to_owned(), path.to_owned());
            }
            Err(p) => problems.push(p),
        }
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

    /// The folders to try, most specific first: "es-MX" then "es". A customer with no
    /// locale, or one we have no folder for, gets the default locale's folder (if any);
    /// every part not found in the chain comes from the base files.
    fn locale_chain(&self, locale: Option<&str>) -> Vec<&str> {
        let candidates = |l: &str| -> Vec<&str> {
            let norm = normalize_locale(l);
            let mut keys = vec![norm.clone()];
            if let Some((lang, _)) = norm.split_once('-') {
                keys.push(lang.to_owned());
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
        };
        let chain = locale.map(candidates).unwrap_or_default();
        if chain.is_empty() {
            candidates(&self.default_locale)
        } else {
            chain
        }
    }

    fn resolve_key(&self, name: &str, part: Part, chain: &[&str]) -> String {
        for loc in chain {
            if self
                .overrides
                .get(&((*loc).to_owned(), name.to_owned()))
                .is_some_and(|parts| parts.contains(&part))
            {
                return template_key(Some(loc), name, part);
            }
        }
        template_key(None, name, part)
    }

    fn registry(&self, part: Part) -> &Handlebars<'static> {
        match part {
            Part::Html => &self.html,
            Part::Subject | Part::Text => &self.plain,
        }
    }

    fn render_key(&self, part: Part, key: &str, vars: &Value) -> Result<String, TemplateProblem> {
        let reg = self.registry(part);
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
                    .and_then(|n| self.files.get(n))
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

    /// Renders the three parts of `name` for a customer's locale. `vars` is the object of
    /// SPEC §7 (`customer`, `brand`, `esim`, `event`, `plan` and the class's group).
    pub fn render(
        &self,
        name: &str,
        locale: Option<&str>,
        vars: &Value,
    ) -> Result<Rendered, RenderError> {
        if !self.has(name) {
            return Err(RenderError::UnknownTemplate(name.to_owned()));
        }
        let vars = tidy_numbers(vars);
        let chain = self.locale_chain(locale);
        let part = |p: Part| {
            let key = self.resolve_key(name, p, &chain);
            self.render_key(p, &key, &vars)
                .map_err(|problem| RenderError::Template {
                    template: name.to_owned(),
                    problem,
                })
        };
        Ok(Rendered {
            subject: one_line(&part(Part::Subject)?),
            text: tidy_text(&part(Part::Text)?),
            html: part(Part::Html)?,
        })
    }

    /// Every file that can be chosen for (`name`, `part`): the base file and each locale
    /// override, so `check` covers what any customer could receive.
    fn variants(&self, name: &str, part: Part) -> Vec<String> {
        let mut keys = vec![template_key(None, name, part)];
        for ((loc, n), parts) in &self.overrides {
            if n == name && parts.contains(&part) {
                keys.push(template_key(Some(loc), name, part));
            }
        }
        keys
    }

    /// For each (template, class): walks every locale variant of every part (and the
    /// partials they include) for variables that do not exist for that class, in every
    /// branch, then renders each with full and with minimal sample data. Strict mode
    /// alone is not enough: it only sees the branches the sample data happens to take.
    /// Returns all problems; empty means fine.
    pub fn check(
        &self,
        wanted: &[(String, NoticeClass)],
        brand: &BTreeMap<String, String>,
    ) -> Vec<TemplateProblem> {
        let mut problems: Vec<TemplateProblem> = Vec::new();
        let mut seen_pairs = BTreeSet::new();
        let partial_asts: BTreeMap<String, (PathBuf, &Template)> = self
            .partials
            .iter()
            .filter_map(|(n, f)| {
                self.html
                    .get_template(n)
                    .map(|t| (n.clone(), (f.clone(), t)))
            })
            .collect();
        let helper_names: BTreeSet<&str> = helpers::BUILTIN_HELPERS
            .iter()
            .chain(helpers::CUSTOM_HELPERS)
            .copied()
            .collect();

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
            for part in Part::ALL {
                for key in self.variants(name, part) {
                    let Some(tpl) = self.registry(part).get_template(&key) else {
                        continue;
                    };
                    let file = self
                        .files
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| self.dir.join(&key));
                    let mut checker =
                        check::Checker::new(&full, *class, &partial_asts, &helper_names);
                    checker.walk_root(tpl, &file);
                    let found = checker.into_problems();
                    for (label, data) in [("full", &full), ("minimal", &minimal)] {
                        if let Err(mut p) = self.render_key(part, &key, data) {
                            let dup = found
                                .iter()
                                .chain(problems.iter())
                                .any(|q| q.file == p.file && q.line == p.line);
                            if !dup {
                                p.message = format!(
                                    "{} (rendering {key} with {label} sample data)",
                                    p.message
                                );
                                problems.push(p);
                            }
                        }
                    }
                    problems.extend(found);
                }
            }
        }

        let mut seen = BTreeSet::new();
        problems.retain(|p| seen.insert(p.to_string()));
        problems
    }

    /// The top-level variables (`plan`, `install`, `usage`...) that any part
    /// of `name`, in any locale, branch or partial, refers to; for warnings
    /// such as "uses `plan` while the provider API is off".
    pub fn variables_used(&self, name: &str, brand: &BTreeMap<String, String>) -> BTreeSet<String> {
        let mut used = BTreeSet::new();
        let partial_asts: BTreeMap<String, (PathBuf, &Template)> = self
            .partials
            .iter()
            .filter_map(|(n, f)| {
                self.html
                    .get_template(n)
                    .map(|t| (n.clone(), (f.clone(), t)))
            })
            .collect();
        let helper_names: BTreeSet<&str> = helpers::BUILTIN_HELPERS
            .iter()
            .chain(helpers::CUSTOM_HELPERS)
            .copied()
            .collect();
        let root = sample_vars(NoticeClass::Ready, true, brand);
        for part in Part::ALL {
            for key in self.variants(name, part) {
                let Some(tpl) = self.registry(part).get_template(&key) else {
                    continue;
                };
                let mut checker =
                    check::Checker::new(&root, NoticeClass::Ready, &partial_asts, &helper_names);
                checker.walk_root(tpl, &self.dir.join(&key));
                used.extend(checker.into_used());
            }
        }
        used
    }
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
