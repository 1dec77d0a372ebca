//! Backup scheduling and background work: the pure schedule math ([`schedule`]), the scheduler
//! tick ([`tick`]), the sync pass ([`sync`]: storage stats, reconciliation, deadlines, usage),
//! time-weighted usage ([`usage`]), the loop running them ([`task`]), and how all of it reaches
//! the B&R service ([`service`]: scheduled backups and retention, zone providers, resuming
//! provider operations after a restart). See docs/scheduler.md.

pub mod schedule;
pub mod service;
pub mod sync;
pub mod task;
pub mod tick;
pub mod usage;

#[cfg(test)]
mod tests;
