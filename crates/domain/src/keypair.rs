//! SSH key pairs: public keys a project registers by name, for the SSH endpoints of its
//! notebooks (an Atelier extension; ModelArts takes them from the ECS/DEW key-pair service).
use ssh_key::public::KeyData;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::{EpochMillis, ProjectId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub project_id: ProjectId,
    pub name: String,
    /// One line in OpenSSH `authorized_keys` format: `ssh-ed25519 AAAA… comment`.
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, …
    pub algorithm: String,
    pub create_at: EpochMillis,
}

/// The smallest RSA modulus accepted, in bits.
pub const RSA_MIN_BITS: usize = 2048;

/// A validated public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKey {
    pub public_key: String,
    pub fingerprint: String,
    pub algorithm: String,
}

/// Key-pair names: 1–64 characters of letters, digits, `-`, `_` and `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses one OpenSSH public key line; accepts ed25519, ECDSA and RSA of at least 2048 bits.
pub fn check_public_key(text: &str) -> Result<CheckedKey, String> {
    let text = text.trim();
    if text.contains('\n') {
        return Err("exactly one public key is expected".to_owned());
    }
    let key = PublicKey::from_openssh(text)
        .map_err(|_| "not an OpenSSH public key (expected e.g. 'ssh-ed25519 AAAA… comment')")?;
    match key.key_data() {
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) => {}
        KeyData::Rsa(rsa) => {
            let bits = rsa
                .n
                .as_positive_bytes()
                .map(|bytes| {
                    let leading = bytes.first().map_or(8, |b| b.leading_zeros() as usize);
                    bytes.len() * 8 - leading
                })
                .unwrap_or(0);
            if bits < RSA_MIN_BITS {
                return Err(format!(
                    "RSA keys need at least {RSA_MIN_BITS} bits; this one has {bits}"
                ));
            }
        }
        _ => {
            return Err(format!(
                "key type {} is not accepted (use ed25519, ECDSA or RSA ≥ {RSA_MIN_BITS} bits)",
                key.algorithm()
            ));
        }
    }
    Ok(CheckedKey {
        public_key: text.to_owned(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        algorithm: key.algorithm().to_string(),
    })
}

/// A new ed25519 key: the private key in OpenSSH PEM form and the checked public key.
pub fn generate(comment: &str) -> Result<(String, CheckedKey), String> {
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(|e| e.to_string())?;
    key.set_comment(comment);
    let private = key.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
    let public = key.public_key().to_openssh().map_err(|e| e.to_string())?;
    Ok((private.to_string(), check_public_key(&public)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa66lDBVQ3CEG+8xQYQZvr1UOYEzGGK5lhX422idrJF me@host";

    const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDTEqE3CybytbMA4EPnrPAcfEQhUXEN9Giy1aBpopgThMnzrw+q/j8LaVG0iRZtgTlcxOL866kfMbb++H4WXiBql5KNMx2GUXwHo7t7gg3jb8NA8br4XlwtePNe14CB97PxBFPTTwr9mJZs8nj12FeIMAzLpkdVfZN4oingZWjzYQ== small";
    const RSA_2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDUDMCUI0UnXuKAaexszfmkUBfJRLGF9j8IFIFatGrxc0OU1XlOenT69HWHIU5Dc22WSj17tyqG641w10VQf3bg9INYnRGDCYXnBuEaK6ONMEEwQai+k3MNy/XwTLpMaPfzXPg7N0uy1tG+V6LpOf1C3Pjm37693BGYfguXiZRdnmnP1/mVmy0uTXEvGoJtfaBJA2quSq5rOy73jsJlmn88PvaiYeslmeZu+7w8U4oXrg2oVT3dj8uugjzYs0G0+OvFDDC3GvtHeHUNXYVun530hawMYKSGPrZ9IlMnNYZJOlXcATklx26KQ8HcXWdBD+N0NkiJ/Cfecg4VCVsgbmTh ok";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBLPMjbZZR8Kfmz9ygevxOa6C0d18F2ZAfKWX2UWIHoi3o/Yhj8M2lfnto94SgTVnv+A+Idu7SzICLiMlhVw7/MA= ec";
    const DSA: &str = "ssh-dss AAAAB3NzaC1kc3MAAACBANqrAM+7LpX1vceJ3XhMillvA1cd397WlrN/Jc0YEhoJUfTamI/SQPeBSkfT1Gf92OgjbJ9jTW3TkaUSFUuWtOsdWMPwJQWKmDFyeGBOUd8ZlhjBXrx1+kwbc8qEqxc3FW68wwto16cIiESqDkVh2g/ky6es+CFtQok08IN5TnetAAAAFQDUV6zPW+Z7c5U/EONDYU3Zs7mLFQAAAIARUFetGN7Nr2YSEla7TXHbQaOnENGKZQdxkaWL65p+m8cobQMSJ8P5KYGUWFiZKJsLLO2p03Yt+cNom01O7JVtGmoswM/c+d+CZbKJWTQ1M4+qX+9HkoXSh8xiXVXKWS7fOLlx5V6y8Ltbl2P2UK+3P5Vt/ilJXjmAmf8TuwptTgAAAIAh3DOOKwMlu7bganBumnQ6f+81mPa246MvGbZrKFXT5SlN+BLe6SVW6Z/n9qgCCwDWKH/2o4xqEj687wtaHved4IyFDU1RlwOgR4z0/drx1OFxgSFy2nDHZ5AY3qDdHr4lXFCfa/7fpa0m2LfoWwexqmEXwwnGDHm6ieSYRuxZRw== dsa";

    #[test]
    fn rsa_needs_2048_bits_and_dsa_is_refused() {
        let error = check_public_key(RSA_1024).unwrap_err();
        assert!(error.contains("1024"), "{error}");
        assert_eq!(check_public_key(RSA_2048).unwrap().algorithm, "ssh-rsa");
        assert_eq!(
            check_public_key(ECDSA).unwrap().algorithm,
            "ecdsa-sha2-nistp256"
        );
        assert!(check_public_key(DSA).unwrap_err().contains("ssh-dss"));
    }

    #[test]
    fn an_ed25519_key_is_accepted_with_its_fingerprint() {
        let key = check_public_key(ED25519).unwrap();
        assert_eq!(key.algorithm, "ssh-ed25519");
        assert!(
            key.fingerprint.starts_with("SHA256:"),
            "{}",
            key.fingerprint
        );
        assert_eq!(key.public_key, ED25519);
    }

    #[test]
    fn garbage_and_two_keys_are_refused() {
        assert!(check_public_key("ssh-ed25519 notbase64").is_err());
        assert!(check_public_key("").is_err());
        assert!(check_public_key(&format!("{ED25519}\n{ED25519}")).is_err());
    }

    #[test]
    fn a_generated_key_checks_and_differs_each_time() {
        let (private, public) = generate("kp").unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let (_, other) = generate("kp").unwrap();
        assert_ne!(public.fingerprint, other.fingerprint);
        assert!(public.public_key.ends_with(" kp"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("my-key_1.pub"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"k".repeat(65)));
    }
}
