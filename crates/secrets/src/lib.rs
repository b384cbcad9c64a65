//! Secrets (the seed's RemoteEnv): named values sealed with XChaCha20-Poly1305 under a 32-byte
//! master key and kept in the store's `secrets` table; opened at start-up and handed to the
//! processes COGO starts (stdio MCP servers) and to the redactor.
//!
//! Invariants: a value is never logged, printed or returned by an API; the name is the sealed
//! value's associated data, so a row copied under another name does not open; every row records the
//! fingerprint of the key that sealed it, so a wrong key is named as such, not as corruption; the
//! key file is created readable by its owner only and refused when others can read it.

pub mod tokens;

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// The environment variable holding the master key (64 hex digits).
pub const MASTER_KEY_ENV: &str = "COGO_MASTER_KEY";
/// The key file in the data dir, used when the environment variable is unset.
pub const KEY_FILE: &str = "master.key";
/// Largest secret value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// What can go wrong with secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The master key is malformed.
    #[error("the master key from {source_name} must be 64 hex digits (32 bytes)")]
    BadKey {
        /// Where it came from.
        source_name: String,
    },
    /// The key file can be read by others.
    #[error("{path} can be read by other users (mode {mode:o}): run `chmod 600 {path}`")]
    KeyFileOpen {
        /// The file.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// Reading or writing the key file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A name that is not an environment variable name.
    #[error(
        "secret name {name:?} is not allowed: use 1 to 128 upper-case letters, digits and '_', not starting with a digit"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// A value too large or empty.
    #[error("the value of secret {name} must be 1 to {MAX_VALUE_BYTES} bytes, got {len}")]
    BadValue {
        /// Secret name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// No such secret.
    #[error("no secret named {name}")]
    NotFound {
        /// Secret name.
        name: String,
    },
    /// Sealed under another key.
    #[error(
        "secret {name} was sealed with master key {sealed_with}, but the key in use is {in_use}: set {MASTER_KEY_ENV} to the key it was sealed with"
    )]
    WrongKey {
        /// Secret name.
        name: String,
        /// Fingerprint of the sealing key.
        sealed_with: String,
        /// Fingerprint of the key in use.
        in_use: String,
    },
    /// The ciphertext does not open (tampered or moved).
    #[error("secret {name} does not open with its key: it was altered or copied from another name")]
    Corrupt {
        /// Secret name.
        name: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The master key: 32 bytes, wiped from memory when dropped.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    fingerprint: String,
    origin: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("fingerprint", &self.fingerprint).field("origin", &self.origin).finish()
    }
}

fn parse_hex_key(text: &str, source_name: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
    let text = text.trim();
    let bad = || Error::BadKey { source_name: source_name.to_owned() };
    if text.len() != 64 {
        return Err(bad());
    }
    let mut key = Zeroizing::new([0u8; 32]);
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(key)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl MasterKey {
    /// A key from 32 bytes (`origin` says where it came from, for messages).
    pub fn from_bytes(bytes: [u8; 32], origin: &str) -> Self {
        let key = Zeroizing::new(bytes);
        // the fingerprint: the tag of sealing nothing under a fixed nonce; it names the key
        // without revealing it
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let tag = cipher
            .encrypt(&XNonce::default(), Payload { msg: b"", aad: b"cogo master key fingerprint" })
            .unwrap_or_default();
        let fingerprint = to_hex(&tag[..tag.len().min(6)]);
        Self { key, fingerprint, origin: origin.to_owned() }
    }

    /// `COGO_MASTER_KEY` when set, else `<data_dir>/master.key`, created (mode 0600) when missing.
    pub fn load(data_dir: &Path) -> Result<Self, Error> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            let key = parse_hex_key(&text, MASTER_KEY_ENV)?;
            return Ok(Self::from_bytes(*key, MASTER_KEY_ENV));
        }
        Self::from_file(&data_dir.join(KEY_FILE))
    }

    /// The key in `path`, created with a random key (mode 0600) when missing.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let shown = path.display().to_string();
        let io = |what: &'static str| {
            let shown = shown.clone();
            move |source| Error::Io { what, path: shown, source }
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(path).map_err(io("reading"))?.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        return Err(Error::KeyFileOpen { path: shown, mode });
                    }
                }
                let key = parse_hex_key(&text, &shown)?;
                Ok(Self::from_bytes(*key, &shown))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
                }
                let key = Zeroizing::new(rand::random::<[u8; 32]>());
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(io("creating"))?;
                std::io::Write::write_all(&mut file, format!("{}\n", to_hex(&*key)).as_bytes())
                    .map_err(io("writing"))?;
                Ok(Self::from_bytes(*key, &shown))
            }
            Err(err) => Err(io("reading")(err)),
        }
    }

    /// A short public name of the key (not the key).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where the key came from (the variable name or the file).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.key).into())
    }
}

