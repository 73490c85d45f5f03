//! The archive loop. The planner decides what to upload, what counts as
//! archived and what may be deleted; this module lists, uploads, deletes and
//! saves the state, and checks every decision against what it listed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing::{info, warn};

use crate::component::{wit, CycleReport, PlannerError, PlannerRuntime};
use crate::state::{StateError, StateStore};
use crate::storage::{Storage, StorageError};

/// Why a run could not go on. A segment that fails to upload is not an
/// error here: it is recorded, reported and retried.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Planner(#[from] PlannerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("planner component {plugin} made a bad plan: {why}")]
    BadPlan { plugin: String, why: String },
}

/// What one run did and found.
#[derive(Debug, Clone)]
pub struct Summary {
    pub state: wit::ArchiverState,
    pub archived: Vec<wit::Segment>,
    pub failed: Vec<wit::SegmentFailure>,
    pub deleted: Vec<String>,
    pub not_deleted: Vec<wit::SegmentFailure>,
    pub skipped: Vec<wit::SkippedEntry>,
    pub gaps: Vec<wit::Gap>,
    pub overlaps: Vec<wit::Overlap>,
}

impl Summary {
    /// True when nothing failed and no segments overlap.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.not_deleted.is_empty() && self.overlaps.is_empty()
    }

    pub fn bytes_archived(&self) -> u64 {
        self.archived.iter().map(|s| s.size).sum()
    }
}

impl From<CycleReport> for Summary {
    fn from(r: CycleReport) -> Self {
        Self {
            state: r.state,
            archived: r.archived,
            failed: r.failed,
            deleted: r.deleted,
            not_deleted: r.not_deleted,
            skipped: r.skipped,
            gaps: r.gaps,
            overlaps: r.overlaps,
        }
    }
}

/// When a failed segment may be tried again, as the planner's backoff said.
#[derive(Debug, Clone, Copy)]
struct Retry {
    due: Instant,
    /// Failed attempts by this process.
    attempts: u32,
}

/// An archiver: one WAL directory, one archive, one planner.
pub struct Archiver {
    runtime: Arc<PlannerRuntime>,
    storage: Arc<Storage>,
    config: wit::ArchiverConfig,
    state_store: Option<StateStore>,
    retries: Mutex<HashMap<String, Retry>>,
    rng: Mutex<u64>,
    concurrency: usize,
    progress: Option<Box<dyn Fn(&wit::Segment) + Send + Sync>>,
    /// How long the archive's listing stays good between cycles; zero: every cycle.
    reconcile_every: Duration,
    /// When the last reconciliation happened, if its cycle went cleanly.
    reconciled: Mutex<Option<Instant>>,
    last_saved: Mutex<Option<wit::ArchiverState>>,
}

