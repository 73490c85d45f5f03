//! The planner component in wasmtime: one engine, the component compiled once,
//! an `InstancePre`, and a fresh sandboxed store for each session.
//!
//! The guest gets a WASI context with no preopens, no environment, no
//! arguments and no network. It reaches the WAL directory and the archive only
//! through the `storage` imports, which [`crate::storage::Storage`] confines.

use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::storage::Storage;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "archiver",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

/// The WIT types, as the host uses them.
pub use nodedb::wal_archiver::types as wit;
pub use exports::nodedb::wal_archiver::planner::{CycleReport, ScanReport};

/// The planner component built from `guest/` by `build.rs`.
pub static EMBEDDED_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wal_archiver_planner.wasm"));

/// Why the planner could not be loaded or called.
#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error("cannot load planner component {plugin}: {cause}")]
    Load { plugin: String, cause: String },
    #[error("cannot instantiate planner component {plugin}: {cause}")]
    Instantiate { plugin: String, cause: String },
    #[error("cannot call `{function}` in planner component {plugin}: {cause}")]
    Call { plugin: String, function: &'static str, cause: String },
    #[error("planner component {plugin} returned a bad result from `{function}`: {cause}")]
    BadResult { plugin: String, function: &'static str, cause: String },
}

/// The store's data: WASI (empty) and, for `run-cycle`, the storage imports.
pub struct HostCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    storage: Option<Arc<Storage>>,
}

impl WasiView for HostCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wit::Host for HostCtx {}

impl nodedb::wal_archiver::storage::Host for HostCtx {
    fn list_wal_dir(&mut self) -> Result<Vec<wit::DirEntry>, wit::StorageError> {
        self.storage()?.list_wal_dir()
    }

    fn list_archive(&mut self) -> Result<Vec<wit::ArchivedObject>, wit::StorageError> {
        self.storage()?.list_archive()
    }

    fn upload(&mut self, name: String, key: String, verify: bool) -> Result<wit::UploadReceipt, wit::StorageError> {
        self.storage()?.upload(&name, &key, verify)
    }

    fn delete_segment(&mut self, name: String) -> Result<(), wit::StorageError> {
        self.storage()?.delete_segment(&name)
    }
}

impl HostCtx {
    fn storage(&self) -> Result<&Storage, wit::StorageError> {
        self.storage
            .as_deref()
            .ok_or_else(|| wit::StorageError::Refused("this session has no storage".into()))
    }
}

/// The compiled planner, ready to instantiate.
pub struct PlannerRuntime {
    pre: ArchiverPre<HostCtx>,
    engine: Engine,
    plugin: String,
}

impl PlannerRuntime {
    /// Compiles the embedded component.
    pub fn embedded() -> Result<Self, PlannerError> {
        Self::from_bytes(EMBEDDED_COMPONENT, "(embedded)")
    }

    /// Compiles a component from its bytes; `plugin` names it in errors.
    pub fn from_bytes(bytes: &[u8], plugin: &str) -> Result<Self, PlannerError> {
        let load = |cause: wasmtime::Error| PlannerError::Load {
            plugin: plugin.to_owned(),
            cause: format!("{cause:#}"),
        };
        let engine = Engine::default();
        let component = Component::new(&engine, bytes).map_err(load)?;
        let mut linker = Linker::<HostCtx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(load)?;
        Archiver::add_to_linker::<HostCtx, HasSelf<HostCtx>>(&mut linker, |ctx| ctx).map_err(load)?;
        let pre = linker.instantiate_pre(&component).map_err(load)?;
        let pre = ArchiverPre::new(pre).map_err(load)?;
        Ok(Self { pre, engine, plugin: plugin.to_owned() })
    }

    /// The name errors use for this component.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// A fresh store and instance. `storage` backs the imports for `run-cycle`.
    pub fn session(&self, storage: Option<Arc<Storage>>) -> Result<Planner, PlannerError> {
        let ctx = HostCtx {
            // No preopens, no environment, no arguments, no network.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            storage,
        };
        let mut store = Store::new(&self.engine, ctx);
        let bindings = self.pre.instantiate(&mut store).map_err(|cause| PlannerError::Instantiate {
            plugin: self.plugin.clone(),
            cause: format!("{cause:#}"),
        })?;
        Ok(Planner { store, bindings, plugin: self.plugin.clone() })
    }
}

/// One instance of the planner.
pub struct Planner {
    store: Store<HostCtx>,
    bindings: Archiver,
    plugin: String,
}

macro_rules! call {
    ($self:ident, $name:literal, $method:ident ( $($arg:expr),* )) => {{
        let planner = $self.bindings.nodedb_wal_archiver_planner();
        planner.$method(&mut $self.store, $($arg),*).map_err(|cause| PlannerError::Call {
            plugin: $self.plugin.clone(),
            function: $name,
            cause: format!("{cause:#}"),
        })
    }};
}

impl Planner {
    pub fn parse_segment_name(&mut self, name: &str) -> Result<Result<wit::SegmentName, wit::NameError>, PlannerError> {
        call!(self, "parse-segment-name", call_parse_segment_name(name))
    }

    pub fn format_segment_name(&mut self, first: u64, last: u64) -> Result<Result<String, wit::NameError>, PlannerError> {
        call!(self, "format-segment-name", call_format_segment_name(first, last))
    }

    pub fn reconcile(&mut self, state: &wit::ArchiverState, archive: &[wit::ArchivedObject]) -> Result<wit::ArchiverState, PlannerError> {
        call!(self, "reconcile", call_reconcile(state, archive))
    }

    pub fn retry_delay(&mut self, config: &wit::ArchiverConfig, attempts: u32, random: u64) -> Result<u64, PlannerError> {
        call!(self, "retry-delay", call_retry_delay(config, attempts, random))
    }

    pub fn scan(&mut self, listing: &[wit::DirEntry], state: &wit::ArchiverState) -> Result<ScanReport, PlannerError> {
        call!(self, "scan", call_scan(listing, state))
    }

    pub fn plan_batch(&mut self, config: &wit::ArchiverConfig, pending: &[wit::Segment]) -> Result<Vec<wit::ArchiveTask>, PlannerError> {
        call!(self, "plan-batch", call_plan_batch(config, pending))
    }

    pub fn record_archived(
        &mut self,
        state: &wit::ArchiverState,
        task: &wit::ArchiveTask,
        receipt: wit::UploadReceipt,
    ) -> Result<Result<wit::ArchiverState, wit::VerifyError>, PlannerError> {
        call!(self, "record-archived", call_record_archived(state, task, receipt))
    }

    pub fn record_failed(&mut self, state: &wit::ArchiverState, task: &wit::ArchiveTask, reason: &str) -> Result<wit::ArchiverState, PlannerError> {
        call!(self, "record-failed", call_record_failed(state, task, reason))
    }

    pub fn deletable(
        &mut self,
        config: &wit::ArchiverConfig,
        state: &wit::ArchiverState,
        listing: &[wit::DirEntry],
    ) -> Result<Vec<wit::Segment>, PlannerError> {
        call!(self, "deletable", call_deletable(config, state, listing))
    }

    pub fn rpo_gap(&mut self, state: &wit::ArchiverState, current: u64) -> Result<u64, PlannerError> {
        call!(self, "rpo-gap", call_rpo_gap(state, current))
    }

    pub fn run_cycle(
        &mut self,
        config: &wit::ArchiverConfig,
        state: &wit::ArchiverState,
    ) -> Result<Result<CycleReport, wit::StorageError>, PlannerError> {
        call!(self, "run-cycle", call_run_cycle(config, state))
    }

    /// The name errors use for this planner.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }
}