/// Whether `name` is a valid secret name (an environment variable name).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A secret's name and when it last changed (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// Name.
    pub name: String,
    /// Fingerprint of the key that sealed it.
    pub key_id: String,
    /// Last change.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// The secrets of one store under one master key.
#[derive(Debug)]
pub struct Vault {
    store: store::Store,
    key: MasterKey,
}

impl Vault {
    /// Secrets in `store` under `key`.
    pub fn new(store: store::Store, key: MasterKey) -> Self {
        Self { store, key }
    }

    /// The key in use.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// Seals and stores `value` under `name` (replacing any earlier value).
    pub async fn set(&self, name: &str, value: &str) -> Result<(), Error> {
        if !valid_name(name) {
            return Err(Error::BadName { name: name.chars().take(140).collect() });
        }
        if value.is_empty() || value.len() > MAX_VALUE_BYTES {
            return Err(Error::BadValue { name: name.to_owned(), len: value.len() });
        }
        let nonce: [u8; 24] = rand::random();
        let ciphertext = self
            .key
            .cipher()
            .encrypt(&XNonce::from(nonce), Payload { msg: value.as_bytes(), aad: name.as_bytes() })
            .map_err(|_| Error::Corrupt { name: name.to_owned() })?;
        self.store
            .put_secret(store::SealedSecret {
                name: name.to_owned(),
                key_id: self.key.fingerprint.clone(),
                nonce: nonce.to_vec(),
                ciphertext,
                updated_at: self.store.clock().now(),
            })
            .await?;
        Ok(())
    }

    fn open(&self, sealed: &store::SealedSecret) -> Result<Zeroizing<String>, Error> {
        if sealed.key_id != self.key.fingerprint {
            return Err(Error::WrongKey {
                name: sealed.name.clone(),
                sealed_with: sealed.key_id.clone(),
                in_use: self.key.fingerprint.clone(),
            });
        }
        let corrupt = || Error::Corrupt { name: sealed.name.clone() };
        let nonce: [u8; 24] = sealed.nonce.as_slice().try_into().map_err(|_| corrupt())?;
        let plain = self
            .key
            .cipher()
            .decrypt(&XNonce::from(nonce), Payload { msg: &sealed.ciphertext, aad: sealed.name.as_bytes() })
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map(Zeroizing::new).map_err(|_| corrupt())
    }

    /// The value of `name`.
    pub async fn get(&self, name: &str) -> Result<Zeroizing<String>, Error> {
        let sealed =
            self.store.secret(name).await?.ok_or_else(|| Error::NotFound { name: name.chars().take(140).collect() })?;
        self.open(&sealed)
    }

    /// Every secret's name, key fingerprint and last change, by name.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, Error> {
        Ok(self
            .store
            .secrets()
            .await?
            .into_iter()
            .map(|s| SecretInfo { name: s.name, key_id: s.key_id, updated_at: s.updated_at })
            .collect())
    }

    /// Every secret opened, by name.
    pub async fn open_all(&self) -> Result<Vec<(String, Zeroizing<String>)>, Error> {
        self.store.secrets().await?.iter().map(|sealed| Ok((sealed.name.clone(), self.open(sealed)?))).collect()
    }

    /// Removes `name`; false when there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, Error> {
        Ok(self.store.delete_secret(name).await?)
    }
}

/// The data dir's key file path.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

#[cfg(test)]
mod tests;
