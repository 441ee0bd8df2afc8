//! Offline check of every prepared statement against `cql/schema.cql`: a
//! small parser for the CQL subset the backend uses, and the rules that keep
//! queries off `ALLOW FILTERING`.

use std::collections::{BTreeMap, BTreeSet};

use super::schema::statements as schema_statements;
use super::statements::{ALL, Entry};

type Check<T = ()> = Result<T, String>;

/// A table as `CREATE TABLE` declares it.
#[derive(Debug)]
struct Table {
    columns: BTreeMap<String, String>,
    partition: Vec<String>,
    clustering: Vec<String>,
}

impl Table {
    fn is_key(&self, column: &str) -> bool {
        self.partition.iter().chain(&self.clustering).any(|key| key == column)
    }

    fn column(&self, column: &str) -> Check {
        if self.columns.contains_key(column) { Ok(()) } else { Err(format!("no column {column}")) }
    }
}

/// Splits CQL into words, `?`, quoted strings and punctuation (`<=` and
/// `>=` as one token).
fn tokens(cql: &str) -> Vec<String> {
    let chars: Vec<char> = cql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '$' | '{' | '}');
        let start = i;
        i += 1;
        if c.is_whitespace() {
            continue;
        } else if word(c) {
            while chars.get(i).is_some_and(|&c| word(c)) {
                i += 1;
            }
        } else if c == '\'' {
            while chars.get(i).is_some_and(|&c| c != '\'') {
                i += 1;
            }
            i += 1;
        } else if matches!(c, '<' | '>') && chars.get(i) == Some(&'=') {
            i += 1;
        }
        tokens.push(chars[start..i.min(chars.len())].iter().collect());
    }
    tokens
}

/// Reads tokens front to back.
struct Cursor {
    tokens: Vec<String>,
    at: usize,
}

