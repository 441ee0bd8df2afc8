//! Scenario files (TOML): parsing and validation with errors that name the line and key.

use std::fmt;

use serde::Deserialize;

/// Most users one scenario may create.
pub const MAX_USERS: usize = 100_000;
/// Most members per group (the server's `engine.max_group_members` default).
pub const MAX_GROUP_SIZE: usize = 1024;
/// Most steps a `[step]` section may generate.
pub const MAX_STEPS: usize = 100;
/// Highest rate of any phase, events per second over all users.
pub const MAX_RATE: f64 = 100_000.0;
/// Most devices (WebSocket connections) per user.
pub const MAX_DEVICES: usize = 16;
/// Longest `churn_secs`: the drain waits this long at most for churned users to return.
pub const MAX_CHURN_SECS: f64 = 60.0;

/// A validated scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub population: Population,
    #[serde(default)]
    pub friends: Friends,
    pub groups: Option<Groups>,
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// Direct-step mode: generates the phases; exclusive with `[[phases]]`.
    pub step: Option<Step>,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Seed of the random choices (users, actions, Poisson gaps); runs with the same seed repeat them.
    #[serde(default)]
    pub seed: u64,
}

/// `[population]`: the accounts the run creates and how they connect.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// Accounts to register, log in and connect (2–100,000).
    pub users: usize,
    /// Devices of each user (1–16): each is its own login and WebSocket.
    #[serde(default = "default_devices")]
    pub devices: usize,
    /// WebSocket handshakes in flight at once while connecting (1–10,000).
    #[serde(default = "default_connect_concurrency")]
    pub connect_concurrency: usize,
    /// REST requests in flight at once during setup (1–1,024).
    #[serde(default = "default_setup_concurrency")]
    pub setup_concurrency: usize,
}

fn default_devices() -> usize {
    1
}

fn default_connect_concurrency() -> usize {
    64
}

fn default_setup_concurrency() -> usize {
    32
}

/// `[friends]`: who befriends whom.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Friends {
    #[serde(default)]
    pub pairs: Pairs,
    /// With `pairs = "random"`: how many random others each user befriends
    /// (1–100, below `users`); duplicates collapse, so users average up to
    /// twice this many friends.
    pub degree: Option<usize>,
}

/// Friendship layouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairs {
    /// Each user befriends the next one (the last befriends the first).
    #[default]
    Ring,
    /// Each user befriends `degree` others chosen at random (by `seed`).
    Random,
    /// No friendships (besides those groups need).
    None,
}

/// `[groups]`: groups of consecutive users; the first member creates the
/// group and befriends the others first (only friends can be added).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Groups {
    /// 1–1,000 groups.
    pub count: usize,
    /// Members per group, creator included, 2–1,024 and at most `users`.
    pub size: usize,
}

/// How events are spread in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Evenly spaced at the current rate.
    #[default]
    Constant,
    /// Exponential gaps at the current rate (a Poisson process).
    Poisson,
}

/// One `[[phases]]` entry: events at a constant or linearly changing rate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    /// 1–3,600 seconds.
    pub duration_secs: f64,
    /// Events per second over all users, 0–100,000 (0: hold the connections).
    pub rate_per_sec: Option<f64>,
    /// A linear ramp from `rate_from` to `rate_to`; both or neither, exclusive with `rate_per_sec`.
    pub rate_from: Option<f64>,
    pub rate_to: Option<f64>,
    #[serde(default)]
    pub arrival: Arrival,
    /// What each event does; absent: every event is a direct message.
    pub mix: Option<Mix>,
    /// How long a churned user stays away, 0.1–60 s.
    #[serde(default = "default_churn_secs")]
    pub churn_secs: f64,
}

fn default_churn_secs() -> f64 {
    5.0
}

/// `[phases.mix]`: relative weights of the actions (absent keys weigh 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mix {
    /// Send a message to the user's ring friend.
    pub direct: f64,
    /// Send a message to one of the user's groups.
    pub group: f64,
    /// Mark the newest message the user received as seen.
    pub seen: f64,
    /// Toggle the device's `activity` (idle, then active again).
    pub idle: f64,
    /// Change the chosen presence (`PUT /me/presence`).
    pub presence: f64,
    /// Close the socket and reopen it at once, then `sync`.
    pub reconnect: f64,
    /// Close the socket, stay away `churn_secs`, come back and `sync`.
    pub churn: f64,
}

