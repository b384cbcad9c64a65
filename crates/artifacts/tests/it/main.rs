//! The artifact store's behaviour, the same on the local directory and on a real S3-compatible
//! server (moto, started by `scripts/s3 start`).

use artifacts::{ArtifactError, Artifacts, Backend};

/// A store of each kind, each in a fresh place.
struct Stores {
    local: Artifacts,
    s3: Artifacts,
    _dir: tempfile::TempDir,
}

fn stores() -> Stores {
    let dir = tempfile::tempdir().expect("scratch dir");
    let local = Artifacts::local(dir.path()).expect("local store");
    let s3 = Artifacts::s3_with_settings(&test_support::s3_url(), test_support::s3_settings()).expect("s3 store");
    Stores { local, s3, _dir: dir }
}

/// Runs `check` on both stores.
macro_rules! on_both {
    ($name:ident, $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let stores = stores();
            $check(&stores.local).await;
            $check(&stores.s3).await;
        }
    };
}

on_both!(a_probe_writes_reads_and_deletes, probe);
on_both!(files_round_trip_whole_and_are_replaced_whole, round_trip);
on_both!(listings_show_plain_names_sorted_with_sizes, listings);
on_both!(walks_find_every_file_under_a_directory_up_to_a_limit, walks);
on_both!(bad_paths_are_refused_before_the_store_is_asked, bad_paths);
on_both!(missing_and_oversized_files_are_told_apart, missing_and_large);
on_both!(many_writes_at_once_all_land, many_at_once);
on_both!(concurrent_writers_to_one_file_leave_one_whole_version, racing_writers);
on_both!(a_local_directory_uploads_with_its_layout, upload);
on_both!(writes_behind_the_caller_are_bounded_read_back_and_flushed, behind);

async fn behind(store: &Artifacts) {
    let calls = artifacts::MAX_BEHIND + 44;
    let mut written = Vec::with_capacity(calls);
    for n in 0..calls {
        let dir = format!("artifacts/mcp/behind/T{n:04}");
        written.push(
            store.put_all_behind(&dir, vec![("summary.json".to_owned(), format!("{{\"n\": {n}}}").into_bytes())]).await,
        );
        assert!(store.in_flight() <= artifacts::MAX_BEHIND, "{} writes in flight", store.in_flight());
    }
    // a reader waits for the write in flight under its path: the last call's file is there
    let last = store.get(&format!("artifacts/mcp/behind/T{:04}/summary.json", calls - 1), 100).await.expect("get");
    assert_eq!(last.as_ref(), format!("{{\"n\": {}}}", calls - 1).as_bytes(), "{}", store.location());
    // and a listing above them waits for every one
    assert_eq!(store.list("artifacts/mcp/behind").await.expect("list").len(), calls, "{}", store.location());
    store.flush().await;
    assert_eq!(store.in_flight(), 0);
    for w in &written {
        w.outcome().await.expect("written");
    }
    // a write that fails says why through its outcome, and nothing stays in flight
    let bad =
        store.put_all_behind("artifacts/mcp/behind/T0", vec![("../escape.json".to_owned(), b"{}".to_vec())]).await;
    let why = bad.outcome().await.expect_err("refused");
    assert!(why.contains("escape.json"), "{why}");
    store.flush().await;
    assert_eq!(store.in_flight(), 0);
}

async fn probe(store: &Artifacts) {
    store.probe("probe-test").await.unwrap_or_else(|e| panic!("{}: {e}", store.location()));
    // the probe leaves nothing behind, and its hidden directory is never listed
    assert!(store.list("artifacts").await.is_err_and(|e| matches!(e, ArtifactError::NotFound(_))));
}

async fn round_trip(store: &Artifacts) {
    let png: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    store.put("artifacts/mcp/browser/T1/image-0.png", png.clone()).await.expect("put");
    store.put("artifacts/mcp/browser/T1/request.json", b"{\"a\": 1}".to_vec()).await.expect("put");
    let read = store.get("artifacts/mcp/browser/T1/image-0.png", 1 << 20).await.expect("get");
    assert_eq!(read.as_ref(), png.as_slice(), "{}", store.location());
    assert_eq!(store.size("artifacts/mcp/browser/T1/image-0.png").await.expect("size"), Some(70_000));
    // a directory is not a file
    assert_eq!(store.size("artifacts/mcp/browser/T1").await.expect("size"), None);
    store.put("artifacts/mcp/browser/T1/request.json", b"{}".to_vec()).await.expect("replace");
    let read = store.get("artifacts/mcp/browser/T1/request.json", 100).await.expect("get");
    assert_eq!(read.as_ref(), b"{}");
    store.delete("artifacts/mcp/browser/T1/request.json").await.expect("delete");
    store.delete("artifacts/mcp/browser/T1/request.json").await.expect("delete again is fine");
    assert_eq!(store.size("artifacts/mcp/browser/T1/request.json").await.expect("size"), None);
}

