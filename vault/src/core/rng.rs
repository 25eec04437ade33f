//! The one place randomness comes from: ring's system RNG.

use std::sync::LazyLock;

use ring::rand::{SecureRandom, SystemRandom};

use super::CryptoError;

static RNG: LazyLock<SystemRandom> = LazyLock::new(SystemRandom::new);

/// Fills `out` with random bytes from the operating system.
pub fn fill(out: &mut [u8]) -> Result<(), CryptoError> {
    RNG.fill(out).map_err(|_| CryptoError)
}

/// A uniformly random integer in `0..bound` (`bound > 0`), by rejection sampling.
pub fn below(bound: u64) -> Result<u64, CryptoError> {
    if bound == 0 {
        return Err(CryptoError);
    }
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let mut b = [0u8; 8];
        fill(&mut b)?;
        let v = u64::from_le_bytes(b);
        if v < zone {
            return Ok(v % bound);
        }
    }
}
