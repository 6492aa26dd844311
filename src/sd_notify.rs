//! systemd's readiness protocol (`Type=notify`): a datagram to `$NOTIFY_SOCKET`. Nothing happens
//! without that variable, so outside systemd this is a no-op.
//!
//! `READY=1` goes out once every listener is bound (not at the first sync: a source that is down
//! must not fail the start or hold up boot; `/readyz` reports the sync). With it `MAINPID=`, so
//! that a process started by a binary upgrade (SIGUSR2) becomes the service's main process
//! before the old one exits; that one sends it when its first table is live.

/// Sends `state` (newline-separated `KEY=VALUE` pairs) to the service manager, if there is one.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(socket = ?path, "sd_notify {state:?}: {e}");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        // An abstract socket name (Linux).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}
