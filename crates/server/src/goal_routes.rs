//! The goal routes: submit a goal, list and read goals (with their decision records), answer an
//! approval, cancel. A tenant token reads only its tenant's goals.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json, Router, routing::get, routing::post};
use serde::Deserialize;
use serde_json::json;

use model::config::agent::Budget;
use model::goal::GoalStatus;

use crate::error::ApiPath;
use crate::routes::query;
use crate::{ApiError, AppState, ErrorCode, Scope};

/// What the goal routes need.
#[derive(Debug, Clone)]
pub struct GoalsApi {
    /// The artifact store holding the decision records (`artifacts/decisions/`).
    pub artifacts: artifacts::Artifacts,
    /// The budget of a goal that names none (agent_policy.json).
    pub budget: Budget,
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/goals", post(submit).get(list))
        .route("/api/goals/{id}", get(read))
        .route("/api/goals/{id}/approvals/{step}", post(approve))
        .route("/api/goals/{id}/cancel", post(cancel))
}

fn api(state: &AppState) -> Result<&Arc<GoalsApi>, ApiError> {
    state.goals.as_ref().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "goals are not served by this process"))
}

impl From<agent::Error> for ApiError {
    fn from(err: agent::Error) -> Self {
        match err {
            agent::Error::Invalid(why) => Self::new(ErrorCode::InvalidRequest, why),
            agent::Error::Conflict(why) => Self::new(ErrorCode::Conflict, why),
            agent::Error::Store(store::Error::GoalNotFound { id }) => {
                Self::new(ErrorCode::NotFound, format!("goal {id} not found"))
            }
            agent::Error::Store(store::Error::InvalidGoal { detail }) => Self::new(ErrorCode::InvalidRequest, detail),
            agent::Error::Store(other) => other.into(),
            other => {
                tracing::error!(error = %other, "goal route failed");
                Self::new(ErrorCode::Internal, "internal error; see the server log")
            }
        }
    }
}

/// Budget overrides of one goal.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetBody {
    /// Most steps dispatched over all plans.
    #[serde(default, deserialize_with = "whole")]
    #[schemars(range(min = 1, max = 100))]
    max_steps: Option<u32>,
    /// Most replans.
    #[serde(default, deserialize_with = "whole")]
    #[schemars(range(min = 0, max = 10))]
    max_replans: Option<u32>,
    /// Most seconds.
    #[serde(default, deserialize_with = "whole")]
    #[schemars(range(min = 1, max = 86400))]
    max_seconds: Option<u64>,
    /// Most model tokens.
    #[serde(default, deserialize_with = "whole")]
    #[schemars(range(min = 100, max = 10000000))]
    max_tokens: Option<u64>,
}

/// A whole number that JSON may write as `50` or `50.0` (both are the integer 50 to JSON Schema).
fn whole<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let value: Option<f64> = serde::Deserialize::deserialize(deserializer)?;
    value
        .map(|v| {
            if v.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&v) {
                T::try_from(v as u64).map_err(|_| serde::de::Error::custom(format!("{v} is out of range")))
            } else {
                Err(serde::de::Error::custom(format!("{v} is not a whole number of 0 or more")))
            }
        })
        .transpose()
}

/// Body of `POST /api/goals`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GoalBody {
    /// What to achieve (no control characters but newlines and tabs).
    #[schemars(length(min = 1, max = 2000), regex(pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"))]
    goal: String,
    /// Owning tenant (default `default`).
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    tenant: Option<String>,
    /// Limits (defaults from agent_policy.json). Read as a value first: serde would take a
    /// struct from an array too, and the schema says object.
    #[schemars(with = "Option<BudgetBody>")]
    budget: Option<serde_json::Value>,
}

