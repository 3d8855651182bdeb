//! A pairing code and the notice that carries it commit in one transaction
//! on both store backends: when the notice cannot be committed (an outbox
//! insert made to fail, as a kill between the two would have left it), no
//! code is stored either, and once it can, both are there together.

use std::sync::Arc;

use pincer::store::{
    NewOutbound, OutboxStore, PairingNotice, PairingRequest, PairingStore, RequestOutcome,
    SqliteStore,
};
use pincer_tests::postgres::TestPostgres;

fn request(code: &str) -> PairingRequest {
    PairingRequest {
        channel: "telegram".into(),
        account_id: "default".into(),
        code: code.into(),
        sender: "4242".into(),
        sender_name: Some("Alice".into()),
        conversation: "4242".into(),
        created_ms: 1_000,
        expires_ms: 3_601_000,
    }
}

fn notice(code: &str) -> PairingNotice {
    PairingNotice {
        outbox: "telegram".into(),
        account: "default".into(),
        message: NewOutbound {
            conversation: "4242".into(),
            message: format!(r#"{{"text":"Pairing code: {code}"}}"#),
            blobs: Vec::new(),
        },
    }
}

/// With the outbox insert failing, the request fails and leaves nothing;
/// with it working again, the code and its notice land together.
fn code_and_notice_commit_together<S: PairingStore + OutboxStore>(
    store: &S,
    sabotage: &mut dyn FnMut(bool),
) {
    sabotage(true);
    let failed = store.request_pairing(&request("AAAA2222"), &notice("AAAA2222"), 1_000, 3);
    assert!(failed.is_err(), "{failed:?}");
    assert!(
        store
            .pending_pairings("telegram", None, 1_000)
            .unwrap()
            .is_empty(),
        "a code was stored without its notice"
    );
    assert!(store.outbox_rows("telegram", 10).unwrap().is_empty());
    sabotage(false);
    let created = store
        .request_pairing(&request("BBBB3333"), &notice("BBBB3333"), 1_000, 3)
        .unwrap();
    assert!(matches!(created, RequestOutcome::Created(_)), "{created:?}");
    let pending = store.pending_pairings("telegram", None, 1_000).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].code, "BBBB3333");
    let rows = store.outbox_rows("telegram", 10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].message.contains("BBBB3333"), "{rows:?}");
    // The same sender again: no second code, no second notice.
    assert_eq!(
        store
            .request_pairing(&request("CCCC4444"), &notice("CCCC4444"), 2_000, 3)
            .unwrap(),
        RequestOutcome::AlreadyPending
    );
    assert_eq!(store.outbox_rows("telegram", 10).unwrap().len(), 1);
}

#[test]
fn sqlite_commits_a_pairing_code_with_its_notice_or_neither() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pincer.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let raw = pincer::store::Connection::open(&path).unwrap();
    code_and_notice_commit_together(&*store, &mut |on| {
        let sql = if on {
            "CREATE TRIGGER sabotage BEFORE INSERT ON channel_outbox
             BEGIN SELECT RAISE(ABORT, 'sabotaged'); END;"
        } else {
            "DROP TRIGGER sabotage;"
        };
        raw.execute_batch(sql).unwrap();
    });
}

#[test]
fn postgres_commits_a_pairing_code_with_its_notice_or_neither() {
    let pg = TestPostgres::start();
    let url = pg.database("pairing_atomic");
    let store = TestPostgres::store(&url);
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    code_and_notice_commit_together(&*store, &mut |on| {
        let sql = if on {
            "CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'sabotaged'; END $$;
             CREATE TRIGGER sabotage BEFORE INSERT ON channel_outbox
               FOR EACH ROW EXECUTE FUNCTION sabotage();"
        } else {
            "DROP TRIGGER sabotage ON channel_outbox; DROP FUNCTION sabotage();"
        };
        raw.batch_execute(sql).unwrap();
    });
}