async fn listings(store: &Artifacts) {
    let files = vec![
        ("summary.json".to_owned(), b"{\"s\": 1}".to_vec()),
        ("request.json".to_owned(), b"{\"r\": 22}".to_vec()),
        ("response.json".to_owned(), vec![b'x'; 1000]),
    ];
    store.put_all("artifacts/mcp/everything/T2", files).await.expect("put_all");
    store.put("artifacts/mcp/everything/T3/summary.json", b"{}".to_vec()).await.expect("put");
    store.put("artifacts/mcp/figma/T1/error.json", b"{}".to_vec()).await.expect("put");
    let call = store.list("artifacts/mcp/everything/T2").await.expect("list");
    let shown: Vec<(&str, bool, u64)> = call.iter().map(|e| (e.name.as_str(), e.dir, e.bytes)).collect();
    assert_eq!(
        shown,
        [("request.json", false, 9), ("response.json", false, 1000), ("summary.json", false, 8)],
        "{}",
        store.location()
    );
    let toolsets = store.list("artifacts/mcp").await.expect("list");
    let shown: Vec<(&str, bool)> = toolsets.iter().map(|e| (e.name.as_str(), e.dir)).collect();
    assert_eq!(shown, [("everything", true), ("figma", true)]);
    let err = store.list("artifacts/mcp/nothing-here").await.expect_err("empty");
    assert_eq!(err, ArtifactError::NotFound("artifacts/mcp/nothing-here".into()));
}

async fn walks(store: &Artifacts) {
    for n in 0..25 {
        store.put(&format!("artifacts/decisions/abc/{n}.json"), format!("{n}").into_bytes()).await.expect("put");
    }
    store.put("artifacts/decisions/abcd/1.json", b"other".to_vec()).await.expect("put");
    let mut found = store.walk("artifacts/decisions/abc", 1_000).await.expect("walk");
    found.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(found.len(), 25, "{}: a sibling with a longer name is not under the directory", store.location());
    assert!(found.iter().all(|f| f.path.starts_with("artifacts/decisions/abc/")), "{found:?}");
    assert_eq!(found.iter().find(|f| f.path.ends_with("/10.json")).map(|f| f.bytes), Some(2));
    assert_eq!(store.walk("artifacts/decisions/abc", 10).await.expect("walk").len(), 10);
    assert!(store.walk("artifacts/decisions/none", 10).await.expect("walk").is_empty());
}

async fn bad_paths(store: &Artifacts) {
    for bad in [
        "",
        "mcp/x/y.json",
        "/artifacts/x",
        "artifacts/../secret",
        "artifacts/mcp/../../x",
        "artifacts//x",
        "artifacts/.hidden",
        "artifacts/a b",
        "artifacts/x/",
        "artifacts/x\\..\\y",
    ] {
        let refused = |r: Result<(), ArtifactError>| matches!(r, Err(ArtifactError::InvalidPath { .. }));
        assert!(refused(store.put(bad, b"x".to_vec()).await), "put {bad:?}");
        assert!(refused(store.put("artifacts", b"x".to_vec()).await), "put artifacts");
        assert!(refused(store.get(bad, 10).await.map(|_| ())), "get {bad:?}");
        assert!(refused(store.list(bad).await.map(|_| ())), "list {bad:?}");
        assert!(refused(store.walk(bad, 10).await.map(|_| ())), "walk {bad:?}");
        assert!(refused(store.size(bad).await.map(|_| ())), "size {bad:?}");
    }
}

async fn missing_and_large(store: &Artifacts) {
    let err = store.get("artifacts/mcp/x/T1/response.json", 10).await.expect_err("missing");
    assert_eq!(err, ArtifactError::NotFound("artifacts/mcp/x/T1/response.json".into()));
    store.put("artifacts/mcp/x/T1/response.json", vec![0u8; 100]).await.expect("put");
    let err = store.get("artifacts/mcp/x/T1/response.json", 99).await.expect_err("too large");
    assert!(matches!(err, ArtifactError::TooLarge { limit: 99, .. }), "{err}");
}

