//! The restore side, carried out: verify an archive, restore a chain of
//! segments up to an LSN, prune what lies below one. The planner decides
//! from a listing of the archive; this module reads, writes and deletes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::archive::describe_break;
use crate::bindings::{wit, PruneError, RangeError, RestoreError as PlanError};
use crate::component::{Planner, PlannerError};
use crate::lsn::format_lsn;
use crate::store::{Archive, Listing, Record};
use crate::storage::StorageError;
use crate::compress::{is_compressed, segment_name, Sum, Unpacker};
use crate::wal::checksum_reader;

/// Why verify, restore or prune could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Planner(#[from] PlannerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot {verb} {url}: {why}")]
    Range { verb: &'static str, url: String, why: String, usage: bool },
    #[error("cannot restore up to LSN {}: {why}", format_lsn(*until))]
    NoChain { until: u64, why: String },
    #[error("cannot restore {}: {}", path.display(), why)]
    Refused { path: PathBuf, why: String },
    #[error("cannot {verb} {}: {cause}", path.display())]
    Io { verb: &'static str, path: PathBuf, cause: io::Error },
    #[error("cannot restore {url}: {why}")]
    Corrupt { url: String, why: String },
    #[error("cannot prune {url} below LSN {}: {why}", format_lsn(*before))]
    PruneRefused { url: String, before: u64, why: String },
    #[error("planner component {plugin} made a bad plan: {why}")]
    BadPlan { plugin: String, why: String },
}

impl RestoreError {
    /// True when the archive could not give what was asked (exit 1), as
    /// opposed to a run that could not go on (exit 2).
    pub fn is_finding(&self) -> bool {
        match self {
            RestoreError::Range { usage, .. } => !usage,
            RestoreError::NoChain { .. } | RestoreError::Refused { .. } | RestoreError::Corrupt { .. } => true,
            _ => false,
        }
    }
}

fn describe_range(e: &RangeError) -> (String, bool) {
    match e {
        RangeError::Empty => ("the archive holds no verified segment".into(), false),
        RangeError::EmptyRange => ("the first LSN asked for is above the last (--from-lsn > --until-lsn)".into(), true),
        RangeError::BeyondEnd(l) => (format!("the first LSN asked for is above the archive's last LSN {}", format_lsn(*l)), false),
    }
}

/// One problem (or note) `verify` found, for text and JSON alike.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    Gap { from: u64, to: u64 },
    Overlap { from: u64, to: u64, held_by: String, after: String },
    Unverified { name: String },
    /// An object whose size no record has, while a record of another size
    /// says what it held: cut short or replaced since it was archived.
    RecordSizeMismatch { name: String, size: u64, recorded_sizes: Vec<u64> },
    Conflict { name: String, local_size: u64, local_crc32c: String, archived_size: u64, archived_crc32c: String },
    ChecksumMismatch { name: String, recorded: String, found: String },
    /// A compressed object that decodes to other bytes than its record says.
    DecodedMismatch { name: String, recorded_size: u64, recorded_crc32c: String, found_size: u64, found_crc32c: String },
    SizeMismatch { name: String, listed: u64, read: u64 },
    Unreadable { name: String, error: String },
    /// Notes: they do not make an archive unsound.
    NotASegment { name: String, reason: String },
    OffChain { name: String },
    StagingLeftover { name: String },
}

impl Finding {
    fn from_break(b: &wit::ChainBreak) -> Self {
        match b {
            wit::ChainBreak::Gap(g) => Finding::Gap { from: g.from_lsn, to: g.to_lsn },
            wit::ChainBreak::Overlap(o) => {
                Finding::Overlap { from: o.from_lsn, to: o.to_lsn, held_by: o.held_by.clone(), after: o.after.clone() }
            }
        }
    }

