//! Prometheus' XOR chunk encoding (Gorilla): delta-of-delta timestamps and
//! XOR-compressed float values, byte-compatible with Prometheus' `XOR`
//! chunks (so head chunks can be served to remote read as they are).
//!
//! Layout: 2-byte big-endian sample count, then the bit stream: first
//! sample as varint timestamp + 64-bit value; second as uvarint delta +
//! XOR value; then delta-of-delta with the `0`, `10`+14, `110`+17,
//! `1110`+20, `1111`+64 bit buckets and XOR values reusing the previous
//! leading/trailing-zero window when it fits.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Free bits in the last byte (0 when a new byte is needed).
    free: u8,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        if bit {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 1 << (self.free - 1);
        }
        self.free -= 1;
    }

    /// The low `nbits` bits of `value`, most significant first: fills the
    /// partial last byte, then appends the rest as whole bytes at once.
    fn write_bits(&mut self, value: u64, nbits: u8) {
        if nbits == 0 {
            return;
        }
        let mut n = nbits.min(64) as u32;
        let value = if n == 64 { value } else { value & ((1u64 << n) - 1) };
        if self.free > 0 {
            let take = n.min(self.free as u32);
            let chunk = ((value >> (n - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (self.free as u32 - take);
            self.free -= take as u8;
            n -= take;
            if n == 0 {
                return;
            }
        }
        // Byte-aligned now: the remaining low `n` bits, left-aligned.
        let aligned = value << (64 - n);
        let whole = (n / 8) as usize;
        let rem = n % 8;
        let len = whole + usize::from(rem > 0);
        self.bytes.extend_from_slice(&aligned.to_be_bytes()[..len]);
        self.free = if rem > 0 { (8 - rem) as u8 } else { 0 };
    }

    fn write_byte(&mut self, b: u8) {
        self.write_bits(b as u64, 8);
    }
}

/// Reads bits most significant first through a 64-bit buffer.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// Next byte of `bytes` to load into `buf`.
    next: usize,
    /// Unread bits, left-aligned.
    buf: u64,
    /// How many bits of `buf` are unread.
    n: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, next: 0, buf: 0, n: 0 }
    }

    fn refill(&mut self) {
        while self.n <= 56 && self.next < self.bytes.len() {
            self.buf |= (self.bytes[self.next] as u64) << (56 - self.n);
            self.n += 8;
            self.next += 1;
        }
    }

    fn read_bit(&mut self) -> Option<bool> {
        self.read_bits(1).map(|b| b == 1)
    }

    /// `nbits` (≤ 64) bits, most significant first.
    fn read_bits(&mut self, nbits: u8) -> Option<u64> {
        let nb = nbits as u32;
        if nb == 0 {
            return Some(0);
        }
        if nb > 56 {
            let hi = self.read_bits(nbits - 32)?;
            let lo = self.read_bits(32)?;
            return Some((hi << 32) | lo);
        }
        if self.n < nb {
            self.refill();
            if self.n < nb {
                return None;
            }
        }
        let v = self.buf >> (64 - nb);
        self.buf <<= nb;
        self.n -= nb;
        Some(v)
    }

    fn read_byte(&mut self) -> Option<u8> {
        self.read_bits(8).map(|b| b as u8)
    }

    fn read_uvarint(&mut self) -> Option<u64> {
        let mut x = 0u64;
        let mut s = 0u32;
        for _ in 0..10 {
            let b = self.read_byte()?;
            if b < 0x80 {
                return Some(x | ((b as u64) << s));
            }
            x |= ((b & 0x7f) as u64) << s;
            s += 7;
        }
        None
    }

    fn read_varint(&mut self) -> Option<i64> {
        let ux = self.read_uvarint()?;
        let mut x = (ux >> 1) as i64;
        if ux & 1 != 0 {
            x = !x;
        }
        Some(x)
    }
}

fn put_uvarint(w: &mut BitWriter, mut x: u64) {
    while x >= 0x80 {
        w.write_byte((x as u8) | 0x80);
        x >>= 7;
    }
    w.write_byte(x as u8);
}

fn put_varint(w: &mut BitWriter, x: i64) {
    let mut ux = (x as u64) << 1;
    if x < 0 {
        ux = !ux;
    }
    put_uvarint(w, ux);
}

