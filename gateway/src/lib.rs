//! Parley's gateway: the REST API, the WebSocket endpoint, health, metrics
//! and the OpenAPI document, around an [`engine::Engine`].
//!
//! [`Server::start`] runs a complete node on a listener, so tests start one
//! on `127.0.0.1:0`; the `parley` binary only parses arguments and calls it.

pub mod auth;
pub mod avatars;
pub mod config;
pub mod errors;
pub mod files;
mod forwarded;
mod heap;
pub mod limits;
pub mod notify;
pub mod openapi;
pub mod peers;
mod revocations;
mod routes;
pub mod seed;
mod signatures;
mod socket;
pub mod state;
pub mod telemetry;
mod webapp;
mod ws;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, web};
use anyhow::Context as _;
use engine::cluster::SharedState;
use engine::peers::{NoPeers, Peers};
use engine::{Adapters, Engine, Metrics};
use tracing_actix_web::TracingLogger;

use crate::auth::{Passwords, Tickets, TokenKeys};
use crate::config::Config;
use crate::state::AppState;

/// Seconds the HTTP server waits for in-flight requests on shutdown.
const SHUTDOWN_GRACE_SECS: u64 = 10;
/// How long an HTTP connection may sit idle between requests.
const HTTP_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How often idle rate-limit state is forgotten.
const RATE_LIMIT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Connections the kernel may queue for `accept`; it caps this at
/// `net.core.somaxconn` (4,096 on current kernels).
const LISTEN_BACKLOG: i32 = 65_535;

/// Binds the node's listener with an accept queue as long as the OS allows.
/// `std`'s `TcpListener::bind` asks for 128: in a connection storm the
/// queue overflowed while the workers were busy, the kernel dropped SYNs and
/// clients waited a second for the retransmit.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A running node.
pub struct Server {
    addr: SocketAddr,
    handle: ServerHandle,
    state: web::Data<AppState>,
    server: Option<actix_server::Server>,
}

impl Server {
    /// Opens storage, starts the engine and serves HTTP on `listener`.
    /// Must be called inside an actix system (`#[actix_web::main]` or `#[actix_web::test]`).
    pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<Server> {
        let addr = listener.local_addr()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let cluster = config.cluster_node()?;
        let keys_dir = config.keys_dir();
        std::fs::create_dir_all(&keys_dir).with_context(|| format!("creating {}", keys_dir.display()))?;
        let keys = Arc::new(TokenKeys::load_or_create(&keys_dir)?);
        let passwords = Passwords::new(&config.auth, &keys_dir)?;
        let stores = config.open_stores().await?;
        let metrics = Arc::new(Metrics::new().context("registering metrics")?);
        let node_name = cluster.as_ref().map_or_else(|| addr.to_string(), |node| node.name.clone());
        let shared = SharedState::open(config.redis.as_ref(), &node_name, config.engine.generator_id)
            .await
            .context("opening the shared state")?;
        let peers: Arc<dyn Peers> = match &cluster {
            Some(node) => Arc::new(peers::HttpPeers::start(keys.clone(), node.name.clone())?),
            None => Arc::new(NoPeers),
        };
        let tickets = Tickets::new(shared.tickets.clone());
        let (revoked_sessions, auth_counts) = (shared.revoked.clone(), shared.counts.clone());
        let engine = Engine::start(config.engine.clone(), stores, metrics, Adapters { shared, cluster, peers })
            .await
            .context("starting the engine")?;
        let json_limit = config.limits.max_json_body_bytes;
        let contacts = web::Data::new(routes::contacts::ContactChanges::new(&config).context("configuring notifiers")?);
        let pruning_contacts = contacts.clone();
        let state =
            web::Data::new(AppState::new(engine, config, keys, passwords, tickets, revoked_sessions, auth_counts));
        let restored = revocations::restore(&state).await.context("loading the ended sessions")?;
        tracing::info!(restored, "ended sessions loaded");
        actix_web::rt::spawn(revocations::keep_complete(state.clone()));
        if state.config.heap_trim_secs > 0 {
            actix_web::rt::spawn(heap::keep_trimming(Duration::from_secs(state.config.heap_trim_secs)));
        }

        let avatar_permits = web::Data::new(avatars::AvatarPermits::new());
        let app_state = state.clone();
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let builder = actix_server::Server::build();
        let shutdown = builder.graceful_shutdown_signal();
        let server = builder
            .workers(workers)
            // No cap below the configured one: the default is 25,000 per worker.
            .max_concurrent_connections(state.config.limits.max_connections.div_ceil(workers))
            .disable_signals()
            .shutdown_timeout(SHUTDOWN_GRACE_SECS)
            .listen("parley", listener, move || {
                let trusted_proxies = app_state.config.limits.trusted_proxies.clone();
                let app = App::new()
                    .app_data(app_state.clone())
                    .app_data(contacts.clone())
                    .app_data(avatar_permits.clone())
                    .app_data(web::JsonConfig::default().limit(json_limit).error_handler(errors::json_error))
                    .app_data(web::QueryConfig::default().error_handler(errors::query_error))
                    .app_data(web::PathConfig::default().error_handler(errors::path_error))
                    .wrap(TracingLogger::default())
                    // Outermost: the request log reads what it leaves.
                    .wrap_fn(move |mut req, service| {
                        forwarded::sanitize(&mut req, &trusted_proxies);
                        service.call(req)
                    })
                    .configure(routes_config);
                let http =
                    socket::HttpSettings { keep_alive: HTTP_KEEP_ALIVE, local_addr: addr, shutdown: shutdown.clone() };
                socket::dispatcher(app, app_state.clone(), http)
            })?
            .run();
        let handle = server.handle();

        let pruning = state.clone();
        actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(RATE_LIMIT_PRUNE_INTERVAL);
            loop {
                tick.tick().await;
                pruning.prune_rate_limits();
                pruning_contacts.prune_rate_limits();
            }
        });
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "parley listening");
        Ok(Server { addr, handle, state, server: Some(server) })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until [`Server::shutdown`] is called from elsewhere or a
    /// signal arrives (SIGTERM, SIGINT): then drains gracefully.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let server = self.server.take().context("server already running")?;
        let running = actix_web::rt::spawn(server);
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        self.shutdown().await;
        running.await.context("server task")??;
        Ok(())
    }

    /// Graceful shutdown: readiness turns false, clients are closed with
    /// 1001 (going away), in-flight requests finish, the engine stops.
    pub async fn shutdown(&self) {
        self.state.begin_shutdown();
        // Give connection actors a moment to send their close frames.
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        self.handle.stop(true).await;
        self.state.engine.stop().await;
        tracing::info!("parley stopped");
    }

    /// Runs the HTTP server in the background (for tests).
    pub fn spawn(mut self) -> Self {
        if let Some(server) = self.server.take() {
            actix_web::rt::spawn(server);
        }
        self
    }
}

