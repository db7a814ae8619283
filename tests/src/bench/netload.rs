//! Traffic between pods: a sequential echo server, TCP request/response (one connection,
//! ping-pong), TCP connect/request/response/close (the connection rate), and iperf3 bulk
//! throughput. Sockets are created inside the pods' namespaces; nothing touches the root
//! namespace.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::netns;

/// Why a traffic run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("iperf3: {0}")]
    Iperf(String),
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
    let what = what.into();
    move |source| LoadError::Io { what, source }
}

/// An echo server in a pod: accepts one connection at a time and echoes until the client
/// closes. Serves both the request/response and the connection-rate clients.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(netns_name: &str, port: u16) -> Result<Self, LoadError> {
        let listener = netns::run_in(netns_name, || TcpListener::bind(("0.0.0.0", port)))?
            .map_err(io(format!("binding TCP {port} in {netns_name}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || serve(&listener, &s));
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) > 0 }
}

fn serve(listener: &TcpListener, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        if !readable(listener.as_raw_fd(), 100) {
            continue;
        }
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        let _ = conn.set_nodelay(true);
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && !stop.load(Ordering::SeqCst) => {}
                Err(_) => break,
            }
        }
    }
}

/// What a request/response run measured.
#[derive(Debug, Clone)]
pub struct RrRun {
    pub transactions: u64,
    pub seconds: f64,
    /// Per-transaction latency, microseconds.
    pub latencies_us: Vec<f64>,
    /// Transactions that failed (connect refused or timed out, short reply).
    pub errors: u64,
}

impl RrRun {
    pub fn rate(&self) -> f64 {
        self.transactions as f64 / self.seconds
    }
}

fn transact(conn: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    conn.write_all(buf)?;
    let mut got = 0;
    while got < buf.len() {
        let n = conn.read(&mut buf[got..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(())
}

/// One connection, `size`-byte request and echo, back to back for `duration`.
pub fn tcp_rr(
    netns_name: &str,
    to: SocketAddr,
    size: usize,
    duration: Duration,
) -> Result<RrRun, LoadError> {
    netns::run_in(netns_name, || {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .map_err(io(format!("connecting to {to}")))?;
        conn.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(io("read timeout"))?;
        let mut buf = vec![7u8; size.max(1)];
        let mut lat = Vec::new();
        let start = Instant::now();
        while start.elapsed() < duration {
            let t = Instant::now();
            transact(&mut conn, &mut buf).map_err(io(format!("request to {to}")))?;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(RrRun {
            transactions: lat.len() as u64,
            seconds: start.elapsed().as_secs_f64(),
            latencies_us: lat,
            errors: 0,
        })
    })?
}

/// New connections back to back for `duration`: connect, 1-byte request and echo, close.
pub fn tcp_crr(netns_name: &str, to: SocketAddr, duration: Duration) -> Result<RrRun, LoadError> {
    netns::run_in(netns_name, || {
        let mut lat = Vec::new();
        let mut errors = 0;
        let mut buf = [7u8; 1];
        let start = Instant::now();
        while start.elapsed() < duration {
            let t = Instant::now();
            let ok = TcpStream::connect_timeout(&to, Duration::from_secs(1)).and_then(|mut c| {
                c.set_nodelay(true)?;
                c.set_read_timeout(Some(Duration::from_secs(1)))?;
                transact(&mut c, &mut buf)
            });
            match ok {
                Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                Err(_) => errors += 1,
            }
        }
        Ok(RrRun {
            transactions: lat.len() as u64,
            seconds: start.elapsed().as_secs_f64(),
            latencies_us: lat,
            errors,
        })
    })?
}

/// Settings that let a client make tens of thousands of short connections in a row inside its
/// namespace: TIME_WAIT ports reused for new outgoing connections, a wide port range.
pub fn tune_client(netns_name: &str) -> Result<(), LoadError> {
    let mut cmd = netns::command_in(netns_name, "sysctl")?;
    cmd.args([
        "-qw",
        "net.ipv4.tcp_tw_reuse=1",
        "net.ipv4.ip_local_port_range=1024 65000",
    ]);
    crate::exec::run(&mut cmd)?;
    Ok(())
}

/// An iperf3 server in a pod, killed (by its PID) on drop.
#[derive(Debug)]
pub struct IperfServer {
    child: Child,
}

impl IperfServer {
    pub fn start(netns_name: &str, port: u16) -> Result<Self, LoadError> {
        let mut cmd = netns::command_in(netns_name, "iperf3")?;
        cmd.args(["-s", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(io("starting iperf3 -s"))?;
        // Wait until it listens (it binds within milliseconds).
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let up = netns::run_in(netns_name, || {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(100),
                )
                .is_ok()
            })?;
            if up {
                return Ok(Self { child });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(LoadError::Iperf("server did not start listening".into()))
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One iperf3 TCP run (one stream) from a pod; bits per second received.
pub fn iperf3(
    netns_name: &str,
    to: IpAddr,
    port: u16,
    duration: Duration,
) -> Result<f64, LoadError> {
    let mut cmd: Command = netns::command_in(netns_name, "iperf3")?;
    cmd.args([
        "-c",
        &to.to_string(),
        "-p",
        &port.to_string(),
        "-t",
        &duration.as_secs().max(1).to_string(),
        "--connect-timeout",
        "3000",
        "-J",
    ]);
    let out = cmd.output().map_err(io("running iperf3 -c"))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| LoadError::Iperf(format!("unreadable output: {e}")))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(LoadError::Iperf(err.to_owned()));
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| LoadError::Iperf("no end.sum_received.bits_per_second".into()))
}

/// Whether a TCP connection from the pod to `to` completes within `timeout`.
pub fn reachable(netns_name: &str, to: SocketAddr, timeout: Duration) -> Result<bool, LoadError> {
    Ok(netns::run_in(netns_name, || {
        TcpStream::connect_timeout(&to, timeout).is_ok()
    })?)
}
