//! bnr: a Backup & Recovery control plane.
pub mod runtime;
pub mod scheduler;
