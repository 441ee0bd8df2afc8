//! The client address of a request that came through trusted reverse
//! proxies (`limits.trusted_proxies`), from their `X-Forwarded-For` header.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// The header each proxy appends the address it got the request from to.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The address a request came from. It is the TCP peer, unless the peer is
/// one of `trusted`: then the header's addresses are read from the right
/// (each proxy appends the address it got the request from), skipping
/// trusted ones, and the first one that is not trusted is the client. A
/// header written by anyone else is never read, so a client cannot choose
/// the address it is counted under. A malformed entry ends the walk at the
/// last trusted hop, which is then the client (its requests share one
/// budget).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in hops.into_iter().rev() {
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// One entry of the header: an address, with or without a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                HeaderName::from_static(X_FORWARDED_FOR),
                HeaderValue::from_str(value).unwrap_or_else(|_| panic!("{value}")),
            );
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|net| net.parse().unwrap_or_else(|_| panic!("{net}"))).collect()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_never_read() {
        let spoofed = headers(&["203.0.113.7"]);
        assert_eq!(client_ip(ip("198.51.100.1"), &spoofed, &[]), ip("198.51.100.1"));
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("198.51.100.1"), &spoofed, &trusted), ip("198.51.100.1"), "the peer is no proxy");
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client wrote a fake first entry; the proxies appended the rest.
        let chain = headers(&["1.1.1.1, 203.0.113.7", "10.0.0.5"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &chain, &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("127.0.0.1"), &headers(&["203.0.113.7:4711"]), &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("127.0.0.1"), &headers(&["[2001:db8::1]:443"]), &trusted), ip("2001:db8::1"));
        // IPv4 peers on an IPv6 socket.
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &headers(&["203.0.113.7"]), &trusted), ip("203.0.113.7"));
    }

    #[test]
    fn a_chain_of_only_proxies_or_a_bad_entry_stops_at_the_last_trusted_hop() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &HeaderMap::new(), &trusted), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &headers(&["10.0.0.9"]), &trusted), ip("10.0.0.9"));
        assert_eq!(client_ip(ip("127.0.0.1"), &headers(&["203.0.113.7, junk, 10.0.0.9"]), &trusted), ip("10.0.0.9"));
    }
}
