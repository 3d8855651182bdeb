//! Protocol methods: the dispatch table, scope checks and one module per
//! area. `features.methods` is exactly [`METHODS`].

pub mod absent;
pub mod channel_cards;
pub mod chat;
pub mod config;
pub mod devices;
pub mod diagnostics;
pub mod pages;
pub mod pairing;
pub mod plugins;
pub mod send;
pub mod sessions;
pub mod startup;
pub mod system;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::debug;

use super::Gateway;
use super::hub::Conn;
use crate::protocol::errors::ErrorShape;
use crate::protocol::frames::{Request, Response};
use crate::protocol::scopes;

/// Implemented methods (advertised in `hello-ok.features.methods`).
pub const METHODS: &[&str] = &[
    "health",
    "status",
    "chat.send",
    "chat.abort",
    "chat.history",
    "chat.inject",
    "sessions.list",
    "sessions.subscribe",
    "sessions.unsubscribe",
    "sessions.messages.subscribe",
    "sessions.messages.unsubscribe",
    "sessions.patch",
    "sessions.reset",
    "sessions.delete",
    "sessions.abort",
    "models.list",
    "agents.list",
    "agent.identity.get",
    "agent",
    "agent.wait",
    "system-presence",
    "last-heartbeat",
    "node.list",
    "device.pair.list",
    "device.pair.approve",
    "device.pair.reject",
    "device.pair.remove",
    "logs.tail",
    "tools.catalog",
    "channels.status",
    "channels.start",
    "channels.stop",
    "channels.restart",
    "channels.pairing.list",
    "channels.pairing.approve",
    "channels.pairing.dismiss",
    "send",
    "plugins.list",
    "plugins.reload",
    "config.reload",
    "webhooks.add",
    "webhooks.list",
    "webhooks.get",
    "webhooks.delete",
    "webhooks.toggle",
    "webhooks.rotate",
    "webhooks.deliveries",
    "webhooks.replay",
    "diagnostics.lanes",
    // startup::METHODS
    "chat.startup",
    "chat.metadata",
    "sessions.describe",
    "models.authStatus",
    // absent::METHODS
    "cron.list",
    "cron.status",
    "tasks.list",
    "question.list",
    "talk.catalog",
    "exec.approval.list",
    "plugin.approval.list",
    "openclaw.approval.list",
    "progressCard.get",
    "sessions.branches.list",
    "sessions.companion.state",
    "sessions.observer.visibility",
    "update.status",
    "config.get",
    "plugins.catalog.browse",
    // pages::METHODS
    "skills.library.list",
    "skills.search",
    "skills.status",
    "exec.approvals.get",
    "themes.list",
    "usage.status",
    "sessions.usage",
    "environments.list",
    "system.info",
];

/// Events this gateway sends.
pub const EVENTS: &[&str] = &[
    "connect.challenge",
    "agent",
    "chat",
    "session.message",
    "session.tool",
    "sessions.changed",
    "presence",
    "tick",
    "shutdown",
    "health",
    "device.pair.requested",
    "device.pair.resolved",
    // runtime_events::EVENTS
    "plugin.loaded",
    "plugin.failed",
    "plugin.unloaded",
    "channel.state",
    "channel.unhealthy",
    "channel.recovered",
    "channel.gave_up",
    "channel.restarted",
];

/// What a handler sees.
#[derive(Clone)]
pub struct Ctx {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// The calling connection.
    pub conn: Arc<Conn>,
}

/// A handler's answer.
pub enum Reply {
    /// `ok:true` with this payload.
    Ok(Value),
    /// `ok:false`.
    Err(ErrorShape),
    /// `ok:false` with a payload too.
    ErrWith(ErrorShape, Value),
    /// The handler responded itself.
    Done,
}

impl From<Result<Value, ErrorShape>> for Reply {
    fn from(r: Result<Value, ErrorShape>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }
    }
}

