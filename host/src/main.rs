//! The `wal-archiver` command line: glue over the `wal_archiver` library.
//!
//! Exit codes: 0 when everything asked for was done; 1 when the run went
//! through but something is not archived or not sound (a failed segment, a
//! conflict, overlapping segments, a segment that could not be deleted, an
//! archive that cannot give what was asked); 2 when it could not run; 101
//! when the host panicked.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use tokio::sync::Notify;
use tracing::warn;

use wal_archiver::archive::{describe_break, describe_conflict, describe_skip, Archiver, Summary};
use wal_archiver::component::{wit, Limits, PlannerRuntime, EMBEDDED_COMPONENT};
use wal_archiver::config::{ConfigFile, Size};
use wal_archiver::lock::{DirLock, LOCK_NAME};
use wal_archiver::lsn::{format_lsn, parse_lsn};
use wal_archiver::metrics::{CycleFigures, Metrics};
use wal_archiver::state::StateStore;
use wal_archiver::storage::Storage;
use wal_archiver::store::{Archive, DEFAULT_REQUEST_RETRIES};
use wal_archiver::wal::WalDir;

/// The command's report on standard output. A reader that stops reading
/// (`| head`) ends the report there but not the command, whose exit code
/// stays its own; any other failure to write (a full disk under a
/// redirection) ends the report too, and the command exits 2 naming it.
mod output {
    use std::io::{self, Write};
    use std::sync::Mutex;

    /// None while writing goes on; then how it ended.
    static ENDED: Mutex<Option<io::Error>> = Mutex::new(None);

    pub fn write(args: std::fmt::Arguments<'_>) {
        let mut ended = ENDED.lock().unwrap_or_else(|e| e.into_inner());
        if ended.is_some() {
            return;
        }
        if let Err(e) = io::stdout().lock().write_fmt(args) {
            *ended = Some(e);
        }
    }