/// Every route of the node.
fn routes_config(cfg: &mut web::ServiceConfig) {
    use routes::{auth, chats, friends, groups, ops, users};
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route(
            &format!("{}/{{chat_id}}/commands", peers::CHAT_COMMANDS_PATH),
            web::post().to(routes::internal::chat_command),
        )
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .service(
            web::scope(protocol::API_PREFIX)
                .route("/openapi.json", web::get().to(ops::openapi))
                .route("/auth/register", web::post().to(auth::register))
                .route("/auth/login", web::post().to(auth::login))
                .route("/auth/refresh", web::post().to(auth::refresh))
                .route("/auth/logout", web::post().to(auth::logout))
                .route("/auth/logout-others", web::post().to(auth::logout_others))
                .route("/auth/ws-ticket", web::post().to(auth::ws_ticket))
                .route("/auth/jwks", web::get().to(auth::jwks))
                .route("/me", web::get().to(users::me))
                .route("/me/avatar", web::put().to(routes::avatars::put_avatar))
                .route("/me/avatar", web::delete().to(routes::avatars::delete_avatar))
                .route("/media/{key:.*}", web::get().to(routes::avatars::media))
                .route("/me", web::patch().to(users::update_me))
                .route("/me/presence", web::put().to(users::set_presence))
                .route("/me/email", web::post().to(routes::contacts::request_email))
                .route("/me/email", web::delete().to(routes::contacts::delete_email))
                .route("/me/email/confirm", web::post().to(routes::contacts::confirm_email))
                .route("/me/phone", web::post().to(routes::contacts::request_phone))
                .route("/me/phone", web::delete().to(routes::contacts::delete_phone))
                .route("/me/phone/confirm", web::post().to(routes::contacts::confirm_phone))
                .route("/users/search", web::get().to(users::search))
                .route("/users/{user_id}", web::get().to(users::user))
                .route("/friends", web::get().to(friends::friends))
                .route("/friends/requests", web::post().to(friends::request))
                .route("/friends/requests/incoming", web::get().to(friends::incoming))
                .route("/friends/requests/outgoing", web::get().to(friends::outgoing))
                .route("/friends/requests/{user_id}", web::delete().to(friends::cancel))
                .route("/friends/requests/{user_id}/accept", web::post().to(friends::accept))
                .route("/friends/requests/{user_id}/decline", web::post().to(friends::decline))
                .route("/friends/{user_id}", web::delete().to(friends::remove))
                .route("/blocks", web::get().to(friends::blocked))
                .route("/blocks/{user_id}", web::put().to(friends::block))
                .route("/blocks/{user_id}", web::delete().to(friends::unblock))
                .route("/chats", web::get().to(chats::list))
                .route("/chats/direct", web::post().to(chats::open_direct))
                .route("/chats/groups", web::post().to(groups::create))
                .route("/chats/{chat_id}", web::get().to(chats::get))
                .route("/chats/{chat_id}", web::patch().to(groups::rename))
                .route("/chats/{chat_id}/avatar", web::put().to(groups::put_avatar))
                .route("/chats/{chat_id}/avatar", web::delete().to(groups::delete_avatar))
                .route("/chats/{chat_id}/members", web::get().to(groups::members))
                .route("/chats/{chat_id}/members", web::post().to(groups::add_members))
                .route("/chats/{chat_id}/members/{user_id}", web::delete().to(groups::remove_member))
                .route("/chats/{chat_id}/members/{user_id}/role", web::put().to(groups::set_role))
                .route("/chats/{chat_id}/owner", web::post().to(groups::transfer))
                .route("/chats/{chat_id}/messages", web::get().to(chats::history))
                .route("/chats/{chat_id}/messages/{message_id}/receipts", web::get().to(groups::receipts))
                .route("/ws", web::get().to(ws::connect))
                .default_service(web::to(not_found)),
        )
        .configure(webapp::routes)
        .default_service(web::to(not_found));
}

async fn not_found() -> Result<actix_web::HttpResponse, errors::ApiError> {
    Err(errors::ApiError::NotFound)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
