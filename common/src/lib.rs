//! Types shared by the eBPF programs and the agent: map keys and values, verdicts, drop reasons,
//! event records and the pure packet parser.
//!
//! Every map type sits beside its key and value structs (as in Cilium's `bpf/lib/policy.h`).
//! All structs are `repr(C)` with explicit padding and no `bool`, so kernel and user space agree
//! byte for byte. The `user` feature implements `aya::Pod` for them.
#![cfg_attr(not(test), no_std)]

pub mod conntrack;
#[cfg(any(test, feature = "user"))]
pub mod craft;
pub mod endpoint;
pub mod event;
pub mod identity;
pub mod packet;
pub mod policy;
pub mod verdict;

/// Prefix of every pinned object and map name. Bump the version when a layout changes so that an
/// upgraded agent never reads a map written with another layout.
pub const PIN_VERSION: &str = "v1";

/// IP protocol numbers Palisade polices.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

/// Marks an IPv4 address as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), the single address form used in
/// every key so that one trie and one conntrack table serve both families.
#[inline(always)]
pub const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// Implements `aya::Pod` for plain `repr(C)` types when built for user space.
#[macro_export]
#[doc(hidden)]
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `repr(C)`, `Copy`, has explicit padding and no invalid bit patterns.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
