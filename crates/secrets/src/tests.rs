use super::*;

fn key(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; 32], "test")
}

#[tokio::test]
async fn values_round_trip_and_never_sit_in_clear() {
    let t = test_support::sqlite().await;
    let vault = Vault::new(t.store.clone(), key(7));
    vault.set("FIGMA_API_KEY", "figd_super_secret_value").await.expect("set");
    assert_eq!(vault.get("FIGMA_API_KEY").await.expect("get").as_str(), "figd_super_secret_value");
    let sealed = t.store.secret("FIGMA_API_KEY").await.expect("read").expect("stored");
    assert!(!String::from_utf8_lossy(&sealed.ciphertext).contains("super_secret"), "the stored value is sealed");
    assert_eq!(sealed.key_id, vault.key().fingerprint());
    // a new value replaces the old one
    vault.set("FIGMA_API_KEY", "figd_rotated").await.expect("set again");
    assert_eq!(vault.get("FIGMA_API_KEY").await.expect("get").as_str(), "figd_rotated");
    let names: Vec<String> = vault.list().await.expect("list").into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["FIGMA_API_KEY"]);
    assert!(vault.remove("FIGMA_API_KEY").await.expect("remove"));
    assert!(!vault.remove("FIGMA_API_KEY").await.expect("remove again"));
    assert!(matches!(vault.get("FIGMA_API_KEY").await, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn a_wrong_key_a_moved_row_and_bad_input_are_named() {
    let t = test_support::sqlite().await;
    let vault = Vault::new(t.store.clone(), key(1));
    vault.set("TOKEN_A", "value-a").await.expect("set");
    let other = Vault::new(t.store.clone(), key(2));
    let err = other.get("TOKEN_A").await.expect_err("wrong key");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("set COGO_MASTER_KEY to the key it was sealed with"), "{err}");
    // a row copied under another name does not open: the name is bound to the value
    let mut sealed = t.store.secret("TOKEN_A").await.expect("read").expect("stored");
    sealed.name = "TOKEN_B".into();
    t.store.put_secret(sealed).await.expect("copy");
    assert!(matches!(vault.get("TOKEN_B").await, Err(Error::Corrupt { .. })));
    assert!(matches!(vault.set("lower_case", "v").await, Err(Error::BadName { .. })));
    assert!(matches!(vault.set("1ABC", "v").await, Err(Error::BadName { .. })));
    assert!(matches!(vault.set("EMPTY", "").await, Err(Error::BadValue { .. })));
    let huge = "x".repeat(MAX_VALUE_BYTES + 1);
    assert!(matches!(vault.set("HUGE", &huge).await, Err(Error::BadValue { .. })));
    assert_eq!(vault.list().await.expect("list").len(), 2, "failed sets stored nothing");
}

#[test]
fn the_key_file_is_created_private_and_refused_when_readable_by_others() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("nested").join(KEY_FILE);
    let first = MasterKey::from_file(&path).expect("created");
    let again = MasterKey::from_file(&path).expect("read back");
    assert_eq!(first.fingerprint(), again.fingerprint(), "the same key is read back");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = MasterKey::from_file(&path).expect_err("too open");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
    std::fs::write(dir.path().join("bad.key"), "not hex").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("bad.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let err = MasterKey::from_file(&dir.path().join("bad.key")).expect_err("bad key");
    assert!(matches!(err, Error::BadKey { .. }), "{err}");
    assert!(!format!("{first:?}").contains(&"07".repeat(8)), "Debug shows no key bytes");
    assert_ne!(key(1).fingerprint(), key(2).fingerprint());
}