    /// Flushes the report; the failure to write it, unless the reader left.
    pub fn finish() -> io::Result<()> {
        let mut ended = ENDED.lock().unwrap_or_else(|e| e.into_inner());
        if ended.is_none()
            && let Err(e) = io::stdout().lock().flush()
        {
            *ended = Some(e);
        }
        match ended.take() {
            Some(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
            _ => Ok(()),
        }
    }
}

/// `println!` for the report: through [`output`].
macro_rules! outln {
    () => {
        output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// The state file's name when it lives in the WAL directory (the default).
const DEFAULT_STATE_NAME: &str = ".wal-archiver-state.json";

#[derive(Parser)]
#[command(name = "wal-archiver", version, about = "Continuous WAL archiving to object storage, with a gap-free watermark")]
#[command(
    after_help = "Exit codes: 0 done; 1 something was not archived or is not sound (failed, in conflict, overlapping, not deleted, not in the archive); 2 could not run; 101 a bug (a panic).\nLogs go to stderr; set RUST_LOG (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object per line for a log
    /// pipeline (each event's fields as keys: segment, first_lsn,
    /// last_lsn, bytes, attempts, error, ...).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WAL_ARCHIVER_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ContentArg {
    Random,
    Wal,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Set with `--log-format json`: then every line on stderr is a JSON object.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// True when the arguments ask for JSON logs, for errors found before they
/// are parsed.
fn json_logs_asked() -> bool {
    // As they are: an argument that is not UTF-8 must not end this in a panic.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    args.iter().any(|a| a == "--log-format=json") || args.windows(2).any(|w| w[0] == "--log-format" && w[1] == "json")
}

/// A line for the operator on stderr: plain text (whatever `RUST_LOG`
/// says), or a log event when the logs are JSON, so that a log pipeline
/// reads every line.
fn say(level: tracing::Level, text: &str) {
    if !JSON_LOGS.load(Ordering::Relaxed) {
        eprintln!("wal-archiver: {text}");
    } else if level == tracing::Level::ERROR {
        tracing::error!("{text}");
    } else if level == tracing::Level::WARN {
        tracing::warn!("{text}");
    } else {
        tracing::info!("{text}");
    }
}

#[derive(clap::Args)]
struct Target {
    /// The WAL directory to archive from.
    #[arg(long, value_name = "DIR")]
    wal_dir: Option<PathBuf>,
    /// The archive: a local directory (a path or file:///path), s3://bucket/prefix,
    /// gs://bucket/prefix, az://container/prefix, or memory:///prefix.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// The state file [default: DIR/.wal-archiver-state.json; none for memory://].
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// A TOML file holding any of these options (flags override it); see the README.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    plugin: PluginArgs,
}

/// Which planner runs, and how far it may go.
#[derive(clap::Args)]
struct PluginArgs {
    /// A planner component to use instead of the embedded one (same WIT world).
    #[arg(long, value_name = "FILE.wasm")]
    plugin: Option<PathBuf>,
    /// Wall time one planner call may take before it is stopped [default: 1].
    #[arg(long, value_name = "SECONDS")]
    plugin_deadline: Option<f64>,
    /// Linear memory a planner instance may use, in MiB [default: 64].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=4096))]
    plugin_memory: Option<u32>,
}

impl PluginArgs {
    /// Compiles (or loads from the cache) the planner these arguments name.
    fn runtime(&self) -> Result<PlannerRuntime> {
        let defaults = Limits::default();
        let limits = Limits {
            deadline: match self.plugin_deadline {
                Some(d) => seconds("--plugin-deadline", d)?,
                None => defaults.deadline,
            },
            memory: self.plugin_memory.map_or(defaults.memory, |m| (m as usize) << 20),
            ..defaults
        };
        Ok(match &self.plugin {
            None => PlannerRuntime::with_limits(EMBEDDED_COMPONENT, "(embedded)", limits)?,
            Some(path) => {
                let bytes = std::fs::read(path).with_context(|| format!("cannot read planner component {}", path.display()))?;
                PlannerRuntime::with_limits(&bytes, &path.display().to_string(), limits)?
            }
        })
    }
}

/// An archive to read from or prune, for the restore-side commands.
#[derive(clap::Args)]
struct ArchiveArg {
    /// A TOML file whose `[storage]` options apply (see the README).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    plugin: PluginArgs,
}

impl ArchiveArg {
    fn open(&self, url: &str) -> Result<(Archive, PlannerRuntime)> {
        // The planner first: a plugin that is refused must leave nothing behind.
        let runtime = self.plugin.runtime()?;
        let url = Archive::url_for(url)?;
        let options = match &self.config {
            Some(path) => ConfigFile::load(path)?.storage_options(&url)?,
            None => Vec::new(),
        };
        let archive = Archive::open_existing(&url, &options, DEFAULT_REQUEST_RETRIES)?;
        Ok((archive, runtime))
    }
}

/// Options of `archive`; each one may also come from the config file.
#[derive(clap::Args)]
struct ArchiveArgs {
    /// The most segments planned in one batch [default: 256]. A batch's
    /// segments are made durable together and recorded together.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    /// The most bytes planned in one batch, as `268435456` or `256MiB`
    /// (a batch holds at least one segment) [default: 256MiB].
    #[arg(long, value_parser = parse_batch_bytes, value_name = "SIZE")]
    batch_bytes: Option<u64>,
    /// Segments of a batch uploaded at once [default: 4].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: Option<u32>,
    /// Delete local segments once they are at or below the watermark.
    #[arg(long)]
    delete_after_archive: bool,
    /// Do not read stored objects back to confirm their CRC32C (sizes are still checked).
    #[arg(long)]
    no_verify_checksums: bool,
    /// Seconds between cycles when watching [default: 1].
    #[arg(long, value_name = "SECONDS")]
    interval: Option<f64>,
    /// At start, remove this archiver's staging objects older than this
    /// many seconds: leftovers of killed uploads [default: 86400, a day].
    #[arg(long, value_name = "SECONDS")]
    staging_max_age: Option<f64>,
    /// With --once, the most attempts per segment in this run before giving up (it stays pending) [default: 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: Option<u32>,
    /// The first retry delay in seconds; it doubles with each failure [default: 1].
    #[arg(long, value_name = "SECONDS")]
    retry_base_delay: Option<f64>,
    /// The longest retry delay in seconds [default: 60].
    #[arg(long, value_name = "SECONDS")]
    retry_max_delay: Option<f64>,
    /// Retries of one request inside the object-store client, before a
    /// segment counts as failed and is retried with backoff [default: 3].
    #[arg(long)]
    request_retries: Option<u32>,
    /// Serve Prometheus metrics on http://HOST:PORT/metrics, and
    /// /healthz (200 while the last cycle succeeded, 503 otherwise).
    /// Port 0 picks a free port, named in the log.
    #[arg(long, value_name = "HOST:PORT", env = "WAL_ARCHIVER_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// Store new segments compressed: `zstd` (level 3) or `zstd:LEVEL`
    /// (1 to 19), as `{name}.zst`; `none` stores them as the files
    /// [default: none]. Archives may mix both: each segment is archived once,
    /// and verify, restore and prune read either.
    #[arg(long, value_name = "none|zstd[:LEVEL]")]
    compression: Option<wal_archiver::compress::Compression>,
    /// S3, Azure, GCS: the largest segment sent in one PUT that the store
    /// checks (a whole segment is held in memory while it is sent, per
    /// upload; with compression, its worst-case compressed size, a little
    /// over its own); larger ones are staged in 8 MiB parts. 0 stages every
    /// segment [default: 64MiB; at most 5GiB; on Azure at most 5000MiB].
    #[arg(long, value_parser = parse_single_put_max, value_name = "SIZE")]
    single_put_max: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Archive completed segments, then keep watching until SIGINT or SIGTERM.
    Archive {
        #[command(flatten)]
        target: Target,
        /// Archive everything pending once, print a summary and exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        args: ArchiveArgs,
    },
    /// Show the watermark, RPO gap, pending and skipped entries, and gaps.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The database's current LSN, for the RPO gap [default: the last LSN of the newest local segment].
        #[arg(long, value_parser = parse_lsn, value_name = "LSN")]
        current_lsn: Option<u64>,
    },
    /// Check the archive: gaps, overlaps, strays, sizes and recorded checksums; exit 0 only if sound.
    Verify {
        /// The archive.
        #[arg(long, value_name = "URL")]
        to: String,
        /// The first LSN to check [default: the archive's first].
        #[arg(long, value_parser = parse_lsn, value_name = "LSN")]
        from_lsn: Option<u64>,
        /// The last LSN to check [default: the archive's last].
        #[arg(long, value_parser = parse_lsn, value_name = "LSN")]
        until_lsn: Option<u64>,
        /// Read every segment back and recompute its CRC32C.
        #[arg(long)]
        deep: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        archive: ArchiveArg,
    },
    /// Restore the contiguous chain of segments up to an LSN into a directory.
    Restore {
        /// The archive.
        #[arg(long, value_name = "URL")]
        from: String,
        /// Where to write the segments (created if missing).
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
        /// The first LSN needed [default: the archive's first].
        #[arg(long, value_parser = parse_lsn, value_name = "LSN")]
        from_lsn: Option<u64>,
        /// The LSN to recover to [default: the archive's last].
        #[arg(long, value_parser = parse_lsn, value_name = "LSN")]
        until_lsn: Option<u64>,
        /// Segments downloaded at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
        concurrency: u32,
        #[command(flatten)]
        archive: ArchiveArg,
    },
    /// Delete archived segments lying wholly below an LSN, oldest first.
    Prune {
        /// The archive.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Segments whose last LSN is below this one go; nothing at or above it is touched.
        #[arg(long, value_parser = parse_lsn, value_name = "LSN")]
        before_lsn: u64,
        /// Only list what would go.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        archive: ArchiveArg,
    },
    /// Write the embedded planner component, for use in other hosts.
    Component {
        /// Where to write the .wasm file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write sample contiguous segments (LSNs are byte positions).
    Generate {
        /// Where to write them.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// How many segments.
        #[arg(long)]
        count: u64,
        /// Bytes per segment: a number, or with a unit (`16MiB`).
        #[arg(long, value_name = "SIZE", value_parser = parse_segment_size)]
        size: u64,
        /// The first LSN, decimal or 0x hex.
        #[arg(long, default_value = "1", value_parser = parse_lsn, value_name = "LSN")]
        start_lsn: u64,
        /// What the segments hold: random bytes (nothing compresses them),
        /// or WAL-like records (headers, keys and small values; zstd at
        /// level 3 stores about a third).
        #[arg(long, value_enum, default_value_t = ContentArg::Random)]
        content: ContentArg,
    },
}

/// Everything a run needs, from the flags over the config file over the defaults.
struct Settings {
    runtime: Arc<PlannerRuntime>,
    wal_dir: PathBuf,
    url: String,
    state: Option<PathBuf>,
    storage_options: Vec<(String, String)>,
    batch_size: u32,
    batch_bytes: u64,
    concurrency: u32,
    delete_after_archive: bool,
    verify_checksums: bool,
    interval: Duration,
    staging_max_age: Duration,
    max_attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
    request_retries: u32,
    metrics_addr: Option<String>,
    compression: wal_archiver::compress::Compression,
    single_put_max: u64,
}

/// Segments in a batch: enough that small segments do not pay a sync and a
/// record each.
const DEFAULT_BATCH_SIZE: u32 = 256;
/// Bytes in a batch: large segments are recorded as often as before.
const DEFAULT_BATCH_BYTES: u64 = 256 << 20;

fn parse_single_put_max(text: &str) -> Result<u64, String> {
    let n = wal_archiver::size::parse_size(text)?;
    if n > wal_archiver::store::object::SINGLE_PUT_LIMIT {
        return Err("S3 takes at most 5GiB in one PUT".to_owned());
    }
    Ok(n)
}

fn parse_segment_size(text: &str) -> Result<u64, String> {
    match wal_archiver::size::parse_size(text)? {
        0 => Err("a segment holds at least one byte".to_owned()),
        n => Ok(n),
    }
}

fn parse_batch_bytes(text: &str) -> Result<u64, String> {
    match wal_archiver::size::parse_size(text)? {
        0 => Err("a batch holds at least one byte".to_owned()),
        n => Ok(n),
    }
}

/// A value from the config file, checked against the range its flag takes.
fn in_range(file: &ConfigFile, name: &str, v: Option<u32>, lo: u32, hi: u32) -> Result<Option<u32>> {
    match v {
        Some(v) if v < lo || v > hi => {
            let at = file.place_of(name);
            if hi == u32::MAX {
                anyhow::bail!("cannot use {name} = {v} from {at}: it must be at least {lo}")
            }
            anyhow::bail!("cannot use {name} = {v} from {at}: it must be between {lo} and {hi}")
        }
        v => Ok(v),
    }
}

impl Settings {
    /// Checks every argument, then compiles the planner; nothing is opened
    /// or created yet.
    fn new(target: Target, args: Option<ArchiveArgs>) -> Result<Self> {
        let archiving = args.is_some();
        let file = match &target.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        let args = args.unwrap_or(ArchiveArgs {
            batch_size: None,
            batch_bytes: None,
            concurrency: None,
            delete_after_archive: false,
            no_verify_checksums: false,
            interval: None,
            staging_max_age: None,
            max_attempts: None,
            retry_base_delay: None,
            retry_max_delay: None,
            request_retries: None,
            metrics_addr: None,
            compression: None,
            single_put_max: None,
        });
        let wal_dir =
            target.wal_dir.or(file.wal_dir.clone()).context("cannot start: no WAL directory; give --wal-dir or `wal-dir` in the config file")?;
        let to = target.to.or(file.to.clone()).context("cannot start: no archive; give --to or `to` in the config file")?;
        let url = Archive::url_for(&to)?;
        let storage_options = file.storage_options(&url)?;
        let retry_base = seconds("--retry-base-delay", args.retry_base_delay.or(file.retry_base_delay).unwrap_or(1.0))?;
        let retry_max = seconds("--retry-max-delay", args.retry_max_delay.or(file.retry_max_delay).unwrap_or(60.0))?;
        if retry_base > retry_max {
            anyhow::bail!(
                "cannot use a retry base delay of {:?} above the retry max delay of {:?}: the first retry would wait longer than any",
                retry_base,
                retry_max
            );
        }
        let state = target.state.or(file.state.clone());
        if let Some(path) = &state {
            check_state_path(path, archiving)?;
        }
        Ok(Self {
            batch_size: args.batch_size.or(in_range(&file, "batch-size", file.batch_size, 1, u32::MAX)?).unwrap_or(DEFAULT_BATCH_SIZE),
            batch_bytes: match (args.batch_bytes, file.batch_bytes) {
                (Some(n), _) => n,
                (None, Some(Size(0))) => anyhow::bail!("cannot use batch-bytes = 0 from {}: it must be at least 1", file.place_of("batch-bytes")),
                (None, Some(Size(n))) => n,
                (None, None) => DEFAULT_BATCH_BYTES,
            },
            concurrency: args.concurrency.or(in_range(&file, "concurrency", file.concurrency, 1, 256)?).unwrap_or(4),
            delete_after_archive: args.delete_after_archive || file.delete_after_archive.unwrap_or(false),
            verify_checksums: !args.no_verify_checksums && file.verify_checksums.unwrap_or(true),
            interval: seconds("--interval", args.interval.or(file.interval).unwrap_or(1.0))?,
            staging_max_age: seconds("--staging-max-age", args.staging_max_age.or(file.staging_max_age).unwrap_or(86_400.0))?,
            max_attempts: args.max_attempts.or(in_range(&file, "max-attempts", file.max_attempts, 1, u32::MAX)?).unwrap_or(5),
            retry_base,
            retry_max,
            request_retries: args
                .request_retries
                .or(in_range(&file, "request-retries", file.request_retries, 0, 100)?)
                .unwrap_or(DEFAULT_REQUEST_RETRIES as u32),
            metrics_addr: args.metrics_addr.or(file.metrics_addr.clone()),
            compression: match (args.compression, &file.compression) {
                (Some(c), _) => c,
                (None, Some(text)) => text.parse().with_context(|| format!("cannot use compression = {text:?} from {}", file.place_of("compression")))?,
                (None, None) => Default::default(),
            },
            single_put_max: match (args.single_put_max, &file.single_put_max) {
                (Some(n), _) => n,
                (None, Some(Size(n))) if *n > wal_archiver::store::object::SINGLE_PUT_LIMIT => {
                    anyhow::bail!("cannot use single-put-max = {n} from {}: S3 takes at most 5GiB in one PUT", file.place_of("single-put-max"))
                }
                (None, Some(Size(n))) => *n,
                (None, None) => wal_archiver::store::object::SINGLE_PUT_MAX,
            },
            // The planner last: compiling it is the slow part, and a refused
            // plugin must leave nothing behind.
            runtime: Arc::new(target.plugin.runtime()?),
            wal_dir,
            url,
            state,
            storage_options,
        })
    }

    /// Where the state is kept, if anywhere.
    fn state_file(&self) -> Option<PathBuf> {
        match &self.state {
            Some(p) => Some(p.clone()),
            None if self.url.starts_with("memory:") => None,
            None => Some(self.wal_dir.join(DEFAULT_STATE_NAME)),
        }
    }
}

/// The state file's directory must be there and, for a run that saves the
/// state (`writing`), writable: checked before the archive is made.
fn check_state_path(path: &Path, writing: bool) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!("cannot use state file {}: {} is not a directory", path.display(), parent.display()),
        Err(e) => anyhow::bail!("cannot use state file {}: its directory {} cannot be used ({e})", path.display(), parent.display()),
    }
    if writing {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(parent.as_os_str().as_bytes()).context("a path with a NUL byte")?;
        // SAFETY: a NUL-terminated path; access only reads it.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
            let e = std::io::Error::last_os_error();
            anyhow::bail!("cannot use state file {}: its directory {} is not writable ({e})", path.display(), parent.display());
        }
    }
    Ok(())
}

