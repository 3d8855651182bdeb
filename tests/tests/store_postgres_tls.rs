//! TLS to PostgreSQL: a real server with TLS on (a throwaway CA and a
//! server certificate for the name `db.internal`), and the store URL's
//! libpq-style `sslmode` / `sslrootcert` deciding what the store accepts.
//! Whether a connection is encrypted is read from the server itself
//! (`pg_stat_ssl`), not assumed.

use pincer::store::{PgStore, StoreConfig};
use pincer_tests::postgres::TestPostgres;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA and a server certificate (for `names`) it signed: (CA PEM,
/// server certificate PEM, server key PEM).
fn pki(names: &[&str]) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let server = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("server params");
    let key = KeyPair::generate().expect("server key");
    let cert = server.signed_by(&key, &issuer).expect("server certificate");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Connect the store to `url` and use it once (so its pool holds a live
/// connection): Ok, or the error's text.
fn connect(url: &str) -> Result<PgStore, String> {
    let store = PgStore::connect(url, &StoreConfig::default()).map_err(|e| e.to_string())?;
    store.check_writable().map_err(|e| e.to_string())?;
    Ok(store)
}

/// How many of the server's connections with application name `app` are
/// encrypted, and how many are not.
fn encrypted(pg: &TestPostgres, app: &str) -> (i64, i64) {
    let url = pg.server.url("postgres");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("inspect");
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&app],
        )
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

#[test]
fn sslmode_decides_encryption_and_what_certificate_is_accepted() {
    let (ca, cert, key) = pki(&["db.internal"]);
    let (other_ca, _, _) = pki(&["db.internal"]);
    let pg = TestPostgres::start_tls(&cert, &key);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca).expect("write CA");
    let other_path = dir.path().join("other-ca.pem");
    std::fs::write(&other_path, &other_ca).expect("write other CA");
    let base = pg.database("tls");
    // Each case names its connections, so a closing one of an earlier
    // case is never counted.
    let with = |app: &str, q: &str| format!("{base}?application_name={app}&{q}");
    let root = format!("sslrootcert={}", ca_path.display());
    let other = format!("sslrootcert={}", other_path.display());

    // verify-ca: the chain leads to our CA; the name (127.0.0.1 against
    // db.internal) is not checked. Encrypted.
    let store = connect(&with("ca", &format!("sslmode=verify-ca&{root}"))).expect("verify-ca");
    let (tls, plain) = encrypted(&pg, "ca");
    assert!(
        tls >= 1 && plain == 0,
        "verify-ca connects with TLS: {tls} / {plain}"
    );
    drop(store);

    // verify-full: the certificate does not name 127.0.0.1: refused.
    let e = connect(&with("full", &format!("sslmode=verify-full&{root}")))
        .err()
        .unwrap_or_else(|| panic!("name mismatch refused"));
    assert!(e.contains("certificate"), "{e}");

    // A chain to another CA: refused, with verify-ca and with require + root.
    let e = connect(&with("other", &format!("sslmode=verify-ca&{other}")))
        .err()
        .unwrap_or_else(|| panic!("unknown CA refused"));
    assert!(e.contains("certificate"), "{e}");
    let e = connect(&with("other2", &format!("sslmode=require&{other}")))
        .err()
        .unwrap_or_else(|| panic!("require + root checks the chain"));
    assert!(e.contains("certificate"), "{e}");

    // require without a root and the default (prefer): encrypted, the
    // certificate not checked (libpq's behaviour).
    let store = connect(&with("req", "sslmode=require")).expect("require");
    let (tls, plain) = encrypted(&pg, "req");
    assert!(tls >= 1 && plain == 0, "require: {tls} / {plain}");
    drop(store);
    let store = connect(&format!("{base}?application_name=dflt")).expect("prefer by default");
    let (tls, plain) = encrypted(&pg, "dflt");
    assert!(
        tls >= 1 && plain == 0,
        "the default prefers TLS: {tls} / {plain}"
    );
    drop(store);

    // disable: plain.
    let store = connect(&with("off", "sslmode=disable")).expect("disable");
    let (tls, plain) = encrypted(&pg, "off");
    assert!(tls == 0 && plain >= 1, "disable: {tls} / {plain}");
    drop(store);

    // A root file that is not there: a clear configuration error.
    let e = connect(&with(
        "miss",
        "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
    ))
    .err()
    .unwrap_or_else(|| panic!("missing root"));
    assert!(e.contains("sslrootcert"), "{e}");
}
