//! The background sync pass (CloudStack's `BackupSyncTask`), once per interval for every zone
//! where B&R is enabled:
//!
//! 1. **Storage stats** from the zone's provider when its capabilities say it reports real
//!    numbers; the latest per zone is kept in memory ([`Syncer::storage_stats`]).
//! 2. **Reconciliation** when the provider's capability `reconciliation` is true: for every
//!    instance assigned to an offering of that provider, `list-restore-points` is the
//!    provider's truth (instances and backups of offerings imported from another provider
//!    are not its to judge). Restore
//!    points bnr lacks are adopted (new `BackedUp` rows, `BACKUP.CREATE` event), sizes of known
//!    ones are updated, `BackedUp` backups the provider no longer has are retired (soft-removed,
//!    `BACKUP.DELETE` event). An instance whose call fails in any way (provider error, trap,
//!    limit, timeout) is left exactly as it was; a retryable failure (unavailable, timeout, busy)
//!    stops the zone's reconciliation for this pass, so an outage changes nothing. Instances with
//!    work in flight (a transitional backup or a pending job) are left for the next pass.
//! 3. **Deadlines**: a backup in a transitional state (`Allocated`, `Queued`, `BackingUp`,
//!    `Restoring`) past its deadline plus one interval is ended (`Failed`, or back to `BackedUp`
//!    for a restore, which leaves the backup intact) with the reason in `status_reason` and an
//!    event; a provider operation past its deadline plus one interval is cancelled, its row
//!    dropped and its job, if still pending, failed with 530 and the reason.
//! 4. **Usage**: [`super::usage::refresh_zone`] at the pass instant.
//!
//! The pass takes its instant (`now`) as an argument like the tick.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::store::db::{Connection, Transaction, params};
use jiff::Timestamp;
use parking_lot::RwLock;
use serde_json::json;

use super::usage::{self, UsageChanges};
use crate::config::{BACKUP_FRAMEWORK_ENABLED, BACKUP_SYNC_INTERVAL, Settings};
use crate::jobs::{INTERNAL_ERROR_CODE, JobFailure, JobManager};
use crate::store::events::{self, Level, NewEvent, State};
use crate::store::{OpError, Store, new_uuid};
use bnr_runtime::types::{self, RestorePoint};
use bnr_runtime::{CallContext, CallError, Provider};

/// Deadline of a transitional backup that has no provider operation row (its `start-*` call is
/// still running, or it was interrupted before a handle was persisted): every provider call is
/// bounded far below this, so a backup this old without an operation is orphaned.
pub const ORPHAN_DEADLINE_SECS: i64 = 3600;

/// Backup statuses that must not last: each ends `BackedUp`, `Error` or `Failed`.
pub const TRANSITIONAL_STATUSES: [&str; 4] = ["Allocated", "Queued", "BackingUp", "Restoring"];

/// The zone's provider and the context for calls that are not about one instance's host.
#[derive(Clone)]
pub struct ZoneProvider {
    pub provider: Arc<Provider>,
    pub ctx: CallContext,
}

/// How the sync pass reaches a zone's provider (implemented over the B&R service's provider
/// plumbing: zone setting → catalog/registry, declared settings, grants).
pub trait ProviderResolver: Send + Sync + 'static {
    /// `None` when the zone has no usable provider (unknown name, not loaded).
    fn zone_provider(&self, zone_id: i64, zone_uuid: &str) -> Option<ZoneProvider>;

    /// The component that started an operation, as recorded on it (`None` version and sha256:
    /// recorded before versions were), with the zone's call context for it; `None` when that
    /// component is gone and no version serving the name takes over its operations. By default:
    /// the zone's provider, only if it is that exact component (or, unrecorded, that name).
    fn operation_provider(
        &self,
        zone_id: i64,
        zone_uuid: &str,
        origin: &OperationOrigin,
    ) -> Option<ZoneProvider> {
        self.zone_provider(zone_id, zone_uuid).filter(|zp| {
            zp.provider.name() == origin.provider
                && origin
                    .sha256
                    .as_deref()
                    .is_none_or(|sha| sha == zp.provider.sha256())
        })
    }
}

/// Which provider component started an operation, as its row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationOrigin {
    pub provider: String,
    pub version: Option<String>,
    pub sha256: Option<String>,
}

/// One expired operation's cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    pub handle: String,
    /// The component the operation recorded.
    pub origin: OperationOrigin,
    /// sha256 of the component asked to cancel; `None`: none is loaded that may.
    pub asked_sha256: Option<String>,
    /// The provider's refusal, if it refused.
    pub error: Option<String>,
}

/// Latest storage numbers reported for a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneStorageStats {
    pub zone_id: i64,
    pub zone_uuid: String,
    pub zone_name: String,
    pub provider: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
    /// When they were collected (Unix seconds).
    pub collected: i64,
}

