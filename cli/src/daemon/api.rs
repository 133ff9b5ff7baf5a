//! The daemon's HTTP API (axum) on loopback. Every `/api` route but the OpenAPI document needs
//! `Authorization: Bearer <token>` (`<data dir>/api-token`, mode 0600); `/metrics` is read-only
//! counters and needs none. Bodies are bounded; no CORS headers are sent, so browsers on other
//! origins cannot read answers.

use super::{AddRequest, Daemon};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body: a big .torrent as hex.
const BODY_LIMIT: usize = 32 << 20;

#[derive(Clone)]
struct Api {
    d: Arc<Daemon>,
    token: Arc<String>,
}

pub fn router(d: Arc<Daemon>, token: String) -> Router {
    let st = Api {
        d,
        token: Arc::new(token),
    };
    let private = Router::new()
        .route("/api/items", get(list).post(add))
        .route("/api/items/{id}", get(item).delete(remove))
        .route("/api/items/{id}/details", get(details))
        .route("/api/items/{id}/pause", post(pause))
        .route("/api/items/{id}/resume", post(resume))
        .route("/api/items/{id}/limits", put(item_limits))
        .route("/api/limits", get(limits).put(set_limits))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/stop", post(stop))
        .route("/api/alerts", get(alerts).post(add_alert))
        .route("/api/alerts/{name}", axum::routing::delete(remove_alert))
        .route("/api/alerts/{name}/test", post(test_alert))
        .route("/api/config", get(config))
        .route("/api/config/reload", post(config_reload))
        .route_layer(middleware::from_fn_with_state(st.clone(), auth));
    Router::new()
        .merge(private)
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint (see /api/openapi.json)",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(st)
}

/// Only `/metrics`, for `[observability] metrics_port`.
pub fn metrics_router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Api {
            d,
            token: Arc::new(String::new()),
        })
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({ "error": msg }))).into_response()
}

/// An operation's error as an answer: unknown ids are 404, duplicates 409, the rest 400.
fn failed(e: ccbt_node::Error) -> Response {
    let code = match e {
        ccbt_node::Error::NotFound(_) => StatusCode::NOT_FOUND,
        ccbt_node::Error::Conflict(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    error(code, &e.to_string())
}

/// Same length and same bytes, without an early exit.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<Api>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.trim().as_bytes(), st.token.as_bytes()) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <contents of <data dir>/api-token>",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
        return r;
    }
    next.run(req).await
}

async fn list(State(st): State<Api>) -> Response {
    Json(st.d.list()).into_response()
}

async fn item(State(st): State<Api>, Path(id): Path<String>) -> Response {
    match st.d.get(&id.to_lowercase()) {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("nothing with id {id} here")),
    }
}

async fn details(State(st): State<Api>, Path(id): Path<String>) -> Response {
    let d = st.d.clone();
    // A share's residency walks its files' trees in the store: blocking work.
    match tokio::task::spawn_blocking(move || d.details(&id.to_lowercase())).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "nothing with that id here"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn add(
    State(st): State<Api>,
    body: Result<Json<AddRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let d = st.d.clone();
    // Reading a .torrent path and writing records is blocking work.
    let r = tokio::task::spawn_blocking(move || d.add(req)).await;
    match r {
        Ok(Ok(id)) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Ok(Err(e)) => failed(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    delete_data: bool,
}

async fn remove(
    State(st): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, "delete_data must be true or false");
    };
    match st.d.remove(&id.to_lowercase(), q.delete_data).await {
        Ok(()) => Json(json!({ "removed": id })).into_response(),
        Err(e) => failed(e),
    }
}

async fn pause(State(st): State<Api>, Path(id): Path<String>) -> Response {
    match st.d.pause(&id.to_lowercase()).await {
        Ok(()) => Json(json!({ "paused": id })).into_response(),
        Err(e) => failed(e),
    }
}

async fn resume(State(st): State<Api>, Path(id): Path<String>) -> Response {
    match st.d.resume(&id.to_lowercase()).await {
        Ok(()) => Json(json!({ "resumed": id })).into_response(),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    down_kib: Option<u64>,
    up_kib: Option<u64>,
}

fn limits_json((down, up): (u64, u64)) -> Response {
    Json(json!({ "down_kib": down, "up_kib": up })).into_response()
}

async fn limits(State(st): State<Api>) -> Response {
    limits_json(st.d.limits())
}

async fn set_limits(
    State(st): State<Api>,
    body: Result<Json<Limits>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(l)) => match st.d.set_limits(None, l.down_kib, l.up_kib) {
            Ok(v) => limits_json(v),
            Err(e) => failed(e),
        },
        Err(e) => error(StatusCode::BAD_REQUEST, &e.body_text()),
    }
}

async fn item_limits(
    State(st): State<Api>,
    Path(id): Path<String>,
    body: Result<Json<Limits>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(l)) => match st
            .d
            .set_limits(Some(&id.to_lowercase()), l.down_kib, l.up_kib)
        {
            Ok(v) => limits_json(v),
            Err(e) => failed(e),
        },
        Err(e) => error(StatusCode::BAD_REQUEST, &e.body_text()),
    }
}

