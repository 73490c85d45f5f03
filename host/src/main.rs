//! The `wal-archiver` command line: glue over the `wal_archiver` library.
//!
//! Exit codes: 0 when everything asked for was done; 1 when the run went
//! through but something is not archived (a failed segment, overlapping
//! segments, a segment that could not be deleted); 2 when it could not run.

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

use wal_archiver::archive::{describe_skip, Archiver, Summary};
use wal_archiver::component::{wit, Limits, PlannerRuntime, EMBEDDED_COMPONENT};
use wal_archiver::config::ConfigFile;
use wal_archiver::lsn::{format_lsn, parse_lsn};
use wal_archiver::state::StateStore;
use wal_archiver::storage::{Archive, Storage, WalDir};

/// The state file's name when it lives in the WAL directory (the default).
const DEFAULT_STATE_NAME: &str = ".wal-archiver-state.json";

#[derive(Parser)]
#[command(name = "wal-archiver", version, about = "Continuous WAL archiving to object storage, with a gap-free watermark")]
#[command(after_help = "Exit codes: 0 done; 1 something was not archived (failed, overlapping or not deleted); 2 could not run.\nLogs go to stderr; set RUST_LOG (default: info).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        let archive = Archive::open_existing(&url, &options, wal_archiver::storage::DEFAULT_REQUEST_RETRIES)?;
        Ok((archive, runtime))
    }
}

/// Options of `archive`; each one may also come from the config file.
#[derive(clap::Args)]
struct ArchiveArgs {
    /// The most segments planned in one batch [default: 16].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
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
        /// Bytes per segment.
        #[arg(long, value_name = "BYTES")]
        size: u64,
        /// The first LSN, decimal or 0x hex.
        #[arg(long, default_value = "1", value_parser = parse_lsn, value_name = "LSN")]
        start_lsn: u64,
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
    concurrency: u32,
    delete_after_archive: bool,
    verify_checksums: bool,
    interval: Duration,
    max_attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
    request_retries: u32,
}

