//! Log output for programs built on slb (feature `logging`): the example binaries use it, and an
//! embedder's own `main` may too.
//!
//! Every slb crate logs through `tracing`. [`init`] installs a subscriber that writes to
//! standard error, filtered by the `RUST_LOG` environment variable (`info` when unset; for
//! example `RUST_LOG=slb_l7=debug,info`), in one of two formats:
//! - [`LogFormat::Text`]: one human-readable line per event, coloured only when standard error
//!   is a terminal (a file or a pipe gets no escape codes);
//! - [`LogFormat::Json`]: one JSON object per line (`timestamp`, `level`, `target`, `fields`),
//!   for log collectors.
//!
//! ```
//! use slb::logging::LogFormat;
//! let format: LogFormat = "json".parse().unwrap();
//! assert_eq!(format, LogFormat::Json);
//! assert!("xml".parse::<LogFormat>().is_err());
//! ```

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines (`--log-format text`, the default).
    #[default]
    Text,
    /// One JSON object per line (`--log-format json`).
    Json,
}

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A log format name that is neither `text` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error("unknown log format {0:?} (expected text or json)")]
pub struct UnknownLogFormat(String);

/// Why [`init`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// `RUST_LOG` is set but is not a valid filter.
    #[error("RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::FromEnvError),
    /// A global subscriber was installed before.
    #[error("a log subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the process's log subscriber: standard error, `RUST_LOG` filter (default `info`),
/// in `format`. Call it once, early in `main`.
pub fn init(format: LogFormat) -> Result<(), InitError> {
    let filter = match std::env::var_os(EnvFilter::DEFAULT_ENV) {
        Some(_) => EnvFilter::try_from_default_env()?,
        None => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    installed.map_err(|_| InitError::AlreadyInstalled)
}
