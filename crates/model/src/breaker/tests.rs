use proptest::prelude::*;

use super::*;

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_rate_threshold: 0.5,
        min_requests: 4,
        window_size: 10,
        window_ms: 1_000,
        open_ms: 500,
        half_open_probes: 2,
        ..BreakerConfig::default()
    }
}

fn call(b: &mut CircuitBreaker, now: u64, outcome: Outcome) -> (Result<Permit, Rejected>, Vec<Transition>) {
    let (permit, t1) = b.try_acquire(now);
    let mut transitions: Vec<Transition> = t1.into_iter().collect();
    if let Ok(permit) = permit {
        transitions.extend(b.record(now, permit, outcome));
    }
    (permit, transitions)
}

#[test]
fn opens_at_the_threshold_only_after_min_requests() {
    let mut b = CircuitBreaker::new(config());
    let fail = Outcome::Failure(ErrorKind::Timeout);
    assert_eq!(call(&mut b, 0, fail).1, vec![]);
    assert_eq!(call(&mut b, 1, fail).1, vec![]);
    assert_eq!(call(&mut b, 2, fail).1, vec![]);
    assert_eq!(b.state(), BreakerState::Closed, "3 requests < min_requests 4");
    assert_eq!(call(&mut b, 3, fail).1, vec![Transition::Opened]);
    assert_eq!(b.state(), BreakerState::Open { until_ms: 503 });
    assert_eq!(call(&mut b, 100, Outcome::Success).0, Err(Rejected { retry_at_ms: 503 }));
}

#[test]
fn lifecycle_open_half_open_closed_step_by_step() {
    let mut b = CircuitBreaker::new(config());
    for t in 0..4 {
        let _ = call(&mut b, t, Outcome::Failure(ErrorKind::Transport));
    }
    let mut states = vec![b.state().name()];
    // due: first probe moves to half-open
    let (permit, t) = b.try_acquire(503);
    assert_eq!((permit, t), (Ok(Permit::Probe), Some(Transition::HalfOpened)));
    states.push(b.state().name());
    // a second probe is allowed, a third is not
    assert_eq!(b.try_acquire(504).0, Ok(Permit::Probe));
    assert!(b.try_acquire(505).0.is_err());
    assert_eq!(b.record(506, Permit::Probe, Outcome::Success), None);
    assert_eq!(b.record(507, Permit::Probe, Outcome::Success), Some(Transition::Closed));
    states.push(b.state().name());
    assert_eq!(states, ["open", "half_open", "closed"]);
    assert_eq!(b.window(), (0, 0), "closing starts a fresh window");
}

#[test]
fn a_failed_probe_opens_again() {
    let mut b = CircuitBreaker::new(config());
    for t in 0..4 {
        let _ = call(&mut b, t, Outcome::Failure(ErrorKind::Transport));
    }
    assert_eq!(
        call(&mut b, 600, Outcome::Failure(ErrorKind::Timeout)).1,
        vec![Transition::HalfOpened, Transition::Opened]
    );
    assert_eq!(b.state(), BreakerState::Open { until_ms: 1_100 });
}

#[test]
fn kinds_outside_the_failure_set_do_not_count() {
    let mut b = CircuitBreaker::new(config());
    for t in 0..10 {
        assert_eq!(call(&mut b, t, Outcome::Failure(ErrorKind::InvalidInput)).1, vec![]);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.window(), (10, 0));
}

#[test]
fn old_outcomes_leave_the_window() {
    let mut b = CircuitBreaker::new(config());
    for t in 0..3 {
        let _ = call(&mut b, t, Outcome::Failure(ErrorKind::Transport));
    }
    // 2 s later the three failures are forgotten; one more failure is 1 of 1 < min_requests
    assert_eq!(call(&mut b, 2_000, Outcome::Failure(ErrorKind::Transport)).1, vec![]);
    assert_eq!(b.window(), (1, 1));
}

proptest! {
    /// Whatever the sequence, the window's counters match its contents, half-open never hands out
    /// more probes than allowed, and an open breaker never permits a call before its time.
    #[test]
    fn invariants_hold_for_any_sequence(steps in proptest::collection::vec((0u64..300, 0u8..4), 1..300)) {
        let mut b = CircuitBreaker::new(config());
        let mut now = 0u64;
        let mut outstanding: Vec<Permit> = Vec::new();
        for (dt, action) in steps {
            now += dt;
            let before = b.state();
            match action {
                0 | 1 => {
                    let (permit, _) = b.try_acquire(now);
                    if let BreakerState::Open { until_ms } = before
                        && now < until_ms { prop_assert!(permit.is_err()); }
                    if let Ok(permit) = permit { outstanding.push(permit); }
                }
                2 => if let Some(p) = outstanding.pop() { b.record(now, p, Outcome::Success); },
                _ => if let Some(p) = outstanding.pop() { b.record(now, p, Outcome::Failure(ErrorKind::Timeout)); },
            }
            let (len, failures) = b.window();
            prop_assert!(failures <= len && len <= 10);
            if let BreakerState::HalfOpen { in_flight, successes } = b.state() {
                prop_assert!(in_flight + successes <= 2);
            }
        }
    }
}
