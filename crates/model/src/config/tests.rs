use super::*;

fn check_err(file: ConfigFile, text: &str) -> Vec<ConfigError> {
    file.check(file.file_name(), text).expect_err("must be rejected")
}

#[test]
fn seed_configs_are_valid() {
    for file in ConfigFile::ALL {
        if let Err(errors) = file.check(file.file_name(), file.seed()) {
            panic!("{}: {errors:?}", file.file_name());
        }
    }
}

#[test]
fn seed_defaults_match_the_brief() {
    let mcp: McpConfig = parse("mcp.json", ConfigFile::Mcp.seed()).expect("valid");
    assert_eq!(mcp.toolsets["figma"].url.as_deref(), Some("ws://localhost:3007"));
    assert_eq!(mcp.toolsets["browser"].url.as_deref(), Some("ws://localhost:3004"));
    let retry: RetryFile = parse("retry_policy.json", ConfigFile::Retry.seed()).expect("valid");
    assert!(retry.policies.contains_key("mcp.call.browser.browser_navigate"));
    let breaker: BreakerFile = parse("circuit_breaker.json", ConfigFile::Breaker.seed()).expect("valid");
    assert!(breaker.breakers.contains_key("mcp.call.browser.get_title.0"));
}

/// Each broken variant names the file, the key path and the problem.
#[test]
fn broken_variants_name_file_path_and_problem() {
    let cases: &[(ConfigFile, &str, &str, &str)] = &[
        // (file, text, expected path, expected problem fragment)
        (
            ConfigFile::Mcp,
            r#"{"toolsets": {"figma": {"url": "ws://localhost:3007", "urll": 1}}}"#,
            "toolsets.figma.urll",
            "unknown field `urll`",
        ),
        (
            ConfigFile::Mcp,
            r#"{"toolsets": {"figma": {"url": "ws://localhost:3007", "timeout_ms": "fast"}}}"#,
            "toolsets.figma.timeout_ms",
            "invalid type: string \"fast\"",
        ),
        (
            ConfigFile::Mcp,
            r#"{"toolsets": {"figma": {"url": "ws//localhost:3007"}}}"#,
            "toolsets.figma.url",
            "is not a valid URL",
        ),
        (
            ConfigFile::Mcp,
            r#"{"toolsets": {"figma": {"url": "ftp://localhost:3007"}}}"#,
            "toolsets.figma.url",
            "scheme \"ftp\"",
        ),
        (
            ConfigFile::Mcp,
            r#"{"toolsets": {"figma": {"url": "ws://a"}, "figma": {"url": "ws://b"}}}"#,
            "toolsets.figma",
            "duplicate key \"figma\"",
        ),
        (ConfigFile::Mcp, r#"{"toolsets": {"figma": {}}}"#, "toolsets.figma", "neither `url` nor `command`"),
        (
            ConfigFile::Mcp,
            r#"{"toolsets": {"figma": {"url": "ws://a", "command": "x"}}}"#,
            "toolsets.figma",
            "both `url` and `command`",
        ),
        (ConfigFile::Mcp, r#"{"toolsets": {"fig ma": {"url": "ws://a"}}}"#, "toolsets[\"fig ma\"]", "toolset name"),
        (
            ConfigFile::Mcp,
            r#"{"toolsets": {"figma": {"url": "ws://a", "timeout_ms": 0}}}"#,
            "toolsets.figma.timeout_ms",
            "0 is out of range",
        ),
        (ConfigFile::Mcp, r#"{"toolsets": {"figma": {"url": "ws://a"}"#, "", "EOF while parsing"),
        (
            ConfigFile::Retry,
            r#"{"policies": {"mcp.call.browser.*": {"max_attempts": 0}}}"#,
            "policies[\"mcp.call.browser.*\"].max_attempts",
            "0 is out of range",
        ),
        (ConfigFile::Retry, r#"{"policies": {"mcp.call.*.x": {}}}"#, "policies[\"mcp.call.*.x\"]", "last segment"),
        (
            ConfigFile::Retry,
            r#"{"default": {"retry_on": ["timeout", "gremlins"]}}"#,
            "default.retry_on[1]",
            "unknown variant `gremlins`",
        ),
        (ConfigFile::Retry, r#"{"default": {"factor": 0.5}}"#, "default.factor", "0.5 is out of range"),
        (
            ConfigFile::Retry,
            r#"{"default": {"base_delay_ms": 500, "max_delay_ms": 100}}"#,
            "default.max_delay_ms",
            "smaller than base_delay_ms",
        ),
        (
            ConfigFile::Breaker,
            r#"{"default": {"failure_rate_threshold": 1.5}}"#,
            "default.failure_rate_threshold",
            "1.5 is out of range",
        ),
        (
            ConfigFile::Breaker,
            r#"{"breakers": {"x": {"min_requests": 30, "window_size": 10}}}"#,
            "breakers.x.min_requests",
            "larger than window_size",
        ),
        (ConfigFile::Breaker, r#"{"default": {"open_ms": -5}}"#, "default.open_ms", "invalid value: integer `-5`"),
        (
            ConfigFile::Routes,
            r#"{"routes": [{"method": "FETCH", "path": "/x", "access": "public"}]}"#,
            "routes[0].method",
            "\"FETCH\" is not a method",
        ),
        (
            ConfigFile::Routes,
            r#"{"routes": [{"method": "GET", "path": "x", "access": "public"}]}"#,
            "routes[0].path",
            "must start with '/'",
        ),
        (
            ConfigFile::Routes,
            r#"{"routes": [{"method": "GET", "path": "/x", "access": "everyone"}]}"#,
            "routes[0].access",
            "unknown variant `everyone`",
        ),
        (ConfigFile::Routes, r#"{"default": "allow", "routes": []}"#, "default", "unknown variant `allow`"),
        (
            ConfigFile::Routes,
            r#"{"routes": [{"method": "GET", "path": "/x", "access": "public"}, {"method": "GET", "path": "/x", "access": "admin"}]}"#,
            "routes[1]",
            "duplicate route GET /x",
        ),
        (ConfigFile::Routes, r#"{}"#, "", "missing field `routes`"),
    ];
    for (file, text, path, problem) in cases {
        let errors = check_err(*file, text);
        let first = &errors[0];
        assert_eq!(first.file, file.file_name(), "{text}");
        assert_eq!(first.path, *path, "{text}: {first}");
        assert!(first.problem.contains(problem), "{text}: {first}");
        let shown = first.to_string();
        assert!(shown.starts_with(file.file_name()) && shown.contains(problem), "{shown}");
    }
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let errors = check_err(ConfigFile::Mcp, "{\n  \"toolsets\": {,}\n}");
    assert_eq!((errors[0].line, errors[0].column), (Some(2), Some(16)));
    assert!(errors[0].to_string().starts_with("mcp.json:2:16: (top level): "), "{}", errors[0]);
}

#[test]
fn validation_reports_every_problem_not_only_the_first() {
    let errors = check_err(
        ConfigFile::Retry,
        r#"{"default": {"max_attempts": 0, "timeout_ms": 0}, "policies": {"a..b": {"factor": 50}}}"#,
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["default.max_attempts", "default.timeout_ms", "policies[\"a..b\"]", "policies[\"a..b\"].factor"]
    );
}

#[test]
fn oversized_files_are_refused() {
    let text = format!("{{\"toolsets\": {{}}, \"x\": \"{}\"}}", "a".repeat(MAX_CONFIG_BYTES));
    assert!(check_err(ConfigFile::Mcp, &text)[0].problem.contains("limit"));
}

#[test]
fn retry_rules_inherit_field_by_field() {
    let file: RetryFile = parse(
        "retry_policy.json",
        r#"{"default": {"max_attempts": 3, "base_delay_ms": 100},
            "policies": {"mcp.call.browser.*": {"max_attempts": 5, "timeout_ms": 9000},
                         "mcp.call.browser.browser_navigate": {"base_delay_ms": 250}}}"#,
    )
    .expect("valid");
    let rules = file.compile();
    let nav = rules.resolve("mcp.call.browser.browser_navigate");
    assert_eq!((nav.max_attempts, nav.base_delay.as_millis(), nav.timeout.as_millis()), (5, 250, 9000));
    let other = rules.resolve("mcp.call.figma.x");
    assert_eq!((other.max_attempts, other.base_delay.as_millis()), (3, 100));
}

#[test]
fn breaker_rules_resolve_instance_keys() {
    let file: BreakerFile = parse("circuit_breaker.json", ConfigFile::Breaker.seed()).expect("valid");
    let rules = file.compile();
    let chain: Vec<&str> = rules.chain("mcp.call.browser.get_title.0").map(|(name, _)| name).collect();
    assert_eq!(chain.first(), Some(&"mcp.call.browser.get_title.0"));
    assert_eq!(chain.last(), Some(&"default"));
}

#[test]
fn routes_deny_by_default_and_require_admin_for_writes() {
    let routes: RoutePolicies = parse(
        "route_policies.json",
        r#"{"routes": [{"method": "GET", "path": "/healthz", "access": "public"},
                       {"method": "*", "path": "/api/mcp/:toolset/:tool", "access": "token"},
                       {"method": "GET", "path": "/assets/*", "access": "public"}]}"#,
    )
    .expect("valid");
    use routes::Access;
    assert_eq!(routes.decide("GET", "/healthz"), Some(Access::Public));
    assert_eq!(routes.decide("GET", "/api/mcp/browser/navigate"), Some(Access::Token));
    assert_eq!(routes.decide("POST", "/api/mcp/browser/navigate"), Some(Access::Admin));
    assert_eq!(routes.decide("GET", "/api/mcp/browser"), None);
    assert_eq!(routes.decide("GET", "/api/mcp/browser/x/y"), None);
    assert_eq!(routes.decide("GET", "/assets/app.js"), Some(Access::Public));
    assert_eq!(routes.decide("GET", "/nowhere"), None);
    assert_eq!(routes.decide("POST", "/healthz"), None);
}

#[test]
fn redaction_hides_secrets() {
    let mcp: McpConfig = parse(
        "mcp.json",
        r#"{"toolsets": {"a": {"command": "x", "env": {"API_KEY": "s3cret"}},
                          "b": {"url": "https://user:pw@host/mcp?token=s3cret", "headers": {"Authorization": "Bearer s3cret"}}}}"#,
    )
    .expect("valid");
    let shown = serde_json::to_string(&mcp.redacted()).expect("json");
    assert!(!shown.contains("s3cret") && !shown.contains("pw@"), "{shown}");
    assert!(shown.contains("API_KEY"));
}

#[test]
fn schemas_describe_every_file() {
    for file in ConfigFile::ALL {
        let schema = file.schema();
        assert_eq!(schema["type"], "object", "{}", file.file_name());
        assert_eq!(schema["additionalProperties"], false, "{}", file.file_name());
    }
    let mcp = ConfigFile::Mcp.schema();
    assert!(mcp["properties"]["toolsets"]["description"].as_str().is_some_and(|d| d.contains("policy keys")));
}

#[test]
fn explain_names_the_rule_behind_each_field() {
    let file: RetryFile = parse("retry_policy.json", ConfigFile::Retry.seed()).expect("valid");
    let explained = file.compile().explain("mcp.call.browser.browser_navigate");
    let source = |field: &str| explained.iter().find(|f| f.field == field).map(|f| (f.from.clone(), f.value.clone()));
    assert_eq!(source("max_attempts"), Some(("mcp.call.browser.browser_navigate".into(), serde_json::json!(4))));
    assert_eq!(source("timeout_ms"), Some(("mcp.call.browser.*".into(), serde_json::json!(45000))));
    assert_eq!(source("jitter"), Some(("default".into(), serde_json::json!("full"))));
    let bare: RetryFile = parse("retry_policy.json", "{}").expect("valid");
    assert!(bare.compile().explain("x").iter().all(|f| f.from == "built-in"));
    let resolved = bare.compile().resolve("x");
    assert_eq!(resolved, crate::retry::RetryPolicy::default());
}