    /// True for findings that make an archive unsound.
    pub fn is_problem(&self) -> bool {
        !matches!(self, Finding::NotASegment { .. } | Finding::OffChain { .. } | Finding::StagingLeftover { .. })
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Gap { from, to } => {
                f.write_str(&describe_break(&wit::ChainBreak::Gap(wit::LsnRange { from_lsn: *from, to_lsn: *to })))
            }
            Finding::Overlap { from, to, held_by, after } => f.write_str(&describe_break(&wit::ChainBreak::Overlap(wit::Overlap {
                from_lsn: *from,
                to_lsn: *to,
                held_by: held_by.clone(),
                after: after.clone(),
            }))),
            Finding::Unverified { name } => write!(f, "no recorded checksum: {name}"),
            Finding::RecordSizeMismatch { name, size, recorded_sizes } => write!(
                f,
                "size mismatch: {name} has {size} bytes, but its checksum record is of {} bytes (cut short or replaced since it was archived)",
                recorded_sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(" and ")
            ),
            Finding::Conflict { name, local_size, local_crc32c, archived_size, archived_crc32c } => write!(
                f,
                "conflict: {name} is archived with {archived_size} bytes, CRC32C {archived_crc32c}, but the local segment \
                 has {local_size} bytes, CRC32C {local_crc32c}"
            ),
            Finding::ChecksumMismatch { name, recorded, found } => {
                write!(f, "checksum mismatch: {name} records CRC32C {recorded} but holds {found}")
            }
            Finding::DecodedMismatch { name, recorded_size, recorded_crc32c, found_size, found_crc32c } => write!(
                f,
                "decoded mismatch: {name} records {recorded_size} bytes with CRC32C {recorded_crc32c} once decoded, but decodes \
                 to {found_size} bytes with CRC32C {found_crc32c}"
            ),
            Finding::SizeMismatch { name, listed, read } => write!(f, "size mismatch: {name} is listed with {listed} bytes but {read} were read"),
            Finding::Unreadable { name, error } => write!(f, "unreadable: {name}: {error}"),
            Finding::NotASegment { name, reason } => write!(f, "not a segment ({reason}): {name:?}"),
            Finding::OffChain { name } => write!(f, "not on the chain (its LSNs are held by others): {name}"),
            Finding::StagingLeftover { name } => write!(f, "left in the staging area by an interrupted upload: {name}"),
        }
    }
}

/// What `verify` found over a range.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyOutcome {
    pub archive: String,
    pub from_lsn: u64,
    pub until_lsn: u64,
    pub deep: bool,
    pub segments: usize,
    /// The segments' bytes (decoded, for compressed ones).
    pub bytes: u64,
    /// What the archive stores for them: smaller where they are compressed.
    pub stored_bytes: u64,
    pub findings: Vec<Finding>,
}

impl VerifyOutcome {
    /// Sound over the range: a chain covers it, every segment is verified,
    /// nothing is corrupt or in conflict. Notes do not count.
    pub fn is_sound(&self) -> bool {
        !self.findings.iter().any(Finding::is_problem)
    }
}

