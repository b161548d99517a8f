//! The `bpf(2)` calls of the XDP links: maps (create, update, lookup, delete), loading an XDP
//! program, attaching it to an interface through a BPF link, and running it once on a given
//! frame (`BPF_PROG_TEST_RUN`, for tests). All `unsafe` of BPF is in this file, each block with
//! its SAFETY argument; the programs themselves are built in safe code
//! ([`crate::link::xdp_prog`]).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::link::xdp_prog::Insn;

// Kernel ABI values (linux/bpf.h), spelled out so that they do not depend on which libc version
// exports them.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
#[cfg(all(test, feature = "lab"))]
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_MAP_TYPE_HASH`.
pub(crate) const MAP_HASH: u32 = 1;
/// `BPF_MAP_TYPE_XSKMAP`.
pub(crate) const MAP_XSK: u32 = 17;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = bpf_call(cmd, attr)?;
    // SAFETY: the commands used with this helper return a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bpf_call<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `attr` is the `union bpf_attr` prefix the command reads (a repr(C) struct of the
    // kernel's layout), valid for the call, its size passed; pointers inside it are valid for
    // the lengths given next to them.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, (attr as *mut T).cast::<u8>(), size_of::<T>() as u32)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as libc::c_int) }
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[cfg(all(test, feature = "lab"))]
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so that it is zero: the kernel refuses an attribute with non-zero bytes past
    /// the fields it knows.
    pad: u32,
}

/// A BPF map with fixed key and value sizes.
#[derive(Debug)]
pub(crate) struct Map {
    fd: OwnedFd,
    key: usize,
    value: usize,
}

impl Map {
    /// Creates a map of `map_type` ([`MAP_HASH`], [`MAP_XSK`]).
    pub(crate) fn create(map_type: u32, key: u32, value: u32, entries: u32) -> io::Result<Map> {
        let mut a = MapCreate {
            map_type,
            key_size: key,
            value_size: value,
            max_entries: entries,
            map_flags: 0,
        };
        let fd = bpf(BPF_MAP_CREATE, &mut a)?;
        Ok(Map { fd, key: key as usize, value: value as usize })
    }

    fn elem(&self, key: &[u8], value: u64, flags: u64) -> io::Result<MapElem> {
        if key.len() != self.key {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "wrong BPF map key size"));
        }
        Ok(MapElem {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key.as_ptr() as u64,
            value,
            flags,
        })
    }

    /// Inserts or replaces `key` (`BPF_ANY`).
    pub(crate) fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if value.len() != self.value {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "wrong BPF map value size"));
        }
        let mut a = self.elem(key, value.as_ptr() as u64, 0)?;
        bpf_call(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
    }

    /// Copies the value of `key` into `value`; `Ok(false)` when the key is absent.
    pub(crate) fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        if value.len() != self.value {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "wrong BPF map value size"));
        }
        let mut a = self.elem(key, value.as_mut_ptr() as u64, 0)?;
        match bpf_call(BPF_MAP_LOOKUP_ELEM, &mut a) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key`; `Ok(false)` when it was absent.
    pub(crate) fn delete(&self, key: &[u8]) -> io::Result<bool> {
        let mut a = self.elem(key, 0, 0)?;
        match bpf_call(BPF_MAP_DELETE_ELEM, &mut a) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The map's descriptor (for a program's map loads).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Loads an XDP program; on failure the error carries the verifier's log.
pub(crate) fn load_xdp(insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    load(insns, name, BPF_PROG_TYPE_XDP, BPF_XDP)
}

/// Loads a TC program for the TCX ingress hook; on failure the error carries the verifier's
/// log.
pub(crate) fn load_tcx_ingress(insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    load(insns, name, BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_INGRESS)
}

fn load(insns: &[Insn], name: &str, prog_type: u32, attach: u32) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut a = ProgLoad {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: attach,
    };
    match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            // Load again with the verifier's log, for an error that says why.
            let mut log = vec![0u8; 1 << 20];
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut a);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            // The end of the log says where and why the verifier stopped.
            let tail: String = text
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            Err(io::Error::new(e.kind(), format!("loading the BPF program {name}: {e}: {tail}")))
        }
    }
}

/// Attaches `prog` to interface `ifindex` through a BPF link (detached when the returned
/// descriptor closes), in generic (socket buffer) mode if `generic`, else the driver's native
/// mode.
pub(crate) fn attach_xdp(prog: &OwnedFd, ifindex: u32, generic: bool) -> io::Result<OwnedFd> {
    let mut a = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: if generic { XDP_FLAGS_SKB_MODE } else { 0 },
    };
    bpf(BPF_LINK_CREATE, &mut a)
        .map_err(|e| io::Error::new(e.kind(), format!("attaching the XDP program: {e}")))
}

/// Attaches `prog` to the TCX ingress hook of interface `ifindex` through a BPF link (detached
/// when the returned descriptor closes). It runs after packet sockets got their copies.
pub(crate) fn attach_tcx_ingress(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    let mut a = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_TCX_INGRESS,
        flags: 0,
    };
    bpf(BPF_LINK_CREATE, &mut a)
        .map_err(|e| io::Error::new(e.kind(), format!("attaching the TCX ingress program: {e}")))
}

/// Runs `prog` once on `frame` (rewritten in place, up to its length) and returns the
/// program's verdict (`XDP_PASS`, `XDP_REDIRECT`, ...). Maps and helpers act as on a real
/// frame, except that a redirect is only decided, not carried out.
#[cfg(all(test, feature = "lab"))]
pub(crate) fn test_run(prog: &OwnedFd, frame: &mut [u8]) -> io::Result<u32> {
    let input = frame.to_vec();
    let mut a = TestRun {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: input.len() as u32,
        data_size_out: frame.len() as u32,
        data_in: input.as_ptr() as u64,
        data_out: frame.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRun::default()
    };
    bpf_call(BPF_PROG_TEST_RUN, &mut a)?;
    Ok(a.retval)
}
