//! The cluster stack as code (`compose/docker-compose.yml`, `compose/parley.toml`,
//! the `Dockerfile`) stays consistent with itself and with the repository.
//!
//! No Docker engine runs where these tests do, so they check what can be
//! checked from the files: the node config is a real `Config`, and with each
//! node's environment applied a complete cluster node (`Config::cluster_node`)
//! with its own name and URL, sharing the keys, store and pepper with the
//! others; every address the node config names is a service listening on
//! that port; start-up order only waits on health checks that exist;
//! bind-mounted paths exist; the delivery topic has one partition per shard
//! and a dead-letter topic; the KRaft quorum is the Kafka services; and the
//! image runs `parley` as a non-root user with a health check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use gateway::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

const COMPOSE: &str = "compose/docker-compose.yml";
const NODE_CONFIG: &str = "compose/parley.toml";
const DOCKERFILE: &str = "Dockerfile";
const DOCKERIGNORE: &str = ".dockerignore";

// ---------------------------------------------------------------- loading

fn repo_root() -> PathBuf {
    let gateway = Path::new(env!("CARGO_MANIFEST_DIR"));
    gateway.parent().unwrap_or(gateway).to_path_buf()
}

/// `path` with `.` and `..` resolved lexically (for messages and existence checks).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: cannot read {}: {e}", path.display()))
}

fn compose() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(COMPOSE)).unwrap_or_else(|e| panic!("{COMPOSE}: not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{COMPOSE}: expected one YAML document, found {}", docs.len());
    docs.remove(0)
}

fn node_config() -> toml::Table {
    read(NODE_CONFIG).parse().unwrap_or_else(|e| panic!("{NODE_CONFIG}: not TOML: {e}"))
}

/// The config a Parley service runs with, loaded as `Config::load` does:
/// defaults, then `compose/parley.toml`, then the service's `PARLEY_*`
/// variables (`__` separates sections; compose interpolations become `X`).
fn service_config(name: &str, service: &Yaml) -> Config {
    let mut figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&read(NODE_CONFIG)));
    for (key, value) in environment(name, service) {
        if let Some(path) = key.strip_prefix("PARLEY_") {
            let path = path.to_ascii_lowercase().replace("__", ".");
            let value: figment::value::Value = without_interpolations(&value).parse().unwrap_or_else(|e| match e {});
            figment = figment.merge(Serialized::defaults(figment::util::nest(&path, value)));
        }
    }
    figment.extract().unwrap_or_else(|e| {
        panic!("{COMPOSE}: service `{name}`: {NODE_CONFIG} with the service's environment is not a valid config: {e}")
    })
}

/// A service's mounts as (source, target); the short form is `SOURCE:TARGET[:MODE]`.
fn mounts(service: &Yaml) -> Vec<(String, String)> {
    let Yaml::Array(items) = &service["volumes"] else { return Vec::new() };
    items
        .iter()
        .map(|mount| match mount {
            Yaml::Hash(_) => {
                (scalar(&mount["source"]).unwrap_or_default(), scalar(&mount["target"]).unwrap_or_default())
            }
            other => {
                let short = scalar(other).unwrap_or_default();
                let mut parts = short.split(':');
                let source = parts.next().unwrap_or("").to_owned();
                (source, parts.next().unwrap_or("").to_owned())
            }
        })
        .collect()
}

/// The compose file's services by name.
fn services(doc: &Yaml) -> BTreeMap<String, &Yaml> {
    let services = doc["services"].as_hash().unwrap_or_else(|| panic!("{COMPOSE}: no `services` mapping"));
    services
        .iter()
        .map(|(name, service)| {
            let name = name.as_str().unwrap_or_else(|| panic!("{COMPOSE}: a service name is not a string: {name:?}"));
            (name.to_owned(), service)
        })
        .collect()
}

/// A scalar as compose reads it (`"3"`, `3` and `true` are all strings to it).
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list of scalars, or one scalar as a one-element list; absent: empty.
fn scalars(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
        Yaml::BadValue | Yaml::Null => Vec::new(),
        other => scalar(other).into_iter().collect(),
    }
}

