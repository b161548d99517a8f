//! The XDP program of [`crate::link::XdpLink`], assembled here instruction by instruction (no
//! compiler, no libbpf), and the layout of the flow map it shares with
//! [`crate::link::FlowOffload`].
//!
//! ```text
//!   with a flow map: IPv4 without options, not a fragment, TCP without SYN/FIN/RST or UDP,
//!     whose 5-tuple is in `flows`                          -> rewrite (MACs, addresses, ports,
//!                                                             TTL, checksums), count,
//!                                                             bpf_redirect(egress)
//!   not IPv4, too short, multicast, or for one of `hosts`  -> XDP_PASS (the kernel)
//!   otherwise                                              -> the AF_XDP socket of the queue
//! ```
//! The rewrite is the one the user-space step applied to an earlier frame of the same flow
//! (see [`crate::link::offload`]): new MACs, addresses and ports, a TTL decrement, and the two
//! checksum changes as one's-complement deltas (RFC 1624), precomputed per flow.

use std::collections::HashMap;
use std::os::fd::RawFd;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    pub(crate) code: u8,
    regs: u8,
    pub(crate) off: i16,
    pub(crate) imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

/// Verdicts and helpers (linux/bpf.h).
pub(crate) const XDP_PASS: i32 = 2;
/// `XDP_REDIRECT`.
#[cfg(all(test, feature = "lab"))]
pub(crate) const XDP_REDIRECT: i32 = 4;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const FN_MAP_LOOKUP: i32 = 1;
const FN_REDIRECT: i32 = 23;
const FN_REDIRECT_MAP: i32 = 51;

/// The flow map's key: the frame's IPv4 source and destination addresses, source and
/// destination ports (all as on the wire) and the protocol number, padded with zeros.
pub(crate) mod flow_key {
    /// Key bytes.
    pub(crate) const LEN: usize = 16;
    pub(crate) const SRC: usize = 0;
    pub(crate) const DST: usize = 4;
    pub(crate) const PORTS: usize = 8;
    pub(crate) const PROTO: usize = 12;
}

/// The flow map's value: what to write into a matching frame, and counters the program adds to.
pub(crate) mod flow_value {
    /// Value bytes.
    pub(crate) const LEN: usize = 56;
    /// Destination then source MAC (the frame's first 12 bytes).
    pub(crate) const MACS: usize = 0;
    /// New source and destination addresses.
    pub(crate) const ADDRS: usize = 12;
    /// New source and destination ports.
    pub(crate) const PORTS: usize = 20;
    /// IPv4 header checksum delta (a folded one's-complement sum, u32 holding 16 bits).
    pub(crate) const IP_DELTA: usize = 24;
    /// TCP/UDP checksum delta (the same form).
    pub(crate) const L4_DELTA: usize = 28;
    /// Interface to redirect to.
    pub(crate) const IFINDEX: usize = 32;
    /// Bit 0: decrement the TTL (frames with TTL <= 1 then go to user space).
    pub(crate) const FLAGS: usize = 36;
    /// u64: frames forwarded by the program.
    pub(crate) const PACKETS: usize = 40;
    /// u64: their IPv4 total lengths.
    pub(crate) const BYTES: usize = 48;
    /// [`FLAGS`] bit: decrement the TTL.
    pub(crate) const TTL_DEC: u32 = 1;
}

/// A tiny assembler: instructions, labels and jumps to labels (offsets resolved at the end).
#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

