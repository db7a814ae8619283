//! Pod-to-pod and pod-to-Service traffic through real CNI-wired pods and kube-proxy-style
//! rules, for each CNI mode and IP family. Needs root; skips otherwise.

mod common;

use palisade_tests::{require_root, CniMode, Family};

#[test]
fn bridge_ipv4() {
    require_root!();
    common::connectivity(Family::Ipv4, CniMode::Bridge);
}

#[test]
fn bridge_ipv6() {
    require_root!();
    common::connectivity(Family::Ipv6, CniMode::Bridge);
}

#[test]
fn bridge_dual() {
    require_root!();
    common::connectivity(Family::Dual, CniMode::Bridge);
}

#[test]
fn ptp_ipv4() {
    require_root!();
    common::connectivity(Family::Ipv4, CniMode::Ptp);
}

#[test]
fn ptp_ipv6() {
    require_root!();
    common::connectivity(Family::Ipv6, CniMode::Ptp);
}

#[test]
fn ptp_dual() {
    require_root!();
    common::connectivity(Family::Dual, CniMode::Ptp);
}