/// What reconciliation did in one zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Instances whose restore points were listed and applied.
    pub instances: usize,
    pub adopted: usize,
    pub updated: usize,
    pub retired: usize,
    /// Instances left unchanged because their call failed (uuid, reason).
    pub failed: Vec<(String, String)>,
    /// Instances left for the next pass because work is in flight.
    pub busy: usize,
    /// Set when a retryable failure stopped the zone's reconciliation.
    pub stopped: Option<String>,
}

/// What the pass did in one zone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZoneSync {
    pub zone_uuid: String,
    pub provider: Option<String>,
    pub stats: Option<Result<(u64, u64), String>>,
    pub reconciled: Option<Reconciled>,
    /// Backups and operations ended by their deadline.
    pub expired_backups: usize,
    pub expired_operations: usize,
    /// Cancellations of expired operations: the component asked (or `None`: none could be)
    /// and its answer.
    pub cancelled: Vec<Cancelled>,
    pub usage: UsageChanges,
    /// A store failure that cut the zone's pass short.
    pub error: Option<String>,
}

/// The outcome of the latest sync pass over a zone, kept in memory (since the process started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSyncStatus {
    pub zone_id: i64,
    pub zone_uuid: String,
    pub zone_name: String,
    /// The provider asked during the pass (none where B&R is off or no provider is loaded).
    pub provider: Option<String>,
    /// When the pass ran (Unix seconds; the pass's clock).
    pub finished: i64,
    pub duration_ms: u64,
    /// Why the pass failed (`None`: it succeeded).
    pub error: Option<String>,
    /// Passes of the zone that failed in a row, this one included.
    pub failures_in_a_row: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    pub zones: Vec<ZoneSync>,
}

impl SyncReport {
    pub fn zone(&self, zone_uuid: &str) -> Option<&ZoneSync> {
        self.zones.iter().find(|z| z.zone_uuid == zone_uuid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] OpError),
}

impl From<crate::store::StoreError> for SyncError {
    fn from(e: crate::store::StoreError) -> Self {
        SyncError::Store(OpError::Store(e))
    }
}

impl From<crate::store::db::Error> for SyncError {
    fn from(e: crate::store::db::Error) -> Self {
        SyncError::Store(OpError::from(e))
    }
}

/// Runs sync passes; keeps the latest storage stats per zone.
pub struct Syncer {
    store: Store,
    settings: Settings,
    jobs: JobManager,
    resolver: Arc<dyn ProviderResolver>,
    stats: RwLock<BTreeMap<i64, ZoneStorageStats>>,
    last_passes: RwLock<BTreeMap<i64, ZoneSyncStatus>>,
}

impl Syncer {
    pub fn new(
        store: Store,
        settings: Settings,
        jobs: JobManager,
        resolver: Arc<dyn ProviderResolver>,
    ) -> Syncer {
        Syncer {
            store,
            settings,
            jobs,
            resolver,
            stats: RwLock::new(BTreeMap::new()),
            last_passes: RwLock::new(BTreeMap::new()),
        }
    }

    /// The latest pass over every zone passed over since the process started, by zone id.
    pub fn last_passes(&self) -> Vec<ZoneSyncStatus> {
        self.last_passes.read().values().cloned().collect()
    }

    /// The latest storage stats of every zone that reported some, by zone id.
    pub fn storage_stats(&self) -> Vec<ZoneStorageStats> {
        self.stats.read().values().cloned().collect()
    }

    fn interval_secs(&self) -> i64 {
        super::task::interval_from_setting(self.settings.get_i64(BACKUP_SYNC_INTERVAL, None))
            .as_secs() as i64
    }

