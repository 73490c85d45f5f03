//! The archive: where segments go, on one of two backend families.
//!
//! - [`local`]: a directory of our own making (`file://`, the embedded
//!   default). object_store's LocalFileSystem hides objects named `x#1`,
//!   stops listing at a name it cannot encode, follows symlinks and cannot
//!   copy in the kernel; this backend lists every entry without following
//!   any link and publishes a segment with `copy_file_range` and `link`.
//! - [`object`]: S3, GCS, Azure and memory through object_store.
//!
//! Both keep the same layout under the prefix: segments by name, their
//! checksum records in `_checksums/`, the chain start and prune floor in
//! `_chain/`, conflicts found in `_conflicts/`, and uploads in flight in
//! `_staging/`.

pub mod azure;
pub mod gcs;
pub mod local;
pub mod object;
pub mod probe;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::ObjectStore;

use crate::bindings::wit;
use crate::compress::{is_compressed, Compression, Sum, Unpacker};
use crate::storage::StorageError;
use crate::wal::SegmentFile;

pub use object::BufferPool;

/// Where uploads are staged before they are published under their key.
pub const STAGING_DIR: &str = "_staging";
/// Checksum records: `{prefix}/_checksums/{name}.crc32c-{8 hex}-{size}`, and
/// for a compressed object `{name}.zst.crc32c-{8 hex}-{size}.segment-{8 hex}-{size}`
/// (the object's bytes, then the segment's it decodes to).
pub const CHECKSUM_DIR: &str = "_checksums";
/// Chain records: `{prefix}/_chain/start-{16 hex}`, `{prefix}/_chain/pruned-below-{16 hex}`.
pub const CHAIN_DIR: &str = "_chain";
/// Conflicts found: `{prefix}/_conflicts/{name}.local-{8 hex}-{size}.archived-{8 hex}-{size}`.
pub const CONFLICT_DIR: &str = "_conflicts";
const MARKER_INFIX: &str = ".crc32c-";
const SEGMENT_INFIX: &str = ".segment-";
const CONFLICT_INFIX: &str = ".local-";
const CONFLICT_ARCHIVED: &str = ".archived-";
/// object_store's retries of one request, by default.
pub const DEFAULT_REQUEST_RETRIES: usize = 3;

/// A fact the archive records about its chain, as an empty object whose
/// name holds the LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The chain start: fixed once the watermark exists; a prune moves it on.
    ChainStart,
    /// The prune floor: segments wholly below it were pruned.
    PrunedBelow,
}

impl Record {
    fn prefix(self) -> &'static str {
        match self {
            Record::ChainStart => "start-",
            Record::PrunedBelow => "pruned-below-",
        }
    }

    /// The record's name in `_chain/` for `lsn`.
    fn name(self, lsn: u64) -> String {
        format!("{}{lsn:016x}", self.prefix())
    }

    /// The LSN a record name holds, if it is one of this kind.
    fn parse(self, name: &str) -> Option<u64> {
        let hex = name.strip_prefix(self.prefix())?;
        (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
    }
}

/// What a checksum record says: the object's CRC32C and size, and for a
/// compressed object the segment's it decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub crc: u32,
    pub size: u64,
    pub segment: Option<Sum>,
}

/// The name of a checksum record; the inverse of [`parse_marker`].
fn marker_name(name: &str, m: Mark) -> String {
    let (crc, size) = (m.crc, m.size);
    match m.segment {
        None => format!("{name}{MARKER_INFIX}{crc:08x}-{size}"),
        Some(s) => format!("{name}{MARKER_INFIX}{crc:08x}-{size}{SEGMENT_INFIX}{:08x}-{}", s.crc, s.size),
    }
}

/// A CRC32C in 8 hex digits and a size in decimal, `{crc}-{size}`.
/// Only the form [`marker_name`] writes counts (lowercase hex, no sign, no
/// leading zero), so that every record trusted can also be found by name and
/// removed.
fn parse_sum(fields: &str) -> Option<(u32, u64)> {
    let (hex, size) = fields.split_once('-')?;
    let lower_hex = hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let decimal = !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()) && (size == "0" || !size.starts_with('0'));
    (lower_hex && decimal).then_some(())?;
    Some((u32::from_str_radix(hex, 16).ok()?, size.parse().ok()?))
}

/// The object name and what a checksum record says.
fn parse_marker(marker: &str) -> Option<(&str, Mark)> {
    let (name, fields) = marker.rsplit_once(MARKER_INFIX)?;
    let (own, segment) = match fields.split_once(SEGMENT_INFIX) {
        Some((own, segment)) => (own, Some(parse_sum(segment).map(|(crc, size)| Sum { size, crc })?)),
        None => (fields, None),
    };
    let (crc, size) = parse_sum(own)?;
    Some((name, Mark { crc, size, segment }))
}

/// The name of a conflict record: the local file's and the archived
/// object's CRC32C and size; the inverse of [`parse_conflict`].
fn conflict_name(c: &wit::SegmentConflict) -> String {
    format!("{}{CONFLICT_INFIX}{:08x}-{}{CONFLICT_ARCHIVED}{:08x}-{}", c.name, c.local_crc32c, c.local_size, c.archived_crc32c, c.archived_size)
}

fn parse_conflict(record: &str) -> Option<wit::SegmentConflict> {
    let (rest, archived) = record.rsplit_once(CONFLICT_ARCHIVED)?;
    let (name, local) = rest.rsplit_once(CONFLICT_INFIX)?;
    let ((local_crc32c, local_size), (archived_crc32c, archived_size)) = (parse_sum(local)?, parse_sum(archived)?);
    Some(wit::SegmentConflict { name: name.to_owned(), local_size, local_crc32c, archived_size, archived_crc32c })
}

