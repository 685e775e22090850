//! Reading a template folder: every file compiled, every problem collected,
//! and the rules that keep an email in one language.
//!
//! Layout on disk:
//! ```text
//! templates/NAME.{subject,txt,html}.hbs      base files (the default locale's language)
//! templates/partials/*.hbs                   base partials
//! templates/<locale>/NAME.*.hbs              a locale's templates: all three parts or none
//! templates/<locale>/partials/*.hbs          a locale's partials
//! ```
//! A template in a locale folder must have all three parts (SPEC §7): a
//! Spanish subject over an English body is the mixed-language email this
//! rule exists to prevent. For the same reason a locale that translates any
//! template must also have (itself, or through its language folder: `es-MX`
//! through `es`) every base partial that has words in it; partials made only
//! of markup (a layout, a button) are shared by every language.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use handlebars::template::Template;

use super::{
    new_registry, normalize_locale, template_key, Part, Scope, TemplateProblem, Templates,
    PARTIALS_DIR,
};

/// handlebars' parser has `unwrap`s on paths the grammar should make unreachable; an
/// operator's template must never take the service down, so a panic becomes a problem.
pub(super) fn compile(source: &str, key: &str, file: &Path) -> Result<Template, TemplateProblem> {
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

fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let path = entry.path();
            if let Some(n) = entry.file_name().to_str() {
                if path.is_dir() && !n.starts_with('.') {
                    out.push((n.to_owned(), path));
                }
            }
        }
    }
    out.sort();
    out
}

pub(super) fn split_template_file(fname: &str) -> Option<(String, Part)> {
    let stem = fname.strip_suffix(".hbs")?;
    let (name, part) = stem.rsplit_once('.')?;
    if name.is_empty() {
        return None;
    }
    Some((name.to_owned(), Part::from_suffix(part)?))
}