    /// One pass over every enabled zone at `now`.
    pub async fn pass(&self, now: Timestamp) -> SyncReport {
        let mut report = SyncReport::default();
        let zones: Vec<(i64, String, String)> = match self
            .store
            .read(|c| {
                let mut st = c.prepare_cached(
                    "SELECT id, uuid, name FROM zones WHERE removed IS NULL ORDER BY id",
                )?;
                let zones = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<crate::store::db::Result<Vec<_>>>()?;
                Ok::<_, OpError>(zones)
            })
            .await
        {
            Ok(zones) => zones,
            Err(e) => {
                tracing::error!(error = %e, "backup sync: cannot list zones");
                return report;
            }
        };
        let globally_enabled = self.settings.get_bool(BACKUP_FRAMEWORK_ENABLED, None);
        for (zone_id, zone_uuid, zone_name) in zones {
            let enabled = globally_enabled
                && self
                    .settings
                    .get_bool(BACKUP_FRAMEWORK_ENABLED, Some(zone_id));
            let mut zone = ZoneSync {
                zone_uuid: zone_uuid.clone(),
                ..ZoneSync::default()
            };
            let started = std::time::Instant::now();
            if let Err(e) = self
                .zone_pass(
                    zone_id,
                    &zone_uuid,
                    &zone_name,
                    enabled,
                    now.as_second(),
                    &mut zone,
                )
                .await
            {
                tracing::error!(zone = %zone_uuid, error = %e, "backup sync pass failed");
                zone.error = Some(e.to_string());
            }
            let error = zone.error.clone().or_else(|| match &zone.stats {
                Some(Err(e)) => Some(format!("storage statistics: {e}")),
                _ => None,
            });
            if let Some(metrics) = crate::metrics::get() {
                metrics.sync_pass(&zone_uuid, error.is_none(), started.elapsed());
            }
            {
                let mut last = self.last_passes.write();
                let failures_before = last.get(&zone_id).map_or(0, |p| p.failures_in_a_row);
                last.insert(
                    zone_id,
                    ZoneSyncStatus {
                        zone_id,
                        zone_uuid: zone_uuid.clone(),
                        zone_name: zone_name.clone(),
                        provider: zone.provider.clone(),
                        finished: now.as_second(),
                        duration_ms: u64::try_from(started.elapsed().as_millis())
                            .unwrap_or(u64::MAX),
                        failures_in_a_row: if error.is_some() {
                            failures_before.saturating_add(1)
                        } else {
                            0
                        },
                        error,
                    },
                );
            }
            report.zones.push(zone);
        }
        report
    }

    async fn zone_pass(
        &self,
        zone_id: i64,
        zone_uuid: &str,
        zone_name: &str,
        enabled: bool,
        now: i64,
        out: &mut ZoneSync,
    ) -> Result<(), SyncError> {
        // Deadlines and usage hold in every zone; the provider is only asked where B&R is on.
        let provider = enabled
            .then(|| self.resolver.zone_provider(zone_id, zone_uuid))
            .flatten();
        if let Some(zp) = &provider {
            let caps = zp.provider.info().capabilities;
            out.provider = Some(zp.provider.name().to_string());
            let wit_zone = types::Zone {
                uuid: zone_uuid.to_string(),
                name: zone_name.to_string(),
            };
            if caps.storage_stats {
                let result = zp.provider.storage_stats(&zp.ctx, &wit_zone).await;
                out.stats = Some(match result {
                    Ok(s) => {
                        self.stats.write().insert(
                            zone_id,
                            ZoneStorageStats {
                                zone_id,
                                zone_uuid: zone_uuid.to_string(),
                                zone_name: zone_name.to_string(),
                                provider: zp.provider.name().to_string(),
                                used_bytes: s.used_bytes,
                                total_bytes: s.total_bytes,
                                collected: now,
                            },
                        );
                        Ok((s.used_bytes, s.total_bytes))
                    }
                    Err(e) => {
                        tracing::warn!(zone = %zone_uuid, error = %e, "backup storage stats failed");
                        Err(e.to_string())
                    }
                });
            }
            if caps.reconciliation {
                out.reconciled = Some(self.reconcile(zone_id, zp, now).await?);
            }
        }
        let (backups, operations, cancelled) =
            self.expire(zone_id, zone_uuid, enabled, now).await?;
        out.cancelled = cancelled;
        out.expired_backups = backups;
        out.expired_operations = operations;
        out.usage = self
            .store
            .write(move |tx| usage::refresh_zone(tx, zone_id, now))
            .await?;
        Ok(())
    }

    /// Reconciles every assigned instance of the zone against the provider's restore points.
    pub async fn reconcile(
        &self,
        zone_id: i64,
        zp: &ZoneProvider,
        now: i64,
    ) -> Result<Reconciled, SyncError> {
        let provider_name = zp.provider.name().to_string();
        let name = provider_name.clone();
        let snapshot = self
            .store
            .read(move |c| ZoneSnapshot::load(c, zone_id, &name))
            .await?;
        let mut outcome = Reconciled::default();
        let mut plans: Vec<InstancePlan> = Vec::new();
        let mut session = match zp.provider.session(&zp.ctx).await {
            Ok(s) => s,
            Err(e) => {
                outcome.stopped = Some(e.to_string());
                return Ok(outcome);
            }
        };
        for vm in &snapshot.instances {
            if snapshot.busy.contains(&vm.id) {
                outcome.busy += 1;
                continue;
            }
            let points = match session.list_restore_points(&vm.instance).await {
                Ok(points) => points,
                Err(e) => {
                    tracing::warn!(vm = %vm.instance.uuid, provider = %provider_name, error = %e,
                        "listing restore points failed; instance left unchanged");
                    let retryable = e.is_retryable() || matches!(e, CallError::Instantiate(_));
                    outcome
                        .failed
                        .push((vm.instance.uuid.clone(), e.to_string()));
                    if retryable {
                        outcome.stopped = Some(e.to_string());
                        break;
                    }
                    continue;
                }
            };
            outcome.instances += 1;
            let known = snapshot.backups.get(&vm.id).map_or(&[][..], Vec::as_slice);
            let plan = InstancePlan::new(vm, known, points);
            if !plan.is_empty() {
                plans.push(plan);
            }
        }
        drop(session);
        if plans.is_empty() {
            return Ok(outcome);
        }
        let (adopted, updated, retired) = self
            .store
            .write(move |tx| apply_plans(tx, &plans, &provider_name, now))
            .await?;
        outcome.adopted = adopted;
        outcome.updated = updated;
        outcome.retired = retired;
        Ok(outcome)
    }

