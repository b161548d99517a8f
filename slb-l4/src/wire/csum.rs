//! Internet checksum arithmetic: incremental updates (RFC 1624) and full sums.
//!
//! All values are 16-bit words as read big-endian from the packet; the one's complement sum
//! does not depend on byte order as long as it is used consistently.

/// Folds a 32-bit accumulator into 16 bits with end-around carry.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// An incremental checksum update in progress (RFC 1624, equation 3:
/// `HC' = ~(~HC + ~m + m')`), accumulating any number of changed words.
#[derive(Clone, Copy, Debug)]
pub struct Update {
    acc: u32,
}

impl Update {
    /// Starts from the checksum field's current value.
    #[inline(always)]
    pub fn new(checksum: u16) -> Self {
        Update { acc: u32::from(!checksum) }
    }

    /// One 16-bit word changed from `old` to `new`.
    #[inline(always)]
    pub fn word(mut self, old: u16, new: u16) -> Self {
        self.acc += u32::from(!old) + u32::from(new);
        self.acc = u32::from(fold(self.acc));
        self
    }

    /// A 32-bit value (an IPv4 address) changed.
    #[inline(always)]
    pub fn u32(self, old: u32, new: u32) -> Self {
        self.word((old >> 16) as u16, (new >> 16) as u16).word(old as u16, new as u16)
    }

    /// A byte string of even length changed (an IPv6 address); words beyond the shorter
    /// string are ignored.
    #[inline]
    pub fn bytes(mut self, old: &[u8], new: &[u8]) -> Self {
        for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
            self = self.word(u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([n[0], n[1]]));
        }
        self
    }

    /// The new checksum field value.
    #[inline(always)]
    pub fn finish(self) -> u16 {
        !fold(self.acc)
    }
}

/// The one's complement sum (not complemented) of `data`, odd lengths padded with zero.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    smoltcp::wire::checksum::data(data)
}

/// Combines partial sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    smoltcp::wire::checksum::combine(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(data: &[u8]) -> u16 {
        !sum(data)
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        let c0 = full(&data);
        let old = u32::from_be_bytes(data[12..16].try_into().unwrap());
        let new: u32 = 0x0a00_0264;
        data[12..16].copy_from_slice(&new.to_be_bytes());
        let old_w = u16::from_be_bytes([data[20], data[21]]);
        data[20..22].copy_from_slice(&0xbeefu16.to_be_bytes());
        let inc = Update::new(c0).u32(old, new).word(old_w, 0xbeef).finish();
        assert_eq!(inc, full(&data));
        let mut v6 = data.clone();
        v6[0..16].copy_from_slice(&[0xfe; 16]);
        let c1 = full(&data);
        assert_eq!(Update::new(c1).bytes(&data[0..16], &v6[0..16]).finish(), full(&v6));
    }

    #[test]
    fn fold_carries_twice() {
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_ffff), 0x0001);
    }
}
