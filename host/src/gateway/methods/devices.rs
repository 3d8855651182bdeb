//! `device.pair.list/approve/reject/remove`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, params};
use crate::gateway::hub::{Audience, Broadcast};
use crate::gateway::now_ms;
use crate::protocol::errors::ErrorShape;
use crate::protocol::scopes;
use crate::store::{DeviceRecord, PairRequest};

/// A pending request as events and lists show it.
pub fn pair_request_json(r: &PairRequest) -> Value {
    let mut v = json!({
        "requestId": r.request_id,
        "deviceId": r.device_id,
        "publicKey": r.public_key,
        "role": r.role,
        "roles": [r.role],
        "scopes": r.scopes,
        "ts": r.ts,
    });
    for (k, val) in &r.meta {
        v[k] = val.clone();
    }
    v
}

fn device_json(d: &DeviceRecord) -> Value {
    let mut v = json!({
        "deviceId": d.device_id,
        "publicKey": d.public_key,
        "roles": d.roles,
        "scopes": d.scopes,
        "approvedAtMs": d.approved_ms,
    });
    for (k, val) in &d.meta {
        v[k] = val.clone();
    }
    v
}

fn store_err(e: impl std::fmt::Display) -> ErrorShape {
    ErrorShape::unavailable(format!("store: {e}"))
}

/// `device.pair.list`.
pub fn list(ctx: &Ctx) -> Result<Value, ErrorShape> {
    let s = &ctx.gw.sessions;
    let pending = s.list_pair_requests().map_err(store_err)?;
    let paired = s.list_devices().map_err(store_err)?;
    Ok(json!({
        "pending": pending.iter().map(pair_request_json).collect::<Vec<_>>(),
        "paired": paired.iter().map(device_json).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestParams {
    request_id: String,
}

fn resolved(ctx: &Ctx, r: &PairRequest, decision: &str) {
    ctx.gw.broadcast(&Broadcast {
        name: "device.pair.resolved",
        payload: json!({"requestId": r.request_id, "deviceId": r.device_id, "decision": decision, "ts": now_ms()}),
        scope: Some(scopes::PAIRING),
        droppable: false,
        audience: Audience::All,
        state_version: None,
    });
}

/// `device.pair.approve`.
pub fn approve(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: RequestParams = params("device.pair.approve", p)?;
    let s = &ctx.gw.sessions;
    let r = s
        .take_pair_request(&p.request_id)
        .map_err(store_err)?
        .ok_or_else(|| ErrorShape::invalid(format!("unknown requestId: {}", p.request_id)))?;
    let rec = DeviceRecord {
        device_id: r.device_id.clone(),
        public_key: r.public_key.clone(),
        roles: vec![r.role.clone()],
        scopes: r.scopes.clone(),
        meta: r.meta.clone(),
        approved_ms: now_ms(),
    };
    s.put_device(&rec).map_err(store_err)?;
    resolved(ctx, &r, "approved");
    Ok(json!({"ok": true, "requestId": r.request_id, "device": device_json(&rec)}))
}

/// `device.pair.reject`.
pub fn reject(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: RequestParams = params("device.pair.reject", p)?;
    let r = ctx
        .gw
        .sessions
        .take_pair_request(&p.request_id)
        .map_err(store_err)?
        .ok_or_else(|| ErrorShape::invalid(format!("unknown requestId: {}", p.request_id)))?;
    resolved(ctx, &r, "rejected");
    Ok(json!({"ok": true, "requestId": r.request_id, "deviceId": r.device_id}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceParams {
    device_id: String,
}

/// `device.pair.remove`.
pub fn remove(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: DeviceParams = params("device.pair.remove", p)?;
    let removed = ctx
        .gw
        .sessions
        .remove_device(&p.device_id)
        .map_err(store_err)?;
    if !removed {
        return Err(ErrorShape::invalid(format!(
            "unknown deviceId: {}",
            p.device_id
        )));
    }
    Ok(json!({"ok": true, "deviceId": p.device_id, "removed": true}))
}