    /// Ends transitional backups and provider operations past their deadline plus one interval.
    /// An expired operation is cancelled on the component that started it (by its recorded
    /// sha256), not on whatever version serves the name now; only where B&R is on.
    async fn expire(
        &self,
        zone_id: i64,
        zone_uuid: &str,
        enabled: bool,
        now: i64,
    ) -> Result<(usize, usize, Vec<Cancelled>), SyncError> {
        let cutoff = now - self.interval_secs();
        let expired = self
            .store
            .write(move |tx| expire_in_tx(tx, zone_id, cutoff))
            .await?;
        let mut cancelled = Vec::new();
        for (handle, origin) in expired.cancel.into_iter().filter(|_| enabled) {
            let provider = origin.provider.as_str();
            let Some(zp) = self
                .resolver
                .operation_provider(zone_id, zone_uuid, &origin)
            else {
                tracing::warn!(
                    provider,
                    version = origin.version.as_deref().unwrap_or(""),
                    sha256 = origin.sha256.as_deref().unwrap_or(""),
                    "the provider version that started an expired operation is gone; not cancelled"
                );
                cancelled.push(Cancelled {
                    handle,
                    origin,
                    asked_sha256: None,
                    error: None,
                });
                continue;
            };
            let error = match zp.provider.cancel_operation(&zp.ctx, &handle).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(
                        provider,
                        version = zp.provider.version(),
                        sha256 = zp.provider.sha256(),
                        error = %e,
                        "cancelling an expired operation failed"
                    );
                    Some(e.to_string())
                }
            };
            cancelled.push(Cancelled {
                handle,
                origin,
                asked_sha256: Some(zp.provider.sha256().to_string()),
                error,
            });
        }
        for (job_uuid, reason) in &expired.fail_jobs {
            let failure = JobFailure {
                code: INTERNAL_ERROR_CODE,
                text: reason.clone(),
            };
            if let Err(e) = self.jobs.complete(job_uuid, Err(failure)).await {
                tracing::error!(job = %job_uuid, error = %e, "cannot fail an expired job");
            }
        }
        Ok((expired.backups, expired.operations, cancelled))
    }
}

// ---------------------------------------------------------------------------------------------
// Reconciliation

/// An assigned instance as the provider sees it.
struct SnapshotVm {
    id: i64,
    name: String,
    offering_id: i64,
    account_id: i64,
    domain_id: i64,
    volumes_json: String,
    instance: types::Instance,
}

/// A backup bnr has for an instance, on this provider.
#[derive(Debug, Clone)]
struct KnownBackup {
    id: i64,
    uuid: String,
    name: String,
    external_id: String,
    size: i64,
    protected_size: i64,
    status: String,
}

/// What the store says about a zone, read in one snapshot before the provider is asked.
struct ZoneSnapshot {
    instances: Vec<SnapshotVm>,
    backups: HashMap<i64, Vec<KnownBackup>>,
    /// Instances with work in flight.
    busy: HashSet<i64>,
}