/// Lists the archive and reports breaks, strays, unverified segments and
/// recorded conflicts; with `deep`, reads every segment back and checks its
/// size and CRC32C.
pub async fn verify(
    archive: &Archive,
    planner: &mut Planner,
    from: Option<u64>,
    until: Option<u64>,
    deep: bool,
    mut progress: impl FnMut(u64),
) -> Result<VerifyOutcome, RestoreError> {
    let listing = archive.list().await?;
    let report = planner.verify_plan(&listing.to_wit(), from, until)?.map_err(|e| {
        let (why, usage) = describe_range(&e);
        RestoreError::Range { verb: "verify", url: archive.url().to_owned(), why, usage }
    })?;
    let mut findings: Vec<Finding> = report.breaks.iter().map(Finding::from_break).collect();
    for name in &report.unverified {
        // Records of other sizes than the object's say more than "unrecorded".
        let mut recorded_sizes: Vec<u64> = listing.markers.get(name).map_or_else(Vec::new, |marks| marks.iter().map(|m| m.size).collect());
        recorded_sizes.sort_unstable();
        recorded_sizes.dedup();
        match listing.find(name) {
            Some(object) if !recorded_sizes.is_empty() && !recorded_sizes.contains(&object.size) => {
                findings.push(Finding::RecordSizeMismatch { name: name.clone(), size: object.size, recorded_sizes });
            }
            _ => findings.push(Finding::Unverified { name: name.clone() }),
        }
    }
    // A conflict stands until an archive run finds the segment archived
    // with the local bytes (and removes the record), or an operator does.
    for c in &listing.conflicts {
        findings.push(Finding::Conflict {
            name: c.name.clone(),
            local_size: c.local_size,
            local_crc32c: format!("{:08x}", c.local_crc32c),
            archived_size: c.archived_size,
            archived_crc32c: format!("{:08x}", c.archived_crc32c),
        });
    }
    if deep {
        // Every recorded object of each segment: the one the planner would
        // restore from, and its twin (plain or compressed) where the archive
        // holds the segment both ways, so that no copy is trusted unread.
        let mut objects: Vec<String> = Vec::new();
        for (name, _) in report.segments.iter() {
            let segment = segment_name(name);
            objects.extend([segment.to_owned(), format!("{segment}{}", crate::compress::ZSTD_SUFFIX)]);
        }
        for name in &objects {
            let name = name.as_str();
            let Some(object) = listing.find(name) else { continue };
            let (Some(recorded), Some(segment)) = (object.crc32c, object.segment) else { continue };
            match archive.inspect(&archive.key_of(name)).await {
                Ok((stored, decoded)) => {
                    // The stored object against its record, then what it decodes to.
                    if stored.size != object.size {
                        findings.push(Finding::SizeMismatch { name: name.to_owned(), listed: object.size, read: stored.size });
                    } else if stored.crc != recorded {
                        findings.push(Finding::ChecksumMismatch {
                            name: name.to_owned(),
                            recorded: format!("{recorded:08x}"),
                            found: format!("{:08x}", stored.crc),
                        });
                    } else {
                        match decoded {
                            Err(why) => findings.push(Finding::Unreadable { name: name.to_owned(), error: format!("it does not decode as zstd, so the object is damaged: {why}") }),
                            Ok(decoded) if decoded != segment => findings.push(Finding::DecodedMismatch {
                                name: name.to_owned(),
                                recorded_size: segment.size,
                                recorded_crc32c: format!("{:08x}", segment.crc),
                                found_size: decoded.size,
                                found_crc32c: format!("{:08x}", decoded.crc),
                            }),
                            Ok(_) => {}
                        }
                    }
                    progress(stored.size);
                }
                Err(e) => findings.push(Finding::Unreadable { name: name.to_owned(), error: e.to_string() }),
            }
        }
    }
    let bytes = report.segments.iter().map(|(_, size)| size).sum();
    let stored_bytes = report.segments.iter().map(|(name, size)| listing.find(name).map_or(size, |o| o.size)).sum();
    findings.extend(report.off_chain.iter().map(|n| Finding::OffChain { name: n.clone() }));
    findings.extend(report.strays.iter().map(|s| Finding::NotASegment { name: s.name.clone(), reason: crate::archive::describe_skip(&s.reason) }));
    findings.extend(listing.staging.iter().map(|n| Finding::StagingLeftover { name: n.clone() }));
    Ok(VerifyOutcome {
        archive: archive.url().to_owned(),
        from_lsn: report.from_lsn,
        until_lsn: report.until_lsn,
        deep,
        segments: report.segments.len(),
        bytes,
        stored_bytes,
        findings,
    })
}

