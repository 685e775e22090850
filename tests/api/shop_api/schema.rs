//! A small JSON Schema validator for the subset the OpenAPI document of
//! `/api/v1` uses, written here rather than taken from crates.io: no
//! validator crate is in Cargo.lock, and the one that covers the whole
//! standard (`jsonschema`) brings a large tree to build on a 2-core machine
//! for the dozen keywords below. A keyword it does not know makes it panic,
//! so the document cannot grow past what is checked without this saying so.
//!
//! Supported: `$ref` (local JSON pointers), `type` (a name or a list, with
//! `integer`, `number`, `string`, `boolean`, `object`, `array`, `null`),
//! `enum`, `required`, `properties`, `additionalProperties` (false or a
//! schema), `items`, `minimum`, `maximum`, `format: date-time` (RFC 3339).

use serde_json::Value;

/// Keywords that only describe.
const ANNOTATIONS: [&str; 4] = ["description", "title", "example", "examples"];

/// What `pointer` (`#/components/schemas/Esim`) names in `doc`.
pub fn resolve<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    let path = pointer
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("only local $ref is supported: {pointer}"));
    doc.pointer(path)
        .unwrap_or_else(|| panic!("$ref {pointer} names nothing in the document"))
}

/// Every way `value` breaks `schema`, each with where (`$.data.total`).
pub fn validate(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(doc, schema, value, "$", &mut errors);
    errors
}

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        other => panic!("unknown JSON Schema type `{other}`"),
    }
}

fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                errors.push(format!("{at}: nothing is allowed here"));
                return;
            }
            other => panic!("not a schema: {other}"),
        }
    };
    if let Some(r) = schema.get("$ref") {
        let target = resolve(doc, r.as_str().expect("$ref is a string"));
        check(doc, target, v, at, errors);
    }
    for (keyword, arg) in schema {
        match keyword.as_str() {
            "$ref" => {}
            k if ANNOTATIONS.contains(&k) => {}
            "type" => {
                let names: Vec<&str> = match arg {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().map(|n| n.as_str().expect("type name")).collect(),
                    other => panic!("bad `type`: {other}"),
                };
                if !names.iter().any(|n| type_matches(n, v)) {
                    errors.push(format!("{at}: {v} is not of type {names:?}"));
                }
            }
            "enum" => {
                let allowed = arg.as_array().expect("enum is an array");
                if !allowed.contains(v) {
                    errors.push(format!("{at}: {v} is not one of {arg}"));
                }
            }
            "required" => {
                if let Some(o) = v.as_object() {
                    for name in arg.as_array().expect("required is an array") {
                        let name = name.as_str().expect("required names are strings");
                        if !o.contains_key(name) {
                            errors.push(format!("{at}: `{name}` is missing"));
                        }
                    }
                }
            }
            "properties" => {
                if let Some(o) = v.as_object() {
                    for (name, sub) in arg.as_object().expect("properties is an object") {
                        if let Some(field) = o.get(name) {
                            check(doc, sub, field, &format!("{at}.{name}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(o) = v.as_object() {
                    let known = schema.get("properties").and_then(Value::as_object);
                    for (name, field) in o {
                        if known.is_some_and(|k| k.contains_key(name)) {
                            continue;
                        }
                        check(doc, arg, field, &format!("{at}.{name}"), errors);
                    }
                }
            }
            "items" => {
                if let Some(a) = v.as_array() {
                    for (i, item) in a.iter().enumerate() {
                        check(doc, arg, item, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            "minimum" | "maximum" => {
                if let (Some(n), Some(limit)) = (v.as_f64(), arg.as_f64()) {
                    let ok = if keyword == "minimum" {
                        n >= limit
                    } else {
                        n <= limit
                    };
                    if !ok {
                        errors.push(format!("{at}: {n} is beyond {keyword} {limit}"));
                    }
                }
            }
            "format" => match arg.as_str() {
                Some("date-time") => {
                    if let Some(s) = v.as_str() {
                        if chrono::DateTime::parse_from_rfc3339(s).is_err() {
                            errors.push(format!("{at}: `{s}` is not an RFC 3339 date-time"));
                        }
                    }
                }
                other => panic!("unsupported format {other:?}"),
            },
            other => panic!("unsupported JSON Schema keyword `{other}` at {at}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_validator_finds_what_is_wrong() {
        let doc = json!({"components": {"schemas": {"E": {
            "type": "object", "required": ["a", "t"], "additionalProperties": false,
            "properties": {
                "a": {"type": ["integer", "null"], "minimum": 0},
                "s": {"type": "string", "enum": ["x", "y"]},
                "t": {"type": "string", "format": "date-time"},
                "l": {"type": "array", "items": {"type": "string"}}
            }
        }}}});
        let s = json!({"$ref": "#/components/schemas/E"});
        let ok = json!({"a": null, "s": "x", "t": "2026-04-22T17:21:59Z", "l": ["q"]});
        assert_eq!(validate(&doc, &s, &ok), Vec::<String>::new());
        for bad in [
            json!({"t": "2026-04-22T17:21:59Z"}),
            json!({"a": -1, "t": "2026-04-22T17:21:59Z"}),
            json!({"a": 1.5, "t": "2026-04-22T17:21:59Z"}),
            json!({"a": 1, "t": "yesterday"}),
            json!({"a": 1, "t": "2026-04-22T17:21:59Z", "s": "z"}),
            json!({"a": 1, "t": "2026-04-22T17:21:59Z", "l": [1]}),
            json!({"a": 1, "t": "2026-04-22T17:21:59Z", "extra": true}),
            json!([]),
        ] {
            assert!(!validate(&doc, &s, &bad).is_empty(), "{bad} passed");
        }
    }
}
