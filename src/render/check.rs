//! The syntax-tree walk behind `Templates::check`.
//!
//! Rendering with sample data only exercises the branches that data takes; a typo inside
//! `{{#if plan.name}}` would pass with one sample and reach a customer with the other.
//! So every expression in every branch is resolved against the variables its notice
//! class really has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use handlebars::template::{
    BlockParam, DecoratorTemplate, HelperTemplate, Parameter, Template, TemplateElement,
};
use handlebars::{Path as HbPath, PathSeg};
use serde_json::Value;

use super::{NoticeClass, TemplateProblem};

/// Partials may include partials; this bounds a cycle or a very deep chain.
const MAX_PARTIAL_DEPTH: usize = 8;

#[derive(Clone, Copy)]
enum Shape<'a> {
    Known(&'a Value),
    /// Anything may be there (an `{{#each}}` item, a partial's hash value): not checked.
    Unknown,
}

#[derive(Clone)]
struct Frame<'a> {
    this: Shape<'a>,
    /// Block params (`as |x|`) and partial hash keys visible from this frame.
    names: Vec<(String, Shape<'a>)>,
}

pub(super) struct Checker<'a> {
    root: &'a Value,
    class: NoticeClass,
    partials: &'a BTreeMap<String, (PathBuf, &'a Template)>,
    helpers: &'a BTreeSet<&'a str>,
    problems: Vec<TemplateProblem>,
    /// Top-level variables the walk met (`plan`, `install`...), in any branch.
    used: BTreeSet<String>,
}

struct Site<'f> {
    file: &'f Path,
    /// The file that included this partial, for the message.
    via: Option<&'f Path>,
    inline: BTreeSet<String>,
    chain: Vec<String>,
}

type Pos = Option<(usize, usize)>;

fn rule_name(seg: &PathSeg) -> Option<String> {
    match seg {
        // The grammar's Rule type is private to handlebars; its Debug name is stable.
        PathSeg::Ruled(r) => Some(format!("{r:?}")),
        _ => None,
    }
}

fn class_owning(group: &str) -> Option<&'static str> {
    match group {
        "usage" => Some("data usage"),
        "validity" => Some("validity"),
        "status" => Some("eSIM status"),
        "install" => Some("esim_ready"),
        _ => None,
    }
}

fn class_label(c: NoticeClass) -> &'static str {
    match c {
        NoticeClass::Data => "a data usage",
        NoticeClass::Validity => "a validity",
        NoticeClass::Status => "an eSIM status",
        NoticeClass::Ready => "an esim_ready",
    }
}

fn collect_inline(t: &Template, out: &mut BTreeSet<String>) {
    for el in &t.elements {
        match el {
            TemplateElement::DecoratorBlock(d) => {
                if d.name.as_name() == Some("inline") {
                    if let Some(Parameter::Literal(Value::String(n))) = d.params.first() {
                        out.insert(n.clone());
                    }
                }
                if let Some(t) = &d.template {
                    collect_inline(t, out);
                }
            }
            TemplateElement::HelperBlock(h) => {
                for t in h.template.iter().chain(h.inverse.iter()) {
                    collect_inline(t, out);
                }
            }
            TemplateElement::PartialBlock(d) => {
                if let Some(t) = &d.template {
                    collect_inline(t, out);
                }
            }
            _ => {}
        }
    }
}

