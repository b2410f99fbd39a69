//! Sharded replicas (issue 13): the `--shard.*` flags on the real binary, replicas sharing
//! one config against the fake Divalto server (every webhook called by exactly one of them,
//! at start and after a reload), the 404 naming the shard that owns a probe, and
//! `check-config --shard.count`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Exporter, FakeDivalto, Scrape};
use webhook_exporter::shard::owner;

/// The webhook code of probe `name`: secret-looking, and ending in `-ok` so the fake
/// answers a Divalto success.
fn code_of(name: &str) -> String {
    format!("SHARDTESTCODE{}ABCDEF0123456789-ok", name.to_uppercase())
}

/// Names `probe-000` … of `count` probes, from `first`.
fn probe_names(first: usize, count: usize) -> Vec<String> {
    (first..first + count)
        .map(|i| format!("probe-{i:03}"))
        .collect()
}

/// A config of `names` on the fake, every second, each call carrying `X-Replica:
/// ${REPLICA}` so the fake knows which exporter called.
fn config_text(fake: &FakeDivalto, names: &[String]) -> String {
    let mut text = format!(
        "defaults:\n  interval: 1s\n  timeout: 800ms\n  headers: {{X-Replica: \"${{REPLICA}}\"}}\n\
         servers:\n  erp: {{base_url: \"{}\"}}\nprobes:\n",
        fake.base_url()
    );
    for name in names {
        text.push_str(&format!(
            "  - {{name: {name}, server: erp, code: {}}}\n",
            code_of(name)
        ));
    }
    text
}

