//! The probe protocol, shared by the `probe` binary (which runs inside pod namespaces) and the
//! harness (which parses its output).
//!
//! TCP: the server accepts, writes `<id> tcp <port>\n` and closes; a probe is allowed when the
//! connect succeeds and some reply bytes arrive before the timeout. UDP: the server echoes
//! `<id> udp <port> <payload>`; a probe is allowed when an echo arrives before the timeout
//! (the request is re-sent a few times within it, so one lost datagram is not a denial).
//! SCTP: over one-to-one (`SOCK_STREAM`) SCTP sockets, the client sends `probe\n` once the
//! association is up; the server answers it with `<id> sctp <port>\n` and closes. (A server
//! that wrote first, as for TCP, would race its DATA against its own COOKIE-ACK: packets sent
//! from different CPUs can overtake each other on a veth, and a client still in COOKIE-ECHOED
//! discards DATA, which then comes back only after the 3 s initial retransmission timeout.)
//! Kernels without SCTP (no `sctp` module) cannot open such sockets: [`sctp_supported`] says
//! so before anything is probed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A transport protocol the probes speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// The iptables `-p` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One probe as the `probe` binary takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub timeout_ms: u64,
}

/// What one probe observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub allowed: bool,
    /// The server's reply (it names the pod that answered).
    pub reply: Option<String>,
    /// Why it was not allowed (timeout, refused, ...).
    pub error: Option<String>,
    pub elapsed_ms: f64,
}

/// The probe server could not bind.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot bind {proto:?} port {port}: {source}")]
    Bind {
        proto: Proto,
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// Runs one probe.
pub fn connect(target: &Target) -> Outcome {
    let start = Instant::now();
    let timeout = Duration::from_millis(target.timeout_ms.max(1));
    let result = match target.proto {
        Proto::Tcp => tcp_probe(target.addr, timeout),
        Proto::Udp => udp_probe(target.addr, timeout),
        Proto::Sctp => sctp_probe(target.addr, timeout),
    };
    let (allowed, reply, error) = match result {
        Ok(reply) => (true, Some(reply), None),
        Err(e) => (false, None, Some(e.to_string())),
    };
    Outcome {
        proto: target.proto,
        addr: target.addr,
        allowed,
        reply,
        error,
        elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
    }
}

/// Runs all probes concurrently (one thread each) and returns outcomes in input order.
pub fn batch(targets: &[Target]) -> Vec<Outcome> {
    std::thread::scope(|s| {
        let handles: Vec<_> = targets.iter().map(|t| s.spawn(|| connect(t))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe threads do not panic"))
            .collect()
    })
}

fn tcp_probe(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let deadline = Instant::now() + timeout;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    read_reply(stream, deadline)
}

fn sctp_probe(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut stream = sctp::connect(addr, timeout)?;
    stream.write_all(SCTP_REQUEST)?;
    read_reply(stream, deadline)
}

/// What an SCTP client sends once its association is up.
const SCTP_REQUEST: &[u8] = b"probe\n";

/// How long an SCTP server waits for a client's request.
const SCTP_REQUEST_WAIT: Duration = Duration::from_secs(5);

/// Reads the server's one line (TCP, or an SCTP association behind a `TcpStream`).
fn read_reply(mut stream: TcpStream, deadline: Instant) -> std::io::Result<String> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    let mut buf = Vec::new();
    // The server closes after its one line; a partial line still proves the path is open.
    match stream.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if buf.is_empty() => return Err(e),
        Err(_) => {}
    }
    if buf.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connected but no reply",
        ));
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
}

fn udp_probe(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let deadline = Instant::now() + timeout;
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(addr)?;
    let nonce = format!("probe-{}-{:?}", std::process::id(), Instant::now());
    let resend = (timeout / 3).clamp(Duration::from_millis(1), Duration::from_millis(250));
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        sock.send(nonce.as_bytes())?;
        sock.set_read_timeout(Some(left.min(resend)))?;
        match sock.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Binds every port (dual-stack `[::]`, or `0.0.0.0` where IPv6 is unavailable) and serves each
/// on its own thread. Returns once all are bound, so the caller can announce readiness.
pub fn serve(id: &str, tcp: &[u16], udp: &[u16]) -> Result<(), ProbeError> {
    for &port in tcp {
        let listener = bind_any(port, TcpListener::bind).map_err(|source| ProbeError::Bind {
            proto: Proto::Tcp,
            port,
            source,
        })?;
        let reply = format!("{id} tcp {port}\n");
        std::thread::spawn(move || serve_tcp(&listener, reply.as_bytes()));
    }
    for &port in udp {
        let sock = bind_any(port, UdpSocket::bind).map_err(|source| ProbeError::Bind {
            proto: Proto::Udp,
            port,
            source,
        })?;
        let prefix = format!("{id} udp {port} ");
        std::thread::spawn(move || serve_udp(&sock, prefix.as_bytes()));
    }
    Ok(())
}

/// Binds every SCTP port like [`serve`] binds TCP ports, and serves each on its own thread.
/// Fails (with the kernel's error) where the kernel has no SCTP.
pub fn serve_sctp(id: &str, ports: &[u16]) -> Result<(), ProbeError> {
    for &port in ports {
        let listener = bind_any(port, sctp::listen).map_err(|source| ProbeError::Bind {
            proto: Proto::Sctp,
            port,
            source,
        })?;
        let reply = format!("{id} sctp {port}\n");
        std::thread::spawn(move || serve_sctp_on(&listener, &reply));
    }
    Ok(())
}

/// Answers each association's request on a thread of its own (a client that never sends
/// must not hold up the others).
fn serve_sctp_on(listener: &TcpListener, reply: &str) {
    for mut conn in listener.incoming().flatten() {
        let reply = reply.to_owned();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let _ = conn.set_read_timeout(Some(SCTP_REQUEST_WAIT));
            if conn.read(&mut buf).is_ok_and(|n| n > 0) {
                // Errors only mean the client left.
                let _ = conn.write_all(reply.as_bytes());
            }
        });
    }
}

