//! Scenario files (TOML): parsing and validation with errors that name the line and key.

use std::fmt;

use serde::Deserialize;

/// A validated scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub population: Population,
    #[serde(default)]
    pub friends: Friends,
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub thresholds: Thresholds,
}

/// `[population]`: the accounts the run creates.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// Accounts to register, log in and connect (2–10,000).
    pub users: usize,
}

/// `[friends]`: who befriends whom.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Friends {
    #[serde(default)]
    pub pairs: Pairs,
}

/// Friendship layouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairs {
    /// Each user befriends the next one (the last befriends the first).
    #[default]
    Ring,
}

/// One `[[phases]]` entry: direct messages at a fixed total rate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    /// 1–3,600 seconds.
    pub duration_secs: f64,
    /// Messages per second over all users, 0.1–100,000.
    pub rate_per_sec: f64,
}

/// `[thresholds]`: the run fails (exit code 1) if any is missed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub p99_ack_ms: Option<f64>,
    pub p99_delivery_ms: Option<f64>,
    /// Errors divided by messages scheduled, 0–1; absent means 0.
    pub max_error_rate: Option<f64>,
}

/// A scenario that could not be loaded.
#[derive(Debug, PartialEq)]
pub struct ScenarioError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line of `key = ...` inside the table `table` (its `nth` occurrence for arrays of tables).
fn line_of_key(text: &str, table: &str, nth: usize, key: &str) -> Option<usize> {
    let mut seen = None::<usize>;
    let mut inside = false;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let name = line.trim_matches(|c| c == '[' || c == ']').trim();
            inside = false;
            if name == table {
                let count = seen.map_or(0, |n| n + 1);
                seen = Some(count);
                inside = count == nth;
            }
            continue;
        }
        if inside && line.split('=').next().map(str::trim) == Some(key) {
            return Some(index + 1);
        }
    }
    None
}

impl Scenario {
    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| ScenarioError {
            line: error.span().map(|span| line_of(text, span.start)),
            message: error.message().trim().to_owned(),
        })?;
        scenario.validate(text)?;
        Ok(scenario)
    }

    fn validate(&self, text: &str) -> Result<(), ScenarioError> {
        let fail = |table: &str, nth: usize, key: &str, why: String| ScenarioError {
            line: line_of_key(text, table, nth, key),
            message: format!("{table}.{key}: {why}"),
        };
        if !(2..=10_000).contains(&self.population.users) {
            return Err(fail("population", 0, "users", format!("{} is out of range 2..=10000", self.population.users)));
        }
        if self.phases.is_empty() {
            return Err(ScenarioError { line: None, message: "at least one [[phases]] entry is required".into() });
        }
        for (n, phase) in self.phases.iter().enumerate() {
            if phase.name.trim().is_empty() {
                return Err(fail("phases", n, "name", "must not be empty".into()));
            }
            if !(1.0..=3600.0).contains(&phase.duration_secs) {
                return Err(fail(
                    "phases",
                    n,
                    "duration_secs",
                    format!("{} is out of range 1..=3600", phase.duration_secs),
                ));
            }
            if !(0.1..=100_000.0).contains(&phase.rate_per_sec) {
                return Err(fail(
                    "phases",
                    n,
                    "rate_per_sec",
                    format!("{} is out of range 0.1..=100000", phase.rate_per_sec),
                ));
            }
        }
        let t = &self.thresholds;
        for (key, value) in [("p99_ack_ms", t.p99_ack_ms), ("p99_delivery_ms", t.p99_delivery_ms)] {
            if let Some(value) = value
                && !(value > 0.0 && value.is_finite())
            {
                return Err(fail("thresholds", 0, key, format!("{value} must be a positive number")));
            }
        }
        if let Some(rate) = t.max_error_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(fail("thresholds", 0, "max_error_rate", format!("{rate} is out of range 0..=1")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[population]
users = 4

[friends]
pairs = "ring"

[[phases]]
name = "warm"
duration_secs = 2
rate_per_sec = 10

[[phases]]
name = "main"
duration_secs = 3
rate_per_sec = 50

[thresholds]
p99_ack_ms = 500
p99_delivery_ms = 800
max_error_rate = 0.0
"#;

    #[test]
    fn parses_a_good_scenario() {
        let scenario = Scenario::parse(GOOD).expect("valid");
        assert_eq!(scenario.population.users, 4);
        assert_eq!(scenario.friends.pairs, Pairs::Ring);
        assert_eq!(scenario.phases.len(), 2);
        assert_eq!(scenario.thresholds.p99_delivery_ms, Some(800.0));
    }

    #[test]
    fn syntax_error_names_the_line() {
        let text = GOOD.replace("rate_per_sec = 50", "rate_per_sec = = 50");
        let error = Scenario::parse(&text).expect_err("invalid");
        assert_eq!(error.line, Some(16), "{error}");
        assert!(error.to_string().starts_with("line 16:"), "{error}");
    }

    #[test]
    fn unknown_key_names_the_line() {
        let text = GOOD.replace("p99_ack_ms = 500", "p99_ack = 500");
        let error = Scenario::parse(&text).expect_err("invalid");
        assert_eq!(error.line, Some(19), "{error}");
        assert!(error.message.contains("p99_ack"), "{error}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = GOOD.replace("users = 4", "users = \"four\"");
        let error = Scenario::parse(&text).expect_err("invalid");
        assert_eq!(error.line, Some(3), "{error}");
    }

    #[test]
    fn out_of_range_values_name_the_key_and_line() {
        let text = GOOD.replace("rate_per_sec = 50", "rate_per_sec = 0");
        let error = Scenario::parse(&text).expect_err("invalid");
        assert_eq!(error.line, Some(16), "{error}");
        assert!(error.message.contains("phases.rate_per_sec"), "{error}");

        let error = Scenario::parse(&GOOD.replace("users = 4", "users = 1")).expect_err("invalid");
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.message.contains("population.users"), "{error}");

        let error =
            Scenario::parse(&GOOD.replace("max_error_rate = 0.0", "max_error_rate = 1.5")).expect_err("invalid");
        assert_eq!(error.line, Some(21), "{error}");
    }

    #[test]
    fn missing_phases_is_an_error() {
        let error = Scenario::parse("phases = []\n[population]\nusers = 3\n").expect_err("invalid");
        assert!(error.message.contains("phases"), "{error}");
    }
}