/// Waits until the fake saw every probe of `names` called at least twice.
fn wait_until_each_called_twice(fake: &FakeDivalto, names: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let calls = fake.calls_by_code();
        let missing: Vec<&String> = names
            .iter()
            .filter(|name| calls.get(&code_of(name)).copied().unwrap_or(0) < 2)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not called twice within 60 s: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The probes a replica exports `webhook_probe_info` for.
fn probes_on(scrape: &Scrape) -> BTreeSet<String> {
    scrape
        .label_sets("webhook_probe_info")
        .into_iter()
        .filter_map(|labels| labels.get("probe").cloned())
        .collect()
}

fn start_replica(config: &std::path::Path, index: u32, count: u32) -> Exporter {
    Exporter::start(
        &[
            &format!("--config.file={}", config.display()),
            &format!("--shard.count={count}"),
            &format!("--shard.index={index}"),
        ],
        &[("REPLICA", &index.to_string())],
    )
}

#[test]
fn two_replicas_on_one_config_call_every_webhook_from_exactly_one_of_them() {
    // Arrange: 40 probes, two replicas of one config.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let names = probe_names(0, 40);
    let (_dir, config) = common::write_config(&config_text(&fake, &names));
    let replicas = [start_replica(&config, 0, 2), start_replica(&config, 1, 2)];

    // Act
    wait_until_each_called_twice(&fake, &names);

    // Assert: each webhook was called by its owner only, and each replica exports exactly
    // the probes it owns, says which shard it is and counts only its own probes.
    let owned = |index: u32, names: &[String]| -> BTreeSet<String> {
        names
            .iter()
            .filter(|name| owner(name, 2) == index)
            .cloned()
            .collect()
    };
    for name in &names {
        let expected = BTreeSet::from([owner(name, 2).to_string()]);
        assert_eq!(fake.replicas_calling(&code_of(name)), expected, "{name}");
    }
    for (index, replica) in (0u32..).zip(&replicas) {
        let scrape = replica.scrape();
        let mine = owned(index, &names);
        assert!(!mine.is_empty() && mine.len() < names.len(), "{mine:?}");
        assert_eq!(probes_on(&scrape), mine, "replica {index}");
        assert_eq!(
            scrape.value("webhook_exporter_probes_configured", &[]),
            Some(mine.len() as f64)
        );
        let index_text = index.to_string();
        assert_eq!(
            scrape.label_sets("webhook_exporter_shard_info"),
            vec![std::collections::HashMap::from([
                ("index".to_owned(), index_text.clone()),
                ("count".to_owned(), "2".to_owned()),
            ])]
        );
        assert_eq!(
            scrape.value(
                "webhook_exporter_shard_info",
                &[("index", &index_text), ("count", "2")]
            ),
            Some(1.0)
        );
    }

    // Assert: replica 0 answers for a probe of replica 1 with a 404 naming its owner, and
    // refuses to run it; an unknown name stays unknown.
    let elsewhere = owned(1, &names).into_iter().next().unwrap();
    let answer = replicas[0].get(&format!("/api/v1/probes/{elsewhere}"));
    assert_eq!(answer.0, 404, "{}", answer.1);
    let body: serde_json::Value = serde_json::from_str(&answer.1).unwrap();
    assert_eq!(
        body["error"],
        format!("probe \"{elsewhere}\" runs on shard 1 of 2, not on this one (shard 0)")
    );
    assert_eq!(body["shard"], 1);
    let run = common::http_request(
        replicas[0].address,
        "POST",
        &format!("/api/v1/probes/{elsewhere}/run"),
        &[],
    );
    assert_eq!(run.status, 404, "{}", run.body);
    assert!(run.body.contains("runs on shard 1 of 2"), "{}", run.body);
    assert_eq!(
        fake.replicas_calling(&code_of(&elsewhere)),
        BTreeSet::from(["1".to_owned()])
    );
    let unknown = replicas[0].get("/api/v1/probes/no-such-probe");
    assert_eq!(unknown.0, 404);
    assert!(unknown.1.contains("unknown probe"), "{}", unknown.1);

    // Act: a reload adds 10 probes to the shared config.
    let more = probe_names(0, 50);
    std::fs::write(&config, config_text(&fake, &more)).unwrap();
    for replica in &replicas {
        let reload = common::http_request(replica.address, "POST", "/-/reload", &[]);
        assert_eq!(reload.status, 200, "{}", reload.body);
    }
    wait_until_each_called_twice(&fake, &more);

    // Assert: the new probes are split the same way, and nothing was ever called twice.
    for name in &more {
        let expected = BTreeSet::from([owner(name, 2).to_string()]);
        assert_eq!(fake.replicas_calling(&code_of(name)), expected, "{name}");
    }
    for (index, replica) in (0u32..).zip(&replicas) {
        let scrape = replica.scrape();
        assert_eq!(probes_on(&scrape), owned(index, &more), "replica {index}");
        assert_eq!(
            scrape.value("webhook_exporter_probes_configured", &[]),
            Some(owned(index, &more).len() as f64)
        );
    }
    // No call without the header either: every call came from one of the two replicas.
    assert!(fake.calls_by_code().keys().all(|code| {
        let replicas = fake.replicas_calling(code);
        replicas.len() == 1 && !replicas.contains("-")
    }));
}

#[test]
fn the_index_comes_from_the_trailing_number_of_the_statefulset_pod_host_name() {
    // Arrange
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let names = probe_names(0, 12);
    let (_dir, config) = common::write_config(&config_text(&fake, &names));

    // Act
    let replica = Exporter::start(
        &[
            &format!("--config.file={}", config.display()),
            "--shard.count=3",
            "--shard.index-from-hostname",
        ],
        &[("HOSTNAME", "webhook-exporter-1"), ("REPLICA", "1")],
    );

    // Assert
    let scrape = replica.scrape();
    assert_eq!(
        scrape.value(
            "webhook_exporter_shard_info",
            &[("index", "1"), ("count", "3")]
        ),
        Some(1.0),
        "{}",
        scrape.text
    );
    let mine: BTreeSet<String> = names
        .iter()
        .filter(|name| owner(name, 3) == 1)
        .cloned()
        .collect();
    assert_eq!(probes_on(&scrape), mine);
    assert_eq!(
        scrape.value("webhook_exporter_probes_configured", &[]),
        Some(mine.len() as f64)
    );
}

#[test]
fn an_unsharded_exporter_is_shard_0_of_1_and_runs_every_probe() {
    // Arrange
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let names = probe_names(0, 5);
    let (_dir, config) = common::write_config(&config_text(&fake, &names));

    // Act
    let exporter = Exporter::start(
        &[&format!("--config.file={}", config.display())],
        &[("REPLICA", "0")],
    );

    // Assert
    let scrape = exporter.scrape();
    assert_eq!(
        scrape.label_sets("webhook_exporter_shard_info"),
        vec![std::collections::HashMap::from([
            ("index".to_owned(), "0".to_owned()),
            ("count".to_owned(), "1".to_owned()),
        ])]
    );
    assert_eq!(probes_on(&scrape).len(), 5);
}

/// Flags, environment, and a part of the message expected.
type UsageCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_shard_flags_are_usage_errors_with_a_message_saying_the_fix() {
    let (_dir, config) = common::write_config("probes: []\n");
    let config_flag = format!("--config.file={}", config.display());
    let cases: &[UsageCase] = &[
        (
            &["--shard.count=3", "--shard.index=3"],
            &[],
            "--shard.index=3 is out of range for --shard.count=3: give an index from 0 to 2",
        ),
        (
            &["--shard.count=0", "--shard.index=0"],
            &[],
            "--shard.count must be at least 1",
        ),
        (
            &[
                "--shard.count=2",
                "--shard.index=0",
                "--shard.index-from-hostname",
            ],
            &[],
            "give either --shard.index=I or --shard.index-from-hostname, not both",
        ),
        (&["--shard.index=1"], &[], "need --shard.count=N"),
        (
            &["--shard.index-from-hostname"],
            &[("HOSTNAME", "webhook-exporter-0")],
            "need --shard.count=N",
        ),
        (
            &["--shard.count=2"],
            &[],
            "--shard.count=2 needs this replica's index: --shard.index=I (0 to 1) or --shard.index-from-hostname",
        ),
        (
            &["--shard.count=2", "--shard.index-from-hostname"],
            &[("HOSTNAME", "monitoring-host")],
            "host name \"monitoring-host\" does not end in -<number>",
        ),
        (
            &["--shard.count=2", "--shard.index-from-hostname"],
            &[("HOSTNAME", "webhook-exporter-2")],
            "host name \"webhook-exporter-2\" gives index 2, out of range for --shard.count=2 (0 to 1)",
        ),
        (
            &["--shard.index=-1", "--shard.count=2"],
            &[],
            "--shard.index",
        ),
        (
            &["check-config", "--shard.count=0"],
            &[],
            "--shard.count must be at least 1",
        ),
    ];
    for (flags, envs, message) in cases {
        let mut args = vec![config_flag.as_str()];
        args.extend_from_slice(flags);
        let (code, stdout, stderr) = common::run_binary(&args, envs, None);
        assert_eq!(code, 2, "{flags:?}: stdout {stdout}\nstderr {stderr}");
        assert!(
            stderr.contains(message),
            "{flags:?}: expected {message:?} in\n{stderr}"
        );
    }
}

#[test]
fn check_config_with_a_shard_count_prints_the_replica_of_each_probe_and_the_balance() {
    // Arrange: 30 probes with secret codes.
    let names = probe_names(0, 30);
    let mut text = String::from("probes:\n");
    for name in &names {
        text.push_str(&format!(
            "  - {{name: {name}, url: \"http://127.0.0.1:1/erp/api/v1/WebHook/{}\"}}\n",
            code_of(name)
        ));
    }
    let (_dir, config) = common::write_config(&text);
    let config_flag = format!("--config.file={}", config.display());

    // Act
    let (code, stdout, stderr) = common::run_binary(
        &["check-config", &config_flag, "--shard.count=3"],
        &[],
        None,
    );
    let (plain_code, plain, _) = common::run_binary(&["check-config", &config_flag], &[], None);

    // Assert: a line per probe with its shard, the count per shard and the balance.
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("shard assignment for --shard.count=3"),
        "{stdout}"
    );
    let mut per_shard: BTreeMap<u32, usize> = BTreeMap::new();
    for name in &names {
        let shard = owner(name, 3);
        *per_shard.entry(shard).or_default() += 1;
        assert!(
            stdout
                .lines()
                .any(|line| line.split_whitespace().collect::<Vec<_>>()
                    == [name.as_str(), &shard.to_string()]),
            "no line \"{name} {shard}\" in\n{stdout}"
        );
    }
    for (shard, count) in &per_shard {
        assert!(
            stdout.contains(&format!("shard {shard}: {count} probe(s)")),
            "{stdout}"
        );
    }
    let largest = per_shard.values().max().unwrap();
    let smallest = per_shard.values().min().unwrap();
    assert!(
        stdout.contains(&format!("largest/smallest: {largest}/{smallest}")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("SHARDTESTCODE"),
        "a code is shown:\n{stdout}"
    );
    // Without the flag, check-config is unchanged.
    assert_eq!(plain_code, 0);
    assert!(!plain.contains("shard"), "{plain}");
    assert_eq!(stdout.lines().next(), plain.lines().next());
}
