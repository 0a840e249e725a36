//! Lowercase hex for the ids written on every request (request ids, trace context): two digits per byte, by table.

/// Writes `bytes` into `out` as lowercase hex, two digits per byte: `out` is twice as long.
pub fn lower_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_lowercase_digits_per_byte_high_nibble_first() {
        let mut out = [0u8; 8];
        lower_into(&mut out, &[0x00, 0x9f, 0xa0, 0xff]);
        assert_eq!(&out, b"009fa0ff");
    }
}