/// The actions of a mix, in the order `Mix::weights` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Direct,
    Group,
    Seen,
    Idle,
    Presence,
    Reconnect,
    Churn,
}

impl Mix {
    /// Only direct messages.
    pub const DIRECT: Mix =
        Mix { direct: 1.0, group: 0.0, seen: 0.0, idle: 0.0, presence: 0.0, reconnect: 0.0, churn: 0.0 };

    pub fn weights(&self) -> [(Action, &'static str, f64); 7] {
        [
            (Action::Direct, "direct", self.direct),
            (Action::Group, "group", self.group),
            (Action::Seen, "seen", self.seen),
            (Action::Idle, "idle", self.idle),
            (Action::Presence, "presence", self.presence),
            (Action::Reconnect, "reconnect", self.reconnect),
            (Action::Churn, "churn", self.churn),
        ]
    }

    /// The action at `point`, a number in `0..1`.
    pub fn pick(&self, point: f64) -> Action {
        let weights = self.weights();
        let total: f64 = weights.iter().map(|w| w.2).sum();
        let mut left = point * total;
        for (action, _, weight) in weights {
            if left < weight {
                return action;
            }
            left -= weight;
        }
        weights.iter().rev().find(|w| w.2 > 0.0).map_or(Action::Direct, |w| w.0)
    }
}

impl Phase {
    /// The rate at the start and at the end of the phase.
    pub fn rates(&self) -> (f64, f64) {
        match (self.rate_per_sec, self.rate_from, self.rate_to) {
            (Some(rate), _, _) => (rate, rate),
            (None, Some(from), Some(to)) => (from, to),
            _ => (0.0, 0.0),
        }
    }

    pub fn mix(&self) -> Mix {
        self.mix.unwrap_or(Mix::DIRECT)
    }
}

/// `[step]`: direct messages at a rising rate, one phase per step, until a
/// p99 threshold breaks or `max_rate` is passed; the knee is the last rate that met them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The first step's rate, 0.1–100,000 messages per second.
    pub start: f64,
    /// Each step's rate is the previous one times `factor` (> 1) ...
    pub factor: Option<f64>,
    /// ... or plus `increment` (> 0); exactly one of the two.
    pub increment: Option<f64>,
    /// Length of each step, 1–3,600 s.
    pub step_secs: f64,
    /// No step goes above this rate, 0.1–100,000.
    pub max_rate: f64,
    #[serde(default)]
    pub arrival: Arrival,
}

impl Step {
    /// The rates of the steps, at most `MAX_STEPS`.
    pub fn rates(&self) -> Vec<f64> {
        let mut rates = Vec::new();
        let mut rate = self.start;
        while rate <= self.max_rate * (1.0 + 1e-9) && rates.len() < MAX_STEPS {
            rates.push(rate);
            rate = match (self.factor, self.increment) {
                (Some(factor), _) => rate * factor,
                (None, Some(increment)) => rate + increment,
                (None, None) => break,
            };
        }
        rates
    }