/// True for a staging name of this archiver's making,
/// `{name}.{pid}-{hex time}-{n}`: only those are ever removed.
pub(crate) fn is_own_staging_name(name: &str) -> bool {
    let Some((base, token)) = name.rsplit_once('.') else { return false };
    let mut fields = token.split('-');
    let (Some(pid), Some(time), Some(n), None) = (fields.next(), fields.next(), fields.next(), fields.next()) else { return false };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    !base.is_empty() && digits(pid) && digits(n) && !time.is_empty() && time.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An error and its causes, each once: object_store's errors often repeat
/// their cause in their own message, and again as their source.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !t.is_empty() && !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    plain_xml_error(&text)
}

/// A store's XML error document (S3, GCS and Azure answer with one) as
/// its code and message: `BadDigest: checksum mismatch`, not the markup.
fn plain_xml_error(text: &str) -> String {
    let field = |tag: &str| {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let start = text.find(&open)? + open.len();
        Some(&text[start..start + text[start..].find(&close)?])
    };
    let (Some(doc), Some(code)) = (text.find("<?xml").or_else(|| text.find("<Error>")), field("Code")) else {
        return text.to_owned();
    };
    let end = text.rfind("</Error>").map_or(text.len(), |i| i + "</Error>".len());
    let plain = match field("Message") {
        Some(message) if !message.is_empty() => format!("{code}: {message}"),
        _ => code.to_owned(),
    };
    format!("{}{plain}{}", &text[..doc], &text[end.max(doc)..])
}

/// One entry directly under the archive's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The last part of its key (lossy when not UTF-8).
    pub name: String,
    pub utf8: bool,
    pub kind: wit::EntryKind,
    pub size: u64,
    /// The recorded CRC32C, when a record of the same size is there.
    pub crc32c: Option<u32>,
    /// The segment it holds, when recorded: for a plain object its own size
    /// and CRC32C, for a compressed one what it decodes to.
    pub segment: Option<Sum>,
}

/// What one listing of the archive shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// Entries directly under the prefix, in name order.
    pub objects: Vec<Object>,
    pub chain_start: Option<u64>,
    pub pruned_below: Option<u64>,
    /// Conflicts recorded by archive runs, and not yet resolved by one.
    pub conflicts: Vec<wit::SegmentConflict>,
    /// Every checksum record, by object name.
    pub markers: HashMap<String, Vec<Mark>>,
    /// Objects left in the staging area (by uploads that were killed).
    pub staging: Vec<String>,
}

impl Listing {
    /// The object named `name`: a binary search, as listings are in name order.
    pub fn find(&self, name: &str) -> Option<&Object> {
        self.objects.binary_search_by(|o| o.name.as_str().cmp(name)).ok().map(|i| &self.objects[i])
    }

    /// As the planner takes it.
    pub fn to_wit(&self) -> wit::ArchiveListing {
        let mut out = wit::ArchiveListing::default();
        for o in &self.objects {
            // A compressed object is listed as the segment it holds.
            match (is_compressed(&o.name), o.crc32c, o.segment) {
                (true, Some(_), Some(seg)) => out.push(&o.name, o.utf8, o.kind, seg.size, Some(seg.crc)),
                (true, _, _) => out.push(&o.name, o.utf8, o.kind, o.size, None),
                (false, crc, _) => out.push(&o.name, o.utf8, o.kind, o.size, crc),
            }
        }
        out.chain_start = self.chain_start;
        out.pruned_below = self.pruned_below;
        out
    }