fn bit_range(x: i64, nbits: u8) -> bool {
    -((1i64 << (nbits - 1)) - 1) <= x && x <= 1i64 << (nbits - 1)
}

/// An XOR chunk being appended to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XorChunk {
    w: BitWriter,
    num: u16,
    t: i64,
    t_delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
    min_t: i64,
}

impl Default for XorChunk {
    fn default() -> Self {
        XorChunk {
            w: BitWriter { bytes: vec![0, 0], free: 0 },
            num: 0,
            t: 0,
            t_delta: 0,
            v: 0,
            leading: 0xff,
            trailing: 0,
            min_t: 0,
        }
    }
}

impl XorChunk {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn num_samples(&self) -> usize {
        self.num as usize
    }

    pub fn min_time(&self) -> i64 {
        self.min_t
    }

    pub fn max_time(&self) -> i64 {
        self.t
    }

    /// The encoded chunk (Prometheus XOR format).
    pub fn bytes(&self) -> &[u8] {
        &self.w.bytes
    }

    /// Appends a sample; timestamps must increase (the head enforces it).
    pub fn append(&mut self, t: i64, v: f64) {
        let vbits = v.to_bits();
        match self.num {
            0 => {
                put_varint(&mut self.w, t);
                self.w.write_bits(vbits, 64);
                self.min_t = t;
            }
            1 => {
                let delta = t - self.t;
                put_uvarint(&mut self.w, delta as u64);
                self.write_v_delta(vbits);
                self.t_delta = delta;
            }
            _ => {
                let delta = t - self.t;
                let dod = delta - self.t_delta;
                if dod == 0 {
                    self.w.write_bit(false);
                } else if bit_range(dod, 14) {
                    self.w.write_bits(0b10, 2);
                    self.w.write_bits(dod as u64 & ((1 << 14) - 1), 14);
                } else if bit_range(dod, 17) {
                    self.w.write_bits(0b110, 3);
                    self.w.write_bits(dod as u64 & ((1 << 17) - 1), 17);
                } else if bit_range(dod, 20) {
                    self.w.write_bits(0b1110, 4);
                    self.w.write_bits(dod as u64 & ((1 << 20) - 1), 20);
                } else {
                    self.w.write_bits(0b1111, 4);
                    self.w.write_bits(dod as u64, 64);
                }
                self.write_v_delta(vbits);
                self.t_delta = delta;
            }
        }
        self.t = t;
        self.v = vbits;
        self.num += 1;
        let n = self.num.to_be_bytes();
        self.w.bytes[0] = n[0];
        self.w.bytes[1] = n[1];
    }

    fn write_v_delta(&mut self, vbits: u64) {
        let delta = vbits ^ self.v;
        if delta == 0 {
            self.w.write_bit(false);
            return;
        }
        self.w.write_bit(true);
        let mut leading = delta.leading_zeros() as u8;
        let trailing = delta.trailing_zeros() as u8;
        if leading >= 32 {
            leading = 31;
        }
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.w.write_bit(false);
            self.w.write_bits(delta >> self.trailing, 64 - self.leading - self.trailing);
            return;
        }
        self.leading = leading;
        self.trailing = trailing;
        self.w.write_bit(true);
        self.w.write_bits(leading as u64, 5);
        let sigbits = 64 - leading - trailing;
        // 64 significant bits do not fit in 6 bits; 0 stands for 64.
        self.w.write_bits((sigbits & 0x3f) as u64, 6);
        self.w.write_bits(delta >> trailing, sigbits);
    }

    /// All samples of the chunk.
    pub fn samples(&self) -> Vec<(i64, f64)> {
        decode(self.bytes()).unwrap_or_default()
    }
}