// Opcodes used (class | size/op | source).
const MOV_REG: u8 = 0xbf;
const MOV_IMM: u8 = 0xb7;
const ADD_IMM: u8 = 0x07;
const ADD_REG: u8 = 0x0f;
const AND_IMM: u8 = 0x57;
const XOR_IMM: u8 = 0xa7;
const RSH_IMM: u8 = 0x77;
const TO_BE: u8 = 0xdc;
const LDX_B: u8 = 0x71;
const LDX_H: u8 = 0x69;
const LDX_W: u8 = 0x61;
const STX_B: u8 = 0x73;
const STX_H: u8 = 0x6b;
const STX_W: u8 = 0x63;
const ST_W: u8 = 0x62;
const ATOMIC_DW: u8 = 0xdb;
const LD_DW: u8 = 0x18;
const JA: u8 = 0x05;
const JEQ_IMM: u8 = 0x15;
const JEQ32_IMM: u8 = 0x16;
const JNE_IMM: u8 = 0x55;
const JLE_IMM: u8 = 0xb5;
const JGT_REG: u8 = 0x2d;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.code.push(insn(code, dst, src, off, imm));
    }
    fn label(&mut self, name: &'static str) {
        let prev = self.labels.insert(name, self.code.len());
        debug_assert!(prev.is_none(), "label {name} defined twice");
    }
    /// A jump (`code` a conditional or `JA`) to `label`.
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, label: &'static str) {
        self.fixups.push((self.code.len(), label));
        self.op(code, dst, src, 0, imm);
    }
    /// `dst = map` (a two-slot 64-bit load naming the map by descriptor).
    fn ld_map(&mut self, dst: u8, fd: RawFd) {
        self.op(LD_DW, dst, BPF_PSEUDO_MAP_FD, 0, fd);
        self.op(0, 0, 0, 0, 0);
    }
    fn call(&mut self, f: i32) {
        self.op(CALL, 0, 0, 0, f);
    }
    fn exit(&mut self) {
        self.op(EXIT, 0, 0, 0, 0);
    }
    /// `dst = one's-complement update of the checksum in dst by the delta in src`, i.e.
    /// `~fold(~dst + src)` for 16-bit `dst` and `src` (one fold suffices: the sum is at most
    /// 0x1fffe). Clobbers `tmp`.
    fn csum_update(&mut self, dst: u8, src: u8, tmp: u8) {
        self.op(XOR_IMM, dst, 0, 0, 0xffff);
        self.op(ADD_REG, dst, src, 0, 0);
        self.op(MOV_REG, tmp, dst, 0, 0);
        self.op(RSH_IMM, tmp, 0, 0, 16);
        self.op(AND_IMM, dst, 0, 0, 0xffff);
        self.op(ADD_REG, dst, tmp, 0, 0);
        self.op(XOR_IMM, dst, 0, 0, 0xffff);
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, name) in std::mem::take(&mut self.fixups) {
            let target = self.labels[name];
            self.code[at].off = (target as i64 - at as i64 - 1) as i16;
        }
        self.code
    }
}

/// The program, for the maps `hosts` (IPv4 address -> u32: addresses left to the kernel),
/// `xsks` (queue -> AF_XDP socket) and optionally `flows` (see [`flow_key`], [`flow_value`]).
pub(crate) fn program(hosts: RawFd, xsks: RawFd, flows: Option<RawFd>) -> Vec<Insn> {
    let mut a = Asm::default();
    a.op(MOV_REG, 6, 1, 0, 0);
    if let Some(flows) = flows {
        // Cached flows first, so that their frames take one hash lookup, not two. This skips
        // the checks below only for frames they would let through: an entry is made from a
        // frame that reached the socket, so past them, with the same addresses, and `hosts`
        // does not change while the program is attached.
        offload_block(&mut a, flows);
        a.label("slow");
    }
    transit_ipv4(&mut a, 0, 4, hosts);
    // To the AF_XDP socket of this queue (or the kernel if the queue has none).
    a.label("xsk");
    a.op(LDX_W, 2, 6, 16, 0); // ctx->rx_queue_index
    a.ld_map(1, xsks);
    a.op(MOV_IMM, 3, 0, 0, XDP_PASS);
    a.call(FN_REDIRECT_MAP);
    a.exit();
    a.label("pass");
    a.op(MOV_IMM, 0, 0, 0, XDP_PASS);
    a.exit();
    a.finish()
}

/// `TCX_PASS` and `TCX_DROP` (linux/bpf.h).
const TCX_PASS: i32 = 0;
const TCX_DROP: i32 = 2;

