//! A second process for the cross-process tests of the resilience crate: it opens the store at
//! `argv[1]`, fails calls through breaker `argv[2]` until it opens, records the transitions as
//! process `argv[3]`, and exits. Not part of the `cogo` binary.

use std::sync::Arc;

use model::ErrorKind;
use model::breaker::Outcome;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, agent] = args.as_slice() else {
        eprintln!("usage: resilience-probe DATABASE_URL BREAKER_KEY AGENT_ID");
        return std::process::ExitCode::from(2);
    };
    let store = match store::Store::open(url, store::StoreOptions::default()).await {
        Ok(store) => store,
        Err(err) => {
            eprintln!("error: opening the store: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = tokio::spawn(resilience::record_transitions(store.clone(), agent.clone(), rx));
    let breakers = resilience::Breakers::new(Arc::new(resilience::Policies::seed()), Some(tx));
    let mut attempts = 0;
    while breakers.acquire(key).is_ok() && attempts < 1000 {
        if let Ok(permit) = breakers.acquire(key) {
            breakers.record(key, permit, Outcome::Failure(ErrorKind::Transport));
        }
        attempts += 1;
    }
    drop(breakers);
    let _ = recorder.await;
    store.close().await;
    std::process::ExitCode::SUCCESS
}