/// Decodes an XOR chunk; `None` if the bytes are not a valid chunk.
pub fn decode(bytes: &[u8]) -> Option<Vec<(i64, f64)>> {
    if bytes.len() < 2 {
        return None;
    }
    let num = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    let mut r = BitReader::new(&bytes[2..]);
    let mut out = Vec::with_capacity(num);
    let (mut t, mut t_delta, mut v) = (0i64, 0i64, 0u64);
    let (mut leading, mut trailing) = (0u8, 0u8);
    for i in 0..num {
        if i == 0 {
            t = r.read_varint()?;
            v = r.read_bits(64)?;
        } else {
            if i == 1 {
                t_delta = r.read_uvarint()? as i64;
            } else {
                let mut prefix = 0u8;
                for _ in 0..4 {
                    if !r.read_bit()? {
                        break;
                    }
                    prefix += 1;
                }
                let sz = match prefix {
                    0 => 0,
                    1 => 14,
                    2 => 17,
                    3 => 20,
                    _ => 64,
                };
                let dod = if sz == 0 {
                    0
                } else {
                    let mut bits = r.read_bits(sz)? as i64;
                    if sz != 64 && bits > (1i64 << (sz - 1)) {
                        bits -= 1i64 << sz;
                    }
                    bits
                };
                t_delta += dod;
            }
            t += t_delta;
            // Value.
            if r.read_bit()? {
                if r.read_bit()? {
                    leading = r.read_bits(5)? as u8;
                    let mut sig = r.read_bits(6)? as u8;
                    if sig == 0 {
                        sig = 64;
                    }
                    trailing = 64u8.checked_sub(leading)?.checked_sub(sig)?;
                }
                let sig = 64 - leading - trailing;
                let bits = r.read_bits(sig)?;
                v ^= bits << trailing;
            }
        }
        out.push((t, f64::from_bits(v)));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_regular_and_irregular_samples() {
        let mut c = XorChunk::new();
        let mut want = Vec::new();
        let mut t = 1_700_000_000_000i64;
        let vals = [
            0.0,
            1.0,
            1.0,
            2.5,
            -3.25,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e-300,
            42.0,
            f64::from_bits(0x7ff0_0000_0000_0002),
        ];
        for (i, step) in [15_000i64, 15_000, 15_001, 14_999, 30_000, 1, 5_000_000, 100_000_000_000, 15_000, 15_000]
            .iter()
            .enumerate()
        {
            t += step;
            c.append(t, vals[i]);
            want.push((t, vals[i]));
        }
        let got = c.samples();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.0, w.0);
            assert_eq!(g.1.to_bits(), w.1.to_bits(), "value bits preserved (stale NaN included)");
        }
        assert_eq!(c.min_time(), want[0].0);
        assert_eq!(c.max_time(), want.last().unwrap().0);
    }

    #[test]
    fn round_trips_pseudo_random_bit_patterns() {
        // Values and timestamp jitter that exercise every bit-width branch.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50 {
            let mut c = XorChunk::new();
            let mut want = Vec::new();
            let mut t = (next() % 1_000_000_000_000) as i64;
            for k in 0..120 {
                t += match next() % 4 {
                    0 => 15_000,
                    1 => (next() % 100_000) as i64,
                    2 => (next() % (1 << 40)) as i64,
                    _ => 1,
                };
                let v = match (k + next() as usize) % 5 {
                    0 => f64::from_bits(next()),
                    1 => (next() % 1000) as f64,
                    2 => want.last().map(|w: &(i64, f64)| w.1).unwrap_or(0.0),
                    3 => f64::from_bits(next() & 0xffff_0000_0000_0000),
                    _ => f64::from_bits(next() & 0x0000_0000_ffff_ffff),
                };
                c.append(t, v);
                want.push((t, v));
            }
            let got = c.samples();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.0, g.1.to_bits()), (w.0, w.1.to_bits()));
            }
        }
    }

    #[test]
    fn regular_counter_compresses_well() {
        let mut c = XorChunk::new();
        for i in 0..120 {
            c.append(1_700_000_000_000 + i * 15_000, (i * 3) as f64);
        }
        // Prometheus averages ~1.3 bytes/sample on such data.
        assert!(c.bytes().len() < 120 * 3, "{} bytes", c.bytes().len());
        assert_eq!(c.samples().len(), 120);
    }

    #[test]
    fn matches_prometheus_bytes_for_a_known_chunk() {
        // Two samples: t=1000,v=1; t=2000,v=1 → varint(1000)=0xd0 0x0f, 64 bits of 1.0,
        // uvarint(1000)=0xe8 0x07, '0' bit for the unchanged value.
        let mut c = XorChunk::new();
        c.append(1000, 1.0);
        c.append(2000, 1.0);
        let mut want = vec![0x00, 0x02, 0xd0, 0x0f];
        want.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
        want.extend_from_slice(&[0xe8, 0x07, 0x00]);
        assert_eq!(c.bytes(), want.as_slice());
    }
}