/// Whether a partial shows words to a reader: text left once `{{…}}`
/// expressions, comments (MSO conditionals included), `<style>` blocks, tags
/// and character references are removed, or a quoted hash value with letters
/// in an expression (`{{plural n one="day" other="days"}}`, `label="Top up"`).
/// A layout made only of markup is shared by every language; a footer that
/// says "Questions?" is not.
pub(super) fn has_words(source: &str) -> bool {
    if hash_values_have_words(source) {
        return true;
    }
    fn cut(s: &str, open: &str, close: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find(open) {
            out.push_str(&rest[..i]);
            match rest[i + open.len()..].find(close) {
                Some(j) => {
                    out.push(' ');
                    rest = &rest[i + open.len() + j + close.len()..];
                }
                None => {
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
    let mut s = cut(source, "{{!--", "--}}");
    s = cut(&s, "{{", "}}");
    s = cut(&s, "<!--", "-->");
    s = cut(&s.to_ascii_lowercase(), "<style", "</style>");
    s = cut(&s, "<", ">");
    s = cut(&s, "&", ";");
    s.chars().any(char::is_alphabetic)
}

/// `key="value"` inside `{{…}}` where the value has letters. Positional
/// literals (`(eq plan.durationUnit "MONTH")`, a datetime format) are not words.
fn hash_values_have_words(source: &str) -> bool {
    let mut rest = source;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            break;
        };
        let expr = &after[..j];
        if !expr.starts_with('!') {
            for (k, _) in expr.match_indices('=') {
                let value = expr[k + 1..].trim_start();
                let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                    continue;
                };
                let inner = &value[1..];
                let end = inner.find(quote).unwrap_or(inner.len());
                if inner[..end].chars().any(char::is_alphabetic) {
                    return true;
                }
            }
        }
        rest = &after[j + 2..];
    }
    false
}

/// What `load` reads before building the registries.
#[derive(Default)]
struct Found {
    /// key -> (compiled, file). Keys: "NAME.part.hbs", "locale/NAME.part.hbs".
    templates: BTreeMap<String, (Template, PathBuf)>,
    /// (None | Some(locale folder), partial name) -> (compiled, file, has words).
    partials: BTreeMap<(Option<String>, String), (Template, PathBuf, bool)>,
    base_parts: BTreeMap<String, BTreeSet<Part>>,
}

/// A `.hbs` file in a template folder whose name is not NAME.PART.hbs.
const NOT_A_PART: &str =
    "not a template part: expected NAME.subject.hbs, NAME.txt.hbs or NAME.html.hbs (partials go in partials/)";

impl Templates {
    /// Loads `dir` (see the module comment). Every problem is collected, not just the
    /// first, so an operator fixes them in one pass. Besides syntax errors, these are
    /// problems: a base template without all three parts; a locale file for a template
    /// that has no base files (almost always a misspelt name that would silently never
    /// be used); a locale template without all three parts. A locale that translates
    /// templates but lacks a partial with words is a warning ([`Templates::warnings`]):
    /// SPEC §7 lets a locale override files one by one, so its emails still go out,
    /// with that partial's words untranslated.
    pub fn load(
        dir: &Path,
        default_locale: &str,
        default_timezone: chrono_tz::Tz,
    ) -> Result<Templates, Vec<TemplateProblem>> {
        let mut problems = Vec::new();
        if let Err(e) = std::fs::read_dir(dir) {
            return Err(vec![TemplateProblem::new(
                dir,
                format!("cannot read the template folder: {e}"),
            )]);
        }
        let mut found = Found::default();
        let mut t = Templates {
            dir: dir.to_owned(),
            default_locale: normalize_locale(default_locale),
            default_timezone,
            base: BTreeSet::new(),
            locale_dirs: BTreeMap::new(),
            overrides: BTreeMap::new(),
            scopes: BTreeMap::new(),
            files: HashMap::new(),
            warnings: Vec::new(),
        };

        match hbs_files(dir) {
            Ok(files) => {
                for (fname, path) in files {
                    let Some((name, part)) = split_template_file(&fname) else {
                        problems.push(TemplateProblem::new(&path, NOT_A_PART));
                        continue;
                    };
                    // Recorded even when it fails to compile: its syntax error is the
                    // problem to report, not a "missing part".
                    found
                        .base_parts
                        .entry(name.clone())
                        .or_default()
                        .insert(part);
                    add_template(&mut found, None, &name, part, &path, &mut problems);
                }
            }
            Err(e) => problems.push(TemplateProblem::new(
                dir,
                format!("cannot read the template folder: {e}"),
            )),
        }

        for (dname, dpath) in subdirs(dir) {
            if dname == PARTIALS_DIR {
                add_partials(&mut found, None, &dpath, &mut problems);
                continue;
            }
            let norm = normalize_locale(&dname);
            if let Some(other) = t.locale_dirs.get(&norm) {
                problems.push(TemplateProblem::new(
                    &dpath,
                    format!("locale folder `{dname}` is the same locale as `{other}`"),
                ));
                continue;
            }
            if super::format::parse_locale(&dname).is_none() {
                problems.push(TemplateProblem::new(
                    &dpath,
                    format!("`{dname}` is not a locale such as \"es\" or \"es-MX\" (folders in the template folder are locales, or partials/)"),
                ));
                continue;
            }
            t.locale_dirs.insert(norm, dname.clone());
            let files = match hbs_files(&dpath) {
                Ok(f) => f,
                Err(e) => {
                    problems.push(TemplateProblem::new(&dpath, format!("cannot read: {e}")));
                    continue;
                }
            };
            for (fname, path) in files {
                let Some((name, part)) = split_template_file(&fname) else {
                    problems.push(TemplateProblem::new(&path, NOT_A_PART));
                    continue;
                };
                t.overrides
                    .entry((dname.clone(), name.clone()))
                    .or_default()
                    .insert(part);
                add_template(&mut found, Some(&dname), &name, part, &path, &mut problems);
            }
            let pdir = dpath.join(PARTIALS_DIR);
            if pdir.is_dir() {
                add_partials(&mut found, Some(&dname), &pdir, &mut problems);
            }
        }

        for (name, parts) in &found.base_parts {
            let missing: Vec<Part> = Part::ALL
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
        t.locale_problems(&found, &mut problems);
        t.warnings = t.missing_partials(&found);

        if !problems.is_empty() {
            return Err(problems);
        }
        t.build_scopes(&found);
        Ok(t)
    }

    /// Orphan locale files, half-translated templates and missing partials, each
    /// naming the files to add.
    fn locale_problems(&self, found: &Found, problems: &mut Vec<TemplateProblem>) {
        let dir = &self.dir;
        for ((locale, name), parts) in &self.overrides {
            if !found.base_parts.contains_key(name) {
                for p in parts {
                    problems.push(TemplateProblem::new(
                        dir.join(template_key(Some(locale), name, *p)),
                        format!(
                            "overrides template `{name}`, which has no base files in {}",
                            dir.display()
                        ),
                    ));
                }
                continue;
            }
            let missing: Vec<Part> = Part::ALL
                .into_iter()
                .filter(|p| !parts.contains(p))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let has: Vec<String> = parts
                .iter()
                .map(|p| format!("{locale}/{}", template_key(None, name, *p)))
                .collect();
            let lacks: Vec<&str> = missing.iter().map(|p| p.suffix()).collect();
            for p in &missing {
                problems.push(TemplateProblem::new(
                    dir.join(template_key(Some(locale), name, *p)),
                    format!(
                        "half-translated: locale `{locale}` has {} but no {} part of `{name}`, so its customers would get an email in two languages; add this file (or remove the others)",
                        has.join(" and "),
                        lacks.join(" or "),
                    ),
                ));
            }
        }
    }

    /// Locales that translate templates but lack a partial with words: warnings,
    /// each naming the file to add.
    fn missing_partials(&self, found: &Found) -> Vec<TemplateProblem> {
        let dir = &self.dir;
        let mut out = Vec::new();
        let worded: Vec<&String> = found
            .partials
            .iter()
            .filter(|((scope, _), (_, _, words))| scope.is_none() && *words)
            .map(|((_, name), _)| name)
            .collect();
        for locale in self.locale_dirs.values() {
            let translates = self.overrides.keys().any(|(l, _)| l == locale);
            if !translates {
                continue;
            }
            let chain = self.folder_chain(locale);
            for name in &worded {
                let present = chain.iter().any(|l| {
                    found
                        .partials
                        .contains_key(&(Some((*l).to_owned()), (*name).clone()))
                });
                if !present {
                    out.push(TemplateProblem::new(
                        dir.join(locale).join(PARTIALS_DIR).join(format!("{name}.hbs")),
                        format!(
                            "missing partial: locale `{locale}` has templates but no {PARTIALS_DIR}/{name}.hbs, so its customers read the words of the base {PARTIALS_DIR}/{name}.hbs untranslated; add this file"
                        ),
                    ));
                }
            }
        }
        out
    }

    /// One pair of registries per scope: the base files with the base partials, and
    /// for each locale folder its templates and its language folder's, with partials
    /// resolved folder first, then language folder, then base.
    fn build_scopes(&mut self, found: &Found) {
        let mut scope_names: Vec<Option<String>> = vec![None];
        scope_names.extend(self.locale_dirs.values().cloned().map(Some));
        for scope_name in scope_names {
            let chain: Vec<String> = match &scope_name {
                None => Vec::new(),
                Some(l) => self
                    .folder_chain(l)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            };
            let mut scope = Scope {
                plain: new_registry(false, self.default_timezone, &self.default_locale),
                html: new_registry(true, self.default_timezone, &self.default_locale),
                partials: BTreeMap::new(),
            };
            for (key, (tpl, path)) in &found.templates {
                let folder = key.split_once('/').map(|(l, _)| l);
                let visible = match folder {
                    None => true,
                    Some(l) => chain.iter().any(|c| c == l),
                };
                if !visible {
                    continue;
                }
                let is_html = key.ends_with(".html.hbs");
                let reg = if is_html {
                    &mut scope.html
                } else {
                    &mut scope.plain
                };
                reg.register_template(key, tpl.clone());
                self.files.insert(key.clone(), path.clone());
            }
            // Least specific first, so a more specific folder's partial replaces it.
            let mut order: Vec<Option<&str>> = vec![None];
            order.extend(chain.iter().rev().map(|s| Some(s.as_str())));
            for folder in order {
                for ((f, name), (tpl, path, _)) in &found.partials {
                    if f.as_deref() == folder {
                        scope.plain.register_template(name, tpl.clone());
                        scope.html.register_template(name, tpl.clone());
                        scope.partials.insert(name.clone(), path.clone());
                    }
                }
            }
            self.scopes.insert(scope_name, scope);
        }
    }
}

fn read(path: &Path, problems: &mut Vec<TemplateProblem>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(TemplateProblem::new(path, format!("cannot read: {e}")));
            None
        }
    }
}

