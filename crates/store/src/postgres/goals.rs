//! Goals on PostgreSQL: the state as JSONB, every write a compare-and-set on the version under a
//! row lock.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use model::goal::{Goal, GoalStatus, GoalUpdate};

use super::PgBus;
use crate::Error;
use crate::error::db;
use crate::goals::{GoalFilter, check_update, page_limit};

impl PgBus {
    pub(crate) async fn insert_goal(&self, goal: &Goal) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO goals (id, tenant, trace_id, goal, status, state, answer, error, created_at, updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&goal.id)
        .bind(&goal.tenant)
        .bind(&goal.trace_id)
        .bind(&goal.goal)
        .bind(goal.status.as_str())
        .bind(&goal.state)
        .bind(&goal.answer)
        .bind(&goal.error)
        .bind(goal.created_at)
        .bind(goal.updated_at)
        .bind(goal.version)
        .execute(&self.pool)
        .await
        .map_err(db("storing a goal"))?;
        Ok(())
    }

    pub(crate) async fn goal(&self, id: &str) -> Result<Option<Goal>, Error> {
        let row = sqlx::query("SELECT * FROM goals WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a goal"))?;
        row.as_ref().map(goal_from_row).transpose()
    }

    pub(crate) async fn goals(&self, filter: &GoalFilter) -> Result<Vec<Goal>, Error> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT * FROM goals WHERE TRUE");
        if let Some(tenant) = &filter.tenant {
            query.push(" AND tenant = ").push_bind(tenant.clone());
        }
        if let Some(trace) = &filter.trace_id {
            query.push(" AND trace_id = ").push_bind(trace.clone());
        }
        if let Some(before) = &filter.before {
            query.push(" AND id < ").push_bind(before.clone());
        }
        if !filter.statuses.is_empty() {
            let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            query.push(" AND status = ANY(").push_bind(statuses).push(")");
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(page_limit(filter.limit));
        let rows = query.build().fetch_all(&self.pool).await.map_err(db("listing goals"))?;
        rows.iter().map(goal_from_row).collect()
    }

    pub(crate) async fn update_goal(&self, id: &str, update: &GoalUpdate) -> Result<Goal, Error> {
        let mut tx = self.pool.begin().await.map_err(db("updating a goal"))?;
        let row = sqlx::query("SELECT * FROM goals WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("updating a goal"))?;
        let mut goal =
            row.as_ref().map(goal_from_row).transpose()?.ok_or_else(|| Error::GoalNotFound { id: id.into() })?;
        check_update(&goal, update)?;
        goal.status = update.status;
        goal.state = update.state.clone();
        goal.answer = update.answer.clone();
        goal.error = update.error.clone();
        goal.updated_at = self.options().clock.now();
        goal.version += 1;
        sqlx::query(
            "UPDATE goals SET status = $1, state = $2, answer = $3, error = $4, updated_at = $5, version = $6 WHERE id = $7",
        )
        .bind(goal.status.as_str())
        .bind(&goal.state)
        .bind(&goal.answer)
        .bind(&goal.error)
        .bind(goal.updated_at)
        .bind(goal.version)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db("updating a goal"))?;
        tx.commit().await.map_err(db("updating a goal"))?;
        Ok(goal)
    }
}

fn goal_from_row(row: &PgRow) -> Result<Goal, Error> {
    let read = || -> Result<Goal, sqlx::Error> {
        let status: String = row.try_get("status")?;
        Ok(Goal {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant")?,
            trace_id: row.try_get("trace_id")?,
            goal: row.try_get("goal")?,
            status: GoalStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("goal status {status:?}").into()))?,
            state: row.try_get("state")?,
            answer: row.try_get("answer")?,
            error: row.try_get("error")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    };
    read().map_err(|e| Error::Corrupt { what: "goal", detail: e.to_string() })
}