impl ZoneSnapshot {
    fn load(c: &Connection, zone_id: i64, provider: &str) -> Result<ZoneSnapshot, OpError> {
        let mut volumes: HashMap<i64, Vec<(types::Volume, serde_json::Value)>> = HashMap::new();
        {
            let mut st = c.prepare_cached(
                "SELECT vol.vm_id, vol.uuid, vol.name, vol.type, vol.size_bytes, vol.path,
                        vol.device_id, dof.uuid
                 FROM volumes vol
                 JOIN vms v ON v.id = vol.vm_id
                 JOIN backup_offerings o ON o.id = v.backup_offering_id
                 LEFT JOIN disk_offerings dof ON dof.id = vol.disk_offering_id
                 WHERE v.zone_id = ?1 AND v.removed IS NULL AND o.provider = ?2
                   AND vol.removed IS NULL
                 ORDER BY vol.vm_id, vol.device_id, vol.id",
            )?;
            let mut rows = st.query(params![zone_id, provider])?;
            while let Some(r) = rows.next()? {
                let kind: String = r.get(3)?;
                let size: i64 = r.get(4)?;
                let device_id: Option<i64> = r.get(6)?;
                let disk_offering: Option<String> = r.get(7)?;
                let volume = types::Volume {
                    uuid: r.get(1)?,
                    name: r.get(2)?,
                    kind: if kind == "ROOT" {
                        types::VolumeKind::Root
                    } else {
                        types::VolumeKind::Datadisk
                    },
                    size: u64::try_from(size).unwrap_or(0),
                    path: r.get(5)?,
                    device_id: device_id.and_then(|d| u32::try_from(d).ok()).unwrap_or(0),
                    disk_offering_id: disk_offering.clone(),
                };
                let info = json!({
                    "uuid": volume.uuid,
                    "type": kind,
                    "size": size,
                    "path": volume.path,
                    "deviceId": device_id,
                    "diskOfferingId": disk_offering,
                });
                volumes.entry(r.get(0)?).or_default().push((volume, info));
            }
        }
        let mut instances = Vec::new();
        {
            let mut st = c.prepare_cached(
                "SELECT v.id, v.uuid, v.name, v.internal_name, v.hypervisor, v.host_address,
                        v.state, v.backup_external_id, v.backup_offering_id, v.account_id,
                        v.domain_id
                 FROM vms v JOIN backup_offerings o ON o.id = v.backup_offering_id
                 WHERE v.zone_id = ?1 AND v.removed IS NULL AND o.provider = ?2
                 ORDER BY v.id",
            )?;
            let mut rows = st.query(params![zone_id, provider])?;
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                let (vols, infos): (Vec<_>, Vec<_>) =
                    volumes.remove(&id).unwrap_or_default().into_iter().unzip();
                let name: String = r.get(2)?;
                instances.push(SnapshotVm {
                    id,
                    name: name.clone(),
                    offering_id: r.get(8)?,
                    account_id: r.get(9)?,
                    domain_id: r.get(10)?,
                    volumes_json: serde_json::Value::Array(infos).to_string(),
                    instance: types::Instance {
                        uuid: r.get(1)?,
                        name,
                        internal_name: r.get(3)?,
                        hypervisor: r.get(4)?,
                        host_address: r.get(5)?,
                        state: r.get(6)?,
                        volumes: vols,
                        provider_ref: r.get(7)?,
                    },
                });
            }
        }
        let mut backups: HashMap<i64, Vec<KnownBackup>> = HashMap::new();
        let mut busy = HashSet::new();
        {
            let mut st = c.prepare_cached(
                "SELECT b.vm_id, b.id, b.uuid, b.name, b.external_id, b.size, b.protected_size,
                        b.status
                 FROM backups b JOIN backup_offerings o ON o.id = b.backup_offering_id
                 WHERE b.zone_id = ?1 AND b.removed IS NULL AND b.vm_id IS NOT NULL
                   AND o.provider = ?2",
            )?;
            let mut rows = st.query(params![zone_id, provider])?;
            while let Some(r) = rows.next()? {
                let vm_id: i64 = r.get(0)?;
                let status: String = r.get(7)?;
                if TRANSITIONAL_STATUSES.contains(&status.as_str()) {
                    busy.insert(vm_id);
                }
                let external_id: Option<String> = r.get(4)?;
                let Some(external_id) = external_id else {
                    continue;
                };
                backups.entry(vm_id).or_default().push(KnownBackup {
                    id: r.get(1)?,
                    uuid: r.get(2)?,
                    name: r.get(3)?,
                    external_id,
                    size: r.get(5)?,
                    protected_size: r.get(6)?,
                    status,
                });
            }
        }
        {
            // A pending job about an instance (create, delete, restore) may be between the
            // provider call and the row that records it.
            let mut st = c.prepare_cached(
                "SELECT v.id FROM async_jobs j JOIN vms v ON v.uuid = j.instance_uuid
                 WHERE j.status = 0 AND v.zone_id = ?1
                 UNION
                 SELECT b.vm_id FROM async_jobs j JOIN backups b ON b.uuid = j.instance_uuid
                 WHERE j.status = 0 AND b.zone_id = ?1 AND b.vm_id IS NOT NULL",
            )?;
            let mut rows = st.query([zone_id])?;
            while let Some(r) = rows.next()? {
                busy.insert(r.get(0)?);
            }
        }
        Ok(ZoneSnapshot {
            instances,
            backups,
            busy,
        })
    }
}

/// The changes reconciliation makes for one instance.
struct InstancePlan {
    vm_id: i64,
    vm_uuid: String,
    vm_name: String,
    offering_id: i64,
    account_id: i64,
    domain_id: i64,
    zone_volumes_json: String,
    adopt: Vec<RestorePoint>,
    update: Vec<(KnownBackup, i64, i64)>,
    retire: Vec<KnownBackup>,
}

