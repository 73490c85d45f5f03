//! The planner component in wasmtime: one engine, the component compiled once,
//! an `InstancePre`, and a fresh sandboxed store for each session.
//!
//! The guest gets a WASI context with no preopens, no environment, no
//! arguments and no network. It reaches the WAL directory and the archive only
//! through the `storage` imports, which [`crate::storage::Storage`] confines.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use crate::bindings::{wit, Archiver, ArchiverPre, CycleReport, PruneError, PruneOrder, RangeError, RecordReport, RestoreError, ScanReport, VerifyReport};
use crate::imports::{Imports, StorageImports};

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
    #[error("cannot use planner component {plugin}: expected {EXPECTED}; found {found}")]
    Refused { plugin: String, found: String },
}

/// What a planner plugin must be, as refusals say it.
pub const EXPECTED: &str = "a WebAssembly component of world nodedb:wal-archiver/archiver@0.7.0, \
    exporting nodedb:wal-archiver/planner@0.7.0 and importing nothing but \
    nodedb:wal-archiver/storage@0.7.0, nodedb:wal-archiver/types@0.7.0 and WASI 0.2";

/// How far a planner may go. Each limit fails the call that breaches it, and
/// only that call: the host carries on and retries on the next cycle.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall time for one call of a pure planner function.
    pub deadline: Duration,
    /// Wall time for one `run-cycle`, which uploads through the imports.
    pub cycle_deadline: Duration,
    /// Linear memory of one instance, in bytes.
    pub memory: usize,
    /// Instances, tables and memories in one store.
    pub instances: usize,
    pub tables: usize,
    pub table_elements: usize,
    /// The wasm stack, in bytes.
    pub stack: usize,
    /// Bytes the guest may write to stdout and to stderr in one session.
    pub output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(1),
            cycle_deadline: Duration::from_secs(600),
            memory: 64 << 20,
            instances: 16,
            tables: 16,
            table_elements: 100_000,
            stack: 512 << 10,
            output: 64 << 10,
        }
    }
}

/// How often the epoch advances; deadlines are counted in these ticks.
const TICK: Duration = Duration::from_millis(5);

/// The store's data: WASI (no capabilities but captured output), the
/// limits, and, for `run-cycle`, the storage imports.
pub struct HostCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    imports: Imports,
}

impl WasiView for HostCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The compiled planner, ready to instantiate.
pub struct PlannerRuntime {
    pre: ArchiverPre<HostCtx>,
    engine: Engine,
    plugin: String,
    limits: Limits,
    epoch: Arc<Epoch>,
}

/// Counts the planner calls in flight, so that the epoch only ticks while one runs.
#[derive(Default)]
pub struct Epoch {
    busy: std::sync::Mutex<usize>,
    wake: std::sync::Condvar,
}

/// Held for the length of one planner call.
pub struct Busy<'a>(&'a Epoch);

impl Epoch {
    fn busy(&self) -> Busy<'_> {
        *self.busy.lock().expect("epoch lock") += 1;
        self.wake.notify_one();
        Busy(self)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().expect("epoch lock") -= 1;
    }
}

