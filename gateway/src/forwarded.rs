//! The client address of a request that came through trusted reverse
//! proxies (`limits.trusted_proxies`), from their `X-Forwarded-For` header.

use std::net::{IpAddr, SocketAddr};

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// The header each proxy appends the address it got the request from to.
const X_FORWARDED_FOR: &str = "x-forwarded-for";
/// Headers in which a proxy says where the request came from and how.
const FORWARDING_HEADERS: [&str; 4] = ["forwarded", X_FORWARDED_FOR, "x-forwarded-host", "x-forwarded-proto"];

/// Rewrites a request's forwarding headers to what can be trusted, before
/// anything reads them (the request log's `http.client_ip`, `http.host`
/// and `http.scheme` come from actix-web's `ConnectionInfo`, which believes
/// them from anyone). From a trusted proxy, `X-Forwarded-For` becomes the
/// one address [`client_ip`] finds and `Forwarded` (not read here) goes;
/// from anyone else, every forwarding header goes.
pub fn sanitize(req: &mut ServiceRequest, trusted: &[IpNet]) {
    let Some(peer) = req.peer_addr().map(|addr| addr.ip()) else { return };
    let headers = req.headers_mut();
    if !is_trusted(&peer.to_canonical(), trusted) {
        for name in FORWARDING_HEADERS {
            headers.remove(name);
        }
        return;
    }
    let client = client_ip(peer, headers, trusted);
    headers.remove("forwarded");
    if let Ok(value) = HeaderValue::from_str(&client.to_string()) {
        headers.insert(HeaderName::from_static(X_FORWARDED_FOR), value);
    }
}

/// The address a request came from. It is the TCP peer, unless the peer is
/// one of `trusted`: then the header's addresses are read from the right
/// (each proxy appends the address it got the request from), skipping
/// trusted ones, and the first one that is not trusted is the client. A
/// header written by anyone else is never read, so a client cannot choose
/// the address it is counted under. A malformed entry ends the walk at the
/// last trusted hop, which is then the client (its requests share one
/// budget).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(&client, trusted) {
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
        if !is_trusted(&client, trusted) {
            break;
        }
    }
    client
}

/// Whether `ip` is one of the trusted proxies.
fn is_trusted(ip: &IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(ip))
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

    /// What the request log records for a request from `peer` with
    /// `headers`: actix-web's idea of the client address, host and scheme.
    fn logged(peer: &str, headers: &[(&str, &str)], trusted: &[IpNet]) -> (String, String, String) {
        let mut request = actix_web::test::TestRequest::default().peer_addr(SocketAddr::new(ip(peer), 4711));
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        let mut request = request.to_srv_request();
        sanitize(&mut request, trusted);
        let info = request.connection_info().clone();
        (info.realip_remote_addr().unwrap_or("").to_owned(), info.host().to_owned(), info.scheme().to_owned())
    }

    #[test]
    fn the_request_log_believes_forwarding_headers_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let forged = [
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=198.51.100.9;proto=https;host=evil.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("host", "chat.example"),
        ];
        let (client, host, scheme) = logged("192.0.2.1", &forged, &trusted);
        assert_eq!((client.as_str(), host.as_str(), scheme.as_str()), ("192.0.2.1", "chat.example", "http"));
        // Through a proxy: its X-Forwarded-For (the client wrote the first
        // entry), host and scheme; not the Forwarded header it did not set.
        let proxied = [
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("forwarded", "for=198.51.100.9"),
            ("x-forwarded-host", "chat.example"),
            ("x-forwarded-proto", "https"),
        ];
        let (client, host, scheme) = logged("10.0.0.2", &proxied, &trusted);
        assert_eq!((client.as_str(), host.as_str(), scheme.as_str()), ("203.0.113.7", "chat.example", "https"));
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