impl<'a> Checker<'a> {
    pub(super) fn new(
        root: &'a Value,
        class: NoticeClass,
        partials: &'a BTreeMap<String, (PathBuf, &'a Template)>,
        helpers: &'a BTreeSet<&'a str>,
    ) -> Self {
        Checker {
            root,
            class,
            partials,
            helpers,
            problems: Vec::new(),
            used: BTreeSet::new(),
        }
    }

    pub(super) fn into_problems(self) -> Vec<TemplateProblem> {
        self.problems
    }

    pub(super) fn into_used(self) -> BTreeSet<String> {
        self.used
    }

    pub(super) fn walk_root(&mut self, t: &'a Template, file: &Path) {
        let mut inline = BTreeSet::new();
        collect_inline(t, &mut inline);
        let mut site = Site {
            file,
            via: None,
            inline,
            chain: Vec::new(),
        };
        let mut frames = vec![Frame {
            this: Shape::Known(self.root),
            names: Vec::new(),
        }];
        self.template(t, &mut frames, &mut site, None);
    }

    fn problem(&mut self, site: &Site<'_>, pos: Pos, message: String) {
        let message = match site.via {
            Some(via) => format!("{message} (in a partial included from {})", via.display()),
            None => message,
        };
        self.problems
            .push(TemplateProblem::new(site.file, message).at(pos));
    }

    fn template(
        &mut self,
        t: &'a Template,
        frames: &mut Vec<Frame<'a>>,
        site: &mut Site<'_>,
        fallback: Pos,
    ) {
        for (i, el) in t.elements.iter().enumerate() {
            // Else-if chain nodes are built without a mapping; use the enclosing block's.
            let pos = t.mapping.get(i).map(|m| (m.0, m.1)).or(fallback);
            match el {
                TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    self.expression(h, frames, site, pos)
                }
                TemplateElement::HelperBlock(h) => self.block(h, frames, site, pos),
                TemplateElement::DecoratorExpression(d) => self.args(d_args(d), frames, site, pos),
                TemplateElement::DecoratorBlock(d) => {
                    self.args(d_args(d), frames, site, pos);
                    if let Some(body) = &d.template {
                        self.template(body, frames, site, pos);
                    }
                }
                TemplateElement::PartialExpression(d) => self.partial(d, false, frames, site, pos),
                TemplateElement::PartialBlock(d) => self.partial(d, true, frames, site, pos),
                _ => {}
            }
        }
    }

    fn is_helper(&self, name: &str) -> bool {
        self.helpers.contains(name)
    }

    fn expression(
        &mut self,
        h: &'a HelperTemplate,
        frames: &mut Vec<Frame<'a>>,
        site: &mut Site<'_>,
        pos: Pos,
    ) {
        let name_only = h.params.is_empty() && h.hash.is_empty();
        if name_only {
            match &h.name {
                Parameter::Path(p) if !self.is_helper(p_raw(p)) => {
                    self.path(p, frames, site, pos);
                }
                Parameter::Subexpression(_) => {
                    self.param(&h.name, frames, site, pos);
                }
                _ => {}
            }
            return;
        }
        self.helper_call(h, frames, site, pos);
    }

    fn helper_call(
        &mut self,
        h: &'a HelperTemplate,
        frames: &mut Vec<Frame<'a>>,
        site: &mut Site<'_>,
        pos: Pos,
    ) {
        if let Some(n) = h.name.as_name() {
            if !self.is_helper(n) {
                self.problem(site, pos, format!("unknown helper `{n}`"));
            }
        }
        self.args((&h.params, &h.hash), frames, site, pos);
    }

    fn args(
        &mut self,
        (params, hash): HelperArgs<'a>,
        frames: &mut Vec<Frame<'a>>,
        site: &mut Site<'_>,
        pos: Pos,
    ) {
        for p in params {
            self.param(p, frames, site, pos);
        }
        let mut keys: Vec<_> = hash.keys().collect();
        keys.sort();
        for k in keys {
            self.param(&hash[k], frames, site, pos);
        }
    }

    fn param(
        &mut self,
        p: &'a Parameter,
        frames: &mut Vec<Frame<'a>>,
        site: &mut Site<'_>,
        pos: Pos,
    ) -> Shape<'a> {
        match p {
            Parameter::Path(path) => self.path(path, frames, site, pos),
            Parameter::Literal(v) => Shape::Known(v),
            Parameter::Subexpression(s) => {
                if let TemplateElement::Expression(h) = s.as_element() {
                    if h.params.is_empty() && h.hash.is_empty() {
                        if let Parameter::Path(path) = &h.name {
                            if !self.is_helper(p_raw(path)) {
                                return self.path(path, frames, site, pos);
                            }
                        }
                    } else {
                        self.helper_call(h, frames, site, pos);
                    }
                }
                Shape::Unknown
            }
            Parameter::Name(_) => Shape::Unknown,
            _ => Shape::Unknown,
        }
    }

    /// Resolves a path as handlebars would, reporting it when it cannot exist.
    fn path(
        &mut self,
        path: &HbPath,
        frames: &[Frame<'a>],
        site: &Site<'_>,
        pos: Pos,
    ) -> Shape<'a> {
        let (segs, raw) = match path {
            HbPath::Relative((segs, raw)) => (segs, raw),
            // @index, @key, @first, @last, @root...: set by the engine, always fine.
            HbPath::Local(_) => return Shape::Unknown,
            #[allow(unreachable_patterns)]
            _ => return Shape::Unknown,
        };
        let mut i = 0;
        let mut shape;
        if segs.first().and_then(rule_name).as_deref() == Some("path_root") {
            shape = Shape::Known(self.root);
            i = 1;
        } else {
            let mut level = frames.len().saturating_sub(1);
            while segs.get(i).and_then(rule_name).as_deref() == Some("path_up") {
                level = level.saturating_sub(1);
                i += 1;
            }
            shape = frames.get(level).map_or(Shape::Unknown, |f| f.this);
            if i == 0 {
                if let Some(PathSeg::Named(first)) = segs.first() {
                    let named = frames
                        .iter()
                        .rev()
                        .find_map(|f| f.names.iter().rev().find(|(n, _)| n == first));
                    if let Some((_, s)) = named {
                        shape = *s;
                        i = 1;
                    }
                }
            }
        }
        if let (true, Some(PathSeg::Named(first))) = (shape_is_root(shape, self.root), segs.get(i))
        {
            self.used.insert(first.clone());
        }
        for seg in &segs[i..] {
            let PathSeg::Named(name) = seg else {
                return Shape::Unknown;
            };
            match shape {
                Shape::Unknown => return Shape::Unknown,
                Shape::Known(Value::Object(m)) => match m.get(name) {
                    Some(v) => shape = Shape::Known(v),
                    None => {
                        self.unknown_variable(
                            raw,
                            shape_is_root(shape, self.root),
                            name,
                            site,
                            pos,
                        );
                        return Shape::Unknown;
                    }
                },
                Shape::Known(Value::Array(_)) => return Shape::Unknown,
                Shape::Known(_) => {
                    self.unknown_variable(raw, false, name, site, pos);
                    return Shape::Unknown;
                }
            }
        }
        shape
    }

    fn unknown_variable(
        &mut self,
        raw: &str,
        at_root: bool,
        name: &str,
        site: &Site<'_>,
        pos: Pos,
    ) {
        let mut msg = format!("unknown variable `{raw}`");
        if at_root {
            if let Some(owner) = class_owning(name) {
                msg.push_str(&format!(
                    " (`{name}` exists only for {owner} templates; this is {} template)",
                    class_label(self.class)
                ));
            }
        }
        self.problem(site, pos, msg);
    }

    fn block(
        &mut self,
        h: &'a HelperTemplate,
        frames: &mut Vec<Frame<'a>>,
        site: &mut Site<'_>,
        pos: Pos,
    ) {
        let name = h.name.as_name().unwrap_or_default();
        if !self.is_helper(name) {
            self.problem(site, pos, format!("unknown block helper `{name}`"));
        }
        let mut first = Shape::Unknown;
        for (i, p) in h.params.iter().enumerate() {
            let s = self.param(p, frames, site, pos);
            if i == 0 {
                first = s;
            }
        }
        let mut keys: Vec<_> = h.hash.keys().collect();
        keys.sort();
        for k in keys {
            self.param(&h.hash[k], frames, site, pos);
        }

        let current_this = frames.last().map_or(Shape::Unknown, |f| f.this);
        let (this, item) = match name {
            "with" => (first, first),
            "each" => (Shape::Unknown, Shape::Unknown),
            _ => (current_this, Shape::Unknown),
        };
        let mut names = Vec::new();
        match &h.block_param {
            Some(BlockParam::Single(p)) => {
                if let Some(n) = p.as_name() {
                    names.push((n.to_owned(), item));
                }
            }
            Some(BlockParam::Pair((a, b))) => {
                for p in [a, b] {
                    if let Some(n) = p.as_name() {
                        names.push((n.to_owned(), Shape::Unknown));
                    }
                }
            }
            _ => {}
        }
        if let Some(body) = &h.template {
            frames.push(Frame { this, names });
            self.template(body, frames, site, pos);
            frames.pop();
        }
        if let Some(inverse) = &h.inverse {
            self.template(inverse, frames, site, pos);
        }
    }

    fn partial(
        &mut self,
        d: &'a DecoratorTemplate,
        is_block: bool,
        frames: &mut Vec<Frame<'a>>,
        site: &mut Site<'_>,
        pos: Pos,
    ) {
        let name = match &d.name {
            Parameter::Name(n) => n.clone(),
            Parameter::Path(p) => p_raw(p).to_owned(),
            // A computed partial name: cannot know which one, check only the arguments.
            other => {
                self.param(other, frames, site, pos);
                String::new()
            }
        };
        let context = d.params.first().map(|p| self.param(p, frames, site, pos));
        let mut hash_names = Vec::new();
        let mut keys: Vec<_> = d.hash.keys().collect();
        keys.sort();
        for k in keys {
            let s = self.param(&d.hash[k], frames, site, pos);
            hash_names.push((k.clone(), s));
        }
        // The block body is what the partial shows as @partial-block, in the caller's scope.
        if is_block {
            if let Some(body) = &d.template {
                self.template(body, frames, site, pos);
            }
        }
        if name.is_empty() || name.starts_with("@partial-block") || site.inline.contains(&name) {
            return;
        }
        let Some((file, tpl)) = self.partials.get(&name) else {
            if !is_block {
                self.problem(site, pos, format!("unknown partial `{name}`"));
            }
            return;
        };
        if site.chain.contains(&name) || site.chain.len() >= MAX_PARTIAL_DEPTH {
            return;
        }
        let mut inner_frames = match context {
            Some(this) => vec![Frame {
                this,
                names: hash_names,
            }],
            None => {
                let mut f = frames.clone();
                let this = f.last().map_or(Shape::Unknown, |fr| fr.this);
                f.push(Frame {
                    this,
                    names: hash_names,
                });
                f
            }
        };
        // Inline partials the caller defined stay visible inside the partial (the
        // layout shows each template's `{{#*inline "preheader"}}`).
        let mut inline = site.inline.clone();
        collect_inline(tpl, &mut inline);
        let mut chain = site.chain.clone();
        chain.push(name);
        let mut inner = Site {
            file,
            via: Some(site.via.unwrap_or(site.file)),
            inline,
            chain,
        };
        self.template(tpl, &mut inner_frames, &mut inner, None);
    }
}

type HelperArgs<'a> = (
    &'a Vec<Parameter>,
    &'a std::collections::HashMap<String, Parameter>,
);

fn d_args(d: &DecoratorTemplate) -> HelperArgs<'_> {
    (&d.params, &d.hash)
}

fn p_raw(p: &HbPath) -> &str {
    match p {
        HbPath::Relative((_, raw)) => raw,
        HbPath::Local((_, _, raw)) => raw,
        #[allow(unreachable_patterns)]
        _ => "",
    }
}

fn shape_is_root(shape: Shape<'_>, root: &Value) -> bool {
    matches!(shape, Shape::Known(v) if std::ptr::eq(v, root))
}
