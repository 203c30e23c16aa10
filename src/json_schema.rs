//! The JSON Schema of the plugin configuration, derived (schemars) from the serde types the
//! filter itself reads ([`crate::schema`]), so it cannot drift from them: `deny_unknown_fields`
//! becomes `additionalProperties: false`, doc comments become descriptions. Draft 7, the
//! draft editors support best. `jwt-guard schema` prints it; `jwt-guard.schema.json` is the
//! checked-in copy (a test keeps it equal to this).
//!
//! The schema says what the JSON may look like; some rules only the filter's own loading
//! checks (a known provider name, a parsable CIDR, `"any"` as the only audience word).
//! `jwt-guard check` runs that loading.

use serde_json::{Map, Value};

use crate::schema::RawConfig;

const TITLE: &str = "jwt-guard plugin configuration";

/// The schema as a JSON value.
pub fn plugin_config_schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<RawConfig>().to_value();
    if let Some(root) = schema.as_object_mut() {
        root.insert("title".into(), Value::String(TITLE.into()));
        root.insert(
            "$comment".into(),
            Value::String(
                "Generated from src/schema.rs by `jwt-guard schema`; do not edit by hand.".into(),
            ),
        );
        tidy_definition_names(root);
        for (definition, field) in REQUIRED_AT_LOAD {
            require(root, definition, field);
        }
    }
    schema
}

/// Fields serde lets be absent so that the filter's loading can refuse them with an
/// explanation, but that a config must have.
const REQUIRED_AT_LOAD: [(&str, &str); 1] = [("Provider", "audiences")];

fn require(root: &mut Map<String, Value>, definition: &str, field: &str) {
    let Some(Value::Object(def)) = root
        .get_mut("definitions")
        .and_then(|d| d.get_mut(definition))
    else {
        return;
    };
    let required = def
        .entry("required")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = required {
        if !list.iter().any(|v| v == field) {
            list.push(Value::String(field.into()));
        }
    }
    // `Option`'s `null` is no answer either.
    if let Some(Value::Object(prop)) = def.get_mut("properties").and_then(|p| p.get_mut(field)) {
        if let Some(Value::Array(any_of)) = prop.get_mut("anyOf") {
            any_of.retain(|s| s.get("type") != Some(&Value::String("null".into())));
        }
    }
}

/// The schema as the checked-in file holds it: pretty-printed, with a final newline.
pub fn plugin_config_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&plugin_config_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// `RawProvider` -> `Provider`: the serde types' `Raw` prefix says "not yet validated" to
/// the code, and nothing to a config author reading the schema in an editor.
fn tidy_definition_names(root: &mut Map<String, Value>) {
    let Some(Value::Object(defs)) = root.get_mut("definitions") else {
        return;
    };
    let old: Vec<String> = defs.keys().cloned().collect();
    let mut renames = Vec::new();
    for name in &old {
        if let Some(short) = name.strip_prefix("Raw") {
            if !short.is_empty() && !defs.contains_key(short) {
                renames.push((name.clone(), short.to_string()));
            }
        }
    }
    for (from, to) in &renames {
        if let Some(v) = defs.remove(from) {
            defs.insert(to.clone(), v);
        }
    }
    let refs: Vec<(String, String)> = renames
        .iter()
        .map(|(f, t)| (format!("#/definitions/{f}"), format!("#/definitions/{t}")))
        .collect();
    for v in root.values_mut() {
        rewrite_refs(v, &refs);
    }
}

fn rewrite_refs(v: &mut Value, refs: &[(String, String)]) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "$ref" {
                    if let Value::String(r) = child {
                        if let Some((_, to)) = refs.iter().find(|(from, _)| from == r) {
                            *r = to.clone();
                        }
                    }
                } else {
                    rewrite_refs(child, refs);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_refs(i, refs)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in copy, for editors, is what the generator makes now.
    #[test]
    fn the_checked_in_schema_is_current() {
        let checked_in = include_str!("../jwt-guard.schema.json");
        let now = plugin_config_schema_text();
        assert!(
            checked_in == now,
            "jwt-guard.schema.json is stale: run `cargo run --features cli --bin jwt-guard -- \
             schema > jwt-guard.schema.json`"
        );
    }

    #[test]
    fn unknown_fields_are_refused_and_names_are_tidy() {
        let s = plugin_config_schema();
        assert_eq!(s["additionalProperties"], Value::Bool(false));
        assert_eq!(s["required"], serde_json::json!(["providers"]));
        let provider = &s["definitions"]["Provider"];
        assert_eq!(provider["additionalProperties"], Value::Bool(false));
        let required = provider["required"].as_array().unwrap();
        assert!(required.contains(&"issuer".into()), "{required:?}");
        assert!(required.contains(&"audiences".into()), "{required:?}");
        let audiences = provider["properties"]["audiences"].to_string();
        assert!(!audiences.contains("null"), "{audiences}");
        assert!(provider["properties"]["issuer"]["description"].is_string());
        let text = s.to_string();
        assert!(!text.contains("#/definitions/Raw"), "{text}");
    }
}
