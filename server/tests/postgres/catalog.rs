//! Each engine's schema as its own catalog reports it, in one shape, and the
//! differences between two of them.
//!
//! SQLite: `sqlite_master` and the `pragma_table_info`, `pragma_index_list`,
//! `pragma_index_xinfo` and `pragma_foreign_key_list` table functions. PostgreSQL:
//! `information_schema` (tables, views, columns, key columns) and `pg_catalog` where
//! `information_schema` says nothing (indexes that back no constraint, CHECKs, foreign
//! keys).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgPool, Row, SqlitePool};

/// The type of a column as the store's Rust code sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TypeClass {
    /// SQLite INTEGER, PostgreSQL BIGINT: decoded as `i64`.
    Integer,
    /// SQLite REAL, PostgreSQL DOUBLE PRECISION: `f64`.
    Real,
    /// TEXT on both: `String`.
    Text,
    /// SQLite BLOB, PostgreSQL BYTEA: `Vec<u8>`.
    Blob,
    /// Anything else (PostgreSQL's INTEGER is here: `i64` does not decode from it).
    Other(String),
}

fn sqlite_class(declared: &str) -> TypeClass {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" => TypeClass::Integer,
        "REAL" => TypeClass::Real,
        "TEXT" => TypeClass::Text,
        "BLOB" => TypeClass::Blob,
        other => TypeClass::Other(other.to_string()),
    }
}

