//! The rows a chat writes on the way to and after its first token: the session, the question
//! and its answer, the answer's checkpoints and final save. On a SQLite file they are written
//! inline on a connection of their own ([`store::InlineSqlite`], no thread hop per statement,
//! a turn's statements in one transaction); on other databases through the pool.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set};
use store::inline::{self, InlineSqlite, rusqlite};

use super::{ROLE_ASSISTANT, ROLE_USER};
use store::entities::{chat_messages, chat_sessions, model_configs as configs};

#[derive(Clone)]
pub struct ChatRows {
    db: DatabaseConnection,
    inline: Option<Arc<InlineSqlite>>,
}

/// A question saved with its answer's (empty, streaming) row, and the messages before them.
pub struct Turn {
    pub history: Vec<chat_messages::Model>,
    pub question: chat_messages::Model,
    pub answer: chat_messages::Model,
}

/// How an answer ended, as saved with it.
pub struct FinalAnswer {
    pub content: String,
    pub reasoning: String,
    pub finish_reason: String,
    pub metrics: String,
}

const INSERT_MESSAGE: &str = "INSERT INTO chat_messages (session_id, role, content, model_name, model_config_id, is_streaming, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id";

const SELECT_MESSAGES: &str = "SELECT id, session_id, role, content, thinking, model_name, model_config_id, is_streaming, \
     finish_reason, metrics, created_at FROM chat_messages WHERE session_id = ?1 ORDER BY id";

impl ChatRows {
    pub fn new(db: DatabaseConnection, inline: Option<InlineSqlite>) -> Self {
        Self { db, inline: inline.map(Arc::new) }
    }

    pub async fn create_session(&self, user_id: i32, title: String, now: DateTime<Utc>) -> Result<chat_sessions::Model, DbErr> {
        let Some(inline) = &self.inline else {
            let session = chat_sessions::ActiveModel {
                user_id: Set(user_id),
                title: Set(title),
                created_at: Set(now),
                updated_at: Set(None),
                ..Default::default()
            };
            return session.insert(&self.db).await;
        };
        let at = inline::timestamp(now);
        let id = inline
            .run(|c| {
                c.prepare_cached("INSERT INTO chat_sessions (user_id, title, created_at) VALUES (?1, ?2, ?3) RETURNING id")?
                    .query_row(rusqlite::params![user_id, title, at], |r| r.get(0))
            })
            .await?;
        Ok(chat_sessions::Model { id, user_id, title, created_at: now, updated_at: None })
    }