async fn many_at_once(store: &Artifacts) {
    let files: Vec<(String, Vec<u8>)> = (0..200).map(|n| (format!("f{n:03}.json"), vec![b'a'; n])).collect();
    store.put_all("artifacts/gate-run/many", files).await.expect("put_all");
    let listed = store.list("artifacts/gate-run/many").await.expect("list");
    assert_eq!(listed.len(), 200);
    assert!(listed.iter().enumerate().all(|(n, e)| e.name == format!("f{n:03}.json") && e.bytes == n as u64));
}

async fn racing_writers(store: &Artifacts) {
    let versions: Vec<Vec<u8>> = (0..8u8).map(|n| vec![b'a' + n; 256 * 1024]).collect();
    let writes = versions.iter().map(|v| store.put("artifacts/codegen/race/1.py", v.clone()));
    for written in futures_util::future::join_all(writes).await {
        written.expect("put");
    }
    let read = store.get("artifacts/codegen/race/1.py", 1 << 20).await.expect("get");
    assert!(versions.iter().any(|v| v.as_slice() == read.as_ref()), "{}: a torn file", store.location());
}

async fn upload(store: &Artifacts) {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("stage-1")).expect("mkdir");
    std::fs::write(dir.path().join("report.json"), "{}").expect("write");
    std::fs::write(dir.path().join("stage-1/log.txt"), "line").expect("write");
    std::fs::write(dir.path().join(".hidden"), "no").expect("write");
    let copied = store.upload_dir(dir.path(), "artifacts/gate-run/G1").await.expect("upload");
    assert_eq!(copied, 2);
    let read = store.get("artifacts/gate-run/G1/stage-1/log.txt", 100).await.expect("get");
    assert_eq!(read.as_ref(), b"line");
    let names: Vec<String> =
        store.list("artifacts/gate-run/G1").await.expect("list").into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["report.json", "stage-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_deployments_apart() {
    let a = Artifacts::s3_with_settings(&test_support::s3_url(), test_support::s3_settings()).expect("a");
    let b = Artifacts::s3_with_settings(&test_support::s3_url(), test_support::s3_settings()).expect("b");
    a.put("artifacts/mcp/t/T1/summary.json", b"a".to_vec()).await.expect("put");
    assert!(matches!(b.get("artifacts/mcp/t/T1/summary.json", 10).await, Err(ArtifactError::NotFound(_))));
    assert!(b.walk("artifacts/mcp", 10).await.expect("walk").is_empty());
    assert_eq!(a.backend(), Backend::S3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_missing_bucket_fails_the_probe_with_the_place_and_no_secrets() {
    // nothing listens on port 9 (discard) on loopback
    let settings = test_support::s3_settings_at("http://127.0.0.1:9");
    let store = Artifacts::s3_with_settings("s3://cogo-test/x", settings).expect("store");
    let err = store.probe("t").await.expect_err("unreachable");
    let text = err.to_string();
    assert!(text.contains("s3://cogo-test/x at http://127.0.0.1:9"), "{text}");
    assert!(!text.contains("cogo-test-secret"), "{text}");
    let missing = format!("s3://no-such-bucket-{}", model::new_id().simple());
    let store = Artifacts::s3_with_settings(&missing, test_support::s3_settings()).expect("store");
    let err = store.probe("t").await.expect_err("no bucket");
    assert!(matches!(err, ArtifactError::Store { .. }), "{err}");
    assert!(!err.to_string().contains("cogo-test-secret"), "{err}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_symbolic_links_out_of_the_artifacts_are_refused_and_never_listed() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Artifacts::local(dir.path()).expect("store");
    store.put("artifacts/mcp/t/T1/response.json", b"ok".to_vec()).await.expect("put");
    std::fs::write(dir.path().join("secret.txt"), "TOP-SECRET").expect("secret");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("artifacts/mcp/evil")).expect("symlink");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("artifacts/mcp/t/T1/leak.json"))
        .expect("symlink");
    for path in ["artifacts/mcp/evil/secret.txt", "artifacts/mcp/t/T1/leak.json"] {
        let err = store.get(path, 100).await.expect_err(path);
        assert!(matches!(err, ArtifactError::InvalidPath { .. }), "{path}: {err}");
    }
    assert!(matches!(store.list("artifacts/mcp/evil").await, Err(ArtifactError::InvalidPath { .. })));
    let names: Vec<String> = store.list("artifacts/mcp").await.expect("list").into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["t"]);
    let walked = store.walk("artifacts/mcp", 100).await.expect("walk");
    assert_eq!(walked.len(), 1, "{walked:?}");
    assert_eq!(
        store.location(),
        std::fs::canonicalize(dir.path()).expect("path").join("artifacts").display().to_string()
    );
}