/// A service's `environment`, in either the mapping or the `KEY=value` list form.
fn environment(name: &str, service: &Yaml) -> BTreeMap<String, String> {
    match &service["environment"] {
        Yaml::Hash(map) => map
            .iter()
            .map(|(k, v)| {
                let key = scalar(k).unwrap_or_else(|| panic!("{COMPOSE}: service `{name}`: bad environment key {k:?}"));
                (key, scalar(v).unwrap_or_default())
            })
            .collect(),
        Yaml::Array(_) => scalars(&service["environment"])
            .into_iter()
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item, String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `depends_on` as (target, condition); the list form means `service_started`.
fn depends_on(name: &str, service: &Yaml) -> Vec<(String, String)> {
    match &service["depends_on"] {
        Yaml::Array(_) => {
            scalars(&service["depends_on"]).into_iter().map(|t| (t, "service_started".to_owned())).collect()
        }
        Yaml::Hash(map) => map
            .iter()
            .map(|(target, spec)| {
                let target =
                    scalar(target).unwrap_or_else(|| panic!("{COMPOSE}: service `{name}`: bad depends_on key"));
                let condition = scalar(&spec["condition"]).unwrap_or_else(|| "service_started".to_owned());
                (target, condition)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Container ports a service declares: `expose` and the container side of `ports`.
fn container_ports(service: &Yaml) -> BTreeSet<u16> {
    let strip_protocol = |p: &str| p.split('/').next().unwrap_or(p).trim().to_owned();
    let mut ports = BTreeSet::new();
    for port in scalars(&service["expose"]) {
        ports.extend(strip_protocol(&port).parse::<u16>().ok());
    }
    if let Yaml::Array(items) = &service["ports"] {
        for item in items {
            let target = match item {
                Yaml::Hash(_) => scalar(&item["target"]),
                other => scalar(other).and_then(|s| s.rsplit(':').next().map(strip_protocol)),
            };
            ports.extend(target.and_then(|t| t.parse::<u16>().ok()));
        }
    }
    ports
}

fn has_healthcheck(service: &Yaml) -> bool {
    let check = &service["healthcheck"];
    check.as_hash().is_some() && check["disable"].as_bool() != Some(true) && !scalars(&check["test"]).is_empty()
}

/// `text` with each compose interpolation (`${NAME}`, `${NAME:?message}`) replaced by `X`.
fn without_interpolations(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e + 1);
        out.push('X');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `host:port` from `host:port`, `scheme://[user@]host:port[/path]`.
fn host_port(address: &str) -> Option<(String, u16)> {
    let address = &without_interpolations(address);
    let rest = address.split_once("://").map_or(address.as_str(), |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = host_port.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The Parley nodes: services built from this repository or running its image.
fn parley_services(doc: &Yaml) -> BTreeMap<String, &Yaml> {
    let parley_image = |s: &Yaml| scalar(&s["image"]).is_some_and(|i| i == "parley" || i.starts_with("parley:"));
    services(doc).into_iter().filter(|(_, s)| !s["build"].is_badvalue() || parley_image(s)).collect()
}

/// Kafka services taking part in the KRaft quorum.
fn kafka_services(doc: &Yaml) -> BTreeMap<String, &Yaml> {
    services(doc)
        .into_iter()
        .filter(|(name, s)| environment(name, s).get("KAFKA_PROCESS_ROLES").is_some_and(|r| r.contains("controller")))
        .collect()
}

fn toml_str<'a>(table: &'a toml::Table, section: &str, key: &str) -> &'a str {
    table
        .get(section)
        .and_then(|s| s.get(key))
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{NODE_CONFIG}: [{section}] {key} is missing or not a string"))
}

fn toml_int(table: &toml::Table, section: &str, key: &str) -> i64 {
    table
        .get(section)
        .and_then(|s| s.get(key))
        .and_then(toml::Value::as_integer)
        .unwrap_or_else(|| panic!("{NODE_CONFIG}: [{section}] {key} is missing or not an integer"))
}

fn toml_strings(table: &toml::Table, section: &str, key: &str) -> Vec<String> {
    let list = table
        .get(section)
        .and_then(|s| s.get(key))
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("{NODE_CONFIG}: [{section}] {key} is missing or not a list"));
    list.iter()
        .map(|v| {
            v.as_str().unwrap_or_else(|| panic!("{NODE_CONFIG}: [{section}] {key} holds a non-string: {v}")).to_owned()
        })
        .collect()
}

/// The port of the node's `listen` address in `compose/parley.toml`.
fn listen_port(config: &toml::Table) -> u16 {
    let listen = config.get("listen").and_then(toml::Value::as_str).unwrap_or_else(|| {
        panic!("{NODE_CONFIG}: `listen` is missing (the default, 127.0.0.1, is unreachable in a container)")
    });
    let (host, port) = host_port(listen).unwrap_or_else(|| panic!("{NODE_CONFIG}: `listen = {listen:?}` has no port"));
    assert_eq!(host, "0.0.0.0", "{NODE_CONFIG}: `listen` must be 0.0.0.0:PORT in a container, is {listen:?}");
    port
}

// ------------------------------------------------------------------ tests

#[test]
fn compose_file_parses_without_merge_keys() {
    fn no_merge_keys(value: &Yaml, at: &str) {
        match value {
            Yaml::Hash(map) => {
                for (k, v) in map {
                    let key = scalar(k).unwrap_or_default();
                    assert_ne!(key, "<<", "{COMPOSE}: merge key `<<` at {at}: YAML 1.2 has none; write the block out");
                    no_merge_keys(v, &format!("{at}.{key}"));
                }
            }
            Yaml::Array(items) => items.iter().for_each(|v| no_merge_keys(v, at)),
            Yaml::BadValue => panic!("{COMPOSE}: an unresolved alias at {at}"),
            _ => {}
        }
    }
    let doc = compose();
    no_merge_keys(&doc, "top level");
    assert!(!services(&doc).is_empty(), "{COMPOSE}: no services");
}

#[test]
fn every_address_in_the_node_config_is_a_service_listening_on_that_port() {
    let doc = compose();
    let services = services(&doc);
    let config = node_config();

    let mut addresses: Vec<(String, String)> = Vec::new(); // (where it is named, address)
    for broker in toml_strings(&config, "kafka", "brokers") {
        addresses.push((format!("{NODE_CONFIG} [kafka] brokers"), broker));
    }
    for node in toml_strings(&config, "scylla", "nodes") {
        addresses.push((format!("{NODE_CONFIG} [scylla] nodes"), node));
    }
    addresses.push((format!("{NODE_CONFIG} [redis] url"), toml_str(&config, "redis", "url").to_owned()));
    addresses.push((format!("{NODE_CONFIG} [cluster] url"), toml_str(&config, "cluster", "url").to_owned()));
    // The same settings overridden per node in the compose file.
    for (name, service) in &parley_services(&doc) {
        for (key, value) in environment(name, service) {
            if key == "PARLEY_REDIS__URL" || key == "PARLEY_CLUSTER__URL" {
                addresses.push((format!("{COMPOSE} service `{name}` {key}"), value));
            }
        }
    }

    let kafka = kafka_services(&doc);
    for (named_in, address) in addresses {
        let (host, port) = host_port(&address)
            .unwrap_or_else(|| panic!("{named_in}: {address:?} is not host:port or a URL with a port"));
        let service = services.get(&host).unwrap_or_else(|| {
            panic!("{named_in}: {address:?} names host `{host}`, which is not a service in {COMPOSE}")
        });
        let ports = container_ports(service);
        assert!(
            ports.contains(&port),
            "{named_in}: {address:?} uses port {port}, but service `{host}` in {COMPOSE} exposes only {ports:?}"
        );
        if let Some(broker) = kafka.get(&host) {
            let advertised = environment(&host, broker).get("KAFKA_ADVERTISED_LISTENERS").cloned().unwrap_or_default();
            assert!(
                advertised.split(',').any(|l| host_port(l) == Some((host.clone(), port))),
                "{named_in}: {address:?}: Kafka service `{host}` in {COMPOSE} does not advertise {host}:{port} \
                 (KAFKA_ADVERTISED_LISTENERS = {advertised:?}); clients would be sent elsewhere"
            );
        }
    }
}

#[test]
fn start_up_order_waits_only_on_what_exists_and_can_report() {
    let doc = compose();
    let services = services(&doc);
    for (name, service) in &services {
        for (target, condition) in depends_on(name, service) {
            let dependency = services
                .get(&target)
                .unwrap_or_else(|| panic!("{COMPOSE}: service `{name}` depends on `{target}`, which is not a service"));
            match condition.as_str() {
                "service_healthy" => assert!(
                    has_healthcheck(dependency),
                    "{COMPOSE}: service `{name}` waits for `{target}` to be healthy, but `{target}` has no healthcheck"
                ),
                "service_completed_successfully" => assert_eq!(
                    scalar(&dependency["restart"]).as_deref(),
                    Some("no"),
                    "{COMPOSE}: service `{name}` waits for `{target}` to complete, but `{target}` is not a one-shot \
                     (restart: \"no\")"
                ),
                "service_started" => {}
                other => panic!("{COMPOSE}: service `{name}`: unknown depends_on condition {other:?} for `{target}`"),
            }
        }
    }
    // No cycles: repeatedly remove services whose dependencies are all removed.
    let mut left: BTreeMap<&str, Vec<String>> =
        services.iter().map(|(n, s)| (n.as_str(), depends_on(n, s).into_iter().map(|(t, _)| t).collect())).collect();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d.as_str())))
            .map(|(n, _)| *n)
            .collect();
        assert!(!ready.is_empty(), "{COMPOSE}: depends_on has a cycle among {:?}", left.keys().collect::<Vec<_>>());
        for name in ready {
            left.remove(name);
        }
    }
}

#[test]
fn every_service_has_a_health_check_or_is_a_one_shot_others_wait_for() {
    let doc = compose();
    let services = services(&doc);
    let awaited: BTreeSet<String> = services
        .iter()
        .flat_map(|(n, s)| depends_on(n, s))
        .filter(|(_, condition)| condition == "service_completed_successfully")
        .map(|(target, _)| target)
        .collect();
    for (name, service) in &services {
        let one_shot = scalar(&service["restart"]).as_deref() == Some("no");
        if one_shot {
            assert!(
                awaited.contains(name),
                "{COMPOSE}: one-shot service `{name}` (restart: \"no\") is not awaited by any service \
                 (depends_on: condition: service_completed_successfully)"
            );
        } else {
            assert!(has_healthcheck(service), "{COMPOSE}: service `{name}` has no healthcheck");
        }
    }
}

#[test]
fn bind_mounts_build_contexts_and_named_volumes_exist() {
    let doc = compose();
    let compose_dir = repo_root().join("compose");
    let declared: BTreeSet<String> =
        doc["volumes"].as_hash().map(|v| v.keys().filter_map(scalar).collect()).unwrap_or_default();
    for (name, service) in services(&doc) {
        if let Yaml::Array(mounts) = &service["volumes"] {
            for mount in mounts {
                let (source, kind) = match mount {
                    Yaml::Hash(_) => (scalar(&mount["source"]).unwrap_or_default(), scalar(&mount["type"])),
                    other => (scalar(other).unwrap_or_default().split(':').next().unwrap_or("").to_owned(), None),
                };
                let bind = kind.as_deref() == Some("bind") || source.starts_with('.') || source.starts_with('/');
                if bind {
                    let path = normalize(&compose_dir.join(&source));
                    assert!(
                        path.exists(),
                        "{COMPOSE}: service `{name}` bind-mounts {source:?}, but {} does not exist",
                        path.display()
                    );
                } else if !source.is_empty() {
                    assert!(
                        declared.contains(&source),
                        "{COMPOSE}: service `{name}` mounts volume `{source}`, which the top-level `volumes:` does not declare"
                    );
                }
            }
        }
        let build = &service["build"];
        if !build.is_badvalue() {
            let context = scalar(&build["context"]).or_else(|| scalar(build)).unwrap_or_else(|| ".".into());
            let dockerfile = scalar(&build["dockerfile"]).unwrap_or_else(|| "Dockerfile".into());
            let path = normalize(&compose_dir.join(&context).join(&dockerfile));
            assert!(
                path.is_file(),
                "{COMPOSE}: service `{name}` builds {dockerfile:?} in context {context:?}, but {} is not a file",
                path.display()
            );
        }
    }
}

#[test]
fn published_ports_bind_to_loopback_only() {
    let doc = compose();
    for (name, service) in services(&doc) {
        if let Yaml::Array(ports) = &service["ports"] {
            for port in ports {
                let (ok, shown) = match port {
                    Yaml::Hash(_) => {
                        let host_ip = scalar(&port["host_ip"]).unwrap_or_default();
                        (host_ip == "127.0.0.1", format!("port {:?} on host_ip {host_ip:?}", scalar(&port["target"])))
                    }
                    other => {
                        let short = scalar(other).unwrap_or_default();
                        (short.starts_with("127.0.0.1:"), format!("{short:?}"))
                    }
                };
                assert!(
                    ok,
                    "{COMPOSE}: service `{name}` publishes {shown} beyond 127.0.0.1 (write 127.0.0.1:HOST:CONTAINER)"
                );
            }
        }
    }
}

#[test]
fn delivery_topic_has_one_partition_per_shard_and_a_dead_letter_topic() {
    let doc = compose();
    let config = node_config();
    let shards = toml_int(&config, "engine", "shard_count");
    let topic = toml_str(&config, "kafka", "delivery_topic");
    let dead_letters = format!("{topic}.dead");
    let brokers = kafka_services(&doc).len() as i64;
    let services = services(&doc);
    let init = services.get("kafka-init").unwrap_or_else(|| panic!("{COMPOSE}: no `kafka-init` service"));
    let script = [&init["entrypoint"], &init["command"]].into_iter().flat_map(scalars).collect::<Vec<_>>().join(" ");
    let words: Vec<&str> = script.split_whitespace().collect();
    // One `kafka-topics.sh` call each, up to the next one.
    let mut calls: Vec<&[&str]> = Vec::new();
    let starts: Vec<usize> = (0..words.len()).filter(|&i| words[i].ends_with("kafka-topics.sh")).collect();
    for (n, &start) in starts.iter().enumerate() {
        calls.push(&words[start..starts.get(n + 1).copied().unwrap_or(words.len())]);
    }
    assert!(!calls.is_empty(), "{COMPOSE}: kafka-init never runs kafka-topics.sh");

    let mut created = BTreeMap::new(); // topic -> partitions
    let mut partition_count_checked = false;
    for call in calls {
        let after = |flag: &str| -> Vec<&str> {
            call.windows(2).filter(|w| w[0] == flag).map(|w| w[1].trim_matches(|c| c == '\'' || c == '"')).collect()
        };
        let shown = call.join(" ");
        let [call_topic] = after("--topic")[..] else {
            panic!("{COMPOSE}: kafka-init: `{shown}` does not name exactly one --topic");
        };
        assert!(
            call_topic == topic || call_topic == dead_letters,
            "{COMPOSE}: kafka-init uses topic {call_topic:?}, but {NODE_CONFIG} [kafka] delivery_topic = {topic:?} \
             (and its dead-letter topic {dead_letters:?})"
        );
        if call.contains(&"--create") {
            let partitions = after("--partitions")
                .first()
                .and_then(|p| p.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("{COMPOSE}: kafka-init creates {call_topic} without a numeric --partitions"));
            created.insert(call_topic.to_owned(), partitions);
            let replication = after("--replication-factor").first().and_then(|r| r.parse::<i64>().ok());
            let replication = replication.unwrap_or_else(|| {
                panic!("{COMPOSE}: kafka-init creates {call_topic} without a numeric --replication-factor")
            });
            assert!(
                replication <= brokers,
                "{COMPOSE}: kafka-init asks for replication factor {replication} for {call_topic} with only {brokers} \
                 Kafka brokers"
            );
            let min_isr = after("--config")
                .into_iter()
                .find_map(|c| c.strip_prefix("min.insync.replicas="))
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or_else(|| {
                    panic!("{COMPOSE}: kafka-init creates {call_topic} without --config min.insync.replicas=N")
                });
            assert!(
                (2..replication).contains(&min_isr),
                "{COMPOSE}: kafka-init creates {call_topic} with min.insync.replicas={min_isr} and replication factor \
                 {replication}: acks=all must need 2 copies and survive one broker down"
            );
        }
        let counts: Vec<&str> = call.windows(2).filter(|w| w[0].ends_with("PartitionCount:")).map(|w| w[1]).collect();
        for count in counts {
            let count = count.trim_end_matches(|c: char| !c.is_ascii_digit());
            assert_eq!(call_topic, topic, "{COMPOSE}: kafka-init checks the PartitionCount of {call_topic}");
            assert_eq!(
                count.parse::<i64>().ok(),
                Some(shards),
                "{COMPOSE}: kafka-init checks for PartitionCount: {count}, but {NODE_CONFIG} [engine] shard_count = {shards}"
            );
            partition_count_checked = true;
        }
    }
    assert_eq!(
        created.get(topic),
        Some(&shards),
        "{COMPOSE}: kafka-init must create {topic} with --partitions {shards} ({NODE_CONFIG} [engine] shard_count); \
         it creates {created:?}"
    );
    assert!(
        partition_count_checked,
        "{COMPOSE}: kafka-init does not check {topic}'s PartitionCount: an existing topic with another count would pass"
    );
    assert!(
        created.get(&dead_letters).is_some_and(|&p| p >= 1),
        "{COMPOSE}: kafka-init does not create the dead-letter topic {dead_letters}: the brokers create no topics \
         (KAFKA_AUTO_CREATE_TOPICS_ENABLE) and a node's consumer stalls on a record it cannot write there"
    );
    for (name, broker) in kafka_services(&doc) {
        let auto_create = environment(&name, broker).get("KAFKA_AUTO_CREATE_TOPICS_ENABLE").cloned();
        assert_eq!(
            auto_create.as_deref(),
            Some("false"),
            "{COMPOSE}: Kafka service `{name}` must set KAFKA_AUTO_CREATE_TOPICS_ENABLE: \"false\" (kafka-init creates the topics)"
        );
    }
}

#[test]
fn parley_nodes_are_complete_cluster_nodes_with_distinct_names_and_urls() {
    let doc = compose();
    let port = listen_port(&node_config());
    let nodes = parley_services(&doc);
    assert!(nodes.len() >= 2, "{COMPOSE}: a cluster needs at least two Parley services, found {}", nodes.len());
    let mut urls = BTreeMap::new();
    let mut peppers = BTreeSet::new();
    for (name, service) in &nodes {
        let env = environment(name, service);
        let get = |key: &str| {
            env.get(key).cloned().unwrap_or_else(|| panic!("{COMPOSE}: Parley service `{name}` does not set {key}"))
        };
        assert_eq!(
            get("PARLEY_CLUSTER__NODE_NAME"),
            *name,
            "{COMPOSE}: service `{name}`: PARLEY_CLUSTER__NODE_NAME must be the service name"
        );
        assert_eq!(
            get("PARLEY_CLUSTER__URL"),
            format!("http://{name}:{port}"),
            "{COMPOSE}: service `{name}`: PARLEY_CLUSTER__URL must name the service and the port of `listen` in \
             {NODE_CONFIG}"
        );
        assert!(
            !env.contains_key("PARLEY_ENGINE__GENERATOR_ID"),
            "{COMPOSE}: service `{name}` sets PARLEY_ENGINE__GENERATOR_ID, but with [redis] the node leases its \
             generator ID and ignores it"
        );
        peppers.insert(env.get("PARLEY_AUTH__PEPPER").cloned());

        let config = service_config(name, service);
        let node = config
            .cluster_node()
            .unwrap_or_else(|e| panic!("{COMPOSE}: service `{name}`: not a valid cluster node: {e:#}"))
            .unwrap_or_else(|| panic!("{COMPOSE}: service `{name}`: {NODE_CONFIG} does not make it a cluster node"));
        assert_eq!(node.name, *name, "{COMPOSE}: service `{name}`: the node's name is not the service's");
        assert_eq!(node.url, format!("http://{name}:{port}"), "{COMPOSE}: service `{name}`: the node's URL");
        if let Err(e) = node.kafka.validate() {
            panic!("{COMPOSE}: service `{name}`: [kafka] is not valid: {e}");
        }
        assert!(
            config.redis.is_some(),
            "{COMPOSE}: service `{name}` has no [redis]: it would use engine.generator_id, the same on every node"
        );
        assert!(
            config.scylla.is_some(),
            "{COMPOSE}: service `{name}` has no [scylla]: each node would keep its own embedded store"
        );
        if let Some(other) = urls.insert(node.url.clone(), name.clone()) {
            panic!("{COMPOSE}: services `{other}` and `{name}` share the cluster URL {}", node.url);
        }

        // The token key (and any generated pepper) is in a volume every node mounts.
        let keys_dir = config.keys_dir();
        let keys_dir = keys_dir.to_str().unwrap_or_else(|| panic!("{NODE_CONFIG}: auth.keys_dir is not UTF-8"));
        let keys_volumes: Vec<String> =
            mounts(service).into_iter().filter(|(_, target)| target == keys_dir).map(|(source, _)| source).collect();
        assert!(
            matches!(keys_volumes.as_slice(), [v] if !v.starts_with('.') && !v.starts_with('/')),
            "{COMPOSE}: service `{name}` must mount one named volume at its keys directory {keys_dir} \
             (auth.keys_dir), shared by every node; mounts there: {keys_volumes:?}"
        );
    }
    // Every node mounts the same volume at the keys directory.
    let keys_sources: BTreeSet<Vec<(String, String)>> = nodes
        .iter()
        .map(|(name, service)| {
            let keys_dir = service_config(name, service).keys_dir();
            mounts(service).into_iter().filter(|(_, target)| Path::new(target) == keys_dir).collect()
        })
        .collect();
    assert_eq!(keys_sources.len(), 1, "{COMPOSE}: the Parley nodes mount different keys directories: {keys_sources:?}");
    assert_eq!(
        peppers.len(),
        1,
        "{COMPOSE}: the Parley nodes set different PARLEY_AUTH__PEPPER values: a password set through one node would \
         fail on another"
    );
}

#[test]
fn kraft_voters_are_exactly_the_kafka_services() {
    let doc = compose();
    let kafka = kafka_services(&doc);
    assert!(
        kafka.len() >= 3,
        "{COMPOSE}: a KRaft quorum that survives a failure needs 3 controllers, found {}",
        kafka.len()
    );
    let names: BTreeSet<String> = kafka.keys().cloned().collect();
    let node_ids: BTreeMap<String, String> = kafka
        .iter()
        .map(|(name, s)| {
            let id = environment(name, s).get("KAFKA_NODE_ID").cloned();
            (name.clone(), id.unwrap_or_else(|| panic!("{COMPOSE}: Kafka service `{name}` sets no KAFKA_NODE_ID")))
        })
        .collect();
    assert_eq!(
        node_ids.values().collect::<BTreeSet<_>>().len(),
        kafka.len(),
        "{COMPOSE}: Kafka services share a KAFKA_NODE_ID: {node_ids:?}"
    );
    let mut cluster_ids = BTreeSet::new();
    for (name, service) in &kafka {
        let env = environment(name, service);
        let get = |key: &str| {
            env.get(key).cloned().unwrap_or_else(|| panic!("{COMPOSE}: Kafka service `{name}` does not set {key}"))
        };
        let controller = get("KAFKA_CONTROLLER_LISTENER_NAMES");
        let controller_port = get("KAFKA_LISTENERS")
            .split(',')
            .find(|l| l.starts_with(&format!("{controller}://")))
            .and_then(|l| host_port(l.trim()))
            .map(|(_, port)| port)
            .unwrap_or_else(|| {
                panic!("{COMPOSE}: Kafka service `{name}`: KAFKA_LISTENERS has no {controller} listener")
            });
        let mut voters = BTreeSet::new();
        for voter in get("KAFKA_CONTROLLER_QUORUM_VOTERS").split(',') {
            let (id, address) = voter
                .split_once('@')
                .unwrap_or_else(|| panic!("{COMPOSE}: Kafka service `{name}`: voter {voter:?} is not id@host:port"));
            let (host, port) = host_port(address)
                .unwrap_or_else(|| panic!("{COMPOSE}: Kafka service `{name}`: voter {voter:?} is not id@host:port"));
            assert_eq!(
                node_ids.get(&host),
                Some(&id.to_owned()),
                "{COMPOSE}: Kafka service `{name}`: voter {voter:?} does not match service `{host}`'s KAFKA_NODE_ID"
            );
            assert_eq!(
                port, controller_port,
                "{COMPOSE}: Kafka service `{name}`: voter {voter:?} is not on the controller port {controller_port}"
            );
            voters.insert(host);
        }
        assert_eq!(
            voters, names,
            "{COMPOSE}: Kafka service `{name}`: KAFKA_CONTROLLER_QUORUM_VOTERS must name exactly the Kafka services"
        );
        let cluster_id = get("CLUSTER_ID");
        assert_eq!(
            cluster_id.len(),
            22,
            "{COMPOSE}: Kafka service `{name}`: CLUSTER_ID must be a 22-character base64 UUID"
        );
        cluster_ids.insert(cluster_id);
    }
    assert_eq!(cluster_ids.len(), 1, "{COMPOSE}: the Kafka services disagree on CLUSTER_ID: {cluster_ids:?}");
}

#[test]
fn secrets_come_from_the_environment_not_from_the_repository() {
    let doc = compose();
    for (name, service) in services(&doc) {
        for (key, value) in environment(&name, service) {
            let secret = ["PEPPER", "PASSWORD", "SECRET", "TOKEN", "REDISCLI_AUTH"].iter().any(|s| key.contains(s));
            if secret {
                assert!(
                    value.starts_with("${") && value.contains(":?"),
                    "{COMPOSE}: service `{name}`: {key} must be a required variable (${{NAME:?message}}), not a value"
                );
            }
            if key.ends_with("_URL") && value.contains('@') {
                let userinfo = value.split_once("://").map_or(value.as_str(), |(_, r)| r);
                let userinfo = userinfo.split('@').next().unwrap_or("");
                assert!(
                    userinfo.is_empty() || userinfo.contains("${"),
                    "{COMPOSE}: service `{name}`: {key} has credentials written in; use a ${{VARIABLE}}"
                );
            }
        }
    }
    let config = node_config();
    let auth = config.get("auth").and_then(toml::Value::as_table);
    assert!(
        auth.is_none_or(|a| !a.contains_key("pepper") && !a.contains_key("old_peppers")),
        "{NODE_CONFIG}: [auth] holds a pepper; it comes from PARLEY_AUTH__PEPPER"
    );
    let redis = toml_str(&config, "redis", "url");
    assert!(!redis.contains('@'), "{NODE_CONFIG}: [redis] url has credentials; PARLEY_REDIS__URL carries them");
}

#[test]
fn node_config_is_a_real_config() {
    if let Err(e) = toml::from_str::<Config>(&read(NODE_CONFIG)) {
        panic!("{NODE_CONFIG}: not a valid node config (see parley.example.toml): {e}");
    }
}

// --------------------------------------------------------------- Dockerfile

/// The Dockerfile's instructions as (KEYWORD, arguments), continuation lines
/// joined and comments dropped, split into stages at each FROM.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = read(DOCKERFILE);
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for instruction in instructions {
        let (keyword, args) = instruction.split_once(char::is_whitespace).unwrap_or((&instruction, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stages.push(Vec::new());
        }
        let stage = stages.last_mut().unwrap_or_else(|| panic!("{DOCKERFILE}: {keyword} before the first FROM"));
        stage.push((keyword, args.trim().to_owned()));
    }
    stages
}

fn instruction<'a>(stage: &'a [(String, String)], keyword: &str) -> Option<&'a str> {
    stage.iter().rev().find(|(k, _)| k == keyword).map(|(_, args)| args.as_str())
}

