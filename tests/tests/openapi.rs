//! `docs/openapi.json` against the code and a running gateway:
//! - the document is OpenAPI 3.1 and every `$ref` resolves;
//! - every route registered in `http_api.rs` / `http_webhooks.rs` (read
//!   from their source) is documented, and nothing else is;
//! - every documented operation is served: called with the bearer token
//!   and dummy ids, it answers a documented status (never the router's 404
//!   or 405), with a body matching the documented schema; secured
//!   operations answer 401 without the token;
//! - with a real session, webhook endpoint and delivery log, every
//!   operation succeeds and its body matches the documented schema;
//! - the framework behaviour the document describes (plain-text 400 on a
//!   bad query, empty 404/405, HEAD on GET routes) holds.

use std::collections::BTreeSet;

use pincer_tests::gateway::{Client, TestGateway};
use pincer_tests::webhook_receiver::{Receiver, Reply};
use reqwest::Method;
use serde_json::{Value, json};

const DOC: &str = include_str!("../../docs/openapi.json");
const HTTP_API_RS: &str = include_str!("../../host/src/gateway/http_api.rs");
const HTTP_WEBHOOKS_RS: &str = include_str!("../../host/src/gateway/http_webhooks.rs");

/// The operations a Path Item can hold, in OpenAPI 3.1.
const OPENAPI_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(DOC).expect("docs/openapi.json is JSON")
}

/// Follow a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, r: &str) -> Option<&'a Value> {
    doc.pointer(r.strip_prefix('#')?)
}

/// `v`, or what it refers to.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(doc, r).unwrap_or_else(|| panic!("unresolved $ref {r}")),
        None => v,
    }
}

fn collect_refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push((
                        at.to_string(),
                        x.as_str().unwrap_or("<not a string>").into(),
                    ));
                } else {
                    collect_refs(x, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_refs(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Every documented (path, method).
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in OPENAPI_METHODS {
            if item.get(m).is_some() {
                out.insert((path.clone(), m.to_string()));
            }
        }
    }
    out
}

/// The path parameters of an operation (path-level and its own).
fn path_params(doc: &Value, item: &Value, op: &Value) -> BTreeSet<String> {
    [&item["parameters"], &op["parameters"]]
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .map(|p| deref(doc, p))
        .filter(|p| p["in"] == "path")
        .map(|p| p["name"].as_str().expect("parameter name").to_string())
        .collect()
}

fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_string)
        .collect()
}