/// Parse `params` (absent = `{}`) into `T`, or the reference's error.
pub fn params<T: DeserializeOwned>(method: &str, params: &Value) -> Result<T, ErrorShape> {
    let p = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params.clone()
    };
    serde_json::from_value(p).map_err(|e| ErrorShape::bad_params(method, e))
}

/// Methods that may wait (they run on their own task so the connection
/// keeps serving).
fn may_block(method: &str) -> bool {
    matches!(
        method,
        "agent.wait"
            | "plugins.reload"
            | "config.reload"
            | "channels.start"
            | "channels.stop"
            | "channels.restart"
            | "send"
            | "status"
            | "health"
            | "channels.status"
            | "webhooks.add"
            | "sessions.usage"
    )
}

/// Handle one request and queue its response.
pub async fn handle(ctx: &Ctx, req: Request) {
    let conn = &ctx.conn;
    if req.method == "connect" {
        conn.respond(
            Response::err(
                &req.id,
                ErrorShape::invalid("connect is only valid as the first request"),
            )
            .to_text(),
        );
        return;
    }
    if !METHODS.contains(&req.method.as_str()) {
        conn.respond(Response::err(&req.id, ErrorShape::unknown_method(&req.method)).to_text());
        return;
    }
    if conn.role != "operator" {
        conn.respond(Response::err(&req.id, ErrorShape::unauthorized_role(&conn.role)).to_text());
        return;
    }
    if let Err(missing) = scopes::authorize_request(&req.method, &req.params, &conn.scopes) {
        conn.respond(
            Response::err(&req.id, ErrorShape::missing_scope(conn.protocol, missing)).to_text(),
        );
        return;
    }
    if may_block(&req.method) {
        // At most `max_inflight_requests` of these per connection: the
        // read loop waits here (so the client is slowed by TCP) until one
        // finishes, or gives up when the connection closes.
        let Some(permit) = conn.heavy_permit().await else {
            return;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            run(&ctx, req).await;
            drop(permit);
        });
    } else {
        run(ctx, req).await;
    }
}

async fn run(ctx: &Ctx, req: Request) {
    let started = Instant::now();
    let reply = dispatch(ctx, &req).await;
    let ok = !matches!(reply, Reply::Err(_) | Reply::ErrWith(..));
    let resp = match reply {
        Reply::Ok(v) => Some(Response::ok(&req.id, v)),
        Reply::Err(e) => Some(Response::err(&req.id, e)),
        Reply::ErrWith(e, v) => Some(Response::err_with(&req.id, e, v)),
        Reply::Done => None,
    };
    if let Some(r) = resp {
        ctx.conn.respond(r.to_text());
    }
    let elapsed = started.elapsed();
    metrics::histogram!("pincer_method_duration_seconds", "method" => req.method.clone())
        .record(elapsed.as_secs_f64());
    debug!(conn = %ctx.conn.id, req = %req.id, method = %req.method, ok, micros = elapsed.as_micros() as u64, "request");
}

