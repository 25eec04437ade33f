//! M-of-N custodian shares of the key that unseals the root key (dual control,
//! PCI DSS 3.6.1.2 / 3.7.6).
//!
//! The unsealing key (KEK) is 32 random bytes split with Shamir's scheme over
//! GF(256) (the `blahaj` crate); the dealer's randomness is drawn from ring. Each
//! share is a text file naming the vault, the seal generation, its number, the
//! threshold and a checksum, so a share of another vault, of an older generation or
//! a mistyped one is refused with a clear message before any combining.

use std::fmt::Write as _;
use std::path::Path;

use blahaj::{Share, Sharks};
use ring::digest;
use zeroize::Zeroizing;

use crate::core::rng;
use crate::core::secret::SecretKey32;
use crate::error::VaultError;

/// One custodian's share, parsed.
pub struct ShareFile {
    /// Vault id.
    pub vault_id: String,
    /// Seal generation.
    pub generation: i64,
    /// Share number (1-based).
    pub number: u8,
    /// Shares issued.
    pub total: u8,
    /// Shares needed.
    pub threshold: u8,
    data: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ShareFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ShareFile(vault {}, gen {}, share {} of {}, [REDACTED])",
            self.vault_id, self.generation, self.number, self.total
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 2));
    let bytes = s.as_bytes();
    for pair in bytes.chunks(2) {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        out.push(u8::try_from(hi * 16 + lo).ok()?);
    }
    Some(out)
}

fn checksum(
    vault_id: &str,
    generation: i64,
    number: u8,
    total: u8,
    threshold: u8,
    data: &[u8],
) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(
        format!("panvault-share/v1|{vault_id}|{generation}|{number}|{total}|{threshold}|")
            .as_bytes(),
    );
    ctx.update(data);
    let d = ctx.finish();
    hex(d.as_ref().get(..8).unwrap_or_default())
}

impl ShareFile {
    /// The text written to the custodian's file.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "panvault-share v1\nvault: {}\ngeneration: {}\nshare: {}\ntotal: {}\nthreshold: {}\ndata: {}\ncheck: {}\n",
            self.vault_id,
            self.generation,
            self.number,
            self.total,
            self.threshold,
            hex(&self.data),
            checksum(
                &self.vault_id,
                self.generation,
                self.number,
                self.total,
                self.threshold,
                &self.data
            )
        ))
    }

    /// Parses a share file's text. Errors name the problem, never the share bytes.
    pub fn parse(text: &str) -> Result<ShareFile, String> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some("panvault-share v1") {
            return Err(
                "not a panvault share file (first line must be `panvault-share v1`)".into(),
            );
        }
        let mut get = |name: &str| -> Result<String, String> {
            let line = lines
                .next()
                .ok_or_else(|| format!("missing `{name}:` line"))?;
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("malformed `{name}:` line"))?;
            if k.trim() != name {
                return Err(format!("expected `{name}:`, found `{}:`", k.trim()));
            }
            Ok(v.trim().to_owned())
        };
        let vault_id = get("vault")?;
        let generation = get("generation")?
            .parse()
            .map_err(|_| "bad generation".to_owned())?;
        let number: u8 = get("share")?
            .parse()
            .map_err(|_| "bad share number".to_owned())?;
        let total: u8 = get("total")?.parse().map_err(|_| "bad total".to_owned())?;
        let threshold: u8 = get("threshold")?
            .parse()
            .map_err(|_| "bad threshold".to_owned())?;
        let data = unhex(&Zeroizing::new(get("data")?))
            .ok_or_else(|| "share data is not hex".to_owned())?;
        let check = get("check")?;
        if checksum(&vault_id, generation, number, total, threshold, &data) != check {
            return Err("checksum mismatch: the share was altered or mistyped".into());
        }
        if data.first() != Some(&number) || data.len() != 33 {
            return Err("share data does not match its number".into());
        }
        Ok(ShareFile {
            vault_id,
            generation,
            number,
            total,
            threshold,
            data,
        })
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<ShareFile, VaultError> {
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| VaultError::io(path, e))?);
        ShareFile::parse(&text).map_err(|reason| VaultError::io(path, reason))
    }
}

/// Randomness for the dealer: pre-drawn from ring (fallibly), then served to the
/// infallible `rand_core` interface. If it ever ran dry the dealing is refused.
struct DrawnRng {
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
    exhausted: bool,
}