impl Cursor {
    fn new(cql: &str) -> Self {
        Cursor { tokens: tokens(cql), at: 0 }
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Check<String> {
        let token = self.tokens.get(self.at).cloned().ok_or("unexpected end")?;
        self.at += 1;
        Ok(token)
    }

    fn eat(&mut self, word: &str) -> bool {
        let found = self.peek() == Some(word);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, words: &str) -> Check {
        for word in words.split(' ') {
            let found = self.next()?;
            if found != word {
                return Err(format!("expected {word}, found {found}"));
            }
        }
        Ok(())
    }

    /// `( a, b, … )`, each item one token.
    fn list(&mut self) -> Check<Vec<String>> {
        self.expect("(")?;
        let mut items = vec![self.next()?];
        while self.eat(",") {
            items.push(self.next()?);
        }
        self.expect(")")?;
        Ok(items)
    }

    /// Tokens up to (not including) the `)` closing the current level,
    /// split at this level's commas.
    fn items(&mut self) -> Check<Vec<Vec<String>>> {
        let mut items = vec![Vec::new()];
        let mut depth = 0;
        loop {
            let token = self.next()?;
            match token.as_str() {
                ")" if depth == 0 => return Ok(items),
                "," if depth == 0 => items.push(Vec::new()),
                "(" | "<" => depth += 1,
                ")" | ">" => depth -= 1,
                _ => {}
            }
            if !(token == "," && depth == 0) {
                items.last_mut().ok_or("no item")?.push(token);
            }
        }
    }

    fn done(&self) -> Check {
        match self.peek() {
            None => Ok(()),
            Some(rest) => Err(format!("unexpected {rest}")),
        }
    }
}

/// The tables of `schema.cql`, by name.
fn parse_schema() -> Check<BTreeMap<String, Table>> {
    let mut tables = BTreeMap::new();
    for statement in schema_statements("ks", 3) {
        let mut cursor = Cursor::new(&statement);
        if cursor.eat("CREATE") && cursor.eat("KEYSPACE") {
            continue;
        }
        cursor.expect("TABLE IF NOT EXISTS")?;
        let name = cursor.next()?.strip_prefix("ks.").ok_or("table outside the keyspace")?.to_owned();
        cursor.expect("(")?;
        let mut columns = BTreeMap::new();
        let mut key = None;
        for item in cursor.items()? {
            match item.as_slice() {
                [primary, k, rest @ ..] if primary == "PRIMARY" && k == "KEY" => key = Some(rest.to_vec()),
                [column, kind @ ..] if !kind.is_empty() => {
                    columns.insert(column.clone(), kind.concat());
                }
                other => return Err(format!("{name}: bad column {other:?}")),
            }
        }
        let key = key.ok_or_else(|| format!("{name}: no primary key"))?;
        let mut key = Cursor { tokens: key, at: 0 };
        key.expect("(")?;
        let partition = key.list()?;
        let mut clustering = Vec::new();
        while key.eat(",") {
            clustering.push(key.next()?);
        }
        key.expect(")")?;
        key.done()?;
        if cursor.eat("WITH") {
            cursor.expect("CLUSTERING ORDER BY (")?;
            for (item, expected) in cursor.items()?.iter().zip(&clustering) {
                match item.as_slice() {
                    [column, order] if column == expected && (order == "ASC" || order == "DESC") => {}
                    other => return Err(format!("{name}: clustering order {other:?} is not the key's")),
                }
            }
        }
        cursor.done()?;
        let table = Table { columns, partition, clustering };
        for column in table.partition.iter().chain(&table.clustering) {
            table.column(column).map_err(|e| format!("{name}: key {e}"))?;
        }
        tables.insert(name, table);
    }
    Ok(tables)
}

/// One restriction of a `WHERE` clause.
#[derive(Debug)]
struct Restriction {
    /// One column, or a tuple of clustering columns.
    columns: Vec<String>,
    op: String,
}

/// `a = ? AND (b, c) < (?, ?) AND …` up to a keyword outside the clause.
fn restrictions(cursor: &mut Cursor) -> Check<Vec<Restriction>> {
    let mut all = Vec::new();
    loop {
        let columns = if cursor.peek() == Some("(") { cursor.list()? } else { vec![cursor.next()?] };
        let op = cursor.next()?;
        if cursor.peek() == Some("(") {
            cursor.list()?;
        } else {
            cursor.next()?;
        }
        all.push(Restriction { columns, op });
        if !cursor.eat("AND") {
            return Ok(all);
        }
    }
}

/// Whether a `WHERE` clause can run without `ALLOW FILTERING`: the whole
/// partition key by `=`, then clustering columns in key order, equalities
/// before at most one slice; with `full_key`, every key column by `=`.
fn check_where(table: &Table, restrictions: &[Restriction], full_key: bool) -> Check {
    for restriction in restrictions {
        for column in &restriction.columns {
            table.column(column)?;
            if !table.is_key(column) {
                return Err(format!("{column} is not a key column"));
            }
        }
    }
    let ops_of = |column: &str| -> Vec<&Restriction> {
        restrictions.iter().filter(|r| r.columns.iter().any(|c| c == column)).collect()
    };
    for column in &table.partition {
        match ops_of(column).as_slice() {
            [r] if r.op == "=" && r.columns.len() == 1 => {}
            _ => return Err(format!("partition key column {column} must be restricted by one =")),
        }
    }
    let mut i = 0;
    while let Some(column) = table.clustering.get(i) {
        let ops = ops_of(column);
        if ops.is_empty() {
            break;
        }
        if let Some(tuple) = ops.iter().find(|r| r.columns.len() > 1) {
            if ops.len() > 1 || table.clustering.get(i..i + tuple.columns.len()) != Some(tuple.columns.as_slice()) {
                return Err(format!("tuple {:?} is not the clustering key from {column} on", tuple.columns));
            }
            i += tuple.columns.len();
            break;
        }
        i += 1;
        if !matches!(ops.as_slice(), [r] if r.op == "=") {
            if ops.iter().any(|r| !matches!(r.op.as_str(), "<" | ">" | "<=" | ">=")) {
                return Err(format!("{column} mixes = with a slice"));
            }
            break;
        }
    }
    if let Some(skipped) = table.clustering[i.min(table.clustering.len())..].iter().find(|c| !ops_of(c).is_empty()) {
        return Err(format!("{skipped} is restricted after an unrestricted or sliced clustering column"));
    }
    let all_equal = table.clustering.iter().all(|c| matches!(ops_of(c).as_slice(), [r] if r.op == "="));
    if full_key && !all_equal {
        return Err("an UPDATE must name the whole primary key by =".into());
    }
    Ok(())
}

/// `IF EXISTS`, `IF NOT EXISTS` or `IF col = ? AND …` on non-key columns.
fn check_conditions(table: &Table, cursor: &mut Cursor) -> Check {
    if !cursor.eat("IF") {
        return Ok(());
    }
    if cursor.eat("EXISTS") {
        return Ok(());
    }
    for restriction in restrictions(cursor)? {
        for column in &restriction.columns {
            table.column(column)?;
            if table.is_key(column) {
                return Err(format!("condition on key column {column}"));
            }
        }
    }
    Ok(())
}

fn table<'t>(tables: &'t BTreeMap<String, Table>, cursor: &mut Cursor) -> Check<(String, &'t Table)> {
    let name = cursor.next()?;
    let table = tables.get(&name).ok_or_else(|| format!("no table {name}"))?;
    Ok((name, table))
}

