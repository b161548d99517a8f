//! The cluster lab: a director dying or being hot-upgraded loses no established connection.
//!
//! Builds clients, an ECMP router, three directors and several real servers in network
//! namespaces, streams verified bytes over long-lived TCP connections through the VIP, runs a
//! scenario, prints a report ending in one JSON line, and tears everything down (also on failure
//! or Ctrl-C). Needs root.
//!
//! ```text
//! cargo build --release --features lab --examples
//! sudo target/release/examples/cluster_lab --scenario kill --mode fullnat
//! ```

mod directors;
mod streams;
mod topo;
mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use slb::l4::lab::{Lab, in_addr_errors, in_netns, wait_until};

use directors::Directors;
use streams::spawn_streams;
use topo::{Mode, VIP, VPORT};
use traffic::StreamParams;

/// Most transit frames a surviving director's kernel may see in a run (see `run`).
const TRANSIT_LEAKS_MAX: u64 = 1000;

#[derive(Parser, Debug)]
#[command(
    about = "slb cluster lab: failover and hot upgrade without losing connections",
    long_about = "slb cluster lab: three l4_director processes (with session sync) behind an \
                  ECMP router in network namespaces, real servers and clients, long-lived TCP \
                  streams whose bytes every client checks. Builds the lab, runs one scenario, \
                  prints a report (its last line is JSON) and removes everything, also on \
                  failure or Ctrl-C. Needs root, and l4_director built next to this binary \
                  (cargo build --release --features lab --example cluster_lab --example \
                  l4_director). Exits non-zero when a goal is missed."
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// What happens to the cluster while the streams run.
    #[arg(long, value_enum, default_value = "kill")]
    scenario: Scenario,
    /// Forwarding mode.
    #[arg(long, value_enum, default_value = "fullnat")]
    mode: ModeArg,
    /// Long-lived connections to keep open through the scenario.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Extra connections opened right after the failure (they may retry twice).
    #[arg(long, default_value_t = 20)]
    late_connections: usize,
    /// Client namespaces the connections are spread over.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Real servers.
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// Bytes per second each server sends per connection.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Servers write every this many milliseconds (the resolution of the stall figures; larger
    /// values mean fewer packets, for unoptimized builds).
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Delay between a director's death and the router withdrawing it (BFD detection time).
    #[arg(long, default_value_t = 300)]
    detect_ms: u64,
    /// Which dataplane runs on the directors: slb, or the kernel (iptables DNAT, no sync: a
    /// baseline that shows what is lost without session sync).
    #[arg(long, value_enum, default_value = "slb")]
    director: DirectorKind,
    /// The slb directors' link (l4_director's `link`: batched, ring, xdp, xdp-generic, pnet).
    #[arg(long, default_value = "batched")]
    link: String,
    /// The slb directors' XDP flow cache (l4_director's `offload`; with --link xdp-generic).
    #[arg(long)]
    offload: bool,
    /// Stream for this long after the scenario's last action, to show the survivors keep going.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// (internal) a stream server, run inside a server namespace.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        tick_ms: u64,
        #[arg(long)]
        id: u8,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Scenario {
    /// SIGKILL one director; the router withdraws it after --detect-ms.
    Kill,
    /// Stop and restart every director in turn, each resyncing before it rejoins.
    Upgrade,
    /// Kill a director and a real server.
    ServerFail,
    /// Nothing happens: the control for stall figures.
    Steady,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Kill => "kill",
            Scenario::Upgrade => "upgrade",
            Scenario::ServerFail => "server-fail",
            Scenario::Steady => "steady",
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Fullnat,
    Dr,
    Nat,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum DirectorKind {
    Slb,
    Kernel,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Serve { listen, rate, tick_ms, id }) = args.cmd {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        return rt.block_on(traffic::serve(
            listen,
            rate,
            Duration::from_millis(tick_ms.max(1)),
            id,
        ));
    }
    let mode = match args.mode {
        ModeArg::Fullnat => Mode::FullNat,
        ModeArg::Dr => Mode::Dr,
        ModeArg::Nat => Mode::Nat,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc_hook(move || stop.store(true, Ordering::SeqCst));
    }
    let report = run(&args, mode, &stop)?;
    println!("{}", report.json);
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}

/// Sets SIGINT/SIGTERM to call `f` once (the lab is torn down by `Drop` on the way out).
fn ctrlc_hook(f: impl Fn() + Send + Sync + 'static) {
    let f = Arc::new(f);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            f();
        }
    });
}

struct Report {
    json: String,
    ok: bool,
}

