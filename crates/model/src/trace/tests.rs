use super::*;

#[test]
fn parses_and_prints_the_w3c_example() {
    let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ctx = TraceContext::parse(header).expect("valid header");
    assert_eq!(ctx.to_string(), header);
    assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ctx.flags, 1);
}

#[test]
fn rejects_bad_headers_with_a_reason() {
    let cases = [
        ("", "traceparent must look like"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "must look like"),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "trace-id is not lower-case hex"),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace-id must not be all zeros"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent-id must not be all zeros"),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff is invalid"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "must look like"),
        ("0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version is not"),
    ];
    for (header, expected) in cases {
        let error = TraceContext::parse(header).expect_err(header).to_string();
        assert!(error.contains(expected), "{header:?}: {error}");
    }
}

#[test]
fn accepts_future_versions_with_extra_fields() {
    let ctx =
        TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future").expect("future version");
    assert_eq!(ctx.flags, 0);
}

#[test]
fn root_trace_ids_begin_with_their_time_and_end_random() {
    let mut random = rand::rng();
    let earlier = TraceContext::from_time_and_random(1_764_000_000_000, &mut random);
    let later = TraceContext::from_time_and_random(1_764_000_000_001, &mut random);
    let same_time = TraceContext::from_time_and_random(1_764_000_000_001, &mut random);
    assert_eq!(&earlier.trace_id_hex()[..12], "019ab697e800");
    assert!(earlier.trace_id_hex() < later.trace_id_hex(), "later ids sort after earlier ones");
    assert_eq!(later.trace_id[..6], same_time.trace_id[..6]);
    assert_ne!(later.trace_id[6..], same_time.trace_id[6..], "the ten rightmost bytes are random");
    assert!(TraceContext::parse(&later.to_string()).is_ok(), "still a valid traceparent");
    let now = TraceContext::new_root();
    assert!(now.trace_id_hex() > later.trace_id_hex(), "new roots carry the current time");
}

#[test]
fn new_roots_and_children_are_valid_and_share_the_trace() {
    let root = TraceContext::new_root();
    assert!(is_valid_trace_id(&root.trace_id_hex()));
    let child = root.child(&mut rand::rng());
    assert_eq!(child.trace_id, root.trace_id);
    assert_eq!(TraceContext::parse(&child.to_string()), Ok(child));
}

proptest::proptest! {
    #[test]
    fn round_trips_any_nonzero_context(trace in proptest::array::uniform16(proptest::num::u8::ANY),
                                       parent in proptest::array::uniform8(proptest::num::u8::ANY),
                                       flags in proptest::num::u8::ANY) {
        proptest::prop_assume!(trace != [0; 16] && parent != [0; 8]);
        let ctx = TraceContext { trace_id: trace, parent_id: parent, flags };
        proptest::prop_assert_eq!(TraceContext::parse(&ctx.to_string()), Ok(ctx));
    }
}