impl Settings {
    fn new(target: Target, args: Option<ArchiveArgs>) -> Result<Self> {
        let file = match &target.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        let args = args.unwrap_or(ArchiveArgs {
            batch_size: None,
            concurrency: None,
            delete_after_archive: false,
            no_verify_checksums: false,
            interval: None,
            max_attempts: None,
            retry_base_delay: None,
            retry_max_delay: None,
            request_retries: None,
        });
        let wal_dir = target
            .wal_dir
            .or(file.wal_dir.clone())
            .context("cannot start: no WAL directory; give --wal-dir or `wal-dir` in the config file")?;
        let to = target
            .to
            .or(file.to.clone())
            .context("cannot start: no archive; give --to or `to` in the config file")?;
        let url = Archive::url_for(&to)?;
        let storage_options = file.storage_options(&url)?;
        let positive = |name: &str, v: Option<u32>| -> Result<Option<u32>> {
            match v {
                Some(0) => anyhow::bail!("cannot use {name} = 0 from the config file: it must be at least 1"),
                v => Ok(v),
            }
        };
        Ok(Self {
            runtime: Arc::new(target.plugin.runtime()?),
            wal_dir,
            url,
            state: target.state.or(file.state.clone()),
            storage_options,
            batch_size: args.batch_size.or(positive("batch-size", file.batch_size)?).unwrap_or(16),
            concurrency: args.concurrency.or(positive("concurrency", file.concurrency)?).unwrap_or(4),
            delete_after_archive: args.delete_after_archive || file.delete_after_archive.unwrap_or(false),
            verify_checksums: !args.no_verify_checksums && file.verify_checksums.unwrap_or(true),
            interval: seconds("interval", args.interval.or(file.interval).unwrap_or(1.0))?,
            max_attempts: args.max_attempts.or(positive("max-attempts", file.max_attempts)?).unwrap_or(5),
            retry_base: seconds("retry-base-delay", args.retry_base_delay.or(file.retry_base_delay).unwrap_or(1.0))?,
            retry_max: seconds("retry-max-delay", args.retry_max_delay.or(file.retry_max_delay).unwrap_or(60.0))?,
            request_retries: args
                .request_retries
                .or(file.request_retries)
                .unwrap_or(wal_archiver::storage::DEFAULT_REQUEST_RETRIES as u32),
        })
    }
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wal-archiver: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // `Settings::new` compiles the planner first, before anything touches
    // the archive: a plugin that is refused leaves nothing behind.
    match cli.command {
        Command::Generate { dir, count, size, start_lsn } => {
            let paths = wal_archiver::generate::generate(&dir, count, size, start_lsn)?;
            println!("wrote {} segments of {} bytes to {}", paths.len(), size, dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Component { out } => {
            let bytes = wal_archiver::component::EMBEDDED_COMPONENT;
            std::fs::write(&out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote the planner component ({} bytes) to {}", bytes.len(), out.display());
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

fn verify(url: &str, from: Option<u64>, until: Option<u64>, deep: bool, as_json: bool, arg: &ArchiveArg) -> Result<ExitCode> {
    let rt = runtime()?;
    let (archive, runtime) = arg.open(url)?;
    let mut planner = runtime.session(None)?;
    let bar = progress_bar(0, "verifying");
    let outcome = rt.block_on(wal_archiver::restore::verify(&archive, &mut planner, from, until, deep, |n| bar.inc(n)))?;
    bar.finish_and_clear();
    if as_json {
        let mut doc = serde_json::to_value(&outcome)?;
        doc["sound"] = json!(outcome.is_sound());
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{} segments ({}) in {}{}",
            outcome.segments,
            human_bytes(outcome.bytes),
            outcome.archive,
            if deep { ", every one read back" } else { "" }
        );
        for f in &outcome.findings {
            println!("{f}");
        }
        println!("{}", if outcome.is_sound() { "sound" } else { "NOT sound" });
    }
    Ok(if outcome.is_sound() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn restore(url: &str, into: &Path, from: Option<u64>, until: Option<u64>, concurrency: usize, arg: &ArchiveArg) -> Result<ExitCode> {
    use wal_archiver::restore::RestoreError;
    let rt = runtime()?;
    let (archive, runtime) = arg.open(url)?;
    let mut planner = runtime.session(None)?;
    let until = match until {
        Some(u) => u,
        None => {
            let listing = rt.block_on(archive.list())?;
            let report = planner.verify_plan(&listing, from, None)?;
            report.segments.iter().map(|s| s.last_lsn).max().context(format!("cannot restore from {url}: the archive holds no segment"))?
        }
    };
    let bar = progress_bar(0, "restoring");
    let result = rt.block_on(wal_archiver::restore::restore(&archive, &mut planner, into, from, until, concurrency, |n| bar.inc(n)));
    bar.finish_and_clear();
    match result {
        Ok(s) => {
            println!(
                "restored {} segments ({}) into {} up to LSN {}; {} already there",
                s.restored.len(),
                human_bytes(s.bytes),
                into.display(),
                format_lsn(until),
                s.already_there.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        // The archive cannot give what was asked: say so, exit 1.
        Err(e @ (RestoreError::NoChain { .. } | RestoreError::Refused { .. } | RestoreError::Corrupt { .. })) => {
            eprintln!("wal-archiver: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

fn prune(url: &str, before: u64, dry_run: bool, arg: &ArchiveArg) -> Result<ExitCode> {
    let rt = runtime()?;
    let (archive, runtime) = arg.open(url)?;
    let mut planner = runtime.session(None)?;
    let gone = rt.block_on(wal_archiver::restore::prune(&archive, &mut planner, before, dry_run))?;
    for seg in &gone {
        println!("{} {}", if dry_run { "would delete" } else { "deleted" }, seg.name);
    }
    println!(
        "{} {} segments below LSN {}",
        if dry_run { "would prune" } else { "pruned" },
        gone.len(),
        format_lsn(before)
    );
    Ok(ExitCode::SUCCESS)
}

impl Settings {
    /// Where the state is kept, if anywhere.
    fn state_file(&self) -> Option<PathBuf> {
        match &self.state {
            Some(p) => Some(p.clone()),
            None if self.url.starts_with("memory:") => None,
            None => Some(self.wal_dir.join(DEFAULT_STATE_NAME)),
        }
    }
}

/// Builds the archiver: WAL directory, archive, state file, planner.
fn open(settings: &Settings, rt: &tokio::runtime::Runtime) -> Result<Archiver> {
    let archive = Archive::open_with(&settings.url, &settings.storage_options, settings.request_retries as usize)?;
    let mut wal = WalDir::open(&settings.wal_dir)?;
    let state_path = settings.state_file();
    if let Some(path) = &state_path
        && let Some(name) = path.file_name()
        && same_dir(path.parent(), wal.root())
    {
        wal = wal.hide(name);
    }
    let config = wit::ArchiverConfig {
        prefix: archive.prefix().to_owned(),
        batch_size: settings.batch_size,
        verify_checksums: settings.verify_checksums,
        delete_after_archive: settings.delete_after_archive,
        retry_base_ms: settings.retry_base.as_millis().try_into().unwrap_or(u64::MAX),
        retry_max_ms: settings.retry_max.as_millis().try_into().unwrap_or(u64::MAX),
    };
    let storage = Storage { wal, archive, runtime: rt.handle().clone() };
    let state_store = state_path.map(|p| StateStore::new(p, &settings.url));
    Ok(Archiver::new(settings.runtime.clone(), storage, config, state_store).with_concurrency(settings.concurrency as usize))
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
    let mut archiver = open(settings, &rt)?;
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
    let mut state = archiver.load_state()?;
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    watch_signals(&rt, stop.clone(), wake.clone());

    if once {
        let summary = archiver.run_until_done(&mut state, &stop, settings.max_attempts)?;
        bar.finish_and_clear();
        print_summary(&archiver, &summary);
        return Ok(if summary.is_clean() && !stop.load(Ordering::SeqCst) { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }

    // Changes in the WAL directory wake the loop at once (inotify through
    // `notify`); the timer is then only a safety net. Without a watcher, the
    // timer polls.
    let own: Vec<std::ffi::OsString> = settings
        .state_file()
        .and_then(|p| p.file_name().map(|n| n.to_owned()))
        .map(|n| {
            let mut tmp = n.clone();
            tmp.push(".tmp");
            vec![n, tmp]
        })
        .unwrap_or_default();
    let watcher = watch_dir(archiver.storage().wal.root(), own, wake.clone());
    let idle = if watcher.is_some() { settings.interval.max(Duration::from_secs(10)) } else { settings.interval };
    let mut clean = true;
    while !stop.load(Ordering::SeqCst) {
        match archiver.run_once(&mut state, &stop) {
            Ok(summary) => {
                clean = summary.is_clean();
                if !summary.archived.is_empty() || !summary.failed.is_empty() {
                    print_summary(&archiver, &summary);
                }
            }
            // A cycle that cannot run is retried on the next one; it never marks anything archived.
            Err(e) => {
                clean = false;
                warn!("cycle failed, retrying in {:?}: {e}", settings.interval);
            }
        }
        // A failed segment waits for its backoff, not for the next event.
        let wait = if archiver.has_retries() { idle.min(settings.interval) } else { idle };
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
    drop(watcher);
    eprintln!("wal-archiver: stopped; in-flight uploads finished");
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Watches the WAL directory; every change wakes the archive loop.
/// Reads, and events about the archiver's own files (its state file), are
/// ignored: a cycle reads the directory and saves its state, and must not
/// wake the next one.
fn watch_dir(dir: &Path, own: Vec<std::ffi::OsString>, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reads (the archiver's own listing and uploads among them) change nothing.
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let ours = |p: &PathBuf| p.file_name().is_some_and(|n| own.iter().any(|o| o == n));
        if event.paths.is_empty() || !event.paths.iter().all(ours) {
            wake.notify_one();
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!("cannot watch {} ({e}); polling instead", dir.display());
            return None;
        }
    };
    match watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            warn!("cannot watch {} ({e}); polling instead", dir.display());
            None
        }
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
                eprintln!("wal-archiver: second signal, exiting now");
                std::process::exit(130);
            }
            eprintln!("wal-archiver: stopping after the upload in flight (signal again to exit now)");
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
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn watermark_text(state: &wit::ArchiverState) -> String {
    state.last_archived_lsn.map_or_else(|| "none yet".to_owned(), format_lsn)
}

fn print_summary(archiver: &Archiver, s: &Summary) {
    println!(
        "archived {} segments ({}) to {}",
        s.archived.len(),
        human_bytes(s.bytes_archived()),
        archiver.storage().archive.url()
    );
    println!("last archived LSN: {}", watermark_text(&s.state));
    println!("failed: {}", s.failed.len());
    for f in &s.failed {
        println!("  {} (attempt {}): {}", f.name, f.attempts, f.last_reason);
    }
    if archiver.config().delete_after_archive {
        println!("deleted locally: {}", s.deleted.len());
        for f in &s.not_deleted {
            println!("  not deleted {}: {}", f.name, f.last_reason);
        }
    }
    print_findings("skipped: ", &s.skipped, &s.gaps, &s.overlaps);
}

/// Skipped entries, gaps and overlaps, as `archive` and `status` print them.
fn print_findings(skipped_label: &str, skipped: &[wit::SkippedEntry], gaps: &[wit::Gap], overlaps: &[wit::Overlap]) {
    println!("{skipped_label}{}", skipped.len());
    for k in skipped {
        println!("  {}: {}", k.name, describe_skip(&k.reason));
    }
    for g in gaps {
        println!("gap: LSNs {} to {} are missing", format_lsn(g.from_lsn), format_lsn(g.to_lsn));
    }
    for o in overlaps {
        let first = if o.first.is_empty() { "the archived range" } else { o.first.as_str() };
        println!("overlap: {} and {} both claim LSNs {} to {}", first, o.second, format_lsn(o.from_lsn), format_lsn(o.to_lsn));
    }
}

fn status(settings: &Settings, as_json: bool, current_lsn: Option<u64>) -> Result<ExitCode> {
    let rt = runtime()?;
    let archiver = open(settings, &rt)?;
    let state = archiver.load_state()?;
    let (scan, newest) = archiver.inspect(&state)?;
    let current = current_lsn.unwrap_or(newest);
    let rpo_gap = archiver.rpo_gap(&scan.state, current)?;
    let st = &scan.state;
    if as_json {
        let doc = json!({
            "archive": archiver.storage().archive.url(),
            "last_archived_lsn": st.last_archived_lsn,
            "chain_start": st.chain_start,
            "segments_archived": st.segments_archived,
            "bytes_archived": st.bytes_archived,
            "failures": st.failures,
            "current_lsn": current,
            "rpo_gap": rpo_gap,
            "pending": scan.pending.iter().map(|s| json!({
                "name": s.name, "first_lsn": s.first_lsn, "last_lsn": s.last_lsn, "size": s.size,
            })).collect::<Vec<_>>(),
            "failing": st.failing.iter().map(|f| json!({
                "name": f.name, "attempts": f.attempts, "last_reason": f.last_reason,
            })).collect::<Vec<_>>(),
            "skipped": scan.skipped.iter().map(|k| json!({
                "name": k.name, "reason": describe_skip(&k.reason),
            })).collect::<Vec<_>>(),
            "gaps": scan.gaps.iter().map(|g| json!({"from": g.from_lsn, "to": g.to_lsn})).collect::<Vec<_>>(),
            "overlaps": scan.overlaps.iter().map(|o| json!({
                "first": o.first, "second": o.second, "from": o.from_lsn, "to": o.to_lsn,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("archive:            {}", archiver.storage().archive.url());
    println!("last archived LSN:  {}", watermark_text(st));
    println!("segments archived:  {} ({})", st.segments_archived, human_bytes(st.bytes_archived));
    println!("failures:           {}", st.failures);
    println!("RPO gap:            {rpo_gap} LSNs at current LSN {}", format_lsn(current));
    println!("pending:            {}", scan.pending.len());
    for s in &scan.pending {
        println!("  {}", s.name);
    }
    for f in &st.failing {
        println!("failing: {} ({} attempts): {}", f.name, f.attempts, f.last_reason);
    }
    print_findings("skipped:            ", &scan.skipped, &scan.gaps, &scan.overlaps);
    Ok(ExitCode::SUCCESS)
}
