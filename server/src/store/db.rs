//! One body of SQL for both engines (issue 7: the PostgreSQL backend).
//!
//! [`Pool`] is SQLite's or PostgreSQL's connection pool; a query is written once, with
//! `$1 … $n` placeholders (PostgreSQL's, and sqlx-sqlite binds `$N` by number too),
//! built with [`q`], given owned [`Arg`]s, and run on either engine; a row is read
//! with [`DbRow::get`], for any column type both engines decode ([`Col`]). Nothing is
//! generic over `sqlx::Database`: each engine's arm is concrete, so the compiler checks
//! that both engines can bind and read what the store uses.
//!
//! The store moves onto this one module at a time; what has moved is an `impl Pool`
//! block (API tokens and object owners, audit log, backtests, MQTT users, retention so far) that
//! `Store` (SQLite) offers, and
//! `PgStore` exposes through [`PgStore::db`](super::postgres::PgStore::db). The rest
//! of the store is still SQLite's own. The queries that have moved must be portable
//! SQL: no `INSERT OR IGNORE` (`ON CONFLICT DO NOTHING`), no scalar `MAX(a, b)`, no
//! `rowid`, no SQLite-only functions.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Decode, PgPool, Postgres, Row, Sqlite, SqlitePool, Transaction, Type};

/// SQLite's or PostgreSQL's connection pool; cheap to clone.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The PostgreSQL advisory lock a write transaction holds (`pg_advisory_xact_lock`):
/// one writer at a time across every server on the database, as SQLite's write lock
/// gives on one file. The key is arbitrary but fixed ("wearcast" in ASCII).
pub const WRITE_LOCK: i64 = 0x7765_6172_6361_7374;

/// A write transaction on either engine; see [`Pool::begin_write`].
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Pool {
    /// A write transaction that holds the database's one writer's place until it ends:
    /// on SQLite, `BEGIN IMMEDIATE` (its write lock, taken up front, so writers queue
    /// within the busy timeout instead of one that read first failing); on PostgreSQL,
    /// [`WRITE_LOCK`], so that a read-then-write in it sees no other writer's change
    /// meanwhile, whichever server replica runs it.
    pub async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Self::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Tx::Postgres(tx)
            }
        })
    }
}

impl Tx {
    /// Commits (and, on PostgreSQL, releases [`WRITE_LOCK`]). Dropped without it, the
    /// transaction rolls back.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }
}

/// A column type both engines decode.
pub trait Col:
    Type<Sqlite> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + for<'r> Decode<'r, Postgres>
{
}

impl<T> Col for T where
    T: Type<Sqlite> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + for<'r> Decode<'r, Postgres>
{
}

/// A row from either engine.
pub enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl DbRow {
    /// Column `col`, decoded as `T`.
    pub fn get<T: Col>(&self, col: &str) -> Result<T, sqlx::Error> {
        match self {
            Self::Sqlite(r) => r.try_get(col),
            Self::Postgres(r) => r.try_get(col),
        }
    }
}

/// A bound value: what the store binds, owned, so one query runs on either engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
}

/// `impl From<$t> for Arg`, one per type the store binds.
macro_rules! arg_from {
    ($($t:ty => |$v:ident| $e:expr;)*) => {
        $(impl From<$t> for Arg {
            fn from($v: $t) -> Self {
                $e
            }
        })*
    };
}

arg_from! {
    i64 => |v| Self::Int(Some(v));
    Option<i64> => |v| Self::Int(v);
    f64 => |v| Self::Real(Some(v));
    &str => |v| Self::Text(Some(v.to_owned()));
    String => |v| Self::Text(Some(v));
    &String => |v| Self::Text(Some(v.clone()));
    Option<&str> => |v| Self::Text(v.map(str::to_owned));
    Option<String> => |v| Self::Text(v);
    &Option<String> => |v| Self::Text(v.clone());
}

/// A query of `$N`-numbered SQL with its arguments; see [`q`].
#[derive(Debug)]
pub struct Q {
    sql: &'static str,
    args: Vec<Arg>,
}

/// The query `sql`, whose placeholders are `$1 … $n`.
pub fn q(sql: &'static str) -> Q {
    Q {
        sql,
        args: Vec::new(),
    }
}

/// The highest `$N` in `sql` (0 when there is none). Placeholders inside quoted
/// strings are not counted.
pub fn highest_placeholder(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let (mut i, mut highest, mut quoted) = (0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => quoted = !quoted,
            b'$' if !quoted => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if let Ok(n) = sql[i + 1..i + 1 + digits].parse::<usize>() {
                    highest = highest.max(n);
                }
                i += digits;
            }
            _ => {}
        }
        i += 1;
    }
    highest
}