/// The last LSN a restore reaches by default: the end of the range
/// `verify` would look at.
pub async fn default_until(archive: &Archive, planner: &mut Planner, from: Option<u64>) -> Result<u64, RestoreError> {
    let listing = archive.list().await?;
    match planner.verify_plan(&listing.to_wit(), from, None)? {
        Ok(report) => Ok(report.until_lsn),
        Err(e) => {
            let (why, usage) = describe_range(&e);
            Err(RestoreError::Range { verb: "restore from", url: archive.url().to_owned(), why, usage })
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreSummary {
    pub restored: Vec<String>,
    pub already_there: Vec<String>,
    pub bytes: u64,
}

/// Restores a shortest chain covering `from`..=`until` into `into`.
///
/// Refuses before downloading anything when no chain covers the range (with
/// the break `verify` reports), when a segment of it has no recorded
/// checksum, or when `into` holds a file of the chain's with other bytes.
/// Each segment is downloaded to a hidden temporary name, checked against
/// its recorded size and CRC32C, synced and renamed, so a half-downloaded
/// file never carries a final name, and the temporary file is removed on
/// every error; files already restored and verified are skipped, so a
/// restore can be resumed.
pub async fn restore(
    archive: &Archive,
    planner: &mut Planner,
    into: &Path,
    from: Option<u64>,
    until: u64,
    concurrency: usize,
    progress: impl Fn(u64) + Sync,
) -> Result<RestoreSummary, RestoreError> {
    let listing = archive.list().await?;
    let chain = planner.restore_plan(&listing.to_wit(), from, until)?.map_err(|e| match e {
        PlanError::Range(r) => {
            let (why, usage) = describe_range(&r);
            RestoreError::Range { verb: "restore from", url: archive.url().to_owned(), why, usage }
        }
        PlanError::Broken(b) => RestoreError::NoChain { until, why: describe_break_in(&b, &listing) },
    })?;
    create_dir_durably(into)?;
    remove_leftovers(into)?;

    // Everything is checked before the first byte is downloaded.
    let mut todo = Vec::new();
    let mut summary = RestoreSummary::default();
    for (name, _) in chain.iter() {
        // The chain names objects; each is restored under its segment's name.
        let Some(object) = listing.find(name) else {
            return Err(RestoreError::BadPlan { plugin: planner.plugin().to_owned(), why: format!("{name} is not in the archive") });
        };
        let (Some(crc), Some(segment)) = (object.crc32c, object.segment) else {
            return Err(RestoreError::Corrupt {
                url: archive.display_key(&archive.key_of(name)),
                why: "it has no recorded checksum, so it cannot be verified".into(),
            });
        };
        // A copy an archiver found to differ from the local segment it came
        // from is not restored as if it were good: the conflict comes first.
        if let Some(c) = listing.conflicts.iter().find(|c| segment_name(&c.name) == segment_name(name)) {
            return Err(RestoreError::Corrupt {
                url: archive.display_key(&archive.key_of(name)),
                why: format!(
                    "it is in conflict with the local segment it was archived from (the archive held {} bytes, CRC32C \
                     {:08x}; the local segment had {} bytes, CRC32C {:08x}); resolve the conflict first",
                    c.archived_size, c.archived_crc32c, c.local_size, c.local_crc32c
                ),
            });
        }
        let file_name = segment_name(name);
        crate::wal::WalDir::check_name(file_name)?;
        let dest = into.join(file_name);
        match File::open(&dest) {
            Ok(f) => {
                let (size, have) = checksum_reader(&f, &dest)?;
                if (size, have) != segment.pair() {
                    return Err(RestoreError::Refused {
                        path: dest,
                        why: format!(
                            "a different file is already there ({size} bytes, CRC32C {have:08x}; the archive has {} bytes, CRC32C {:08x})",
                            segment.size, segment.crc
                        ),
                    });
                }
                summary.already_there.push(file_name.to_owned());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                todo.push((name.to_owned(), Sum { size: object.size, crc }, segment));
            }
            Err(cause) => return Err(RestoreError::Io { verb: "open", path: dest, cause }),
        }
    }

    let results: Vec<Result<u64, RestoreError>> = futures::stream::iter(todo.iter())
        .map(|(name, stored, segment)| download(archive, into, name, *stored, *segment, &progress))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for ((name, _, _), r) in todo.iter().zip(results.iter()) {
        if let Ok(bytes) = r {
            summary.bytes += bytes;
            summary.restored.push(segment_name(name).to_owned());
        }
    }
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    File::open(into).and_then(|d| d.sync_all()).map_err(|cause| RestoreError::Io { verb: "sync", path: into.to_owned(), cause })?;
    summary.restored.sort();
    Ok(summary)
}

/// A break as restore reports it: a gap past every recorded segment is where
/// the archive ends, not a hole in it.
fn describe_break_in(b: &wit::ChainBreak, listing: &Listing) -> String {
    let end = listing.objects.iter().filter(|o| o.crc32c.is_some()).filter_map(|o| crate::lsn::object_lsns(&o.name)).map(|(_, last)| last).max();
    match (b, end) {
        (wit::ChainBreak::Gap(g), Some(end)) if g.from_lsn > end => format!(
            "the archive ends at LSN {}: LSNs {} to {} are not in it (yet)",
            format_lsn(end),
            format_lsn(g.from_lsn),
            format_lsn(g.to_lsn)
        ),
        _ => describe_break(b),
    }
}

/// An I/O error of restore's own files, for `map_err`.
fn io_err(verb: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RestoreError {
    let path = path.to_owned();
    move |cause| RestoreError::Io { verb, path, cause }
}

/// Makes `into` and any missing folder above it, and syncs the folder that
/// holds each new one: a restore that said it was done must still be there
/// after a power cut.
fn create_dir_durably(into: &Path) -> Result<(), RestoreError> {
    let missing: Vec<&Path> = into.ancestors().take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err()).collect();
    std::fs::create_dir_all(into).map_err(io_err("create", into))?;
    for made in missing.iter().rev() {
        let above = match made.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        crate::wal::sync_dir(above).map_err(io_err("sync", above))?;
    }
    Ok(())
}

/// This machine's name, in temporary names: a process id means something
/// only on the machine (and in the container) that gave it.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are ours; gethostname NUL-terminates
    // what fits.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0;
    let len = buf.iter().position(|b| *b == 0).unwrap_or(0);
    let name = if ok { String::from_utf8_lossy(&buf[..len]).into_owned() } else { String::new() };
    // A plain word: the name must not hold `.`, `-`, `/` or `@`.
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if name.is_empty() { "host".to_owned() } else { name }
}

/// Removes what restores that were killed left in `into`: their temporary
/// files, `.{segment}.{pid}@{host}-{n}.restoring`, made on this machine by a
/// process that is gone (a restore still running keeps its own; another
/// machine's are left alone), and `.{segment}.restoring` of older builds,
/// once a day old.
fn remove_leftovers(into: &Path) -> Result<(), RestoreError> {
    let here = host_name();
    let entries = std::fs::read_dir(into).map_err(|cause| RestoreError::Io { verb: "list", path: into.to_owned(), cause })?;
    for entry in entries {
        let entry = entry.map_err(|cause| RestoreError::Io { verb: "list", path: into.to_owned(), cause })?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Some(middle) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".restoring")) else { continue };
        // `{segment}` (older builds), or `{segment}.{pid}@{host}-{n}` of a
        // process of this machine now gone.
        let old_enough = || {
            std::fs::symlink_metadata(entry.path())
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(86_400)))
        };
        let segment = if middle.ends_with(".seg") {
            if !old_enough() {
                continue;
            }
            middle
        } else {
            let Some((segment, owner)) = middle.rsplit_once('.') else { continue };
            let Some((pid, rest)) = owner.split_once('@') else { continue };
            let Some((host, n)) = rest.rsplit_once('-') else { continue };
            let (Ok(pid), Ok(_)) = (pid.parse::<i32>(), n.parse::<u64>()) else { continue };
            if host != here || process_is_alive(pid) {
                continue;
            }
            segment
        };
        if !(segment.starts_with("wal-") && segment.ends_with(".seg")) {
            continue;
        }
        let path = entry.path();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            _ => continue,
        }
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %path.display(), "removed what a killed restore left"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(cause) => return Err(RestoreError::Io { verb: "remove", path, cause }),
        }
    }
    Ok(())
}