/// The engine every planner runs in: epoch interruption for deadlines, a
/// bounded wasm stack, and the pooling allocator sized to the limits.
pub fn engine(limits: &Limits) -> Result<(Engine, Arc<Epoch>), PlannerError> {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(64)
        .total_core_instances(256)
        .total_memories(128)
        .total_tables(128)
        .max_memory_size(limits.memory)
        // Stacks for async fibers, which planner calls never use: the default
        // 1,000 (each with a guard page to set up) were half of a host start.
        .total_stacks(1);
    let mut config = wasmtime::Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(limits.stack)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    // For `perf`: `WAL_ARCHIVER_PROFILER=perfmap` names the planner's
    // functions in /tmp/perf-PID.map. It needs a build with wasmtime's
    // `profiling` feature (`--features wasmtime/profiling`).
    if std::env::var_os("WAL_ARCHIVER_PROFILER").is_some_and(|v| v == "perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config).map_err(|cause| PlannerError::Load {
        plugin: "(engine)".into(),
        cause: format!("{cause:#}"),
    })?;
    // The epoch ticks while a call runs and for as long as the engine lives;
    // an idle archiver costs no wake-ups but one a second.
    let epoch = Arc::new(Epoch::default());
    let weak = engine.weak();
    let e = epoch.clone();
    std::thread::Builder::new()
        .name("wal-archiver-epoch".into())
        .spawn(move || {
            loop {
                {
                    let mut busy = e.busy.lock().expect("epoch lock");
                    while *busy == 0 {
                        if weak.upgrade().is_none() {
                            return;
                        }
                        busy = e.wake.wait_timeout(busy, Duration::from_secs(1)).expect("epoch lock").0;
                    }
                }
                let Some(engine) = weak.upgrade() else { return };
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map_err(|e| PlannerError::Load { plugin: "(engine)".into(), cause: e.to_string() })?;
    Ok((engine, epoch))
}

impl PlannerRuntime {
    /// Compiles the embedded component.
    pub fn embedded() -> Result<Self, PlannerError> {
        Self::from_bytes(EMBEDDED_COMPONENT, "(embedded)")
    }

    /// Compiles a component from its bytes with the default limits; `plugin` names it in errors.
    pub fn from_bytes(bytes: &[u8], plugin: &str) -> Result<Self, PlannerError> {
        Self::with_limits(bytes, plugin, Limits::default())
    }

    /// Compiles a component from its bytes under `limits`, through the
    /// default compile cache when it can be opened.
    pub fn with_limits(bytes: &[u8], plugin: &str, limits: Limits) -> Result<Self, PlannerError> {
        let cache = crate::cache::CompileCache::default_dir().and_then(|dir| match crate::cache::CompileCache::open(&dir) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{e}; compiling without a cache");
                None
            }
        });
        Self::load(bytes, plugin, limits, cache.as_ref())
    }

    /// Compiles (or loads from `cache`) a component under `limits`.
    pub fn load(bytes: &[u8], plugin: &str, limits: Limits, cache: Option<&crate::cache::CompileCache>) -> Result<Self, PlannerError> {
        let load = |cause: wasmtime::Error| PlannerError::Load {
            plugin: plugin.to_owned(),
            cause: format!("{cause:#}"),
        };
        let refused = |found: String| PlannerError::Refused { plugin: plugin.to_owned(), found };
        let (engine, epoch) = engine(&limits)?;
        let compiled = match cache {
            Some(cache) => cache.load(&engine, bytes).map(|(c, outcome)| (c, Some(outcome))),
            None => Component::new(&engine, bytes).map(|c| (c, None)),
        };
        let (component, outcome) = compiled.map_err(|cause| {
            refused(if !bytes.starts_with(b"\0asm") {
                "a file that is not WebAssembly".to_owned()
            } else if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
                "a core WebAssembly module, not a component".to_owned()
            } else {
                format!("a component that does not compile: {cause:#}")
            })
        })?;
        let mut linker = Linker::<HostCtx>::new(&engine);
        // WASI only for a planner that imports it (the embedded one does not).
        if component.component_type().imports(&engine).any(|(name, _)| name.starts_with("wasi:")) {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(load)?;
        }
        Archiver::add_to_linker::<HostCtx, HasSelf<Imports>>(&mut linker, |ctx| &mut ctx.imports).map_err(load)?;
        let shape = || {
            let ty = component.component_type();
            let exports: Vec<&str> = ty.exports(&engine).map(|(name, _)| name).collect();
            let imports: Vec<&str> = ty.imports(&engine).map(|(name, _)| name).collect();
            format!("a component exporting [{}] and importing [{}]", exports.join(", "), imports.join(", "))
        };
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|cause| refused(format!("{} ({cause:#})", shape())))?;
        let pre = ArchiverPre::new(pre).map_err(|cause| refused(format!("{} ({cause:#})", shape())))?;
        tracing::debug!(plugin, cache = ?outcome, "planner ready");
        Ok(Self { pre, engine, plugin: plugin.to_owned(), limits, epoch })
    }

    /// The name errors use for this component.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// A fresh store and instance. `storage` backs the imports for `run-cycle`.
    pub fn session(&self, storage: Option<Arc<dyn StorageImports>>) -> Result<Planner, PlannerError> {
        let stdout = MemoryOutputPipe::new(self.limits.output);
        let stderr = MemoryOutputPipe::new(self.limits.output);
        // No preopens, no environment, no arguments, no network; output is captured.
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory)
            .instances(self.limits.instances)
            .tables(self.limits.tables)
            .table_elements(self.limits.table_elements)
            .memories(self.limits.instances)
            .build();
        let ctx = HostCtx { wasi, table: ResourceTable::new(), limits, imports: Imports::new(storage) };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| &mut ctx.limits);
        store.set_epoch_deadline(ticks(self.limits.deadline));
        let busy = self.epoch.busy();
        let bindings = self.pre.instantiate(&mut store);
        drop(busy);
        let bindings = bindings.map_err(|cause| PlannerError::Instantiate {
            plugin: self.plugin.clone(),
            cause: format!("{cause:#}"),
        })?;
        Ok(Planner {
            store,
            bindings,
            plugin: self.plugin.clone(),
            limits: self.limits,
            output: [(stdout, 0), (stderr, 0)],
            epoch: self.epoch.clone(),
        })
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis()).max(1) as u64
}