async fn status(State(st): State<Api>) -> Response {
    let mut v = st.d.node.status();
    v["limits"] = json!({ "down_kib": st.d.limits().0, "up_kib": st.d.limits().1 });
    v["items"] = json!(st.d.list().len());
    Json(v).into_response()
}

/// Server-sent events: the item list whenever it changes (checked every second), so clients do
/// not poll everything.
async fn events(State(st): State<Api>) -> impl IntoResponse {
    let d = st.d.clone();
    let stream = async_stream(d);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn async_stream(
    d: Arc<Daemon>,
) -> impl tokio_stream::Stream<Item = Result<Event, std::convert::Infallible>> {
    use tokio_stream::StreamExt;
    let tick =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(1)));
    let mut last = String::new();
    tick.filter_map(move |_| {
        let now = serde_json::to_string(&d.list()).unwrap_or_default();
        if now == last {
            return None;
        }
        last = now.clone();
        Some(Ok(Event::default().event("items").data(now)))
    })
}

async fn alerts(State(st): State<Api>) -> Response {
    Json(st.d.alerts.list()).into_response()
}

async fn add_alert(
    State(st): State<Api>,
    body: Result<Json<super::alerts::Rule>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let r = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let name = r.name.clone();
    match st.d.alerts.add(&st.d.node.shares.store, r) {
        Ok(()) => (StatusCode::CREATED, Json(json!({ "added": name }))).into_response(),
        Err(e) => failed(e),
    }
}

async fn remove_alert(State(st): State<Api>, Path(name): Path<String>) -> Response {
    match st.d.alerts.remove(&st.d.node.shares.store, &name) {
        Ok(()) => Json(json!({ "removed": name })).into_response(),
        Err(e) => failed(e),
    }
}

/// The rule's metric now, and whether its condition holds.
async fn test_alert(State(st): State<Api>, Path(name): Path<String>) -> Response {
    let Some(a) = st.d.alerts.list().into_iter().find(|a| a.rule.name == name) else {
        return error(StatusCode::NOT_FOUND, &format!("no alert rule {name}"));
    };
    let values = super::alerts::parse_metrics(&super::metrics::render(&st.d).await);
    let v = values.get(&a.rule.metric).copied();
    let holds = v.map(|x| super::alerts::holds(&a.rule, x));
    Json(json!({ "rule": a.rule, "value": v, "holds": holds, "state": a.state })).into_response()
}

async fn config(State(st): State<Api>) -> Response {
    let c = st.d.config.lock().unwrap().clone();
    Json(json!({ "file": st.d.config_path, "config": c })).into_response()
}

