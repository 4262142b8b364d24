//! `GET /api/v1/openapi.json`: the OpenAPI 3.0 document of the API, generated from the
//! route table (`routes.rs`) — every route, its method, path parameters, who may call
//! it (bearer token or public) — and from the handlers' own query and body types, whose
//! JSON Schemas `schemars` derives from the same serde definitions that parse requests
//! (so `deny_unknown_fields` becomes `additionalProperties: false`). Bodies whose types
//! live in the protocol crate (a fleet manifest, an ingest batch, a service
//! organisation) are declared as JSON objects; their handlers validate them fully and
//! answer 400/422 with what is wrong and where.
//!
//! Answers are documented by status class only; `scripts/api-fuzz` runs Schemathesis
//! against this document and fails on any 5xx.

use std::sync::OnceLock;

use axum::Json;
use axum::http::header;
use axum::response::IntoResponse;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::routes::{Access, RouteRule, route_docs};

/// `{name}` segments of an axum path.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn operation_id(rule: &RouteRule) -> String {
    let mut id = rule.method.to_ascii_lowercase();
    for seg in rule.path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(
            seg.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .filter(|c| *c != '_' || !seg.starts_with('{')),
        );
    }
    id.replace("__", "_")
}

/// Moves the definitions a root schema carries into `defs`.
fn lift_definitions(schema: &mut Value, defs: &mut Map<String, Value>) {
    if let Some(components) = schema.as_object_mut().and_then(|o| o.remove("components"))
        && let Some(schemas) = components.get("schemas").and_then(Value::as_object)
    {
        defs.extend(schemas.clone());
    }
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
    }
}

/// The whole document.
pub fn build() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut defs = Map::new();
    let mut paths = Map::new();
    for (rule, doc) in route_docs() {
        let mut parameters: Vec<Value> = path_params(rule.path)
            .into_iter()
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        if let Some(query) = doc.query {
            let mut schema = query(&mut generator).to_value();
            lift_definitions(&mut schema, &mut defs);
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    parameters.push(json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&name.as_str()),
                        "schema": prop,
                    }));
                }
            }
        }
        let mut op = json!({
            "operationId": operation_id(&rule),
            "tags": [rule.path.split('/').nth(1).unwrap_or("api")],
            "parameters": parameters,
            "responses": {
                "2XX": {"description": "Done; the body is JSON (CSV or iCalendar where the path says so)."},
                "4XX": {"description": "Refused: `{\"error\": what and where, \"status\": code}`."},
            },
        });
        match rule.access {
            Access::Public(why) => {
                op["security"] = json!([]);
                op["description"] = json!(format!("Public: {why}."));
            }
            Access::Roles { roles, .. } => {
                op["security"] = json!([{"bearer": []}]);
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                op["description"] = json!(format!("Roles: {}.", names.join(", ")));
            }
        }
        if let Some(body) = doc.body {
            let mut schema = body(&mut generator).to_value();
            lift_definitions(&mut schema, &mut defs);
            op["requestBody"] = json!({
                "required": !doc.body_optional,
                "content": {"application/json": {"schema": schema}},
            });
        }
        let item = paths.entry(rule.full_path()).or_insert_with(|| json!({}));
        item[rule.method.to_ascii_lowercase()] = op;
    }
    defs.extend(generator.take_definitions(true));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Wearcast API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Predictive after-sales: telemetry ingest, machine health and remaining-life estimates, offers, field service and analytics. Send `Authorization: Bearer <token>` (see the README: roles and tokens).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

/// The handler: built once, then served from memory.
pub(super) async fn document() -> impl IntoResponse {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(DOCUMENT.get_or_init(build).clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::route_rules;

    #[test]
    fn every_route_is_in_the_document_with_its_parameters_and_security() {
        let doc = build();
        for rule in route_rules() {
            let op = &doc["paths"][rule.full_path()][rule.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} is missing", rule.method, rule.path);
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(declared, path_params(rule.path), "{}", rule.path);
            let public = matches!(rule.access, Access::Public(_));
            assert_eq!(op["security"] == json!([]), public, "{}", rule.path);
        }
        let ids: std::collections::HashSet<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        assert_eq!(ids.len(), route_rules().len(), "operation ids are unique");
    }

    #[test]
    fn queries_and_bodies_come_from_the_handlers_types() {
        let doc = build();
        let kpis = &doc["paths"]["/api/v1/kpis"]["get"]["parameters"];
        let mut names: Vec<&str> = kpis
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["customer", "from", "to"]);
        let decline = &doc["paths"]["/api/v1/offers/{id}/decline"]["post"]["requestBody"];
        assert_eq!(decline["required"], true);
        let schema = &decline["content"]["application/json"]["schema"];
        let schema = match schema["$ref"].as_str() {
            Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
            None => schema,
        };
        assert_eq!(schema["additionalProperties"], false, "{schema}");
        assert!(schema["properties"]["reason"].is_object(), "{schema}");
        let accept = &doc["paths"]["/api/v1/offers/{id}/accept"]["post"]["requestBody"];
        assert_eq!(
            accept["required"], false,
            "accepting as proposed needs no body"
        );
        // Every reference resolves.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"").skip(1) {
            let name = r
                .split('"')
                .next()
                .unwrap()
                .trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling $ref {name}"
            );
        }
    }
}
