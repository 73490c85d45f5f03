//! The archive loop. The planner decides what to upload, what to compare,
//! what counts as archived and what may be deleted; this module lists,
//! uploads, compares, deletes and saves the state, and checks every
//! decision against what it listed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing::{info, warn};

use crate::bindings::wit;
use crate::component::{CycleReport, Planner, PlannerError, PlannerRuntime, ScanReport};
use crate::compress::segment_name;
use crate::lsn::{format_lsn, object_lsns, segment_lsns};
use crate::state::{StateError, StateStore};
use crate::storage::{Storage, StorageError};

/// How long recorded outcomes may wait before the planner records them and
/// the state is saved: often enough to show progress, seldom enough that a
/// backlog of small segments is not a call per batch.
const CHECKPOINT: Duration = Duration::from_secs(1);

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

/// A segment counted as archived in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub name: String,
    pub size: u64,
    /// Already in the archive with the same bytes: compared, not sent.
    pub existed: bool,
}

/// What one run did and found.
#[derive(Debug, Clone)]
pub struct Summary {
    pub state: wit::ArchiverState,
    pub archived: Vec<Archived>,
    pub failed: Vec<wit::SegmentFailure>,
    pub conflicts: Vec<wit::SegmentConflict>,
    pub deleted: Vec<String>,
    pub not_deleted: Vec<wit::SegmentFailure>,
    pub skipped: Vec<wit::SkippedEntry>,
    pub breaks: Vec<wit::ChainBreak>,
    pub off_chain: Vec<String>,
    pub pruned: Vec<String>,
    pub strays: Vec<wit::SkippedEntry>,
    /// Segments of the listing still to upload or compare after the run.
    pub pending: usize,
    /// The last LSN of the newest segment in the WAL directory's listing.
    pub newest_lsn: Option<u64>,
    /// Why the state file could not be saved, when its last save in this
    /// run failed. The run went on (the state is a cache of what the archive
    /// holds, and every delete has its own proof): a full WAL disk must not
    /// stop the deletes that free it.
    pub state_not_saved: Option<String>,
    /// Why the chain start the planner asked for could not be recorded in
    /// the archive, when it could not: nothing was deleted, and the next
    /// pass asks again.
    pub chain_not_recorded: Option<String>,
}

impl Summary {
    /// True when nothing failed, nothing is in conflict, and no overlap
    /// stops the chain (a gap is the database's to fill).
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
            && self.not_deleted.is_empty()
            && self.conflicts.is_empty()
            && self.state_not_saved.is_none()
            && self.chain_not_recorded.is_none()
            && !self.breaks.iter().any(|b| matches!(b, wit::ChainBreak::Overlap(_)))
    }

    /// What keeps a watcher's last cycle from counting as a success, in
    /// words (`2 segments failing`), empty when nothing does: as
    /// [`Summary::is_clean`], and also a segment still failing from an
    /// earlier cycle that waits out its backoff (not tried in this one).
    pub fn problems(&self) -> Vec<String> {
        let overlaps = self.breaks.iter().filter(|b| matches!(b, wit::ChainBreak::Overlap(_))).count();
        let failing = self.state.failing.len().max(self.failed.len());
        [(failing, "failing"), (self.conflicts.len(), "in conflict"), (self.not_deleted.len(), "not deleted"), (overlaps, "overlapping")]
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} segment{} {what}", if n == 1 { "" } else { "s" }))
            .chain(self.state_not_saved.as_ref().map(|_| "the state file not saved".to_owned()))
            .chain(self.chain_not_recorded.as_ref().map(|_| "the chain start not recorded".to_owned()))
            .collect()
    }

    /// Bytes sent in this run (compared segments were not sent).
    pub fn bytes_archived(&self) -> u64 {
        self.archived.iter().filter(|a| !a.existed).map(|a| a.size).sum()
    }

    fn from_scan(state: wit::ArchiverState, scan: &ScanReport) -> Self {
        Self {
            state,
            archived: Vec::new(),
            failed: Vec::new(),
            conflicts: scan.conflicts.clone(),
            deleted: Vec::new(),
            not_deleted: Vec::new(),
            skipped: scan.skipped.clone(),
            breaks: scan.breaks.clone(),
            off_chain: scan.off_chain.clone(),
            pruned: scan.pruned.clone(),
            strays: scan.strays.clone(),
            pending: scan.pending.len() + scan.to_confirm.len(),
            newest_lsn: None,
            state_not_saved: None,
            chain_not_recorded: None,
        }
    }
}