    /// Builds a listing from the entries under the prefix, by their parts
    /// relative to it, as each backend lists them. Records that do not
    /// parse are not records. An object's recorded checksum is the one its
    /// records of its size agree on; records of another size are about a
    /// copy that is gone, and records that disagree are none.
    fn build(entries: Vec<(Vec<String>, bool, wit::EntryKind, u64)>, display: impl Fn(&str) -> String) -> Self {
        let mut out = Listing::default();
        for (parts, utf8, kind, size) in entries {
            match parts.as_slice() {
                [name] => out.objects.push(Object { name: name.clone(), utf8, kind, size, crc32c: None, segment: None }),
                [dir, record] if dir == CHECKSUM_DIR && kind == wit::EntryKind::File => {
                    if let Some((name, mark)) = parse_marker(record) {
                        out.markers.entry(name.to_owned()).or_default().push(mark);
                    }
                }
                [dir, record] if dir == CHAIN_DIR && kind == wit::EntryKind::File => {
                    if let Some(l) = Record::ChainStart.parse(record) {
                        out.chain_start = out.chain_start.max(Some(l));
                    } else if let Some(l) = Record::PrunedBelow.parse(record) {
                        out.pruned_below = out.pruned_below.max(Some(l));
                    }
                }
                [dir, record] if dir == CONFLICT_DIR && kind == wit::EntryKind::File => {
                    if let Some(c) = parse_conflict(record) {
                        out.conflicts.push(c);
                    }
                }
                [dir, staged] if dir == STAGING_DIR => out.staging.push(staged.clone()),
                _ => {}
            }
        }
        out.objects.sort_by(|a, b| a.name.cmp(&b.name));
        for o in &mut out.objects {
            let Some(marks) = out.markers.get(&o.name) else {
                continue;
            };
            // A compressed object's record must say what it decodes to; a
            // plain one's says nothing more.
            let compressed = is_compressed(&o.name);
            let mut sums: Vec<(u32, Option<Sum>)> =
                marks.iter().filter(|m| m.size == o.size && m.segment.is_some() == compressed).map(|m| (m.crc, m.segment)).collect();
            sums.sort_by_key(|(crc, seg)| (*crc, seg.map(Sum::pair)));
            sums.dedup();
            (o.crc32c, o.segment) = match sums.as_slice() {
                [(crc, seg)] => (Some(*crc), Some(seg.unwrap_or(Sum { size: o.size, crc: *crc }))),
                [] => {
                    let shown = display(&o.name);
                    let mut others: Vec<u64> = marks.iter().map(|m| m.size).filter(|s| *s != o.size).collect();
                    others.sort_unstable();
                    others.dedup();
                    warn_once(format!("unrecorded {} {}", o.name, o.size), || match others.as_slice() {
                        // Records of its size, but of the other kind (plain
                        // for a compressed name, or the reverse).
                        [] => format!("{shown} has {} bytes, but no checksum record of that size for its kind of object", o.size),
                        sizes => format!(
                            "{shown} has {} bytes, but its checksum record is of {} bytes: cut short or replaced since it was archived",
                            o.size,
                            sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(" and ")
                        ),
                    });
                    (None, None)
                }
                _ => {
                    let shown = display(&o.name);
                    warn_once(format!("disagree {} {}", o.name, o.size), || format!("{shown} has checksum records that disagree"));
                    (None, None)
                }
            };
        }
        out.conflicts.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Logs a warning once per process and `key` (an object and its size): a watcher
/// lists the archive again and again, and the operator needs it once.
fn warn_once(key: String, text: impl FnOnce() -> String) {
    static SEEN: std::sync::Mutex<Option<std::collections::HashSet<String>>> = std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.get_or_insert_with(Default::default).insert(key) {
        tracing::warn!("{}", text());
    }
}

/// An upload published under its key, or refused with the reason in its
/// receipt, whose checksum record is not written yet: see [`Archive::finish_batch`].
#[derive(Debug)]
pub struct Published {
    pub receipt: wit::UploadReceipt,
    /// The record to write once the object is durable: set when the object
    /// under the key holds exactly the bytes that were made.
    marker: Option<(String, Mark)>,
    /// On a local archive, the copy still to be published with its batch,
    /// and the segment's name.
    staged: Option<(local::Copy, String)>,
    /// The segment's name, the key, and the descriptor's `fstat` when it was
    /// read: a proof that the object holds these bytes is about this file as
    /// it was, and this object.
    pub name: String,
    pub key: String,
    pub read_from: crate::wal::Stat,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(Arc<local::LocalDir>),
    Store(object::StoreBackend),
}

/// An archive destination: a backend and the key prefix inside it.
#[derive(Debug, Clone)]
pub struct Archive {
    backend: Backend,
    prefix: String,
    url: String,
    /// How uploads to a `.zst` key compress.
    compression: Compression,
}

impl Archive {
    /// The archive URL for a `--to` or `--from` argument: a URL as given, or
    /// a local path as a `file://` URL. A path whose first component ends in
    /// `:` (`s3:/bucket`, `gs:bucket`) is refused as a likely mistyped URL.
    pub fn url_for(arg: &str) -> Result<String, StorageError> {
        settings::url_for(arg)
    }

    /// Opens an archive without extra options; see [`Archive::open_with`].
    pub fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_with(url, &[], DEFAULT_REQUEST_RETRIES)
    }

    /// Opens `file://`, `memory://`, `s3://`, `gs://` and `az://` (and the
    /// other URL forms object_store parses for those backends); a local
    /// directory is created if missing. `options` are the config file's
    /// storage options, each checked; `request_retries` bounds
    /// object_store's own retries of one request.
    pub fn open_with(url: &str, options: &[(String, String)], request_retries: usize) -> Result<Self, StorageError> {
        settings::open(url, options, request_retries, settings::Presence::Create)
    }

    /// Opens an archive that must already exist: a local directory is not
    /// created (for verify, restore and prune, a typo must not look like an
    /// empty archive).
    pub fn open_existing(url: &str, options: &[(String, String)], request_retries: usize) -> Result<Self, StorageError> {
        settings::open(url, options, request_retries, settings::Presence::Existing)
    }

    /// Opens an archive to look at it (status): a local directory that is
    /// not there reads as an empty archive and is not created
    /// ([`Archive::is_absent`] says so).
    pub fn open_to_look(url: &str, options: &[(String, String)], request_retries: usize) -> Result<Self, StorageError> {
        settings::open(url, options, request_retries, settings::Presence::MayBeAbsent)
    }

    /// True for a local archive whose directory is not there (yet).
    pub fn is_absent(&self) -> bool {
        matches!(&self.backend, Backend::Local(dir) if dir.is_absent())
    }

    /// Whether `key` is an option of the backend that `url` names.
    pub fn option_is_known(url: &str, key: &str) -> Result<bool, StorageError> {
        settings::option_is_known(url, key)
    }

    /// An archive over a store the caller built (tests, fault injection),
    /// which checks no checksum on a PUT: uploads are staged and verified.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Self {
        Self::with_store(store, prefix, url, None)
    }