fn add_template(
    found: &mut Found,
    locale: Option<&str>,
    name: &str,
    part: Part,
    path: &Path,
    problems: &mut Vec<TemplateProblem>,
) {
    let Some(source) = read(path, problems) else {
        return;
    };
    let key = template_key(locale, name, part);
    match compile(&source, &key, path) {
        Ok(tpl) => {
            found.templates.insert(key, (tpl, path.to_owned()));
        }
        Err(p) => problems.push(p),
    }
}

fn add_partials(
    found: &mut Found,
    locale: Option<&str>,
    dir: &Path,
    problems: &mut Vec<TemplateProblem>,
) {
    let files = match hbs_files(dir) {
        Ok(f) => f,
        Err(e) => {
            problems.push(TemplateProblem::new(dir, format!("cannot read: {e}")));
            return;
        }
    };
    for (fname, path) in files {
        let name = fname.trim_end_matches(".hbs").to_owned();
        let Some(source) = read(&path, problems) else {
            continue;
        };
        match compile(&source, &name, &path) {
            Ok(tpl) => {
                found.partials.insert(
                    (locale.map(str::to_owned), name),
                    (tpl, path.clone(), has_words(&source)),
                );
            }
            Err(p) => problems.push(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::has_words;

    #[test]
    fn markup_only_partials_have_no_words() {
        let layout = "<!DOCTYPE html>\n<html lang=\"{{lang}}\"><head><style>\n@media (prefers-color-scheme: dark) { .card { background: #111 } }\n</style><title>{{brand.name}}</title></head>\n<!--[if mso]><table width=\"600\"><tr><td><![endif]-->\n<body>{{> @partial-block}}&nbsp;&#847;{{!-- a comment with words --}}</body></html>";
        assert!(!has_words(layout));
        assert!(has_words(
            "<p>Questions? Write to {{brand.support_email}}</p>"
        ));
        assert!(has_words("{{#if unsubscribe_url}}Unsubscribe{{/if}}"));
        assert!(!has_words(
            "<a href=\"{{url}}\" style=\"color:#fff\">{{label}}</a>"
        ));
        assert!(has_words(
            "{{bytes plan.volume}} · {{plural plan.duration one=\"day\" other=\"days\"}}"
        ));
        assert!(has_words("{{> button url=brand.topup_url label='Top up'}}"));
        assert!(!has_words("{{#if (eq plan.durationUnit \"MONTH\")}}{{datetime x \"%Y-%m-%d\"}}{{/if}} · {{> button url=u label=l}}"));
    }
}
