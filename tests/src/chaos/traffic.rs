//! Continuous traffic while the scenarios run: long-lived TCP echo streams (a round trip every
//! 50 ms each) and a steady rate of new connection attempts, every outcome recorded with its
//! time so that each scenario can count what happened in its window.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::env::{Env, PolicyState};
use crate::probe::{Outcome, Target};
use crate::{Pod, Proto};

/// How often a stream does a round trip.
pub const ROUND_TRIP_EVERY: Duration = Duration::from_millis(50);
/// A round trip that takes longer than this breaks the stream (an established connection that
/// stalls this long is broken for any application with a timeout).
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Connect-and-reply timeout of an attempt (no SYN retransmit fits in it: a dropped SYN of
/// an allowed attempt is a failure).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(900);

/// What policy says about a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Expect {
    Allowed,
    Denied,
    /// Allowed in state A, denied in state B (`true`), or the reverse (`false`).
    Flip {
        allowed_in_a: bool,
    },
}

impl Expect {
    pub fn allowed_in(self, state: PolicyState) -> bool {
        match self {
            Self::Allowed => true,
            Self::Denied => false,
            Self::Flip { allowed_in_a } => allowed_in_a == (state == PolicyState::A),
        }
    }
}

/// One pair of the traffic mix.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Pair {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub via_service: bool,
    pub expect: Expect,
}

impl Pair {
    fn new(from: &str, to: &str, port: u16, via_service: bool, expect: Expect) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            port,
            via_service,
            expect,
        }
    }

    pub fn label(&self) -> String {
        let via = if self.via_service { "svc" } else { "pod" };
        format!("{}->{}:{} ({via})", self.from, self.to, self.port)
    }

    fn same_node(&self, env: &Env) -> bool {
        env.pod(&self.from).node() == env.pod(&self.to).node()
    }
}

/// The long-lived streams: (pair, survives every state) — the flip stream does not survive B.
pub fn stream_pairs() -> Vec<Pair> {
    let mut out = Vec::new();
    for (from, to) in [("b", "a"), ("c", "a"), ("b", "f")] {
        for svc in [false, true] {
            out.push(Pair::new(from, to, 9000, svc, Expect::Allowed));
        }
    }
    for svc in [false, true] {
        out.push(Pair::new(
            "c",
            "f",
            9001,
            svc,
            Expect::Flip { allowed_in_a: true },
        ));
    }
    out
}

/// The connection attempts probed again and again.
pub fn attempt_pairs() -> Vec<Pair> {
    let mut out = Vec::new();
    for svc in [false, true] {
        for (from, to) in [("b", "a"), ("c", "a"), ("b", "f"), ("c", "f")] {
            out.push(Pair::new(from, to, 80, svc, Expect::Allowed));
        }
        for (from, to, port) in [
            ("d", "a", 81),
            ("e", "a", 80),
            ("b", "f", 81),
            ("d", "f", 80),
        ] {
            out.push(Pair::new(from, to, port, svc, Expect::Denied));
        }
        out.push(Pair::new(
            "d",
            "a",
            80,
            svc,
            Expect::Flip {
                allowed_in_a: false,
            },
        ));
        out.push(Pair::new(
            "c",
            "f",
            81,
            svc,
            Expect::Flip { allowed_in_a: true },
        ));
    }
    // Denied by the client's egress policy (no Service in front of d and e).
    for (from, to) in [("b", "d"), ("c", "e"), ("b", "e")] {
        out.push(Pair::new(from, to, 80, false, Expect::Denied));
    }
    out
}

/// One recorded outcome.
#[derive(Clone, Debug)]
pub enum Event {
    /// A stream's round trip (`ms` its latency).
    RoundTrip { stream: usize, at: Instant, ms: f64 },
    /// A stream broke: the round trip sent at `at` failed (`error`).
    Broken {
        stream: usize,
        at: Instant,
        error: String,
    },
    /// A connection attempt started at `at`.
    Attempt {
        pair: usize,
        at: Instant,
        allowed: bool,
        error: Option<String>,
    },
}

/// Everything recorded so far.
pub type Log = Arc<Mutex<Vec<Event>>>;

pub fn record(log: &Log, e: Event) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(e);
}

/// One open stream: its thread stops when asked or when the connection breaks.
#[derive(Debug)]
struct Stream {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// The running traffic.
#[derive(Debug)]
pub struct Traffic {
    pub streams: Vec<Pair>,
    pub attempts: Vec<Pair>,
    pub log: Log,
    open: Vec<Option<Stream>>,
    stop: Arc<AtomicBool>,
    probers: Vec<JoinHandle<()>>,
}

/// Connects `from`'s namespace to `addr`.
pub fn connect(from: &Pod, addr: SocketAddr) -> std::io::Result<TcpStream> {
    crate::netns::run_in(from.netns_name(), move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .map_err(std::io::Error::other)?
}

/// Round trips on `conn` every [`ROUND_TRIP_EVERY`] until `stop` or a failure, recorded as
/// stream `id`.
pub fn run_stream(id: usize, mut conn: TcpStream, log: &Log, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(STREAM_TIMEOUT));
    let _ = conn.set_nodelay(true);
    let mut seq: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let at = Instant::now();
        seq += 1;
        let msg = seq.to_be_bytes();
        let mut back = [0u8; 8];
        let result = conn
            .write_all(&msg)
            .and_then(|()| conn.read_exact(&mut back))
            .and_then(|()| {
                if back == msg {
                    Ok(())
                } else {
                    Err(std::io::Error::other("echo mismatch"))
                }
            });
        match result {
            Ok(()) => record(
                log,
                Event::RoundTrip {
                    stream: id,
                    at,
                    ms: at.elapsed().as_secs_f64() * 1000.0,
                },
            ),
            Err(e) => {
                record(
                    log,
                    Event::Broken {
                        stream: id,
                        at,
                        error: e.to_string(),
                    },
                );
                return;
            }
        }
        std::thread::sleep(ROUND_TRIP_EVERY.saturating_sub(at.elapsed()));
    }
}

