//! Outgoing connections from a chosen source address, with the source port
//! left to `connect` instead of `bind`.
//!
//! awc binds a socket to its local address with port 0 before connecting,
//! which makes the kernel reserve a port that no other socket holds, not
//! even one in `TIME_WAIT` left by an earlier run against another server.
//! With thousands of those, every `bind` searches the port range and a run
//! connects several times slower at several times the CPU.
//! `IP_BIND_ADDRESS_NO_PORT` defers the choice to `connect`, which only
//! needs the four-tuple to be unique.

use std::net::{IpAddr, SocketAddr};

use actix_rt::net::{TcpSocket, TcpStream};
use actix_service::{Service, fn_service};
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use awc::http::Uri;
use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};

/// A connector for [`awc::Connector::connector`] whose sockets leave from
/// `source`, if given (otherwise from the address the OS picks).
pub fn connector(
    source: Option<IpAddr>,
) -> impl Service<ConnectInfo<Uri>, Response = Connection<Uri, TcpStream>, Error = ConnectError> + Clone {
    fn_service(move |info: ConnectInfo<Uri>| async move {
        let stream = connect(source, info.hostname(), info.port()).await?;
        Ok(Connection::new(info.request().clone(), stream))
    })
}

async fn connect(source: Option<IpAddr>, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let mut targets = tokio::net::lookup_host((host, port)).await.map_err(ConnectError::Io)?;
    let target = targets
        .find(|target| source.is_none_or(|source| target.is_ipv4() == source.is_ipv4()))
        .ok_or(ConnectError::NoRecords)?;
    let Some(source) = source else { return TcpStream::connect(target).await.map_err(ConnectError::Io) };
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ConnectError::Io)?;
    setsockopt(&socket, IpBindAddressNoPort, &true).map_err(|errno| ConnectError::Io(errno.into()))?;
    socket.bind(SocketAddr::new(source, 0)).map_err(ConnectError::Io)?;
    socket.connect(target).await.map_err(ConnectError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[actix_rt::test]
    async fn connections_leave_from_the_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        for n in [2, 3] {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, n));
            let _stream = connect(Some(source), "127.0.0.1", port).await.expect("connected");
            let (_, peer) = listener.accept().await.expect("accepted");
            assert_eq!(peer.ip(), source);
        }
    }

    #[actix_rt::test]
    async fn a_host_without_an_address_of_the_sources_family_is_an_error() {
        let source = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(matches!(connect(Some(source), "::1", 9).await, Err(ConnectError::NoRecords)));
    }
}
