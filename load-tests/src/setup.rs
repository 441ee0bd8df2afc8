//! Setup over REST: registers and logs in the population, makes the
//! friendships and groups the scenario asks for, and records it all in a
//! `Plan` that the driver (or each worker process) connects from.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use protocol::ids::UserId;
use protocol::rest::{
    AddMembers, ChatSummary, CreateGroup, FriendRequest, LoginRequest, OpenDirectChat, Problem, RegisterRequest,
    SeededAccounts, TokenResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::scenario::{Pairs, Scenario};

const PASSWORD: &str = "parley-load-password";
/// Longest wait for one HTTP request or one WebSocket handshake.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most members one create or add request may name (the server's limit).
const MEMBERS_PER_REQUEST: usize = 256;

/// Everything a driver needs to connect and act: who the users are, their
/// tokens, which server each one talks to, and the chats between them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Unique per run: usernames are `<prefix>_<n>`, client message IDs start with it.
    pub prefix: String,
    /// Base URLs; user *i* talks to `urls[i % urls.len()]`.
    pub urls: Vec<String>,
    pub users: Vec<PlannedUser>,
    pub chats: Vec<PlannedChat>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedUser {
    pub id: i64,
    /// One access token per device: each device is its own WebSocket.
    pub tokens: Vec<String>,
    /// Indices into `Plan::chats` of the direct chats this user sends to
    /// (ring: the one with the next user; random: one per friend).
    pub directs: Vec<usize>,
    /// Indices into `Plan::chats` of the user's groups.
    pub groups: Vec<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedChat {
    pub id: i64,
    /// Indices into `Plan::users`.
    pub members: Vec<usize>,
}

impl Plan {
    pub fn url_of(&self, user: usize) -> &str {
        &self.urls[user % self.urls.len()]
    }
}

pub fn rest_base(url: &str) -> String {
    format!("{}/api/v1", url.trim_end_matches('/'))
}

pub fn ws_url(url: &str) -> String {
    format!("{}/ws", rest_base(url).replacen("http", "ws", 1))
}

/// Sends `request` (with a JSON `body`, if any) and decodes a JSON answer; a non-2xx status is an error.
pub async fn call<T: DeserializeOwned>(
    request: awc::ClientRequest,
    body: Option<serde_json::Value>,
) -> anyhow::Result<T> {
    call_or_problem(request, body).await?.map_err(|(what, problem)| {
        anyhow::anyhow!("{what}: HTTP {}: {} ({})", problem.status, problem.code, problem.detail.unwrap_or_default())
    })
}

/// Like [`call`], but a problem answer (a non-2xx status) is returned as
/// `Err` next to the request's name, for callers that expect some.
async fn call_or_problem<T: DeserializeOwned>(
    request: awc::ClientRequest,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Result<T, (String, Problem)>> {
    let what = format!("{} {}", request.get_method(), request.get_uri());
    let sent = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    };
    let mut response = sent.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let bytes = response.body().limit(8 << 20).await.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    if !response.status().is_success() {
        let problem = serde_json::from_slice(&bytes).with_context(|| {
            format!("{what}: HTTP {} without a problem body: {}", response.status(), String::from_utf8_lossy(&bytes))
        })?;
        return Ok(Err((what, problem)));
    }
    serde_json::from_slice(if bytes.is_empty() { b"null" } else { &bytes })
        .map(Ok)
        .with_context(|| format!("{what}: bad response body"))
}

/// Runs `futures` at most `limit` at a time; the results keep their order.
pub async fn bounded<T, F: Future<Output = anyhow::Result<T>>>(
    limit: usize,
    futures: Vec<F>,
) -> anyhow::Result<Vec<T>> {
    stream::iter(futures).buffered(limit).collect::<Vec<_>>().await.into_iter().collect()
}

/// A short run-unique username prefix (lowercase hex of the clock and PID).
fn user_prefix() -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("lt{:x}{:x}", millis & 0xffff_ffff, std::process::id() & 0xfff)
}

struct Account {
    id: UserId,
    /// One access token per device.
    tokens: Vec<String>,
}

impl Account {
    /// The first device's token, which setup's REST calls use.
    fn token(&self) -> &str {
        &self.tokens[0]
    }
}

/// Registers `username` and logs in once per device, as each device of a
/// real user does: every device gets its own login session.
async fn create_user(client: &awc::Client, base: String, username: String, devices: usize) -> anyhow::Result<Account> {
    let register =
        RegisterRequest { username: username.clone(), password: PASSWORD.into(), display_name: username.clone() };
    let _: serde_json::Value =
        call(client.post(format!("{base}/auth/register")), Some(serde_json::to_value(register)?)).await?;
    let mut logins = Vec::with_capacity(devices);
    for _ in 0..devices {
        let login = LoginRequest { username: username.clone(), password: PASSWORD.into() };
        let tokens: TokenResponse =
            call(client.post(format!("{base}/auth/login")), Some(serde_json::to_value(login)?)).await?;
        logins.push(tokens);
    }
    let id = logins.first().map(|t| t.user_id).context("no device to log in")?;
    Ok(Account { id, tokens: logins.into_iter().map(|t| t.access_token).collect() })
}

/// Makes `from` and `to` friends; friends already (seeded accounts of an
/// earlier run) is fine.
async fn befriend(client: &awc::Client, base: String, from: &Account, to: &Account) -> anyhow::Result<()> {
    let request = serde_json::to_value(FriendRequest { user_id: to.id })?;
    let sent: Result<serde_json::Value, _> =
        call_or_problem(client.post(format!("{base}/friends/requests")).bearer_auth(from.token()), Some(request))
            .await?;
    match sent {
        Ok(_) => {}
        Err((_, problem)) if problem.code == "already_friends" => return Ok(()),
        Err((what, problem)) => bail!("{what}: HTTP {}: {}", problem.status, problem.code),
    }
    let _: serde_json::Value =
        call(client.post(format!("{base}/friends/requests/{}/accept", from.id)).bearer_auth(to.token()), None).await?;
    Ok(())
}

async fn open_chat(client: &awc::Client, base: &str, from: &Account, to: &Account) -> anyhow::Result<i64> {
    let open = serde_json::to_value(OpenDirectChat { user_id: to.id })?;
    let chat: ChatSummary =
        call(client.post(format!("{base}/chats/direct")).bearer_auth(from.token()), Some(open)).await?;
    Ok(chat.id.0)
}

/// Creates a group of `members` (the first is the owner, already friends with the rest).
async fn create_group(
    client: &awc::Client,
    base: &str,
    name: String,
    owner: &Account,
    members: Vec<UserId>,
) -> anyhow::Result<i64> {
    let mut chunks = members.chunks(MEMBERS_PER_REQUEST);
    let first = CreateGroup { name, members: chunks.next().map(<[UserId]>::to_vec).unwrap_or_default() };
    let chat: ChatSummary = call(
        client.post(format!("{base}/chats/groups")).bearer_auth(owner.token()),
        Some(serde_json::to_value(first)?),
    )
    .await?;
    for chunk in chunks {
        let add = serde_json::to_value(AddMembers { members: chunk.to_vec() })?;
        let _: ChatSummary =
            call(client.post(format!("{base}/chats/{}/members", chat.id)).bearer_auth(owner.token()), Some(add))
                .await?;
    }
    Ok(chat.id.0)
}

/// The friendships `[friends]` asks for among `n` users, each pair once.
/// Ring: pair *i* is (*i*, *i* + 1), and with two users the ring is one
/// friendship. Random: each user picks `degree` others by the scenario's seed.
pub fn friend_pairs(scenario: &Scenario, n: usize) -> Vec<(usize, usize)> {
    match scenario.friends.pairs {
        Pairs::None => Vec::new(),
        Pairs::Ring => (0..if n == 2 { 1 } else { n }).map(|i| (i, (i + 1) % n)).collect(),
        Pairs::Random => {
            use rand::{Rng, SeedableRng};
            let degree = scenario.friends.degree.unwrap_or(1).min(n.saturating_sub(1));
            let mut rng = rand::rngs::StdRng::seed_from_u64(scenario.seed);
            let mut seen = HashSet::new();
            let mut pairs = Vec::new();
            for a in 0..n {
                let mut picked = 0;
                while picked < degree {
                    let b = rng.gen_range(0..n);
                    if b == a {
                        continue;
                    }
                    picked += 1;
                    if seen.insert((a.min(b), a.max(b))) {
                        pairs.push((a, b));
                    }
                }
            }
            pairs
        }
    }
}

/// The members of group `g`: `size` consecutive users (wrapping), starting at `g * size`.
pub fn group_members(g: usize, size: usize, users: usize) -> Vec<usize> {
    (0..size).map(|k| (g * size + k) % users).collect()
}

/// Registers the population (or takes the first `users` of `seeded`, made
/// by `parley seed`) and makes its friendships and groups.
pub async fn setup(
    scenario: &Scenario,
    urls: &[String],
    client: &awc::Client,
    seeded: Option<SeededAccounts>,
) -> anyhow::Result<Plan> {
    let prefix = user_prefix();
    let n = scenario.population.users;
    let devices = scenario.population.devices;
    let limit = scenario.population.setup_concurrency;
    let base = |user: usize| rest_base(&urls[user % urls.len()]);

    let accounts = match seeded {
        Some(seeded) => {
            if seeded.users.len() < n {
                bail!("--accounts has {} accounts; the scenario needs {n}", seeded.users.len());
            }
            eprintln!("setup: using {n} seeded accounts, {devices} device(s) each");
            // A seeded account has one login session and a password nobody
            // knows: its devices share the access token (the server takes
            // any number of sockets per token).
            let first = seeded.users.into_iter().take(n);
            first.map(|a| Account { id: a.tokens.user_id, tokens: vec![a.tokens.access_token; devices] }).collect()
        }
        None => {
            eprintln!("setup: registering {n} users with prefix {prefix}, {devices} login(s) each");
            let created = (0..n).map(|i| create_user(client, base(i), format!("{prefix}_{i}"), devices));
            bounded(limit, created.collect()).await?
        }
    };
    let mut users: Vec<PlannedUser> = accounts
        .iter()
        .map(|a| PlannedUser { id: a.id.0, tokens: a.tokens.clone(), directs: Vec::new(), groups: Vec::new() })
        .collect();
    let mut chats = Vec::new();
    let mut friends = HashSet::new();

    let pairs = friend_pairs(scenario, n);
    if !pairs.is_empty() {
        eprintln!("setup: befriending users, {:?} ({} pairs)", scenario.friends.pairs, pairs.len());
        let accounts = &accounts;
        let opened = bounded(
            limit,
            pairs
                .iter()
                .map(|&(a, b)| async move {
                    befriend(client, base(a), &accounts[a], &accounts[b]).await?;
                    open_chat(client, &base(a), &accounts[a], &accounts[b]).await
                })
                .collect(),
        )
        .await?;
        let ring = scenario.friends.pairs == Pairs::Ring;
        for (&(a, b), id) in pairs.iter().zip(opened) {
            friends.insert((a.min(b), a.max(b)));
            users[a].directs.push(chats.len());
            // In a ring each user sends to the next one only (the last to the first).
            if !ring || users[b].directs.is_empty() {
                users[b].directs.push(chats.len());
            }
            chats.push(PlannedChat { id, members: vec![a, b] });
        }
    }

    if let Some(groups) = &scenario.groups {
        eprintln!("setup: creating {} groups of {} members", groups.count, groups.size);
        for g in 0..groups.count {
            let members = group_members(g, groups.size, n);
            let owner = members[0];
            let missing: Vec<usize> =
                members[1..].iter().copied().filter(|&m| !friends.contains(&(owner.min(m), owner.max(m)))).collect();
            let befriended = missing.iter().map(|&m| befriend(client, base(owner), &accounts[owner], &accounts[m]));
            bounded(limit, befriended.collect()).await?;
            friends.extend(missing.iter().map(|&m| (owner.min(m), owner.max(m))));
            let ids = members[1..].iter().map(|&m| accounts[m].id).collect();
            let id = create_group(client, &base(owner), format!("{prefix} group {g}"), &accounts[owner], ids).await?;
            for &m in &members {
                users[m].groups.push(chats.len());
            }
            chats.push(PlannedChat { id, members });
        }
    }
    Ok(Plan { prefix, urls: urls.to_vec(), users, chats })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(friends: &str) -> Scenario {
        let text = format!(
            "seed = 7\n[population]\nusers = 50\n[friends]\n{friends}\n[[phases]]\nname = \"p\"\nduration_secs = 1\nrate_per_sec = 1\n"
        );
        Scenario::parse(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn random_friends_give_everyone_friends_without_duplicates_and_repeat_by_seed() {
        let random = scenario("pairs = \"random\"\ndegree = 3");
        let pairs = friend_pairs(&random, 50);
        let mut friends = vec![0; 50];
        let mut seen = HashSet::new();
        for &(a, b) in &pairs {
            assert_ne!(a, b, "nobody befriends themselves");
            assert!(seen.insert((a.min(b), a.max(b))), "pair {a}-{b} twice");
            friends[a] += 1;
            friends[b] += 1;
        }
        assert!(friends.iter().all(|&f| f >= 3), "everyone picked 3: {friends:?}");
        assert!(pairs.len() > 50 * 3 / 2 && pairs.len() <= 50 * 3);
        assert_eq!(pairs, friend_pairs(&random, 50), "same seed, same graph");
        assert_eq!(friend_pairs(&scenario("pairs = \"ring\""), 50).len(), 50);
        assert!(friend_pairs(&scenario("pairs = \"none\""), 50).is_empty());
    }

    #[test]
    fn random_friends_need_a_degree_and_only_they_take_one() {
        let parse = |friends: &str| {
            let text = format!(
                "[population]\nusers = 5\n[friends]\n{friends}\n[[phases]]\nname = \"p\"\nduration_secs = 1\nrate_per_sec = 1\n"
            );
            Scenario::parse(&text).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(parse("pairs = \"random\"\ndegree = 2").is_ok());
        assert!(parse("pairs = \"random\"").err().unwrap_or_default().contains("needs degree"));
        assert!(parse("pairs = \"random\"\ndegree = 5").err().unwrap_or_default().contains("out of range"));
        assert!(parse("pairs = \"ring\"\ndegree = 2").err().unwrap_or_default().contains("only goes with"));
    }

    #[test]
    fn groups_take_consecutive_users_and_wrap() {
        assert_eq!(group_members(0, 3, 10), vec![0, 1, 2]);
        assert_eq!(group_members(3, 3, 10), vec![9, 0, 1]);
    }

    #[test]
    fn urls_become_rest_and_websocket_bases() {
        assert_eq!(rest_base("http://127.0.0.1:8080/"), "http://127.0.0.1:8080/api/v1");
        assert_eq!(ws_url("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/api/v1/ws");
    }
}
