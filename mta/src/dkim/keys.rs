//! DKIM private keys: loading PEM files (PKCS#1 and PKCS#8 RSA as `openssl genrsa` writes them,
//! PKCS#8 Ed25519), a cache that reloads a key when its file changes, and key generation with the
//! DNS TXT record to publish.

use super::DkimError;
use base64::Engine;
use mail_auth::common::crypto::{Algorithm, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// An RSA key under 2048 bits, which aws-lc (mail-auth's backend) refuses to load: signed with the
/// RustCrypto `rsa` crate instead. RFC 8301 still allows 1024 bits.
pub struct SmallRsaKey {
    key: rsa::pkcs1v15::SigningKey<rsa::sha2::Sha256>,
}

impl SigningKey for SmallRsaKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        use rsa::signature::{SignatureEncoding, Signer};
        let mut data = Vec::with_capacity(512);
        input.write(&mut data);
        self.key.try_sign(&data).map(|s| s.to_vec()).map_err(|e| {
            mail_auth::Error::Crypto(mail_auth::common::crypto::CryptoError::Library(
                e.to_string(),
            ))
        })
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaSha256
    }
}

/// Lets a shared key sign without being moved into the signer.
pub struct ByRef<'a, K>(pub &'a K);

impl<K: SigningKey<Hasher = Sha256>> SigningKey for ByRef<'_, K> {
    type Hasher = Sha256;
    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }
    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// A loaded signing key.
#[derive(Clone)]
pub enum LoadedKey {
    /// RSA of 2048 bits or more (aws-lc).
    Rsa {
        /// The key.
        key: Arc<RsaKey<Sha256>>,
        /// Modulus size.
        bits: usize,
    },
    /// RSA under 2048 bits (RustCrypto).
    RsaSmall {
        /// The key.
        key: Arc<SmallRsaKey>,
        /// Modulus size.
        bits: usize,
    },
    /// Ed25519 (RFC 8463).
    Ed25519 {
        /// The key.
        key: Arc<Ed25519Key>,
    },
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadedKey::Rsa { bits, .. } | LoadedKey::RsaSmall { bits, .. } => {
                write!(f, "RSA-{bits}")
            }
            LoadedKey::Ed25519 { .. } => f.write_str("Ed25519"),
        }
    }
}

impl LoadedKey {
    /// Reads a PEM private key file.
    pub fn load(path: &Path) -> Result<LoadedKey, DkimError> {
        let err = |reason: String| DkimError::Key {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(format!("cannot be read: {e}")))?;
        LoadedKey::from_pem(&pem).map_err(err)
    }

    /// Parses PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<LoadedKey, String> {
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| "is not a PEM private key".to_string())?;
        match key {
            PrivateKeyDer::Pkcs1(k) => Self::rsa_pkcs1(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                if let Ok(ed) = Ed25519Key::from_pkcs8_maybe_unchecked_der(der) {
                    return Ok(LoadedKey::Ed25519 { key: Arc::new(ed) });
                }
                use rsa::pkcs8::DecodePrivateKey;
                let rk = rsa::RsaPrivateKey::from_pkcs8_der(der).map_err(|e| {
                    format!("holds a PKCS#8 key that is neither RSA nor Ed25519 ({e})")
                })?;
                Self::rsa(
                    rk,
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())),
                )
            }
            PrivateKeyDer::Sec1(_) => Err("holds an EC key; DKIM uses RSA or Ed25519".into()),
            _ => Err("holds an unsupported key type".into()),
        }
    }

    fn rsa_pkcs1(der: &[u8]) -> Result<LoadedKey, String> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let rk = rsa::RsaPrivateKey::from_pkcs1_der(der)
            .map_err(|e| format!("holds an invalid RSA key ({e})"))?;
        Self::rsa(
            rk,
            PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der.to_vec())),
        )
    }

    fn rsa(rk: rsa::RsaPrivateKey, der: PrivateKeyDer<'static>) -> Result<LoadedKey, String> {
        use rsa::traits::PublicKeyParts;
        let bits = rk.n().bits();
        if bits < 1024 {
            return Err(format!(
                "is RSA-{bits}; receivers refuse keys under 1024 bits (RFC 8301)"
            ));
        }
        if bits >= 2048 {
            let key = RsaKey::<Sha256>::from_key_der(der)
                .map_err(|e| format!("holds an invalid RSA key ({e})"))?;
            return Ok(LoadedKey::Rsa {
                key: Arc::new(key),
                bits,
            });
        }
        Ok(LoadedKey::RsaSmall {
            key: Arc::new(SmallRsaKey {
                key: rsa::pkcs1v15::SigningKey::new(rk),
            }),
            bits,
        })
    }

    /// `RSA-2048`, `Ed25519` ...
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// Keys by file, loaded once and loaded again when the file's modification time changes.
#[derive(Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<PathBuf, (Option<SystemTime>, LoadedKey)>>,
}

