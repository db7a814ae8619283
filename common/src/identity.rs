//! The node-wide identity trie: peer IP prefix → identity. One longest-prefix lookup classifies any
//! peer address; see `docs/dataplane.md`.

/// Name of the identity LPM trie.
pub const MAP_IDENTITY: &str = "PAL_IDENT_V1";
/// Maximum number of prefixes (pod IPs plus distinct ipBlock prefixes plus node addresses).
pub const IDENTITY_MAX_ENTRIES: u32 = 262_144;

/// Wildcard identity used only in policy keys: "any peer".
pub const IDENTITY_ANY: u32 = 0;
/// An address that matches no more specific prefix.
pub const IDENTITY_WORLD: u32 = 1;
/// The node's own addresses.
pub const IDENTITY_HOST: u32 = 2;
/// Identities at or above this are allocated by the compiler.
pub const IDENTITY_FIRST_DYNAMIC: u32 = 256;

/// Key data of the identity trie: an IPv6 address or IPv4-mapped address. Prefix lengths of IPv4
/// prefixes are offset by 96.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey {
    pub addr: [u8; 16],
}

/// Value of the identity trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityValue {
    pub identity: u32,
    pub _pad: u32,
}

crate::user_pod!(IdentityKey, IdentityValue);
