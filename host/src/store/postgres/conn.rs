//! One pooled PostgreSQL connection and its prepared statements: the r2d2
//! connection manager, and [`Db`], through which every store query runs
//! (each SQL text is prepared once per connection, then only bound and
//! executed).

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, GenericClient, Row, Statement};

use crate::store::StoreError;

/// A connection with the statements prepared on it, keyed by their SQL.
pub(super) struct PgConn {
    /// The client.
    pub(super) client: Client,
    /// Statements prepared on `client`.
    pub(super) stmts: HashMap<&'static str, Statement>,
}

/// Opens connections for the pool.
pub(super) struct Manager {
    /// Where to connect (with its connect timeout) and how (TLS).
    pub(super) target: super::tls::Target,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.target.connect()?,
            stmts: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

/// Query parameters.
pub(super) type Params<'p> = [&'p (dyn ToSql + Sync)];

/// A client (a connection for reads, a transaction for writes) with the
/// connection's statement cache, and the transaction's time.
pub(super) struct Db<'a, C> {
    c: &'a mut C,
    stmts: &'a mut HashMap<&'static str, Statement>,
    /// Unix ms when the transaction started (0 for reads).
    pub(super) now: i64,
    /// Set when webhook deliveries were inserted (the dispatcher is woken
    /// after the commit).
    pub(super) deliveries: bool,
}

impl<'a, C: GenericClient> Db<'a, C> {
    /// Wrap `c`, whose connection's statements are `stmts`.
    pub(super) fn new(
        c: &'a mut C,
        stmts: &'a mut HashMap<&'static str, Statement>,
        now: i64,
    ) -> Self {
        Db {
            c,
            stmts,
            now,
            deliveries: false,
        }
    }

    /// The prepared statement for `sql` (prepared on first use).
    fn stmt(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.c.prepare(sql)?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }

    /// All rows of `sql`.
    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.c.query(&s, params)?)
    }

    /// The row of `sql`, if any (an error if more than one).
    pub(super) fn opt(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.c.query_opt(&s, params)?)
    }

    /// The one row of `sql`.
    pub(super) fn one(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Row, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.c.query_one(&s, params)?)
    }

    /// Run `sql`; the number of rows it changed.
    pub(super) fn exec(
        &mut self,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<u64, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.c.execute(&s, params)?)
    }
}
