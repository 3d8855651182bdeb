//! The PostgreSQL schema as versioned migrations: `pincer_migrations`
//! records each version applied; [`migrate`] applies the missing ones in
//! one transaction under an advisory lock, so gateways starting together
//! on one database migrate it once. A new table or column is a new entry
//! at the end of [`MIGRATIONS`], never an edit of an applied one.
//!
//! Version 1 is the SQLite schema after its migration 8 (store/sqlite.rs),
//! with PostgreSQL types: `BIGINT` for every integer and time (Unix ms),
//! identity columns for row ids, `BYTEA` for plugin values, `BOOLEAN` for
//! flags; JSON stays in `TEXT` columns, as in SQLite.

use postgres::Client;

use crate::store::StoreError;

/// The advisory lock key migrations run under.
const MIGRATE_LOCK: i64 = 0x7069_6e63_6572_0001;

/// Migrations in order: (description, SQL).
pub(super) const MIGRATIONS: &[(&str, &str)] = &[
    (
        "initial schema: kv, sessions, events, devices, webhooks, channel pairing, inbox, outbox",
        "CREATE TABLE plugin_kv (
        plugin     TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      BYTEA NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (plugin, key)
    );
    CREATE TABLE sessions (
        key           TEXT PRIMARY KEY,
        session_id    TEXT NOT NULL UNIQUE,
        agent_id      TEXT NOT NULL,
        channel       TEXT,
        conversation  TEXT,
        created_ms    BIGINT NOT NULL,
        updated_ms    BIGINT NOT NULL,
        message_count BIGINT NOT NULL DEFAULT 0,
        settings      TEXT NOT NULL DEFAULT '{}',
        last_preview  TEXT
    );
    CREATE INDEX sessions_by_updated ON sessions (updated_ms DESC, key);
    CREATE TABLE messages (
        session_id  TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        session_key TEXT NOT NULL,
        id          TEXT NOT NULL UNIQUE,
        role        TEXT NOT NULL,
        content     TEXT NOT NULL,
        ts          BIGINT NOT NULL,
        run_id      TEXT,
        stop_reason TEXT,
        meta        TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (session_id, seq)
    );
    CREATE INDEX messages_by_key ON messages (session_key);
    CREATE TABLE devices (
        device_id   TEXT PRIMARY KEY,
        public_key  TEXT NOT NULL,
        roles       TEXT NOT NULL,
        scopes      TEXT NOT NULL,
        meta        TEXT NOT NULL,
        approved_ms BIGINT NOT NULL
    );
    CREATE TABLE pair_requests (
        request_id TEXT PRIMARY KEY,
        device_id  TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        role       TEXT NOT NULL,
        scopes     TEXT NOT NULL,
        meta       TEXT NOT NULL,
        ts         BIGINT NOT NULL
    );
    CREATE TABLE device_tokens (
        device_id    TEXT NOT NULL,
        role         TEXT NOT NULL,
        token_sha256 TEXT NOT NULL,
        scopes       TEXT NOT NULL,
        issued_ms    BIGINT NOT NULL,
        PRIMARY KEY (device_id, role)
    );
    CREATE TABLE events (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind        TEXT NOT NULL,
        session_key TEXT,
        scope       TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        ts          BIGINT NOT NULL,
        data        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_by_scope_seq ON events (scope, seq);
    CREATE INDEX events_by_ts ON events (ts, id);
    CREATE TABLE store_probe (pad BYTEA NOT NULL);
    CREATE TABLE webhook_endpoints (
        id                         TEXT PRIMARY KEY,
        url                        TEXT NOT NULL,
        description                TEXT,
        events                     TEXT NOT NULL,
        enabled                    BOOLEAN NOT NULL,
        secret                     TEXT NOT NULL,
        previous_secret            TEXT,
        previous_secret_expires_ms BIGINT,
        failing_since_ms           BIGINT,
        disabled_reason            TEXT,
        created_ms                 BIGINT NOT NULL,
        updated_ms                 BIGINT NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
        event_id        BIGINT NOT NULL,
        msg_id          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        body            TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        next_attempt_ms BIGINT NOT NULL,
        created_ms      BIGINT NOT NULL,
        updated_ms      BIGINT NOT NULL,
        last_status     BIGINT,
        last_error      TEXT,
        UNIQUE (endpoint_id, event_id)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_ms);
    CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
    CREATE INDEX webhook_deliveries_due_by_endpoint
        ON webhook_deliveries (endpoint_id, status, next_attempt_ms);
    CREATE TABLE webhook_attempts (
        delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
        attempt     BIGINT NOT NULL,
        ts_ms       BIGINT NOT NULL,
        status      BIGINT,
        latency_ms  BIGINT NOT NULL,
        error       TEXT,
        PRIMARY KEY (delivery_id, attempt)
    );
    CREATE TABLE channel_pairing_requests (
        channel      TEXT NOT NULL,
        account      TEXT NOT NULL,
        code         TEXT NOT NULL,
        sender       TEXT NOT NULL,
        sender_name  TEXT,
        conversation TEXT NOT NULL,
        created_ms   BIGINT NOT NULL,
        expires_ms   BIGINT NOT NULL,
        PRIMARY KEY (channel, account, code),
        UNIQUE (channel, account, sender)
    );
    CREATE TABLE channel_pairing_approved (
        channel     TEXT NOT NULL,
        account     TEXT NOT NULL,
        sender      TEXT NOT NULL,
        sender_name TEXT,
        approved_ms BIGINT NOT NULL,
        PRIMARY KEY (channel, account, sender)
    );
    CREATE TABLE channel_inbox (
        seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        channel      TEXT NOT NULL,
        account      TEXT NOT NULL,
        platform_id  TEXT,
        conversation TEXT NOT NULL,
        payload      TEXT NOT NULL,
        state        TEXT NOT NULL,
        received_ms  BIGINT NOT NULL,
        settled_ms   BIGINT,
        progress     TEXT
    );
    CREATE UNIQUE INDEX channel_inbox_dedupe ON channel_inbox (channel, account, platform_id);
    CREATE INDEX channel_inbox_pending ON channel_inbox (channel, state, seq);
    CREATE INDEX channel_inbox_settled ON channel_inbox (settled_ms) WHERE settled_ms IS NOT NULL;
    CREATE TABLE channel_cursors (
        channel    TEXT NOT NULL,
        account    TEXT NOT NULL,
        cursor     TEXT NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (channel, account)
    );
    CREATE TABLE channel_outbox (
        id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        channel          TEXT NOT NULL,
        account          TEXT NOT NULL,
        conversation     TEXT NOT NULL,
        message          TEXT NOT NULL,
        inbox_seq        BIGINT,
        status           TEXT NOT NULL,
        plain            BOOLEAN NOT NULL DEFAULT FALSE,
        attempts         BIGINT NOT NULL DEFAULT 0,
        next_attempt_ms  BIGINT NOT NULL,
        created_ms       BIGINT NOT NULL,
        updated_ms       BIGINT NOT NULL,
        last_error       TEXT,
        sending_since_ms BIGINT,
        blobs            TEXT NOT NULL DEFAULT '',
        platform_id      TEXT,
        delivery         TEXT,
        delivery_detail  TEXT
    );
    CREATE INDEX channel_outbox_heads ON channel_outbox (channel, status, conversation, id);
    CREATE INDEX channel_outbox_failed ON channel_outbox (channel, status, updated_ms);
    CREATE INDEX channel_outbox_platform ON channel_outbox (channel, platform_id)
        WHERE platform_id IS NOT NULL;
    CREATE INDEX channel_outbox_blobs ON channel_outbox (status) WHERE blobs != '';
    CREATE INDEX channel_outbox_done ON channel_outbox (updated_ms) WHERE status != 'pending';",
    ),
    (
        "cluster events: stream log, node heartbeats, run idempotency and aborts",
        "CREATE TABLE cluster_stream_head (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        last_id  BIGINT NOT NULL
    );
    INSERT INTO cluster_stream_head (only_row, last_id) VALUES (TRUE, 0);
    CREATE TABLE cluster_events (
        id        BIGINT PRIMARY KEY,
        node_id   TEXT NOT NULL,
        name      TEXT NOT NULL,
        payload   TEXT NOT NULL,
        scope     TEXT,
        audience  TEXT NOT NULL,
        droppable BOOLEAN NOT NULL,
        run_id    TEXT,
        run_seq   BIGINT,
        ts        BIGINT NOT NULL
    );
    CREATE INDEX cluster_events_by_ts ON cluster_events (ts);
    CREATE INDEX cluster_events_by_run ON cluster_events (run_id, run_seq) WHERE run_id IS NOT NULL;
    CREATE TABLE cluster_nodes (
        node_id      TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        address      TEXT NOT NULL,
        started_ms   BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        channels     TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE chat_idempotency (
        run_id       TEXT PRIMARY KEY,
        session_key  TEXT NOT NULL,
        node_id      TEXT NOT NULL,
        state        TEXT NOT NULL,
        abort_reason TEXT,
        result       TEXT,
        created_ms   BIGINT NOT NULL,
        ended_ms     BIGINT
    );
    CREATE INDEX chat_idempotency_running ON chat_idempotency (node_id) WHERE state = 'running';
    CREATE INDEX chat_idempotency_by_session ON chat_idempotency (session_key) WHERE state = 'running';",
    ),
    (
        "cluster leases: one receiver per channel account, fenced commits, webhook claims",
        "CREATE TABLE channel_leases (
        channel     TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        token       BIGINT NOT NULL,
        expires_ms  BIGINT NOT NULL,
        acquired_ms BIGINT NOT NULL
    );
    ALTER TABLE channel_inbox ADD COLUMN fence BIGINT;
    ALTER TABLE channel_cursors ADD COLUMN fence BIGINT;
    ALTER TABLE webhook_deliveries ADD COLUMN claimed_by TEXT;
    ALTER TABLE webhook_deliveries ADD COLUMN claim_expires_ms BIGINT;
    CREATE INDEX webhook_deliveries_claims ON webhook_deliveries (claim_expires_ms)
        WHERE status = 'in_flight';",
    ),
    (
        "cluster plugins: each plugin's current component file, for every node",
        "CREATE TABLE cluster_plugins (
        name       TEXT PRIMARY KEY,
        sha256     TEXT NOT NULL,
        bytes      BYTEA NOT NULL,
        node_id    TEXT NOT NULL,
        updated_ms BIGINT NOT NULL
    );",
    ),
    (
        "cluster session claims: one run at a time per session, cluster-wide",
        "CREATE TABLE session_claims (
        session_key TEXT PRIMARY KEY,
        run_id      TEXT NOT NULL,
        node_id     TEXT NOT NULL,
        token       BIGINT NOT NULL,
        claimed_ms  BIGINT NOT NULL
    );
    CREATE SEQUENCE session_claim_tokens;
    CREATE INDEX session_claims_node ON session_claims (node_id);",
    ),
];

/// Apply the migrations the database has not seen yet, in one transaction.
/// A database migrated by a newer pincer (more versions than this one
/// knows) is refused rather than used with a schema it does not know.
pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    // No "already exists, skipping" notice in the log on every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pincer_migrations (
            version     BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            applied_ms  BIGINT NOT NULL
        )",
    )?;
    let applied: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM pincer_migrations",
            &[],
        )?
        .try_get(0)?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(StoreError::Config(format!(
            "the database schema is at version {applied}, newer than this pincer knows ({known}); \
             upgrade pincer"
        )));
    }
    for (i, (description, sql)) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO pincer_migrations (version, description, applied_ms) VALUES ($1, $2, $3)",
            &[&version, description, &super::now_ms()],
        )?;
        tracing::info!(version, description, "store migrated");
    }
    tx.commit()?;
    Ok(())
}
