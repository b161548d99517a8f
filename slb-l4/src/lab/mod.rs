//! A small network-namespace lab for root-only tests and examples (feature `lab`).
//!
//! Every namespace a [`Lab`] creates is named `<prefix>-<name>` where the prefix embeds the
//! creating process's PID and a per-process counter, so concurrent tests never collide, and
//! [`Lab::reap_stale`] can remove namespaces left behind by a process that was killed. Dropping the
//! lab kills every process it spawned (by process group) and deletes its namespaces, also when a
//! test panics. Veth pairs are created directly inside their namespaces, so nothing ever appears
//! in the root namespace.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use slb_l4::lab::Lab;
//! let mut lab = Lab::new("demo")?;
//! let c = lab.netns("c")?;
//! let s = lab.netns("s")?;
//! lab.veth((&c, "eth0", Some("10.9.0.1/24")), (&s, "eth0", Some("10.9.0.2/24")))?;
//! lab.exec(&c, &["ping", "-c1", "-W1", "10.9.0.2"])?;
//! # Ok(())
//! # }
//! ```

mod sys;

use std::ffi::OsStr;
use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use sys::{SIGKILL, SIGTERM, in_netns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespaces created by labs start with this.
pub const PREFIX: &str = "slbt";

/// True when running as root (the lab needs it).
pub fn is_root() -> bool {
    sys::euid() == 0
}

/// Skips a lab test when not root: prints the line CI greps for and returns true.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    println!("LAB-SKIPPED: {test} (needs root for network namespaces)");
    eprintln!("LAB-SKIPPED: {test} (needs root for network namespaces)");
    true
}

/// A network namespace of a lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The namespace's full name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A process started in a lab; killed (with its process group) when the lab drops or when
/// [`Lab::kill`] is called.
#[derive(Debug)]
pub struct Proc {
    /// The process id (also its process group id).
    pub pid: u32,
}

/// Namespaces and processes that are cleaned up on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<Netns>,
    children: Vec<Child>,
}

fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} failed ({}): {}{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

impl Lab {
    /// A new, empty lab. `tag` (a few letters) makes names readable.
    pub fn new(tag: &str) -> io::Result<Lab> {
        if !is_root() {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the lab needs root"));
        }
        Lab::reap_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
        Ok(Lab {
            prefix: format!("{PREFIX}{}x{n}{tag}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
        })
    }

    /// Deletes lab namespaces whose creating process no longer exists.
    pub fn reap_stale() {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(rest) = name.strip_prefix(PREFIX) else { continue };
            let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(pid) = pid.parse::<u32>()
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }

    /// Creates namespace `<prefix>-<name>` with `lo` up.
    pub fn netns(&mut self, name: &str) -> io::Result<Netns> {
        let ns = Netns { name: format!("{}-{name}", self.prefix) };
        run(Command::new("ip").args(["netns", "add", &ns.name]))?;
        self.namespaces.push(ns.clone());
        self.ip(&ns, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n NS args...`.
    pub fn ip(&self, ns: &Netns, args: &[&str]) -> io::Result<Output> {
        run(Command::new("ip").arg("-n").arg(&ns.name).args(args))
    }

    /// Creates a veth pair between two namespaces, brings both ends up and assigns the optional
    /// addresses (CIDR notation). Each end is `(namespace, interface name, address)`.
    pub fn veth(
        &self,
        a: (&Netns, &str, Option<&str>),
        b: (&Netns, &str, Option<&str>),
    ) -> io::Result<()> {
        run(Command::new("ip").args([
            "-n", &a.0.name, "link", "add", a.1, "type", "veth", "peer", "name", b.1, "netns",
            &b.0.name,
        ]))?;
        for (ns, ifname, addr) in [a, b] {
            if let Some(addr) = addr {
                self.ip(ns, &["addr", "add", addr, "dev", ifname])?;
            }
            self.ip(ns, &["link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// Sets an interface's MAC address (before traffic flows).
    pub fn set_mac(&self, ns: &Netns, ifname: &str, mac: &str) -> io::Result<()> {
        self.ip(ns, &["link", "set", ifname, "address", mac]).map(drop)
    }

    /// Creates a bridge in `ns` and brings it up.
    pub fn bridge(&self, ns: &Netns, name: &str) -> io::Result<()> {
        self.ip(ns, &["link", "add", name, "type", "bridge"])?;
        self.ip(ns, &["link", "set", name, "up"]).map(drop)
    }

    /// Enslaves `ifname` to `bridge` in `ns`.
    pub fn attach(&self, ns: &Netns, ifname: &str, bridge: &str) -> io::Result<()> {
        self.ip(ns, &["link", "set", ifname, "master", bridge]).map(drop)
    }

    /// Turns off TSO/GSO/GRO and tx checksum offload on an interface (see LAB-NOTES: AF_PACKET
    /// forwarders otherwise see 64 KB super-frames and partial checksums).
    pub fn no_offloads(&self, ns: &Netns, ifname: &str) -> io::Result<()> {
        self.exec(
            ns,
            &["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off", "tx", "off"],
        )
        .map(drop)
    }

    /// Sets a sysctl inside `ns` (e.g. `net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, ns: &Netns, setting: &str) -> io::Result<()> {
        self.exec(ns, &["sysctl", "-qw", setting]).map(drop)
    }

    /// Runs a command in `ns` to completion; fails on a non-zero exit.
    pub fn exec<S: AsRef<OsStr>>(&self, ns: &Netns, args: &[S]) -> io::Result<Output> {
        run(Command::new("ip").args(["netns", "exec", &ns.name]).args(args))
    }

    /// Runs a shell script in `ns` to completion; fails on a non-zero exit.
    pub fn sh(&self, ns: &Netns, script: &str) -> io::Result<Output> {
        self.exec(ns, &["sh", "-c", script])
    }

    /// Starts a long-running command in `ns`, in its own process group, with output going to
    /// `log` (or discarded). It is killed when the lab drops.
    pub fn spawn<S: AsRef<OsStr>>(
        &mut self,
        ns: &Netns,
        args: &[S],
        log: Option<&std::path::Path>,
    ) -> io::Result<Proc> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]).args(args).stdin(Stdio::null());
        match log {
            Some(path) => {
                let f = std::fs::File::create(path)?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn()?;
        let pid = child.id();
        self.children.push(child);
        Ok(Proc { pid })
    }

    /// Kills a process started by [`Lab::spawn`] (SIGKILL to its process group) and reaps it.
    pub fn kill(&mut self, p: &Proc) {
        self.signal(p, SIGKILL);
        if let Some(i) = self.children.iter().position(|c| c.id() == p.pid) {
            let mut c = self.children.swap_remove(i);
            let _ = c.wait();
        }
    }

    /// Sends a signal (e.g. [`SIGTERM`]) to a spawned process's group.
    pub fn signal(&self, p: &Proc, sig: i32) {
        sys::kill_group(p.pid, sig);
    }

    /// True while a spawned process is running.
    pub fn is_running(&mut self, p: &Proc) -> bool {
        self.children
            .iter_mut()
            .find(|c| c.id() == p.pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `timeout` for a spawned process to exit; true if it did.
    pub fn wait_exit(&mut self, p: &Proc, timeout: Duration) -> bool {
        wait_until(timeout, || !self.is_running(p))
    }
}

/// The kernel's count of IPv4 frames it dropped in namespace `ns` for an address it neither
/// owns nor forwards to (`Ip: InAddrErrors` in its /proc/net/snmp): for an AF_PACKET director,
/// the transit frames its kernel handled after the packet socket's copy.
pub fn in_addr_errors(ns: &Netns) -> io::Result<u64> {
    in_netns(ns.name(), || {
        let text = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
        let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
        let field = ip.next().zip(ip.next()).and_then(|(names, values)| {
            let col = names.split_whitespace().position(|n| n == "InAddrErrors")?;
            values.split_whitespace().nth(col)?.parse().ok()
        });
        field.ok_or_else(|| io::Error::other("no Ip: InAddrErrors in /proc/net/snmp"))
    })?
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; true if it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            sys::kill_group(c.id(), SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_creates_and_removes_namespaces() {
        if skip_unless_root("lab::lab_creates_and_removes_namespaces") {
            return;
        }
        let name;
        {
            let mut lab = Lab::new("selftest").unwrap();
            let a = lab.netns("a").unwrap();
            let b = lab.netns("b").unwrap();
            lab.veth((&a, "eth0", Some("10.77.0.1/24")), (&b, "eth0", Some("10.77.0.2/24")))
                .unwrap();
            lab.exec(&a, &["ping", "-c1", "-W2", "10.77.0.2"]).unwrap();
            let p = lab.spawn(&b, &["sleep", "30"], None).unwrap();
            assert!(lab.is_running(&p));
            let seen = in_netns(a.name(), || {
                std::net::UdpSocket::bind("10.77.0.1:0").map(|s| s.local_addr().is_ok())
            })
            .unwrap();
            assert!(seen.unwrap(), "a socket bound to a's address inside a");
            assert!(std::net::UdpSocket::bind("10.77.0.1:0").is_err(), "not in the root namespace");
            name = a.name().to_owned();
            lab.kill(&p);
            assert!(!lab.is_running(&p));
        }
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains(&name),
            "namespace removed on drop"
        );
    }

    #[test]
    fn in_addr_errors_counts_frames_for_addresses_the_kernel_does_not_own() {
        if skip_unless_root(
            "lab::in_addr_errors_counts_frames_for_addresses_the_kernel_does_not_own",
        ) {
            return;
        }
        let mut lab = Lab::new("addrerr").unwrap();
        let a = lab.netns("a").unwrap();
        let b = lab.netns("b").unwrap();
        lab.veth((&a, "eth0", Some("10.78.0.1/24")), (&b, "eth0", Some("10.78.0.2/24"))).unwrap();
        lab.set_mac(&b, "eth0", "02:00:00:00:78:02").unwrap();
        // a sends to 10.78.0.99 at b's MAC: b neither owns nor forwards (forwarding is off in a
        // new namespace) that address, so its kernel counts each frame.
        lab.ip(
            &a,
            &["neigh", "replace", "10.78.0.99", "lladdr", "02:00:00:00:78:02", "dev", "eth0"],
        )
        .unwrap();
        let before = in_addr_errors(&b).unwrap();
        let _ = lab.exec(&a, &["ping", "-c3", "-i0.2", "-W1", "10.78.0.99"]);
        let after = in_addr_errors(&b).unwrap();
        assert_eq!(after - before, 3, "three echo requests, each counted once");
        lab.exec(&a, &["ping", "-c1", "-W2", "10.78.0.2"]).unwrap();
        assert_eq!(in_addr_errors(&b).unwrap(), after, "a frame for b's own address is not");
    }
}