fn run(args: &Args, mode: Mode, stop: &AtomicBool) -> anyhow::Result<Report> {
    let mut lab = Lab::new("cl")?;
    let n_dir = if mode == Mode::Nat { 2 } else { 3 };
    let topo = topo::build(&mut lab, mode, args.clients, n_dir, args.servers)?;
    eprintln!(
        "lab: {} clients, {} directors, {} servers, mode {}",
        args.clients,
        n_dir,
        args.servers,
        mode.name()
    );

    let exe = std::env::current_exe()?;
    let mut server_procs = Vec::new();
    for (i, s) in topo.servers.iter().enumerate() {
        let listen = format!("0.0.0.0:{VPORT}");
        let p = lab.spawn(
            s,
            &[
                exe.as_os_str(),
                "serve".as_ref(),
                "--listen".as_ref(),
                listen.as_ref(),
                "--rate".as_ref(),
                args.rate.to_string().as_ref(),
                "--tick-ms".as_ref(),
                args.tick_ms.to_string().as_ref(),
                "--id".as_ref(),
                (i as u8 + 1).to_string().as_ref(),
            ],
            None,
        )?;
        server_procs.push(p);
    }
    for i in 0..topo.servers.len() {
        let addr = SocketAddr::from((topo::server_ip(i), VPORT));
        let up = wait_until(Duration::from_secs(10), || {
            in_netns(topo.rt.name(), move || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .unwrap_or(false)
        });
        anyhow::ensure!(up, "server {addr} did not come up");
    }

    let mut dirs = Directors::new(n_dir)?;
    for i in 0..n_dir {
        directors::start(&mut lab, &topo, args, mode, i, &mut dirs)?;
    }
    if args.director == DirectorKind::Slb {
        for i in 0..n_dir {
            anyhow::ensure!(
                directors::wait_ready(&topo, i, Duration::from_secs(20)),
                "d{} never became ready (log: {})",
                i + 1,
                dirs.dir.join(format!("d{}.log", i + 1)).display()
            );
        }
        anyhow::ensure!(
            directors::wait_settled(&topo, mode, n_dir, Duration::from_secs(20)),
            "the directors' addresses did not settle within 20 s (logs in {})",
            dirs.dir.display()
        );
        eprintln!("directors ready");
    }
    let vip = SocketAddr::from((VIP, VPORT));
    let c0 = topo.clients[0].name().to_owned();
    let ready = wait_until(Duration::from_secs(30), || {
        let c0 = c0.clone();
        in_netns(&c0, move || {
            std::net::TcpStream::connect_timeout(&vip, Duration::from_millis(300)).is_ok()
        })
        .unwrap_or(false)
    });
    anyhow::ensure!(ready, "the VIP did not answer within 30 s");
    eprintln!("cluster ready");

    // Streams: established first, then the scenario, then the settle period.
    let progress = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let base = StreamParams {
        vip,
        retries: 0,
        retry_delay: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(3),
        measure_from: Arc::new(std::sync::OnceLock::new()),
        stop: stop_rx,
        progress: Arc::clone(&progress),
        flowing: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    let streams = spawn_streams(&topo, args.connections, 0, &base);
    // Wait until every stream has delivered bytes (connected and verified).
    let all_flowing = wait_until(Duration::from_secs(20), || streams.flowing() >= args.connections);
    if !all_flowing {
        let flowing = streams.flowing();
        let _ = stop_tx.send(true);
        for r in streams.join().iter().filter(|r| r.error.is_some()).take(10) {
            eprintln!(
                "  stream {} (server {:?}): {}",
                r.id,
                r.server,
                r.error.as_deref().unwrap_or("")
            );
        }
        anyhow::bail!("only {flowing} of {} streams flowing", args.connections);
    }
    eprintln!("{} streams flowing after {:?}", args.connections, t0.elapsed());
    directors::wait_synced(&topo, args, &dirs, args.connections)?;

    // Stalls count from the first failure on (the setup ramp is not a failover stall). The
    // measuring start is shared through the params of the streams already running.
    let failure_at = Instant::now();
    let _ = base.measure_from.set(failure_at);
    let mut resync_ms = 0u64;
    let mut late = None;
    match args.scenario {
        Scenario::Kill | Scenario::ServerFail => {
            let victim = 0;
            if args.scenario == Scenario::ServerFail {
                lab.kill(&server_procs[0]);
                eprintln!("killed server s1");
            }
            // Late connections open right after the failure, while the router still sends some
            // of them to the dead director (their SYNs are retransmitted). One may also first
            // reach the dead server (refused until the health checks take it out, ~0.6 s,
            // longer on a loaded machine): it retries twice, a second apart, as a client would.
            let late_params = StreamParams { retries: 2, ..base.clone() };
            directors::kill(
                &mut lab,
                &topo,
                mode,
                victim,
                &mut dirs,
                Duration::from_millis(args.detect_ms),
                || {
                    late = Some(spawn_streams(
                        &topo,
                        args.late_connections,
                        args.connections as u32,
                        &late_params,
                    ))
                },
            )?;
        }
        Scenario::Steady => {}
        Scenario::Upgrade => {
            for i in 0..n_dir {
                let resync = directors::upgrade(&mut lab, &topo, args, mode, i, &mut dirs)?;
                resync_ms = resync_ms.max(resync.as_millis() as u64);
                let before = progress.load(Ordering::Relaxed);
                anyhow::ensure!(
                    wait_until(Duration::from_secs(5), || progress.load(Ordering::Relaxed)
                        > before),
                    "no bytes flowing after upgrading d{}",
                    i + 1
                );
            }
        }
    }
    let settle_until = Instant::now() + Duration::from_secs(args.settle_secs);
    while Instant::now() < settle_until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = stop_tx.send(true);
    let mut offloaded = 0;
    let mut transit_leaks = 0;
    if args.director == DirectorKind::Slb {
        for i in (0..n_dir).filter(|&i| dirs.procs[i].is_some()) {
            // The AF_PACKET links' transit filter (on by default) keeps the frames a director
            // forwards out of its kernel's IP stack, which would count each in InAddrErrors
            // (forwarding is off); an unreadable count fails the run.
            if !args.link.starts_with("xdp") {
                let n = in_addr_errors(&topo.directors[i]).unwrap_or(u64::MAX);
                eprintln!("d{}: {n} frames reached its kernel's IP stack (InAddrErrors)", i + 1);
                transit_leaks = transit_leaks.max(n);
            }
            let Some((_, m)) = directors::http_get(&topo, i, "/metrics") else { continue };
            let drops: Vec<&str> = m
                .lines()
                .filter(|l| l.starts_with("slb_l4_drops_total") && !l.ends_with(" 0"))
                .collect();
            let synced = directors::metric(&m, "slb_cluster_sessions_synced").unwrap_or(0);
            eprintln!("d{}: {synced} synced sessions unclaimed, drops {drops:?}", i + 1);
            if args.offload {
                let n = directors::metric(&m, "slb_l4_offloaded_total").unwrap_or(0);
                eprintln!("d{}: {n} packets forwarded by the XDP flow cache", i + 1);
                offloaded += n;
            }
        }
    }
    let mut reports = streams.join();
    let late_reports = late.map(streams::Streams::join).unwrap_or_default();
    reports.sort_by_key(|r| r.id);

    let failed_server = (args.scenario == Scenario::ServerFail).then_some(1u8);
    let expected_lost =
        reports.iter().filter(|r| failed_server.is_some() && r.server == failed_server).count();
    let survived = reports.iter().filter(|r| r.error.is_none()).count();
    let bytes: u64 = reports.iter().chain(&late_reports).map(|r| r.bytes_verified).sum();
    let mut stalls: Vec<Duration> =
        reports.iter().filter(|r| r.error.is_none()).map(|r| r.max_stall).collect();
    stalls.sort_unstable();
    let max_stall = stalls.last().copied().unwrap_or_default();
    if !stalls.is_empty() {
        let q = |p: usize| stalls[(stalls.len() - 1) * p / 100].as_millis();
        eprintln!("stalls (ms): p50 {} p90 {} p99 {} max {}", q(50), q(90), q(99), q(100));
    }
    let late_ok = late_reports.iter().filter(|r| r.error.is_none() && r.bytes_verified > 0).count();
    let failed = reports.iter().filter(|r| r.error.is_some()).take(10);
    for r in failed.chain(late_reports.iter().filter(|r| r.error.is_some())) {
        eprintln!(
            "  stream {} (server {:?}, {} B): {}",
            r.id,
            r.server,
            r.bytes_verified,
            r.error.as_deref().unwrap_or("")
        );
    }
    eprintln!(
        "scenario {} mode {}: {survived}/{} survived ({expected_lost} on the failed server), late {late_ok}/{}, max stall {:?}, {} MB verified",
        args.scenario.name(),
        mode.name(),
        reports.len(),
        late_reports.len(),
        max_stall,
        bytes / 1_000_000
    );
    let ok = survived + expected_lost == reports.len()
        && late_ok == late_reports.len()
        && max_stall < Duration::from_secs(1)
        && reports
            .iter()
            .filter(|r| r.server == failed_server && failed_server.is_some())
            .all(|r| r.error.is_some())
        // With --offload the surviving directors' caches must have carried traffic.
        && (!args.offload || offloaded > 0)
        // 0 in every lab_cluster run, upgrades included; 29 492 in a kill/nat run without
        // the filter.
        && transit_leaks < TRANSIT_LEAKS_MAX;
    let json = format!(
        "{{\"scenario\":\"{}\",\"mode\":\"{}\",\"connections\":{},\"survived\":{},\"bytes_verified\":{},\"max_stall_ms\":{},\"resync_ms\":{},\"transit_leaks\":{}}}",
        args.scenario.name(),
        mode.name(),
        reports.len(),
        survived,
        bytes,
        max_stall.as_millis(),
        resync_ms,
        transit_leaks
    );
    dirs.ok = ok;
    drop(dirs);
    drop(lab);
    Ok(Report { json, ok })
}
