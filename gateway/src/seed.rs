//! `parley seed`: creates many accounts straight in a stopped node's store
//! and signs a login for each, so load tests can skip registering over the
//! API (one Argon2 hash per account, tens of milliseconds each).
//!
//! Every seeded account gets the same password hash (one salt): these are
//! test accounts, not people. Each gets its own login session (token family
//! with a refresh token) and an access token signed with the node's key, so
//! the node accepts them exactly like tokens from `POST /auth/login`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use protocol::rest::{SeededAccount, SeededAccounts};
use storage::NewUser;

use crate::auth::{Passwords, TokenKeys};
use crate::config::Config;
use crate::routes::auth::{start_session, validate_password, validate_username};

/// Most accounts one `parley seed` run creates.
pub const MAX_SEED_ACCOUNTS: usize = 1_000_000;

/// What to seed.
#[derive(Clone, Debug)]
pub struct SeedSpec {
    /// Usernames are `<prefix>_<n>` for `n` in `0..count`.
    pub prefix: String,
    pub count: usize,
    /// The password of every account.
    pub password: String,
    /// Lifetime of the access tokens written out (load runs outlast the
    /// normal access-token lifetime).
    pub token_ttl: Duration,
}

/// Creates the accounts `spec` names in the store `config` points at and
/// returns their logins. Refuses, changing nothing, if any of the usernames
/// is taken or invalid. The node must not be running on the same data
/// directory (the binary holds a lock on it).
pub async fn seed_accounts(config: &Config, spec: &SeedSpec) -> anyhow::Result<SeededAccounts> {
    if !(1..=MAX_SEED_ACCOUNTS).contains(&spec.count) {
        bail!("count must be 1-{MAX_SEED_ACCOUNTS}, not {}", spec.count);
    }
    let usernames: Vec<String> = (0..spec.count).map(|n| format!("{}_{n}", spec.prefix)).collect();
    let last = usernames.last().map_or("", String::as_str);
    validate_username(&usernames[0])
        .and_then(|_| validate_username(last))
        .map_err(|e| anyhow::anyhow!("prefix {:?}: {e}", spec.prefix))?;
    validate_password(&spec.password).map_err(|e| anyhow::anyhow!("{e}"))?;

    let stores = config.open_stores().await?;
    for username in &usernames {
        if stores.users.user_by_username(&username.to_ascii_lowercase()).await?.is_some() {
            bail!("username {username} exists already; seed with another prefix");
        }
    }
    let metrics = Arc::new(engine::metrics::Metrics::new().context("registering metrics")?);
    let shared = engine::cluster::SharedState::open(config.redis.as_ref(), "parley-seed", config.engine.generator_id)
        .await
        .context("opening the shared state")?;
    // An offline tool: it never joins the cluster's bus, whatever the config says.
    let adapters = engine::Adapters { shared, cluster: None, peers: Arc::new(engine::peers::NoPeers) };
    let engine =
        engine::Engine::start(config.engine.clone(), stores, metrics, adapters).await.context("starting the engine")?;
    let keys_dir = config.keys_dir();
    let keys = TokenKeys::load_or_create(&keys_dir)?;
    let (password_hash, pepper_version) =
        Passwords::new(&config.auth, &keys_dir)?.hash(&spec.password).map_err(|e| anyhow::anyhow!("hashing: {e}"))?;

    let mut users = Vec::with_capacity(spec.count);
    for username in usernames {
        let user = NewUser {
            id: engine.next_id().await?,
            username_key: username.to_ascii_lowercase(),
            display_name: username.clone(),
            username,
            password_hash: password_hash.clone(),
            pepper_version,
            created_at_ms: engine::now_ms(),
        };
        let record = engine.stores().users.create_user(user).await?;
        let tokens = start_session(&engine, &keys, &config.auth, record.id, spec.token_ttl)
            .await
            .map_err(|e| anyhow::anyhow!("login for {}: {e}", record.username))?;
        users.push(SeededAccount { username: record.username, tokens });
    }
    engine.stop().await;
    Ok(SeededAccounts { users })
}