async fn submit(
    State(state): State<AppState>,
    body: Result<Json<GoalBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let api = api(&state)?;
    let body = crate::mcp_routes::body(body)?;
    let given: BudgetBody = match body.budget {
        None | Some(serde_json::Value::Null) => BudgetBody::default(),
        Some(value @ serde_json::Value::Object(_)) => serde_json::from_value(value)
            .map_err(|err| ApiError::new(ErrorCode::InvalidRequest, format!("budget: {err}")))?,
        Some(_) => return Err(ApiError::new(ErrorCode::InvalidRequest, "budget must be an object")),
    };
    let budget = Budget {
        max_steps: given.max_steps.unwrap_or(api.budget.max_steps),
        max_replans: given.max_replans.unwrap_or(api.budget.max_replans),
        max_seconds: given.max_seconds.unwrap_or(api.budget.max_seconds),
        max_tokens: given.max_tokens.unwrap_or(api.budget.max_tokens),
    };
    let tenant = body.tenant.unwrap_or_else(|| model::message::DEFAULT_TENANT.to_owned());
    let goal = agent::submit(&state.store, &tenant, &body.goal, budget).await?;
    Ok((StatusCode::CREATED, Json(goal)))
}

/// Query of `GET /api/goals`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GoalsQuery {
    /// Only this tenant's (tenant tokens: always their own).
    #[schemars(length(min = 1, max = 128))]
    tenant: Option<String>,
    /// Only goals in this state.
    status: Option<GoalStatus>,
    /// The `next` of the previous page (a goal id).
    #[schemars(length(min = 1, max = 64))]
    before: Option<String>,
    /// Goals per page (at most 500).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
}

async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    q: Result<Query<GoalsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=store::goals::MAX_GOALS_PAGE).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, format!("limit {limit} must be 1 to 500")));
    }
    for (name, value, max) in [("tenant", q.tenant.as_deref(), 128), ("before", q.before.as_deref(), 64)] {
        if let Some(value) = value
            && (value.is_empty() || value.len() > max)
        {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("{name} must be 1 to {max} characters")));
        }
    }
    let tenant = scope.tenant().map(str::to_owned).or(q.tenant);
    let filter = store::goals::GoalFilter {
        tenant,
        statuses: q.status.into_iter().collect(),
        trace_id: None,
        before: q.before,
        limit,
    };
    let goals = state.store.goals(&filter).await?;
    let next = (goals.len() == limit as usize).then(|| goals.last().map(|g| g.id.clone())).flatten();
    Ok(Json(json!({ "goals": goals, "next": next })))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if uuid_like(id) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::InvalidRequest, format!("{id:?} is not a goal id (a UUID)")))
    }
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36
        && id
            .chars()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

async fn goal_for(state: &AppState, scope: &Scope, id: &str) -> Result<model::goal::Goal, ApiError> {
    check_id(id)?;
    let goal = state.store.goal(id).await.map_err(|err| ApiError::from(agent::Error::Store(err)))?;
    if scope.tenant().is_some_and(|tenant| tenant != goal.tenant) {
        return Err(ApiError::new(ErrorCode::NotFound, format!("goal {id} not found")));
    }
    Ok(goal)
}

async fn read(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let api = api(&state)?;
    let goal = goal_for(&state, &scope, &id).await?;
    let decisions = agent::DecisionLog::new(api.artifacts.clone()).read(&goal.trace_id).await.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "decision records not read");
        Vec::new()
    });
    Ok(Json(json!({ "goal": goal, "decisions": decisions })))
}

/// Body of `POST /api/goals/{id}/approvals/{step}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalBody {
    /// Approve (true) or reject (false).
    approve: bool,
    /// Why.
    #[schemars(length(max = 500))]
    reason: Option<String>,
}

async fn approve(
    State(state): State<AppState>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    body: Result<Json<ApprovalBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    check_id(&id)?;
    let body = crate::mcp_routes::body(body)?;
    let reason = body.reason.unwrap_or_default();
    let goal = agent::decide(&state.store, &id, &step, body.approve, "api", &reason).await?;
    Ok(Json(goal))
}

async fn cancel(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<impl IntoResponse, ApiError> {
    check_id(&id)?;
    let goal = agent::approvals::cancel(&state.store, &id, "api").await?;
    Ok(Json(goal))
}
