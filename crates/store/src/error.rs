//! The store's error type: what was being done, and whether trying again can help.

use model::MessageId;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL has an unknown scheme.
    #[error("unsupported database URL {url:?}: use sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB")]
    BadUrl {
        /// The URL, password hidden.
        url: String,
    },
    /// A message in an enqueue breaks the bus's rules.
    #[error("rejecting message {index} of the batch")]
    InvalidMessage {
        /// Position in the batch.
        index: usize,
        /// What is wrong.
        #[source]
        source: model::message::InvalidMessage,
    },
    /// A result too large to keep inline.
    #[error(
        "result of message {id} is {size} bytes of JSON, over the inline limit of {max}: store it as an artifact and pass result_url"
    )]
    ResultTooLarge {
        /// The message.
        id: MessageId,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No such message.
    #[error("message {id} not found")]
    NotFound {
        /// The id asked for.
        id: MessageId,
    },
    /// The message is in a state that does not allow the operation.
    #[error("cannot {action} message {id}: it is {status}")]
    Conflict {
        /// The message.
        id: MessageId,
        /// What was asked.
        action: &'static str,
        /// Its current status.
        status: String,
    },
    /// A pagination cursor that this store did not hand out.
    #[error("invalid page cursor {cursor:?}: pass the `next` value of the previous page")]
    BadCursor {
        /// The cursor.
        cursor: String,
    },
    /// The database failed or could not be reached.
    #[error("{what}")]
    Database {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying migrations failed.
    #[error("migrating the {backend} schema")]
    Migrate {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// Stored data could not be read back.
    #[error("reading stored {what}: {detail}")]
    Corrupt {
        /// What was read.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A knowledge write or query breaks the index's rules (wrong dimension, too large, bad filter).
    #[error("knowledge index: {detail}")]
    InvalidKnowledge {
        /// What is wrong and what to do.
        detail: String,
    },
    /// The PostgreSQL server has no pgvector, which the knowledge tables need.
    #[error(
        "the PostgreSQL server has no pgvector extension, which the knowledge index needs: install pgvector on it (scripts/pgvector starts a local PostgreSQL with pgvector)"
    )]
    NoVectorExtension {
        /// The server's answer.
        #[source]
        source: sqlx::Error,
    },
    /// The PostgreSQL connection does not deliver LISTEN/NOTIFY: a transaction pooler is in between.
    #[error(
        "PostgreSQL at {url} does not deliver LISTEN/NOTIFY ({detail}). COGO needs session connections: a transaction pooler (PgBouncer with pool_mode = transaction, Supabase's pooler on port 6543) cannot keep a LISTEN. Connect to the server directly or through a session pooler (PgBouncer pool_mode = session; Supabase: the direct connection or the session pooler on port 5432)"
    )]
    NoNotifications {
        /// The URL, password hidden.
        url: String,
        /// What the probe saw.
        detail: String,
    },
    /// No such goal.
    #[error("goal {id} not found")]
    GoalNotFound {
        /// The id asked for.
        id: String,
    },
    /// A goal write that its current state does not allow.
    #[error("cannot change goal {id}: {detail}")]
    GoalConflict {
        /// The goal.
        id: String,
        /// Why, and what to do.
        detail: String,
    },
    /// A goal that breaks the rules (empty, too long, bad tenant, state too large).
    #[error("invalid goal: {detail}")]
    InvalidGoal {
        /// What is wrong.
        detail: String,
    },
    /// A broken internal expectation.
    #[error("internal store error: {what}")]
    Internal {
        /// What was expected.
        what: &'static str,
    },
}

impl Error {
    /// Whether the same call may succeed later (connection trouble, pool exhausted, lock conflicts).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database { source, .. } => match source {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => {
                    // Postgres: serialization failure, deadlock, too many connections, admin shutdown,
                    // cannot connect now; SQLite: busy, locked.
                    matches!(
                        db.code().as_deref(),
                        Some("40001" | "40P01" | "53300" | "57P01" | "57P03" | "5" | "6" | "517")
                    )
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// Wraps a driver error with what was being done.
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database { what, source }
}