impl KeyCache {
    /// The key in `path`, from the cache unless the file changed.
    pub fn get(&self, path: &Path) -> Result<LoadedKey, DkimError> {
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let Ok(keys) = self.keys.lock() {
            if let Some((t, k)) = keys.get(path) {
                if *t == mtime && mtime.is_some() {
                    return Ok(k.clone());
                }
            }
        }
        let k = LoadedKey::load(path)?;
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(path.to_path_buf(), (mtime, k.clone()));
        }
        Ok(k)
    }

    /// Forgets every key (a reload reads them again).
    pub fn clear(&self) {
        if let Ok(mut k) = self.keys.lock() {
            k.clear();
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.lock().map(|k| k.len()).unwrap_or(0)
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Key types `mta dkim keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// RSA, 2048 bits.
    #[value(name = "rsa-2048")]
    Rsa2048,
    /// RSA, 4096 bits.
    #[value(name = "rsa-4096")]
    Rsa4096,
    /// Ed25519 (RFC 8463).
    #[value(name = "ed25519")]
    Ed25519,
}

/// A generated key: the private key as PKCS#8 PEM and the DNS TXT record value.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// PKCS#8 PEM text.
    pub private_pem: String,
    /// The TXT record value, e.g. `v=DKIM1; k=rsa; p=MIIB…`.
    pub txt: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Generates a key pair.
pub fn generate(alg: KeyAlgorithm) -> Result<GeneratedKey, String> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match alg {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa4096 => {
            let size = if alg == KeyAlgorithm::Rsa2048 {
                aws_lc_rs::rsa::KeySize::Rsa2048
            } else {
                aws_lc_rs::rsa::KeySize::Rsa4096
            };
            let kp = aws_lc_rs::rsa::KeyPair::generate(size).map_err(|e| e.to_string())?;
            let private: aws_lc_rs::encoding::Pkcs8V1Der =
                kp.as_der().map_err(|e| e.to_string())?;
            let public: aws_lc_rs::encoding::PublicKeyX509Der =
                kp.public_key().as_der().map_err(|e| e.to_string())?;
            Ok(GeneratedKey {
                private_pem: pem("PRIVATE KEY", private.as_ref()),
                txt: format!("v=DKIM1; k=rsa; p={}", b64(public.as_ref())),
            })
        }
        KeyAlgorithm::Ed25519 => {
            let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
                &aws_lc_rs::rand::SystemRandom::new(),
            )
            .map_err(|e| e.to_string())?;
            let kp = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(doc.as_ref())
                .map_err(|e| e.to_string())?;
            Ok(GeneratedKey {
                private_pem: pem("PRIVATE KEY", doc.as_ref()),
                txt: format!("v=DKIM1; k=ed25519; p={}", b64(kp.public_key().as_ref())),
            })
        }
    }
}

/// The TXT value split into quoted character-strings of at most 255 bytes, as a zone file wants it.
pub fn txt_strings(txt: &str) -> Vec<String> {
    txt.as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect()
}

/// The zone-file line publishing `txt` for `selector` under `domain`.
pub fn zone_record(selector: &str, domain: &str, txt: &str) -> String {
    let parts = txt_strings(txt);
    if parts.len() == 1 {
        format!("{selector}._domainkey.{domain}. 3600 IN TXT {}", parts[0])
    } else {
        format!(
            "{selector}._domainkey.{domain}. 3600 IN TXT ( {} )",
            parts.join("\n    ")
        )
    }
}

/// The DNS TXT value (`v=DKIM1; k=…; p=…`) publishing the public half of the key in `path`.
pub fn public_txt(path: &Path) -> Result<String, DkimError> {
    let err = |reason: String| DkimError::Key {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(format!("cannot be read: {e}")))?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let key =
        PrivateKeyDer::from_pem_slice(&pem).map_err(|_| err("is not a PEM private key".into()))?;
    use rsa::pkcs8::EncodePublicKey;
    let rsa_txt = |k: rsa::RsaPrivateKey| {
        k.to_public_key()
            .to_public_key_der()
            .map(|d| format!("v=DKIM1; k=rsa; p={}", b64(d.as_bytes())))
            .map_err(|e| err(e.to_string()))
    };
    match key {
        PrivateKeyDer::Pkcs1(k) => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            rsa_txt(
                rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                    .map_err(|e| err(e.to_string()))?,
            )
        }
        PrivateKeyDer::Pkcs8(k) => {
            use aws_lc_rs::signature::KeyPair;
            if let Ok(ed) = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(
                k.secret_pkcs8_der(),
            ) {
                return Ok(format!(
                    "v=DKIM1; k=ed25519; p={}",
                    b64(ed.public_key().as_ref())
                ));
            }
            use rsa::pkcs8::DecodePrivateKey;
            rsa_txt(
                rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der())
                    .map_err(|e| err(e.to_string()))?,
            )
        }
        _ => Err(err("holds an unsupported key type".into())),
    }
}
