//! Chat commands forwarded to the node that owns the chat, over HTTP:
//! `POST {node url}/internal/v1/chats/{chat_id}/commands` with a peer
//! token (an EdDSA JWT for audience `parley-peer`, signed with the key that
//! every node of a cluster shares). The answer is the command's
//! `Result<ChatReply, RemoteError>` as JSON.
//!
//! awc's client is not `Send`, while the engine's futures are: requests
//! are handed to a thread of their own that runs the client.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::EngineError;
use engine::cluster::NodeInfo;
use engine::peers::{ChatCommand, ChatReply, Peers, RemoteError};
use tokio::sync::{mpsc, oneshot};

use crate::auth::TokenKeys;

/// The internal endpoint's path below a node's base URL.
pub const CHAT_COMMANDS_PATH: &str = "/internal/v1/chats";
/// How long a forwarded command may take, transport included.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Forwarded commands waiting for the client thread; beyond this a
/// command fails at once as unavailable instead of queueing.
const QUEUE: usize = 4096;
/// Largest answer accepted from a peer (a group change lists its members).
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// One request for the client thread.
struct Job {
    url: String,
    token: String,
    body: Vec<u8>,
    answer: oneshot::Sender<Result<Result<ChatReply, RemoteError>, String>>,
}

/// Forwards chat commands to other nodes over HTTP.
pub struct HttpPeers {
    jobs: mpsc::Sender<Job>,
    keys: Arc<TokenKeys>,
    /// This node's name, the subject of its peer tokens.
    node: String,
}

impl HttpPeers {
    /// Starts the client thread; it ends when this value is dropped.
    pub fn start(keys: Arc<TokenKeys>, node: String) -> std::io::Result<Self> {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new().name("parley-peers".into()).spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let client = awc::Client::builder().timeout(FORWARD_TIMEOUT).finish();
                while let Some(job) = queue.recv().await {
                    let client = client.clone();
                    actix_web::rt::spawn(async move {
                        let result = send(&client, &job.url, &job.token, job.body).await;
                        let _ = job.answer.send(result);
                    });
                }
            });
        })?;
        Ok(HttpPeers { jobs, keys, node })
    }
}

async fn send(
    client: &awc::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
) -> Result<Result<ChatReply, RemoteError>, String> {
    let mut response = client
        .post(url)
        .bearer_auth(token)
        .content_type("application/json")
        .send_body(body)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let bytes = response.body().limit(MAX_ANSWER_BYTES).await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

#[async_trait]
impl Peers for HttpPeers {
    async fn forward(&self, node: &NodeInfo, chat_id: i64, command: ChatCommand) -> Result<ChatReply, EngineError> {
        let unavailable = |why: &dyn std::fmt::Display| {
            tracing::warn!(node = %node.name, chat_id, error = %why, "forwarding a chat command failed");
            EngineError::Unavailable
        };
        let token = self.keys.issue_peer(&self.node).map_err(|e| unavailable(&e))?;
        let body = serde_json::to_vec(&command).map_err(|e| unavailable(&e))?;
        let url = format!("{}{CHAT_COMMANDS_PATH}/{chat_id}/commands", node.url);
        let (answer, answered) = oneshot::channel();
        self.jobs.try_send(Job { url, token, body, answer }).map_err(|e| unavailable(&e))?;
        match answered.await {
            Ok(Ok(result)) => result.map_err(EngineError::from),
            Ok(Err(error)) => Err(unavailable(&error)),
            Err(error) => Err(unavailable(&error)),
        }
    }
}