#[test]
fn document_is_openapi_3_1_and_every_ref_resolves() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("openapi field");
    assert!(version.starts_with("3.1."), "openapi is {version:?}");
    assert_eq!(doc["info"]["title"], "Pincer gateway");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["servers"][0]["url"], "http://127.0.0.1:18789");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );

    let mut refs = Vec::new();
    collect_refs(&doc, "#", &mut refs);
    assert!(refs.len() > 20, "suspiciously few $refs: {}", refs.len());
    for (at, r) in &refs {
        assert!(
            r.starts_with("#/components/") && resolve(&doc, r).is_some(),
            "{at}: $ref {r} does not resolve to a component"
        );
    }

    let mut op_ids = BTreeSet::new();
    for (path, method) in documented(&doc) {
        let item = &doc["paths"][&path];
        let op = &item[&method];
        let id = op["operationId"].as_str().expect("operationId");
        assert!(op_ids.insert(id.to_string()), "duplicate operationId {id}");
        assert_eq!(
            path_params(&doc, item, op),
            template_params(&path),
            "{method} {path}: path parameters vs the template"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{method} {path}: no responses");
        // /v1 and /metrics take the bearer token; nothing else does.
        let secured = path.starts_with("/v1/") || path == "/metrics";
        let security = op["security"].as_array().expect("explicit security");
        if secured {
            assert_eq!(
                security,
                &vec![json!({"bearerAuth": []})],
                "{method} {path}"
            );
            assert!(responses.contains_key("401"), "{method} {path}: no 401");
        } else {
            assert!(security.is_empty(), "{method} {path}: security");
        }
        for (status, resp) in responses {
            let resp = deref(&doc, resp);
            assert!(
                resp["description"].is_string(),
                "{method} {path} {status}: description"
            );
            // Errors are the Error shape; /readyz answers 503 with its
            // usual body.
            let readyz_503 = path == "/readyz" && status == "503";
            if (status.starts_with('4') || status.starts_with('5')) && !readyz_503 {
                let content = resp["content"].as_object().expect("error content");
                if let Some(json) = content.get("application/json") {
                    assert_eq!(
                        json["schema"]["$ref"], "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
            }
        }
        if let Some(schema) = op
            .get("requestBody")
            .and_then(|b| b["content"]["application/json"].get("schema"))
        {
            assert_eq!(
                deref(&doc, schema)["additionalProperties"],
                false,
                "{method} {path}: request bodies refuse unknown fields"
            );
        }
    }
}

/// The `.route("path", handlers)` calls in `src`, as (path, methods).
fn routes_in_source(src: &str) -> Vec<(String, Vec<String>)> {
    // Drop comments so examples in docs do not count.
    let code: String = src
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find(".route(") {
        rest = rest[i + ".route(".len()..].trim_start();
        let lit = rest
            .strip_prefix('"')
            .expect(".route( not followed by a string literal");
        let end = lit.find('"').expect("unterminated route path");
        let path = lit[..end].to_string();
        rest = lit[end + 1..].trim_start();
        rest = rest.strip_prefix(',').expect("route path then a comma");
        // The handler expression, up to the closing parenthesis of
        // `.route(`: method routers are the calls at depth 0.
        let mut methods = Vec::new();
        let mut depth = 0usize;
        let mut ident = String::new();
        let mut chars = rest.char_indices();
        let mut consumed = rest.len();
        while let Some((j, c)) = chars.next() {
            match c {
                '"' => {
                    // Skip a string literal.
                    for (_, d) in chars.by_ref() {
                        if d == '"' {
                            break;
                        }
                    }
                    ident.clear();
                }
                '(' => {
                    if depth == 0 && !ident.is_empty() {
                        methods.push(std::mem::take(&mut ident));
                    }
                    ident.clear();
                    depth += 1;
                }
                ')' if depth == 0 => {
                    consumed = j + 1;
                    break;
                }
                ')' => depth -= 1,
                c if c.is_alphanumeric() || c == '_' => ident.push(c),
                _ => ident.clear(),
            }
        }
        rest = &rest[consumed..];
        out.push((path, methods));
    }
    out
}

#[test]
fn route_parser_reads_method_routers() {
    let src = r#"
        // .route("/commented", get(nothing))
        Router::new()
            .route("/a", get(|| async { Json(json!({"ok": (1)})) }))
            .route(
                "/b/{id}/{*rest}",
                get(one).delete(two), // trailing comment
            )
            .route("/c", any(handler)).with_state(gw)
    "#;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        routes_in_source(src),
        vec![
            ("/a".to_string(), s(&["get"])),
            ("/b/{id}/{*rest}".to_string(), s(&["get", "delete"])),
            ("/c".to_string(), s(&["any"])),
        ]
    );
}

#[test]
fn every_registered_route_is_documented_and_nothing_else() {
    let mut registered = BTreeSet::new();
    for (file, src) in [
        ("http_api.rs", HTTP_API_RS),
        ("http_webhooks.rs", HTTP_WEBHOOKS_RS),
    ] {
        let routes = routes_in_source(src);
        assert!(routes.len() >= 6, "{file}: found only {routes:?}");
        for (path, methods) in routes {
            assert!(!methods.is_empty(), "{file}: {path} has no method router");
            // `{*rest}` (axum's wildcard) is `{rest}` in the document.
            let path = path.replace("{*", "{");
            for m in methods {
                match m.as_str() {
                    "any" => {
                        for m in OPENAPI_METHODS {
                            registered.insert((path.clone(), m.to_string()));
                        }
                    }
                    m if OPENAPI_METHODS.contains(&m) => {
                        registered.insert((path.clone(), m.to_string()));
                    }
                    other => panic!("{file}: {path}: unexpected method router `{other}`"),
                }
            }
        }
    }
    // Sanity: the parser sees what a human reads in the routers.
    for expected in [
        ("/healthz", "get"),
        ("/v1/sessions/{key}", "delete"),
        ("/channels/{name}/webhook/{rest}", "trace"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks/{id}/replay", "post"),
    ] {
        assert!(
            registered.contains(&(expected.0.to_string(), expected.1.to_string())),
            "parser missed {expected:?}: {registered:?}"
        );
    }
    let documented = documented(&doc());
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "registered but not in docs/openapi.json: {undocumented:?}\n\
         in docs/openapi.json but not registered: {unserved:?}"
    );
}

/// A minimal value for `schema`: required properties only, first `oneOf`
/// branch, placeholder scalars.
fn minimal(doc: &Value, schema: &Value) -> Value {
    let schema = deref(doc, schema);
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(e) = schema["enum"].as_array() {
        return e[0].clone();
    }
    let mut required: Vec<&Value> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if let Some(first) = schema["oneOf"].as_array().and_then(|b| b.first()) {
        required.extend(first["required"].as_array().into_iter().flatten());
    }
    let ty = match &schema["type"] {
        Value::Array(t) => t[0].as_str().unwrap_or("null"),
        t => t.as_str().unwrap_or(if required.is_empty() {
            "null"
        } else {
            "object"
        }),
    };
    match ty {
        "object" => {
            let mut m = serde_json::Map::new();
            for k in required {
                let k = k.as_str().expect("required name");
                m.insert(k.into(), minimal(doc, &schema["properties"][k]));
            }
            Value::Object(m)
        }
        "array" => json!([]),
        "string" => json!("x"),
        "integer" | "number" => json!(1),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// Check `v` against the subset of JSON Schema the document uses.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = deref(doc, schema);
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            validate(doc, s, v, at, errors);
        }
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let matching = one
            .iter()
            .filter(|s| {
                let mut e = Vec::new();
                validate(doc, s, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!("{at}: {matching} oneOf branches match {v}"));
        }
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        errors.push(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = schema["enum"].as_array()
        && !e.contains(v)
    {
        errors.push(format!("{at}: {v} not in {e:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, v)) {
        errors.push(format!("{at}: {v} is not {types:?}"));
        return;
    }
    if let Some(n) = v.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|m| n < m) {
            errors.push(format!("{at}: {n} below the minimum"));
        }
        if schema["maximum"].as_f64().is_some_and(|m| n > m) {
            errors.push(format!("{at}: {n} above the maximum"));
        }
    }
    if let Some(items) = v.as_array()
        && let Some(item_schema) = schema.get("items")
    {
        for (i, x) in items.iter().enumerate() {
            validate(doc, item_schema, x, &format!("{at}/{i}"), errors);
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema["properties"].as_object();
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                errors.push(format!("{at}: missing required `{r}` in {v}"));
            }
        }
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, x, &format!("{at}/{k}"), errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{at}: undocumented field `{k}`")),
                    s @ Value::Object(_) => validate(doc, s, x, &format!("{at}/{k}"), errors),
                    _ => {}
                },
            }
        }
    }
}

