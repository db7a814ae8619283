//! A pipelined connection prober for update-latency measurements: from inside a pod's
//! namespace it starts a new TCP connection every `interval` (non-blocking, a fresh source port
//! each time, so conntrack never carries an old verdict) and records, per attempt, when it was
//! sent and whether the handshake completed within `grace`. A slow answer therefore never looks
//! like a denial, and the send times give the resolution (the interval), not the timeout.

use std::{
    net::SocketAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Why the prober could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProberError {
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error("socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("the prober thread panicked")]
    Panicked,
}

/// One connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub sent: Instant,
    /// The handshake completed (the destination pod answered).
    pub allowed: bool,
}

/// A running prober; [`Prober::stop`] ends it and returns every resolved attempt.
#[derive(Debug)]
pub struct Prober {
    stop: Arc<AtomicBool>,
    resolved: Arc<Mutex<Vec<Attempt>>>,
    handle: Option<JoinHandle<Result<(), ProberError>>>,
}

impl Prober {
    /// Starts probing `target` from namespace `netns`.
    pub fn start(netns: &str, target: SocketAddr, interval: Duration, grace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let resolved = Arc::new(Mutex::new(Vec::new()));
        let (s, r, ns) = (stop.clone(), resolved.clone(), netns.to_owned());
        let handle = std::thread::spawn(move || {
            crate::netns::run_in(&ns, || run(target, interval, grace, &s, &r))?
        });
        Self {
            stop,
            resolved,
            handle: Some(handle),
        }
    }

    /// The attempts resolved so far, in the order they resolved.
    pub fn snapshot(&self) -> Vec<Attempt> {
        self.resolved.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stops sending, waits for the pending attempts, and returns all of them by send time.
    pub fn stop(mut self) -> Result<Vec<Attempt>, ProberError> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().map_err(|_| ProberError::Panicked)??;
        }
        let mut all = self.snapshot();
        all.sort_by_key(|a| a.sent);
        Ok(all)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn sockaddr(target: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill in the variant we need.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match target {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, libc::socklen_t::try_from(len).unwrap_or(0))
}

/// A non-blocking socket with the connect started. Closing it resets the connection
/// (`SO_LINGER` 0), so thousands of probes leave no TIME_WAIT behind.
fn start_connect(target: SocketAddr) -> Result<(OwnedFd, bool), ProberError> {
    let domain = if target.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on a descriptor we own.
    unsafe {
        let fd = libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(ProberError::Socket(std::io::Error::last_os_error()));
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            libc::socklen_t::try_from(size_of::<libc::linger>()).unwrap_or(0),
        );
        let (ss, len) = sockaddr(target);
        let rc = libc::connect(fd, (&raw const ss).cast(), len);
        if rc == 0 {
            return Ok((owned, true));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINPROGRESS) {
            Ok((owned, false))
        } else {
            // Refused or unreachable at once: resolved as not allowed.
            Ok((owned, true))
        }
    }
}

fn so_error(fd: &OwnedFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(0);
    // SAFETY: getsockopt writes an int into `err`.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        );
    }
    err
}

fn run(
    target: SocketAddr,
    interval: Duration,
    grace: Duration,
    stop: &AtomicBool,
    out: &Mutex<Vec<Attempt>>,
) -> Result<(), ProberError> {
    let mut pending: Vec<(Instant, OwnedFd)> = Vec::new();
    let mut next = Instant::now();
    let push = |a: Attempt| {
        if let Ok(mut v) = out.lock() {
            v.push(a);
        }
    };
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && pending.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if !stopping && now >= next {
            let (fd, done) = start_connect(target)?;
            if done {
                let allowed = so_error(&fd) == 0;
                push(Attempt { sent: now, allowed });
            } else {
                pending.push((now, fd));
            }
            next += interval;
            if next < now {
                next = now + interval;
            }
        }
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|(_, fd)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        let wait = next.saturating_duration_since(Instant::now()).min(interval);
        let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(1).max(0);
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let now = Instant::now();
        let mut i = 0;
        pending.retain(|(sent, fd)| {
            let ready = fds.get(i).is_some_and(|p| p.revents != 0);
            i += 1;
            if ready {
                push(Attempt {
                    sent: *sent,
                    allowed: so_error(fd) == 0,
                });
                false
            } else if now.duration_since(*sent) > grace {
                push(Attempt {
                    sent: *sent,
                    allowed: false,
                });
                false
            } else {
                true
            }
        });
    }
}

/// The time from `t0` to the first attempt sent after `t0` from which every later attempt shows
/// `verdict`, if the attempts show one that has held for at least `stable`.
pub fn transition(
    attempts: &[Attempt],
    t0: Instant,
    verdict: bool,
    stable: Duration,
) -> Option<Duration> {
    let mut sorted: Vec<&Attempt> = attempts.iter().filter(|a| a.sent >= t0).collect();
    sorted.sort_by_key(|a| a.sent);
    let last_other = sorted.iter().rposition(|a| a.allowed != verdict);
    let first = match last_other {
        Some(i) => *sorted.get(i + 1)?,
        None => *sorted.first()?,
    };
    let last = sorted.last()?;
    (last.sent.duration_since(first.sent) >= stable).then(|| first.sent.duration_since(t0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_needs_a_stable_tail() {
        let t0 = Instant::now();
        let at = |ms: u64, allowed: bool| Attempt {
            sent: t0 + Duration::from_millis(ms),
            allowed,
        };
        let a: Vec<Attempt> = (0..10)
            .map(|i| at(i, true))
            .chain((10..200).map(|i| at(i, i % 50 != 0 && i > 40)))
            .collect();
        // Denied until 40 (and a blip at 50, 100, 150): the last flip back is at 150.
        assert_eq!(
            transition(&a, t0, true, Duration::from_millis(20)),
            Some(Duration::from_millis(151))
        );
        assert_eq!(transition(&a, t0, true, Duration::from_millis(60)), None);
        assert_eq!(transition(&[], t0, true, Duration::ZERO), None);
    }
}
