//! The service manager's readiness protocol (sd_notify(3), what systemd's `Type=notify` waits
//! for): with `NOTIFY_SOCKET` set, one datagram `READY=1` once the server serves and one
//! `STOPPING=1` when it begins to stop. Without the variable nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{self, UnixDatagram};

/// Recovery is done and the listener is bound: connections are accepted from now on.
pub(crate) fn ready(addr: SocketAddr) {
    notify(&format!("READY=1\nSTATUS=serving on {addr}"));
}

/// Shutdown has begun: requests drain, then the log is synced and a snapshot written.
pub(crate) fn stopping() {
    notify("STOPPING=1\nSTATUS=draining requests, then syncing and snapshotting");
}

/// Sends `state` (`KEY=VALUE` lines) to `$NOTIFY_SOCKET`. A failure is logged, never fatal: the
/// server works the same whether or not anything listens.
fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET").filter(|t| !t.is_empty()) else {
        return;
    };
    if let Err(error) = send(&target, state) {
        tracing::warn!(socket = ?target, %error, "cannot notify the service manager");
    }
}

fn send(target: &OsStr, state: &str) -> io::Result<()> {
    let addr = address(target)?;
    let socket = UnixDatagram::unbound()?;
    // A receiver that does not read must not stall the server: a full queue is an error.
    socket.set_nonblocking(true)?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::other("the datagram was cut short"));
    }
    Ok(())
}

/// `/path` is a socket file; `@name` is a name in Linux's abstract namespace (how systemd
/// passes it to services in some setups, and what `systemd-notify` accepts).
fn address(target: &OsStr) -> io::Result<net::SocketAddr> {
    let bytes = target.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => net::SocketAddr::from_abstract_name(name),
        Some((b'/', _)) => net::SocketAddr::from_pathname(target),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor @name (an abstract socket)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names_are_addresses_and_anything_else_is_refused() {
        let path = address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            path.as_pathname().unwrap().to_str(),
            Some("/run/systemd/notify")
        );
        let name = address(OsStr::new("@org/notify")).unwrap();
        assert_eq!(name.as_abstract_name(), Some(&b"org/notify"[..]));
        assert!(address(OsStr::new("relative/notify")).is_err());
        assert!(address(OsStr::new("vsock:2:1234")).is_err());
    }
}