/// Whether the response came from axum's method router (not a handler):
/// a 405 with `Allow`.
fn router_405(r: &reqwest::Response) -> bool {
    r.status() == 405 && r.headers().contains_key("allow")
}

/// One walk over every documented operation.
struct Walk<'a> {
    doc: &'a Value,
    base: String,
    /// Path parameter values.
    params: Vec<(&'static str, String)>,
    /// Request bodies by operationId (else the schema's minimal value).
    bodies: Vec<(&'static str, Value)>,
    /// Every operation without a `default` response must answer 2xx.
    must_succeed: bool,
    /// Also check that secured operations answer 401 without the token.
    check_401: bool,
}

/// What a walk found.
#[derive(Default)]
struct Outcome {
    failures: Vec<String>,
    /// JSON bodies checked against their schema.
    validated: usize,
    /// Answers with a 2xx status.
    succeeded: usize,
}

impl Walk<'_> {
    fn fill(&self, path: &str) -> String {
        let mut p = path.to_string();
        for (name, value) in &self.params {
            p = p.replace(&format!("{{{name}}}"), value);
        }
        assert!(!p.contains('{'), "no value for a parameter of {path}");
        p
    }

    async fn run(&self) -> Outcome {
        let doc = self.doc;
        let client = reqwest::Client::new();
        // Deletions, then reloading every plugin (it briefly takes the
        // channel away), go last.
        let mut ops: Vec<(String, String)> = documented(doc).into_iter().collect();
        ops.sort_by_key(|(p, m)| {
            (
                p == "/v1/plugins/reload",
                m == "delete",
                p.clone(),
                m.clone(),
            )
        });
        let mut out = Outcome::default();
        for (path, method) in &ops {
            let op = &doc["paths"][path][method];
            let op_id = op["operationId"].as_str().expect("operationId");
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let url = format!("{}{}", self.base, self.fill(path));
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let body = match self.bodies.iter().find(|(id, _)| *id == op_id) {
                Some((_, b)) => Some(b.clone()),
                None => op["requestBody"]["content"]["application/json"]["schema"]
                    .as_object()
                    .map(|s| minimal(doc, &Value::Object(s.clone()))),
            };
            let request = |token: bool| {
                let mut r = client.request(m.clone(), &url);
                if token {
                    r = r.bearer_auth("secret");
                }
                if let Some(b) = &body {
                    r = r.json(b);
                }
                r.send()
            };
            let what = format!("{m} {url} ({op_id})");

            if secured && self.check_401 {
                let r = request(false).await.expect("request");
                if r.status() != 401 {
                    out.failures
                        .push(format!("{what} without the token: {}", r.status()));
                }
            }

            let r = request(true).await.expect("request");
            let status = r.status().as_u16();
            eprintln!("{what}: {status}");
            if router_405(&r) {
                out.failures.push(format!("{what}: 405 from the router"));
                continue;
            }
            let responses = &op["responses"];
            let exact = responses.get(status.to_string());
            let has_default = responses.get("default").is_some();
            let content_type = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let text = r.text().await.expect("body");
            if (200..300).contains(&status) {
                out.succeeded += 1;
            } else if self.must_succeed && !has_default {
                out.failures.push(format!(
                    "{what}: {status} where success was expected: {text}"
                ));
                continue;
            }
            let Some(documented) = exact.or(responses.get("default")) else {
                out.failures
                    .push(format!("{what}: undocumented status {status}: {text}"));
                continue;
            };
            if exact.is_none() || method == "head" {
                continue; // the plugin's own response, or no body
            }
            // A handler's 404 (a documented "no such ...") is JSON, unlike
            // the router's empty one.
            if status == 404 && !content_type.starts_with("application/json") {
                out.failures
                    .push(format!("{what}: 404 without a JSON error: {text:?}"));
                continue;
            }
            let content = deref(doc, documented)["content"].as_object();
            if let Some(schema) = content.and_then(|c| c.get("application/json")) {
                if !content_type.starts_with("application/json") {
                    out.failures
                        .push(format!("{what}: {status} is {content_type:?}, not JSON"));
                    continue;
                }
                let v: Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        out.failures
                            .push(format!("{what}: {status} body is not JSON ({e}): {text}"));
                        continue;
                    }
                };
                let mut errors = Vec::new();
                validate(doc, &schema["schema"], &v, "", &mut errors);
                if errors.is_empty() {
                    out.validated += 1;
                } else {
                    out.failures
                        .push(format!("{what}: {status} body: {errors:?}"));
                }
            } else if let Some(ct) = content.and_then(|c| c.keys().next()) {
                let base_ct = ct.split(';').next().unwrap_or(ct);
                if !content_type.starts_with(base_ct) {
                    out.failures
                        .push(format!("{what}: {status} is {content_type:?}, not {ct}"));
                }
            }
        }
        assert!(
            out.failures.is_empty(),
            "{} of {} operations differ from the document:\n{}",
            out.failures.len(),
            ops.len(),
            out.failures.join("\n")
        );
        out
    }
}

