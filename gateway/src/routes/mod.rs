//! REST handlers under `/api/v1`, plus the operators' endpoints.

pub mod auth;
pub mod chats;
pub mod ops;
pub mod users;