/// A TCX ingress program for the AF_PACKET links: it runs after the packet sockets took their
/// copies and drops the frames the director forwards (IPv4 unicast not for one of `hosts`), so
/// that the kernel's IP stack does not handle them a second time (route lookup, error counting,
/// or, with forwarding on, forwarding them too). Everything else passes.
pub(crate) fn transit_drop_program(hosts: RawFd) -> Vec<Insn> {
    let mut a = Asm::default();
    a.op(MOV_REG, 6, 1, 0, 0);
    // `struct __sk_buff`: data at 76, data_end at 80 (at ingress, data is the MAC header).
    transit_ipv4(&mut a, 76, 80, hosts);
    a.op(MOV_IMM, 0, 0, 0, TCX_DROP);
    a.exit();
    a.label("pass");
    a.op(MOV_IMM, 0, 0, 0, TCX_PASS);
    a.exit();
    a.finish()
}

/// With r6 = ctx: jumps to "pass" unless the frame is IPv4 unicast (not multicast, not the
/// limited broadcast) to an address not in `hosts`. `data` and `end` are the context offsets of
/// the frame's start and end.
fn transit_ipv4(a: &mut Asm, data: i16, end: i16, hosts: RawFd) {
    a.op(LDX_W, 2, 6, data, 0);
    a.op(LDX_W, 3, 6, end, 0);
    // Ethernet and an IPv4 header must be there.
    a.op(MOV_REG, 4, 2, 0, 0);
    a.op(ADD_IMM, 4, 0, 0, 34);
    a.jump(JGT_REG, 4, 3, 0, "pass");
    a.op(LDX_H, 4, 2, 12, 0);
    a.jump(JNE_IMM, 4, 0, 0x0008, "pass"); // ethertype != htons(0x0800)
    a.op(LDX_B, 4, 2, 30, 0);
    a.op(AND_IMM, 4, 0, 0, 0xf0);
    a.jump(JEQ_IMM, 4, 0, 0xe0, "pass"); // multicast destination
    a.op(LDX_W, 4, 2, 30, 0);
    a.jump(JEQ32_IMM, 4, 0, -1, "pass"); // 255.255.255.255
    // Addresses of the host itself stay with the kernel.
    a.op(STX_W, 10, 4, -4, 0);
    a.ld_map(1, hosts);
    a.op(MOV_REG, 2, 10, 0, 0);
    a.op(ADD_IMM, 2, 0, 0, -4);
    a.call(FN_MAP_LOOKUP);
    a.jump(JNE_IMM, 0, 0, 0, "pass");
}

