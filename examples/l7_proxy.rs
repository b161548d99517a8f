//! slb's HTTP/HTTPS load balancer as a program.
//!
//! ```text
//! cargo run --release --example l7_proxy                 # demo: 127.0.0.1:8080 over 3 local backends
//! cargo run --release --example l7_proxy -- --config slb-l7/l7-proxy.example.toml
//! LISTEN=127.0.0.1:8080 BACKENDS=127.0.0.1:9001,127.0.0.1:9002 WORKERS=2 \
//!     [TLS_CERT=cert.pem TLS_KEY=key.pem] cargo run --release --example l7_proxy
//! ```
//!
//! With no arguments it starts three demo backends on loopback (each answers `ok` with an
//! `X-Backend` header naming itself), health-checks them over HTTP and balances round robin;
//! `/status` and `/metrics` are on 127.0.0.1:9901, the admin API on 127.0.0.1:9902. With LISTEN
//! and BACKENDS set it follows the candidate contract of `benches/compare/l7.sh`: round robin
//! over plain HTTP/1.1 upstreams with keep-alive, WORKERS worker threads, TLS with ALPN h2 and
//! http/1.1 when TLS_CERT/TLS_KEY are set, foreground, exit on SIGTERM.
//!
//! Operations (`slb_l7::process::run`): SIGHUP re-reads `--config` (a bad file is logged and the
//! running configuration stays); SIGTERM or SIGINT drains for `server.drain_timeout` and exits;
//! `--admin 127.0.0.1:9902` (or `[admin] address`) serves the admin API (list, add, remove,
//! drain, re-weight, enable/disable backends; `POST /reload`). Zero-downtime upgrade: run the
//! proxy with `--upgrade-socket PATH` (or `server.upgrade_socket`), then start the new binary
//! with the same options plus `--upgrade`: it receives the listening sockets over PATH, serves,
//! and the old process stops accepting, drains and exits.

use std::convert::Infallible;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use slb::l7::config::{
    BackendConfig, CertConfig, Config, ConfigOverrides, ListenerConfig, ListenerTls, PoolConfig,
};
use slb::l7::process::{Ended, Options, run};
use slb::logging::LogFormat;

#[derive(Parser, Debug)]
#[command(about = "slb L7 proxy: HTTP/1.1, HTTP/2, TLS, health checks, retries, stickiness, \
                   admin API, reload, zero-downtime upgrade")]
struct Args {
    /// TOML configuration file (see slb-l7/l7-proxy.example.toml); SIGHUP re-reads it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Worker threads (0: one per CPU); overrides the configuration.
    #[arg(long)]
    workers: Option<usize>,
    /// Admin API address (loopback unless the configuration sets `allow_remote`); overrides
    /// `[admin] address`.
    #[arg(long)]
    admin: Option<String>,
    /// Unix socket that hands the listening sockets to a new process; overrides
    /// `server.upgrade_socket`.
    #[arg(long)]
    upgrade_socket: Option<PathBuf>,
    /// Take the listening sockets over from the proxy serving on the upgrade socket (which then
    /// drains and exits) instead of binding them.
    #[arg(long)]
    upgrade: bool,
    /// Log lines on stderr as `text` (coloured only on a terminal) or `json` (one object per
    /// line); RUST_LOG filters them (default info, e.g. RUST_LOG=slb_l7=debug).
    #[arg(long, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    slb::logging::init(args.log_format)?;
    let (mut config, demo) = if let Some(path) = &args.config {
        (Config::from_file(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?, false)
    } else if let (Ok(listen), Ok(backends)) = (std::env::var("LISTEN"), std::env::var("BACKENDS"))
    {
        (contract_config(&listen, &backends)?, false)
    } else {
        (Config::default(), true)
    };
    let workers = args
        .workers
        .or_else(|| std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()))
        .unwrap_or(config.server.workers);
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        workers
    };
    // The demo backends get a runtime thread of their own; the proxy runs on its own worker
    // threads (one current-thread runtime each), the main thread handles signals and upgrades.
    let demo_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    if demo {
        config = demo_rt.block_on(demo_config())?;
    }
    // Command-line options override the file, now and on every SIGHUP reload.
    let (admin, upgrade_socket) = (args.admin, args.upgrade_socket);
    let overrides = ConfigOverrides::new(move |cfg| {
        if let Some(a) = &admin {
            cfg.admin.address = Some(a.clone());
        }
        if let Some(p) = &upgrade_socket {
            cfg.server.upgrade_socket = Some(p.clone());
        }
    });
    overrides.apply(&mut config);
    config.validate()?;
    let opts = Options {
        config,
        config_path: args.config,
        workers,
        take_over: args.upgrade,
        overrides: Some(overrides),
    };
    let ended = run(opts, |w| {
        for a in w.local_addrs() {
            tracing::info!("listening on {a} with {workers} worker threads");
        }
        if let Some(a) = w.status_addr() {
            tracing::info!("status on http://{a}/status, metrics on http://{a}/metrics");
        }
        if let Some(a) = w.admin_addr() {
            tracing::info!("admin API on http://{a}/pools");
        }
        if demo {
            println!("try: curl -i http://127.0.0.1:8080/   (Ctrl-C to stop)");
        }
    })?;
    match ended {
        Ended::Upgraded => tracing::info!("a new process took over; drained, exiting"),
        Ended::Signal => tracing::info!("drained, exiting"),
    }
    Ok(())
}