/// One instance of the planner, in a store of its own.
pub struct Planner {
    store: Store<HostCtx>,
    bindings: Archiver,
    plugin: String,
    limits: Limits,
    /// The guest's stdout and stderr, and how much of each is logged already.
    output: [(MemoryOutputPipe, usize); 2],
    epoch: Arc<Epoch>,
}

impl Planner {
    /// Logs what the guest printed since the last call: stdout at info,
    /// stderr (where panics go) at warn.
    fn drain_output(&mut self) {
        for (i, (pipe, seen)) in self.output.iter_mut().enumerate() {
            let bytes = pipe.contents();
            if bytes.len() > *seen {
                for line in String::from_utf8_lossy(&bytes[*seen..]).lines().filter(|l| !l.trim().is_empty()) {
                    if i == 0 {
                        tracing::info!(target: "wal_archiver::plugin", plugin = %self.plugin, "{line}");
                    } else {
                        tracing::warn!(target: "wal_archiver::plugin", plugin = %self.plugin, "{line}");
                    }
                }
                *seen = bytes.len();
            }
        }
    }

    /// Describes a failed call: a deadline, a limit or a trap, and what the guest said.
    fn call_error(&mut self, function: &'static str, cause: wasmtime::Error, deadline: Duration) -> PlannerError {
        self.drain_output();
        // The wasm backtrace goes to the debug log; the message keeps the cause.
        tracing::debug!(target: "wal_archiver::plugin", plugin = %self.plugin, "`{function}` failed: {cause:?}");
        let text = match cause.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => format!("it ran past its deadline of {deadline:?}"),
            Some(wasmtime::Trap::StackOverflow) => format!("it overflowed its {} KiB stack", self.limits.stack >> 10),
            Some(trap) => format!("it trapped: {trap}"),
            None => format!("{cause:#}"),
        };
        let mut text = text;
        let stderr = String::from_utf8_lossy(&self.output[1].0.contents()).into_owned();
        let last: Vec<&str> = stderr.trim().lines().rev().take(3).collect();
        if !last.is_empty() {
            let said: Vec<&str> = last.into_iter().rev().collect();
            text.push_str(&format!("; it said: {}", said.join(" / ")));
        }
        PlannerError::Call { plugin: self.plugin.clone(), function, cause: text }
    }
}

