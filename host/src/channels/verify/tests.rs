//! The schemes against published vectors, and the decisions (401, 403,
//! 503, handshake) through [`check`].

use std::collections::BTreeMap;

use super::*;

/// The body of Slack's documented signing example (a slash command).
const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS: u64 = 1_531_420_618;
const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

/// RFC 8032 section 7.1, test 1.
const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const RFC_SIG_EMPTY: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
/// The same key over `1700000000` + `{"type":1}` (channel-platforms.md §4).
const DISCORD_SIG: &str = "1695961a47c91a1ec033b819b7e87e3dbc583dd0cee6d1fd0216f58ac87b6228ae531ddbf91fb7bc28d7edf7f08604da16f54624f38a6bc0614e4dc13cd47f0f";

#[derive(Default)]
struct Keys {
    secrets: BTreeMap<&'static str, &'static str>,
    config: BTreeMap<&'static str, &'static str>,
}

impl WebhookKeys for Keys {
    fn secret(&self, channel: &str, account: Option<&str>, name: &str) -> Option<String> {
        (channel == "ch" && account.is_none())
            .then(|| self.secrets.get(name).map(|s| s.to_string()))
            .flatten()
    }
    fn config(&self, channel: &str, account: Option<&str>, key: &str) -> Option<String> {
        (channel == "ch" && account.is_none())
            .then(|| self.config.get(key).map(|s| s.to_string()))
            .flatten()
    }
}

