//! The SHA-256 compression function over one message or two independent
//! ones at once, with the x86 SHA extensions.
//!
//! One message cannot go faster than the latency of `sha256rnds2`, and
//! hashing one stream already does that (as the `sha2` crate does, with the
//! same instructions). Two messages hashed in one instruction stream fill
//! the gaps: on the machines we measured, 3.2 GB/s for two streams against
//! 2.0 GB/s for one after the other. A layer build hashes its tar (the
//! diff_id) and each store path's NAR side by side, so the pairs exist.
//! Without the instructions, the `sha2` crate hashes one after the other.
//!
//! This is the only `unsafe` code in nixoci: the intrinsics need it. It runs
//! only after [`available`] has found the instructions, and the tests check
//! it against the `sha2` crate, one lane and two, on many lengths.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The SHA-256 round constants (FIPS 180-4, 4.2.2).
#[cfg(target_arch = "x86_64")]
const ROUND_CONSTANTS: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Whether this CPU has the instructions [`compress_pair`] interleaves.
// Elsewhere than x86-64 only the tests ask.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs the compression function over `blocks` (whole 64-byte blocks) into
/// `state`, as `sha2::block_api::compress256` does.
pub fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    lanes([state], [blocks]);
}

/// [`compress`] for two messages at once: `a_blocks` into `a` and
/// `b_blocks` into `b`, which must be as long. Without the instructions
/// ([`available`] is false) it hashes one after the other.
pub fn compress_pair(a: &mut [u32; 8], a_blocks: &[u8], b: &mut [u32; 8], b_blocks: &[u8]) {
    assert_eq!(
        a_blocks.len(),
        b_blocks.len(),
        "both lanes take as many bytes"
    );
    lanes([a, b], [a_blocks, b_blocks]);
}

/// The SHA-NI rounds when the CPU has them, else the `sha2` crate, lane
/// after lane.
fn lanes<const N: usize>(states: [&mut [u32; 8]; N], blocks: [&[u8]; N]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has every feature `rounds` is compiled for.
        unsafe { rounds(states, blocks) };
        return;
    }
    one_after_the_other(states, blocks);
}

/// The `sha2` crate's compression function, one lane after the other.
fn one_after_the_other<const N: usize>(states: [&mut [u32; 8]; N], blocks: [&[u8]; N]) {
    // The sha2 crate takes `&[[u8; 64]]`, which `&[u8]` becomes only with
    // Rust 1.88's `as_chunks`: one block per call, on CPUs without SHA-NI.
    for (state, blocks) in states.into_iter().zip(blocks) {
        for block in blocks.chunks_exact(64) {
            if let Ok(block) = <[u8; 64]>::try_from(block) {
                sha2::block_api::compress256(state, &[block]);
            }
        }
    }
}