fn pg_class(data_type: &str) -> TypeClass {
    match data_type {
        "bigint" => TypeClass::Integer,
        "double precision" => TypeClass::Real,
        "text" => TypeClass::Text,
        "bytea" => TypeClass::Blob,
        other => TypeClass::Other(other.to_string()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub class: TypeClass,
    pub not_null: bool,
    /// The default as written, casts of literals (`''::text`) taken off.
    pub default: Option<String>,
    /// The database numbers new rows (SQLite's INTEGER PRIMARY KEY, a PostgreSQL
    /// identity column).
    pub generated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    /// Key columns in order: a column's name, or an expression normalised by
    /// [`normalise_expr`]; ` desc` appended when descending.
    pub columns: Vec<String>,
    pub unique: bool,
    pub partial: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub references: String,
    pub referenced_columns: Vec<String>,
    pub on_delete: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// UNIQUE constraints (not named: SQLite names them `sqlite_autoindex_*`).
    pub unique: BTreeSet<Vec<String>>,
    /// Indexes created by name (CREATE INDEX), by name.
    pub indexes: BTreeMap<String, Index>,
    /// How many CHECK constraints (column and table ones).
    pub checks: usize,
    pub foreign_keys: BTreeSet<ForeignKey>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schema {
    pub tables: BTreeMap<String, Table>,
    /// Views and their columns' names and types.
    pub views: BTreeMap<String, Vec<(String, TypeClass)>>,
    /// The migrations applied, as sqlx recorded them: (version, description).
    pub migrations: Vec<(i64, String)>,
}

/// Lower case, no white space, no casts to text and no double quotes: SQLite keeps an
/// index expression as written (`COALESCE(component, '')`), PostgreSQL as it
/// deparses it (`COALESCE(component, ''::text)`).
pub fn normalise_expr(expr: &str) -> String {
    let squeezed: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    squeezed
        .to_lowercase()
        .replace("::text", "")
        .replace('"', "")
}

/// A default as PostgreSQL deparses it, without the cast of a literal
/// (`'unknown'::text` → `'unknown'`).
fn pg_default(default: &str) -> String {
    match default.rsplit_once("::") {
        Some((literal, cast)) if cast.chars().all(|c| c.is_ascii_alphabetic() || c == ' ') => {
            literal.to_string()
        }
        _ => default.to_string(),
    }
}

/// The key terms of a CREATE INDEX statement, as written: `a, COALESCE(b, '')` →
/// [`a`, `COALESCE(b, '')`].
fn index_terms(sql: &str) -> Vec<String> {
    let on = sql
        .to_ascii_uppercase()
        .find(" ON ")
        .unwrap_or_else(|| panic!("no ON in {sql}"));
    let open = on
        + sql[on..]
            .find('(')
            .unwrap_or_else(|| panic!("no ( in {sql}"));
    let mut terms = Vec::new();
    let mut term = String::new();
    let (mut depth, mut in_string) = (0, false);
    for c in sql[open + 1..].chars() {
        if in_string {
            in_string = c != '\'';
            term.push(c);
            continue;
        }
        match c {
            '\'' => {
                in_string = true;
                term.push(c);
            }
            '(' => {
                depth += 1;
                term.push(c);
            }
            ')' if depth == 0 => {
                terms.push(term.trim().to_string());
                return terms;
            }
            ')' => {
                depth -= 1;
                term.push(c);
            }
            ',' if depth == 0 => terms.push(std::mem::take(&mut term).trim().to_string()),
            _ => term.push(c),
        }
    }
    panic!("unbalanced parentheses in {sql}")
}

/// CHECK constraints in a CREATE TABLE statement as SQLite keeps it (ALTER TABLE ADD
/// COLUMN appends to it), comments left out.
fn count_checks(sql: &str) -> usize {
    let code: String = sql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
        .to_ascii_uppercase();
    let bytes = code.as_bytes();
    code.match_indices("CHECK")
        .filter(|(at, _)| {
            let before_ok =
                *at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            let after = code[at + 5..].trim_start();
            before_ok && after.starts_with('(')
        })
        .count()
}

pub async fn read_sqlite(pool: &SqlitePool) -> Schema {
    let mut schema = Schema::default();
    let objects = sqlx::query(
        "SELECT type, name, sql FROM sqlite_master
         WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'
           AND name <> '_sqlx_migrations'
         ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for object in objects {
        let kind: String = object.get("type");
        let name: String = object.get("name");
        let sql: String = object.get("sql");
        let columns = sqlx::query(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        if kind == "view" {
            let view = columns
                .iter()
                .map(|c| (c.get("name"), sqlite_class(c.get::<&str, _>("type"))))
                .collect();
            schema.views.insert(name, view);
            continue;
        }
        let mut table = Table::default();
        let mut key: Vec<(i64, String)> = Vec::new();
        for c in &columns {
            let column: String = c.get("name");
            let pk: i64 = c.get("pk");
            if pk > 0 {
                key.push((pk, column.clone()));
            }
            table.columns.push(Column {
                name: column,
                class: sqlite_class(c.get::<&str, _>("type")),
                // SQLite lets a primary key column that is not an INTEGER PRIMARY KEY
                // hold NULL unless it is declared NOT NULL (a quirk it keeps for old
                // files); PostgreSQL never does, and the store never writes a NULL key.
                // So a key column counts as NOT NULL here.
                not_null: c.get::<i64, _>("notnull") != 0 || pk > 0,
                default: c.get("dflt_value"),
                generated: false,
            });
        }
        key.sort();
        table.primary_key = key.into_iter().map(|(_, c)| c).collect();
        // A rowid table's only INTEGER PRIMARY KEY column is the rowid: SQLite numbers
        // new rows (AUTOINCREMENT only stops it from reusing numbers).
        let without_rowid = sql.to_ascii_uppercase().contains("WITHOUT ROWID");
        if !without_rowid && table.primary_key.len() == 1 {
            for column in &mut table.columns {
                if column.name == table.primary_key[0] && column.class == TypeClass::Integer {
                    column.generated = true;
                }
            }
        }
        table.checks = count_checks(&sql);

        let indexes = sqlx::query(
            "SELECT il.name, il.\"unique\", il.origin, il.partial, m.sql
             FROM pragma_index_list(?) il LEFT JOIN sqlite_master m ON m.name = il.name",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        for index in indexes {
            let index_name: String = index.get("name");
            let origin: String = index.get("origin");
            let terms: Vec<(Option<String>, bool)> = sqlx::query(
                "SELECT name, \"desc\" FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno",
            )
            .bind(&index_name)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|t| (t.get("name"), t.get::<i64, _>("desc") != 0))
            .collect();
            match origin.as_str() {
                // The primary key's own index: compared as `primary_key`.
                "pk" => {}
                "u" => {
                    table
                        .unique
                        .insert(terms.into_iter().map(|(c, _)| c.unwrap()).collect());
                }
                _ => {
                    let written = index_terms(&index.get::<String, _>("sql"));
                    let columns = terms
                        .into_iter()
                        .enumerate()
                        .map(|(i, (column, desc))| {
                            let term = column.unwrap_or_else(|| normalise_expr(&written[i]));
                            if desc { format!("{term} desc") } else { term }
                        })
                        .collect();
                    table.indexes.insert(
                        index_name,
                        Index {
                            columns,
                            unique: index.get::<i64, _>("unique") != 0,
                            partial: index.get::<i64, _>("partial") != 0,
                        },
                    );
                }
            }
        }

        let fks = sqlx::query(
            "SELECT id, seq, \"table\", \"from\", \"to\", on_delete
             FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for fk in fks {
            let entry = by_id.entry(fk.get("id")).or_insert_with(|| ForeignKey {
                columns: vec![],
                references: fk.get("table"),
                referenced_columns: vec![],
                on_delete: fk.get("on_delete"),
            });
            entry.columns.push(fk.get("from"));
            entry.referenced_columns.push(fk.get("to"));
        }
        table.foreign_keys = by_id.into_values().collect();
        schema.tables.insert(name, table);
    }
    schema.migrations =
        sqlx::query("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("version"), r.get("description")))
            .collect();
    schema
}

pub async fn read_postgres(pool: &PgPool) -> Schema {
    let mut schema = Schema::default();
    let objects = sqlx::query(
        "SELECT table_name::text AS name, table_type::text AS kind FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'
         ORDER BY table_name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for object in objects {
        let name: String = object.get("name");
        let kind: String = object.get("kind");
        let columns = sqlx::query(
            "SELECT column_name::text AS name, data_type::text AS data_type,
                    is_nullable::text AS nullable, column_default::text AS dflt,
                    is_identity::text AS identity
             FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1
             ORDER BY ordinal_position",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        match kind.as_str() {
            "VIEW" => {
                let view = columns
                    .iter()
                    .map(|c| (c.get("name"), pg_class(c.get::<&str, _>("data_type"))))
                    .collect();
                schema.views.insert(name, view);
                continue;
            }
            "BASE TABLE" => {}
            other => panic!("{name} is a {other}: the SQLite schema has no such thing"),
        }
        let mut table = Table::default();
        for c in &columns {
            table.columns.push(Column {
                name: c.get("name"),
                class: pg_class(c.get::<&str, _>("data_type")),
                not_null: c.get::<&str, _>("nullable") == "NO",
                default: c.get::<Option<&str>, _>("dflt").map(pg_default),
                generated: c.get::<&str, _>("identity") == "YES",
            });
        }
        let keys = sqlx::query(
            "SELECT tc.constraint_type::text AS kind, tc.constraint_name::text AS constraint_name,
                    kcu.column_name::text AS column_name
             FROM information_schema.table_constraints tc
             JOIN information_schema.key_column_usage kcu
               ON kcu.constraint_schema = tc.constraint_schema
              AND kcu.constraint_name = tc.constraint_name
              AND kcu.table_name = tc.table_name
             WHERE tc.table_schema = 'public' AND tc.table_name = $1
               AND tc.constraint_type IN ('PRIMARY KEY', 'UNIQUE')
             ORDER BY tc.constraint_name, kcu.ordinal_position",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        let mut unique: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for k in keys {
            let column: String = k.get("column_name");
            if k.get::<&str, _>("kind") == "PRIMARY KEY" {
                table.primary_key.push(column);
            } else {
                unique
                    .entry(k.get("constraint_name"))
                    .or_default()
                    .push(column);
            }
        }
        table.unique = unique.into_values().collect();
        table.checks = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = 'public' AND t.relname = $1 AND c.contype = 'c'",
        )
        .bind(&name)
        .fetch_one(pool)
        .await
        .unwrap() as usize;
        // Indexes that back no PRIMARY KEY or UNIQUE constraint: the ones created by
        // name.
        let indexes = sqlx::query(
            "SELECT ic.relname::text AS name, i.indisunique AS is_unique,
                    i.indpred IS NOT NULL AS partial,
                    ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
                          FROM generate_series(1, i.indnkeyatts::int) AS k ORDER BY k) AS terms
             FROM pg_index i
             JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_class t ON t.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = 'public' AND t.relname = $1
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                               WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        for index in indexes {
            let terms: Vec<String> = index.get("terms");
            table.indexes.insert(
                index.get("name"),
                Index {
                    columns: terms
                        .iter()
                        .map(|t| match t.strip_suffix(" DESC") {
                            Some(t) => format!("{} desc", normalise_expr(t)),
                            None => normalise_expr(t),
                        })
                        .collect(),
                    unique: index.get("is_unique"),
                    partial: index.get("partial"),
                },
            );
        }
        let fks = sqlx::query(
            "SELECT r.relname::text AS references, c.confdeltype::text AS on_delete,
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                          ORDER BY k.i) AS columns,
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(n, i)
                          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                          ORDER BY k.i) AS referenced_columns
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_class r ON r.oid = c.confrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = 'public' AND t.relname = $1 AND c.contype = 'f'",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        for fk in fks {
            let on_delete = match fk.get::<&str, _>("on_delete") {
                "a" => "NO ACTION",
                "r" => "RESTRICT",
                "c" => "CASCADE",
                "n" => "SET NULL",
                "d" => "SET DEFAULT",
                other => panic!("unknown confdeltype {other}"),
            };
            table.foreign_keys.insert(ForeignKey {
                columns: fk.get("columns"),
                references: fk.get("references"),
                referenced_columns: fk.get("referenced_columns"),
                on_delete: on_delete.to_string(),
            });
        }
        schema.tables.insert(name, table);
    }
    schema.migrations =
        sqlx::query("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("version"), r.get("description")))
            .collect();
    schema
}

fn only_in<'a, T>(a: &'a BTreeMap<String, T>, b: &BTreeMap<String, T>) -> Vec<&'a str> {
    a.keys()
        .filter(|k| !b.contains_key(*k))
        .map(String::as_str)
        .collect()
}

/// Every way `pg` differs from `sqlite`, one line each; empty when they match.
pub fn differences(sqlite: &Schema, pg: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    if sqlite.migrations != pg.migrations {
        out.push(format!(
            "migrations: SQLite applied {:?}, PostgreSQL {:?}",
            sqlite.migrations, pg.migrations
        ));
    }
    for name in only_in(&sqlite.tables, &pg.tables) {
        out.push(format!("table {name}: missing in PostgreSQL"));
    }
    for name in only_in(&pg.tables, &sqlite.tables) {
        out.push(format!("table {name}: only in PostgreSQL"));
    }
    for name in only_in(&sqlite.views, &pg.views) {
        out.push(format!("view {name}: missing in PostgreSQL"));
    }
    for name in only_in(&pg.views, &sqlite.views) {
        out.push(format!("view {name}: only in PostgreSQL"));
    }
    for (name, s) in &sqlite.views {
        if let Some(p) = pg.views.get(name)
            && s != p
        {
            out.push(format!(
                "view {name}: columns SQLite {s:?}, PostgreSQL {p:?}"
            ));
        }
    }
    for (name, s) in &sqlite.tables {
        let Some(p) = pg.tables.get(name) else {
            continue;
        };
        let names = |t: &Table| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        if names(s) != names(p) {
            out.push(format!(
                "table {name}: columns SQLite {:?}, PostgreSQL {:?}",
                names(s),
                names(p)
            ));
        }
        for sc in &s.columns {
            let Some(pc) = p.columns.iter().find(|c| c.name == sc.name) else {
                continue;
            };
            let column = format!("column {name}.{}", sc.name);
            if sc.class != pc.class {
                out.push(format!(
                    "{column}: type SQLite {:?}, PostgreSQL {:?}",
                    sc.class, pc.class
                ));
            }
            if sc.not_null != pc.not_null {
                out.push(format!(
                    "{column}: NOT NULL in SQLite {}, in PostgreSQL {}",
                    sc.not_null, pc.not_null
                ));
            }
            if sc.default != pc.default {
                out.push(format!(
                    "{column}: default SQLite {:?}, PostgreSQL {:?}",
                    sc.default, pc.default
                ));
            }
            if sc.generated != pc.generated {
                out.push(format!(
                    "{column}: numbered by the database in SQLite {}, in PostgreSQL {}",
                    sc.generated, pc.generated
                ));
            }
        }
        if s.primary_key != p.primary_key {
            out.push(format!(
                "table {name}: primary key SQLite {:?}, PostgreSQL {:?}",
                s.primary_key, p.primary_key
            ));
        }
        if s.unique != p.unique {
            out.push(format!(
                "table {name}: UNIQUE constraints SQLite {:?}, PostgreSQL {:?}",
                s.unique, p.unique
            ));
        }
        for index in only_in(&s.indexes, &p.indexes) {
            out.push(format!("index {name}.{index}: missing in PostgreSQL"));
        }
        for index in only_in(&p.indexes, &s.indexes) {
            out.push(format!("index {name}.{index}: only in PostgreSQL"));
        }
        for (index, si) in &s.indexes {
            if let Some(pi) = p.indexes.get(index)
                && si != pi
            {
                out.push(format!(
                    "index {name}.{index}: SQLite {si:?}, PostgreSQL {pi:?}"
                ));
            }
        }
        if s.checks != p.checks {
            out.push(format!(
                "table {name}: {} CHECK constraints in SQLite, {} in PostgreSQL",
                s.checks, p.checks
            ));
        }
        if s.foreign_keys != p.foreign_keys {
            out.push(format!(
                "table {name}: foreign keys SQLite {:?}, PostgreSQL {:?}",
                s.foreign_keys, p.foreign_keys
            ));
        }
    }
    out
}

#[test]
fn index_terms_split_at_top_level_commas_only() {
    assert_eq!(
        index_terms("CREATE UNIQUE INDEX k ON t\n    (a, ts, COALESCE(b, ''), COALESCE(c, ','))"),
        ["a", "ts", "COALESCE(b, '')", "COALESCE(c, ',')"]
    );
}

#[test]
fn checks_are_counted_outside_comments_only() {
    let sql = "CREATE TABLE t (\n  a INTEGER CHECK (a > 0), -- CHECK (not this)\n  \
               checked INTEGER,\n  CHECK(a < 9)\n)";
    assert_eq!(count_checks(sql), 2);
}

#[test]
fn pg_defaults_lose_the_cast_of_a_literal_only() {
    assert_eq!(pg_default("'unknown'::text"), "'unknown'");
    assert_eq!(pg_default("0"), "0");
    assert_eq!(pg_default("'1'::double precision"), "'1'");
    assert_eq!(
        pg_default("nextval('s'::regclass)"),
        "nextval('s'::regclass)"
    );
}