/// Whether this kernel can open SCTP sockets: `Err` is the kernel's answer to
/// `socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)` (typically "protocol not supported").
pub fn sctp_supported() -> std::io::Result<()> {
    sctp::socket(libc::AF_INET).map(drop)
}

fn bind_any<T>(port: u16, bind: impl Fn(SocketAddr) -> std::io::Result<T>) -> std::io::Result<T> {
    bind((Ipv6Addr::UNSPECIFIED, port).into())
        .or_else(|_| bind((Ipv4Addr::UNSPECIFIED, port).into()))
}

fn serve_tcp(listener: &TcpListener, reply: &[u8]) {
    for mut conn in listener.incoming().flatten() {
        // A few bytes into a fresh socket's buffer never block; errors only mean the client left.
        let _ = conn.write_all(reply);
    }
}

fn serve_udp(sock: &UdpSocket, prefix: &[u8]) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let mut out = prefix.to_vec();
        out.extend_from_slice(&buf[..n]);
        let _ = sock.send_to(&out, from);
    }
}

/// One-to-one SCTP sockets through libc (std has no SCTP). A connected or listening SCTP
/// `SOCK_STREAM` socket supports exactly the calls std's `TcpStream`/`TcpListener` make for
/// the probe (`accept4`, `read`, `write`, `SO_RCVTIMEO`, `FIONBIO`, `close`), so the
/// descriptors are handed to those types once set up.
mod sctp {
    use std::io;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    use std::time::Duration;

    pub fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                family,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                libc::IPPROTO_SCTP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn check(ret: libc::c_int) -> io::Result<()> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The C form of `addr`: storage and the length that is valid in it.
    fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }

    fn family(addr: SocketAddr) -> libc::c_int {
        match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        }
    }

    /// A listening SCTP socket on `addr` (`[::]` accepts IPv4 too, as mapped addresses).
    pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
        let fd = socket(family(addr))?;
        let one: libc::c_int = 1;
        let (sa, len) = sockaddr(addr);
        // SAFETY: valid descriptor; option and address point to live values of the given sizes.
        unsafe {
            check(libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
            check(libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len))?;
            check(libc::listen(fd.as_raw_fd(), 128))?;
        }
        Ok(TcpListener::from(fd))
    }

    /// Opens an association to `addr`, failing after `timeout` (a dropped INIT is retried by
    /// the kernel for much longer than any probe waits).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let stream = TcpStream::from(socket(family(addr))?);
        stream.set_nonblocking(true)?;
        let (sa, len) = sockaddr(addr);
        // SAFETY: valid descriptor and an address of `len` valid bytes.
        let ret = unsafe { libc::connect(stream.as_raw_fd(), (&raw const sa).cast(), len) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(err);
            }
            wait_writable(&stream, timeout)?;
            if let Some(err) = stream.take_error()? {
                return Err(err);
            }
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }

    fn wait_writable(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms.max(1)) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            0 => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "SCTP association not established within the timeout",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_udp_on_loopback() {
        // Port 0 cannot be reported back, so use high ports unlikely to be taken.
        let port = 40000 + (std::process::id() % 20000) as u16;
        serve("t/p", &[port], &[port]).unwrap();
        let targets: Vec<Target> = [Proto::Tcp, Proto::Udp]
            .into_iter()
            .map(|proto| Target {
                proto,
                addr: (Ipv4Addr::LOCALHOST, port).into(),
                timeout_ms: 1000,
            })
            .collect();
        let out = batch(&targets);
        assert!(out[0].allowed, "{out:?}");
        assert_eq!(out[0].reply.as_deref(), Some(&*format!("t/p tcp {port}")));
        assert!(out[1].allowed && out[1].reply.as_ref().unwrap().starts_with("t/p udp"));
    }

    #[test]
    fn closed_port_is_denied() {
        let t = Target {
            proto: Proto::Tcp,
            addr: (Ipv4Addr::LOCALHOST, 1).into(),
            timeout_ms: 200,
        };
        let o = connect(&t);
        assert!(!o.allowed && o.error.is_some());
    }

    #[test]
    fn sctp_on_loopback_or_reported_unsupported() {
        if let Err(e) = sctp_supported() {
            eprintln!("no SCTP in this kernel ({e}): serving must fail with the kernel's error");
            assert!(serve_sctp("t/p", &[1]).is_err());
            return;
        }
        let port = 40000 + (std::process::id() % 20000) as u16;
        serve_sctp("t/p", &[port]).unwrap();
        let t = |port| Target {
            proto: Proto::Sctp,
            addr: (Ipv4Addr::LOCALHOST, port).into(),
            timeout_ms: 1000,
        };
        let o = connect(&t(port));
        assert_eq!(
            o.reply.as_deref(),
            Some(&*format!("t/p sctp {port}")),
            "{o:?}"
        );
        let closed = connect(&t(port.wrapping_add(1)));
        assert!(!closed.allowed && closed.error.is_some(), "{closed:?}");
    }
}
