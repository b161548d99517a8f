//! Running the proxy as a program (what `examples/l7_proxy.rs` does): worker threads, signals,
//! reloads and binary upgrades.
//!
//! - SIGHUP re-reads the configuration file ([`ProxyHandle::reload_from_file`](crate::ProxyHandle::reload_from_file)); a bad file is
//!   logged and the running configuration stays.
//! - SIGTERM or SIGINT: graceful shutdown (stop accepting, drain up to `server.drain_timeout`).
//! - With `server.upgrade_socket`, a new process started with [`Options::take_over`] receives
//!   the listening sockets ([`crate::upgrade`]); this one then stops accepting, drains and exits.
//!
//! ```no_run
//! use slb_l7::config::Config;
//! use slb_l7::process::{run, Options};
//!
//! let config = Config::from_file("/etc/slb/l7.toml").unwrap();
//! let opts = Options {
//!     config,
//!     config_path: Some("/etc/slb/l7.toml".into()),
//!     workers: 2,
//!     take_over: false,
//!     overrides: None,
//! };
//! run(opts, |w| println!("listening on {:?}", w.local_addrs())).unwrap();
//! ```

use std::io;
use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, ConfigError, ConfigOverrides};
use crate::upgrade::{UpgradeServer, take_over};
use crate::{Proxy, Workers};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The configuration.
    pub config: Config,
    /// Where it came from (SIGHUP and `POST /reload` re-read it).
    pub config_path: Option<PathBuf>,
    /// Worker threads (at least one).
    pub workers: usize,
    /// Take the listening sockets over from the process serving upgrades on
    /// `server.upgrade_socket`, instead of binding them.
    pub take_over: bool,
    /// Applied to `config` and to every configuration reloaded (command-line options).
    pub overrides: Option<ConfigOverrides>,
}

/// Why the program could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration was rejected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A socket, signal or runtime could not be set up, or the takeover failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How the serving ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// A signal asked for shutdown.
    Signal,
    /// A new process took over.
    Upgraded,
}

/// Builds and starts the proxy, calls `on_ready` once it serves, then handles signals and
/// upgrades until it is told to stop; returns after draining.
pub fn run(opts: Options, on_ready: impl FnOnce(&Workers)) -> Result<Ended, RunError> {
    let mut config = opts.config;
    if let Some(o) = &opts.overrides {
        o.apply(&mut config);
    }
    let upgrade_path = config.server.upgrade_socket.clone();
    let drain = config.server.drain_timeout.0;
    let mut builder = Proxy::builder(config);
    if let Some(o) = opts.overrides {
        builder = builder.config_overrides(o);
    }
    if let Some(p) = opts.config_path {
        builder = builder.config_path(p);
    }
    let handoff = if opts.take_over {
        let path = upgrade_path.clone().ok_or_else(|| {
            ConfigError::one(
                "server.upgrade_socket",
                "needed to take over from a running proxy".into(),
            )
        })?;
        let (inherited, handoff) = take_over(&path)?;
        tracing::info!(sockets = ?inherited.roles(), "took over listening sockets");
        builder = builder.inherit(inherited);
        Some(handoff)
    } else {
        None
    };
    let workers = builder.build()?.start_workers(opts.workers)?;
    if let Some(h) = handoff {
        // From here both processes accept on the same sockets until the old one stops.
        h.ready()?;
    }
    on_ready(&workers);
    let handle = workers.handle();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ended = rt.block_on(async {
        let server = upgrade_path.as_deref().map(UpgradeServer::bind).transpose()?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            let handover = async {
                match &server {
                    Some(s) => s.hand_over(workers.sockets(), handle.sticky_key()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup.recv() => {
                    let h = handle.clone();
                    match tokio::task::spawn_blocking(move || h.reload_from_file()).await {
                        Ok(Ok(s)) => tracing::info!(?s, "reloaded on SIGHUP"),
                        Ok(Err(e)) => {
                            // One log line: the error's lines joined.
                            let why = e.to_string().replace('\n', "; ");
                            tracing::error!("reload refused, the running configuration stays: {why}");
                        }
                        Err(e) => tracing::error!("reload failed: {e}"),
                    }
                }
                _ = term.recv() => return Ok::<_, io::Error>(Ended::Signal),
                _ = int.recv() => return Ok(Ended::Signal),
                r = handover => match r {
                    Ok(h) => {
                        workers.stop_accepting();
                        drop(server);
                        if let Err(e) = h.finish() {
                            tracing::warn!("upgrade: could not confirm to the new process: {e}");
                        }
                        return Ok(Ended::Upgraded);
                    }
                    Err(e) => tracing::warn!("upgrade attempt failed, still serving: {e}"),
                },
            }
        }
    })?;
    tracing::info!(?ended, timeout = ?drain, "draining");
    let left = workers.shutdown_graceful(drain);
    if left > 0 {
        tracing::warn!(connections = left, "drain timeout: closed connections still open");
    }
    Ok(ended)
}
