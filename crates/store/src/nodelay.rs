//! `TCP_NODELAY` on PostgreSQL connections.
//!
//! sqlx 0.9.0 no longer sets it on the sockets it opens (launchbadge/sqlx issue 4335; fixed
//! upstream in pull request 4336, not released yet). Without it, a message that the kernel
//! takes in two writes waits for the server's delayed ACK before its second part leaves: 40 ms
//! for that statement. On loopback that is any message over about 16 KiB: a group of event
//! payloads, a batch of entitlement objects, a wide `VALUES` update. Measured here with one
//! parameter of n bytes in an `INSERT`: 0.2–0.4 ms up to 16,000 bytes, 43–44 ms from 32,000 to
//! 70,000. In the webhooks benchmark on PostgreSQL, such statements took 42–55 ms each.
//!
//! sqlx gives no access to its socket. So, on each new connection, the server tells which
//! client port the session has (`inet_client_port()`, null over a Unix socket), and the option
//! is set on this process's TCP sockets whose local port that is. Where the port cannot be
//! matched (behind a connection pooler or a NAT, or on a system without `/proc`), nothing
//! changes: the connection works as sqlx made it.

use sqlx::AnyConnection;

/// Sets `TCP_NODELAY` on `conn`'s socket; whether a socket was found (see the module).
pub(crate) async fn set_on(conn: &mut AnyConnection) -> sqlx::Result<bool> {
    let port: Option<i32> = sqlx::query_scalar("SELECT inet_client_port()")
        .fetch_one(&mut *conn)
        .await?;
    Ok(match port.and_then(|p| u16::try_from(p).ok()) {
        Some(port) => set_on_local_port(port),
        None => false,
    })
}

#[cfg(target_os = "linux")]
fn set_on_local_port(port: u16) -> bool {
    let mut found = false;
    // Another outgoing TCP socket may share the local port (ports are unique per remote
    // address). `TCP_NODELAY` on it too is harmless: hyper and reqwest set it on theirs.
    sockets_on_port(port, |s| found |= s.set_tcp_nodelay(true).is_ok());
    found
}

/// Calls `f` with each of this process's sockets whose local port is `port`.
#[cfg(target_os = "linux")]
fn sockets_on_port(port: u16, mut f: impl FnMut(socket2::SockRef<'_>)) {
    use std::os::fd::{BorrowedFd, RawFd};

    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // Only sockets: their link reads `socket:[inode]`.
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.as_os_str().as_encoded_bytes().starts_with(b"socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: `fd` was open when listed and is only borrowed for socket calls
        // (getsockname, getsockopt, setsockopt), which cannot touch memory. If another thread
        // closed it in between, the calls fail or act on a descriptor reused under the same
        // number, where the port check makes them a no-op unless it is a TCP socket on that
        // very port.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        if sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.port() == port)
        {
            f(sock);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn set_on_local_port(_port: u16) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Every connection of the PostgreSQL pool has `TCP_NODELAY` on its socket (sqlx 0.9.0
    /// leaves it off).
    #[tokio::test]
    async fn postgres_connections_have_tcp_nodelay() {
        if std::env::var("TOLLGATE_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
            return;
        }
        let url = std::env::var("TOLLGATE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let store = crate::Store::connect(&url)
            .await
            .expect("PostgreSQL (set TOLLGATE_TEST_SKIP_POSTGRES=1 to skip)");
        // Two connections at once: each has its own socket.
        let mut a = store.writer().acquire().await.expect("a connection");
        let mut b = store.writer().acquire().await.expect("a second connection");
        for conn in [&mut a, &mut b] {
            let port: i32 = sqlx::query_scalar("SELECT inet_client_port()")
                .fetch_one(&mut **conn)
                .await
                .expect("the client port");
            let port = u16::try_from(port).expect("a TCP port");
            let mut nodelay = Vec::new();
            sockets_on_port(port, |s| nodelay.push(s.tcp_nodelay().ok()));
            assert!(!nodelay.is_empty(), "no socket on port {port}");
            assert!(nodelay.iter().all(|n| *n == Some(true)), "{nodelay:?}");
        }
        drop((a, b));
        store.close().await;
    }
}
