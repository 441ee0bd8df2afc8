//! `cql/schema.cql`, with its placeholders filled in from the config and
//! split into statements for [`ScyllaStore::open`](super::ScyllaStore::open).

use crate::{StorageError, StorageResult};

/// The schema file, with `${PARLEY_KEYSPACE}` and
/// `${PARLEY_REPLICATION_FACTOR}` placeholders.
pub const SCHEMA: &str = include_str!("../../cql/schema.cql");

/// Placeholder for the keyspace name.
const KEYSPACE_PLACEHOLDER: &str = "${PARLEY_KEYSPACE}";
/// Placeholder for the replication factor.
const REPLICATION_PLACEHOLDER: &str = "${PARLEY_REPLICATION_FACTOR}";
/// Longest keyspace name Scylla accepts.
const MAX_KEYSPACE_CHARS: usize = 48;

/// A keyspace name safe to put in CQL unquoted: a letter, then letters,
/// digits or `_`; at most [`MAX_KEYSPACE_CHARS`].
pub(super) fn check_keyspace_name(name: &str) -> StorageResult<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if starts_with_letter && name.len() <= MAX_KEYSPACE_CHARS && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!("keyspace name {name:?}: a letter, then letters, digits or _")))
    }
}

/// The schema's statements, comments removed, placeholders substituted.
pub(super) fn statements(keyspace: &str, replication_factor: u32) -> Vec<String> {
    split(
        &SCHEMA
            .replace(KEYSPACE_PLACEHOLDER, keyspace)
            .replace(REPLICATION_PLACEHOLDER, &replication_factor.to_string()),
    )
}

/// Splits CQL text into statements at `;`, dropping `--` comments (the
/// schema has no string literal containing `--` or `;`).
pub(super) fn split(cql: &str) -> Vec<String> {
    let code: String =
        cql.lines().map(|line| line.split_once("--").map_or(line, |(code, _)| code)).collect::<Vec<_>>().join("\n");
    code.split(';').map(str::trim).filter(|statement| !statement.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_substituted_everywhere() {
        let statements = statements("chat_eu", 5);
        assert!(statements.iter().all(|s| !s.contains("${")), "{statements:?}");
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS chat_eu"));
        assert!(statements[0].contains("'replication_factor': 5"));
        assert!(statements[0].contains("NetworkTopologyStrategy"));
        assert!(statements[0].contains("tablets = {'enabled': false}"), "LWTs need a vnode keyspace");
        assert!(statements[1..].iter().all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS chat_eu.")));
    }

    #[test]
    fn every_statement_is_idempotent() {
        assert!(statements("parley", 3).iter().all(|s| s.contains(" IF NOT EXISTS ")));
    }

    #[test]
    fn comments_are_dropped() {
        assert_eq!(split("-- a; b\nSELECT 1; -- c\n\nSELECT 2;"), vec!["SELECT 1", "SELECT 2"]);
    }

    #[test]
    fn keyspace_names_that_could_inject_cql_are_refused() {
        assert!(check_keyspace_name("parley_2").is_ok());
        for bad in ["", "2parley", "parley; DROP", "a-b", "\"x\"", &"k".repeat(49)] {
            assert!(matches!(check_keyspace_name(bad), Err(StorageError::Invalid(_))), "{bad:?}");
        }
    }
}