/// Every documented operation is routed, with dummy ids: a documented
/// status (404 only where documented), never the router's 404 or 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let doc = doc();
    // Each secured operation is also tried without the token: more auth
    // failures from one address than the default limit allows.
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.gateway.auth_failures_burst = 1_000;
    let g = TestGateway::start_with(opts, dir).await;
    let out = Walk {
        doc: &doc,
        base: format!("http://{}", g.addr),
        params: vec![
            ("key", "main".into()),
            ("name", "echo".into()),
            ("action", "restart".into()),
            ("id", "ep_missing".into()),
            ("rest", "a/b".into()),
            ("account", "b".into()),
        ],
        bodies: vec![],
        must_succeed: false,
        check_401: true,
    }
    .run()
    .await;
    assert!(out.validated >= 15, "only {} bodies checked", out.validated);
}

/// With a real session, webhook endpoint and failed deliveries, every
/// operation succeeds and its body matches the documented schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_schemas_match_real_answers() {
    let doc = doc();
    let rx = Receiver::start().await;
    rx.set_default(Reply::Status(500));
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.webhooks.allow_cidrs = vec!["127.0.0.0/8".into()];
    opts.webhooks.retry_schedule_secs = vec![]; // fail at the first 500
    // The echo channel's second account, for `/channels/echo/b/webhook`.
    if let Some(echo) = opts.plugins.get_mut("echo") {
        echo.accounts.insert("b".into(), Default::default());
    }
    // echo with its default access policy (pairing), so two strangers'
    // codes can be approved and dismissed below.
    opts.plugins.remove("echo");
    // A configuration file for `POST /v1/config/reload` to read (unchanged
    // from the start: nothing is applied).
    let config = dir.path().join("pincer.toml");
    std::fs::write(&config, "# this test's settings are given directly\n").unwrap();
    opts.config_file = Some(config);
    let g = TestGateway::start_with(opts, dir).await;
    let base = format!("http://{}", g.addr);
    let client = reqwest::Client::new();
    for sender in ["stranger-1", "stranger-2"] {
        let r = client
            .post(format!("{base}/channels/echo/webhook"))
            .json(&json!({"conversation": sender, "sender": sender, "text": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A push is answered once committed; the policy decides just after.
    let inbox = g.gw().runtime.channels.inbox().clone();
    for _ in 0..3000 {
        if inbox.pending("echo").unwrap() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pending = g
        .gw()
        .runtime
        .channels
        .pairing()
        .list("echo", None)
        .unwrap()
        .pending;
    let code = |sender: &str| {
        pending
            .iter()
            .find(|p| p.sender == sender)
            .expect("a pending code")
            .code
            .clone()
    };
    let (approve_code, dismiss_code) = (code("stranger-1"), code("stranger-2"));

    let r = client
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth("secret")
        .json(&json!({"url": rx.url(), "description": "openapi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut c = Client::admin(&g.url()).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "hello openapi", "idempotencyKey": "oa-1"}),
    )
    .await;
    assert_eq!(c.chat_run("oa-1").await.last().unwrap()["state"], "final");
    rx.wait_for(1).await;
    g.running
        .as_ref()
        .expect("running")
        .dispatcher
        .settled()
        .await;

    let out = Walk {
        doc: &doc,
        base,
        params: vec![
            ("key", "main".into()),
            ("name", "echo".into()),
            ("action", "restart".into()),
            ("id", id),
            ("rest", "a/b".into()),
            ("account", "b".into()),
        ],
        bodies: vec![
            (
                "addWebhook",
                json!({"url": rx.url(), "events": ["message.*"]}),
            ),
            ("toggleWebhook", json!({"enabled": true})),
            ("rotateWebhook", json!({"graceSeconds": 60})),
            ("replayWebhook", json!({"since": 0})),
            ("approveChannelPairing", json!({"code": approve_code})),
            ("dismissChannelPairing", json!({"code": dismiss_code})),
            (
                "channelWebhookPost",
                json!({"conversation": "openapi", "text": "hi"}),
            ),
            (
                "channelWebhookPathPost",
                json!({"conversation": "openapi", "text": "hi"}),
            ),
            (
                "channelAccountWebhookPost",
                json!({"conversation": "openapi-b", "text": "hi"}),
            ),
            (
                "channelAccountWebhookPathPost",
                json!({"conversation": "openapi-b", "text": "hi"}),
            ),
        ],
        must_succeed: true,
        check_401: false,
    }
    .run()
    .await;
    assert!(out.succeeded >= 20, "only {} successes", out.succeeded);
    assert!(out.validated >= 18, "only {} bodies checked", out.validated);
}

/// What the document says about behaviour outside the handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_behaviour_is_as_documented() {
    let g = TestGateway::start().await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", g.addr);

    // A query string that does not parse: plain-text 400 (after the bearer
    // check, which runs before any extractor: without a token it is 401).
    let r = client
        .get(url("/v1/sessions?limit=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for (path, token) in [
        ("/v1/sessions?limit=abc", true),
        ("/v1/sessions/main/messages?limit=-1", true),
        ("/v1/webhooks/ep_missing/deliveries?nope=1", true),
    ] {
        let mut r = client.get(url(path));
        if token {
            r = r.bearer_auth("secret");
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 400, "{path} (token: {token})");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain"), "{path}: {ct}");
    }
    // Unknown path: empty 404. Unserved method: empty 405 with Allow.
    let r = client.get(url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().is_empty());
    let r = client.put(url("/healthz")).send().await.unwrap();
    assert!(router_405(&r), "{}", r.status());
    assert!(r.text().await.unwrap().is_empty());

    // Bodies: over 2 MiB on /v1 is the framework's plain-text 413; over
    // 1 MiB on a channel webhook is the gateway's JSON 413.
    let r = client
        .post(url("/v1/webhooks"))
        .bearer_auth("secret")
        .header("content-type", "application/json")
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let r = client
        .post(url("/channels/echo/webhook"))
        .body(vec![b' '; (1 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");

    // HEAD on a GET route.
    let r = client.head(url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Channel actions: an unknown channel is a 400, not a 404.
    let r = client
        .post(url("/v1/channels/nope/restart"))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(url("/v1/channels/echo/dance"))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Inbound webhook for a tool plugin: 503 with Retry-After, not 404.
    let r = client
        .post(url("/channels/clock/webhook"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));

    // Webhook request bodies: unknown fields and bad JSON are 400.
    for (path, body) in [
        ("/v1/webhooks", r#"{"url": "x", "nope": 1}"#),
        ("/v1/webhooks/ep_missing/toggle", r#"{"nope": true}"#),
        ("/v1/webhooks/ep_missing/rotate", "{"),
    ] {
        let r = client
            .post(url(path))
            .bearer_auth("secret")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path} {body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
    }
}
