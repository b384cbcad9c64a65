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
