//! Secrets compared without leaking where they differ.

/// Compares a presented secret with the expected one in time that depends only on their lengths,
/// never on where they first differ: every byte of `expected` is looked at, and a length
/// difference is folded into the same accumulator instead of returning early.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = (given.len() ^ expected.len()) as u64;
    for (i, e) in expected.iter().enumerate() {
        // Past the end of `given` compare against 0; the length term above already differs.
        let g = given.get(i).copied().unwrap_or(0);
        diff |= u64::from(g ^ e);
    }
    std::hint::black_box(diff) == 0
}
