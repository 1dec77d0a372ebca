//! Signatures over provider components: ed25519 over the component's sha256 and the name and
//! version it declares, so a signature can neither be moved to other bytes nor to another
//! name or version. Keys and signatures travel as standard base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;

/// What is signed: a versioned, line-based statement (no field can contain a newline: names
/// and versions are checked by the loader, the digest is hex).
pub fn signed_message(sha256_hex: &str, name: &str, version: &str) -> Vec<u8> {
    format!("bnr-provider-signature-v1\nsha256={sha256_hex}\nname={name}\nversion={version}\n")
        .into_bytes()
}

/// A new signing key: (secret key, public key), both base64.
pub fn generate_key() -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = SigningKey::from_bytes(&secret);
    secret.fill(0);
    (
        B64.encode(key.to_bytes()),
        B64.encode(key.verifying_key().to_bytes()),
    )
}

/// Parses a base64 secret key (as written by `bnr plugin keygen`).
pub fn parse_secret_key(text: &str) -> Result<SigningKey, String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|_| "the secret key is not base64".to_string())?;
    let secret: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("a secret key is 32 bytes, this one has {}", bytes.len()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// Parses a base64 ed25519 public key; the error says what is wrong with it.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|_| "the public key is not base64".to_string())?;
    let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "an ed25519 public key is 32 bytes, this one has {}",
            bytes.len()
        )
    })?;
    let key = VerifyingKey::from_bytes(&raw)
        .map_err(|_| "the public key is not a valid ed25519 point".to_string())?;
    if key.is_weak() {
        return Err("the public key is a weak (small-order) ed25519 key".to_string());
    }
    Ok(key)
}

/// The canonical base64 text of a public key.
pub fn public_key_text(key: &VerifyingKey) -> String {
    B64.encode(key.to_bytes())
}

/// Signs a component's statement; base64 signature.
pub fn sign(key: &SigningKey, sha256_hex: &str, name: &str, version: &str) -> String {
    B64.encode(
        key.sign(&signed_message(sha256_hex, name, version))
            .to_bytes(),
    )
}

/// Parses a base64 signature.
pub fn parse_signature(text: &str) -> Result<Signature, String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|_| "the plugin signature is not base64".to_string())?;
    let raw: [u8; 64] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "an ed25519 signature is 64 bytes, this one has {}",
            bytes.len()
        )
    })?;
    Ok(Signature::from_bytes(&raw))
}

/// Whether `signature` is `key`'s signature of the statement (strict verification: no
/// malleable or small-order forms).
pub fn verify(
    key: &VerifyingKey,
    signature: &Signature,
    sha256_hex: &str,
    name: &str,
    version: &str,
) -> bool {
    key.verify_strict(&signed_message(sha256_hex, name, version), signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_digest_name_and_version() {
        let (secret, public) = generate_key();
        let key = parse_secret_key(&secret).unwrap();
        let public = parse_public_key(&public).unwrap();
        let sig = parse_signature(&sign(&key, "ab", "dummy", "1.0.0")).unwrap();
        assert!(verify(&public, &sig, "ab", "dummy", "1.0.0"));
        assert!(!verify(&public, &sig, "ac", "dummy", "1.0.0"));
        assert!(!verify(&public, &sig, "ab", "dummx", "1.0.0"));
        assert!(!verify(&public, &sig, "ab", "dummy", "1.0.1"));
        let (_, other) = generate_key();
        assert!(!verify(
            &parse_public_key(&other).unwrap(),
            &sig,
            "ab",
            "dummy",
            "1.0.0"
        ));
    }

    #[test]
    fn malformed_keys_and_signatures_are_refused_with_a_reason() {
        assert!(
            parse_public_key("not base64!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(parse_public_key("AAAA").unwrap_err().contains("32 bytes"));
        assert!(parse_public_key(&B64.encode([0u8; 32])).is_err());
        assert!(parse_signature("AAAA").unwrap_err().contains("64 bytes"));
    }
}
