//! The address a redirected connection was sent to before iptables
//! `REDIRECT` rewrote it: `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST`
//! (IPv6), read from conntrack through socket2's safe wrappers. A connection
//! that was not redirected has no such entry (or reports the listener's own
//! address); both come back as `None`, never as a destination to dial.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// Where the client meant to connect, when the connection was redirected.
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    match lookup(stream, local) {
        Ok(destination) if destination != local => Some(destination),
        Ok(_) => None,
        Err(error) => {
            tracing::debug!(%error, %local, "no original destination (connection not redirected)");
            None
        }
    }
}

fn lookup(stream: &TcpStream, local: SocketAddr) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    // An IPv4 client of a dual-stack listener has a v4-mapped local address;
    // conntrack knows its connection as IPv4.
    let ipv4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    let original = if ipv4 {
        socket.original_dst_v4()?
    } else {
        socket.original_dst_v6()?
    };
    original
        .as_socket()
        .ok_or_else(|| io::Error::other("the original destination is not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_direct_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(original_destination(&server), None);
    }
}