    /// An archive over a store; with a probe slot, an S3 store whose HTTP
    /// client reports there, asked whether it checks the checksum each PUT
    /// carries (if it does, a segment goes in one PUT).
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str, url: &str, probe: Option<Arc<probe::ProbeSlot>>) -> Self {
        let ranged = url.starts_with("file:") || url.starts_with("memory:");
        Self {
            backend: Backend::Store(object::StoreBackend::new(store, ranged, probe)),
            prefix: prefix.trim_matches('/').to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            compression: Compression::None,
        }
    }

    /// An archive in a local directory of our own.
    pub fn local(dir: local::LocalDir, url: &str) -> Self {
        Self {
            backend: Backend::Local(Arc::new(dir)),
            prefix: String::new(),
            url: url.trim_end_matches('/').to_owned(),
            compression: Compression::None,
        }
    }

    /// Compresses uploads to `.zst` keys this way (at its level; without
    /// one, zstd's default level).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Caps one PUT at the store's own limit (see [`object::AZURE_PUT_LIMIT`]).
    pub fn with_put_limit(mut self, limit: u64) -> Self {
        if let Backend::Store(s) = &mut self.backend {
            s.set_put_limit(limit);
        }
        self
    }

    /// Sends segments up to `max` bytes in one verified PUT where the store
    /// checks it (`--single-put-max`; 0 stages every segment). Only object
    /// stores have such a PUT; a local archive ignores it.
    pub fn with_single_put_max(mut self, max: u64) -> Self {
        if let Backend::Store(s) = &mut self.backend {
            s.set_single_put_max(max);
        }
        self
    }

    /// The compression level an upload to `key` uses, or None for a plain key.
    fn level_for(&self, key: &str) -> Option<i32> {
        is_compressed(key).then_some(match self.compression {
            Compression::Zstd { level } => level,
            Compression::None => crate::compress::DEFAULT_LEVEL,
        })
    }

    /// The upload buffers (a local archive copies in the kernel and has none).
    pub fn buffers(&self) -> Option<&BufferPool> {
        match &self.backend {
            Backend::Store(s) => Some(s.buffers()),
            Backend::Local(_) => None,
        }
    }

    /// Sizes the upload buffers for `uploads` running at once.
    pub fn size_buffers(&self, uploads: usize) {
        if let Backend::Store(s) = &self.backend {
            s.size_buffers(uploads);
        }
    }

    /// The archive's URL, as errors and summaries show it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for a local directory of our own.
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local(_))
    }

    /// The key prefix inside the store, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of `name` under the prefix, as the planner forms it.
    pub fn key_of(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// A key as a user reads it: the archive URL and the key below the prefix.
    pub fn display_key(&self, key: &str) -> String {
        let rel = if self.prefix.is_empty() { key } else { key.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(key) };
        format!("{}/{rel}", self.url)
    }

    /// Lists the archive: entries under the prefix, checksum records, chain
    /// records, conflicts and staging leftovers. An entry it cannot name is
    /// listed as it is (lossy, or as a stray), never a reason to stop.
    pub async fn list(&self) -> Result<Listing, StorageError> {
        let display = |name: &str| self.display_key(&self.key_of(name));
        let entries = match &self.backend {
            Backend::Local(dir) => dir.list().await.map_err(|(path, cause)| StorageError::Io { verb: "list", path, cause })?,
            Backend::Store(s) => s.list(&self.prefix, &self.url).await?,
        };
        Ok(Listing::build(entries, display))
    }

    /// Removes the objects under `_staging/` that this archiver's naming
    /// made and that are older than `max_age`: leftovers of uploads killed
    /// midway. A younger one may be an upload in flight (of this archiver
    /// or another on the same prefix) and is left. Returns their names.
    pub async fn remove_staging_leftovers(&self, max_age: std::time::Duration) -> Result<Vec<String>, StorageError> {
        let now = std::time::SystemTime::now();
        let stale = move |modified: std::time::SystemTime| now.duration_since(modified).is_ok_and(|age| age > max_age);
        match &self.backend {
            Backend::Local(dir) => dir.remove_staging_leftovers(stale).await,
            Backend::Store(s) => {
                let staging = self.key_of(STAGING_DIR);
                s.remove_staging_leftovers(&staging, &self.display_key(&staging), |t| stale(std::time::UNIX_EPOCH + t)).await
            }
        }
    }

    /// Publishes the segment open in `file`, listed with `size` bytes,
    /// under `key` (compressed when the key ends in `.zst`), create-only,
    /// and reports what was read and what is stored; its checksum record
    /// is left to [`Archive::finish_batch`].
    ///
    /// Nothing carries the key unless the whole file was read through one
    /// descriptor whose size and modification time stayed the same, and
    /// the stored copy was checked. If the key already holds an object, the
    /// same bytes (decoded, for a compressed one) count as archived (a retry
    /// after a lost reply), and other bytes are a conflict, leaving the
    /// object alone.
    ///
    /// The receipt speaks of the segment's bytes: for a compressed object,
    /// the stored size and CRC32C are those of the file's bytes once the
    /// store is known to hold exactly the bytes made (which were checked to
    /// decode to the file's as they were made).
    pub async fn publish(&self, file: &SegmentFile, key: &str, size: u64, verify: bool) -> Result<Published, StorageError> {
        let level = self.level_for(key);
        let published = |receipt, marker, staged| Published {
            receipt,
            marker,
            staged,
            name: file.name.clone(),
            key: key.to_owned(),
            read_from: file.opened,
        };
        let outcome = match &self.backend {
            Backend::Local(dir) => match dir.stage(file, key, size, level).await? {
                local::Staged::Existing => {
                    let (read_size, read_crc) = read_checksum(file, Some(size)).await?;
                    let read = Sum { size: read_size, crc: read_crc };
                    Outcome { read, made: read, stored_size: 0, stored_crc: None, existing: true }
                }
                local::Staged::Copy(copy) => {
                    let receipt = wit::UploadReceipt {
                        read_size: copy.read.size,
                        read_crc32c: copy.read.crc,
                        stored_size: copy.read.size,
                        stored_crc32c: Some(copy.read.crc),
                        existed: false,
                    };
                    let mark = Mark { crc: copy.crc, size: copy.size, segment: level.map(|_| copy.read) };
                    let marker = Some((key.to_owned(), mark));
                    return Ok(published(receipt, marker, Some((copy, file.name.clone()))));
                }
            },
            Backend::Store(s) => s.publish(file, key, size, verify, level, &self.prefix, &self.url).await?,
        };
        let read = outcome.read;
        if outcome.existing {
            // An object that was there: the same bytes, or a conflict.
            let (object, found) = self.contents(key).await?;
            if found != read {
                let e = self.conflict("archive", key, read.pair(), found.pair());
                self.record_conflict(&e).await;
                return Err(e);
            }
            self.durable(key).await?;
            tracing::info!(to = %self.display_key(key), "already archived with identical content");
            let receipt =
                wit::UploadReceipt { read_size: read.size, read_crc32c: read.crc, stored_size: found.size, stored_crc32c: Some(found.crc), existed: true };
            // Its checksum is recorded if it is not yet (a crash before the record).
            let marker = Some((key.to_owned(), Mark { crc: object.crc, size: object.size, segment: level.map(|_| found) }));
            return Ok(published(receipt, marker, None));
        }
        let whole = outcome.stored_size == outcome.made.size && outcome.stored_crc.is_none_or(|c| c == outcome.made.crc);
        let receipt = match level {
            // The store holds the bytes read: the planner checks the receipt.
            None => wit::UploadReceipt {
                read_size: read.size,
                read_crc32c: read.crc,
                stored_size: outcome.stored_size,
                stored_crc32c: outcome.stored_crc,
                existed: false,
            },
            // The store holds the bytes made, which decode to the bytes read.
            Some(_) if whole => wit::UploadReceipt {
                read_size: read.size,
                read_crc32c: read.crc,
                stored_size: read.size,
                stored_crc32c: outcome.stored_crc.map(|_| read.crc),
                existed: false,
            },
            Some(_) => {
                return Err(StorageError::Io {
                    verb: "archive",
                    path: file.path.clone(),
                    cause: std::io::Error::other(format!(
                        "{} holds {} bytes{}, not the {} compressed bytes with CRC32C {:08x} that were sent",
                        self.display_key(key),
                        outcome.stored_size,
                        outcome.stored_crc.map_or(String::new(), |c| format!(" with CRC32C {c:08x}")),
                        outcome.made.size,
                        outcome.made.crc
                    )),
                });
            }
        };
        let marker = whole.then(|| (key.to_owned(), Mark { crc: outcome.made.crc, size: outcome.made.size, segment: level.map(|_| read) }));
        Ok(published(receipt, marker, None))
    }

    /// A conflict at `key`: the object there holds other bytes (decoded)
    /// than the local segment. It is named by the object's name.
    fn conflict(&self, verb: &'static str, key: &str, local: (u64, u32), archived: (u64, u32)) -> StorageError {
        StorageError::Conflict {
            verb,
            url: self.display_key(key),
            name: key.rsplit('/').next().unwrap_or(key).to_owned(),
            local_size: local.0,
            local_crc: local.1,
            archived_size: archived.0,
            archived_crc: archived.1,
        }
    }

    /// Records a conflict in the archive, so that `verify` reports it from
    /// anywhere. Best effort: the conflict is reported in any case.
    async fn record_conflict(&self, e: &StorageError) {
        let Some(c) = e.conflict() else { return };
        let key = self.key_of(&format!("{CONFLICT_DIR}/{}", conflict_name(&c)));
        // The record's name holds its content: one already there is this one.
        if let Err(PutError::Failed(e)) = self.put_create(&key, Bytes::new()).await {
            tracing::warn!("cannot record the conflict of {}: {e}", c.name);
        }
    }

    /// Makes a batch of published uploads durable, then writes their
    /// checksum records, so that a record never names an object a crash can
    /// still take away. In a local archive that is one sync of the segments'
    /// directory for the batch (each object's bytes were synced before it
    /// was published), the records, and one sync of the records' directory.
    /// The caller must not count an upload as archived before this returns
    /// its receipt. An upload whose sync or record fails is an error; a
    /// retry finds the identical object and goes on.
    pub async fn finish_batch(
        &self,
        published: Vec<Result<Published, StorageError>>,
        concurrency: usize,
    ) -> Vec<Result<wit::UploadReceipt, StorageError>> {
        use futures::StreamExt;
        let mut published = published;
        if let Backend::Local(dir) = &self.backend {
            // The batch's copies: data synced, linked, the directory synced once.
            let at: Vec<usize> = (0..published.len()).filter(|&i| published[i].as_ref().is_ok_and(|p| p.staged.is_some())).collect();
            let mut names = Vec::with_capacity(at.len());
            let copies: Vec<local::Copy> = at
                .iter()
                .map(|&i| {
                    let (copy, name) = published[i].as_mut().expect("a staged upload").staged.take().expect("a staged copy");
                    names.push(name);
                    copy
                })
                .collect();
            let sums: Vec<Sum> = copies.iter().map(|c| c.read).collect();
            let keys: Vec<String> = at.iter().map(|&i| published[i].as_ref().map(|p| p.key.clone()).unwrap_or_default()).collect();
            let linked = dir.publish_staged(copies).await;
            for (((&i, result), read), (_, key)) in at.iter().zip(linked).zip(sums).zip(names.into_iter().zip(keys)) {
                published[i] = match result {
                    Ok(true) => published[i].take_ok(),
                    // Another archiver published it first: the same bytes, or a conflict.
                    Ok(false) => match self.contents(&key).await {
                        Ok((object, found)) if found == read => match self.durable(&key).await {
                            Err(e) => Err(e),
                            Ok(()) => {
                                tracing::info!(to = %self.display_key(&key), "already archived with identical content");
                                // The record is of the object there, which another
                                // archiver may have compressed otherwise.
                                let segment = is_compressed(&key).then_some(found);
                                published[i].take_ok().map(|mut p| {
                                    p.receipt.existed = true;
                                    p.marker = Some((key.clone(), Mark { crc: object.crc, size: object.size, segment }));
                                    p
                                })
                            }
                        },
                        Ok((_, found)) => {
                            let e = self.conflict("archive", &key, read.pair(), found.pair());
                            self.record_conflict(&e).await;
                            Err(e)
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
            }
        }
        let marked: Vec<(bool, Result<wit::UploadReceipt, StorageError>)> = futures::stream::iter(published)
            .map(|p| async move {
                match p {
                    Ok(Published { receipt, marker: Some((key, mark)), .. }) => (true, self.put_marker(&key, mark).await.map(|()| receipt)),
                    Ok(Published { receipt, marker: None, .. }) => (false, Ok(receipt)),
                    Err(e) => (false, Err(e)),
                }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let mut marker_sync: Option<(std::path::PathBuf, std::io::Error)> = None;
        if let Backend::Local(dir) = &self.backend
            && marked.iter().any(|(m, r)| *m && r.is_ok())
            && let Err(e) = dir.sync(CHECKSUM_DIR).await
        {
            marker_sync = Some(e);
        }
        marked
            .into_iter()
            .map(|(was_marked, r)| match (&marker_sync, was_marked, r) {
                (Some((path, e)), true, Ok(_)) => {
                    Err(StorageError::Io { verb: "sync", path: path.clone(), cause: std::io::Error::new(e.kind(), e.to_string()) })
                }
                (_, _, r) => r,
            })
            .collect()
    }

    /// Writes the checksum record of the object at `key`, create-only; one
    /// already there is the same fact.
    async fn put_marker(&self, key: &str, mark: Mark) -> Result<(), StorageError> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let marker = self.key_of(&format!("{CHECKSUM_DIR}/{}", marker_name(name, mark)));
        match self.put_create(&marker, Bytes::new()).await {
            Ok(_) | Err(PutError::Exists) => Ok(()),
            Err(PutError::Failed(e)) => Err(e),
        }
    }

    /// Writes a small object, create-only: a record.
    pub async fn put_create(&self, key: &str, body: Bytes) -> Result<(), PutError> {
        match &self.backend {
            Backend::Local(dir) => dir.put_create(key, &body).await,
            Backend::Store(s) => s.put_create(key, body, &self.display_key(key)).await,
        }
    }

    /// Records a chain fact (create-only; the same record twice is one) and
    /// makes it durable before returning.
    pub async fn record(&self, record: Record, lsn: u64) -> Result<(), StorageError> {
        let key = self.key_of(&format!("{CHAIN_DIR}/{}", record.name(lsn)));
        match self.put_create(&key, Bytes::new()).await {
            Ok(()) | Err(PutError::Exists) => {}
            Err(PutError::Failed(e)) => return Err(e),
        }
        if let Backend::Local(dir) = &self.backend {
            dir.sync(CHAIN_DIR).await.map_err(|(path, cause)| StorageError::Io { verb: "sync", path, cause })?;
        }
        Ok(())
    }

    /// On a local archive, syncs an object that was found there (its bytes
    /// and its name) before it counts; a store's objects are durable once
    /// listed.
    async fn durable(&self, key: &str) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(dir) => dir.sync_object(key).await,
            Backend::Store(_) => Ok(()),
        }
    }

    /// Compares the segment open in `file` with the object under `key`,
    /// without sending it: `check-archived`. Also says whether the object
    /// was read back (a proof of now), or taken on its checksum record
    /// (evidence of the past).
    pub async fn compare(&self, file: &SegmentFile, key: &str, size: u64, read_back: bool) -> Result<(wit::UploadReceipt, bool), StorageError> {
        let (read_size, read_crc) = read_checksum(file, Some(size)).await?;
        let read = Sum { size: read_size, crc: read_crc };
        let name = key.rsplit('/').next().unwrap_or(key);
        let Some(stored_size) = self.stored_size(key).await? else {
            return Err(StorageError::Missing { verb: "compare", url: self.display_key(key) });
        };
        // The recorded checksum when it is there and agrees; else a read-back.
        // A compressed object's record names its own checksum, which only a
        // read-back finds: it is always read back (and decoded).
        let recorded = !read_back
            && !is_compressed(key)
            && stored_size == read_size
            && self.has_marker(name, Mark { crc: read_crc, size: read_size, segment: None }).await?;
        let (object, found) = if recorded { (read, read) } else { self.contents(key).await? };
        if found != read {
            let e = self.conflict("archive", key, read.pair(), found.pair());
            self.record_conflict(&e).await;
            return Err(e);
        }
        self.durable(key).await?;
        // The same bytes without a record (a crash before it was written):
        // write it now. With a record, nothing is written: on an object
        // store a comparison after a lost state is all reads.
        if !recorded {
            let mark = Mark { crc: object.crc, size: object.size, segment: is_compressed(key).then_some(read) };
            self.put_marker(key, mark).await?;
        }
        // A local record may be one whose directory sync failed (or another
        // archiver's, not synced yet): it is made durable before it counts.
        if let Backend::Local(dir) = &self.backend {
            dir.sync(CHECKSUM_DIR).await.map_err(|(path, cause)| StorageError::Io { verb: "sync", path, cause })?;
        }
        Ok((wit::UploadReceipt { read_size, read_crc32c: read_crc, stored_size: found.size, stored_crc32c: Some(found.crc), existed: true }, !recorded))
    }

    /// Removes what an earlier listing showed about `name` that is no longer
    /// true now that it is archived with `crc` and `size`: checksum records
    /// of other copies (an operator removed a bad one), and conflict records.
    /// Best effort: a record left behind is ignored or reported, never trusted.
    pub async fn forget_stale(&self, name: &str, size: u64, crc: u32, listing: &Listing) {
        // What a record says of the segment: a compressed object's, what it
        // decodes to.
        let held = |m: &Mark| if is_compressed(name) { m.segment.map(Sum::pair) } else { Some((m.size, m.crc)) };
        let mut doomed: Vec<String> = listing
            .markers
            .get(name)
            .into_iter()
            .flatten()
            .filter(|m| held(m) != Some((size, crc)))
            .map(|m| format!("{CHECKSUM_DIR}/{}", marker_name(name, *m)))
            .collect();
        // Conflicts about this object, which holds the local bytes now, and
        // about another object of the segment that is gone (an operator
        // removed it); one about another object still there stands.
        let segment = crate::compress::segment_name(name);
        let stale = |c: &&wit::SegmentConflict| {
            c.name == name || (crate::compress::segment_name(&c.name) == segment && listing.find(&c.name).is_none())
        };
        doomed.extend(listing.conflicts.iter().filter(stale).map(|c| format!("{CONFLICT_DIR}/{}", conflict_name(c))));
        for key in doomed {
            if let Err(e) = self.delete(&self.key_of(&key)).await {
                tracing::warn!("cannot remove the stale record {key}: {e}");
            }
        }
    }

    /// Proves that the object under `key` holds `size` bytes with CRC32C
    /// `crc` now, by reading it back: the last check before a local segment
    /// is deleted. Its checksum record is not enough: it is evidence of the
    /// past.
    pub async fn prove(&self, key: &str, size: u64, crc: u32) -> Result<(), StorageError> {
        let found = match self.contents(key).await {
            Ok((_, found)) => found.pair(),
            Err(StorageError::Missing { .. }) => {
                return Err(StorageError::Missing { verb: "delete the local copy of", url: self.display_key(key) });
            }
            Err(e) => return Err(e),
        };
        if found != (size, crc) {
            let e = self.conflict("delete the local copy of", key, (size, crc), found);
            self.record_conflict(&e).await;
            return Err(e);
        }
        Ok(())
    }

    /// True when the checksum record `mark` of the object `name` is there.
    pub async fn has_marker(&self, name: &str, mark: Mark) -> Result<bool, StorageError> {
        let marker = self.key_of(&format!("{CHECKSUM_DIR}/{}", marker_name(name, mark)));
        Ok(self.stored_size(&marker).await?.is_some())
    }

    /// Size of the object at `key`, or None if there is none.
    pub async fn stored_size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match &self.backend {
            Backend::Local(dir) => dir.size(key).await,
            Backend::Store(s) => s.size(key, &self.display_key(key)).await,
        }
    }

    /// Size and CRC32C of the object at `key`, read back in full in bounded
    /// memory; `Missing` when there is none.
    pub async fn checksum(&self, key: &str) -> Result<(u64, u32), StorageError> {
        match &self.backend {
            Backend::Local(dir) => dir.checksum(key).await,
            Backend::Store(s) => s.checksum(key, &self.display_key(key)).await,
        }
    }

    /// Size and CRC32C of the object at `key` and of the segment it holds
    /// (the same for a plain object; decoded for a `.zst` one), read back in
    /// full in bounded memory. A compressed object that does not decode is
    /// an error that names it.
    pub async fn contents(&self, key: &str) -> Result<(Sum, Sum), StorageError> {
        let (object, segment) = self.inspect(key).await?;
        let segment = segment.map_err(|why| StorageError::Undecodable { url: self.display_key(key), why })?;
        Ok((object, segment))
    }

    /// As [`Archive::contents`], but the object's own sum even when it does
    /// not decode (then, why not): a damaged object is read to its end, so
    /// that its bytes can be compared with their record.
    pub async fn inspect(&self, key: &str) -> Result<(Sum, Result<Sum, String>), StorageError> {
        use futures::StreamExt;
        if !is_compressed(key) {
            let (size, crc) = self.checksum(key).await?;
            return Ok((Sum { size, crc }, Ok(Sum { size, crc })));
        }
        let mut stream = self.read(key).await?;
        let mut unpacker = Some(Unpacker::new(std::io::sink()).map_err(|e| StorageError::Undecodable { url: self.display_key(key), why: e.to_string() })?);
        let (mut object, mut why) = (Sum::default(), None);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            object.add(&chunk);
            if let Some(u) = unpacker.as_mut()
                && let Err(e) = u.push(&chunk)
            {
                why = Some(e.to_string());
                unpacker = None;
            }
        }
        let segment = match (unpacker, why) {
            (Some(u), _) => u.finish().map(|(_, segment, _)| segment).map_err(|e| e.to_string()),
            (None, why) => Err(why.unwrap_or_default()),
        };
        Ok((object, segment))
    }

    /// The bytes of the object at `key`, as a stream of chunks; `Missing`
    /// when there is none.
    pub async fn read(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        match &self.backend {
            Backend::Local(dir) => dir.read(key).await,
            Backend::Store(s) => s.read(key, &self.display_key(key)).await,
        }
    }

    /// The whole object at `key`, or None (small objects and tests).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        use futures::StreamExt;
        let mut stream = match self.read(key).await {
            Ok(s) => s,
            Err(StorageError::Missing { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Some(out))
    }

    /// Deletes the object at `key`; one already gone is fine.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(dir) => dir.delete(key).await,
            Backend::Store(s) => s.delete(key, &self.display_key(key)).await,
        }
    }

    /// Deletes an archived segment's object (by its object name), then its
    /// checksum records, so that an interruption leaves at worst a record
    /// without its object (ignored).
    pub async fn delete_segment(&self, name: &str, listing: &Listing) -> Result<(), StorageError> {
        crate::wal::WalDir::check_name(name)?;
        self.delete(&self.key_of(name)).await?;
        if let Some(o) = listing.find(name)
            && let Some(crc) = o.crc32c
        {
            let segment = if is_compressed(name) { o.segment } else { None };
            let mark = Mark { crc, size: o.size, segment };
            self.delete(&self.key_of(&format!("{CHECKSUM_DIR}/{}", marker_name(name, mark)))).await?;
        }
        Ok(())
    }
}

