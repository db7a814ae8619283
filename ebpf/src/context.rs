//! Reading the skb: the `Packet` implementation the common parser runs on, and the few `__sk_buff`
//! fields the hooks need.

use aya_ebpf::programs::TcContext;
use palisade_common::packet::Packet;

/// A `TcContext` as a byte source for the parser (through `bpf_skb_load_bytes`, which also works
/// on non-linear skbs).
pub struct Skb<'a>(pub &'a TcContext);

impl Packet for Skb<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.0.load::<[u8; N]>(offset).ok()
    }
}

#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    unsafe { (*ctx.skb.skb).ifindex }
}

#[inline(always)]
pub fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: as above.
    unsafe { (*ctx.skb.skb).mark }
}

/// Writes `bits` into the mark under `mask`, leaving other owners' bits (kube-proxy's 0x4000 and
/// 0x8000) alone.
#[inline(always)]
pub fn set_mark_masked(ctx: &TcContext, mask: u32, bits: u32) {
    let m = (mark(ctx) & !mask) | (bits & mask);
    ctx.set_mark(m);
}
