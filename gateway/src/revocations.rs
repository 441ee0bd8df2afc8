//! Keeps the shared set of ended login sessions complete: the node loads it
//! from the store as it starts, and again whenever the shared state has
//! lost it (a Redis restarted empty). Until then, requests with an access
//! token answer 503 rather than let an ended session in.

use std::time::Duration;

use actix_web::web;

use crate::state::AppState;

/// How often a node checks that the shared set is still complete.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Loads the sessions ended within an access token's life from the store
/// into the shared set, each for the rest of that life, and marks the set
/// complete. Returns how many it loaded.
pub async fn restore(state: &AppState) -> anyhow::Result<usize> {
    let token_life_ms = i64::try_from(state.config.auth.access_token_ttl_secs.saturating_mul(1_000))?;
    let now = engine::now_ms();
    let ended = state.engine.stores().tokens.families_revoked_since(now.saturating_sub(token_life_ms), now).await?;
    let sessions: Vec<(i64, Duration)> = ended
        .iter()
        .map(|family| {
            let left = family.revoked_at_ms.saturating_add(token_life_ms).saturating_sub(now);
            (family.family_id, Duration::from_millis(u64::try_from(left).unwrap_or(0)))
        })
        .collect();
    state.revoked_sessions.restore(&sessions).await?;
    Ok(sessions.len())
}

/// Restores the set whenever it is found incomplete; runs for good.
pub async fn keep_complete(state: web::Data<AppState>) {
    let mut tick = actix_web::rt::time::interval(CHECK_INTERVAL);
    loop {
        tick.tick().await;
        // Unreachable shared state is reported by the requests that need it.
        if !matches!(state.revoked_sessions.is_complete().await, Ok(false)) {
            continue;
        }
        match restore(&state).await {
            Ok(count) => tracing::warn!(count, "the shared state had lost the ended sessions; restored from the store"),
            Err(error) => tracing::warn!(%error, "restoring the ended sessions failed; retrying"),
        }
    }
}