    /// One phase per step.
    pub fn phases(&self) -> Vec<Phase> {
        self.rates()
            .into_iter()
            .map(|rate| Phase {
                name: format!("step {rate:.0}/s"),
                duration_secs: self.step_secs,
                rate_per_sec: Some(rate),
                rate_from: None,
                rate_to: None,
                arrival: self.arrival,
                mix: None,
                churn_secs: default_churn_secs(),
            })
            .collect()
    }
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

/// Line of the first of `keys` found inside the `nth` occurrence of the
/// table `table` (sub-tables such as `[phases.mix]` included); else the table's header.
fn line_of_key(text: &str, table: &str, nth: usize, keys: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut seen = 0;
    let mut start = None;
    let mut end = lines.len();
    for (index, line) in lines.iter().enumerate() {
        if !line.starts_with('[') {
            continue;
        }
        let name = line.trim_matches(|c| c == '[' || c == ']').trim();
        if start.is_some() {
            if !name.starts_with(&format!("{table}.")) {
                end = index;
                break;
            }
        } else if name == table {
            if seen == nth {
                start = Some(index);
            }
            seen += 1;
        }
    }
    let start = start?;
    for key in keys {
        let found = (start..end).find(|&i| lines[i].split('=').next().map(str::trim) == Some(*key));
        if let Some(index) = found {
            return Some(index + 1);
        }
    }
    Some(start + 1)
}

impl Scenario {
    /// Parses and validates `text`; a `[step]` section becomes its phases.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let mut scenario: Scenario = toml::from_str(text).map_err(|error| ScenarioError {
            line: error.span().map(|span| line_of(text, span.start)),
            message: error.message().trim().to_owned(),
        })?;
        scenario.validate(text)?;
        if let Some(step) = &scenario.step {
            scenario.phases = step.phases();
        }
        Ok(scenario)
    }

    /// The longest churn of any phase: how long the drain may wait for churned users.
    pub fn longest_churn_secs(&self) -> f64 {
        self.phases.iter().filter(|p| p.mix().churn > 0.0).map(|p| p.churn_secs).fold(0.0, f64::max)
    }

    fn validate(&self, text: &str) -> Result<(), ScenarioError> {
        let fail = |table: &str, nth: usize, keys: &[&str], why: String| ScenarioError {
            line: line_of_key(text, table, nth, keys),
            message: format!("{table}.{}: {why}", keys[0]),
        };
        let range = |table: &str, nth: usize, keys: &[&str], value: f64, low: f64, high: f64| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(fail(table, nth, keys, format!("{value} is out of range {low}..={high}")))
            }
        };
        let p = &self.population;
        range("population", 0, &["users"], p.users as f64, 2.0, MAX_USERS as f64)?;
        range("population", 0, &["devices"], p.devices as f64, 1.0, MAX_DEVICES as f64)?;
        range("population", 0, &["connect_concurrency"], p.connect_concurrency as f64, 1.0, 10_000.0)?;
        range("population", 0, &["setup_concurrency"], p.setup_concurrency as f64, 1.0, 1024.0)?;
        let f = &self.friends;
        match (f.pairs, f.degree) {
            (Pairs::Random, Some(degree)) => {
                range("friends", 0, &["degree"], degree as f64, 1.0, 100f64.min(p.users as f64 - 1.0))?
            }
            (Pairs::Random, None) => {
                return Err(fail("friends", 0, &["pairs"], "\"random\" needs degree = N".into()));
            }
            (_, Some(_)) => return Err(fail("friends", 0, &["degree"], "only goes with pairs = \"random\"".into())),
            (_, None) => {}
        }
        if let Some(groups) = &self.groups {
            range("groups", 0, &["count"], groups.count as f64, 1.0, 1000.0)?;
            range("groups", 0, &["size"], groups.size as f64, 2.0, MAX_GROUP_SIZE.min(p.users) as f64)?;
        }
        match (&self.step, self.phases.is_empty()) {
            (Some(_), false) => {
                return Err(ScenarioError {
                    line: line_of_key(text, "step", 0, &[]),
                    message: "[step] generates the phases: leave out [[phases]]".into(),
                });
            }
            (None, true) => {
                return Err(ScenarioError {
                    line: None,
                    message: "at least one [[phases]] entry (or a [step] section) is required".into(),
                });
            }
            _ => {}
        }
        if let Some(step) = &self.step {
            range("step", 0, &["start"], step.start, 0.1, MAX_RATE)?;
            range("step", 0, &["max_rate"], step.max_rate, step.start, MAX_RATE)?;
            range("step", 0, &["step_secs"], step.step_secs, 1.0, 3600.0)?;
            match (step.factor, step.increment) {
                (Some(factor), None) => range("step", 0, &["factor"], factor, 1.01, 100.0)?,
                (None, Some(increment)) => range("step", 0, &["increment"], increment, 0.1, MAX_RATE)?,
                _ => {
                    return Err(fail(
                        "step",
                        0,
                        &["factor", "increment"],
                        "give exactly one of factor and increment".into(),
                    ));
                }
            }
            if self.thresholds.p99_ack_ms.is_none() && self.thresholds.p99_delivery_ms.is_none() {
                return Err(fail(
                    "step",
                    0,
                    &["start"],
                    "needs thresholds.p99_ack_ms or thresholds.p99_delivery_ms to find the knee".into(),
                ));
            }
        }
        for (n, phase) in self.phases.iter().enumerate() {
            if phase.name.trim().is_empty() {
                return Err(fail("phases", n, &["name"], "must not be empty".into()));
            }
            range("phases", n, &["duration_secs"], phase.duration_secs, 1.0, 3600.0)?;
            match (phase.rate_per_sec, phase.rate_from, phase.rate_to) {
                (Some(rate), None, None) => range("phases", n, &["rate_per_sec"], rate, 0.0, MAX_RATE)?,
                (None, Some(from), Some(to)) => {
                    range("phases", n, &["rate_from"], from, 0.0, MAX_RATE)?;
                    range("phases", n, &["rate_to"], to, 0.0, MAX_RATE)?;
                }
                _ => {
                    return Err(fail(
                        "phases",
                        n,
                        &["rate_per_sec", "rate_from", "rate_to", "name"],
                        "give either rate_per_sec or both rate_from and rate_to".into(),
                    ));
                }
            }
            range("phases", n, &["churn_secs"], phase.churn_secs, 0.1, MAX_CHURN_SECS)?;
            if let Some(mix) = &phase.mix {
                for (_, key, weight) in mix.weights() {
                    range("phases", n, &[key, "mix"], weight, 0.0, 1e6)?;
                }
                if mix.weights().iter().all(|w| w.2 == 0.0) {
                    return Err(fail("phases", n, &["mix"], "needs at least one weight above 0".into()));
                }
                if mix.group > 0.0 && self.groups.is_none() {
                    return Err(fail("phases", n, &["group", "mix"], "needs a [groups] section".into()));
                }
            }
        }
        let t = &self.thresholds;
        for (key, value) in [("p99_ack_ms", t.p99_ack_ms), ("p99_delivery_ms", t.p99_delivery_ms)] {
            if let Some(value) = value
                && !(value > 0.0 && value.is_finite())
            {
                return Err(fail("thresholds", 0, &[key], format!("{value} must be a positive number")));
            }
        }
        if let Some(rate) = t.max_error_rate {
            range("thresholds", 0, &["max_error_rate"], rate, 0.0, 1.0)?;
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

    const MIXED: &str = r#"
[population]
users = 10

[groups]
count = 2
size = 5

[[phases]]
name = "ramp"
duration_secs = 10
rate_from = 0
rate_to = 100
arrival = "poisson"

[phases.mix]
direct = 1
group = 2
seen = 0.5
churn = 0.1

[[phases]]
name = "hold"
duration_secs = 5
rate_per_sec = 0
"#;

    fn refused(text: &str) -> ScenarioError {
        Scenario::parse(text).expect_err("invalid")
    }

    #[test]
    fn parses_a_good_scenario() {
        let scenario = Scenario::parse(GOOD).expect("valid");
        assert_eq!(scenario.population.users, 4);
        assert_eq!(scenario.population.connect_concurrency, 64);
        assert_eq!(scenario.population.devices, 1, "one device per user unless asked");
        assert_eq!(scenario.friends.pairs, Pairs::Ring);
        assert_eq!(scenario.phases.len(), 2);
        assert_eq!(scenario.phases[1].mix(), Mix::DIRECT);
        assert_eq!(scenario.thresholds.p99_delivery_ms, Some(800.0));
    }

    #[test]
    fn parses_groups_ramps_mixes_and_holds() {
        let scenario = Scenario::parse(MIXED).expect("valid");
        assert_eq!(scenario.groups.as_ref().map(|g| (g.count, g.size)), Some((2, 5)));
        assert_eq!(scenario.phases[0].rates(), (0.0, 100.0));
        assert_eq!(scenario.phases[0].arrival, Arrival::Poisson);
        assert_eq!(scenario.phases[1].rates(), (0.0, 0.0));
        let mix = scenario.phases[0].mix();
        assert_eq!((mix.group, mix.idle), (2.0, 0.0), "absent weights are 0");
        assert_eq!(mix.pick(0.0), Action::Direct);
        assert_eq!(mix.pick(0.5), Action::Group);
        assert_eq!(mix.pick(0.99), Action::Churn);
        assert_eq!(scenario.longest_churn_secs(), 5.0);
    }

    #[test]
    fn syntax_error_names_the_line() {
        let error = refused(&GOOD.replace("rate_per_sec = 50", "rate_per_sec = = 50"));
        assert_eq!(error.line, Some(16), "{error}");
        assert!(error.to_string().starts_with("line 16:"), "{error}");
    }

    #[test]
    fn unknown_key_names_the_line() {
        let error = refused(&GOOD.replace("p99_ack_ms = 500", "p99_ack = 500"));
        assert_eq!(error.line, Some(19), "{error}");
        assert!(error.message.contains("p99_ack"), "{error}");
        let error = refused(&MIXED.replace("seen = 0.5", "read = 0.5"));
        assert_eq!(error.line, Some(19), "{error}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        assert_eq!(refused(&GOOD.replace("users = 4", "users = \"four\"")).line, Some(3));
        assert_eq!(refused(&MIXED.replace("\"poisson\"", "\"bursty\"")).line, Some(14));
    }

    #[test]
    fn out_of_range_values_name_the_key_and_line() {
        let error = refused(&GOOD.replace("rate_per_sec = 50", "rate_per_sec = -1"));
        assert_eq!(error.line, Some(16), "{error}");
        assert!(error.message.contains("phases.rate_per_sec"), "{error}");

        let error = refused(&GOOD.replace("users = 4", "users = 1"));
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.message.contains("population.users"), "{error}");

        assert_eq!(refused(&GOOD.replace("max_error_rate = 0.0", "max_error_rate = 1.5")).line, Some(21));
        let error = refused(&MIXED.replace("size = 5", "size = 11"));
        assert_eq!(error.line, Some(7), "more members than users: {error}");
        let error = refused(&MIXED.replace("churn = 0.1", "churn = -0.1"));
        assert_eq!(error.line, Some(20), "{error}");
        assert!(error.message.contains("phases.churn"), "{error}");
        let error = refused(&MIXED.replace("rate_to = 100", "rate_to = 1e9"));
        assert_eq!(error.line, Some(13), "{error}");
    }

    #[test]
    fn devices_per_user_are_validated_with_their_line() {
        let two = Scenario::parse(&GOOD.replace("users = 4", "users = 4\ndevices = 2")).expect("valid");
        assert_eq!(two.population.devices, 2);
        for bad in ["0", "17"] {
            let error = refused(&GOOD.replace("users = 4", &format!("users = 4\ndevices = {bad}")));
            assert_eq!(error.to_string(), format!("line 4: population.devices: {bad} is out of range 1..=16"));
        }
        assert_eq!(refused(&GOOD.replace("users = 4", "users = 4\ndevices = \"two\"")).line, Some(4));
    }

    #[test]
    fn rates_must_be_given_one_way() {
        let error = refused(&MIXED.replace("rate_to = 100", ""));
        assert!(error.message.contains("rate_per_sec or both"), "{error}");
        assert_eq!(error.line, Some(12), "{error}");
        let error = refused(&GOOD.replace("rate_per_sec = 10", "rate_per_sec = 10\nrate_from = 1\nrate_to = 2"));
        assert_eq!(error.line, Some(11), "{error}");
    }

    #[test]
    fn group_messages_need_groups_and_a_mix_needs_a_weight() {
        let error = refused(&MIXED.replace("[groups]\ncount = 2\nsize = 5\n", ""));
        assert!(error.message.contains("[groups]"), "{error}");
        let zero = MIXED.replace("direct = 1\ngroup = 2\nseen = 0.5\nchurn = 0.1", "direct = 0");
        assert!(refused(&zero).message.contains("at least one weight"));
    }

    #[test]
    fn missing_phases_is_an_error() {
        let error = refused("phases = []\n[population]\nusers = 3\n");
        assert!(error.message.contains("phases"), "{error}");
    }

    const STEP: &str = r#"
