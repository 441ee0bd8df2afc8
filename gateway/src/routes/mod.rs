//! REST handlers under `/api/v1`, plus the operators' endpoints.

pub mod auth;
pub mod avatars;
pub mod chats;
pub mod contacts;
pub mod friends;
pub mod groups;
pub mod internal;
pub mod ops;
pub mod users;
