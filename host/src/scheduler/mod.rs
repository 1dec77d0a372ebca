//! Backup scheduling: the pure schedule math lives in [`schedule`].

pub mod schedule;
