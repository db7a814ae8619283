//! Palisade's TC programs. On each local pod's host-side veth:
//! - `pal_from_pod` (tc ingress) sees what the pod sends and enforces the pod's **egress**;
//! - `pal_to_pod` (tc egress) sees what the pod receives and enforces its **ingress**;
//! - `pal_uplink` (tc egress of the node's uplink) completes egress verdicts that were deferred
//!   past Service translation for traffic leaving the node.
#![no_std]
#![no_main]

mod conntrack;
mod context;
mod events;
mod hook;
mod lookup;
mod maps;

use aya_ebpf::{macros::classifier, programs::TcContext};
use palisade_common::verdict::Direction;

#[classifier]
pub fn pal_from_pod(ctx: TcContext) -> i32 {
    hook::endpoint(&ctx, Direction::Egress)
}

#[classifier]
pub fn pal_to_pod(ctx: TcContext) -> i32 {
    hook::endpoint(&ctx, Direction::Ingress)
}

#[classifier]
pub fn pal_uplink(ctx: TcContext) -> i32 {
    hook::uplink(&ctx)
}

/// Does nothing: the baseline that per-packet costs are measured against (BPF_PROG_TEST_RUN
/// itself costs well over 100 ns per run). Never attached.
#[classifier]
pub fn pal_baseline(_ctx: TcContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
