//! The config file (TOML): every option of `archive`, and the storage
//! options of the destination's backend. Flags on the command line override it.
//!
//! ```toml
//! wal-dir = "/var/lib/nodedb/wal"
//! to = "s3://backups/nodedb/wal"
//! concurrency = 4
//!
//! [storage]
//! aws_region = "eu-west-1"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::store::Archive;

/// Why a config file cannot be used. Every message names the file, and the
/// line where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {cause}", path.display())]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("cannot parse config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("cannot use config file {}, line {line}: {why}", path.display())]
    Invalid { path: PathBuf, line: usize, why: String },
}

/// A byte size in the file: `268435456` or `"256MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct Size(pub u64);

impl TryFrom<toml::Value> for Size {
    type Error = String;

    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) => u64::try_from(n).map(Size).map_err(|_| format!("cannot use {n} as a size: it is negative")),
            toml::Value::String(text) => crate::size::parse_size(&text).map(Size),
            other => Err(format!("cannot use {other} as a size: a number of bytes or a string such as \"256MiB\"")),
        }
    }
}

/// The options the file may hold; each one is also a flag of `archive`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub wal_dir: Option<PathBuf>,
    pub to: Option<String>,
    pub state: Option<PathBuf>,
    pub batch_size: Option<u32>,
    /// Bytes: a number, or a string with a unit (`"256MiB"`).
    pub batch_bytes: Option<Size>,
    pub concurrency: Option<u32>,
    pub delete_after_archive: Option<bool>,
    pub verify_checksums: Option<bool>,
    pub interval: Option<f64>,
    pub staging_max_age: Option<f64>,
    pub max_attempts: Option<u32>,
    pub retry_base_delay: Option<f64>,
    pub retry_max_delay: Option<f64>,
    pub request_retries: Option<u32>,
    /// `HOST:PORT` for `/metrics` and `/healthz`.
    #[serde(alias = "metrics_addr")]
    pub metrics_addr: Option<String>,
    /// `none`, `zstd` or `zstd:LEVEL`; checked when the settings are made.
    pub compression: Option<String>,
    /// The largest segment sent in one PUT (`64MiB`; 0 stages every one).
    pub single_put_max: Option<Size>,
    /// object_store options for the destination's backend (`aws_region`, ...).
    #[serde(default)]
    pub storage: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(skip)]
    source: String,
    #[serde(skip)]
    path: PathBuf,
}

