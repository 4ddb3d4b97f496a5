//! CRC-32C arithmetic the `crc32c` crate does slowly: combining the checksums of two
//! adjacent byte strings. Its `crc32c_combine` squares 32x32 bit matrices, about 130,000
//! instructions for a 64 KiB second part, more than checksumming the bytes again; here the
//! shift by the second part's length is a product of powers x^(2^k) mod P, a few thousand.

/// CRC-32C's polynomial, bit-reflected.
const POLY: u32 = 0x82f6_3b78;

/// a * b modulo P, both bit-reflected polynomials (bit 31 is x^0).
fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// x^(2^k) mod P for k = 0..64, reflected.
fn x_pow2k() -> &'static [u32; 64] {
    static TABLE: std::sync::OnceLock<[u32; 64]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u32; 64];
        let mut p = 1u32 << 30; // x^1
        for slot in t.iter_mut() {
            *slot = p;
            p = mul_mod_p(p, p);
        }
        t
    })
}

/// x^(8 * len) mod P: appending `len` bytes shifts a checksum's polynomial by this much.
fn x_pow_bytes(len: u64) -> u32 {
    let t = x_pow2k();
    let mut p = 1u32 << 31; // x^0
    // len bytes = len * 8 bits = 2^3 * len.
    let (mut n, mut k) = (len, 3usize);
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod_p(t[k & 63], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The CRC-32C of `A || B` from `crc32c(A)`, `crc32c(B)` and the length of `B`.
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    mul_mod_p(x_pow_bytes(len_b as u64), crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_like_checksumming_the_whole() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        for split in [0, 1, 7, 21, 64, 1000, 4096, 65_536, 69_999, 70_000] {
            let (a, b) = data.split_at(split);
            let whole = crc32c::crc32c(&data);
            assert_eq!(crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len()), whole, "split {split}");
            assert_eq!(
                crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len()),
                crc32c::crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len())
            );
        }
    }
}