async fn config_reload(State(st): State<Api>) -> Response {
    match super::reload::reload(&st.d).await {
        Ok(changed) => Json(json!({ "changed": changed })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn stop(State(st): State<Api>) -> Response {
    let _ = st.d.stop.send(true);
    Json(json!({ "stopping": true })).into_response()
}

async fn metrics(State(st): State<Api>) -> Response {
    let body = super::metrics::render(&st.d).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn openapi() -> Response {
    Json(openapi_doc()).into_response()
}

/// The OpenAPI 3.0 document of this API.
pub fn openapi_doc() -> Value {
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let id_param = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 128}}]);
    let ok_obj = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"type": "object"}}}});
    let limits_body = json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Limits"}}}});
    let limits_ok = json!({"description": "the limits now", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Limits"}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "ccbt daemon", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Torrents and shares held by `ccbt daemon`. Bearer token: <data dir>/api-token."},
        "security": [{"bearer": []}],
        "paths": {
            "/api/items": {
                "get": {"summary": "Everything the daemon holds", "responses": {
                    "200": {"description": "items", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/ItemView"}}}}},
                    "401": err}},
                "post": {"summary": "Add a torrent, magnet or share", "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AddRequest"}}}},
                    "responses": {"201": ok_obj("added: {id}"), "400": err, "401": err, "409": err, "413": err, "415": err, "422": err}}
            },
            "/api/items/{id}": {
                "parameters": id_param,
                "get": {"summary": "One item", "responses": {"200": {"description": "the item", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ItemView"}}}}, "401": err, "404": err}},
                "delete": {"summary": "Remove an item", "parameters": [{"name": "delete_data", "in": "query", "schema": {"type": "boolean"}}],
                    "responses": {"200": ok_obj("removed"), "400": err, "401": err, "404": err}}
            },
            "/api/items/{id}/details": {"parameters": id_param, "get": {"summary": "A torrent's peers (client, speeds, progress), files and trackers; a share's local, total and pinned bytes", "responses": {"200": ok_obj("details"), "401": err, "404": err}}},
            "/api/items/{id}/pause": {"parameters": id_param, "post": {"summary": "Pause", "responses": {"200": ok_obj("paused"), "401": err, "404": err, "400": err}}},
            "/api/items/{id}/resume": {"parameters": id_param, "post": {"summary": "Resume", "responses": {"200": ok_obj("resumed"), "401": err, "404": err, "400": err}}},
            "/api/items/{id}/limits": {"parameters": id_param, "put": {"summary": "An item's rate limits (KiB/s, 0 = unlimited)", "requestBody": limits_body,
                "responses": {"200": limits_ok, "400": err, "401": err, "404": err, "415": err, "422": err}}},
            "/api/limits": {
                "get": {"summary": "Session-wide rate limits", "responses": {"200": limits_ok, "401": err}},
                "put": {"summary": "Set session-wide rate limits (KiB/s, 0 = unlimited)", "requestBody": limits_body,
                    "responses": {"200": limits_ok, "400": err, "401": err, "415": err, "422": err}}
            },
            "/api/status": {"get": {"summary": "Node status: shares, listen address, runtime latency", "responses": {"200": ok_obj("status"), "401": err}}},
            "/api/events": {"get": {"summary": "Server-sent events: `items` with the item list when it changes", "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, "401": err}}},
            "/api/alerts": {
                "get": {"summary": "Alert rules and their state", "responses": {"200": ok_obj("rules"), "401": err}},
                "post": {"summary": "Add (or replace) an alert rule", "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rule"}}}},
                    "responses": {"201": ok_obj("added"), "400": err, "401": err, "415": err, "422": err}}
            },
            "/api/alerts/{name}": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}}],
                "delete": {"summary": "Remove an alert rule", "responses": {"200": ok_obj("removed"), "400": err, "401": err, "404": err}}},
            "/api/alerts/{name}/test": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}}],
                "post": {"summary": "The rule's metric now and whether its condition holds", "responses": {"200": ok_obj("value"), "401": err, "404": err}}},
            "/api/config": {"get": {"summary": "The running configuration and its file", "responses": {"200": ok_obj("config"), "401": err}}},
            "/api/config/reload": {"post": {"summary": "Read the config file again and apply what can change while running", "responses": {"200": ok_obj("changed keys"), "400": err, "401": err}}},
            "/api/stop": {"post": {"summary": "Stop the daemon cleanly", "responses": {"200": ok_obj("stopping"), "401": err}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (no token)", "security": [], "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/api/openapi.json": {"get": {"summary": "This document (no token)", "security": [], "responses": {"200": ok_obj("OpenAPI 3.0")}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Rule": {"type": "object", "additionalProperties": false, "required": ["name", "metric", "op", "threshold"], "properties": {
                    "name": {"type": "string"}, "metric": {"type": "string"},
                    "op": {"type": "string", "enum": [">", ">=", "<", "<=", "==", "!="]},
                    "threshold": {"type": "number"}, "for_secs": {"type": "integer", "minimum": 0},
                    "severity": {"type": "string", "enum": ["info", "warning", "critical"]}}},
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Limits": {"type": "object", "additionalProperties": false, "properties": {
                    "down_kib": {"type": "integer", "minimum": 0, "nullable": true},
                    "up_kib": {"type": "integer", "minimum": 0, "nullable": true}}},
                "AddRequest": {"type": "object", "additionalProperties": false, "properties": {
                    "source": {"type": "string", "nullable": true, "description": "magnet link, share id (ID@SEQ with mount: that version, read-only), or a .torrent path the daemon can read"},
                    "torrent_hex": {"type": "string", "nullable": true, "description": "a .torrent file's bytes in hex"},
                    "out_dir": {"type": "string", "nullable": true, "description": "absolute path"},
                    "mount": {"type": "string", "nullable": true, "description": "absolute path: a share mounted (writable on the owner's node), or a torrent mounted read-only"},
                    "paused": {"type": "boolean"},
                    "peers": {"type": "array", "items": {"type": "string"}}}},
                "ItemView": {"type": "object", "properties": {
                    "id": {"type": "string"}, "kind": {"type": "string", "enum": ["torrent", "share"]},
                    "source": {"type": "string"}, "name": {"type": "string"},
                    "out_dir": {"type": "string", "nullable": true}, "mount": {"type": "string", "nullable": true},
                    "paused": {"type": "boolean"}, "down_kib": {"type": "integer"}, "up_kib": {"type": "integer"},
                    "peers": {"type": "integer"}, "added": {"type": "integer"},
                    "extra_peers": {"type": "array", "items": {"type": "string"}},
                    "state": {"type": "string"}, "error": {"type": "string", "nullable": true},
                    "progress": {"type": "number"}, "pieces_have": {"type": "integer"}, "pieces_total": {"type": "integer"},
                    "size": {"type": "integer"}, "downloaded": {"type": "integer"}, "uploaded": {"type": "integer"},
                    "download_rate": {"type": "number"}, "upload_rate": {"type": "number"},
                    "version": {"type": "integer", "nullable": true}}}
            }
        }
    })
}