/// Moves an `Ok` out of a slot, leaving a placeholder error behind (the slot
/// is written again at once).
trait TakeOk {
    fn take_ok(&mut self) -> Self;
}

impl TakeOk for Result<Published, StorageError> {
    fn take_ok(&mut self) -> Self {
        std::mem::replace(self, Err(StorageError::RefusedName { name: String::new(), why: "moved" }))
    }
}

/// Why a create-only write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("an object is already there")]
    Exists,
    #[error(transparent)]
    Failed(StorageError),
}

/// What a backend's publish saw: the file's bytes read, the object's bytes
/// made of them and sent (the same, unless compressed), what the store
/// holds under the key (its size, and its CRC32C where confirmed), or that
/// an object was already there (then nothing was published).
#[derive(Debug)]
struct Outcome {
    read: Sum,
    made: Sum,
    stored_size: u64,
    stored_crc: Option<u32>,
    existing: bool,
}

/// Size and CRC32C of a segment, read on a blocking thread and checked
/// unchanged.
async fn read_checksum(file: &SegmentFile, listed: Option<u64>) -> Result<(u64, u32), StorageError> {
    let f = file.file.try_clone().map_err(|cause| StorageError::Io { verb: "read", path: file.path.clone(), cause })?;
    let path = file.path.clone();
    let (size, crc) = tokio::task::spawn_blocking(move || crate::wal::checksum_reader(&f, &path)).await.map_err(|e| StorageError::Io {
        verb: "read",
        path: file.path.clone(),
        cause: std::io::Error::other(e),
    })??;
    file.check_unchanged(size, listed)?;
    Ok((size, crc))
}

