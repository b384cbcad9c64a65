use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn policy(jitter: Jitter) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(100),
        factor: 2.0,
        max_delay: Duration::from_millis(1000),
        jitter,
        deadline: Some(Duration::from_secs(10)),
        ..RetryPolicy::default()
    }
}

#[test]
fn schedule_without_jitter_doubles_up_to_the_cap() {
    let p = policy(Jitter::None);
    let delays: Vec<u128> = (1..=6).map(|n| p.delay(n, 0.5).as_millis()).collect();
    assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
}

#[test]
fn full_and_equal_jitter_spread_within_their_bounds() {
    assert_eq!(policy(Jitter::Full).delay(3, 0.0), Duration::ZERO);
    assert_eq!(policy(Jitter::Full).delay(3, 0.5), Duration::from_millis(200));
    assert_eq!(policy(Jitter::Equal).delay(3, 0.0), Duration::from_millis(200));
    assert_eq!(policy(Jitter::Equal).delay(3, 1.0), Duration::from_millis(400));
}

#[test]
fn decisions_follow_kind_attempts_and_deadline() {
    let p = policy(Jitter::None);
    assert_eq!(
        p.decide(ErrorKind::Timeout, 1, Duration::ZERO, 0.3),
        RetryDecision::RetryAfter(Duration::from_millis(100))
    );
    assert_eq!(
        p.decide(ErrorKind::ToolError, 1, Duration::ZERO, 0.3),
        RetryDecision::GiveUp(GiveUpReason::NotRetryable(ErrorKind::ToolError))
    );
    assert_eq!(
        p.decide(ErrorKind::Transport, 5, Duration::ZERO, 0.3),
        RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 5 })
    );
    assert_eq!(
        p.decide(ErrorKind::Transport, 2, Duration::from_millis(9_900), 0.3),
        RetryDecision::GiveUp(GiveUpReason::DeadlineExceeded)
    );
}

#[test]
fn odd_random_inputs_stay_in_bounds() {
    let p = policy(Jitter::Full);
    for random in [f64::NAN, f64::INFINITY, -1.0, 2.0] {
        assert!(p.delay(2, random) <= p.max_delay);
    }
}

#[test]
fn error_kind_sets() {
    let set = ErrorKinds::of(&[ErrorKind::Timeout, ErrorKind::ToolError]);
    assert!(set.contains(ErrorKind::Timeout) && set.contains(ErrorKind::ToolError));
    assert!(!set.contains(ErrorKind::Transport));
    assert_eq!(set.iter().collect::<Vec<_>>(), vec![ErrorKind::Timeout, ErrorKind::ToolError]);
}

proptest! {
    #[test]
    fn delays_never_exceed_the_cap_and_grow_without_jitter(
        base in 1u64..5_000, cap in 1u64..120_000, factor in 1.0f64..10.0, attempt in 1u32..200, random in 0.0f64..1.0,
    ) {
        let p = RetryPolicy { base_delay: Duration::from_millis(base), max_delay: Duration::from_millis(cap), factor, jitter: Jitter::Full, ..RetryPolicy::default() };
        prop_assert!(p.delay(attempt, random) <= p.max_delay);
        let fixed = RetryPolicy { jitter: Jitter::None, ..p };
        prop_assert!(fixed.delay(attempt, random) <= fixed.delay(attempt + 1, random));
    }

    #[test]
    fn never_retries_past_max_attempts(max in 1u32..20, attempts in 0u32..40, random in 0.0f64..1.0) {
        let p = RetryPolicy { max_attempts: max, deadline: None, ..RetryPolicy::default() };
        let decision = p.decide(ErrorKind::Transport, attempts, Duration::ZERO, random);
        prop_assert_eq!(matches!(decision, RetryDecision::RetryAfter(_)), attempts < max);
    }
}
