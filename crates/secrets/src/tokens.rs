//! Tenant-scoped API tokens: `cogo_<id>_<secret>`. The id finds the row; only a SHA-256 of the
//! secret part is stored, compared in constant time; the whole token is shown once, at creation.

use sha2::{Digest, Sha256};

/// The prefix of every tenant token.
pub const PREFIX: &str = "cogo_";

fn random_text(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A new token for `tenant`: the text to hand out (once) and the row to store.
pub fn generate(
    tenant: &str,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> (zeroize::Zeroizing<String>, store::ApiToken) {
    let id = random_text(6);
    let secret = zeroize::Zeroizing::new(random_text(24));
    let text = zeroize::Zeroizing::new(format!("{PREFIX}{id}_{}", secret.as_str()));
    let row = store::ApiToken {
        id,
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        hash: hash(&secret),
        created_at: now,
        revoked_at: None,
        roles: None,
    };
    (text, row)
}

/// A new edge worker token that may serve `roles` (and reaches nothing else): the text to hand
/// out (once) and the row to store. Its tenant is empty: an edge worker claims every tenant's work
/// of its roles.
pub fn generate_edge(
    roles: &[String],
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> (zeroize::Zeroizing<String>, store::ApiToken) {
    let (text, mut row) = generate("", name, now);
    row.roles = Some(roles.to_vec());
    (text, row)
}

/// The id and secret parts of a token text, when it has the tenant-token shape.
pub fn split(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 48)).then_some((id, secret))
}

/// Whether `secret` is the secret part of `token` (constant time; revoked tokens never match).
pub fn verify(secret: &str, token: &store::ApiToken) -> bool {
    let given = hash(secret);
    token.revoked_at.is_none()
        && given.len() == token.hash.len()
        && given.iter().zip(&token.hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Whether `tenant` is a usable tenant name.
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_verifies_only_with_its_secret_and_not_once_revoked() {
        let (text, mut row) = super::generate("acme", "ci", chrono::Utc::now());
        let (id, secret) = super::split(&text).expect("shape");
        assert_eq!(id, row.id);
        assert!(super::verify(secret, &row));
        assert!(!super::verify(&"0".repeat(48), &row));
        assert!(!row.hash.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is not stored");
        row.revoked_at = Some(chrono::Utc::now());
        assert!(!super::verify(secret, &row));
        assert_eq!(super::split("cogo_zz_abc"), None);
        assert_eq!(super::split("reader-token"), None);
        let (other, _) = super::generate("acme", "ci", chrono::Utc::now());
        assert_ne!(text.as_str(), other.as_str());
        assert!(super::valid_tenant("acme-1") && !super::valid_tenant("a b") && !super::valid_tenant(""));
        let (edge_text, edge) = super::generate_edge(&["noop".to_owned()], "pc", chrono::Utc::now());
        let (_, edge_secret) = super::split(&edge_text).expect("shape");
        assert!(super::verify(edge_secret, &edge));
        assert_eq!((edge.tenant.as_str(), edge.roles), ("", Some(vec!["noop".to_owned()])));
    }
}
