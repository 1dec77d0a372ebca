//! One integration-test binary; each module is one area.
mod support;
mod support_api;
mod support_peers;
mod support_replicas;

mod runtime;
mod runtime_cache;
mod runtime_cli;
mod runtime_exec;
mod runtime_hostile;
mod runtime_swap;
mod server_answers;
mod server_auth;
mod server_config;
mod server_credentials;
mod server_envelopes;
mod server_garbage;
mod server_inventory;
mod server_inventory_lifecycle;
mod server_jobs;
mod server_kvm;
mod server_socket;

mod bnr_support;

mod bnr_assign;
mod bnr_backups;
mod bnr_hostile;
mod bnr_offerings;
mod bnr_operations;
mod bnr_providers;
mod bnr_restore;
mod bnr_schedules;
mod bnr_vmware;

mod sched_support;

mod sched_recovery;
mod sched_sync;
mod sched_ticks;

mod sec_matrix;
mod sec_rotate;
mod sec_store;
mod sec_tenant;
mod store_copy;

mod ha_exactly_once;
mod ha_replicas;
mod ha_sessions;
mod ops_health;
mod ops_shutdown;
mod ops_trouble;
mod veeam_e2e;

mod lifecycle_cli;
mod lifecycle_grants;
mod lifecycle_plugins;
mod lifecycle_takeover;
mod mixed_vendors;
mod networker_e2e;
mod vendor_template;