macro_rules! call {
    ($self:ident, $name:literal, $method:ident ( $($arg:expr),* )) => {
        call!($self, $name, $self.limits.deadline, $method($($arg),*))
    };
    ($self:ident, $name:literal, $deadline:expr, $method:ident ( $($arg:expr),* )) => {{
        let deadline = $deadline;
        $self.store.set_epoch_deadline(ticks(deadline));
        let planner = $self.bindings.nodedb_wal_archiver_planner();
        let epoch = $self.epoch.clone();
        let busy = epoch.busy();
        let result = planner.$method(&mut $self.store, $($arg),*);
        drop(busy);
        match result {
            Ok(v) => {
                $self.drain_output();
                Ok(v)
            }
            Err(cause) => Err($self.call_error($name, cause, deadline)),
        }
    }};
}

impl Planner {
    pub fn parse_segment_name(&mut self, name: &str) -> Result<Result<wit::SegmentName, wit::NameError>, PlannerError> {
        call!(self, "parse-segment-name", call_parse_segment_name(name))
    }

    pub fn format_segment_name(&mut self, first: u64, last: u64) -> Result<Result<String, wit::NameError>, PlannerError> {
        call!(self, "format-segment-name", call_format_segment_name(first, last))
    }

    pub fn retry_delay(&mut self, config: &wit::ArchiverConfig, attempts: u32, random: u64) -> Result<u64, PlannerError> {
        call!(self, "retry-delay", call_retry_delay(config, attempts, random))
    }

    pub fn scan(
        &mut self,
        state: &wit::ArchiverState,
        listing: &wit::DirListing,
        archive: Option<&wit::ArchiveListing>,
    ) -> Result<ScanReport, PlannerError> {
        call!(self, "scan", call_scan(state, listing, archive))
    }

    pub fn plan_batches(&mut self, config: &wit::ArchiverConfig, pending: &wit::SegmentList) -> Result<Vec<u32>, PlannerError> {
        call!(self, "plan-batches", call_plan_batches(config, pending))
    }

    pub fn record_uploads(
        &mut self,
        config: &wit::ArchiverConfig,
        state: &wit::ArchiverState,
        outcomes: &[wit::UploadOutcome],
    ) -> Result<RecordReport, PlannerError> {
        call!(self, "record-uploads", call_record_uploads(config, state, outcomes))
    }

    pub fn deletable(
        &mut self,
        config: &wit::ArchiverConfig,
        state: &wit::ArchiverState,
        listing: &wit::DirListing,
    ) -> Result<wit::SegmentList, PlannerError> {
        call!(self, "deletable", call_deletable(config, state, listing))
    }

    pub fn verify_plan(
        &mut self,
        archive: &wit::ArchiveListing,
        from: Option<u64>,
        until: Option<u64>,
    ) -> Result<Result<VerifyReport, RangeError>, PlannerError> {
        call!(self, "verify-plan", call_verify_plan(archive, from, until))
    }

    pub fn restore_plan(
        &mut self,
        archive: &wit::ArchiveListing,
        from: Option<u64>,
        until: u64,
    ) -> Result<Result<wit::SegmentList, RestoreError>, PlannerError> {
        call!(self, "restore-plan", call_restore_plan(archive, from, until))
    }

    pub fn prune_plan(&mut self, archive: &wit::ArchiveListing, before: u64) -> Result<Result<PruneOrder, PruneError>, PlannerError> {
        call!(self, "prune-plan", call_prune_plan(archive, before))
    }

    pub fn rpo_gap(&mut self, state: &wit::ArchiverState, current: u64) -> Result<u64, PlannerError> {
        call!(self, "rpo-gap", call_rpo_gap(state, current))
    }

    pub fn run_cycle(
        &mut self,
        config: &wit::ArchiverConfig,
        state: &wit::ArchiverState,
    ) -> Result<Result<CycleReport, wit::StorageError>, PlannerError> {
        call!(self, "run-cycle", self.limits.cycle_deadline, call_run_cycle(config, state))
    }

    /// The name errors use for this planner.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }
}