fn seconds(name: &str, value: f64) -> Result<Duration> {
    if !(value.is_finite() && value > 0.0 && value < 1e9) {
        anyhow::bail!("cannot use {name} {value}: it must be a number of seconds above 0");
    }
    Ok(Duration::from_secs_f64(value))
}

fn main() -> ExitCode {
    // Few malloc arenas: the uploads' 8 MiB buffers are freed on one thread
    // and reallocated on another, and every arena would keep its own.
    // SAFETY: mallopt is called once, before any other thread exists.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // A local archive holds a descriptor per segment of a batch until the
    // batch is durable: allow as many as the system lets this process have.
    // SAFETY: plain calls with a struct of ours.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    // A panic on any thread (an upload task, the watcher, the epoch ticker)
    // ends the process with 101, as on the main thread, instead of leaving
    // it running half alive.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    // For the tests of the line above: a panic on a thread of its own.
    if std::env::var_os("WAL_ARCHIVER_TEST_PANIC").is_some() {
        std::thread::spawn(|| panic!("WAL_ARCHIVER_TEST_PANIC is set"));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error under --log-format json is one JSON object too, as
        // every other line on stderr; help and --version print as they are.
        Err(e) if e.use_stderr() && json_logs_asked() => {
            let text = e.to_string();
            let message = text.lines().next().unwrap_or("").trim_start_matches("error: ").to_owned();
            let line = json!({"level": "ERROR", "message": message, "usage": text.trim_end()});
            eprintln!("{line}");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => {
            JSON_LOGS.store(true, Ordering::Relaxed);
            logs.json().flatten_event(true).with_current_span(false).with_span_list(false).init()
        }
    }
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            say(tracing::Level::ERROR, &format!("{e:#}"));
            ExitCode::from(2)
        }
    };
    match output::finish() {
        Ok(()) => code,
        Err(e) => {
            say(tracing::Level::ERROR, &format!("cannot write the report to standard output: {e}"));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // `Settings::new` checks every argument and compiles the planner before
    // anything touches the archive: a mistake leaves nothing behind.
    match cli.command {
        Command::Generate { dir, count, size, start_lsn, content } => {
            let content = match content {
                ContentArg::Random => wal_archiver::generate::Content::Random,
                ContentArg::Wal => wal_archiver::generate::Content::Wal,
            };
            let paths = wal_archiver::generate::generate_content(&dir, count, size, start_lsn, content)?;
            outln!("wrote {} segments of {} bytes to {}", paths.len(), size, dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Component { out } => {
            let bytes = wal_archiver::component::EMBEDDED_COMPONENT;
            std::fs::write(&out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
            outln!("wrote the planner component ({} bytes) to {}", bytes.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { target, json, current_lsn } => status(&Settings::new(target, None)?, json, current_lsn),
        Command::Archive { target, once, args } => archive(&Settings::new(target, Some(args))?, once),
        Command::Verify { to, from_lsn, until_lsn, deep, json, archive } => verify(&to, from_lsn, until_lsn, deep, json, &archive),
        Command::Restore { from, into, from_lsn, until_lsn, concurrency, archive } => {
            restore(&from, &into, from_lsn, until_lsn, concurrency as usize, &archive)
        }
        Command::Prune { to, before_lsn, dry_run, archive } => prune(&to, before_lsn, dry_run, &archive),
    }
}

/// Progress on stderr when it is a terminal (bytes, rate, the last segment);
/// nothing otherwise, so logs stay clean.
fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bytes} at {binary_bytes_per_sec}, {elapsed}: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Runs a restore-side command's result: a finding (the archive cannot give
/// what was asked) is exit 1, anything else that stopped it is exit 2.
fn finding_or_error<T>(result: Result<T, wal_archiver::restore::RestoreError>) -> Result<Result<T, ExitCode>> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(e) if e.is_finding() => {
            say(tracing::Level::ERROR, &e.to_string());
            Ok(Err(ExitCode::from(1)))
        }
        Err(e) => Err(e.into()),
    }
}

fn verify(url: &str, from: Option<u64>, until: Option<u64>, deep: bool, as_json: bool, arg: &ArchiveArg) -> Result<ExitCode> {
    let rt = runtime()?;
    let (archive, runtime) = arg.open(url)?;
    let mut planner = runtime.session(None)?;
    let bar = progress_bar(0, "verifying");
    let outcome = rt.block_on(wal_archiver::restore::verify(&archive, &mut planner, from, until, deep, |n| bar.inc(n)));
    bar.finish_and_clear();
    let outcome = match outcome {
        Ok(o) => o,
        // Nothing to check in the range (an empty archive, a range past its
        // end): not sound, with the same keys as any other report.
        Err(e) if e.is_finding() => {
            say(tracing::Level::ERROR, &e.to_string());
            if as_json {
                let doc = json!({
                    "archive": archive.url(), "sound": false, "deep": deep, "segments": 0, "bytes": 0, "stored_bytes": 0,
                    "from_lsn": from, "until_lsn": until,
                    "findings": [{"kind": "nothing-to-verify", "why": e.to_string()}],
                });
                outln!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                outln!("NOT sound");
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if as_json {
        let mut doc = serde_json::to_value(&outcome)?;
        doc["sound"] = json!(outcome.is_sound());
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let stored = if outcome.stored_bytes == outcome.bytes { String::new() } else { format!(", {} stored", human_bytes(outcome.stored_bytes)) };
        outln!(
            "{} segments ({}{stored}) in {} from LSN {} to {}{}",
            outcome.segments,
            human_bytes(outcome.bytes),
            outcome.archive,
            format_lsn(outcome.from_lsn),
            format_lsn(outcome.until_lsn),
            if deep { ", every one read back" } else { "" }
        );
        for f in &outcome.findings {
            outln!("{f}");
        }
        outln!("{}", if outcome.is_sound() { "sound" } else { "NOT sound" });
    }
    Ok(if outcome.is_sound() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn restore(url: &str, into: &Path, from: Option<u64>, until: Option<u64>, concurrency: usize, arg: &ArchiveArg) -> Result<ExitCode> {
    let rt = runtime()?;
    let (archive, runtime) = arg.open(url)?;
    let mut planner = runtime.session(None)?;
    let until = match until {
        Some(u) => u,
        None => match finding_or_error(rt.block_on(wal_archiver::restore::default_until(&archive, &mut planner, from)))? {
            Ok(u) => u,
            Err(code) => return Ok(code),
        },
    };
    let bar = progress_bar(0, "restoring");
    let result = rt.block_on(wal_archiver::restore::restore(&archive, &mut planner, into, from, until, concurrency, |n| bar.inc(n)));
    bar.finish_and_clear();
    let s = match finding_or_error(result)? {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    outln!(
        "restored {} segments ({}) into {} up to LSN {}; {} already there",
        s.restored.len(),
        human_bytes(s.bytes),
        into.display(),
        format_lsn(until),
        s.already_there.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn prune(url: &str, before: u64, dry_run: bool, arg: &ArchiveArg) -> Result<ExitCode> {
    let rt = runtime()?;
    let (archive, runtime) = arg.open(url)?;
    let mut planner = runtime.session(None)?;
    let summary = rt.block_on(wal_archiver::restore::prune(&archive, &mut planner, before, dry_run))?;
    for name in &summary.segments {
        outln!("{} {name}", if dry_run { "would delete" } else { "deleted" });
    }
    outln!(
        "{} {} segments below LSN {}; the chain {} from LSN {}",
        if dry_run { "would prune" } else { "pruned" },
        summary.segments.len(),
        format_lsn(before),
        if dry_run { "would start" } else { "starts" },
        format_lsn(summary.chain_start)
    );
    Ok(ExitCode::SUCCESS)
}

/// Builds the archiver: the WAL directory, the state file (checked before
/// anything is created), then the archive. `archiving` locks the WAL
/// directory and makes a local archive that is not there yet; without it
/// (status) nothing is created.
fn open(settings: &Settings, rt: &tokio::runtime::Runtime, archiving: bool) -> Result<(Archiver, Option<DirLock>)> {
    // The archiver's own files: the lock, and the default state file even
    // when --state has moved the state elsewhere (it may be left from before).
    let mut wal = WalDir::open(&settings.wal_dir)?.hide(LOCK_NAME).hide(DEFAULT_STATE_NAME).hide(format!("{DEFAULT_STATE_NAME}.tmp"));
    let held = if archiving { Some(DirLock::acquire(wal.root())?) } else { None };
    let state_path = settings.state_file();
    if let Some(path) = &state_path
        && let Some(name) = path.file_name()
        && same_dir(path.parent(), wal.root())
    {
        let mut tmp = name.to_owned();
        tmp.push(".tmp");
        wal = wal.hide(name).hide(tmp);
    }
    let state_store = state_path.map(|p| StateStore::new(p, &settings.url));
    // A state of another archive is refused before the archive is created.
    if let Some(store) = &state_store
        && let Err(e @ wal_archiver::state::StateError::OtherArchive { .. }) = store.load()
    {
        return Err(e.into());
    }
    let retries = settings.request_retries as usize;
    let archive = if archiving {
        Archive::open_with(&settings.url, &settings.storage_options, retries)?
    } else {
        Archive::open_to_look(&settings.url, &settings.storage_options, retries)?
    };
    let archive = archive
        .with_compression(settings.compression)
        .with_single_put_max(settings.single_put_max);
    let config = wit::ArchiverConfig {
        prefix: archive.prefix().to_owned(),
        batch_size: settings.batch_size,
        batch_bytes: settings.batch_bytes,
        verify_checksums: settings.verify_checksums,
        delete_after_archive: settings.delete_after_archive,
        retry_base_ms: settings.retry_base.as_millis().try_into().unwrap_or(u64::MAX),
        retry_max_ms: settings.retry_max.as_millis().try_into().unwrap_or(u64::MAX),
        compression: settings.compression.to_wit(),
    };
    let storage = Storage::new(wal, archive, rt.handle().clone());
    let archiver = Archiver::new(settings.runtime.clone(), storage, config, state_store).with_concurrency(settings.concurrency as usize);
    Ok((archiver, held))
}

fn same_dir(parent: Option<&Path>, root: &Path) -> bool {
    let parent = match parent {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::canonicalize(parent).is_ok_and(|p| p == root)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Each blocking thread may keep a malloc arena with freed upload
        // buffers in it; a bounded pool keeps peak memory flat on long runs.
        .max_blocking_threads(8)
        .build()
        .context("cannot start the I/O runtime")
}

fn archive(settings: &Settings, once: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    // Bound before anything is opened: an address in use stops the run
    // before it takes the lock or touches the archive.
    let metrics = match &settings.metrics_addr {
        None => None,
        Some(addr) => {
            let metrics = Arc::new(Metrics::new());
            let bound = metrics.serve(addr, &rt)?;
            say(tracing::Level::INFO, &format!("serving metrics on http://{bound}/metrics and health on http://{bound}/healthz"));
            Some(metrics)
        }
    };
    let (mut archiver, mut lock) = open(settings, &rt, true)?;
    if let Some(m) = metrics.clone() {
        archiver = archiver.with_upload_timer(move |took| m.observe_upload(took));
    }
    if !once {
        // A watcher lists the archive at its first cycle, after a failure,
        // and every few minutes; not on every wake-up.
        archiver = archiver.with_reconcile_every(Duration::from_secs(300));
    }
    let bar = progress_bar(0, "archiving");
    if once {
        let b = bar.clone();
        let count = std::sync::atomic::AtomicU64::new(0);
        archiver = archiver.with_progress(move |seg| {
            let n = count.fetch_add(1, Ordering::Relaxed) + 1;
            b.inc(seg.size);
            b.set_message(format!("{n} segments archived, last {}", seg.name));
        });
    }
    // Leftovers of uploads killed midway, old enough not to be another
    // archiver's upload in flight. Best effort: archiving goes on without.
    match rt.block_on(archiver.storage().archive.remove_staging_leftovers(settings.staging_max_age)) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(count = removed.len(), "removed staging leftovers older than {} s: {}", settings.staging_max_age.as_secs(), removed.join(", "))
        }
        Ok(_) => {}
        Err(e) => warn!("cannot clean the staging area: {e}"),
    }
    let mut state = archiver.load_state()?;
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    watch_signals(&rt, stop.clone(), wake.clone());

    if once {
        let summary = archiver.run_until_done(&mut state, &stop, settings.max_attempts)?;
        bar.finish_and_clear();
        if let Some(m) = &metrics {
            m.cycle_done(&figures(&archiver, &summary));
        }
        print_summary(&archiver, &summary);
        return Ok(if summary.is_clean() && !stop.load(Ordering::SeqCst) { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }

    // Changes in the WAL directory wake the loop at once (inotify through
    // `notify`); the timer is then only a safety net. Without a watcher, the
    // timer polls.
    let root = archiver.storage().wal.root().to_owned();
    let mut own: Vec<std::ffi::OsString> = vec![LOCK_NAME.into()];
    if let Some(name) = settings.state_file().and_then(|p| p.file_name().map(|n| n.to_owned())) {
        let mut tmp = name.clone();
        tmp.push(".tmp");
        own.extend([name, tmp]);
    }
    let mut watch = DirWatch::start(&root, own.clone(), wake.clone());
    say(
        tracing::Level::INFO,
        &format!(
            "watching {} for completed segments, archiving to {}; stop with Ctrl-C or SIGTERM \
             (once: finish the upload in flight; twice: exit at once)",
            root.display(),
            archiver.storage().archive.url()
        ),
    );
    let mut clean = true;
    while !stop.load(Ordering::SeqCst) {
        // The directory may have been removed and made again: watch the new one.
        if watch.replaced() {
            match std::fs::metadata(&root) {
                Ok(m) if m.is_dir() => {
                    drop(lock.take());
                    lock = Some(DirLock::acquire(&root)?);
                    watch = DirWatch::start(&root, own.clone(), wake.clone());
                    warn!("the WAL directory {} was replaced; watching the new one", root.display());
                }
                _ => warn!("the WAL directory {} is gone; waiting for it to come back", root.display()),
            }
        }
        match archiver.run_once(&mut state, &stop) {
            Ok(summary) => {
                // Also a segment still failing that this cycle did not try.
                clean = summary.problems().is_empty();
                if let Some(m) = &metrics {
                    m.cycle_done(&figures(&archiver, &summary));
                }
                if !summary.archived.is_empty() || !summary.failed.is_empty() || !summary.conflicts.is_empty() {
                    print_summary(&archiver, &summary);
                }
            }
            // A cycle that cannot run is retried on the next one; it never marks anything archived.
            Err(e) => {
                clean = false;
                if let Some(m) = &metrics {
                    m.cycle_failed(&e.to_string());
                }
                warn!("cycle failed, retrying in {:?}: {e}", settings.interval);
            }
        }
        let idle = if watch.is_watching() { settings.interval.max(Duration::from_secs(10)) } else { settings.interval };
        // A failed segment waits for its backoff, not for the next event.
        let wait = if archiver.has_retries() || !clean { idle.min(settings.interval) } else { idle };
        rt.block_on(async {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = wake.notified() => {
                    // Let a burst of events (a segment being written) settle into one cycle.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
    drop(watch);
    drop(lock);
    say(tracing::Level::INFO, "stopped; in-flight uploads finished");
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A run's figures, for the metrics.
fn figures(archiver: &Archiver, s: &Summary) -> CycleFigures {
    let watermark = s.state.last_archived_lsn;
    let current = s.newest_lsn.max(watermark).unwrap_or(0);
    let rpo_gap = archiver.rpo_gap(&s.state, current).unwrap_or_else(|e| {
        warn!("cannot measure the RPO gap: {e}");
        0
    });
    let problems = s.problems();
    CycleFigures {
        last_archived_lsn: watermark,
        rpo_gap,
        pending: s.pending as u64,
        archived: s.archived.len() as u64,
        bytes: s.bytes_archived(),
        failed_uploads: s.failed.len() as u64,
        failed_deletes: s.not_deleted.len() as u64,
        conflicts: s.conflicts.iter().map(|c| c.name.clone()).collect(),
        problem: (!problems.is_empty()).then(|| format!("the last cycle left {}", problems.join(", "))),
    }
}

/// Watches the WAL directory, and its parent for the directory itself being
/// removed or made again; every change wakes the archive loop. Reads, and
/// events about the archiver's own files (its state file, its lock), are
/// ignored: a cycle reads the directory and saves its state, and must not
/// wake the next one.
struct DirWatch {
    root: PathBuf,
    /// The directory's identity when the watch began.
    identity: Option<(u64, u64)>,
    watchers: Vec<notify::RecommendedWatcher>,
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl DirWatch {
    fn start(root: &Path, own: Vec<std::ffi::OsString>, wake: Arc<Notify>) -> Self {
        use notify::Watcher;
        let mut watchers = Vec::new();
        let own = Arc::new(own);
        let (w, o) = (wake.clone(), own.clone());
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Reads (the archiver's own listing and uploads among them) change nothing.
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let ours = |p: &PathBuf| p.file_name().is_some_and(|n| o.iter().any(|x| x == n));
            if event.paths.is_empty() || !event.paths.iter().all(ours) {
                w.notify_one();
            }
        }) {
            Ok(mut watcher) => match watcher.watch(root, notify::RecursiveMode::NonRecursive) {
                Ok(()) => watchers.push(watcher),
                Err(e) => warn!("cannot watch {} ({e}); polling instead", root.display()),
            },
            Err(e) => warn!("cannot watch {} ({e}); polling instead", root.display()),
        }
        // The parent: the directory itself removed, renamed or made again.
        if let Some(parent) = root.parent() {
            let (w, name) = (wake, root.file_name().map(|n| n.to_owned()));
            if let Ok(mut watcher) = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if !matches!(event.kind, notify::EventKind::Access(_)) && event.paths.iter().any(|p| p.file_name().map(|n| n.to_owned()) == name) {
                    w.notify_one();
                }
            }) && watcher.watch(parent, notify::RecursiveMode::NonRecursive).is_ok()
            {
                watchers.push(watcher);
            }
        }
        Self { root: root.to_owned(), identity: identity(root), watchers }
    }

    /// True while the directory itself is watched.
    fn is_watching(&self) -> bool {
        !self.watchers.is_empty() && !self.replaced()
    }

    /// True when the directory is not the one being watched any more.
    fn replaced(&self) -> bool {
        identity(&self.root) != self.identity
    }
}

/// First SIGINT or SIGTERM: finish the upload in flight and stop. Second: exit now.
fn watch_signals(rt: &tokio::runtime::Runtime, stop: Arc<AtomicBool>, wake: Arc<Notify>) {
    rt.spawn(async move {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if stop.swap(true, Ordering::SeqCst) {
                say(tracing::Level::WARN, "second signal, exiting now");
                std::process::exit(130);
            }
            say(tracing::Level::INFO, "stopping after the upload in flight (signal again to exit now)");
            wake.notify_one();
        }
    });
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn watermark_text(state: &wit::ArchiverState) -> String {
    state.last_archived_lsn.map_or_else(|| "none yet".to_owned(), format_lsn)
}

fn print_summary(archiver: &Archiver, s: &Summary) {
    let sent = s.archived.iter().filter(|a| !a.existed).count();
    let compared = s.archived.len() - sent;
    outln!("archived {sent} segments ({}) to {}", human_bytes(s.bytes_archived()), archiver.storage().archive.url());
    if compared > 0 {
        outln!("already in the archive, compared with the local files: {compared}");
    }
    outln!("last archived LSN: {}", watermark_text(&s.state));
    outln!("failed: {}", s.failed.len());
    for f in &s.failed {
        outln!("  {} (attempt {}): {}", f.name, f.attempts, f.last_reason);
    }
    if !s.conflicts.is_empty() {
        outln!("in conflict: {}", s.conflicts.len());
        for c in &s.conflicts {
            outln!("  {}", describe_conflict(c));
        }
    }
    if archiver.config().delete_after_archive {
        outln!("deleted locally: {}", s.deleted.len());
        for f in &s.not_deleted {
            outln!("  not deleted {}: {}", f.name, f.last_reason);
        }
    }
    if let Some(why) = &s.state_not_saved {
        outln!("state file not saved: {why}");
    }
    if let Some(why) = &s.chain_not_recorded {
        outln!("chain start not recorded (nothing deleted): {why}");
    }
    print_findings("skipped: ", &s.skipped, &s.breaks, &s.off_chain, &s.pruned);
}

/// Skipped entries, breaks, segments off the chain and pruned ones, as
/// `archive` and `status` print them.
fn print_findings(skipped_label: &str, skipped: &[wit::SkippedEntry], breaks: &[wit::ChainBreak], off_chain: &[String], pruned: &[String]) {
    outln!("{skipped_label}{}", skipped.len());
    for k in skipped {
        outln!("  {}: {}", k.name, describe_skip(&k.reason));
    }
    for b in breaks {
        outln!("{}", describe_break(b));
    }
    for name in off_chain {
        outln!("not on the chain (its LSNs are held by others): {name}");
    }
    for name in pruned {
        outln!("pruned from the archive, kept locally, never uploaded again: {name}");
    }
}

fn status(settings: &Settings, as_json: bool, current_lsn: Option<u64>) -> Result<ExitCode> {
    let rt = runtime()?;
    let (archiver, _) = open(settings, &rt, false)?;
    let state = archiver.load_state()?;
    let (scan, newest) = archiver.inspect(&state)?;
    let current = current_lsn.unwrap_or(newest);
    let rpo_gap = archiver.rpo_gap(&scan.state, current)?;
    let st = &scan.state;
    // An archive that is not there, or holds no segment, while the state
    // file says segments went to it: removed, or its disk not mounted (an
    // empty mount point). Not a first run. (A prune never empties one: it
    // keeps the segment that holds the watermark.)
    let absent = archiver.storage().archive.is_absent();
    let lost = (absent || st.segments_archived == 0) && (state.segments_archived > 0 || state.last_archived_lsn.is_some());
    let code = if scan.conflicts.is_empty() && !lost { ExitCode::SUCCESS } else { ExitCode::from(1) };
    if lost {
        say(
            tracing::Level::ERROR,
            &format!(
                "the archive {} {}, but the state file says {} segments were archived to it: was it removed, or is its disk not mounted?",
                archiver.storage().archive.url(),
                if absent { "is not there" } else { "holds no segment" },
                state.segments_archived
            ),
        );
    }
    if as_json {
        let list = |l: &wit::SegmentList| l.iter().map(|(n, s)| json!({"name": n, "size": s})).collect::<Vec<_>>();
        let doc = json!({
            "archive": archiver.storage().archive.url(),
            "archive_exists": !archiver.storage().archive.is_absent(),
            "last_archived_lsn": st.last_archived_lsn,
            "chain_start": st.chain_start,
            "pruned_below": st.pruned_below,
            "segments_archived": st.segments_archived,
            "bytes_archived": st.bytes_archived,
            "failures": st.failures,
            "current_lsn": current,
            "rpo_gap": rpo_gap,
            "pending": list(&scan.pending),
            "to_confirm": list(&scan.to_confirm),
            "failing": st.failing.iter().map(|f| json!({
                "name": f.name, "attempts": f.attempts, "last_reason": f.last_reason,
            })).collect::<Vec<_>>(),
            "conflicts": scan.conflicts.iter().map(|c| json!({
                "name": c.name, "local_size": c.local_size, "local_crc32c": format!("{:08x}", c.local_crc32c),
                "archived_size": c.archived_size, "archived_crc32c": format!("{:08x}", c.archived_crc32c),
            })).collect::<Vec<_>>(),
            "skipped": scan.skipped.iter().map(|k| json!({"name": k.name, "reason": describe_skip(&k.reason)})).collect::<Vec<_>>(),
            "breaks": scan.breaks.iter().map(|b| json!({"text": describe_break(b)})).collect::<Vec<_>>(),
            "off_chain": scan.off_chain,
            "pruned": scan.pruned,
            "strays": scan.strays.iter().map(|k| json!({"name": k.name, "reason": describe_skip(&k.reason)})).collect::<Vec<_>>(),
            "unverified": scan.unverified,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(code);
    }
    let archive = &archiver.storage().archive;
    if lost && absent {
        outln!("archive:            {} (NOT THERE, though segments were archived to it)", archive.url());
    } else if lost {
        outln!("archive:            {} (EMPTY, though segments were archived to it)", archive.url());
    } else if absent {
        outln!("archive:            {} (not there yet: the first archive run makes it)", archive.url());
    } else {
        outln!("archive:            {}", archive.url());
    }
    outln!("last archived LSN:  {}", watermark_text(st));
    match (st.chain_start, st.last_archived_lsn) {
        (Some(start), Some(_)) => outln!("chain start:        {}", format_lsn(start)),
        (Some(start), None) => outln!("chain start:        not set yet (the first segment archived sets it: {})", format_lsn(start)),
        (None, _) => {}
    }
    outln!("segments archived:  {} ({})", st.segments_archived, human_bytes(st.bytes_archived));
    outln!("failures:           {}", st.failures);
    outln!("RPO gap:            {rpo_gap} LSNs at current LSN {}", format_lsn(current));
    outln!("pending:            {}", scan.pending.len());
    for (name, _) in scan.pending.iter() {
        outln!("  {name}");
    }
    if !scan.to_confirm.is_empty() {
        outln!("to compare with the archive: {}", scan.to_confirm.len());
        for (name, _) in scan.to_confirm.iter() {
            outln!("  {name}");
        }
    }
    for f in st.failing.iter() {
        outln!("failing: {} ({} attempts): {}", f.name, f.attempts, f.last_reason);
    }
    for c in &scan.conflicts {
        outln!("{}", describe_conflict(c));
    }
    print_findings("skipped:            ", &scan.skipped, &scan.breaks, &scan.off_chain, &scan.pruned);
    for k in &scan.strays {
        outln!("not a segment, in the archive ({}): {:?}", describe_skip(&k.reason), k.name);
    }
    for name in &scan.unverified {
        outln!("no recorded checksum, in the archive: {name}");
    }
    Ok(code)
}
