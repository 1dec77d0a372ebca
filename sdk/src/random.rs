//! Random identifiers from the host's `wasi:random` (cryptographically secure).

use core::fmt::Write;

/// A random `u64`.
pub fn u64() -> u64 {
    wasip2::random::random::get_random_u64()
}

/// `bytes` random bytes as lower-case hex (`2 * bytes` characters).
pub fn hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    for byte in wasip2::random::random::get_random_bytes(bytes as u64) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A random version-4 UUID, e.g. `0b9c6f5e-2d0a-4c39-9a8e-5f1c2b7d4e61`.
pub fn uuid() -> String {
    let mut bytes = wasip2::random::random::get_random_bytes(16);
    bytes.resize(16, 0);
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut out = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}