/// The name of the gateway crate's binary.
fn gateway_binary() -> String {
    let manifest: toml::Table = read("gateway/Cargo.toml").parse().expect("gateway/Cargo.toml is TOML");
    let bins = manifest.get("bin").and_then(toml::Value::as_array).expect("gateway/Cargo.toml has [[bin]]");
    assert_eq!(bins.len(), 1, "gateway/Cargo.toml: expected one [[bin]]");
    bins[0].get("name").and_then(toml::Value::as_str).expect("gateway/Cargo.toml: [[bin]] has a name").to_owned()
}

#[test]
fn image_runs_parley_as_a_non_root_user_with_a_health_check() {
    let stages = dockerfile_stages();
    let bin = gateway_binary();
    let [.., builder, runtime] = stages.as_slice() else {
        panic!("{DOCKERFILE}: expected a builder stage and a runtime stage, found {} stage(s)", stages.len());
    };

    let base = instruction(builder, "FROM").unwrap_or_default();
    assert!(
        base.starts_with("rust:") && base.contains("bookworm"),
        "{DOCKERFILE}: the builder stage must use the official rust image on Debian 12 (bookworm), is {base:?}"
    );
    let build = builder
        .iter()
        .find(|(k, args)| k == "RUN" && args.contains("cargo build"))
        .map(|(_, args)| args.as_str())
        .unwrap_or_else(|| panic!("{DOCKERFILE}: the builder stage never runs `cargo build`"));
    for needed in ["--release", "--locked", &format!("--bin {bin}")] {
        assert!(build.contains(needed), "{DOCKERFILE}: `cargo build` lacks `{needed}`: {build:?}");
    }
    assert!(
        build.contains(&format!("target/release/{bin}")),
        "{DOCKERFILE}: the builder stage does not take target/release/{bin} out of the build"
    );

    let user = instruction(runtime, "USER")
        .unwrap_or_else(|| panic!("{DOCKERFILE}: the final stage has no USER: it would run as root"));
    let user_name = user.split(':').next().unwrap_or(user);
    assert!(
        !["root", "0", ""].contains(&user_name),
        "{DOCKERFILE}: the final stage runs as {user:?}, must be non-root"
    );

    let health = instruction(runtime, "HEALTHCHECK")
        .unwrap_or_else(|| panic!("{DOCKERFILE}: the final stage has no HEALTHCHECK"));
    assert!(!health.eq_ignore_ascii_case("NONE"), "{DOCKERFILE}: the final stage disables the HEALTHCHECK");
    let url = health
        .split(|c: char| c == '"' || c.is_whitespace())
        .find(|w| w.contains("/healthz"))
        .unwrap_or_else(|| panic!("{DOCKERFILE}: the HEALTHCHECK does not ask /healthz: {health:?}"));
    let (_, health_port) =
        host_port(url).unwrap_or_else(|| panic!("{DOCKERFILE}: HEALTHCHECK URL {url:?} has no port"));

    let exposed =
        instruction(runtime, "EXPOSE").unwrap_or_else(|| panic!("{DOCKERFILE}: the final stage has no EXPOSE"));
    let exposed: u16 = exposed
        .split('/')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{DOCKERFILE}: EXPOSE {exposed:?} is not a port"));
    let listen = listen_port(&node_config());
    assert_eq!(health_port, exposed, "{DOCKERFILE}: HEALTHCHECK asks port {health_port} but EXPOSE is {exposed}");
    assert_eq!(listen, exposed, "{DOCKERFILE}: EXPOSE {exposed}, but {NODE_CONFIG} listens on {listen}");

    let entrypoint = instruction(runtime, "ENTRYPOINT").unwrap_or_else(|| panic!("{DOCKERFILE}: no ENTRYPOINT"));
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).unwrap_or_else(|e| {
        panic!("{DOCKERFILE}: ENTRYPOINT must be the JSON (exec) form, so parley gets SIGTERM: {e}")
    });
    assert_eq!(
        entrypoint,
        [bin.clone(), "serve".to_owned()],
        "{DOCKERFILE}: ENTRYPOINT must run `{bin} serve` (gateway/Cargo.toml [[bin]] name)"
    );
    let copied =
        runtime.iter().any(|(k, args)| k == "COPY" && args.contains("--from=") && args.ends_with(&format!("/{bin}")));
    assert!(copied, "{DOCKERFILE}: the final stage does not COPY the `{bin}` binary from the builder");
}

#[test]
fn dockerignore_keeps_build_output_out_and_the_web_client_in() {
    let text = read(DOCKERIGNORE);
    let patterns: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in [".git", "**/target", "**/node_modules"] {
        assert!(patterns.contains(&needed), "{DOCKERIGNORE}: does not exclude `{needed}`");
    }
    for pattern in &patterns {
        assert!(
            !["web", "web/", "web/app", "web/app/", "web/*"].contains(pattern),
            "{DOCKERIGNORE}: excludes {pattern:?}, but web/app is embedded into the binary"
        );
    }
}
