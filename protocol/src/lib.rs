//! Parley's client protocol: WebSocket frames, REST bodies and their version.
//!
//! This crate is the contract between Parley and every client. It has no
//! runtime, storage or HTTP dependencies so that any Rust client (the load
//! tests, a CLI, a future SDK) can depend on it alone.

pub mod ids;
pub mod limits;
pub mod rest;
pub mod ws;

pub use ids::{ChatId, MessageId, UserId};

/// Version of the protocol described by this crate.
pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket subprotocol a v1 client must offer (`Sec-WebSocket-Protocol`).
pub const WS_SUBPROTOCOL: &str = "parley.v1";

/// Path prefix of the v1 REST API.
pub const API_PREFIX: &str = "/api/v1";