impl ConfigFile {
    /// Reads and parses a file. Unknown keys and wrong types are errors with
    /// their line. Relative paths in it (`wal-dir`, `state`, and `to` when it
    /// is a path) are taken from the file's own directory, wherever the
    /// command runs from.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read { path: path.to_owned(), cause })?;
        let mut file = Self::parse(&source, path)?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let from_base = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        file.wal_dir.as_mut().map(from_base);
        file.state.as_mut().map(from_base);
        // Only a value that is a path: a URL with its `//` missing
        // (`s3:bucket/wal`) stays as written, for the refusal that names it.
        if let Some(to) = &mut file.to
            && !to.contains("://")
            && crate::store::settings::url_for(to).is_ok()
            && Path::new(to.as_str()).is_relative()
            && let Some(joined) = base.join(to.as_str()).to_str()
        {
            *to = joined.to_owned();
        }
        Ok(file)
    }

    /// Parses the text of a file; `path` names it in errors, with the line
    /// and column, on one line.
    pub fn parse(source: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut file: ConfigFile = toml::from_str(source).map_err(|e| {
            let at = e.span().map(|span| {
                let before = source.get(..span.start).unwrap_or(source);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                let text = source.lines().nth(line - 1).unwrap_or("").trim();
                format!("line {line}, column {column} (`{text}`): ")
            });
            let message = e.message().trim_end().replace('\n', " ");
            ConfigError::Parse { path: path.to_owned(), message: format!("{}{message}", at.unwrap_or_default()) }
        })?;
        file.source = source.to_owned();
        file.path = path.to_owned();
        Ok(file)
    }

    /// Where `key` is set, for an error about its value: the file and the
    /// line of its first `key =` (with `-` or `_`).
    pub fn place_of(&self, key: &str) -> String {
        let alt = key.replace('-', "_");
        let line = self.source.lines().position(|l| {
            let l = l.trim_start();
            [key, alt.as_str()].iter().any(|k| l.strip_prefix(k).is_some_and(|rest| rest.trim_start().starts_with('=')))
        });
        match line {
            Some(i) => format!("config file {}, line {}", self.path.display(), i + 1),
            None => format!("config file {}", self.path.display()),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.source[..offset.min(self.source.len())].matches('\n').count() + 1
    }

    fn invalid(&self, offset: usize, why: String) -> ConfigError {
        ConfigError::Invalid { path: self.path.clone(), line: self.line_of(offset), why }
    }

    /// The storage options as strings, each key checked against the backend
    /// of `url`: an unknown key is an error naming it and its line.
    pub fn storage_options(&self, url: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::new();
        for (key, value) in &self.storage {
            let offset = value.span().start;
            let text = match value.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(self.invalid(offset, format!("storage option {key:?} must be a string, number or boolean, not {}", other.type_str())))
                }
            };
            match Archive::option_is_known(url, key) {
                Ok(true) => out.push((key.clone(), text)),
                Ok(false) => {
                    return Err(self.invalid(offset, format!("unknown storage option {key:?} for {url}")));
                }
                Err(e) => return Err(self.invalid(offset, e.to_string())),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(text, Path::new("archiver.toml"))
    }

    #[test]
    fn reads_every_option() {
        let f = parse(
            "wal-dir = \"/w\"\nto = \"s3://b/p\"\nstate = \"/s.json\"\nbatch-size = 8\nconcurrency = 2\n\
             delete-after-archive = true\nverify-checksums = false\ninterval = 0.5\nmax-attempts = 3\n\
             retry-base-delay = 0.1\nretry-max-delay = 9\nrequest-retries = 0\n[storage]\naws_region = \"eu-west-1\"\naws_allow_http = true\n",
        )
        .unwrap();
        assert_eq!(f.wal_dir.as_deref(), Some(Path::new("/w")));
        assert_eq!((f.batch_size, f.concurrency, f.max_attempts), (Some(8), Some(2), Some(3)));
        assert_eq!((f.delete_after_archive, f.verify_checksums), (Some(true), Some(false)));
        assert_eq!((f.retry_max_delay, f.request_retries), (Some(9.0), Some(0)));
        let opts = f.storage_options("s3://b/p").unwrap();
        assert_eq!(opts, vec![("aws_allow_http".to_string(), "true".to_string()), ("aws_region".to_string(), "eu-west-1".to_string()),]);
    }

    #[test]
    fn refuses_an_unknown_key_naming_it_and_its_line() {
        let err = parse("to = \"file:///a\"\n\nbatch_sise = 3\n").unwrap_err().to_string();
        assert!(err.contains("archiver.toml") && err.contains("line 3") && err.contains("batch_sise"), "{err}");
    }

    #[test]
    fn says_a_parse_error_on_one_line_with_its_line_and_column() {
        let err = parse("wal-dir = \"w\"\nto = 5\n").unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("archiver.toml: line 2, column 6 (`to = 5`): invalid type: integer `5`, expected a string"), "{err}");
    }

    #[test]
    fn places_a_key_at_its_line() {
        let f = parse("wal-dir = \"w\"\n\n  concurrency = 0\n").unwrap();
        assert!(f.place_of("concurrency").ends_with("archiver.toml, line 3"), "{}", f.place_of("concurrency"));
        let f = parse("metrics_addr = \"x\"\n").unwrap();
        assert!(f.place_of("metrics-addr").ends_with("line 1"), "{}", f.place_of("metrics-addr"));
    }

    #[test]
    fn takes_relative_paths_from_the_files_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archiver.toml");
        std::fs::write(&path, "wal-dir = \"wal\"\nto = \"archive\"\nstate = \"s.json\"\n").unwrap();
        let f = ConfigFile::load(&path).unwrap();
        assert_eq!(f.wal_dir, Some(dir.path().join("wal")));
        assert_eq!(f.state, Some(dir.path().join("s.json")));
        assert_eq!(f.to.as_deref(), dir.path().join("archive").to_str());
        std::fs::write(&path, "wal-dir = \"/w\"\nto = \"s3://b/p\"\n").unwrap();
        let f = ConfigFile::load(&path).unwrap();
        assert_eq!((f.wal_dir, f.to.as_deref()), (Some(PathBuf::from("/w")), Some("s3://b/p")));
        // A URL with its `//` missing is not a path: left for the refusal.
        for typo in ["s3:backups/wal", "s3:/backups/wal", "gs:bucket/wal"] {
            std::fs::write(&path, format!("to = \"{typo}\"\n")).unwrap();
            let f = ConfigFile::load(&path).unwrap();
            assert_eq!(f.to.as_deref(), Some(typo));
            assert!(crate::store::settings::url_for(typo).is_err(), "{typo}");
        }
    }

    #[test]
    fn refuses_a_wrong_type_naming_its_line() {
        let err = parse("concurrency = \"four\"\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("concurrency"), "{err}");
    }

    #[test]
    fn refuses_an_unknown_storage_option_naming_it_and_its_line() {
        let f = parse("to = \"s3://b/p\"\n[storage]\naws_region = \"x\"\naws_regoin = \"y\"\n").unwrap();
        let err = f.storage_options("s3://b/p").unwrap_err().to_string();
        assert!(err.contains("line 4") && err.contains("\"aws_regoin\""), "{err}");
        // Options of another backend are unknown too.
        let f = parse("[storage]\ngoogle_service_account = \"x\"\n").unwrap();
        assert!(f.storage_options("s3://b/p").is_err());
        assert!(f.storage_options("gs://b/p").is_ok());
        let f = parse("[storage]\naws_region = \"x\"\n").unwrap();
        let err = f.storage_options("file:///tmp/a").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