    /// Saves `question` and its answer's row in session `session_id` and reads the messages
    /// before them. `None` when the session is gone (its foreign key refused the rows).
    pub async fn start_turn(
        &self,
        session_id: i32,
        question: String,
        config: &configs::Model,
        now: DateTime<Utc>,
    ) -> Result<Option<Turn>, DbErr> {
        let question = new_message(session_id, ROLE_USER, question, None, now);
        let answer = new_message(session_id, ROLE_ASSISTANT, String::new(), Some(config), now);
        let Some(inline) = &self.inline else { return self.start_turn_pooled(question, answer).await };
        let at = inline::timestamp(now);
        let ids = inline
            .run(|c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let history = select_messages(&tx, session_id)?;
                let mut insert = tx.prepare_cached(INSERT_MESSAGE)?;
                let mut ids = [0; 2];
                for (id, m) in ids.iter_mut().zip([&question, &answer]) {
                    let row = rusqlite::params![session_id, m.role, m.content, m.model_name, m.model_config_id, m.is_streaming, at];
                    match insert.query_row(row, |r| r.get(0)) {
                        Ok(new) => *id = new,
                        Err(err) if inline::is_foreign_key_violation(&err) => return Ok(None),
                        Err(err) => return Err(err),
                    }
                }
                drop(insert);
                tx.commit()?;
                Ok(Some((history, ids)))
            })
            .await?;
        Ok(ids.map(|(history, [question_id, answer_id])| Turn {
            history,
            question: chat_messages::Model { id: question_id, ..question },
            answer: chat_messages::Model { id: answer_id, ..answer },
        }))
    }

    async fn start_turn_pooled(&self, question: chat_messages::Model, answer: chat_messages::Model) -> Result<Option<Turn>, DbErr> {
        let session_id = question.session_id;
        // The history is read beside the insert (the session is claimed: nothing else changes
        // it), with or without the new rows.
        let (history, inserted) = tokio::join!(super::messages(&self.db, session_id), self.insert_pair(question, answer));
        let (question, answer) = match inserted {
            Err(err) if matches!(err.sql_err(), Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))) => return Ok(None),
            inserted => inserted?,
        };
        let mut history = match history {
            Ok(history) => history,
            Err(err) => {
                self.abandon_pooled(answer.id).await;
                return Err(err);
            }
        };
        history.retain(|m| m.id != question.id && m.id != answer.id);
        Ok(Some(Turn { history, question, answer }))
    }

    /// Where the database returns inserted rows, one statement.
    async fn insert_pair(
        &self,
        question: chat_messages::Model,
        answer: chat_messages::Model,
    ) -> Result<(chat_messages::Model, chat_messages::Model), DbErr> {
        let [question, answer] = [question, answer].map(unsaved);
        if !self.db.support_returning() {
            return Ok((question.insert(&self.db).await?, answer.insert(&self.db).await?));
        }
        let rows = chat_messages::Entity::insert_many([question, answer]).exec_with_returning(&self.db).await?;
        // The order of returned rows is not specified; the roles tell them apart.
        let (questions, answers): (Vec<_>, Vec<_>) = rows.into_iter().partition(|m| m.role == ROLE_USER);
        match (<[_; 1]>::try_from(questions), <[_; 1]>::try_from(answers)) {
            (Ok([question]), Ok([answer])) => Ok((question, answer)),
            _ => Err(DbErr::Custom("inserting a question and its answer returned other rows".into())),
        }
    }

    /// The row of an answer to the last question of session `session_id` (a regenerated or
    /// re-sent answer; a new question's comes with it from [`Self::start_turn`]).
    pub async fn insert_answer(&self, session_id: i32, config: &configs::Model, now: DateTime<Utc>) -> Result<chat_messages::Model, DbErr> {
        let answer = new_message(session_id, ROLE_ASSISTANT, String::new(), Some(config), now);
        let Some(inline) = &self.inline else {
            return unsaved(answer).insert(&self.db).await;
        };
        let at = inline::timestamp(now);
        let id = inline
            .run(|c| {
                c.prepare_cached(INSERT_MESSAGE)?.query_row(
                    rusqlite::params![session_id, answer.role, answer.content, answer.model_name, answer.model_config_id, answer.is_streaming, at],
                    |r| r.get(0),
                )
            })
            .await?;
        Ok(chat_messages::Model { id, ..answer })
    }

    /// Writes an answer's text so far; the row stays streaming with no finish reason.
    pub async fn checkpoint(&self, id: i32, content: String, reasoning: String) -> Result<(), DbErr> {
        let thinking = (!reasoning.is_empty()).then_some(reasoning);
        let Some(inline) = &self.inline else {
            let row = chat_messages::ActiveModel { id: Set(id), content: Set(content), thinking: Set(thinking), ..Default::default() };
            return row.update(&self.db).await.map(drop);
        };
        inline
            .run(|c| {
                c.prepare_cached("UPDATE chat_messages SET content = ?1, thinking = ?2 WHERE id = ?3")?
                    .execute(rusqlite::params![content, thinking, id])
                    .map(drop)
            })
            .await
    }

    /// Saves an answer as it ended, and marks its session as updated now; where the session
    /// still has the default title, names it `title`.
    pub async fn finish(&self, id: i32, answer: FinalAnswer, session_id: i32, title: Option<String>, now: DateTime<Utc>) -> Result<(), DbErr> {
        let FinalAnswer { content, reasoning, finish_reason, metrics } = answer;
        let thinking = (!reasoning.is_empty()).then_some(reasoning);
        let Some(inline) = &self.inline else {
            let row = chat_messages::ActiveModel {
                id: Set(id),
                content: Set(content),
                thinking: Set(thinking),
                is_streaming: Set(false),
                finish_reason: Set(Some(finish_reason)),
                metrics: Set(Some(metrics)),
                ..Default::default()
            };
            row.update(&self.db).await?;
            // The answer is saved; a session that does not show it as its latest is no reason
            // to report it lost.
            if let Err(err) = self.touch_session_pooled(session_id, title, now).await {
                tracing::warn!(error = %err, session_id, "updating a session after its answer failed");
            }
            return Ok(());
        };
        let (at, unnamed) = (inline::timestamp(now), crate::routes::chat::DEFAULT_TITLE);
        inline
            .run(|c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.prepare_cached("UPDATE chat_messages SET content = ?1, thinking = ?2, is_streaming = 0, finish_reason = ?3, metrics = ?4 WHERE id = ?5")?
                    .execute(rusqlite::params![content, thinking, finish_reason, metrics, id])?;
                tx.prepare_cached("UPDATE chat_sessions SET updated_at = ?1, title = CASE WHEN ?2 IS NOT NULL AND title = ?3 THEN ?2 ELSE title END WHERE id = ?4")?
                    .execute(rusqlite::params![at, title, unnamed, session_id])?;
                tx.commit()
            })
            .await
    }

    async fn touch_session_pooled(&self, session_id: i32, title: Option<String>, now: DateTime<Utc>) -> Result<(), DbErr> {
        use sea_orm::sea_query::Expr;
        let mut update = chat_sessions::Entity::update_many()
            .col_expr(chat_sessions::Column::UpdatedAt, Expr::value(now))
            .filter(chat_sessions::Column::Id.eq(session_id));
        if let Some(title) = title {
            let unnamed = chat_sessions::Column::Title.eq(crate::routes::chat::DEFAULT_TITLE);
            update = update.col_expr(chat_sessions::Column::Title, Expr::case(unnamed, title).finally(Expr::col(chat_sessions::Column::Title)).into());
        }
        update.exec(&self.db).await.map(drop)
    }

    /// Ends an answer row that was inserted but will not be streamed (the history could not be
    /// read beside its insert), so it does not show as streaming until the next start. Best
    /// effort: the failure that got here is usually the database's. The inline path needs none:
    /// its turn is one transaction.
    async fn abandon_pooled(&self, answer_id: i32) {
        let ended = chat_messages::ActiveModel {
            id: Set(answer_id),
            is_streaming: Set(false),
            finish_reason: Set(Some("error".to_owned())),
            ..Default::default()
        }
        .update(&self.db)
        .await;
        if let Err(err) = ended {
            tracing::warn!(error = %err, message_id = answer_id, "ending an answer that could not start failed");
        }
    }
}