impl From<CycleReport> for Summary {
    fn from(r: CycleReport) -> Self {
        Self {
            archived: r.archived.iter().map(|name| Archived { name: segment_name(name).to_owned(), size: 0, existed: false }).collect(),
            state: r.state,
            failed: r.failed,
            conflicts: r.conflicts,
            deleted: r.deleted,
            not_deleted: r.not_deleted,
            skipped: r.skipped,
            breaks: r.breaks,
            off_chain: Vec::new(),
            pruned: Vec::new(),
            strays: Vec::new(),
            pending: 0,
            newest_lsn: None,
            state_not_saved: None,
            chain_not_recorded: r.chain_start_not_recorded.map(|f| describe_storage_error(&f.cause)),
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
    progress: Option<Box<dyn Fn(&Archived) + Send + Sync>>,
    /// Told how long each segment's upload took, when it succeeded.
    on_upload: Option<Box<dyn Fn(Duration) + Send + Sync>>,
    /// How long the archive's listing stays good between cycles; zero: every cycle.
    reconcile_every: Duration,
    /// When the last reconciliation happened, if its cycle went cleanly.
    reconciled: Mutex<Option<Instant>>,
    /// What was saved last, and when.
    last_saved: Mutex<(Option<wit::ArchiverState>, Option<Instant>)>,
    /// Attempts a segment gets in this run (`--once`); 0: no limit (a
    /// watcher). A failure that used the last one is not said to be retried.
    attempt_limit: std::sync::atomic::AtomicU32,
}

impl Archiver {
    pub fn new(runtime: Arc<PlannerRuntime>, storage: Storage, config: wit::ArchiverConfig, state_store: Option<StateStore>) -> Self {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
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
            on_upload: None,
            reconcile_every: Duration::ZERO,
            reconciled: Mutex::new(None),
            last_saved: Mutex::new((None, None)),
            attempt_limit: std::sync::atomic::AtomicU32::new(0),
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

    /// Calls `f` with each segment as soon as it counts as archived.
    pub fn with_progress(mut self, f: impl Fn(&Archived) + Send + Sync + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Calls `f` with the time each successful upload took (sent, verified
    /// and published; the batch's sync comes after).
    pub fn with_upload_timer(mut self, f: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        self.on_upload = Some(Box::new(f));
        self
    }

    /// Uploads up to `n` segments of a batch at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self.storage.archive.size_buffers(self.concurrency);
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
            None => Ok(crate::bindings::empty_state()),
            Some(Ok(state)) => Ok(state),
            Some(Err(e @ (StateError::Corrupt { .. } | StateError::Version { .. }))) => {
                warn!("{e}; rebuilding the state from the archive");
                Ok(crate::bindings::empty_state())
            }
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Saves the state, unless it is what was saved last, or (without
    /// `force`) it was saved less than a checkpoint ago: the state is a cache
    /// of the archive, and a large one is not rewritten for every batch.
    fn save(&self, state: &wit::ArchiverState, force: bool) -> Result<(), ArchiveError> {
        if let Some(s) = &self.state_store {
            let mut last = self.last_saved.lock().expect("state lock");
            let recent = last.1.is_some_and(|at| at.elapsed() < CHECKPOINT);
            if last.0.as_ref() != Some(state) && (force || !recent) {
                s.save(state)?;
                *last = (Some(state.clone()), Some(Instant::now()));
            }
        }
        Ok(())
    }

    /// Saves the state, noting a failure in `summary` instead of stopping
    /// the run; a later save that succeeds clears the note.
    fn save_noting(&self, state: &wit::ArchiverState, force: bool, summary: &mut Summary) {
        match self.save(state, force) {
            Ok(()) => summary.state_not_saved = None,
            Err(e) => {
                warn!("{e}; the run goes on, and the next save tries again");
                summary.state_not_saved = Some(e.to_string());
            }
        }
    }

    fn bad_plan(&self, why: String) -> ArchiveError {
        ArchiveError::BadPlan { plugin: self.runtime.plugin().to_owned(), why }
    }

    /// Runs passes until every pending segment is archived, or has failed
    /// `max_attempts` times in this process, or `stop` is set; between passes
    /// it waits for the planner's backoff. This is `archive --once`.
    pub fn run_until_done(&self, state: &mut wit::ArchiverState, stop: &AtomicBool, max_attempts: u32) -> Result<Summary, ArchiveError> {
        self.attempt_limit.store(max_attempts, Ordering::SeqCst);
        let mut total = self.pass_with_retries(state, stop, max_attempts)?;
        // By segment: a failure is named by the object it was tried as.
        let mut tried: HashSet<String> = total.failed.iter().map(|f| segment_name(&f.name).to_owned()).collect();
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
            tried.extend(pass.failed.iter().map(|f| segment_name(&f.name).to_owned()));
            total.archived.extend(pass.archived);
            total.deleted.extend(pass.deleted);
            total.not_deleted = pass.not_deleted;
            total.conflicts = pass.conflicts;
            total.skipped = pass.skipped;
            total.breaks = pass.breaks;
            total.off_chain = pass.off_chain;
            total.pruned = pass.pruned;
            total.strays = pass.strays;
            total.pending = pass.pending;
            total.newest_lsn = total.newest_lsn.max(pass.newest_lsn);
            total.state_not_saved = pass.state_not_saved;
            total.chain_not_recorded = pass.chain_not_recorded;
        }
        // What failed in this run and is failing still, with its last reason.
        total.failed = state.failing.iter().filter(|f| tried.contains(segment_name(&f.name))).collect();
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
    /// ends. Starts by listing the archive, unless it was listed a moment
    /// ago. Stops between uploads once `stop` is set.
    pub fn run_once(&self, state: &mut wit::ArchiverState, stop: &AtomicBool) -> Result<Summary, ArchiveError> {
        let mut planner = self.runtime.session(None)?;
        let fresh = self.reconciled.lock().expect("reconcile lock").is_some_and(|at| at.elapsed() < self.reconcile_every);
        let rt = &self.storage.runtime;
        let archive = if fresh { None } else { Some(rt.block_on(self.storage.archive.list())?) };
        let listing = self.storage.wal.list()?;
        let files: HashMap<&str, u64> = listing.entries().filter(|e| e.utf8 && e.kind == wit::EntryKind::File).map(|e| (e.name, e.size)).collect();
        let scan = planner.scan(state, &listing, archive.as_ref().map(|a| a.to_wit()).as_ref())?;
        // Objects a conflict was about before this scan: one to compare now
        // is read back, whatever record agrees (it may predate the conflict).
        let disputed: HashSet<String> = state.conflicts.iter().map(|c| c.name.clone()).collect();
        let disputed = &disputed;
        let archive_listing = archive.as_ref();
        // To-confirm names objects; their local files are the segment names.
        for (name, size) in scan.pending.iter().chain(scan.to_confirm.iter()) {
            if !files.contains_key(segment_name(name)) {
                return Err(self.bad_plan(format!("segment {name:?} ({size} bytes) is not a file in the listing")));
            }
        }
        // At most one upload per listed segment, and one comparison per
        // object of it (plain and compressed: two copies that disagree are
        // both compared).
        let mut compared = HashSet::new();
        if let Some((name, _)) = scan.to_confirm.iter().find(|(name, _)| !compared.insert(*name)) {
            return Err(self.bad_plan(format!("{name:?} to compare twice")));
        }
        if scan.pending.len() > listing.len() || scan.to_confirm.len() > 2 * listing.len() {
            return Err(self.bad_plan(format!(
                "{} segments to upload and {} objects to compare for a listing of {}",
                scan.pending.len(),
                scan.to_confirm.len(),
                listing.len()
            )));
        }
        *state = scan.state.clone();
        let mut summary = Summary::from_scan(state.clone(), &scan);
        self.save_noting(state, false, &mut summary);
        let mut chain_recorded = self.record_chain_start(scan.record_chain_start, archive_listing, &mut summary);

        // Retries are kept for segments still to upload or to compare (a
        // comparison that failed, a read error or a frame that does not
        // decode, waits out its backoff too); others have nothing to retry.
        let now = Instant::now();
        {
            let live: HashSet<&str> = scan.pending.iter().map(|(n, _)| n).chain(scan.to_confirm.iter().map(|(n, _)| segment_name(n))).collect();
            self.retries().retain(|name, _| live.contains(name.as_str()));
        }
        let is_due = |name: &str| self.retries().get(segment_name(name)).is_none_or(|r| r.due <= now);

        // Segments the archive holds whose local bytes were never compared with it.
        let mut outcomes: Vec<wit::UploadOutcome> = Vec::new();
        let confirms: Vec<(&str, u64)> = scan.to_confirm.iter().filter(|(n, _)| is_due(n)).collect();
        // A comparison waiting out its backoff leaves the archive's listing
        // due: a pass without one would see no pair of copies to hold, and
        // could upload what the comparison is about.
        let waiting = confirms.len() < scan.to_confirm.len();
        let compared: Vec<wit::UploadOutcome> = rt.block_on(
            futures::stream::iter(confirms)
                .map(|(object, size)| async move {
                    let key = self.storage.archive.key_of(object);
                    let read_back = disputed.contains(object);
                    let receipt =
                        self.storage.check_archived_reading(segment_name(object), &key, size, read_back).await.map_err(wit::StorageError::from);
                    wit::UploadOutcome { name: object.to_owned(), size, receipt }
                })
                .buffer_unordered(self.concurrency)
                .collect(),
        );
        outcomes.extend(compared);

        // Pending segments, less those still waiting for their backoff.
        let mut due = wit::SegmentList::default();
        for (name, size) in scan.pending.iter() {
            if is_due(name) {
                due.push(name, size);
            }
        }
        let ends = planner.plan_batches(&self.config, &due)?;
        self.check_batches(&ends, due.len())?;
        let mut last_record = Instant::now();
        let mut start = 0usize;
        for (b, &end) in ends.iter().enumerate() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let batch = due.slice(start, end as usize);
            start = end as usize;
            // Up to `concurrency` uploads at once; they finish in any order,
            // and count once the whole batch is durable.
            let uploaded = rt.block_on(async {
                let storage = &self.storage;
                let tasks: Vec<(String, u64)> = batch.iter().map(|(n, s)| (n.to_owned(), s)).collect();
                let published: Vec<_> = futures::stream::iter(tasks)
                    .take_while(|_| std::future::ready(!stop.load(Ordering::SeqCst)))
                    .map(|(name, size)| async move {
                        // The key of the object the configured compression makes; the
                        // outcome is named by it.
                        let object = format!("{name}{}", suffix(self.config.compression));
                        let key = storage.archive.key_of(&object);
                        let began = Instant::now();
                        let published = storage.publish_segment(&name, &key, size, self.config.verify_checksums).await;
                        if let (Ok(_), Some(timer)) = (&published, &self.on_upload) {
                            timer(began.elapsed());
                        }
                        ((object, size), published)
                    })
                    .buffer_unordered(self.concurrency)
                    .collect()
                    .await;
                let (done, published): (Vec<_>, Vec<_>) = published.into_iter().unzip();
                let receipts = storage.finish_batch(published, self.concurrency).await;
                done.into_iter().zip(receipts).collect::<Vec<_>>()
            });
            for ((name, size), receipt) in uploaded {
                outcomes.push(wit::UploadOutcome { name, size, receipt: receipt.map_err(wit::StorageError::from) });
            }
            let last = b + 1 == ends.len();
            if last || last_record.elapsed() >= CHECKPOINT {
                self.record(&mut planner, state, std::mem::take(&mut outcomes), archive_listing, &mut summary, &mut chain_recorded)?;
                last_record = Instant::now();
            }
        }
        if !outcomes.is_empty() {
            self.record(&mut planner, state, std::mem::take(&mut outcomes), archive_listing, &mut summary, &mut chain_recorded)?;
        }
        self.save_noting(state, true, &mut summary);

        if chain_recorded {
            let (deleted, not_deleted, conflicts) = self.delete_archived(&mut planner, state, &listing, &files)?;
            summary.deleted = deleted;
            summary.not_deleted = not_deleted;
            // An archived copy that no longer holds the local bytes is a
            // conflict like one found by an upload: recorded in the state, it
            // stops counting, holds the watermark, and is never deleted.
            if !conflicts.is_empty() {
                self.record(&mut planner, state, conflicts, archive_listing, &mut summary, &mut chain_recorded)?;
                self.save_noting(state, true, &mut summary);
            }
        }
        // A clean cycle keeps the listing good for a while; any failure asks
        // for a new one. So does a chain start that could not be recorded:
        // only a scan with a listing of the archive asks for it again, and
        // nothing is deleted until it is recorded.
        {
            let mut reconciled = self.reconciled.lock().expect("reconcile lock");
            let clean = summary.failed.is_empty() && summary.not_deleted.is_empty() && summary.conflicts.is_empty();
            if waiting || !chain_recorded || !clean {
                *reconciled = None;
            } else if !fresh {
                *reconciled = Some(Instant::now());
            }
        }
        summary.state = state.clone();
        summary.pending = summary.pending.saturating_sub(summary.archived.len());
        summary.newest_lsn = listing
            .entries()
            .filter(|e| e.utf8 && e.kind == wit::EntryKind::File)
            .filter_map(|e| segment_lsns(e.name))
            .map(|(_, last)| last)
            .max();
        Ok(summary)
    }

    /// Checks the planner's batch ends: in order, each batch non-empty, no
    /// batch larger than the configured size, the last one at the end.
    fn check_batches(&self, ends: &[u32], len: usize) -> Result<(), ArchiveError> {
        let most = self.config.batch_size.max(1) as usize;
        let mut start = 0usize;
        for &end in ends {
            let end = end as usize;
            if end <= start || end > len || end - start > most {
                return Err(self.bad_plan(format!("batch ends {ends:?} for {len} pending segments in batches of at most {most}")));
            }
            start = end;
        }
        if start != len {
            return Err(self.bad_plan(format!("batch ends {ends:?} leave segments of {len} unplanned")));
        }
        Ok(())
    }

    /// Writes the chain start the planner asks for; false when it could not
    /// be written (then nothing is deleted in this pass, and the summary
    /// says why). A start the archive was listed with in this pass is there
    /// already: `record-uploads` asks for it once the watermark exists,
    /// without seeing the listing (after a lost state, say).
    fn record_chain_start(&self, start: Option<u64>, listed: Option<&crate::store::Listing>, summary: &mut Summary) -> bool {
        let Some(start) = start else { return true };
        if listed.is_some_and(|l| l.chain_start == Some(start)) {
            summary.chain_not_recorded = None;
            return true;
        }
        match self.storage.runtime.block_on(self.storage.record_chain_start(start)) {
            Ok(()) => {
                info!(chain_start = %format_lsn(start), "recorded the chain start in the archive");
                summary.chain_not_recorded = None;
                true
            }
            Err(e) => {
                warn!("{e}; nothing is deleted until it is recorded");
                summary.chain_not_recorded = Some(e.to_string());
                false
            }
        }
    }

    /// Hands outcomes to the planner, and acts on what it made of them:
    /// progress, logs, backoff, the chain start.
    fn record(
        &self,
        planner: &mut Planner,
        state: &mut wit::ArchiverState,
        outcomes: Vec<wit::UploadOutcome>,
        listing: Option<&crate::store::Listing>,
        summary: &mut Summary,
        chain_recorded: &mut bool,
    ) -> Result<(), ArchiveError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let report = planner.record_uploads(&self.config, state, &outcomes)?;
        *state = report.state;
        let by_name: HashMap<&str, &wit::UploadOutcome> = outcomes.iter().map(|o| (o.name.as_str(), o)).collect();
        for name in &report.archived {
            let Some(o) = by_name.get(name.as_str()) else {
                return Err(self.bad_plan(format!("{name:?} counted as archived, but it was not uploaded")));
            };
            // The host's own check: a segment another object of which failed
            // or was found in conflict in these outcomes is not archived.
            if let Some(other) = outcomes.iter().find(|x| x.name != *name && segment_name(&x.name) == segment_name(name) && x.receipt.is_err()) {
                return Err(self.bad_plan(format!("{name:?} counted as archived, but {:?} of the same segment was not", other.name)));
            }
            let existed = matches!(&o.receipt, Ok(r) if r.existed);
            self.retries().remove(segment_name(name));
            if let (Some(listing), Ok(r)) = (listing, &o.receipt) {
                self.storage.runtime.block_on(self.storage.archive.forget_stale(name, r.read_size, r.read_crc32c, listing));
            }
            let (first_lsn, last_lsn) = object_lsns(name).unwrap_or_default();
            info!(
                segment = %segment_name(name),
                first_lsn,
                last_lsn,
                bytes = o.size,
                to = %self.storage.archive.display_key(&self.storage.archive.key_of(name)),
                existed,
                "archived"
            );
            let a = Archived { name: segment_name(name).to_owned(), size: o.size, existed };
            if let Some(progress) = &self.progress {
                progress(&a);
            }
            summary.archived.push(a);
        }
        // One attempt per segment per record, however many of its objects failed.
        let mut counted = HashSet::new();
        for f in report.failed {
            let delay = Duration::from_millis(planner.retry_delay(&self.config, f.attempts, self.random())?);
            let mut retries = self.retries();
            let entry = retries.entry(segment_name(&f.name).to_owned()).or_insert(Retry { due: Instant::now(), attempts: 0 });
            if counted.insert(segment_name(&f.name).to_owned()) {
                entry.attempts += 1;
            }
            entry.due = Instant::now() + delay;
            let limit = self.attempt_limit.load(Ordering::SeqCst);
            let last_try = limit > 0 && entry.attempts >= limit;
            drop(retries);
            let (first_lsn, last_lsn) = object_lsns(&f.name).unwrap_or_default();
            if last_try {
                warn!(segment = %segment_name(&f.name), first_lsn, last_lsn, attempts = f.attempts, last_attempt = true, error = %f.last_reason, "cannot archive segment");
            } else {
                warn!(segment = %segment_name(&f.name), first_lsn, last_lsn, attempts = f.attempts, retry_in = ?delay, error = %f.last_reason, "cannot archive segment");
            }
            summary.failed.push(f);
        }
        for c in report.conflicts {
            self.retries().remove(segment_name(&c.name));
            let (first_lsn, last_lsn) = object_lsns(&c.name).unwrap_or_default();
            warn!(segment = %segment_name(&c.name), first_lsn, last_lsn, "{}", describe_conflict(&c));
            summary.conflicts.retain(|x| x.name != c.name);
            summary.conflicts.push(c);
        }
        for name in report.refused {
            warn!("the planner refused an outcome for {name:?}: not a segment name");
        }
        if report.record_chain_start.is_some() {
            *chain_recorded &= self.record_chain_start(report.record_chain_start, listing, summary);
        }
        self.save_noting(state, false, summary);
        Ok(())
    }

    fn delete_archived(
        &self,
        planner: &mut Planner,
        state: &wit::ArchiverState,
        listing: &wit::DirListing,
        files: &HashMap<&str, u64>,
    ) -> Result<(Vec<String>, Vec<wit::SegmentFailure>, Vec<wit::UploadOutcome>), ArchiveError> {
        let mut deleted = Vec::new();
        let mut not_deleted = Vec::new();
        let mut conflicts = Vec::new();
        if !self.config.delete_after_archive {
            return Ok((deleted, not_deleted, conflicts));
        }
        // Named by the objects that hold them: the files are the segment names.
        let deletable = planner.deletable(&self.config, state, listing)?;
        for (name, size) in deletable.iter() {
            if files.get(segment_name(name)) != Some(&size) {
                return Err(self.bad_plan(format!("deletion of {name:?} ({size} bytes), which is not a file of that size in the listing")));
            }
        }
        let rt = &self.storage.runtime;
        // A conflict lowers the watermark below its segment: deletes not yet
        // started (all later in LSN order than those started before) wait
        // for the next pass. Those under way were proven each on its own.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stop = &stop;
        let results: Vec<(String, u64, Option<Result<(), StorageError>>)> = rt.block_on(
            futures::stream::iter(deletable.iter().map(|(n, size)| (n.to_owned(), size)).collect::<Vec<_>>())
                .map(|(object, size)| async move {
                    if stop.load(Ordering::SeqCst) {
                        return (object, size, None);
                    }
                    let key = self.storage.archive.key_of(&object);
                    let r = self.storage.delete_archived(segment_name(&object), &key).await;
                    // So does an object found gone: it no longer counts either.
                    if r.as_ref().is_err_and(|e| e.conflict().is_some() || matches!(e, StorageError::Missing { .. })) {
                        stop.store(true, Ordering::SeqCst);
                    }
                    (object, size, Some(r))
                })
                .buffer_unordered(self.concurrency)
                .collect(),
        );
        for (object, size, r) in results {
            let name = segment_name(&object).to_owned();
            let Some(r) = r else {
                info!(segment = %name, "not deleted in this pass: a segment before it was found in conflict or gone from the archive");
                continue;
            };
            match r {
                Ok(()) => {
                    info!(segment = %name, "deleted local segment");
                    deleted.push(name);
                }
                // Recorded by the caller, and reported as a conflict.
                Err(e) if e.conflict().is_some() => {
                    conflicts.push(wit::UploadOutcome { name: object, size, receipt: Err(wit::StorageError::from(e)) });
                }
                Err(e) => {
                    warn!(segment = %name, "{e}");
                    not_deleted.push(wit::SegmentFailure { name, attempts: 1, last_reason: e.to_string() });
                }
            }
        }
        if !deleted.is_empty() {
            self.storage.wal.sync()?;
        }
        deleted.sort();
        Ok((deleted, not_deleted, conflicts))
    }

    /// One cycle driven by the component itself through the storage imports
    /// (`run-cycle`), as a plugin host with nothing but the imports runs it.
    pub fn run_cycle(&self, state: &mut wit::ArchiverState) -> Result<Summary, ArchiveError> {
        let mut planner = self.runtime.session(Some(self.storage.clone() as Arc<dyn crate::imports::StorageImports>))?;
        self.storage.set_disputed(state.conflicts.iter().map(|c| c.name.clone()));
        let report =
            planner.run_cycle(&self.config, state)?.map_err(|e| self.bad_plan(format!("run-cycle failed: {}", describe_storage_error(&e))))?;
        *state = report.state.clone();
        self.save(state, true)?;
        Ok(report.into())
    }

    /// The planner's view without uploading anything: for `status`.
    pub fn inspect(&self, state: &wit::ArchiverState) -> Result<(ScanReport, u64), ArchiveError> {
        let archive = self.storage.runtime.block_on(self.storage.archive.list())?;
        let listing = self.storage.wal.list()?;
        let mut planner = self.runtime.session(None)?;
        let scan = planner.scan(state, &listing, Some(&archive.to_wit()))?;
        let current = listing
            .entries()
            .filter(|e| e.utf8 && e.kind == wit::EntryKind::File && e.name.starts_with("wal-"))
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

/// A conflict, in words, with both sizes and checksums.
pub fn describe_conflict(c: &wit::SegmentConflict) -> String {
    format!(
        "conflict: the archive holds {} bytes with CRC32C {:08x} under {}'s key, but the local segment has {} bytes with CRC32C {:08x}; \
         it is not counted as archived, not retried and not deleted until the archived object is removed or replaced",
        c.archived_size, c.archived_crc32c, c.name, c.local_size, c.local_crc32c
    )
}

/// A break in the chain, in the words every command uses.
pub fn describe_break(b: &wit::ChainBreak) -> String {
    match b {
        wit::ChainBreak::Gap(g) => format!("gap: LSNs {} to {} are missing", format_lsn(g.from_lsn), format_lsn(g.to_lsn)),
        wit::ChainBreak::Overlap(o) => {
            let after = if o.after.is_empty() { String::new() } else { format!(" after {}", o.after) };
            format!(
                "overlap: LSNs {} to {} are held only by {}, which cannot be chained{after}",
                format_lsn(o.from_lsn),
                format_lsn(o.to_lsn),
                o.held_by
            )
        }
    }
}

/// A storage error, in words.
pub fn describe_storage_error(e: &wit::StorageError) -> String {
    match e {
        wit::StorageError::Refused(m)
        | wit::StorageError::NotFound(m)
        | wit::StorageError::NotAFile(m)
        | wit::StorageError::Changed(m)
        | wit::StorageError::Io(m) => m.clone(),
        wit::StorageError::Conflict(c) => describe_conflict(c),
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
        wit::SkipReason::ListedTwice => "listed twice".into(),
    }
}

/// A name error, in words.
pub fn describe_name_error(e: &wit::NameError) -> String {
    match e {
        wit::NameError::MissingPrefix => "it does not start with `wal-`".into(),
        wit::NameError::WrongSuffix => "it does not end in `.seg`".into(),
        wit::NameError::WrongShape => "it is not `wal-FIRST-LAST.seg`".into(),
        wit::NameError::WrongLength(n) => format!("an LSN field has {n} bytes, not 16"),
        wit::NameError::NotLowercaseHex => "an LSN field is not lowercase hex".into(),
        wit::NameError::FirstAfterLast => "the first LSN is above the last".into(),
    }
}

/// What an object name adds to a segment's name under a compression.
fn suffix(c: wit::Compression) -> &'static str {
    match c {
        wit::Compression::None => "",
        wit::Compression::Zstd => crate::compress::ZSTD_SUFFIX,
    }
}