/// True while a process with this id exists (ours included).
fn process_is_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Restores in flight in this process: each has a temporary name of its own.
static RESTORING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A temporary file that is removed when dropped, unless it was renamed
/// into place: no error path leaves one behind.
struct TempFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloads one object through a hidden temporary file named after its
/// segment, decoding a compressed one on the way, and checks both what was
/// stored (`stored`: the object's recorded size and CRC32C) and what was
/// written (`segment`).
async fn download(archive: &Archive, into: &Path, object: &str, stored: Sum, segment: Sum, progress: &impl Fn(u64)) -> Result<u64, RestoreError> {
    let key = archive.key_of(object);
    let url = archive.display_key(&key);
    let name = segment_name(object);
    let dest = into.join(name);
    // A name of this process and download only, opened create-only without
    // following a link: two restores into one folder never share a file.
    let n = RESTORING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = TempFile { path: into.join(format!(".{name}.{}@{}-{n}.restoring", std::process::id(), host_name())), kept: false };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp.path)
        .map_err(io_err("create", &tmp.path))?;
    let mut stream = archive.read(&key).await.map_err(|e| match e {
        // Gone since the listing (a prune, say): the archive cannot give it.
        StorageError::Missing { .. } => RestoreError::Corrupt { url: url.clone(), why: "it is no longer in the archive".into() },
        e => e.into(),
    })?;
    let (got, written) = if is_compressed(object) {
        // A write error is the temporary file's; any other is a frame that does not decode.
        let undecodable = |e: io::Error| RestoreError::Corrupt { url: url.clone(), why: format!("it does not decode as zstd, so the object is damaged: {e}") };
        // The file's side: an error of the system, or a write that took nothing.
        let writing = |e: &io::Error| e.raw_os_error().is_some() || matches!(e.kind(), io::ErrorKind::WriteZero | io::ErrorKind::StorageFull);
        // The unpacker sums the decoded bytes as it writes them.
        let mut unpacker = Unpacker::new(&mut file).map_err(undecodable)?;
        let mut write_failed = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if let Err(e) = unpacker.push(&chunk) {
                write_failed = Some(e);
                break;
            }
            progress(chunk.len() as u64);
        }
        if let Some(e) = write_failed {
            return Err(if writing(&e) { RestoreError::Io { verb: "write", path: tmp.path.clone(), cause: e } } else { undecodable(e) });
        }
        let (got, written, _) = unpacker
            .finish()
            .map_err(|e| if writing(&e) { RestoreError::Io { verb: "write", path: tmp.path.clone(), cause: e } } else { undecodable(e) })?;
        (got, written)
    } else {
        let mut got = Sum::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            got.add(&chunk);
            file.write_all(&chunk).map_err(io_err("write", &tmp.path))?;
            progress(chunk.len() as u64);
        }
        (got, got)
    };
    if got != stored {
        return Err(RestoreError::Corrupt {
            url,
            why: format!(
                "it holds {} bytes with CRC32C {:08x}, but {} bytes with CRC32C {:08x} were archived",
                got.size, got.crc, stored.size, stored.crc
            ),
        });
    }
    if written != segment {
        return Err(RestoreError::Corrupt {
            url,
            why: format!(
                "it decodes to {} bytes with CRC32C {:08x}, but the segment archived had {} bytes with CRC32C {:08x}",
                written.size, written.crc, segment.size, segment.crc
            ),
        });
    }
    file.sync_all().map_err(io_err("sync", &tmp.path))?;
    std::fs::rename(&tmp.path, &dest).map_err(|cause| {
        // Gone from under its name: something removed the temporary file.
        let path = if cause.kind() == io::ErrorKind::NotFound { tmp.path.clone() } else { dest.clone() };
        RestoreError::Io { verb: "rename into place", path, cause }
    })?;
    tmp.kept = true;
    Ok(written.size)
}