impl InstancePlan {
    fn new(vm: &SnapshotVm, known: &[KnownBackup], points: Vec<RestorePoint>) -> InstancePlan {
        let by_external: HashMap<&str, &KnownBackup> =
            known.iter().map(|b| (b.external_id.as_str(), b)).collect();
        let listed: HashSet<&str> = points.iter().map(|p| p.id.as_str()).collect();
        let mut adopt = Vec::new();
        let mut update = Vec::new();
        let mut seen = HashSet::new();
        for point in &points {
            // A provider listing the same id twice is answered once.
            if !seen.insert(point.id.as_str()) {
                continue;
            }
            match by_external.get(point.id.as_str()) {
                None => adopt.push(point.clone()),
                Some(b) => {
                    let size = i64::try_from(point.size).unwrap_or(i64::MAX);
                    let protected = i64::try_from(point.protected_size).unwrap_or(i64::MAX);
                    if b.status == "BackedUp" && (b.size != size || b.protected_size != protected) {
                        update.push(((*b).clone(), size, protected));
                    }
                }
            }
        }
        let retire = known
            .iter()
            .filter(|b| b.status == "BackedUp" && !listed.contains(b.external_id.as_str()))
            .cloned()
            .collect();
        InstancePlan {
            vm_id: vm.id,
            vm_uuid: vm.instance.uuid.clone(),
            vm_name: vm.name.clone(),
            offering_id: vm.offering_id,
            account_id: vm.account_id,
            domain_id: vm.domain_id,
            zone_volumes_json: vm.volumes_json.clone(),
            adopt,
            update,
            retire,
        }
    }

    fn is_empty(&self) -> bool {
        self.adopt.is_empty() && self.update.is_empty() && self.retire.is_empty()
    }
}

fn owner_event<'a>(
    plan: &InstancePlan,
    event_type: &'a str,
    description: &'a str,
    resource_uuid: &'a str,
) -> NewEvent<'a> {
    NewEvent {
        event_type,
        level: Level::Info,
        state: State::Completed,
        description,
        account_id: plan.account_id,
        domain_id: plan.domain_id,
        user_id: None,
        resource_type: Some("Backup"),
        resource_uuid: Some(resource_uuid),
    }
}

/// Applies reconciliation plans in one transaction. Every statement re-checks the state it
/// was planned on, so a backup changed since the snapshot is left alone.
fn apply_plans(
    tx: &Transaction<'_>,
    plans: &[InstancePlan],
    provider: &str,
    now: i64,
) -> Result<(usize, usize, usize), SyncError> {
    let (mut adopted, mut updated, mut retired) = (0, 0, 0);
    for plan in plans {
        // Still assigned to the same offering?
        let assigned: bool = tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM vms WHERE id = ?1 AND backup_offering_id = ?2
                               AND removed IS NULL)",
            )?
            .query_row(params![plan.vm_id, plan.offering_id], |r| r.get(0))?;
        if !assigned {
            continue;
        }
        for point in &plan.adopt {
            let exists: bool = tx
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM backups WHERE vm_id = ?1 AND external_id = ?2
                                   AND removed IS NULL)",
                )?
                .query_row(params![plan.vm_id, point.id], |r| r.get(0))?;
            if exists {
                continue;
            }
            let created = i64::try_from(point.created).unwrap_or(now);
            let name = format!("{}-{}", plan.vm_name, crate::store::format_date(created));
            let uuid = new_uuid();
            tx.prepare_cached(
                "INSERT INTO backups(uuid, name, description, vm_id, external_id, type, date, size,
                                     protected_size, status, backup_offering_id, account_id,
                                     domain_id, zone_id, backed_volumes)
                 SELECT ?1, ?2, ?3, v.id, ?4, ?5, ?6, ?7, ?8, 'BackedUp', ?9, v.account_id,
                        v.domain_id, v.zone_id, ?10
                 FROM vms v WHERE v.id = ?11",
            )?
            .execute(params![
                uuid,
                name,
                format!(
                    "Adopted from provider {provider} restore point {}",
                    point.id
                ),
                point.id,
                point.kind,
                created,
                i64::try_from(point.size).unwrap_or(i64::MAX),
                i64::try_from(point.protected_size).unwrap_or(i64::MAX),
                plan.offering_id,
                plan.zone_volumes_json,
                plan.vm_id
            ])?;
            let text = format!(
                "Backup {name} of instance {} adopted from provider {provider} restore point {}",
                plan.vm_uuid, point.id
            );
            events::record(tx, &owner_event(plan, "BACKUP.CREATE", &text, &uuid))?;
            adopted += 1;
        }
        for (backup, size, protected) in &plan.update {
            updated += tx
                .prepare_cached(
                    "UPDATE backups SET size = ?1, protected_size = ?2
                     WHERE id = ?3 AND removed IS NULL AND status = 'BackedUp'",
                )?
                .execute(params![size, protected, backup.id])?;
        }
        for backup in &plan.retire {
            let changed = tx
                .prepare_cached(
                    "UPDATE backups SET status = 'Removed', removed = ?1,
                            status_reason = ?2
                     WHERE id = ?3 AND removed IS NULL AND status = 'BackedUp'",
                )?
                .execute(params![
                    now,
                    format!(
                        "provider {provider} no longer has restore point {}",
                        backup.external_id
                    ),
                    backup.id
                ])?;
            if changed == 0 {
                continue;
            }
            let text = format!(
                "Backup {} ({}) of instance {} removed: provider {provider} no longer has restore point {}",
                backup.name, backup.uuid, plan.vm_uuid, backup.external_id
            );
            events::record(tx, &owner_event(plan, "BACKUP.DELETE", &text, &backup.uuid))?;
            retired += 1;
        }
    }
    Ok((adopted, updated, retired))
}

