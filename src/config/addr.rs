//! Listen addresses as people write them: `127.0.0.1:3000`, `localhost:3000`, `:3000` (every
//! interface) or a bare `3000` (loopback), and the `PORT` variable hosting platforms set.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Where the server listens when neither `--addr` nor `IDENTITY_ENGINE_ADDR` is given and
/// `PORT` is not set.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 3000);

/// Parses an `--addr` value. A name is resolved once, IPv4 first (so `localhost` is
/// `127.0.0.1`, which every client tries).
pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    if let Some(port) = text.strip_prefix(':') {
        let port = port.parse::<u16>().map_err(|_| bad(text))?;
        return Ok(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(|| bad(text))?;
    port.parse::<u16>().map_err(|_| bad(text))?;
    let resolved: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

fn bad(text: &str) -> String {
    format!("{text:?} is not an address: give host:port (localhost:3000, 0.0.0.0:3000), :port or a port")
}

/// The default address: `0.0.0.0:$PORT` when `PORT` is set (a platform that sets it routes
/// traffic to every interface), else [`DEFAULT_ADDR`]. An unusable `PORT` is reported by
/// [`port_problem`] and the default is used meanwhile.
pub(crate) fn default_addr() -> SocketAddr {
    match std::env::var("PORT").ok().map(|p| p.trim().parse::<u16>()) {
        Some(Ok(port)) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        _ => DEFAULT_ADDR,
    }
}

/// Why `PORT`, if set, cannot be used.
pub fn port_problem() -> Option<String> {
    let port = std::env::var("PORT").ok()?;
    match port.trim().parse::<u16>() {
        Ok(_) => None,
        Err(_) => Some(format!("PORT={port:?} is not a port number (0 to 65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    #[test]
    fn every_written_form_parses() {
        let parse = |t: &str| parse_addr(t).map(|a| a.to_string());
        assert_eq!(parse("127.0.0.1:3000").unwrap(), "127.0.0.1:3000");
        assert_eq!(parse("localhost:3001").unwrap(), "127.0.0.1:3001");
        assert_eq!(parse("3001").unwrap(), "127.0.0.1:3001");
        assert_eq!(parse(":3001").unwrap(), "0.0.0.0:3001");
        assert_eq!(parse("[::1]:3001").unwrap(), "[::1]:3001");
        assert!(parse("localhost").is_err());
        assert!(parse(":http").is_err());
        assert!(parse("70000").is_err());
    }
}
