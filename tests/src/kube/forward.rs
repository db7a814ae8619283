//! Reaching the loopback API server from inside a test node: agents run in their node's
//! network namespace, whose 127.0.0.1 is not the machine's. A [`LoopbackForward`] listens on
//! 127.0.0.1:<port> *inside* the node namespace (a socket stays in the namespace it was
//! created in) and relays each connection to 127.0.0.1:<port> of the test's own namespace, so
//! the API server's kubeconfig (and its certificate for 127.0.0.1) works unchanged in both.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, Shutdown, TcpListener, TcpStream},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use super::ControlPlaneError;
use crate::{exec, netns};

/// A relay from a node namespace's loopback port to the same port here; stopped on drop.
#[derive(Debug)]
pub struct LoopbackForward {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl LoopbackForward {
    /// Listens on 127.0.0.1:`port` in namespace `netns` and relays to 127.0.0.1:`port` here.
    pub fn into_netns(netns_name: &str, port: u16) -> Result<Self, ControlPlaneError> {
        exec::run(Command::new("ip").args(["-n", netns_name, "link", "set", "lo", "up"]))?;
        let listener = netns::run_in(netns_name, move || {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        })?
        .map_err(ControlPlaneError::Forward)?;
        listener
            .set_nonblocking(true)
            .map_err(ControlPlaneError::Forward)?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (stop.clone(), conns.clone());
        let accept = std::thread::Builder::new()
            .name("api-forward".into())
            .spawn(move || accept_loop(&listener, port, &s, &c))
            .map_err(ControlPlaneError::Forward)?;
        Ok(Self {
            stop,
            conns,
            accept: Some(accept),
        })
    }
}

fn accept_loop(
    listener: &TcpListener,
    port: u16,
    stop: &AtomicBool,
    conns: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((inside, _)) => {
                let _ = inside.set_nonblocking(false);
                if let Ok(outside) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                    relay(inside, outside, conns);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn relay(a: TcpStream, b: TcpStream, conns: &Mutex<Vec<TcpStream>>) {
    let pairs = [
        (a.try_clone(), b.try_clone()),
        (b.try_clone(), a.try_clone()),
    ];
    if let Ok(mut list) = conns.lock() {
        list.extend([a, b]);
    }
    for pair in pairs {
        if let (Ok(mut from), Ok(mut to)) = pair {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
            });
        }
    }
}

impl Drop for LoopbackForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Ok(list) = self.conns.lock() {
            for c in list.iter() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}