impl rand_core::TryRng for DrawnRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.take(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.take(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.take(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for DrawnRng {}

impl DrawnRng {
    fn take(&mut self, dst: &mut [u8]) {
        match self.buf.get(self.pos..self.pos + dst.len()) {
            Some(src) => {
                dst.copy_from_slice(src);
                self.pos += dst.len();
            }
            None => self.exhausted = true,
        }
    }
}

/// Splits `kek` into `total` shares, any `threshold` of which rebuild it.
pub fn split(
    kek: &SecretKey32,
    vault_id: &str,
    generation: i64,
    total: u8,
    threshold: u8,
) -> Result<Vec<ShareFile>, VaultError> {
    if threshold < 2 || threshold > total {
        return Err(VaultError::invalid(
            "threshold",
            "must satisfy 2 <= threshold <= custodians",
        ));
    }
    let mut buf = Zeroizing::new(vec![0u8; 32 * usize::from(threshold) * 16]);
    rng::fill(&mut buf)?;
    let mut drawn = DrawnRng {
        buf,
        pos: 0,
        exhausted: false,
    };
    let shares: Vec<Share> = Sharks(threshold)
        .dealer_rng(kek.expose_secret(), &mut drawn)
        .take(usize::from(total))
        .collect();
    if drawn.exhausted || shares.len() != usize::from(total) {
        return Err(VaultError::Crypto);
    }
    shares
        .iter()
        .map(|s| {
            let data = Zeroizing::new(Vec::<u8>::from(s));
            // A share's first byte is its x coordinate, never 0 (that would be the secret).
            let number = data
                .first()
                .copied()
                .filter(|x| *x != 0)
                .ok_or(VaultError::internal("a dealt share has no share number"))?;
            Ok(ShareFile {
                vault_id: vault_id.to_owned(),
                generation,
                number,
                total,
                threshold,
                data,
            })
        })
        .collect()
}

/// Rebuilds the KEK from shares of `vault_id` at seal `generation`. Returns the
/// KEK and the share numbers that took part.
pub fn combine(
    shares: &[ShareFile],
    vault_id: &str,
    generation: i64,
) -> Result<(SecretKey32, Vec<u8>), VaultError> {
    let bad = |reason: String| VaultError::KeyState(reason);
    let first = shares
        .first()
        .ok_or_else(|| bad("no shares given".into()))?;
    for s in shares {
        if s.vault_id != vault_id {
            return Err(bad(format!(
                "share {} belongs to another vault ({})",
                s.number, s.vault_id
            )));
        }
        if s.generation != generation {
            return Err(bad(format!(
                "share {} is from seal generation {}, the vault is at {} (an older share set was replaced by `master reshare`)",
                s.number, s.generation, generation
            )));
        }
        if s.threshold != first.threshold || s.total != first.total {
            return Err(bad("shares disagree on the threshold".into()));
        }
    }
    let mut numbers: Vec<u8> = shares.iter().map(|s| s.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    if numbers.len() < usize::from(first.threshold) {
        return Err(bad(format!(
            "{} distinct share(s) given, {} needed",
            numbers.len(),
            first.threshold
        )));
    }
    let parsed: Vec<Share> = shares
        .iter()
        .map(|s| Share::try_from(s.data.as_slice()).map_err(|_| bad("malformed share".into())))
        .collect::<Result<_, _>>()?;
    let secret = Zeroizing::new(
        Sharks(first.threshold)
            .recover(&parsed)
            .map_err(|e| bad(e.to_owned()))?,
    );
    let key = SecretKey32::from_slice(&secret).ok_or(VaultError::Crypto)?;
    Ok((key, numbers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_m_of_n_rebuilds_fewer_do_not() {
        let kek = SecretKey32::generate().unwrap();
        let shares = split(&kek, "v1", 1, 5, 3).unwrap();
        let texts: Vec<_> = shares.iter().map(|s| s.to_text()).collect();
        let parse = |i: usize| ShareFile::parse(&texts[i]).unwrap();
        for combo in [[0, 1, 2], [0, 2, 4], [1, 3, 4], [2, 3, 4]] {
            let set: Vec<_> = combo.iter().map(|&i| parse(i)).collect();
            let (k, nums) = combine(&set, "v1", 1).unwrap();
            assert_eq!(k.expose_secret(), kek.expose_secret());
            assert_eq!(nums.len(), 3);
        }
        let two = vec![parse(0), parse(1)];
        assert!(combine(&two, "v1", 1).is_err());
        let dup = vec![parse(0), parse(0), parse(1)];
        assert!(combine(&dup, "v1", 1).is_err());
        assert!(
            combine(&[parse(0), parse(1), parse(2)], "other", 1)
                .unwrap_err()
                .to_string()
                .contains("another vault")
        );
        assert!(
            combine(&[parse(0), parse(1), parse(2)], "v1", 2)
                .unwrap_err()
                .to_string()
                .contains("generation")
        );
    }

    #[test]
    fn altered_share_is_refused_and_debug_redacts() {
        let kek = SecretKey32::generate().unwrap();
        let shares = split(&kek, "v1", 1, 3, 2).unwrap();
        let text = shares[0].to_text();
        let altered = text.replacen("data: ", "data: 00", 1);
        assert!(ShareFile::parse(&altered).is_err());
        let dbg = format!("{:?}", shares[0]);
        assert!(dbg.contains("REDACTED") && !dbg.contains(&hex(&shares[0].data)));
        assert!(split(&kek, "v1", 1, 3, 1).is_err());
        assert!(split(&kek, "v1", 1, 3, 4).is_err());
    }
}