/// Checks one statement; returns the table it uses.
fn check_statement(tables: &BTreeMap<String, Table>, entry: &Entry) -> Check<String> {
    let markers = tokens(entry.cql).iter().filter(|t| *t == "?").count();
    if markers != entry.binds {
        return Err(format!("{markers} bind markers, {} declared", entry.binds));
    }
    let mut cursor = Cursor::new(entry.cql);
    let name = match cursor.next()?.as_str() {
        "SELECT" => {
            let mut columns = vec![cursor.next()?];
            while cursor.eat(",") {
                columns.push(cursor.next()?);
            }
            cursor.expect("FROM")?;
            let (name, table) = table(tables, &mut cursor)?;
            columns.iter().try_for_each(|c| table.column(c))?;
            cursor.expect("WHERE")?;
            check_where(table, &restrictions(&mut cursor)?, false)?;
            if cursor.eat("ORDER") {
                cursor.expect("BY")?;
                let column = cursor.next()?;
                if table.clustering.first() != Some(&column) {
                    return Err(format!("ORDER BY {column}: not the first clustering column"));
                }
                cursor.next()?;
            }
            if cursor.eat("LIMIT") {
                cursor.next()?;
            }
            name
        }
        "INSERT" => {
            cursor.expect("INTO")?;
            let (name, table) = table(tables, &mut cursor)?;
            let columns = cursor.list()?;
            columns.iter().try_for_each(|c| table.column(c))?;
            if let Some(missing) = table.partition.iter().chain(&table.clustering).find(|k| !columns.contains(k)) {
                return Err(format!("INSERT without key column {missing}"));
            }
            cursor.expect("VALUES")?;
            if cursor.list()?.len() != columns.len() {
                return Err("INSERT with as many values as columns expected".into());
            }
            if cursor.eat("IF") {
                cursor.expect("NOT EXISTS")?;
            }
            if cursor.eat("USING") {
                cursor.expect("TTL")?;
                cursor.next()?;
            }
            name
        }
        "UPDATE" => {
            let (name, table) = table(tables, &mut cursor)?;
            if cursor.eat("USING") {
                cursor.expect("TIMESTAMP")?;
                cursor.next()?;
            }
            cursor.expect("SET")?;
            loop {
                let column = cursor.next()?;
                table.column(&column)?;
                if table.is_key(&column) {
                    return Err(format!("SET of key column {column}"));
                }
                cursor.expect("=")?;
                let value = cursor.next()?;
                if value == column && (cursor.eat("+") || cursor.eat("-")) {
                    cursor.next()?;
                }
                if !cursor.eat(",") {
                    break;
                }
            }
            cursor.expect("WHERE")?;
            check_where(table, &restrictions(&mut cursor)?, true)?;
            check_conditions(table, &mut cursor)?;
            name
        }
        "DELETE" => {
            cursor.expect("FROM")?;
            let (name, table) = table(tables, &mut cursor)?;
            cursor.expect("WHERE")?;
            let restrictions = restrictions(&mut cursor)?;
            if restrictions.iter().any(|r| r.op != "=") {
                return Err("DELETE by range".into());
            }
            check_where(table, &restrictions, false)?;
            check_conditions(table, &mut cursor)?;
            name
        }
        other => return Err(format!("unexpected statement kind {other}")),
    };
    cursor.done()?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parses_with_keys_that_exist() -> Check {
        let tables = parse_schema()?;
        let messages = tables.get("messages").ok_or("no messages table")?;
        assert_eq!(messages.partition, vec!["chat_id"]);
        assert_eq!(messages.clustering, vec!["id"]);
        assert_eq!(tables.get("chats").and_then(|t| t.columns.get("admins")).map(String::as_str), Some("set<bigint>"));
        let kinds = tables.get("relations_by_kind").ok_or("no relations_by_kind")?;
        assert_eq!((kinds.partition.len(), kinds.clustering.len()), (2, 2));
        Ok(())
    }

    #[test]
    fn every_statement_fits_the_schema_without_filtering() -> Check {
        let tables = parse_schema()?;
        let mut used = BTreeSet::new();
        let mut failures = Vec::new();
        for entry in ALL {
            match check_statement(&tables, entry) {
                Ok(table) => {
                    used.insert(table);
                }
                Err(error) => failures.push(format!("{}: {error}\n  {}", entry.name, entry.cql)),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let unused: Vec<&String> = tables.keys().filter(|t| !used.contains(*t)).collect();
        assert!(unused.is_empty(), "tables no statement uses: {unused:?}");
        Ok(())
    }

    #[test]
    fn nothing_filters_or_scans_an_index() {
        let schema = schema_statements("ks", 3);
        for text in schema.iter().map(String::as_str).chain(ALL.iter().map(|entry| entry.cql)) {
            let upper = text.to_uppercase();
            assert!(!upper.contains("ALLOW FILTERING") && !upper.contains("CREATE INDEX"), "{text}");
        }
    }

    #[test]
    fn statement_names_are_unique() {
        let names: BTreeSet<&str> = ALL.iter().map(|entry| entry.name).collect();
        assert_eq!(names.len(), ALL.len());
    }

    /// The checker itself: statements it must refuse.
    #[test]
    fn the_checker_refuses_what_would_need_filtering() -> Check {
        let tables = parse_schema()?;
        let refused = [
            ("no partition key", "SELECT id FROM messages WHERE id = ?", 1),
            ("part of a partition key", "SELECT other_id FROM relations_by_kind WHERE user_id = ?", 1),
            ("a regular column", "SELECT id FROM messages WHERE chat_id = ? AND sender_id = ?", 2),
            (
                "a skipped clustering column",
                "SELECT other_id FROM relations_by_kind WHERE user_id = ? AND relation = ? AND other_id = ?",
                3,
            ),
            (
                "after a slice",
                "SELECT other_id FROM relations_by_kind WHERE user_id = ? AND relation = ? AND since_ms > ? AND other_id = ?",
                4,
            ),
            (
                "a tuple out of key order",
                "SELECT other_id FROM relations_by_kind WHERE user_id = ? AND relation = ? AND (other_id, since_ms) < (?, ?)",
                4,
            ),
            ("an unknown column", "SELECT nope FROM users WHERE id = ?", 1),
            ("an unknown table", "SELECT id FROM nope WHERE id = ?", 1),
            ("an insert without the key", "INSERT INTO messages (chat_id, body) VALUES (?, ?)", 2),
            ("an update of part of the key", "UPDATE messages SET body = ? WHERE chat_id = ?", 2),
            ("an update of a key column", "UPDATE users SET id = ? WHERE id = ?", 2),
            ("a condition on a key", "UPDATE users SET bio = ? WHERE id = ? IF id = ?", 3),
            ("a bind count mismatch", "SELECT id FROM users WHERE id = ?", 2),
        ];
        for (what, cql, binds) in refused {
            let entry = Entry { name: what, cql, binds };
            assert!(check_statement(&tables, &entry).is_err(), "accepted {what}: {cql}");
        }
        let accepted = Entry {
            name: "slice on both ends",
            cql: "SELECT id FROM messages WHERE chat_id = ? AND id < ? AND id > ? LIMIT 3",
            binds: 3,
        };
        assert_eq!(check_statement(&tables, &accepted)?, "messages");
        Ok(())
    }

    #[test]
    fn tokens_split_operators_and_keep_placeholders_whole() {
        assert_eq!(
            tokens("a<=? AND ks.t(${X}, 'x y')"),
            vec!["a", "<=", "?", "AND", "ks.t", "(", "${X}", ",", "'x y'", ")"]
        );
    }
}