impl Traffic {
    /// Starts the attempt prober and opens every stream that `env.state` allows.
    pub fn start(env: &Env) -> Result<Self, super::ChaosError> {
        let mut t = Traffic {
            streams: stream_pairs(),
            attempts: attempt_pairs(),
            log: Arc::new(Mutex::new(Vec::new())),
            open: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            probers: Vec::new(),
        };
        t.open = t.streams.iter().map(|_| None).collect();
        t.reopen(env)?;
        Ok(t)
    }

    /// (Re)opens the streams that are not running and that policy allows now.
    pub fn reopen(&mut self, env: &Env) -> Result<(), super::ChaosError> {
        for (id, pair) in self.streams.iter().enumerate() {
            let running = self.open[id]
                .as_ref()
                .is_some_and(|s| s.handle.as_ref().is_some_and(|h| !h.is_finished()));
            if running || !pair.expect.allowed_in(env.state) {
                continue;
            }
            let addr = env.addr(&pair.to, pair.port, pair.via_service);
            let conn = connect(env.pod(&pair.from), addr)
                .map_err(|e| super::ChaosError::Io(format!("stream {}: {e}", pair.label())))?;
            let stop = Arc::new(AtomicBool::new(false));
            let (log, flag) = (self.log.clone(), stop.clone());
            let handle = std::thread::spawn(move || run_stream(id, conn, &log, &flag));
            self.open[id] = Some(Stream {
                stop,
                handle: Some(handle),
            });
        }
        Ok(())
    }

    /// Starts the attempts: every pair again and again (a round lasts as long as a denied
    /// attempt's timeout), and the always-allowed pairs also on their own, every 100 ms, for a
    /// steady rate of new allowed connections. One `probe batch` per source pod and round.
    pub fn start_attempts(&mut self, env: &Env) {
        let all: Vec<usize> = (0..self.attempts.len()).collect();
        let allowed: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| self.attempts[*i].expect == Expect::Allowed)
            .collect();
        for subset in [all, allowed] {
            let mut groups: BTreeMap<String, Vec<(usize, Target)>> = BTreeMap::new();
            for i in subset {
                let p = &self.attempts[i];
                let target = Target {
                    proto: Proto::Tcp,
                    addr: env.addr(&p.to, p.port, p.via_service),
                    timeout_ms: ATTEMPT_TIMEOUT.as_millis() as u64,
                };
                let ns = env.pod(&p.from).netns_name().to_owned();
                groups.entry(ns).or_default().push((i, target));
            }
            let probe_bin = env.cluster.probe_bin().to_owned();
            let (log, stop) = (self.log.clone(), self.stop.clone());
            self.probers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    std::thread::scope(|s| {
                        for (ns, targets) in &groups {
                            let (log, bin) = (&log, &probe_bin);
                            s.spawn(move || {
                                for (pair, o) in batch(bin, ns, targets) {
                                    let (allowed, error) = (o.allowed, o.error);
                                    record(
                                        log,
                                        Event::Attempt {
                                            pair,
                                            at,
                                            allowed,
                                            error,
                                        },
                                    );
                                }
                            });
                        }
                    });
                    std::thread::sleep(Duration::from_millis(100).saturating_sub(at.elapsed()));
                }
            }));
        }
    }

    /// Stops everything and waits for the threads.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.probers.drain(..) {
            let _ = h.join();
        }
        for s in self.open.iter_mut().flatten() {
            s.stop.store(true, Ordering::SeqCst);
            if let Some(h) = s.handle.take() {
                let _ = h.join();
            }
        }
    }

    /// The recorded events.
    pub fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a pair is between pods of one node (for the report).
    pub fn same_node(env: &Env, pair: &Pair) -> bool {
        pair.same_node(env)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs one `probe batch` in namespace `ns`; outcomes by attempt index (none if it failed).
pub fn batch(
    bin: &std::path::Path,
    ns: &str,
    targets: &[(usize, Target)],
) -> Vec<(usize, Outcome)> {
    let Ok(mut cmd) = crate::netns::command_in(ns, bin) else {
        return Vec::new();
    };
    cmd.arg("batch");
    let list: Vec<&Target> = targets.iter().map(|(_, t)| t).collect();
    let Ok(input) = serde_json::to_vec(&list) else {
        return Vec::new();
    };
    let Ok(out) = crate::exec::run_with_input(&mut cmd, &input) else {
        return Vec::new();
    };
    let outcomes = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Outcome>(l).ok())
        .collect::<Vec<_>>();
    targets.iter().map(|(i, _)| *i).zip(outcomes).collect()
}