/// What a prune did, or would do.
#[derive(Debug, Clone)]
pub struct PruneSummary {
    pub segments: Vec<String>,
    pub pruned_below: u64,
    pub chain_start: u64,
}

/// Deletes the segments lying wholly below `before`, oldest first, each
/// object before its checksum record; with `dry_run`, only says which.
/// Refused (nothing removed) above the archive's watermark. The floor and
/// the new chain start are recorded in the archive first, so that an
/// archiver never uploads again what was pruned.
pub async fn prune(archive: &Archive, planner: &mut Planner, before: u64, dry_run: bool) -> Result<PruneSummary, RestoreError> {
    let listing: Listing = archive.list().await?;
    let refused = |why: String| RestoreError::PruneRefused { url: archive.url().to_owned(), before, why };
    let order = planner.prune_plan(&listing.to_wit(), before)?.map_err(|e| match e {
        PruneError::NoChain => refused("the archive holds no chain from its start, so nothing is safe to prune".into()),
        PruneError::AboveWatermark(w) => refused(format!(
            "the archive's watermark is {}; pruning past it would leave no chain to it, and the segment that holds it is \
             always kept (use --before-lsn {} or lower)",
            format_lsn(w),
            w
        )),
    })?;
    let segments: Vec<String> = order.segments.iter().map(|(n, _)| n.to_owned()).collect();
    for name in &segments {
        // The host's own check: only segment objects that are listed, and
        // never the one that holds the bound.
        let last = crate::lsn::segment_last_lsn(name);
        if listing.find(name).is_none() || last.is_none_or(|l| l >= before) {
            return Err(RestoreError::BadPlan { plugin: planner.plugin().to_owned(), why: format!("pruning {name} below LSN {before}") });
        }
    }
    if !dry_run && !segments.is_empty() {
        archive.record(Record::PrunedBelow, before).await?;
        archive.record(Record::ChainStart, order.chain_start).await?;
        for name in &segments {
            archive.delete_segment(name, &listing).await?;
        }
    }
    Ok(PruneSummary { segments, pruned_below: order.pruned_below, chain_start: order.chain_start })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_what_killed_restores_left_and_keeps_a_running_ones_file() {
        let dir = tempfile::tempdir().unwrap();
        let seg = "wal-0000000000000001-0000000000000064.seg";
        let here = host_name();
        // A pid above the kernel's limit (pid_max is at most 2^22): no process has it.
        let gone = format!(".{seg}.{}@{here}-0.restoring", 1 << 23);
        let running = format!(".{seg}.{}@{here}-3.restoring", std::process::id());
        let elsewhere = format!(".{seg}.{}@another_machine-0.restoring", 1 << 23);
        let older = format!(".{seg}.restoring");
        let older_new = ".wal-0000000000000065-00000000000000c8.seg.restoring".to_owned();
        let others = [".notes.restoring", ".wal-x.seg.1-2.restoring.bak", "wal-0000000000000001-0000000000000064.seg", ".hidden"];
        let kept: Vec<String> = others.iter().map(|s| s.to_string()).chain([running.clone(), elsewhere.clone(), older_new.clone()]).collect();
        for name in kept.iter().chain([&gone, &older]) {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        // An older build's, two days old.
        let two_days = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        std::fs::File::options().write(true).open(dir.path().join(&older)).unwrap().set_modified(two_days).unwrap();
        remove_leftovers(dir.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut want = kept;
        want.sort();
        assert_eq!(left, want);
    }
}
