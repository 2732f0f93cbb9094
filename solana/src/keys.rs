//! Keypairs: loading from a file or a Kubernetes Secret's bytes, never logged.

use crate::SolanaError;
use solana_keypair::Keypair;
use solana_signer::Signer;
use std::fmt;
use std::path::Path;

/// Parses a keypair from the usual Solana forms: the JSON array of 64 bytes that
/// `solana-keygen` writes (what a Secret usually holds), or the raw 64 bytes
/// (secret key followed by public key). Errors never echo the input.
pub fn parse_keypair(bytes: &[u8]) -> Result<Keypair, SolanaError> {
    let raw: Vec<u8> = match std::str::from_utf8(bytes) {
        Ok(text) if text.trim_start().starts_with('[') => {
            let inner = text.trim();
            let inner = inner
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .ok_or_else(|| SolanaError::Keypair("unterminated JSON array".into()))?;
            let mut out = Vec::with_capacity(64);
            for part in inner.split(',') {
                let part = part.trim();
                if part.is_empty() {
                    continue;
                }
                out.push(part.parse::<u8>().map_err(|_| {
                    SolanaError::Keypair("JSON array holds a value that is not a byte".into())
                })?);
            }
            out
        }
        _ => bytes.to_vec(),
    };
    if raw.len() != 64 {
        return Err(SolanaError::Keypair(format!(
            "expected 64 bytes, got {}",
            raw.len()
        )));
    }
    Keypair::try_from(raw.as_slice())
        .map_err(|_| SolanaError::Keypair("the public half does not match the secret half".into()))
}

/// The operator's authority: owns the custody token accounts, is the mint
/// authority for emission (and test funding), and pays fees and rent.
/// `Debug` shows only the public key.
pub struct Authority(pub(crate) Keypair);

impl Authority {
    /// Reads a keypair file (`solana-keygen` JSON, or 64 raw bytes).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SolanaError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| SolanaError::Keypair(format!("cannot read {}: {e}", path.display())))?;
        Self::from_bytes(&bytes)
    }

    /// From a Secret's bytes (JSON array or 64 raw bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SolanaError> {
        parse_keypair(bytes).map(Authority)
    }

    pub fn from_keypair(keypair: Keypair) -> Self {
        Authority(keypair)
    }

    /// A fresh random authority (tests, local set-ups).
    pub fn generate() -> Self {
        Authority(Keypair::new())
    }

    /// The authority's address (base58).
    pub fn address(&self) -> String {
        self.0.pubkey().to_string()
    }

    pub fn pubkey(&self) -> solana_pubkey::Pubkey {
        self.0.pubkey()
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("address", &self.0.pubkey().to_string())
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_and_raw_and_redacts() {
        let kp = Keypair::new();
        let raw = kp.to_bytes();
        let json = format!(
            "[{}]\n",
            raw.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let a = Authority::from_bytes(json.as_bytes()).unwrap();
        assert_eq!(a.pubkey(), kp.pubkey());
        let b = Authority::from_bytes(&raw).unwrap();
        assert_eq!(b.pubkey(), kp.pubkey());
        let dbg = format!("{a:?}");
        assert!(dbg.contains("<redacted>"));
        // no byte of the secret in the Debug output (as the JSON list would print them)
        assert!(!dbg.contains(&json.trim()[..20]));
        assert!(Authority::from_bytes(b"[1,2,3]").is_err());
        let err = Authority::from_bytes(&raw[..63]).unwrap_err().to_string();
        assert!(err.contains("64"), "{err}");
        let mut bad = raw;
        bad[63] ^= 1;
        assert!(Authority::from_bytes(&bad).is_err());
    }

    #[test]
    fn file_errors_are_clear() {
        let err = Authority::from_file("/nonexistent/solgrid-key.json").unwrap_err();
        assert!(err.to_string().contains("cannot read"));
    }
}