/// For the tests of the clients wrapped around object_store's: requests,
/// and an HTTP client that answers every request with an empty 200 and
/// keeps what it was sent.
#[cfg(test)]
pub(crate) mod echo {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use object_store::client::{HttpClient, HttpError, HttpRequest, HttpResponse, HttpResponseBody, HttpService};

    /// A request with a small body, as object_store would hand it over.
    pub(crate) fn request(method: http::Method, uri: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Bytes::from_static(b"segment").into()).unwrap()
    }

    /// A request as sent: its headers and its whole body.
    pub(crate) struct Sent {
        pub headers: http::HeaderMap,
        pub body: Vec<u8>,
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct Echo(Arc<Mutex<Vec<(http::HeaderMap, Vec<u8>)>>>);

    impl Echo {
        pub(crate) fn client(&self) -> HttpClient {
            HttpClient::new(self.clone())
        }

        /// The last request sent.
        pub(crate) fn last(&self) -> Sent {
            let (headers, body) = self.0.lock().unwrap().last().cloned().expect("a request was sent");
            Sent { headers, body }
        }
    }

    #[async_trait::async_trait]
    impl HttpService for Echo {
        async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
            let (parts, body) = req.into_parts();
            let bytes = super::probe::body_chunks(body).await?.concat();
            self.0.lock().unwrap().push((parts.headers, bytes));
            Ok(http::Response::new(HttpResponseBody::from(Bytes::new())))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn knows_its_own_staging_names_and_no_others() {
        for own in ["wal-0000000000000001-0000000000000010.seg.4242-18eba33421bf8cc6-0", ".checksum-probe.7-1a-12"] {
            assert!(super::is_own_staging_name(own), "{own}");
        }
        for other in ["notes.txt", "wal-1.seg", "x.1-2", "x.1-2-3-4", "x.a-2-3", "x.1-g-3", "x.1--3", ".1-2-3", "backup.tar"] {
            assert!(!super::is_own_staging_name(other), "{other}");
        }
    }

    #[test]
    fn shows_a_stores_xml_error_as_its_code_and_message() {
        let text = "Server returned non-2xx status code: 400 Bad Request: <?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                    <Error><Code>BadDigest</Code><Message>checksum_crc64nvme mismatch</Message></Error>";
        assert_eq!(super::plain_xml_error(text), "Server returned non-2xx status code: 400 Bad Request: BadDigest: checksum_crc64nvme mismatch");
        let bare = "412 Precondition Failed: <Error><Code>PreconditionFailed</Code></Error> (retried 0 times)";
        assert_eq!(super::plain_xml_error(bare), "412 Precondition Failed: PreconditionFailed (retried 0 times)");
        assert_eq!(super::plain_xml_error("connection refused"), "connection refused");
    }

    use super::*;

    #[test]
    fn parses_the_records_it_formats() {
        let plain = Mark { crc: 0xdead_beef, size: 42, segment: None };
        let m = marker_name("wal-0000000000000001-0000000000000002.seg", plain);
        assert_eq!(parse_marker(&m), Some(("wal-0000000000000001-0000000000000002.seg", plain)));
        let packed = Mark { crc: 1, size: 10, segment: Some(Sum { size: u64::MAX, crc: 0xffff_ffff }) };
        let m = marker_name("wal-0000000000000001-0000000000000002.seg.zst", packed);
        assert_eq!(m, "wal-0000000000000001-0000000000000002.seg.zst.crc32c-00000001-10.segment-ffffffff-18446744073709551615");
        assert_eq!(parse_marker(&m), Some(("wal-0000000000000001-0000000000000002.seg.zst", packed)));
        for bad in [
            "x.crc32c-abc-1",
            "x.crc32c-00000001-1.segment-",
            "x.crc32c-00000001-1.segment-0000000x-1",
            "x.crc32c-00000001-+1",
            "x.crc32c-+0000001-1",
            "x.crc32c-0000000A-1",
            "x.crc32c-00000001-01",
            "x.crc32c-00000001-1.segment-00000001-007",
        ] {
            assert_eq!(parse_marker(bad), None, "{bad}");
        }
        let c = wit::SegmentConflict { name: "wal-x.seg".into(), local_size: 9, local_crc32c: 7, archived_size: 1, archived_crc32c: 0xffff_ffff };
        assert_eq!(parse_conflict(&conflict_name(&c)), Some(c));
        for loose in ["wal-x.seg.local-0000000A-9.archived-00000001-1", "wal-x.seg.local-00000001-+9.archived-00000001-1", "wal-x.seg.local-00000001-9.archived-00000001-01"] {
            assert_eq!(parse_conflict(loose), None, "{loose}");
        }
        for r in [Record::ChainStart, Record::PrunedBelow] {
            assert_eq!(r.parse(&r.name(u64::MAX)), Some(u64::MAX));
            assert_eq!(r.parse(&r.name(0)), Some(0));
        }
        assert_eq!(Record::ChainStart.parse("start-00000000000000AA"), None);
        assert_eq!(Record::ChainStart.parse(&Record::PrunedBelow.name(1)), None);
    }

    #[test]
    fn prints_each_cause_once() {
        let inner = std::io::Error::other("connection refused");
        let e = object_store::Error::Generic { store: "S3", source: Box::new(inner) };
        let text = describe(&e);
        assert_eq!(text.matches("connection refused").count(), 1, "{text}");
    }
}