fn spec(text: &str) -> WebhookSpec {
    let w: WebhookSpec = toml::from_str(text).unwrap();
    w.check().unwrap();
    w
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(
    w: &WebhookSpec,
    keys: &Keys,
    method: &str,
    query: &str,
    h: &[(&str, &str)],
    body: &[u8],
    now_s: u64,
) -> Result<Outcome, Rejection> {
    let h = headers(h);
    let push = Push {
        method,
        query,
        headers: &h,
        body,
    };
    check(w, keys, "ch", None, &push, now_s * 1000)
}

fn reason(r: Result<Outcome, Rejection>) -> Reason {
    r.expect_err("should be refused").reason
}

const PASS_HMAC: Outcome = Outcome::Pass(Verified {
    scheme: SchemeName::HmacSha256,
});

#[test]
fn hmac_sha256_published_vector() {
    assert_eq!(
        hex::encode(hmac::mac(b"secret", [b"test".as_slice()])),
        "0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
    );
}

#[test]
fn meta_signature_over_the_raw_body() {
    let w = spec(
        "[verify]\nscheme = \"hmac-sha256\"\nheader = \"X-Hub-Signature-256\"\nsecret = \"app_secret\"\nprefix = \"sha256=\"",
    );
    let keys = Keys {
        secrets: [("app_secret", "secret")].into(),
        ..Default::default()
    };
    let good = "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914";
    let ok = run(
        &w,
        &keys,
        "POST",
        "",
        &[("x-hub-signature-256", good)],
        b"test",
        0,
    );
    assert_eq!(ok, Ok(PASS_HMAC));
    // Upper-case hex is the same signature.
    let upper = format!("sha256={}", good[7..].to_uppercase());
    let ok = run(
        &w,
        &keys,
        "POST",
        "",
        &[("X-Hub-Signature-256", &upper)],
        b"test",
        0,
    );
    assert_eq!(ok, Ok(PASS_HMAC));
    // One byte more in the body, a missing prefix, bad hex, a short
    // signature, a second header: all 403. No header: 401.
    for (h, body) in [
        (good.to_string(), b"test ".as_slice()),
        (good[7..].to_string(), b"test"),
        ("sha256=zz".to_string(), b"test"),
        ("sha256=0329a06b".to_string(), b"test"),
    ] {
        let r = run(
            &w,
            &keys,
            "POST",
            "",
            &[("x-hub-signature-256", &h)],
            body,
            0,
        );
        assert_eq!(reason(r), Reason::Invalid, "{h}");
    }
    let twice = [("x-hub-signature-256", good), ("X-Hub-Signature-256", good)];
    assert_eq!(
        reason(run(&w, &keys, "POST", "", &twice, b"test", 0)),
        Reason::Invalid
    );
    assert_eq!(
        reason(run(&w, &keys, "POST", "", &[], b"test", 0)),
        Reason::Missing
    );
    // A signature in the query string counts for nothing.
    let q = format!("x-hub-signature-256={good}");
    assert_eq!(
        reason(run(&w, &keys, "POST", &q, &[], b"test", 0)),
        Reason::Missing
    );
    // Not granted: 503, naming the secret.
    let r = run(
        &w,
        &Keys::default(),
        "POST",
        "",
        &[("x-hub-signature-256", good)],
        b"test",
        0,
    );
    let r = r.unwrap_err();
    assert_eq!((r.reason, r.reason.status()), (Reason::NotGranted, 503));
    assert_eq!(r.detail, "webhook secret `app_secret` not granted");
    assert_eq!(
        problem(&w, &Keys::default(), "ch", None).as_deref(),
        Some("webhook secret `app_secret` not granted")
    );
    assert_eq!(problem(&w, &keys, "ch", None), None);
    // Another account's secrets are not this one's.
    let h = headers(&[("x-hub-signature-256", good)]);
    let push = Push {
        method: "POST",
        query: "",
        headers: &h,
        body: b"test",
    };
    let r = check(&w, &keys, "ch", Some("second"), &push, 0).unwrap_err();
    assert_eq!(r.reason, Reason::NotGranted);
}

#[test]
fn slack_documented_example_and_its_window() {
    let w = spec(
        "[verify]\nscheme = \"hmac-sha256\"\nheader = \"X-Slack-Signature\"\nsecret = \"signing_secret\"\nprefix = \"v0=\"\nsigned = \"v0:{timestamp}:{body}\"\ntimestamp_header = \"X-Slack-Request-Timestamp\"",
    );
    let keys = Keys {
        secrets: [("signing_secret", SLACK_SECRET)].into(),
        ..Default::default()
    };
    let ts = SLACK_TS.to_string();
    let h = [
        ("X-Slack-Signature", SLACK_SIG),
        ("X-Slack-Request-Timestamp", ts.as_str()),
    ];
    let body = SLACK_BODY.as_bytes();
    for now in [SLACK_TS, SLACK_TS - 300, SLACK_TS + 300] {
        assert_eq!(
            run(&w, &keys, "POST", "", &h, body, now),
            Ok(PASS_HMAC),
            "{now}"
        );
    }
    // Stale and future beyond the 300 s tolerance: 403.
    for now in [SLACK_TS + 301, SLACK_TS - 301] {
        let r = run(&w, &keys, "POST", "", &h, body, now).unwrap_err();
        assert_eq!((r.reason, r.reason.status()), (Reason::Stale, 403), "{now}");
    }
    // A different timestamp breaks the signature; no timestamp is 401; a
    // timestamp that is not Unix seconds is 403.
    let other = (SLACK_TS + 1).to_string();
    let h2 = [
        ("X-Slack-Signature", SLACK_SIG),
        ("X-Slack-Request-Timestamp", other.as_str()),
    ];
    assert_eq!(
        reason(run(&w, &keys, "POST", "", &h2, body, SLACK_TS)),
        Reason::Invalid
    );
    let h3 = [("X-Slack-Signature", SLACK_SIG)];
    assert_eq!(
        reason(run(&w, &keys, "POST", "", &h3, body, SLACK_TS)),
        Reason::Missing
    );
    let h4 = [
        ("X-Slack-Signature", SLACK_SIG),
        ("X-Slack-Request-Timestamp", "-1531420618"),
    ];
    assert_eq!(
        reason(run(&w, &keys, "POST", "", &h4, body, SLACK_TS)),
        Reason::Invalid
    );
}

#[test]
fn discord_ed25519_vectors() {
    let w = spec(
        "[verify]\nscheme = \"ed25519\"\nheader = \"X-Signature-Ed25519\"\npublic_key = \"config:public_key\"\ntimestamp_header = \"X-Signature-Timestamp\"",
    );
    let keys = Keys {
        config: [("public_key", RFC_PUBLIC)].into(),
        ..Default::default()
    };
    let pass = Ok(Outcome::Pass(Verified {
        scheme: SchemeName::Ed25519,
    }));
    let h = [
        ("X-Signature-Ed25519", DISCORD_SIG),
        ("X-Signature-Timestamp", "1700000000"),
    ];
    assert_eq!(
        run(&w, &keys, "POST", "", &h, br#"{"type":1}"#, 1_700_000_010),
        pass
    );
    assert_eq!(
        reason(run(
            &w,
            &keys,
            "POST",
            "",
            &h,
            br#"{"type":2}"#,
            1_700_000_010
        )),
        Reason::Invalid
    );
    assert_eq!(
        reason(run(
            &w,
            &keys,
            "POST",
            "",
            &h,
            br#"{"type":1}"#,
            1_700_000_301
        )),
        Reason::Stale
    );
    // RFC 8032 test 1 itself: the empty message, no timestamp.
    let rfc = spec(
        "[verify]\nscheme = \"ed25519\"\nheader = \"X-Sig\"\npublic_key = \"config:public_key\"\nsigned = \"{body}\"",
    );
    let h = [("x-sig", RFC_SIG_EMPTY)];
    assert_eq!(run(&rfc, &keys, "POST", "", &h, b"", 0), pass);
    assert_eq!(
        reason(run(&rfc, &keys, "POST", "", &h, b"x", 0)),
        Reason::Invalid
    );
    // A key that is not set, or not a key: 503 with the reason.
    let r = run(&rfc, &Keys::default(), "POST", "", &h, b"", 0).unwrap_err();
    assert_eq!(r.reason, Reason::NotGranted);
    assert_eq!(r.detail, "webhook public key `config:public_key` not set");
    let bad = Keys {
        config: [("public_key", "abcd")].into(),
        ..Default::default()
    };
    let r = run(&rfc, &bad, "POST", "", &h, b"", 0).unwrap_err();
    assert_eq!(r.reason, Reason::NotGranted);
    assert!(r.detail.contains("32 bytes"), "{}", r.detail);
}

#[test]
fn shared_header_token() {
    let w = spec(
        "[verify]\nscheme = \"shared-header\"\nheader = \"X-Telegram-Bot-Api-Secret-Token\"\nsecret = \"webhook_secret\"",
    );
    let keys = Keys {
        secrets: [("webhook_secret", "s3cr3t_-token")].into(),
        ..Default::default()
    };
    let pass = Ok(Outcome::Pass(Verified {
        scheme: SchemeName::SharedHeader,
    }));
    let name = "x-telegram-bot-api-secret-token";
    assert_eq!(
        run(&w, &keys, "POST", "", &[(name, "s3cr3t_-token")], b"{}", 0),
        pass
    );
    for wrong in ["s3cr3t_-toke", "s3cr3t_-tokeN", "s3cr3t_-token ", ""] {
        let r = run(&w, &keys, "POST", "", &[(name, wrong)], b"{}", 0);
        assert_eq!(reason(r), Reason::Invalid, "{wrong:?}");
    }
    assert_eq!(
        reason(run(&w, &keys, "POST", "", &[], b"{}", 0)),
        Reason::Missing
    );
    // Never from the query string.
    let q = "X-Telegram-Bot-Api-Secret-Token=s3cr3t_-token&secret=s3cr3t_-token";
    assert_eq!(
        reason(run(&w, &keys, "POST", q, &[], b"{}", 0)),
        Reason::Missing
    );
    // The guest gets the placeholder, not the token.
    let mut h = headers(&[
        ("X-Telegram-Bot-Api-Secret-Token", "s3cr3t_-token"),
        ("a", "b"),
    ]);
    redact(&w, &mut h);
    assert_eq!(
        h,
        headers(&[
            (
                "X-Telegram-Bot-Api-Secret-Token",
                "{{secret:webhook_secret}}"
            ),
            ("a", "b")
        ])
    );
}

#[test]
fn hub_challenge_handshake() {
    let w = spec(
        "[verify]\nscheme = \"hmac-sha256\"\nheader = \"X-Hub-Signature-256\"\nsecret = \"app_secret\"\nprefix = \"sha256=\"\n[handshake]\nscheme = \"hub-challenge\"\nsecret = \"verify_token\"",
    );
    let keys = Keys {
        secrets: [("app_secret", "secret"), ("verify_token", "tok en")].into(),
        ..Default::default()
    };
    let ok = run(
        &w,
        &keys,
        "GET",
        "hub.mode=subscribe&hub.verify_token=tok+en&hub.challenge=1158201444",
        &[],
        b"",
        0,
    );
    assert_eq!(
        ok,
        Ok(Outcome::Answer(Answer {
            status: 200,
            body: "1158201444".into()
        }))
    );
    for q in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=tok+en&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
        "hub.mode=subscribe&hub.verify_token=tok+en",
        "hub.mode=subscribe&hub.verify_token=tok+en&hub.challenge=%3Cb%3E+x",
        "hub.mode=subscribe&hub.verify_token=wrong&hub.verify_token=tok+en&hub.challenge=1",
    ] {
        let r = run(&w, &keys, "GET", q, &[], b"", 0).unwrap_err();
        assert_eq!(
            (r.reason, r.reason.status()),
            (Reason::Handshake, 403),
            "{q}"
        );
    }
    // POSTs still need their signature.
    assert_eq!(
        reason(run(&w, &keys, "POST", "", &[], b"x", 0)),
        Reason::Missing
    );
    // The verify token not granted: 503, and the status says so.
    let partial = Keys {
        secrets: [("app_secret", "secret")].into(),
        ..Default::default()
    };
    let r = run(&w, &partial, "GET", "hub.mode=subscribe", &[], b"", 0).unwrap_err();
    assert_eq!(r.reason, Reason::NotGranted);
    assert_eq!(
        problem(&w, &partial, "ch", None).as_deref(),
        Some("webhook secret `verify_token` not granted")
    );
}

#[test]
fn no_scheme_passes_everything_and_stats_count_by_reason() {
    let w = WebhookSpec::default();
    let ok = run(&w, &Keys::default(), "POST", "", &[], b"anything", 0);
    assert_eq!(
        ok,
        Ok(Outcome::Pass(Verified {
            scheme: SchemeName::None
        }))
    );
    let stats = VerifyStats::default();
    stats.record(Reason::Missing);
    stats.record(Reason::Stale);
    stats.record(Reason::Stale);
    let s = WebhookStatus::new("hmac-sha256", None, None, &stats);
    assert_eq!(s.rejected, 3);
    assert_eq!(s.rejected_by_reason["stale"], 2);
    assert_eq!(s.rejected_by_reason["not-granted"], 0);
    // One log line per reason per second; the next names the skipped ones.
    assert_eq!(stats.log_now(Reason::Invalid, 5_000), Some(0));
    assert_eq!(stats.log_now(Reason::Invalid, 5_500), None);
    assert_eq!(stats.log_now(Reason::Invalid, 5_999), None);
    assert_eq!(stats.log_now(Reason::Missing, 5_999), Some(0));
    assert_eq!(stats.log_now(Reason::Invalid, 6_000), Some(2));
    assert_eq!(stats.log_now(Reason::Invalid, 6_001), None);
}

#[test]
fn an_optional_endpoint_without_its_key_is_refused_but_no_problem() {
    let w = spec(
        "[verify]\nscheme = \"ed25519\"\nheader = \"X-Signature-Ed25519\"\npublic_key = \"config:public_key\"\nsigned = \"{timestamp}{body}\"\ntimestamp_header = \"X-Signature-Timestamp\"\noptional = true",
    );
    // No key: pushes are refused (503), yet the channel is configured.
    assert_eq!(problem(&w, &Keys::default(), "ch", None), None);
    let h = headers(&[
        ("x-signature-ed25519", DISCORD_SIG),
        ("x-signature-timestamp", "1700000000"),
    ]);
    let push = Push {
        method: "POST",
        query: "",
        headers: &h,
        body: br#"{"type":1}"#,
    };
    let r = check(&w, &Keys::default(), "ch", None, &push, 1_700_000_000_000).unwrap_err();
    assert_eq!(r.reason, Reason::NotGranted);
    // A key that is set but is no key is a problem even so.
    let bad = Keys {
        config: [("public_key", "not hex")].into(),
        ..Keys::default()
    };
    assert!(problem(&w, &bad, "ch", None).is_some_and(|p| p.contains("is not hex")));
    // The right key verifies.
    let good = Keys {
        config: [("public_key", RFC_PUBLIC)].into(),
        ..Keys::default()
    };
    assert_eq!(problem(&w, &good, "ch", None), None);
    assert!(check(&w, &good, "ch", None, &push, 1_700_000_000_000).is_ok());
}
