//! bnr: a Backup & Recovery control plane.
pub mod runtime;
