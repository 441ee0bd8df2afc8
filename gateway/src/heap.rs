//! Gives heap memory that the allocator keeps but nothing uses back to the OS.
//!
//! glibc's malloc returns freed memory to the OS by itself only from the
//! top of each heap. What a burst frees below memory still in use (the chat
//! actors of a busy hour that retired, a connection storm's handshake
//! buffers, a big sync's frames) stays in the process's resident set at its
//! peak. `malloc_trim` hands such free pages back (`madvise`), so an idle
//! node's RSS follows what it holds now. The node calls it every
//! `heap_trim_secs` (see docs/benchmarks.md, "Idle connections", for what it
//! saves per connection).

use std::time::{Duration, Instant};

/// Returns the allocator's free pages to the OS; true if any were returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "the one foreign call of the workspace: glibc's malloc_trim has no safe binding")]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers; it walks and releases the
    // allocator's own free chunks under its arena locks, from any thread.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Elsewhere a no-op: other allocators (musl's, macOS's) give freed memory
/// back by themselves or have no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

/// Trims the heap every `every`, on the blocking pool (a trim takes the
/// allocator's locks for as long as it walks the free memory).
pub async fn keep_trimming(every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let started = Instant::now();
        match actix_web::rt::task::spawn_blocking(trim).await {
            Ok(released) => {
                tracing::debug!(released, micros = started.elapsed().as_micros() as u64, "heap trimmed");
            }
            Err(error) => tracing::warn!(%error, "heap trim failed"),
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// This process's resident set, in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
    }

    #[test]
    fn memory_freed_below_memory_in_use_goes_back_to_the_os() {
        // 64 MiB in 1 KiB blocks, every 64th kept: what is freed lies below
        // blocks still in use, so malloc cannot give it back by itself.
        let mut blocks: Vec<Box<[u8; 1024]>> = (0..65_536).map(|i| Box::new([i as u8; 1024])).collect();
        let mut kept = Vec::with_capacity(blocks.len() / 64);
        for (i, block) in blocks.drain(..).enumerate() {
            if i % 64 == 0 {
                kept.push(block);
            }
        }
        let before = rss_kib();

        assert!(trim(), "trim released nothing");

        let after = rss_kib();
        assert!(before.saturating_sub(after) > 32 * 1024, "RSS went from {before} KiB to {after} KiB");
        assert!(kept.iter().enumerate().all(|(i, block)| block[1023] == (i * 64) as u8), "kept blocks intact");
    }
}
