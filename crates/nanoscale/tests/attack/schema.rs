//! Finds every text field of a request body from the served OpenAPI document, and
//! puts a payload into one of them.
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index,
    /// A key of a string map (an env var's name).
    MapKey,
    /// A value of a string map.
    MapValue,
}

/// A text field: where it is in the body, and how the API names it.
#[derive(Debug, Clone)]
pub struct TextField {
    pub steps: Vec<Step>,
}

impl TextField {
    /// Dotted, as the API's error `field` names it (`routes[0].host`); map keys
    /// and values read `env{key}` and `env{value}`.
    pub fn label(&self) -> String {
        let mut label = String::new();
        for step in &self.steps {
            match step {
                Step::Key(key) if label.is_empty() => label.push_str(key),
                Step::Key(key) => {
                    label.push('.');
                    label.push_str(key);
                }
                Step::Index => label.push_str("[0]"),
                Step::MapKey => label.push_str("{key}"),
                Step::MapValue => label.push_str("{value}"),
            }
        }
        label
    }

    /// The top-level property the field is in.
    pub fn top(&self) -> String {
        match self.steps.first() {
            Some(Step::Key(key)) => key.clone(),
            _ => String::new(),
        }
    }
}

/// Every text field reachable from `schema` (refs resolved, nullable and one-of
/// variants followed, arrays and string maps included).
pub fn text_fields(document: &Value, schema: &Value) -> Vec<TextField> {
    let mut found = Vec::new();
    walk(document, schema, &mut Vec::new(), &mut found, 0);
    let mut unique: Vec<TextField> = Vec::new();
    for field in found {
        if !unique.iter().any(|known| known.steps == field.steps) {
            unique.push(field);
        }
    }
    unique
}

fn walk(
    document: &Value,
    schema: &Value,
    at: &mut Vec<Step>,
    found: &mut Vec<TextField>,
    depth: usize,
) {
    if depth > 10 {
        return;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &document["components"]["schemas"][name];
        assert!(!target.is_null(), "dangling $ref {reference}");
        walk(document, target, at, found, depth + 1);
        return;
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        for variant in schema[combinator].as_array().into_iter().flatten() {
            walk(document, variant, at, found, depth + 1);
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"string") {
        found.push(TextField { steps: at.clone() });
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (key, property) in properties {
            at.push(Step::Key(key.clone()));
            walk(document, property, at, found, depth + 1);
            at.pop();
        }
    }
    if schema["additionalProperties"].is_object() {
        at.push(Step::MapKey);
        found.push(TextField { steps: at.clone() });
        at.pop();
        at.push(Step::MapValue);
        walk(
            document,
            &schema["additionalProperties"],
            at,
            found,
            depth + 1,
        );
        at.pop();
    }
    if schema["items"].is_object() {
        at.push(Step::Index);
        walk(document, &schema["items"], at, found, depth + 1);
        at.pop();
    }
}

/// `body` with `payload` at `field`, creating what is missing on the way.
pub fn inject(body: &mut Value, steps: &[Step], payload: &str) {
    let Some((step, rest)) = steps.split_first() else {
        *body = Value::String(payload.to_owned());
        return;
    };
    match step {
        Step::Key(key) => {
            let object = as_object(body);
            let slot = object.entry(key.clone()).or_insert(Value::Null);
            inject(slot, rest, payload);
        }
        Step::Index => {
            if !matches!(body, Value::Array(items) if !items.is_empty()) {
                *body = Value::Array(vec![Value::Null]);
            }
            if let Value::Array(items) = body {
                inject(&mut items[0], rest, payload);
            }
        }
        Step::MapKey => {
            let object = as_object(body);
            object.insert(payload.to_owned(), Value::String("x".into()));
        }
        Step::MapValue => {
            let object = as_object(body);
            let slot = object.entry("ATTACK".to_owned()).or_insert(Value::Null);
            inject(slot, rest, payload);
        }
    }
}

fn as_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(object) => object,
        _ => unreachable!("made an object above"),
    }
}

#[test]
fn walks_refs_maps_and_arrays_and_injects_into_them() {
    let document = serde_json::json!({"components": {"schemas": {
        "Route": {"type": "object", "properties": {"host": {"type": ["string", "null"]}}},
        "Spec": {"type": "object", "properties": {
            "name": {"type": "string"},
            "replicas": {"type": "integer"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "routes": {"type": "array", "items": {"$ref": "#/components/schemas/Route"}},
            "health": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Route"}]}
        }}
    }}});
    let spec = serde_json::json!({"$ref": "#/components/schemas/Spec"});
    let labels: Vec<String> = text_fields(&document, &spec)
        .iter()
        .map(TextField::label)
        .collect();
    assert_eq!(
        labels,
        [
            "env{key}",
            "env{value}",
            "health.host",
            "name",
            "routes[0].host"
        ]
    );
    let mut body = serde_json::json!({"name": "web", "routes": [{"host": "a"}, {"host": "b"}]});
    inject(
        &mut body,
        &[
            Step::Key("routes".into()),
            Step::Index,
            Step::Key("host".into()),
        ],
        "X",
    );
    inject(&mut body, &[Step::Key("env".into()), Step::MapKey], "K");
    assert_eq!(
        body,
        serde_json::json!({"name": "web", "routes": [{"host": "X"}, {"host": "b"}], "env": {"K": "x"}})
    );
}