/// The flow-map fast path, with r6 = ctx: jumps to "slow" for anything it does not forward
/// itself.
fn offload_block(a: &mut Asm, flows: RawFd) {
    use flow_value as v;
    // r7 = data, r8 = data_end (callee-saved: they survive the map lookup).
    a.op(LDX_W, 7, 6, 0, 0);
    a.op(LDX_W, 8, 6, 4, 0);
    a.op(MOV_REG, 4, 7, 0, 0);
    a.op(ADD_IMM, 4, 0, 0, 34);
    a.jump(JGT_REG, 4, 8, 0, "slow");
    a.op(LDX_H, 4, 7, 12, 0);
    a.jump(JNE_IMM, 4, 0, 0x0008, "slow"); // ethertype != htons(0x0800)
    a.op(LDX_B, 4, 7, 14, 0);
    a.jump(JNE_IMM, 4, 0, 0x45, "slow"); // IPv4 with options
    a.op(LDX_H, 4, 7, 20, 0);
    a.op(AND_IMM, 4, 0, 0, 0xff3f); // MF and the fragment offset, as loaded (little endian)
    a.jump(JNE_IMM, 4, 0, 0, "slow");
    a.op(LDX_B, 4, 7, 23, 0);
    a.jump(JEQ_IMM, 4, 0, 6, "tcp");
    a.jump(JNE_IMM, 4, 0, 17, "slow");
    // UDP: 8 header bytes; r9 = offset of the checksum.
    a.op(MOV_REG, 4, 7, 0, 0);
    a.op(ADD_IMM, 4, 0, 0, 42);
    a.jump(JGT_REG, 4, 8, 0, "slow");
    a.op(MOV_IMM, 9, 0, 0, 40);
    a.op(ST_W, 10, 0, -4, 17);
    a.jump(JA, 0, 0, 0, "key");
    // TCP: 20 header bytes; SYN, FIN and RST (state changes) go to user space.
    a.label("tcp");
    a.op(MOV_REG, 4, 7, 0, 0);
    a.op(ADD_IMM, 4, 0, 0, 54);
    a.jump(JGT_REG, 4, 8, 0, "slow");
    a.op(LDX_B, 4, 7, 47, 0);
    a.op(AND_IMM, 4, 0, 0, 0x07);
    a.jump(JNE_IMM, 4, 0, 0, "slow");
    a.op(MOV_IMM, 9, 0, 0, 50);
    a.op(ST_W, 10, 0, -4, 6);
    // The key at fp-16: addresses, ports, protocol (written above).
    a.label("key");
    a.op(LDX_W, 4, 7, 26, 0);
    a.op(STX_W, 10, 4, -16, 0);
    a.op(LDX_W, 4, 7, 30, 0);
    a.op(STX_W, 10, 4, -12, 0);
    a.op(LDX_W, 4, 7, 34, 0);
    a.op(STX_W, 10, 4, -8, 0);
    a.ld_map(1, flows);
    a.op(MOV_REG, 2, 10, 0, 0);
    a.op(ADD_IMM, 2, 0, 0, -16);
    a.call(FN_MAP_LOOKUP);
    a.jump(JEQ_IMM, 0, 0, 0, "slow");
    // r0 = the value. TTL first: a frame that would expire goes to user space untouched.
    a.op(LDX_W, 4, 0, v::FLAGS as i16, 0);
    a.op(AND_IMM, 4, 0, 0, v::TTL_DEC as i32);
    a.jump(JEQ_IMM, 4, 0, 0, "ipsum");
    a.op(LDX_B, 5, 7, 22, 0);
    a.jump(JLE_IMM, 5, 0, 1, "slow");
    a.op(ADD_IMM, 5, 0, 0, -1);
    a.op(STX_B, 7, 5, 22, 0);
    a.label("ipsum");
    a.op(LDX_H, 4, 7, 24, 0);
    a.op(LDX_W, 5, 0, v::IP_DELTA as i16, 0);
    a.csum_update(4, 5, 3);
    a.op(STX_H, 7, 4, 24, 0);
    // The transport checksum at r3 = data + r9. UDP's zero means "none" and stays zero; a
    // computed zero is sent as 0xffff (RFC 768).
    a.op(MOV_REG, 3, 7, 0, 0);
    a.op(ADD_REG, 3, 9, 0, 0);
    a.op(LDX_H, 4, 3, 0, 0);
    a.jump(JNE_IMM, 9, 0, 40, "l4sum");
    a.jump(JEQ_IMM, 4, 0, 0, "addrs");
    a.label("l4sum");
    a.op(LDX_W, 5, 0, v::L4_DELTA as i16, 0);
    a.csum_update(4, 5, 2);
    a.jump(JNE_IMM, 9, 0, 40, "l4store");
    a.jump(JNE_IMM, 4, 0, 0, "l4store");
    a.op(MOV_IMM, 4, 0, 0, 0xffff);
    a.label("l4store");
    a.op(STX_H, 3, 4, 0, 0);
    // MACs, addresses, ports.
    a.label("addrs");
    for (from, to, size) in [
        (v::MACS, 0, LDX_W),
        (v::MACS + 4, 4, LDX_H),
        (v::MACS + 6, 6, LDX_H),
        (v::MACS + 8, 8, LDX_W),
        (v::ADDRS, 26, LDX_W),
        (v::ADDRS + 4, 30, LDX_W),
        (v::PORTS, 34, LDX_W),
    ] {
        let store = if size == LDX_W { STX_W } else { STX_H };
        a.op(size, 4, 0, from as i16, 0);
        a.op(store, 7, 4, to, 0);
    }
    // Counters (atomic: other CPUs may forward frames of the same flow).
    a.op(MOV_IMM, 4, 0, 0, 1);
    a.op(ATOMIC_DW, 0, 4, v::PACKETS as i16, 0);
    a.op(LDX_H, 4, 7, 16, 0);
    a.op(TO_BE, 4, 0, 0, 16);
    a.op(ATOMIC_DW, 0, 4, v::BYTES as i16, 0);
    a.op(LDX_W, 1, 0, v::IFINDEX as i16, 0);
    a.op(MOV_IMM, 2, 0, 0, 0);
    a.call(FN_REDIRECT);
    a.exit();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_cond_jump(i: &Insn) -> bool {
        matches!(i.code & 0x07, 0x05 | 0x06) && i.code != CALL && i.code != EXIT && i.code != JA
    }

    #[test]
    fn steering_jumps_land_on_the_pass_exit_or_the_socket_redirect() {
        for flows in [None, Some(9)] {
            let p = program(7, 8, flows);
            let pass = p.len() - 2;
            assert_eq!((p[pass].code, p[pass].imm), (MOV_IMM, XDP_PASS), "r0 = XDP_PASS");
            assert_eq!(p[pass + 1].code, EXIT);
            // The socket redirect: the call just before pass's two instructions.
            assert_eq!((p[pass - 2].code, p[pass - 2].imm), (CALL, FN_REDIRECT_MAP));
            let xsk = pass - 6;
            assert_eq!((p[xsk].code, p[xsk].off), (LDX_W, 16), "r2 = ctx->rx_queue_index");
            for (i, ins) in p.iter().enumerate() {
                if is_cond_jump(ins) || ins.code == JA {
                    // (every jump goes forward and stays inside the program)
                    let to = i as i64 + 1 + i64::from(ins.off);
                    assert!(to > i as i64 && (to as usize) < p.len(), "jump at {i} to {to}");
                }
            }
            let maps: Vec<i32> = p.iter().filter(|i| i.code == LD_DW).map(|i| i.imm).collect();
            match flows {
                None => {
                    assert_eq!(maps, [7, 8]);
                    assert_eq!(p.len(), 28, "the plain steering program");
                }
                // The flow map is looked up first.
                Some(f) => assert_eq!(maps, [f, 7, 8]),
            }
        }
    }

    #[test]
    fn the_offload_block_leaves_what_it_does_not_forward_to_the_transit_checks() {
        let p = program(7, 8, Some(9));
        let redirect = p.iter().position(|i| i.code == CALL && i.imm == FN_REDIRECT).unwrap();
        assert_eq!(p[redirect + 1].code, EXIT);
        // The transit checks follow the block: they load data, then data_end, from the ctx.
        let slow = redirect + 2;
        assert_eq!((p[slow].code, p[slow].off, p[slow + 1].off), (LDX_W, 0, 4));
        let hosts = p.iter().position(|i| i.code == LD_DW && i.imm == 7).unwrap();
        assert!(hosts > slow, "the hosts map is looked up after the flow map");
        let mut to_slow = 0;
        for (i, ins) in p[..slow].iter().enumerate() {
            if is_cond_jump(ins) {
                let to = i as i64 + 1 + i64::from(ins.off);
                if to == slow as i64 {
                    to_slow += 1;
                } else {
                    assert!(to < slow as i64, "jump at {i} leaves the block to {to}");
                }
            }
        }
        // Too short, not IPv4, IP options, fragment, other protocol, short UDP, short TCP, TCP
        // flags, no flow, TTL.
        assert_eq!(to_slow, 10);
    }

    #[test]
    fn the_transit_filter_drops_only_after_every_pass_check() {
        let p = transit_drop_program(7);
        let n = p.len();
        assert_eq!((p[n - 4].code, p[n - 4].imm), (MOV_IMM, TCX_DROP));
        assert_eq!((p[n - 2].code, p[n - 2].imm), (MOV_IMM, TCX_PASS));
        let pass = n - 2;
        let mut to_pass = 0;
        for (i, ins) in p.iter().enumerate() {
            if is_cond_jump(ins) {
                assert_eq!(i as i64 + 1 + i64::from(ins.off), pass as i64, "jump at {i}");
                to_pass += 1;
            }
        }
        // Too short, not IPv4, multicast, broadcast, one of the host's addresses.
        assert_eq!(to_pass, 5);
        assert_eq!((p[2].code, p[2].off), (LDX_W, 80), "data_end of the __sk_buff");
    }
}
