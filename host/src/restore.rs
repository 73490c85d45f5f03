//! The restore side, carried out: verify an archive, restore a chain of
//! segments up to an LSN, prune what lies below one. The planner decides
//! from a listing of the archive; this module reads, writes and deletes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::component::{wit, Planner, PlannerError};
use crate::lsn::format_lsn;
use crate::storage::{checksum_file, Archive, StorageError};

/// Why verify, restore or prune could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Planner(#[from] PlannerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot restore up to LSN {}: {why}", format_lsn(*until))]
    NoChain { until: u64, why: String },
    #[error("cannot restore {}: {}", path.display(), why)]
    Refused { path: PathBuf, why: String },
    #[error("cannot {verb} {}: {source}", path.display())]
    Io { verb: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot restore {url}: {why}")]
    Corrupt { url: String, why: String },
    #[error("planner component {plugin} made a bad plan: {why}")]
    BadPlan { plugin: String, why: String },
}

/// One problem `verify` found, for text and JSON alike.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    Gap { from: u64, to: u64 },
    Overlap { first: String, second: String, from: u64, to: u64 },
    NotASegment { name: String },
    Unverified { name: String },
    ChecksumMismatch { name: String, recorded: String, found: String },
    SizeMismatch { name: String, listed: u64, read: u64 },
    Unreadable { name: String, error: String },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Gap { from, to } => write!(f, "gap: LSNs {} to {} are missing", format_lsn(*from), format_lsn(*to)),
            Finding::Overlap { first, second, from, to } => {
                write!(f, "overlap: {first} and {second} both claim LSNs {} to {}", format_lsn(*from), format_lsn(*to))
            }
            Finding::NotASegment { name } => write!(f, "not a segment: {name}"),
            Finding::Unverified { name } => write!(f, "no recorded checksum: {name}"),
            Finding::ChecksumMismatch { name, recorded, found } => {
                write!(f, "checksum mismatch: {name} records CRC32C {recorded} but holds {found}")
            }
            Finding::SizeMismatch { name, listed, read } => write!(f, "size mismatch: {name} is listed with {listed} bytes but {read} were read"),
            Finding::Unreadable { name, error } => write!(f, "unreadable: {name}: {error}"),
        }
    }
}

/// What `verify` found over a range.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyOutcome {
    pub archive: String,
    pub from_lsn: Option<u64>,
    pub until_lsn: Option<u64>,
    pub deep: bool,
    pub segments: usize,
    pub bytes: u64,
    pub findings: Vec<Finding>,
}

impl VerifyOutcome {
    /// Sound over the range: contiguous, every segment verified, nothing corrupt.
    /// Objects that are not segments are reported but do not make it unsound.
    pub fn is_sound(&self) -> bool {
        self.findings.iter().all(|f| matches!(f, Finding::NotASegment { .. }))
    }
}

