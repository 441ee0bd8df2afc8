//! End-to-end tests: a small scenario against a real server started in this
//! process on a loopback port (real sockets, no mocks), set up, connected,
//! run and judged the way `parley-load run` does it.

use std::net::TcpListener;
use std::rc::Rc;
use std::time::Instant;

use gateway::Server;
use gateway::config::Config;

use crate::report::{Summary, summarize};
use crate::run::{Driver, Options, client};
use crate::scenario::Scenario;
use crate::setup::{Plan, setup};

/// Ring friends and one group of 3, every user with 3 devices: messages from
/// random devices, receipts, idleness, reconnects and churn of single devices.
/// No latency thresholds (a debug server on a shared machine); any error fails.
const THREE_DEVICES: &str = r#"
seed = 3

[population]
users = 6
devices = 3

[friends]
pairs = "ring"

[groups]
count = 1
size = 3

[[phases]]
name = "mixed"
duration_secs = 3
rate_per_sec = 30
churn_secs = 0.3

[phases.mix]
direct = 4
group = 3
seen = 1
idle = 1
reconnect = 1
churn = 1
"#;

/// Starts a server (`SERVER`, in a temp directory), runs `scenario` against
/// it in one process, and returns the plan and the summary.
fn run_against_a_server(scenario: &Scenario) -> (Plan, Summary) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config: Config = toml::from_str(SERVER).expect("server config");
    config.data_dir = dir.path().to_path_buf();
    actix_rt::System::new().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let server = Server::start(config, listener).await.expect("server starts").spawn();
        let urls = vec![format!("http://{}", server.addr())];
        let plan = setup(scenario, &urls, &client(None), None).await.expect("setup");
        let options = Options {
            source_addrs: Vec::new(),
            slice: 0..plan.users.len(),
            share: 1.0,
            worker: 0,
            exact_drain: true,
            label: "test ".into(),
        };
        let driver = Driver::connect(scenario, Rc::new(plan.clone()), options).await.expect("connect");
        let outcome = driver.run(Instant::now()).await.expect("run");
        let summary = summarize("three-devices", scenario, &plan, &[outcome], None);
        (plan, summary)
    })
}

#[test]
fn every_device_gets_every_message_and_the_check_passes() {
    let scenario = Scenario::parse(THREE_DEVICES).expect("valid");
    let (plan, summary) = run_against_a_server(&scenario);
    assert!(plan.users.iter().all(|u| u.tokens.len() == 3), "three logins per user");
    let distinct: std::collections::HashSet<&String> = plan.users.iter().flat_map(|u| &u.tokens).collect();
    assert_eq!(distinct.len(), 18, "each device has its own login");
    assert_eq!(summary.connections, 18, "one WebSocket per device");

    let check = &summary.check;
    assert!(summary.passed, "violations: {:?}, errors: {:?}", summary.violations, summary.errors);
    assert_eq!((check.failures(), check.excluded_recipients), (0, 0), "{check:?}");
    assert!(check.acked >= 20, "enough messages to mean something: {check:?}");
    assert_eq!(check.acked, summary.counts.acked);
    // Every device of every member but the sending one: 2 x 3 - 1 per direct message, 3 x 3 - 1 per group message.
    let acked = summary.counts.acked;
    let actions = |name: &str| summary.actions.get(name).copied().unwrap_or(0);
    assert_eq!(acked, actions("direct") + actions("group"), "every message sent was acked");
    let owed = 5 * actions("direct") + 8 * actions("group");
    assert_eq!(summary.counts.deliveries, owed, "deliveries = messages x entitled devices");
    assert_eq!(check.delivered, owed);
    assert!(actions("reconnect") + actions("churn") > 0, "devices came and went: {:?}", summary.actions);
}

/// The server's settings, as `scripts/load-smoke` gives them: cheap password
/// hashing, and limits far above what the scenario sends from one address.
const SERVER: &str = r#"
[auth]
argon2_memory_kib = 1024
argon2_iterations = 1

[limits]
auth_per_minute_per_ip = 10000
auth_burst_per_ip = 10000

[engine]
sends_per_second = 10000
send_burst = 10000
"#;