// ---------------------------------------------------------------------------------------------
// Deadlines

#[derive(Default)]
struct Expired {
    backups: usize,
    operations: usize,
    /// (handle, the component that started it) to cancel after the commit.
    cancel: Vec<(String, OperationOrigin)>,
    /// Pending jobs to fail after the commit, with the reason.
    fail_jobs: Vec<(String, String)>,
}

/// A backup in a transitional state, with its deadline.
struct StuckBackup {
    id: i64,
    uuid: String,
    name: String,
    status: String,
    account_id: i64,
    domain_id: i64,
    vm_id: Option<i64>,
    deadline: i64,
}

/// A provider operation past its deadline.
struct ExpiredOp {
    id: i64,
    handle: String,
    provider: String,
    provider_version: Option<String>,
    provider_sha256: Option<String>,
    kind: String,
    deadline: i64,
    payload: String,
    job_uuid: Option<String>,
    job_status: Option<i64>,
    /// (account, domain, user) of the job.
    owner: Option<(i64, i64, i64)>,
}

/// An abandoned restore leaves its instance as a failed restore would: restored in place →
/// `Stopped` with `Ready` volumes; a new instance allocated for it → expunged (it holds no
/// data). Recorded as a `BACKUP.RESTORE` error for the job's owner.
fn give_back_restored_instance(
    tx: &Transaction<'_>,
    op: &ExpiredOp,
    reason: &str,
) -> Result<(), SyncError> {
    let payload: serde_json::Value = serde_json::from_str(&op.payload).unwrap_or_default();
    if let Some(vm) = payload["vm"].as_str() {
        tx.prepare_cached(
            "UPDATE volumes SET state = 'Ready' WHERE state = 'Restoring' AND removed IS NULL
             AND vm_id = (SELECT id FROM vms WHERE uuid = ?1)",
        )?
        .execute([vm])?;
        tx.prepare_cached(
            "UPDATE vms SET state = 'Stopped' WHERE uuid = ?1 AND state = 'Restoring'",
        )?
        .execute([vm])?;
    }
    if let Some(vm) = payload["newvm"].as_str() {
        let now = crate::store::now();
        tx.prepare_cached(
            "UPDATE volumes SET state = 'Expunged', removed = ?2 WHERE removed IS NULL
             AND vm_id = (SELECT id FROM vms WHERE uuid = ?1 AND state = 'Restoring')",
        )?
        .execute(params![vm, now])?;
        tx.prepare_cached(
            "UPDATE vms SET state = 'Expunging', removed = ?2 WHERE uuid = ?1 AND state = 'Restoring'",
        )?
        .execute(params![vm, now])?;
    }
    if let Some((account_id, domain_id, user_id)) = op.owner {
        let resource = payload["backup"].as_str();
        events::record(
            tx,
            &NewEvent {
                event_type: "BACKUP.RESTORE",
                level: Level::Error,
                state: State::Completed,
                description: reason,
                account_id,
                domain_id,
                user_id: Some(user_id),
                resource_type: resource.map(|_| "Backup"),
                resource_uuid: resource,
            },
        )?;
    }
    Ok(())
}