/// A new message row (its id is the database's to give): an answer starts empty and streaming.
fn new_message(session_id: i32, role: &str, content: String, config: Option<&configs::Model>, now: DateTime<Utc>) -> chat_messages::Model {
    chat_messages::Model {
        id: 0,
        session_id,
        role: role.to_owned(),
        content,
        thinking: None,
        model_name: config.map(|c| c.model_name.clone()),
        model_config_id: config.map(|c| c.id.clone()),
        is_streaming: role == ROLE_ASSISTANT,
        finish_reason: None,
        metrics: None,
        created_at: now,
    }
}

/// `m` as a row to insert: every column but the id, which the database gives.
fn unsaved(m: chat_messages::Model) -> chat_messages::ActiveModel {
    chat_messages::ActiveModel {
        session_id: Set(m.session_id),
        role: Set(m.role),
        content: Set(m.content),
        thinking: Set(m.thinking),
        model_name: Set(m.model_name),
        model_config_id: Set(m.model_config_id),
        is_streaming: Set(m.is_streaming),
        finish_reason: Set(m.finish_reason),
        metrics: Set(m.metrics),
        created_at: Set(m.created_at),
        ..Default::default()
    }
}

/// The session's messages, oldest first.
fn select_messages(c: &rusqlite::Connection, session_id: i32) -> rusqlite::Result<Vec<chat_messages::Model>> {
    let mut select = c.prepare_cached(SELECT_MESSAGES)?;
    let rows = select.query_map([session_id], |r| {
        Ok(chat_messages::Model {
            id: r.get(0)?,
            session_id: r.get(1)?,
            role: r.get(2)?,
            content: r.get(3)?,
            thinking: r.get(4)?,
            model_name: r.get(5)?,
            model_config_id: r.get(6)?,
            is_streaming: r.get(7)?,
            finish_reason: r.get(8)?,
            metrics: r.get(9)?,
            created_at: inline::parse_timestamp(&r.get::<_, String>(10)?)?,
        })
    })?;
    rows.collect()
}
