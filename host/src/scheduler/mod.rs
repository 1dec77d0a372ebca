//! Backup scheduling and background work: the pure schedule math ([`schedule`]), the scheduler
//! tick ([`tick`]), the sync pass ([`sync`]: storage stats, reconciliation, deadlines, usage),
//! time-weighted usage ([`usage`]) and the loop running them ([`task`]).

pub mod schedule;
pub mod sync;
pub mod task;
pub mod tick;
pub mod usage;

#[cfg(test)]
mod tests;