/// The instructions keep the state as two registers, (A, B, E, F) and
/// (C, D, G, H), with A in the highest lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn load_state(state: &[u32; 8]) -> (__m128i, __m128i) {
    // SAFETY: each load reads 4 of the state's 8 words.
    let (abcd, efgh) = unsafe {
        (
            _mm_loadu_si128(state.as_ptr().cast()),
            _mm_loadu_si128(state.as_ptr().add(4).cast()),
        )
    };
    let badc = _mm_shuffle_epi32(abcd, 0b10_11_00_01);
    let hgfe = _mm_shuffle_epi32(efgh, 0b00_01_10_11);
    (
        _mm_alignr_epi8(badc, hgfe, 8),
        _mm_blend_epi16(hgfe, badc, 0xF0),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn store_state(abef: __m128i, cdgh: __m128i, state: &mut [u32; 8]) {
    let feba = _mm_shuffle_epi32(abef, 0b00_01_10_11);
    let dchg = _mm_shuffle_epi32(cdgh, 0b10_11_00_01);
    // SAFETY: each store writes 4 of the state's 8 words.
    unsafe {
        _mm_storeu_si128(state.as_mut_ptr().cast(), _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128(
            state.as_mut_ptr().add(4).cast(),
            _mm_alignr_epi8(dchg, feba, 8),
        );
    }
}

/// The rounds of `N` lanes (1 or 2), written as one loop over the lanes so
/// that the compiler interleaves their independent instructions. Every
/// lane's `blocks` is as long, a whole number of 64-byte blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn rounds<const N: usize>(states: [&mut [u32; 8]; N], blocks: [&[u8]; N]) {
    // Message words are big-endian.
    let byte_swap = _mm_set_epi64x(0x0c0d0e0f_08090a0b, 0x04050607_00010203);
    let mut abef = [_mm_setzero_si128(); N];
    let mut cdgh = [_mm_setzero_si128(); N];
    for lane in 0..N {
        (abef[lane], cdgh[lane]) = load_state(states[lane]);
    }
    for start in (0..blocks[0].len() / 64).map(|block| 64 * block) {
        let (abef_before, cdgh_before) = (abef, cdgh);
        let mut words = [[_mm_setzero_si128(); 4]; N];
        for lane in 0..N {
            let block = &blocks[lane][start..start + 64];
            for (i, quarter) in block.chunks_exact(16).enumerate() {
                // SAFETY: `quarter` is 16 bytes.
                let loaded = unsafe { _mm_loadu_si128(quarter.as_ptr().cast()) };
                words[lane][i] = _mm_shuffle_epi8(loaded, byte_swap);
            }
        }
        for round in 0..16 {
            // SAFETY: round < 16, so this reads constants 4·round..4·round+4.
            let constants =
                unsafe { _mm_loadu_si128(ROUND_CONSTANTS.as_ptr().add(4 * round).cast()) };
            for lane in 0..N {
                // From round 4 on, the next 4 schedule words come from the last 16.
                if round >= 4 {
                    let [w0, w1, w2, w3] = words[lane];
                    let next = _mm_sha256msg2_epu32(
                        _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4)),
                        w3,
                    );
                    words[lane] = [w1, w2, w3, next];
                }
                let current = words[lane][round.min(3)];
                let message = _mm_add_epi32(current, constants);
                cdgh[lane] = _mm_sha256rnds2_epu32(cdgh[lane], abef[lane], message);
                abef[lane] = _mm_sha256rnds2_epu32(
                    abef[lane],
                    cdgh[lane],
                    _mm_shuffle_epi32(message, 0b00_00_11_10),
                );
            }
        }
        for lane in 0..N {
            abef[lane] = _mm_add_epi32(abef[lane], abef_before[lane]);
            cdgh[lane] = _mm_add_epi32(cdgh[lane], cdgh_before[lane]);
        }
    }
    for (lane, state) in states.into_iter().enumerate() {
        store_state(abef[lane], cdgh[lane], state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITIAL: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    #[test]
    fn one_lane_and_pairs_hash_as_the_sha2_crate_does() {
        let bytes: Vec<u8> = (0..200 * 64u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let blocks: Vec<[u8; 64]> = bytes
            .chunks_exact(64)
            .map(|block| block.try_into().unwrap())
            .collect();
        for count in [0, 1, 2, 3, 17, 100] {
            for offset in [0, 1, 50] {
                let a_blocks = &bytes[..64 * count];
                let b_blocks = &bytes[64 * offset..64 * (offset + count)];
                let (mut a, mut b) = (INITIAL, INITIAL);
                compress_pair(&mut a, a_blocks, &mut b, b_blocks);
                let (mut want_a, mut want_b) = (INITIAL, INITIAL);
                sha2::block_api::compress256(&mut want_a, &blocks[..count]);
                sha2::block_api::compress256(&mut want_b, &blocks[offset..offset + count]);
                assert_eq!((a, b), (want_a, want_b), "{count} blocks, offset {offset}");
                let mut alone = INITIAL;
                compress(&mut alone, b_blocks);
                assert_eq!(alone, want_b, "{count} blocks, offset {offset}, one lane");
                let (mut a, mut b) = (INITIAL, INITIAL);
                one_after_the_other([&mut a, &mut b], [a_blocks, b_blocks]);
                assert_eq!(
                    (a, b),
                    (want_a, want_b),
                    "{count} blocks, offset {offset}, fallback"
                );
            }
        }
    }

    #[test]
    fn the_instructions_are_found_where_the_kernel_lists_them() {
        let listed = std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| info.split_whitespace().any(|flag| flag == "sha_ni"))
            .unwrap_or(false);
        assert_eq!(
            available(),
            listed,
            "the kernel lists sha_ni: {listed}; the paired path is used: {}",
            available()
        );
    }
}
