//! `pincer migrate`: the real binary creates the schema of a real
//! PostgreSQL database (a throwaway server) and of a SQLite file, is a
//! no-op when run again, and fails clearly on an unreachable server.

use std::process::Command;

use pincer::bench::pgserver::PgServer;

fn migrate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pincer"))
        .arg("migrate")
        .args(args)
        .env_remove("PINCER_STORE")
        .output()
        .expect("run pincer migrate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn applied_versions(url: &str) -> Vec<i64> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.query(
            "SELECT version FROM pincer_migrations ORDER BY version",
            &[],
        )
        .expect("migrations table")
        .iter()
        .map(|r| r.get(0))
        .collect()
    })
    .join()
    .expect("query thread")
}

#[test]
fn migrate_creates_the_postgres_schema_once_and_says_where() {
    let server = PgServer::start(&["fsync=off"]).expect("a PostgreSQL server");
    let url = server.create_db("migrate_cli").expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let (ok, out, err) = migrate(&["--store", &url, "--data-dir", d]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("schema up to date"), "{out}");
    assert!(
        out.contains("postgres://") && out.contains("migrate_cli"),
        "{out}"
    );
    let first = applied_versions(&url);
    assert!(!first.is_empty());
    assert_eq!(first, (1..=first.len() as i64).collect::<Vec<_>>());
    // Again: nothing new to apply.
    let (ok, out, err) = migrate(&["--store", &url, "--data-dir", d]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(applied_versions(&url), first);
}

#[test]
fn migrate_creates_the_sqlite_file_and_refuses_an_unreachable_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let (ok, out, err) = migrate(&["--data-dir", d]);
    assert!(ok, "{out}\n{err}");
    assert!(dir.path().join(pincer::store::DB_FILE).is_file());
    // A port nothing listens on: a clear error and a failing exit status.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("postgres://nobody:hunter2@127.0.0.1:{port}/none");
    let (ok, out, err) = migrate(&["--store", &url, "--data-dir", d]);
    assert!(!ok, "{out}");
    assert!(err.contains("opening the store"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}