impl Archiver {
    pub fn new(
        runtime: Arc<PlannerRuntime>,
        storage: Storage,
        config: wit::ArchiverConfig,
        state_store: Option<StateStore>,
    ) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self {
            runtime,
            storage: Arc::new(storage),
            config,
            state_store,
            retries: Mutex::new(HashMap::new()),
            rng: Mutex::new(seed | 1),
            concurrency: 1,
            progress: None,
            reconcile_every: Duration::ZERO,
            reconciled: Mutex::new(None),
            last_saved: Mutex::new(None),
        }
    }

    /// Lists the archive only every `every` (and after any failure), instead
    /// of at every cycle: a watcher woken by each new segment must not list
    /// the whole archive each time.
    pub fn with_reconcile_every(mut self, every: Duration) -> Self {
        self.reconcile_every = every;
        self
    }

    /// True while some failed segment waits for a retry.
    pub fn has_retries(&self) -> bool {
        !self.retries().is_empty()
    }

    /// Calls `f` with each segment as soon as it is archived.
    pub fn with_progress(mut self, f: impl Fn(&wit::Segment) + Send + Sync + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Uploads up to `n` segments of a batch at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        // One buffer per upload, and one more so that a read can go on while parts are sent.
        self.storage.archive.buffers().resize(self.concurrency + 1);
        self
    }

    /// Jitter for the planner's backoff (xorshift64; nothing here needs more).
    fn random(&self) -> u64 {
        let mut x = self.rng.lock().expect("rng lock");
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn retries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Retry>> {
        self.retries.lock().expect("retry lock")
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn config(&self) -> &wit::ArchiverConfig {
        &self.config
    }

    /// The saved state, or a fresh one. A state file that cannot be parsed is
    /// only a cache: it is reported and rebuilt from the archive's listing.
    /// One that belongs to another archive is refused, as a likely mistake in `--to`.
    pub fn load_state(&self) -> Result<wit::ArchiverState, ArchiveError> {
        match self.state_store.as_ref().map(StateStore::load) {
            None => Ok(crate::state::empty_state()),
            Some(Ok(state)) => Ok(state),
            Some(Err(e @ (StateError::Corrupt { .. } | StateError::Version { .. }))) => {
                warn!("{e}; rebuilding the state from the archive");
                Ok(crate::state::empty_state())
            }
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Saves the state, unless it is what was saved last.
    fn save(&self, state: &wit::ArchiverState) -> Result<(), ArchiveError> {
        if let Some(s) = &self.state_store {
            let mut last = self.last_saved.lock().expect("state lock");
            if last.as_ref() != Some(state) {
                s.save(state)?;
                *last = Some(state.clone());
            }
        }
        Ok(())
    }

    fn bad_plan(&self, why: String) -> ArchiveError {
        ArchiveError::BadPlan { plugin: self.runtime_plugin(), why }
    }

    fn runtime_plugin(&self) -> String {
        self.runtime.plugin().to_owned()
    }

    /// Runs passes until every pending segment is archived, or has failed
    /// `max_attempts` times in this process, or `stop` is set; between passes
    /// it waits for the planner's backoff. This is `archive --once`.
    pub fn run_until_done(
        &self,
        state: &mut wit::ArchiverState,
        stop: &AtomicBool,
        max_attempts: u32,
    ) -> Result<Summary, ArchiveError> {
        let mut total = self.pass_with_retries(state, stop, max_attempts)?;
        let mut tried: HashSet<String> = total.failed.iter().map(|f| f.name.clone()).collect();
        loop {
            let next = self.retries().values().filter(|r| r.attempts < max_attempts).map(|r| r.due).min();
            let Some(due) = next else { break };
            while Instant::now() < due && !stop.load(Ordering::SeqCst) {
                std::thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let pass = self.pass_with_retries(state, stop, max_attempts)?;
            tried.extend(pass.failed.iter().map(|f| f.name.clone()));
            total.archived.extend(pass.archived);
            total.deleted.extend(pass.deleted);
            total.not_deleted = pass.not_deleted;
            total.skipped = pass.skipped;
            total.gaps = pass.gaps;
            total.overlaps = pass.overlaps;
        }
        // What failed in this run and is failing still, with its last reason.
        total.failed = state.failing.iter().filter(|f| tried.contains(&f.name)).cloned().collect();
        total.state = state.clone();
        Ok(total)
    }

    /// [`Archiver::run_once`], tried again with backoff when the pass as a
    /// whole fails on storage (a listing that did not answer), up to
    /// `max_attempts` times.
    fn pass_with_retries(&self, state: &mut wit::ArchiverState, stop: &AtomicBool, max_attempts: u32) -> Result<Summary, ArchiveError> {
        let mut attempts = 0;
        loop {
            match self.run_once(state, stop) {
                Err(ArchiveError::Storage(e)) if attempts + 1 < max_attempts && !stop.load(Ordering::SeqCst) => {
                    attempts += 1;
                    let delay = Duration::from_millis(self.runtime.session(None)?.retry_delay(&self.config, attempts, self.random())?);
                    warn!(attempts, retry_in = ?delay, "cannot run a pass: {e}");
                    std::thread::sleep(delay);
                }
                other => return other,
            }
        }
    }

    /// One pass over everything pending and due, in batches; each segment is
    /// tried once, and a failed one is not tried again before its backoff
    /// ends. Starts by reconciling the state with a listing of the archive.
    /// Stops between uploads once `stop` is set. The state is saved after
    /// every batch.
    pub fn run_once(&self, state: &mut wit::ArchiverState, stop: &AtomicBool) -> Result<Summary, ArchiveError> {
        let mut planner = self.runtime.session(None)?;
        let fresh = self.reconciled.lock().expect("reconcile lock").is_some_and(|at| at.elapsed() < self.reconcile_every);
        if !fresh {
            let archived_objects = self.storage.archive_listing()?;
            *state = planner.reconcile(state, &archived_objects)?;
        }
        let listing = self.storage.wal.list()?;
        let files: HashSet<&str> = listing
            .entries()
            .filter(|e| e.utf8 && e.kind == wit::EntryKind::File)
            .map(|e| e.name)
            .collect();
        let scan = planner.scan(&listing, state)?;
        if scan.pending.len() > listing.len() || scan.skipped.len() > listing.len() {
            return Err(self.bad_plan(format!(
                "scan returned {} pending and {} skipped entries for a listing of {}",
                scan.pending.len(),
                scan.skipped.len(),
                listing.len()
            )));
        }
        for seg in &scan.pending {
            if !files.contains(seg.name.as_str()) {
                return Err(self.bad_plan(format!("pending segment {:?} is not a file in the listing", seg.name)));
            }
        }
        *state = scan.state;
        self.save(state)?;

        let mut archived = Vec::new();
        let mut failed = Vec::new();
        let now = Instant::now();
        let mut remaining: Vec<wit::Segment> = {
            let mut retries = self.retries();
            // A segment that is no longer pending (archived by another
            // archiver, or gone) has nothing left to retry.
            retries.retain(|name, _| scan.pending.iter().any(|s| s.name == *name));
            scan.pending
                .into_iter()
                .filter(|s| retries.get(&s.name).is_none_or(|r| r.due <= now))
                .collect()
        };
        while !remaining.is_empty() && !stop.load(Ordering::SeqCst) {
            let tasks = planner.plan_batch(&self.config, &remaining)?;
            if tasks.is_empty() {
                return Err(self.bad_plan(format!("no task planned for {} pending segments", remaining.len())));
            }
            let most = (self.config.batch_size.max(1) as usize).min(remaining.len());
            if tasks.len() > most {
                return Err(self.bad_plan(format!("a batch of {} tasks, where at most {most} were possible", tasks.len())));
            }
            for task in &tasks {
                let Some(at) = remaining.iter().position(|s| *s == task.segment) else {
                    return Err(self.bad_plan(format!("task for {:?}, which is not pending", task.segment.name)));
                };
                remaining.remove(at);
            }
            // Up to `concurrency` uploads at once; they finish in any order,
            // and the planner records them in the order they finish, once
            // the whole batch is durable.
            let uploads = self.storage.runtime.block_on(async {
                let storage = &self.storage;
                let published: Vec<_> = futures::stream::iter(tasks.iter())
                    .take_while(|_| std::future::ready(!stop.load(Ordering::SeqCst)))
                    .map(|task| async move { (task, storage.publish_segment(&task.segment.name, &task.key, task.verify).await) })
                    .buffer_unordered(self.concurrency)
                    .collect()
                    .await;
                let (done, published): (Vec<_>, Vec<_>) = published.into_iter().unzip();
                let receipts = storage.archive.finish_batch(published, self.concurrency).await;
                done.into_iter().zip(receipts).collect::<Vec<_>>()
            });
            for (task, receipt) in uploads {
                let seg = &task.segment;
                let outcome = match receipt {
                    Ok(receipt) => planner.record_archived(state, task, receipt)?.map_err(|e| describe_verify_error(&e)),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(next) => {
                        *state = next;
                        self.retries().remove(&seg.name);
                        info!(segment = %seg.name, bytes = seg.size, to = %self.storage.archive.display_key(&task.key), "archived");
                        if let Some(progress) = &self.progress {
                            progress(seg);
                        }
                        archived.push(seg.clone());
                    }
                    Err(reason) => {
                        *state = planner.record_failed(state, task, &reason)?;
                        let attempts = state.failing.iter().find(|f| f.name == seg.name).map_or(1, |f| f.attempts);
                        let delay = Duration::from_millis(planner.retry_delay(&self.config, attempts, self.random())?);
                        let mut retries = self.retries();
                        let entry = retries.entry(seg.name.clone()).or_insert(Retry { due: Instant::now(), attempts: 0 });
                        entry.attempts += 1;
                        entry.due = Instant::now() + delay;
                        warn!(segment = %seg.name, attempts, retry_in = ?delay, "cannot archive segment: {reason}");
                        failed.push(wit::SegmentFailure { name: seg.name.clone(), attempts, last_reason: reason });
                    }
                }
            }
            self.save(state)?;
        }

        let (deleted, not_deleted) = self.delete_archived(&mut planner, state, &listing, &files)?;
        // A clean cycle keeps the listing good for a while; any failure asks for a new one.
        {
            let mut reconciled = self.reconciled.lock().expect("reconcile lock");
            if !(failed.is_empty() && not_deleted.is_empty()) {
                *reconciled = None;
            } else if !fresh {
                *reconciled = Some(Instant::now());
            }
        }
        Ok(Summary {
            state: state.clone(),
            archived,
            failed,
            deleted,
            not_deleted,
            skipped: scan.skipped,
            gaps: scan.gaps,
            overlaps: scan.overlaps,
        })
    }

    fn delete_archived(
        &self,
        planner: &mut crate::component::Planner,
        state: &wit::ArchiverState,
        listing: &wit::DirListing,
        files: &HashSet<&str>,
    ) -> Result<(Vec<String>, Vec<wit::SegmentFailure>), ArchiveError> {
        let mut deleted = Vec::new();
        let mut not_deleted = Vec::new();
        if !self.config.delete_after_archive {
            return Ok((deleted, not_deleted));
        }
        for seg in planner.deletable(&self.config, state, listing)? {
            if !files.contains(seg.name.as_str()) {
                return Err(self.bad_plan(format!("deletion of {:?}, which is not a file in the listing", seg.name)));
            }
            match self.storage.delete_archived(&seg.name) {
                Ok(()) => {
                    info!(segment = %seg.name, "deleted local segment");
                    deleted.push(seg.name);
                }
                Err(e) => {
                    warn!(segment = %seg.name, "{e}");
                    not_deleted.push(wit::SegmentFailure { name: seg.name, attempts: 1, last_reason: e.to_string() });
                }
            }
        }
        Ok((deleted, not_deleted))
    }

    /// One cycle driven by the component itself through the storage imports
    /// (`run-cycle`), as a plugin host with nothing but the imports runs it.
    pub fn run_cycle(&self, state: &mut wit::ArchiverState) -> Result<Summary, ArchiveError> {
        let mut planner = self.runtime.session(Some(self.storage.clone()))?;
        let report = planner
            .run_cycle(&self.config, state)?
            .map_err(|e| self.bad_plan(format!("run-cycle failed: {}", describe_storage_error(&e))))?;
        *state = report.state.clone();
        self.save(state)?;
        Ok(report.into())
    }

    /// The planner's view without uploading anything: for `status`.
    pub fn inspect(&self, state: &wit::ArchiverState) -> Result<(crate::component::ScanReport, u64), ArchiveError> {
        let archived_objects = self.storage.archive_listing()?;
        let listing = self.storage.wal.list()?;
        let mut planner = self.runtime.session(None)?;
        let state = planner.reconcile(state, &archived_objects)?;
        let scan = planner.scan(&listing, &state)?;
        let current = listing
            .entries()
            .filter(|e| e.utf8 && e.kind == wit::EntryKind::File)
            .filter_map(|e| planner.parse_segment_name(e.name).ok()?.ok())
            .map(|n| n.last_lsn)
            .max()
            .or(scan.state.last_archived_lsn)
            .unwrap_or(0);
        Ok((scan, current))
    }

    /// The RPO gap at `current`, as the planner measures it.
    pub fn rpo_gap(&self, state: &wit::ArchiverState, current: u64) -> Result<u64, ArchiveError> {
        Ok(self.runtime.session(None)?.rpo_gap(state, current)?)
    }
}

/// A verification failure, in words.
pub fn describe_verify_error(e: &wit::VerifyError) -> String {
    match e {
        wit::VerifyError::SizeChanged((listed, read)) => {
            format!("the file was listed with {listed} bytes but {read} were read (is it still being written?)")
        }
        wit::VerifyError::StoredSizeMismatch((sent, stored)) => {
            format!("{sent} bytes were sent but the stored object has {stored}")
        }
        wit::VerifyError::ChecksumMismatch((sent, stored)) => {
            format!("CRC32C {sent:08x} was sent but the stored object has {stored:08x}")
        }
        wit::VerifyError::NotVerified => "the stored object was not read back for verification".into(),
    }
}

/// A storage error, in words.
pub fn describe_storage_error(e: &wit::StorageError) -> String {
    match e {
        wit::StorageError::Refused(m)
        | wit::StorageError::NotFound(m)
        | wit::StorageError::NotAFile(m)
        | wit::StorageError::Io(m) => m.clone(),
    }
}

/// Why an entry is skipped, in words.
pub fn describe_skip(reason: &wit::SkipReason) -> String {
    match reason {
        wit::SkipReason::NotAFile(kind) => match kind {
            wit::EntryKind::Dir => "a directory".into(),
            wit::EntryKind::Symlink => "a symlink (never followed)".into(),
            wit::EntryKind::Other => "not a regular file".into(),
            wit::EntryKind::File => "a file".into(),
        },
        wit::SkipReason::NotUtf8 => "the name is not valid UTF-8".into(),
        wit::SkipReason::BadName(e) => format!("not a segment name: {}", describe_name_error(e)),
    }
}

/// A name error, in words.
pub fn describe_name_error(e: &wit::NameError) -> String {
    match e {
        wit::NameError::MissingPrefix => "it does not start with `wal-`".into(),
        wit::NameError::WrongSuffix => "it does not end in `.seg`".into(),
        wit::NameError::WrongShape => "it is not `wal-FIRST-LAST.seg`".into(),
        wit::NameError::WrongLength(n) => format!("an LSN field has {n} characters, not 16"),
        wit::NameError::NotLowercaseHex => "an LSN field is not lowercase hex".into(),
        wit::NameError::FirstAfterLast => "the first LSN is above the last".into(),
    }
}