/// The l7-compare.sh candidate contract: LISTEN, BACKENDS, TLS_CERT/TLS_KEY.
fn contract_config(listen: &str, backends: &str) -> anyhow::Result<Config> {
    let backends: Vec<&str> = backends.split(',').filter(|b| !b.is_empty()).collect();
    if backends.is_empty() {
        bail!("BACKENDS is empty");
    }
    let mut cfg = Config::simple(listen, "backends", &backends);
    match (std::env::var_os("TLS_CERT"), std::env::var_os("TLS_KEY")) {
        (Some(cert), Some(key)) => {
            cfg.listeners[0].tls = Some(ListenerTls {
                certificates: vec![CertConfig {
                    cert: cert.into(),
                    key: key.into(),
                    names: Vec::new(),
                }],
            });
        }
        (None, None) => {}
        _ => bail!("set both TLS_CERT and TLS_KEY, or neither"),
    }
    // The benchmark's backends never fail: keep the defaults (passive ejection on, no active checks).
    cfg.validate()?;
    Ok(cfg)
}

/// Three demo backends on loopback and a configuration balancing over them.
async fn demo_config() -> anyhow::Result<Config> {
    let mut backends = Vec::new();
    for i in 1..=3 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        tokio::spawn(demo_backend(l, format!("demo-{i} ({addr})")));
        backends.push(BackendConfig::new(&addr.to_string()));
    }
    let mut pool = PoolConfig { backends, ..PoolConfig::default() };
    pool.health.kind = "http".into();
    pool.health.path = "/healthz".into();
    let mut cfg = Config {
        listeners: vec![ListenerConfig {
            address: "127.0.0.1:8080".into(),
            ..ListenerConfig::default()
        }],
        default_pool: Some("demo".into()),
        ..Config::default()
    };
    cfg.status.address = Some("127.0.0.1:9901".into());
    cfg.admin.address = Some("127.0.0.1:9902".into());
    cfg.pools.insert("demo".into(), pool);
    cfg.validate()?;
    Ok(cfg)
}

async fn demo_backend(listener: tokio::net::TcpListener, name: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let name = name.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = format!("ok from {name}, you asked for {}\n", req.uri());
                    let resp = hyper::Response::builder()
                        .header("X-Backend", name.as_str())
                        .body(Full::new(Bytes::from(body)))
                        .expect("static response");
                    async move { Ok::<_, Infallible>(resp) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
