//! `configs/route_policies.json`: the deny-by-default allowlist of HTTP routes.
//!
//! Invariant: a request whose method and path match no rule is denied; the first matching rule in
//! file order decides; non-GET requests need the admin token when `require_admin_for_non_get` is on.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KeyPath, Validate};

/// `configs/route_policies.json`: who may call which HTTP route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicies {
    /// What happens to a route no rule matches. Only `deny` is accepted: the allowlist is explicit.
    #[serde(default)]
    pub default: DefaultAction,
    /// Non-GET requests need the admin token (`x-admin-token`) whatever their rule says.
    #[serde(default = "default_true")]
    pub require_admin_for_non_get: bool,
    /// The allowlist, first match wins.
    pub routes: Vec<RouteRule>,
}

fn default_true() -> bool {
    true
}

/// The action for unmatched routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    /// Refuse.
    #[default]
    Deny,
}

/// One allowed route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// HTTP method (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS`) or `*` for any.
    pub method: String,
    /// Path template: literal segments, `:name` for one segment, `*` as the last segment for the rest.
    pub path: String,
    /// Who may call it: `public`, `token` (any valid API token) or `admin` (the admin token).
    pub access: Access,
    /// What the route is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone.
    Public,
    /// A valid API token or the admin token.
    Token,
    /// The admin token only.
    Admin,
}

const METHODS: [&str; 8] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*"];

impl RoutePolicies {
    /// The access a request needs, or `None` when it is denied (no rule matches).
    pub fn decide(&self, method: &str, path: &str) -> Option<Access> {
        let rule = self.routes.iter().find(|rule| {
            (rule.method == "*" || rule.method.eq_ignore_ascii_case(method)) && template_matches(&rule.path, path)
        })?;
        let is_read = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
        if self.require_admin_for_non_get && !is_read { Some(Access::Admin) } else { Some(rule.access) }
    }
}

impl RoutePolicies {
    /// The methods allowed for `path` (to answer 405 with `Allow` for another method).
    pub fn methods_for(&self, path: &str) -> Vec<String> {
        let mut methods: Vec<String> = self
            .routes
            .iter()
            .filter(|rule| rule.method != "*" && template_matches(&rule.path, path))
            .map(|rule| rule.method.to_ascii_uppercase())
            .collect();
        methods.sort();
        methods.dedup();
        methods
    }
}

/// Whether a path template (`/api/mcp/:toolset/:tool`, `/assets/*`) matches a request path.
pub fn template_matches(template: &str, path: &str) -> bool {
    let mut template_segments = template.trim_start_matches('/').split('/');
    let mut path_segments = path.trim_start_matches('/').split('/');
    loop {
        match (template_segments.next(), path_segments.next()) {
            (None, None) => return true,
            (Some("*"), Some(segment)) => return !segment.is_empty(),
            (Some(t), Some(p)) if t.starts_with(':') => {
                if p.is_empty() {
                    return false;
                }
            }
            (Some(t), Some(p)) if t == p => {}
            _ => return false,
        }
    }
}

impl Validate for RoutePolicies {
    fn validate(&self, path: &KeyPath, problems: &mut Vec<(String, String)>) {
        let mut seen = HashSet::new();
        for (index, rule) in self.routes.iter().enumerate() {
            let here = path.key("routes").index(index);
            if !METHODS.contains(&rule.method.as_str()) {
                here.key("method")
                    .problem(problems, format!("{:?} is not a method: use one of {}", rule.method, METHODS.join(", ")));
            }
            if !rule.path.starts_with('/') {
                here.key("path").problem(problems, format!("{:?} must start with '/'", rule.path));
            } else {
                let segments: Vec<&str> = rule.path[1..].split('/').collect();
                for (position, segment) in segments.iter().enumerate() {
                    let bad = (*segment == "*" && position + 1 != segments.len())
                        || (segment.starts_with(':') && segment.len() == 1)
                        || segment.contains(['?', '#', ' ', '\\'])
                        || *segment == ".."
                        || (segment.is_empty() && position + 1 != segments.len());
                    if bad {
                        here.key("path")
                            .problem(problems, format!("{:?} has an invalid segment {segment:?}", rule.path));
                        break;
                    }
                }
            }
            if !seen.insert((rule.method.clone(), rule.path.clone())) {
                here.problem(
                    problems,
                    format!("duplicate route {} {}: each method and path may appear once", rule.method, rule.path),
                );
            }
        }
    }
}