/// `sql` with `args` bound, for the engine the caller's return type names.
macro_rules! bound {
    ($sql:expr, $args:expr) => {
        $args.into_iter().fold(sqlx::query($sql), |q, a| match a {
            Arg::Int(v) => q.bind(v),
            Arg::Real(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
        })
    };
}

impl Q {
    /// Binds the next placeholder.
    pub fn bind(mut self, v: impl Into<Arg>) -> Self {
        self.args.push(v.into());
        self
    }

    /// sqlx-sqlite reads a placeholder without an argument as NULL, silently: in debug
    /// builds, a query whose placeholders and arguments disagree is a bug caught here.
    fn checked(&self) {
        debug_assert_eq!(
            highest_placeholder(self.sql),
            self.args.len(),
            "placeholders and arguments disagree in: {}",
            self.sql
        );
    }

    fn sqlite(self) -> Query<'static, Sqlite, SqliteArguments> {
        self.checked();
        bound!(self.sql, self.args)
    }

    fn pg(self) -> Query<'static, Postgres, PgArguments> {
        self.checked();
        bound!(self.sql, self.args)
    }

    /// Runs it; the number of rows it changed.
    pub async fn execute(self, pool: &Pool) -> Result<u64, sqlx::Error> {
        Ok(match pool {
            Pool::Sqlite(p) => self.sqlite().execute(p).await?.rows_affected(),
            Pool::Postgres(p) => self.pg().execute(p).await?.rows_affected(),
        })
    }

    /// Every row it answers.
    pub async fn fetch_all(self, pool: &Pool) -> Result<Vec<DbRow>, sqlx::Error> {
        Ok(match pool {
            Pool::Sqlite(p) => self
                .sqlite()
                .fetch_all(p)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            Pool::Postgres(p) => self
                .pg()
                .fetch_all(p)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }

    /// The first row it answers, if any.
    pub async fn fetch_optional(self, pool: &Pool) -> Result<Option<DbRow>, sqlx::Error> {
        Ok(match pool {
            Pool::Sqlite(p) => self.sqlite().fetch_optional(p).await?.map(DbRow::Sqlite),
            Pool::Postgres(p) => self.pg().fetch_optional(p).await?.map(DbRow::Postgres),
        })
    }

    /// [`Q::execute`] inside `tx`.
    pub async fn execute_in(self, tx: &mut Tx) -> Result<u64, sqlx::Error> {
        Ok(match tx {
            Tx::Sqlite(t) => self.sqlite().execute(&mut **t).await?.rows_affected(),
            Tx::Postgres(t) => self.pg().execute(&mut **t).await?.rows_affected(),
        })
    }

    /// [`Q::fetch_all`] inside `tx`.
    pub async fn fetch_all_in(self, tx: &mut Tx) -> Result<Vec<DbRow>, sqlx::Error> {
        Ok(match tx {
            Tx::Sqlite(t) => self
                .sqlite()
                .fetch_all(&mut **t)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            Tx::Postgres(t) => self
                .pg()
                .fetch_all(&mut **t)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_counted_by_their_highest_number_outside_quotes() {
        assert_eq!(highest_placeholder("SELECT 1"), 0);
        assert_eq!(highest_placeholder("SELECT $1, $2 WHERE $1 IS NULL"), 2);
        assert_eq!(highest_placeholder("VALUES ($10, $9)"), 10);
        assert_eq!(highest_placeholder("SELECT '$5' || $1"), 1);
        assert_eq!(highest_placeholder("SELECT $ || $"), 0);
    }

    #[tokio::test]
    async fn one_query_binds_and_reads_every_kind_of_value_on_sqlite() {
        let pool = Pool::Sqlite(SqlitePool::connect("sqlite::memory:").await.unwrap());
        q("CREATE TABLE t (i INTEGER, r REAL, s TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        let changed = q("INSERT INTO t VALUES ($1, $2, $3), ($4, $5, $6)")
            .bind(7)
            .bind(2.5)
            .bind("seven")
            .bind(None::<i64>)
            .bind(Arg::Real(None))
            .bind(None::<&str>)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(changed, 2);
        let rows = q("SELECT i, r, s FROM t WHERE ($1 IS NULL OR s = $1) ORDER BY i")
            .bind(None::<String>)
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get::<Option<i64>>("i").unwrap(), None);
        assert_eq!(rows[1].get::<i64>("i").unwrap(), 7);
        assert_eq!(rows[1].get::<f64>("r").unwrap(), 2.5);
        assert_eq!(rows[1].get::<String>("s").unwrap(), "seven");
        let one = q("SELECT s FROM t WHERE s = $1")
            .bind("seven")
            .fetch_optional(&pool)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one.get::<String>("s").unwrap(), "seven");
    }

    #[tokio::test]
    async fn a_write_transaction_commits_or_rolls_back_as_a_whole_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let pool = Pool::Sqlite(SqlitePool::connect(&url).await.unwrap());
        q("CREATE TABLE t (i INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        let count = |pool: Pool| async move {
            q("SELECT COUNT(*) AS n FROM t")
                .fetch_all(&pool)
                .await
                .unwrap()[0]
                .get::<i64>("n")
                .unwrap()
        };
        let mut tx = pool.begin_write().await.unwrap();
        q("INSERT INTO t VALUES ($1)")
            .bind(1)
            .execute_in(&mut tx)
            .await
            .unwrap();
        let seen = q("SELECT i FROM t").fetch_all_in(&mut tx).await.unwrap();
        assert_eq!(seen.len(), 1, "the transaction sees its own write");
        drop(tx);
        assert_eq!(count(pool.clone()).await, 0, "dropped: rolled back");
        let mut tx = pool.begin_write().await.unwrap();
        q("INSERT INTO t VALUES ($1), ($2)")
            .bind(1)
            .bind(2)
            .execute_in(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(pool).await, 2);
    }

    #[tokio::test]
    #[should_panic(expected = "placeholders and arguments disagree")]
    async fn a_missing_argument_is_a_bug_not_a_silent_null() {
        let pool = Pool::Sqlite(SqlitePool::connect("sqlite::memory:").await.unwrap());
        let _ = q("SELECT $1, $2").bind(1).fetch_all(&pool).await;
    }
}
