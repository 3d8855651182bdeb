//! Cluster mode (PostgreSQL): a socket channel starts only once its
//! account's lease is held. One gateway on a real PostgreSQL (a cluster of
//! one) runs the `ws-probe` socket channel with several accounts against a
//! local WebSocket server; every account takes its lease, opens its
//! session, and none ever reports "another node of the cluster holds this
//! account's lease" (which the start used to hit when it ran before the
//! lease keeper had taken the lease).

use std::time::Duration;

use pincer::channels::ChannelState;
use pincer::channels::access::DmPolicy;
use pincer::plugins::PluginSettings;
use pincer::plugins::manifest::AccountSettings;
use pincer_tests::gateway::TestGateway;
use pincer_tests::install_plugin;
use pincer_tests::postgres::TestPostgres;
use pincer_tests::ws_server::{Seen, WsServer};

const PLUGIN: &str = "ws-probe";
/// Accounts besides `default`: each is its own race between the start and
/// the lease keeper.
const ACCOUNTS: &[&str] = &["a", "b", "c", "d", "e"];
/// The hang guard of the wait for the sessions (never a timing assertion).
const GUARD: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_channel_on_postgres_never_starts_before_its_lease() {
    let pg = TestPostgres::start();
    let url = pg.database("socket_lease");
    let mut server = WsServer::start().await;

    let (mut opts, dir) = TestGateway::options();
    opts.store = TestPostgres::config(&url);
    std::fs::create_dir_all(&opts.plugins_dir).expect("plugins dir");
    install_plugin(&opts.plugins_dir, PLUGIN, PLUGIN);
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("cidrs");
    let mut settings = PluginSettings {
        dm_policy: DmPolicy::Open,
        allowed_hosts: Some(vec![format!("ws://127.0.0.1:{}", server.addr.port())]),
        ..Default::default()
    };
    settings
        .config
        .insert("url".into(), server.url("/gateway?v=1"));
    for a in ACCOUNTS {
        settings
            .accounts
            .insert(a.to_string(), AccountSettings::default());
    }
    opts.plugins.insert(PLUGIN.into(), settings);
    let mut gw = TestGateway::start_with(opts, dir).await;

    // Every account opens its session (one connection each).
    let want = ACCOUNTS.len() + 1;
    let mut accepted = 0;
    tokio::time::timeout(GUARD, async {
        while accepted < want {
            if let Seen::Accepted { .. } = server.next().await {
                accepted += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {accepted} of {want} sessions opened"));

    let keys: Vec<String> = std::iter::once(PLUGIN.to_string())
        .chain(ACCOUNTS.iter().map(|a| format!("{PLUGIN}:{a}")))
        .collect();
    for key in &keys {
        let runner = gw
            .gw()
            .runtime
            .channels
            .get(key)
            .unwrap_or_else(|| panic!("runner {key}"));
        // The session is open, so the start that opened it ran under the
        // lease: the lease is held and the account runs.
        assert!(runner.fence().is_some(), "{key}: no lease held");
        let status = runner.status();
        assert_eq!(status.state, ChannelState::Running, "{key}: {status:?}");
        // The last error is sticky: a start that ran before the lease
        // would have left its refusal here.
        let error = status.last_error.unwrap_or_default();
        assert!(
            !error.contains("lease"),
            "{key}: a start ran before the account's lease was held: {error}"
        );
        assert_eq!(runner.fenced_writes(), 0, "{key}");
    }
    gw.stop().await;
}