/// In one transaction: ends transitional backups whose deadline (their operation's, else their
/// creation plus [`ORPHAN_DEADLINE_SECS`]) is before `cutoff`, and drops operations whose
/// deadline is before `cutoff` (collecting their pending jobs and handles).
fn expire_in_tx(tx: &Transaction<'_>, zone_id: i64, cutoff: i64) -> Result<Expired, SyncError> {
    let mut out = Expired::default();
    let stuck: Vec<StuckBackup> = {
        let mut st = tx.prepare_cached(
            "SELECT b.id, b.uuid, b.name, b.status, b.account_id, b.domain_id, b.vm_id,
                    COALESCE((SELECT MAX(p.deadline) FROM provider_operations p
                              WHERE p.backup_id = b.id), b.date + ?2)
             FROM backups b
             WHERE b.zone_id = ?1 AND b.removed IS NULL
               AND b.status IN ('Allocated', 'Queued', 'BackingUp', 'Restoring')",
        )?;
        st.query_map(params![zone_id, ORPHAN_DEADLINE_SECS], |r| {
            Ok(StuckBackup {
                id: r.get(0)?,
                uuid: r.get(1)?,
                name: r.get(2)?,
                status: r.get(3)?,
                account_id: r.get(4)?,
                domain_id: r.get(5)?,
                vm_id: r.get(6)?,
                deadline: r.get(7)?,
            })
        })?
        .collect::<crate::store::db::Result<_>>()?
    };
    // Operations after the backups: a backup's deadline is its operation's.
    let ops: Vec<ExpiredOp> = {
        let mut st = tx.prepare_cached(
            "SELECT p.id, p.handle, p.provider, p.kind, p.deadline, p.payload, j.uuid, j.status,
                    j.account_id, a.domain_id, j.user_id, p.provider_version, p.provider_sha256
             FROM provider_operations p
             LEFT JOIN async_jobs j ON j.id = p.job_id
             LEFT JOIN accounts a ON a.id = j.account_id
             WHERE p.zone_id = ?1 AND p.deadline < ?2",
        )?;
        st.query_map(params![zone_id, cutoff], |r| {
            Ok(ExpiredOp {
                id: r.get(0)?,
                handle: r.get(1)?,
                provider: r.get(2)?,
                provider_version: r.get(11)?,
                provider_sha256: r.get(12)?,
                kind: r.get(3)?,
                deadline: r.get(4)?,
                payload: r.get(5)?,
                job_uuid: r.get(6)?,
                job_status: r.get(7)?,
                owner: match (r.get::<Option<i64>>(8)?, r.get::<Option<i64>>(9)?) {
                    (Some(a), Some(d)) => Some((a, d, r.get(10)?)),
                    _ => None,
                },
            })
        })?
        .collect::<crate::store::db::Result<_>>()?
    };
    for op in ops {
        let ExpiredOp {
            id,
            handle,
            provider,
            kind,
            deadline,
            ..
        } = &op;
        let reason = format!(
            "The {kind} operation on provider {provider} did not finish by its deadline {}",
            crate::store::format_date(*deadline)
        );
        if kind == "restore" {
            give_back_restored_instance(tx, &op, &reason)?;
        }
        if let (Some(job), Some(0)) = (&op.job_uuid, op.job_status) {
            out.fail_jobs.push((job.clone(), reason));
        }
        let origin = OperationOrigin {
            provider: provider.clone(),
            version: op.provider_version.clone(),
            sha256: op.provider_sha256.clone(),
        };
        let (id, handle) = (*id, handle.clone());
        out.cancel.push((handle, origin));
        tx.prepare_cached("DELETE FROM provider_operations WHERE id = ?1")?
            .execute([id])?;
        out.operations += 1;
    }
    for StuckBackup {
        id,
        uuid,
        name,
        status,
        account_id,
        domain_id,
        vm_id,
        deadline,
    } in stuck
    {
        if deadline >= cutoff {
            continue;
        }
        let restoring = status == "Restoring";
        let (new_status, event_type, reason) = if restoring {
            (
                "BackedUp",
                "BACKUP.RESTORE",
                format!(
                    "Restore from backup {name} did not finish by its deadline {}; the backup is unchanged",
                    crate::store::format_date(deadline)
                ),
            )
        } else {
            (
                "Failed",
                "BACKUP.CREATE",
                format!(
                    "Backup {name} did not finish by its deadline {} (was {status})",
                    crate::store::format_date(deadline)
                ),
            )
        };
        tx.prepare_cached(
            "UPDATE backups SET status = ?1, status_reason = ?2 WHERE id = ?3 AND status = ?4",
        )?
        .execute(params![new_status, reason, id, status])?;
        if restoring && let Some(vm_id) = vm_id {
            // The instance was held in Restoring for this restore; give it back, stopped.
            tx.prepare_cached(
                "UPDATE vms SET state = 'Stopped' WHERE id = ?1 AND state = 'Restoring'",
            )?
            .execute([vm_id])?;
            tx.prepare_cached(
                "UPDATE volumes SET state = 'Ready' WHERE vm_id = ?1 AND state = 'Restoring'",
            )?
            .execute([vm_id])?;
        }
        events::record(
            tx,
            &NewEvent {
                event_type,
                level: Level::Error,
                state: State::Completed,
                description: &reason,
                account_id,
                domain_id,
                user_id: None,
                resource_type: Some("Backup"),
                resource_uuid: Some(&uuid),
            },
        )?;
        tracing::warn!(backup = %uuid, reason = %reason, "ended a backup stuck in {status}");
        out.backups += 1;
    }
    Ok(out)
}