async fn dispatch(ctx: &Ctx, req: &Request) -> Reply {
    let p = &req.params;
    let gw = &ctx.gw;
    match req.method.as_str() {
        "health" => Reply::Ok(system::health_summary(gw).await),
        "status" => Reply::Ok(system::status(gw).await),
        "models.list" => Reply::Ok(system::models(gw)),
        "agents.list" => Reply::Ok(system::agents(gw)),
        "agent.identity.get" => Reply::Ok(system::identity()),
        "system-presence" => Reply::Ok(Value::Array(gw.presence())),
        "last-heartbeat" => Reply::Ok(Value::Null),
        "node.list" => Reply::Ok(serde_json::json!({"ts": super::now_ms(), "nodes": []})),
        "logs.tail" => system::logs_tail(gw, p).into(),
        "tools.catalog" => Reply::Ok(system::tools_catalog(gw)),
        "diagnostics.lanes" => Reply::Ok(diagnostics::lanes(gw)),
        "chat.send" => chat::send(ctx, &req.id, p),
        "chat.abort" => chat::abort(ctx, p).into(),
        "chat.history" => chat::history(ctx, p).into(),
        "chat.inject" => chat::inject(ctx, p).into(),
        "agent" => chat::agent(ctx, &req.id, p),
        "agent.wait" => chat::wait(ctx, p).await,
        "sessions.list" => sessions::list(ctx, p).into(),
        "sessions.subscribe" => sessions::subscribe(ctx, true),
        "sessions.unsubscribe" => sessions::subscribe(ctx, false),
        "sessions.messages.subscribe" => sessions::messages_subscribe(ctx, p, true).into(),
        "sessions.messages.unsubscribe" => sessions::messages_subscribe(ctx, p, false).into(),
        "sessions.patch" => sessions::patch(ctx, p).into(),
        "sessions.reset" => sessions::reset(ctx, p).into(),
        "sessions.delete" => sessions::delete(ctx, p).into(),
        "sessions.abort" => sessions::abort(ctx, p).into(),
        "device.pair.list" => devices::list(ctx).into(),
        "device.pair.approve" => devices::approve(ctx, p).into(),
        "device.pair.reject" => devices::reject(ctx, p).into(),
        "device.pair.remove" => devices::remove(ctx, p).into(),
        "channels.status" => Reply::Ok(plugins::channels_status(gw).await),
        "channels.start" | "channels.stop" | "channels.restart" => {
            let action = req.method.trim_start_matches("channels.");
            match params::<plugins::ChannelParams>(&req.method, p) {
                Ok(cp) => {
                    plugins::channel_action(gw, &cp.channel, cp.account_id.as_deref(), action)
                        .await
                        .into()
                }
                Err(e) => Reply::Err(e),
            }
        }
        m if m.starts_with("channels.pairing.") => pairing::handle(gw, m, p).into(),
        "send" => send::send(gw, p).await.into(),
        "plugins.list" => Reply::Ok(plugins::plugins_list(gw)),
        "plugins.reload" => match params::<plugins::ReloadParams>(&req.method, p) {
            Ok(rp) => Reply::Ok(plugins::reload(gw, rp.name.as_deref()).await),
            Err(e) => Reply::Err(e),
        },
        "config.reload" => match config::reload(gw).await {
            Ok(report) => Reply::Ok(serde_json::to_value(report).unwrap_or_default()),
            Err(refused) => {
                let shape = config::error_shape(&refused);
                match refused {
                    config::ReloadRefused::Invalid(report) => {
                        Reply::ErrWith(shape, serde_json::to_value(report).unwrap_or_default())
                    }
                    config::ReloadRefused::NoFile => Reply::Err(shape),
                }
            }
        },
        m if m.starts_with("webhooks.") => webhooks::handle(ctx, m, p).await.into(),
        "chat.startup" => startup::chat_startup(ctx, p).into(),
        "chat.metadata" => Reply::Ok(startup::chat_metadata(gw)),
        "sessions.describe" => startup::sessions_describe(ctx, p).into(),
        "models.authStatus" => Reply::Ok(startup::models_auth_status(gw)),
        m if pages::METHODS.contains(&m) => match pages::answer(gw, m, p) {
            Some(r) => r.into(),
            None => Reply::Err(ErrorShape::unknown_method(m)),
        },
        m if absent::METHODS.contains(&m) => match absent::answer(m, p) {
            Some(v) => Reply::Ok(v),
            None => Reply::Err(ErrorShape::unknown_method(m)),
        },
        other => Reply::Err(ErrorShape::unknown_method(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_tables_are_advertised() {
        for m in absent::METHODS
            .iter()
            .chain(startup::METHODS)
            .chain(pages::METHODS)
        {
            assert!(METHODS.contains(m), "{m} missing from METHODS");
        }
    }
}
