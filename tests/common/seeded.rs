//! A small seeded generator for the bounded property tests: whatever the input, the
//! parsers answer with a value or an error, never a panic. (No fuzzing engine runs here:
//! cargo-fuzz needs a nightly toolchain; `fuzz/` holds its targets. The seeds make every
//! failure reproducible.)

/// Cases per property: enough to reach the parsers' odd corners, bounded in time.
pub const CASES: usize = 300;

/// A small deterministic generator (64-bit LCG, high bits).
pub struct Seeded(pub u64);

impl Seeded {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }

    pub fn byte(&mut self) -> u8 {
        self.below(256) as u8
    }

    /// `input` with a few random edits: bytes overwritten (often in the first 64, where
    /// headers live), a span cut, random bytes inserted, or the end cut off.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = out.len().max(1);
            match self.below(5) {
                0 | 1 => {
                    let at = if self.below(2) == 0 {
                        self.below(64.min(len))
                    } else {
                        self.below(len)
                    };
                    if at < out.len() {
                        out[at] = self.byte();
                    }
                }
                2 => {
                    let at = self.below(len);
                    let end = (at + self.below(256)).min(out.len());
                    out.drain(at.min(end)..end);
                }
                3 => {
                    let at = self.below(len).min(out.len());
                    let extra: Vec<u8> = (0..self.below(64)).map(|_| self.byte()).collect();
                    out.splice(at..at, extra);
                }
                _ => out.truncate(self.below(len)),
            }
        }
        out
    }
}
