//! One XMPP client session over WebSocket: handshake, SASL ANONYMOUS login, bind, session, presence;
//! then a writer task and a reader task, as `run.rs` does for Parley's protocol.

use std::time::{Duration, Instant};

use actix_codec::Framed;
use anyhow::{Context, bail};
use awc::BoxedSocket;
use awc::ws::{self, Codec};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::stanza;
use crate::run::spawn_writer;

/// Longest wait for the handshake and for each answer during setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

type Socket = Framed<BoxedSocket, Codec>;

/// Where to connect and as what.
#[derive(Clone, Debug)]
pub struct Target {
    /// `ws://127.0.0.1:PORT/ws`
    pub url: String,
    /// The XMPP domain, e.g. `localhost`.
    pub domain: String,
}

/// A logged-in session whose frames are not yet handed to a reader.
pub struct Session {
    /// The full JID the server bound.
    pub jid: String,
    /// From the handshake until the session was established.
    pub setup: Duration,
    socket: Socket,
}

/// A client whose connection pool does not cap the number of WebSockets.
pub fn client() -> awc::Client {
    awc::Client::builder().connector(awc::Connector::new().limit(0)).timeout(SETUP_TIMEOUT).finish()
}

impl Session {
    /// Connects and logs in anonymously, binding resource `resource`, then sends initial presence.
    pub async fn login(client: &awc::Client, target: &Target, resource: &str) -> anyhow::Result<Session> {
        let started = Instant::now();
        let (response, socket) = client
            .ws(&target.url)
            .protocols(["xmpp"])
            .max_frame_size(1 << 20)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("WebSocket handshake: {e}"))?;
        let protocol = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
        if protocol != Some("xmpp") {
            bail!("server did not accept the xmpp subprotocol ({protocol:?})");
        }
        let mut session = Session { jid: String::new(), setup: Duration::ZERO, socket };
        session.send(stanza::open(&target.domain)).await?;
        session.expect("open").await?;
        session.expect("features").await?;
        session.send(stanza::auth_anonymous().to_owned()).await?;
        let answer = session.next_text().await?;
        if stanza::root(&answer).map(|t| t.name) != Some("success") {
            bail!("SASL ANONYMOUS refused: {answer}");
        }
        session.send(stanza::open(&target.domain)).await?;
        session.expect("open").await?;
        session.expect("features").await?;
        session.send(stanza::bind("bind", resource)).await?;
        let bound = session.expect_result("bind").await?;
        session.jid = stanza::child_text(&bound, "jid").context("bind result without a jid")?.into_owned();
        session.send(stanza::session("session")).await?;
        session.expect_result("session").await?;
        session.send(stanza::presence().to_owned()).await?;
        session.setup = started.elapsed();
        Ok(session)
    }

    /// Sends one stanza.
    pub async fn send(&mut self, text: String) -> anyhow::Result<()> {
        self.socket.send(ws::Message::Text(text.into())).await.context("sending a frame")
    }

    /// The next text frame, answering pings; fails on close, error or after 30 s.
    pub async fn next_text(&mut self) -> anyhow::Result<String> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let frame =
                tokio::time::timeout_at(deadline.into(), self.socket.next()).await.context("no answer within 30 s")?;
            match frame {
                Some(Ok(ws::Frame::Text(bytes))) => {
                    return String::from_utf8(bytes.to_vec()).context("frame is not UTF-8");
                }
                Some(Ok(ws::Frame::Ping(bytes))) => self.socket.send(ws::Message::Pong(bytes)).await?,
                Some(Ok(ws::Frame::Close(reason))) => bail!("server closed the WebSocket: {reason:?}"),
                Some(Ok(_)) => {}
                Some(Err(error)) => bail!("WebSocket error: {error}"),
                None => bail!("connection closed"),
            }
        }
    }

    /// Waits for a frame whose root element is `name`; a stream error fails.
    async fn expect(&mut self, name: &str) -> anyhow::Result<String> {
        let text = self.next_text().await?;
        match stanza::root(&text).map(|t| t.name) {
            Some(found) if found == name => Ok(text),
            _ => bail!("expected <{name}>, got {text}"),
        }
    }

    /// Waits for the `result` answer to the IQ with `id`, skipping other frames.
    pub async fn expect_result(&mut self, id: &str) -> anyhow::Result<String> {
        loop {
            let text = self.next_text().await?;
            let Some(tag) = stanza::root(&text) else { continue };
            if tag.name == "iq" && tag.attr("id").as_deref() == Some(id) {
                if tag.attr("type").as_deref() == Some("result") {
                    return Ok(text);
                }
                bail!("IQ {id} failed: {text}");
            }
            if tag.name == "error" || tag.name == "close" {
                bail!("stream ended while waiting for IQ {id}: {text}");
            }
        }
    }

    /// Waits for a frame that `wanted` accepts, skipping others; fails on a stream error or close.
    pub async fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        loop {
            let text = self.next_text().await?;
            if wanted(&text) {
                return Ok(text);
            }
            if matches!(stanza::root(&text).map(|t| t.name), Some("error" | "close")) {
                bail!("stream ended while waiting for {what}: {text}");
            }
        }
    }

    /// Hands the session to a writer task and a reader task; `on_text` gets every text frame,
    /// `on_lost` is called once if the connection ends before the returned sender closes it.
    pub fn spawn(
        self,
        mut on_text: impl FnMut(&str) + 'static,
        on_lost: impl FnOnce() + 'static,
    ) -> mpsc::UnboundedSender<ws::Message> {
        let (sink, mut stream) = self.socket.split();
        let tx = spawn_writer(sink);
        let pong = tx.clone();
        actix_rt::spawn(async move {
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(ws::Frame::Text(bytes)) => on_text(&String::from_utf8_lossy(&bytes)),
                    Ok(ws::Frame::Ping(bytes)) => {
                        let _ = pong.send(ws::Message::Pong(bytes));
                    }
                    Ok(ws::Frame::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if !pong.is_closed() {
                on_lost();
            }
        });
        tx
    }
}

/// Ends a session politely: `<close/>`, then a WebSocket close.
pub fn hang_up(tx: &mpsc::UnboundedSender<ws::Message>) {
    let _ = tx.send(ws::Message::Text(stanza::close().into()));
    let _ = tx.send(ws::Message::Close(Some(ws::CloseCode::Normal.into())));
}
