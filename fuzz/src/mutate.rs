//! The mutations of the driver: byte flips, interesting values, insertions, deletions,
//! duplicated and spliced chunks — AFL's havoc stage in small, driven by a seeded xorshift
//! generator so a run is reproducible from its seed.

/// A small, fast, seedable generator (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `bound` (0 when `bound` is 0).
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            return 0;
        }
        usize::try_from(self.next() % (bound as u64)).unwrap_or(0)
    }
}

/// Values that break parsers more often than random bytes do.
const INTERESTING: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'\n', b' ', b'/', b'-', b'=', b'"', b'0',
];

/// Longest input a mutation makes.
pub(crate) const MAX_LEN: usize = 8192;

/// A mutant of `input` (1 to 8 mutations), splicing from `other`.
pub(crate) fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(data.len());
        match rng.below(7) {
            0 if !data.is_empty() => data[at] ^= 1 << rng.below(8),
            1 if !data.is_empty() => data[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 if !data.is_empty() => data[at] = rng.below(256) as u8,
            3 => data.insert(
                at.min(data.len()),
                INTERESTING[rng.below(INTERESTING.len())],
            ),
            4 if !data.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            5 if !data.is_empty() => {
                let end = (at + 1 + rng.below(32)).min(data.len());
                let chunk = data[at..end].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(to..to, chunk);
            }
            _ if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                let to = rng.below(data.len() + 1);
                data.splice(to..to, other[from..end].iter().copied());
            }
            _ => data.push(rng.below(256) as u8),
        }
    }
    data.truncate(MAX_LEN);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutants_differ_and_the_generator_is_reproducible() {
        let seed = b"STREAM abc - stdout\n";
        let mut rng = Rng::new(7);
        let changed = (0..100)
            .filter(|_| mutate(&mut rng, seed, b"other") != seed)
            .count();
        assert!(changed > 90, "only {changed} of 100 mutants differ");
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        assert_eq!(mutate(&mut a, seed, b""), mutate(&mut b, seed, b""));
        assert!(mutate(&mut a, &[0; MAX_LEN], &[1; 64]).len() <= MAX_LEN);
    }
}
