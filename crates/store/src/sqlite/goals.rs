//! Goals on SQLite: the state as JSON text, every write a compare-and-set on the version.

use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use model::goal::{Goal, GoalStatus, GoalUpdate};

use super::{SqliteBus, at, us};
use crate::Error;
use crate::error::db;
use crate::goals::{GoalFilter, check_update, page_limit};

impl SqliteBus {
    pub(crate) async fn insert_goal(&self, goal: &Goal) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO goals (id, tenant, trace_id, goal, status, state, answer, error, created_at, updated_at, version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&goal.id)
        .bind(&goal.tenant)
        .bind(&goal.trace_id)
        .bind(&goal.goal)
        .bind(goal.status.as_str())
        .bind(goal.state.to_string())
        .bind(&goal.answer)
        .bind(&goal.error)
        .bind(us(goal.created_at))
        .bind(us(goal.updated_at))
        .bind(goal.version)
        .execute(&self.writer)
        .await
        .map_err(db("storing a goal"))?;
        Ok(())
    }

    pub(crate) async fn goal(&self, id: &str) -> Result<Option<Goal>, Error> {
        let row = sqlx::query("SELECT * FROM goals WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db("reading a goal"))?;
        row.as_ref().map(goal_from_row).transpose()
    }

    pub(crate) async fn goals(&self, filter: &GoalFilter) -> Result<Vec<Goal>, Error> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM goals WHERE 1 = 1");
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
            query.push(" AND status IN (");
            let mut list = query.separated(", ");
            for status in &filter.statuses {
                list.push_bind(status.as_str());
            }
            query.push(")");
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(page_limit(filter.limit));
        let rows = query.build().fetch_all(&self.reader).await.map_err(db("listing goals"))?;
        rows.iter().map(goal_from_row).collect()
    }

    pub(crate) async fn update_goal(&self, id: &str, update: &GoalUpdate) -> Result<Goal, Error> {
        let mut tx = self.begin("updating a goal").await?;
        let row = sqlx::query("SELECT * FROM goals WHERE id = ?")
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
        goal.updated_at = self.now();
        goal.version += 1;
        sqlx::query(
            "UPDATE goals SET status = ?, state = ?, answer = ?, error = ?, updated_at = ?, version = ? WHERE id = ?",
        )
        .bind(goal.status.as_str())
        .bind(goal.state.to_string())
        .bind(&goal.answer)
        .bind(&goal.error)
        .bind(us(goal.updated_at))
        .bind(goal.version)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db("updating a goal"))?;
        tx.commit().await.map_err(db("updating a goal"))?;
        Ok(goal)
    }
}

fn goal_from_row(row: &SqliteRow) -> Result<Goal, Error> {
    let read = || -> Result<Goal, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let state: String = row.try_get("state")?;
        Ok(Goal {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant")?,
            trace_id: row.try_get("trace_id")?,
            goal: row.try_get("goal")?,
            status: GoalStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("goal status {status:?}").into()))?,
            state: serde_json::from_str::<Value>(&state).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            answer: row.try_get("answer")?,
            error: row.try_get("error")?,
            created_at: at(row.try_get("created_at")?),
            updated_at: at(row.try_get("updated_at")?),
            version: row.try_get("version")?,
        })
    };
    read().map_err(|e| Error::Corrupt { what: "goal", detail: e.to_string() })
}
