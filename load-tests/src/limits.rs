//! Startup checks of the OS limits a run needs (open files, ephemeral ports,
//! the accept queue of a server on the same machine) and the source
//! addresses to spread connections over.

use std::net::{IpAddr, Ipv4Addr};

/// File descriptors a process needs beyond one per connection (REST pool, stdio, epoll, pipes).
const FD_HEADROOM: u64 = 128;
/// Most loopback source addresses `--source-ips` may name.
pub const MAX_SOURCE_IPS: u32 = 254;

/// `--source-ips N`: 127.0.0.1 to 127.0.0.N.
pub fn loopback_sources(count: u32) -> Vec<IpAddr> {
    (1..=count.min(MAX_SOURCE_IPS)).map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n as u8))).collect()
}

/// The soft and hard open-files limits of this process, from `/proc/self/limits`.
fn open_files_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace().map(|v| v.parse().unwrap_or(u64::MAX));
    Some((numbers.next()?, numbers.next()?))
}

/// The size of the ephemeral port range, from `/proc/sys/net/ipv4/ip_local_port_range`.
fn ephemeral_ports() -> Option<u64> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = range.split_whitespace().map(str::parse::<u64>);
    let (low, high) = (bounds.next()?.ok()?, bounds.next()?.ok()?);
    Some(high.saturating_sub(low) + 1)
}

/// `net.core.somaxconn`: the longest accept queue a listener here can have.
fn accept_queue_cap() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// A warning (the run goes on) when `in_flight` handshakes at once can
/// overflow the accept queue of a server on this machine.
pub fn accept_queue_warning(in_flight: u64) -> Option<String> {
    queue_warning(in_flight, accept_queue_cap())
}

fn queue_warning(in_flight: u64, cap: Option<u64>) -> Option<String> {
    let cap = cap?;
    (in_flight > cap).then(|| {
        format!(
            "{in_flight} handshakes in flight exceed net.core.somaxconn ({cap}), the longest accept queue a server on \
this machine can have: if the server runs here, raise it (sysctl -w net.core.somaxconn={in_flight}) and restart the \
server, or connections dropped from a full queue wait a second or more for their SYN to be sent again"
        )
    })
}

/// What is wrong with the limits for `per_process` connections in each of
/// `workers` processes over `sources` source addresses (empty when all is well).
pub fn check(per_process: u64, workers: u64, sources: u64) -> Vec<String> {
    problems(per_process, workers, sources, open_files_limit(), ephemeral_ports())
}

fn problems(
    per_process: u64,
    workers: u64,
    sources: u64,
    files: Option<(u64, u64)>,
    ports: Option<u64>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let needed = per_process + FD_HEADROOM;
    if let Some((soft, hard)) = files
        && needed > soft
    {
        problems.push(if needed <= hard {
            format!("{per_process} connections per process need {needed} open files but the soft limit is {soft}: run `ulimit -n {hard}` first")
        } else {
            let more = (per_process * workers).div_ceil(hard.saturating_sub(FD_HEADROOM).max(1));
            format!(
                "{per_process} connections per process need {needed} open files but the hard limit is {hard}: \
use --workers {more} (or more) to split them over processes, or raise the hard limit (LimitNOFILE=, /etc/security/limits.conf)"
            )
        });
    }
    let per_source = (per_process * workers).div_ceil(sources.max(1));
    if let Some(ports) = ports
        && per_source > ports
    {
        let more = (per_process * workers).div_ceil(ports);
        problems.push(format!(
            "{per_source} connections per source address exceed the {ports} ephemeral ports: use --source-ips {more} (or more), \
or widen net.ipv4.ip_local_port_range (sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\")"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_count_from_127_0_0_1() {
        let sources = loopback_sources(3);
        assert_eq!(sources.len(), 3);
        assert_eq!(sources[2], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    }

    #[test]
    fn limits_name_what_to_raise() {
        assert!(problems(1000, 1, 1, Some((20_000, 20_000)), Some(28_000)).is_empty());
        let soft = problems(5000, 1, 1, Some((1024, 20_000)), Some(28_000));
        assert!(soft[0].contains("ulimit -n 20000"), "{soft:?}");
        let hard = problems(30_000, 1, 1, Some((20_000, 20_000)), Some(60_000));
        assert!(hard[0].contains("--workers 2"), "{hard:?}");
        let ports = problems(15_000, 2, 1, Some((20_000, 20_000)), Some(28_232));
        assert!(ports[0].contains("--source-ips 2"), "{ports:?}");
        assert!(problems(15_000, 2, 2, Some((20_000, 20_000)), Some(28_232)).is_empty());
    }

    #[test]
    fn more_handshakes_than_the_accept_queue_holds_name_somaxconn() {
        assert_eq!(queue_warning(1024, Some(4096)), None);
        let warning = queue_warning(2048, Some(1024)).expect("a warning");
        assert!(warning.contains("sysctl -w net.core.somaxconn=2048"), "{warning}");
        assert_eq!(queue_warning(2048, None), None, "no /proc: nothing to say");
    }
}