[population]
users = 10

[step]
start = 100
factor = 2
step_secs = 5
max_rate = 1000

[thresholds]
p99_ack_ms = 100
"#;

    #[test]
    fn step_generates_rising_phases_up_to_max_rate() {
        let scenario = Scenario::parse(STEP).expect("valid");
        let rates: Vec<f64> = scenario.phases.iter().map(|p| p.rates().0).collect();
        assert_eq!(rates, vec![100.0, 200.0, 400.0, 800.0]);
        assert!(scenario.phases.iter().all(|p| p.duration_secs == 5.0));
        let linear = Scenario::parse(&STEP.replace("factor = 2", "increment = 300")).expect("valid");
        assert_eq!(linear.phases.iter().map(|p| p.rates().0).collect::<Vec<_>>(), vec![100.0, 400.0, 700.0, 1000.0]);
    }

    #[test]
    fn step_errors_name_the_line() {
        let error = refused(&STEP.replace("factor = 2", "factor = 2\nincrement = 5"));
        assert_eq!(error.line, Some(7), "{error}");
        assert!(error.message.contains("exactly one"), "{error}");
        let error = refused(&STEP.replace("max_rate = 1000", "max_rate = 50"));
        assert_eq!(error.line, Some(9), "{error}");
        let error = refused(&STEP.replace("p99_ack_ms = 100", ""));
        assert!(error.message.contains("knee"), "{error}");
        let with_phases = format!("{STEP}\n[[phases]]\nname = \"x\"\nduration_secs = 1\nrate_per_sec = 1\n");
        assert!(refused(&with_phases).message.contains("leave out [[phases]]"));
    }
}
