//! The bus conformance suite: every case runs on SQLite and on PostgreSQL.

mod cases;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::cases::$name(test_support::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::cases::$name(test_support::postgres().await).await;
                }
            )*
        }
    };
}

conformance!(
    lifecycle_emits_events_in_order,
    duplicate_enqueue_returns_the_existing_message,
    concurrent_duplicate_enqueue_creates_one_row,
    sixteen_concurrent_claimers_never_share_a_message,
    expired_leases_are_reclaimed_and_counted,
    retry_waits_for_its_backoff,
    handler_detail_reaches_events_and_the_mcp_summary,
    sealed_secrets_are_stored_replaced_and_removed,
    api_tokens_are_stored_listed_and_revoked_once,
    goals_are_durable_versioned_and_follow_their_lifecycle,
    dead_letters_after_max_attempts_and_requeues_once,
    cancel_only_queued_messages,
    bad_input_is_rejected_with_clear_errors,
    listing_filters_and_pages,
    priority_orders_claims_and_shards_route,
    presence_online_heartbeat_offline_and_stale,
    release_returns_work_without_counting_an_attempt,
    circuits_and_queue_stats_are_visible_to_another_store,
    prune_removes_only_old_finished_work,
    enqueue_wakes_a_waiting_worker,
    a_flooding_tenant_does_not_starve_another,
    follow_events_streams_new_events,
    integrity_check_finds_torn_message_states,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_killed_mid_run_loses_nothing() {
    cases::connection_killed_mid_run_loses_nothing(test_support::postgres().await).await;
}

#[test]
fn unknown_database_urls_are_refused() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let err = runtime
        .block_on(store::Store::open("mysql://u:secret@h/db", store::StoreOptions::default()))
        .expect_err("mysql is not a backend");
    let text = err.to_string();
    assert!(text.contains("unsupported database URL") && !text.contains("secret"), "{text}");
}

/// On SQLite the WAL reaches the database file through the checkpointer's own connection, even
/// for far less than the 1,000 pages after which a writer would checkpoint by SQLite's default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_is_checkpointed_off_the_writer() {
    let t = test_support::sqlite().await;
    let file = std::path::PathBuf::from(t.url.trim_start_matches("sqlite://"));
    let before = std::fs::metadata(&file).expect("the database file").len();
    let padding = "x".repeat(1000);
    let messages: Vec<_> = (0..500)
        .map(|n| {
            model::NewMessage::new(
                "mcp",
                "gateway",
                model::Intent::new("mcp_call").expect("intent"),
                serde_json::json!({"n": n, "padding": padding}),
            )
        })
        .collect();
    t.store.enqueue_batch(messages).await.expect("enqueue");
    // about 200 pages in the WAL; the database file grows only when they are checkpointed
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = std::fs::metadata(&file).expect("the database file").len();
        if now >= before + 500 * 1000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the WAL was not checkpointed: {before} -> {now} bytes");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let reopened = t.reopen().await;
    let stats = reopened.queue_stats().await.expect("queue stats");
    assert_eq!(stats.iter().map(|q| q.ready).sum::<i64>(), 500, "{stats:?}");
}

/// A real PgBouncer in front of the local PostgreSQL, as `postgres` (PgBouncer refuses to run as
/// root), in `pool_mode`; stopped when dropped.
struct PgBouncer {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    fn start(pool_mode: &str) -> Self {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .expect("PgBouncer is required for this test: apt-get install pgbouncer (scripts/test does)");
        let admin: sqlx::postgres::PgConnectOptions =
            test_support::postgres_admin_url().parse().expect("the test database URL");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = tempfile::tempdir().expect("temp dir");
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\ntest = host={} port={} dbname={} user={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir =\nauth_type = any\npool_mode = {pool_mode}\n\
                 default_pool_size = 2\nignore_startup_parameters = extra_float_digits,options,search_path\n\
                 logfile = {}\n",
                admin.get_host(),
                admin.get_port(),
                admin.get_database().unwrap_or("test"),
                admin.get_username(),
                dir.path().join("pgbouncer.log").display(),
            ),
        )
        .expect("writing pgbouncer.ini");
        // as `postgres` when root, with setpriv, which execs (killing the child kills PgBouncer)
        let mut command = if is_root() {
            std::process::Command::new("chmod").args(["-R", "a+rwX"]).arg(dir.path()).status().expect("chmod");
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", binary]);
            c
        } else {
            std::process::Command::new(binary)
        };
        let child = command
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting pgbouncer");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "pgbouncer did not listen on {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { child, port, dir }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/test", self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Behind a transaction pooler LISTEN/NOTIFY delivers nothing: opening the store says so and names
/// the fix instead of running a bus whose wake-ups never come; a session pooler works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_pooler_is_refused_at_start_up_and_a_session_pooler_works() {
    let transaction = PgBouncer::start("transaction");
    let err = store::Store::open(&transaction.url(), store::StoreOptions::default())
        .await
        .expect_err("LISTEN/NOTIFY cannot work through a transaction pooler");
    let text = err.to_string();
    assert!(matches!(err, store::Error::NoNotifications { .. }), "{text}");
    assert!(text.contains("transaction pooler") && text.contains("session"), "{text}");

    let session = PgBouncer::start("session");
    let store = store::Store::open(&session.url(), store::StoreOptions::default()).await.expect("a session pooler");
    assert_eq!(store.kind(), store::BackendKind::Postgres);
    store.close().await;
}
