//! bnr's integration tests: one binary, one submodule per area.

mod support;

mod runtime;
mod runtime_cache;
mod runtime_cli;
mod runtime_hostile;
mod runtime_swap;