/// Lists the archive and reports gaps, overlaps, strays and unverified
/// segments; with `deep`, reads every segment back and checks its CRC32C.
pub async fn verify(
    archive: &Archive,
    planner: &mut Planner,
    from: Option<u64>,
    until: Option<u64>,
    deep: bool,
    mut progress: impl FnMut(u64),
) -> Result<VerifyOutcome, RestoreError> {
    let listing = archive.list().await?;
    let report = planner.verify_plan(&listing, from, until)?;
    let mut findings = Vec::new();
    findings.extend(report.gaps.iter().map(|g| Finding::Gap { from: g.from_lsn, to: g.to_lsn }));
    findings.extend(report.overlaps.iter().map(|o| Finding::Overlap {
        first: o.first.clone(),
        second: o.second.clone(),
        from: o.from_lsn,
        to: o.to_lsn,
    }));
    findings.extend(report.not_segments.iter().map(|n| Finding::NotASegment { name: n.clone() }));
    findings.extend(report.unverified.iter().map(|n| Finding::Unverified { name: n.clone() }));
    if deep {
        for seg in &report.segments {
            let Some(recorded) = find(&listing, &seg.name).and_then(|o| o.crc32c) else { continue };
            let key = archive.key_of(&seg.name);
            let read = async {
                let size = archive.stored_size(&key).await?.unwrap_or(0);
                let crc = archive.checksum(&ObjectPath::from(key.as_str()), &key).await?;
                Ok::<_, StorageError>((size, crc))
            };
            match read.await {
                Ok((size, crc)) => {
                    if size != seg.size {
                        findings.push(Finding::SizeMismatch { name: seg.name.clone(), listed: seg.size, read: size });
                    } else if crc != recorded {
                        findings.push(Finding::ChecksumMismatch {
                            name: seg.name.clone(),
                            recorded: format!("{recorded:08x}"),
                            found: format!("{crc:08x}"),
                        });
                    }
                    progress(size);
                }
                Err(e) => findings.push(Finding::Unreadable { name: seg.name.clone(), error: e.to_string() }),
            }
        }
    }
    Ok(VerifyOutcome {
        archive: archive.url().to_owned(),
        from_lsn: from,
        until_lsn: until,
        deep,
        segments: report.segments.len(),
        bytes: report.segments.iter().map(|s| s.size).sum(),
        findings,
    })
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreSummary {
    pub restored: Vec<String>,
    pub already_there: Vec<String>,
    pub bytes: u64,
}

/// Restores the minimal chain covering `from`..=`until` into `into`.
///
/// Refuses before downloading anything when the chain has a gap, when a
/// segment of it has no recorded checksum, or when `into` holds a file of
/// the chain's with other bytes. Each segment is downloaded to a hidden
/// temporary name, checked against its recorded size and CRC32C, synced and
/// renamed, so a half-downloaded file never carries a final name; files
/// already restored and verified are skipped, so a restore can be resumed.
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
    let chain = planner.restore_plan(&listing, from, until)?.map_err(|e| RestoreError::NoChain {
        until,
        why: describe_restore_error(&e),
    })?;
    std::fs::create_dir_all(into).map_err(|source| RestoreError::Io { verb: "create", path: into.to_owned(), source })?;

    // Everything is checked before the first byte is downloaded.
    let mut todo = Vec::new();
    let mut summary = RestoreSummary::default();
    for seg in &chain {
        let Some(object) = find(&listing, &seg.name) else {
            return Err(RestoreError::BadPlan { plugin: planner.plugin().to_owned(), why: format!("{} is not in the archive", seg.name) });
        };
        let Some(crc) = object.crc32c else {
            return Err(RestoreError::Corrupt {
                url: archive.display_key(&archive.key_of(&seg.name)),
                why: "it has no recorded checksum, so it cannot be verified".into(),
            });
        };
        crate::storage::WalDir::check_name(&seg.name)?;
        let dest = into.join(&seg.name);
        match File::open(&dest) {
            Ok(f) => {
                let (size, have) = checksum_file(f, &dest)?;
                if (size, have) != (object.size, crc) {
                    return Err(RestoreError::Refused {
                        path: dest,
                        why: format!(
                            "a different file is already there ({size} bytes, CRC32C {have:08x}; the archive has {} bytes, CRC32C {crc:08x})",
                            object.size
                        ),
                    });
                }
                summary.already_there.push(seg.name.clone());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => todo.push((seg.clone(), object.size, crc)),
            Err(source) => return Err(RestoreError::Io { verb: "open", path: dest, source }),
        }
    }

    let results: Vec<Result<u64, RestoreError>> = futures::stream::iter(todo.iter())
        .map(|(seg, size, crc)| download(archive, into, &seg.name, *size, *crc, &progress))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for ((seg, _, _), r) in todo.iter().zip(results.iter()) {
        if let Ok(bytes) = r {
            summary.bytes += bytes;
            summary.restored.push(seg.name.clone());
        }
    }
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    File::open(into).and_then(|d| d.sync_all()).map_err(|source| RestoreError::Io { verb: "sync", path: into.to_owned(), source })?;
    summary.restored.sort();
    Ok(summary)
}

/// Downloads one segment through a hidden temporary file.
async fn download(
    archive: &Archive,
    into: &Path,
    name: &str,
    size: u64,
    crc: u32,
    progress: &impl Fn(u64),
) -> Result<u64, RestoreError> {
    let key = archive.key_of(name);
    let url = archive.display_key(&key);
    let dest = into.join(name);
    let tmp = into.join(format!(".{name}.restoring"));
    let io_err = |verb, path: &Path| {
        let path = path.to_owned();
        move |source| RestoreError::Io { verb, path, source }
    };
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io_err("create", &tmp))?;
    let mut stream = archive
        .store()
        .get(&ObjectPath::from(key.as_str()))
        .await
        .map_err(|source| StorageError::Store { verb: "download", url: url.clone(), source })?
        .into_stream();
    let (mut got, mut have) = (0u64, 0u32);
    let outcome = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| StorageError::Store { verb: "download", url: url.clone(), source })?;
            have = crc32c::crc32c_append(have, &chunk);
            got += chunk.len() as u64;
            file.write_all(&chunk).map_err(io_err("write", &tmp))?;
            progress(chunk.len() as u64);
        }
        if (got, have) != (size, crc) {
            return Err(RestoreError::Corrupt {
                url: url.clone(),
                why: format!("it holds {got} bytes with CRC32C {have:08x}, but {size} bytes with CRC32C {crc:08x} were archived"),
            });
        }
        file.sync_all().map_err(io_err("sync", &tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io_err("rename into place", &dest))
    }
    .await;
    if outcome.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    outcome.map(|()| got)
}

/// The object named `name` in a listing from [`Archive::list`], which is in
/// name order: a binary search, so that a chain of 100,000 segments is not
/// checked in quadratic time.
fn find<'a>(listing: &'a [wit::ArchivedObject], name: &str) -> Option<&'a wit::ArchivedObject> {
    listing.binary_search_by(|o| o.name.as_str().cmp(name)).ok().map(|i| &listing[i])
}

/// Deletes the segments lying wholly below `before`, oldest first, each
/// object before its checksum marker; with `dry_run`, only says which.
pub async fn prune(archive: &Archive, planner: &mut Planner, before: u64, dry_run: bool) -> Result<Vec<wit::Segment>, RestoreError> {
    let listing = archive.list().await?;
    let plan = planner.prune_plan(&listing, before)?;
    for seg in &plan {
        // The host's own check: never anything at or above the bound.
        if seg.last_lsn >= before || find(&listing, &seg.name).is_none() {
            return Err(RestoreError::BadPlan {
                plugin: planner.plugin().to_owned(),
                why: format!("pruning {} below LSN {before}", seg.name),
            });
        }
    }
    if !dry_run {
        for seg in &plan {
            archive.delete_segment(&seg.name).await?;
        }
    }
    Ok(plan)
}

/// A restore error, in words.
pub fn describe_restore_error(e: &wit::RestoreError) -> String {
    match e {
        wit::RestoreError::Empty => "the archive holds no segment".into(),
        wit::RestoreError::StartsAfter(l) => format!("the archive starts at LSN {}", format_lsn(*l)),
        wit::RestoreError::Gap(g) => format!("LSNs {} to {} are missing from the archive", format_lsn(g.from_lsn), format_lsn(g.to_lsn)),
        wit::RestoreError::EndsBefore(l) => format!("the archive ends at LSN {}", format_lsn(*l)),
        wit::RestoreError::EmptyRange => "the first LSN asked for is above the last".into(),
    }
}
