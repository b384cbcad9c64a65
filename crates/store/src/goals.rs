//! Goal state shared by both backends: the filter, and the checks every write passes.

use model::goal::{Goal, GoalStatus, GoalUpdate};

use crate::Error;

/// Most goals one listing returns.
pub const MAX_GOALS_PAGE: u32 = 500;
/// Largest goal state kept, in bytes of JSON.
pub const MAX_GOAL_STATE_BYTES: usize = 4 * 1024 * 1024;

/// Which goals to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoalFilter {
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only goals in one of these states (empty: any).
    pub statuses: Vec<GoalStatus>,
    /// Only the goal of this trace.
    pub trace_id: Option<String>,
    /// Goals older than this id (the `next` of the previous page).
    pub before: Option<String>,
    /// How many (1 to [`MAX_GOALS_PAGE`]).
    pub limit: u32,
}

/// Checks an update against the goal as it is now.
pub(crate) fn check_update(current: &Goal, update: &GoalUpdate) -> Result<(), Error> {
    if current.version != update.expected_version {
        return Err(Error::GoalConflict {
            id: current.id.clone(),
            detail: format!(
                "it changed since it was read (version {} now, {} expected): read it again",
                current.version, update.expected_version
            ),
        });
    }
    if !(current.status == update.status || current.status.can_become(update.status)) || current.status.is_final() {
        return Err(Error::GoalConflict {
            id: current.id.clone(),
            detail: format!("it is {} and cannot become {}", current.status, update.status),
        });
    }
    let size = update.state.to_string().len();
    if size > MAX_GOAL_STATE_BYTES {
        return Err(Error::InvalidGoal {
            detail: format!("state of goal {} is {size} bytes, over the limit of {MAX_GOAL_STATE_BYTES}", current.id),
        });
    }
    Ok(())
}

/// Clamps a listing's limit.
pub(crate) fn page_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_GOALS_PAGE))
}
