//! The mutation engine: byte-level mutations (bit flips, byte replacements, interesting
//! integers at offsets, truncation, deletion, insertion, splicing with another seed) and
//! the structure-aware ones the targets build on (numbers in embedded JSON). Everything is
//! drawn from one seeded generator, so a case is reproduced from its seed alone.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sizes, counts and bit patterns at the edges: what overflows, divides by zero or asks for
/// all the memory there is.
pub const INTERESTING: [u64; 30] = [
    0,
    1,
    2,
    3,
    7,
    8,
    16,
    31,
    32,
    64,
    127,
    128,
    255,
    256,
    1000,
    1024,
    4096,
    32767,
    32768,
    65535,
    65536,
    100_000,
    1 << 24,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

/// A seeded source of mutations.
pub struct Mutator {
    rng: ChaCha8Rng,
}

impl Mutator {
    /// The mutator for case `case` of a run seeded with `seed`: cases are independent, so
    /// any one can be replayed without the others.
    pub fn new(seed: u64, case: u64) -> Mutator {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(case);
        Mutator { rng }
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.rng.random_range(0..n) }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// One of [`INTERESTING`], sometimes negated or off by one.
    pub fn interesting(&mut self) -> i128 {
        let v = i128::from(INTERESTING[self.below(INTERESTING.len())]);
        match self.below(6) {
            0 => -v,
            1 => v + 1,
            2 => v - 1,
            _ => v,
        }
    }

    /// `input` with one to four byte-level mutations stacked; `others` are the seeds a
    /// splice takes its tail from.
    pub fn bytes(&mut self, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
        let mut data = input.to_vec();
        for _ in 0..1 + self.below(4) {
            self.byte_mutation(&mut data, others);
        }
        data
    }

    fn byte_mutation(&mut self, data: &mut Vec<u8>, others: &[Vec<u8>]) {
        let len = data.len();
        match self.below(8) {
            0 if len > 0 => {
                let at = self.below(len);
                data[at] ^= 1 << self.below(8);
            }
            1 if len > 0 => {
                let at = self.below(len);
                data[at] = self.rng.random();
            }
            2 if len > 0 => {
                // An interesting integer, little- or big-endian, of 1, 2, 4 or 8 bytes.
                let width = [1, 2, 4, 8][self.below(4)];
                let at = self.below(len);
                let value = self.interesting() as u64;
                let bytes =
                    if self.chance(0.8) { value.to_le_bytes() } else { value.to_be_bytes() };
                let end = (at + width).min(len);
                let from = if self.chance(0.8) { 0 } else { 8 - width };
                data[at..end].copy_from_slice(&bytes[from..from + end - at]);
            }
            3 if len > 0 => data.truncate(self.below(len)),
            4 if len > 1 => {
                let at = self.below(len);
                let n = 1 + self.below((len - at).min(64));
                data.drain(at..at + n);
            }
            5 => {
                let at = self.below(len + 1);
                let n = 1 + self.below(32);
                let fill: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                data.splice(at..at, fill);
            }
            6 if len > 1 => {
                // A block of the input copied over another place in it.
                let (from, to) = (self.below(len), self.below(len));
                let n = 1 + self.below((len - from).min(len - to).min(256));
                data.copy_within(from..from + n, to);
            }
            _ => {
                // A splice: this input's head, another seed's tail.
                let Some(other) = others.get(self.below(others.len())) else { return };
                let head = self.below(len + 1);
                let tail = self.below(other.len() + 1);
                data.truncate(head);
                data.extend_from_slice(&other[tail..]);
            }
        }
    }

    /// `text` with one of its numbers (a run of digits) replaced by an interesting one;
    /// `None` if it has none.
    pub fn json_number(&mut self, text: &str) -> Option<String> {
        let runs = digit_runs(text.as_bytes());
        let &(start, end) = runs.get(self.below(runs.len()))?;
        let mut out = text[..start].to_string();
        out.push_str(&self.interesting().to_string());
        out.push_str(&text[end..]);
        Some(out)
    }

    /// `bytes` with the digits of one of its numbers replaced by as many other digits, so
    /// the offsets of a binary container around embedded text stay valid.
    pub fn same_length_number(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let runs = digit_runs(bytes);
        let &(start, end) = runs.get(self.below(runs.len()))?;
        let mut out = bytes.to_vec();
        let max = self.chance(0.5);
        for b in &mut out[start..end] {
            *b = if max { b'9' } else { b'0' + self.below(10) as u8 };
        }
        Some(out)
    }
}

/// Where the runs of ASCII digits are in `bytes`, as `(start, end)`.
fn digit_runs(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in bytes.iter().enumerate().chain([(bytes.len(), &b' ')]) {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    runs
}
