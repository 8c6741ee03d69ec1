//! The standing coordinator as a process: `strata coordinator` serving the gRPC API, `strata
//! worker` processes on the real RabbitMQ, and the `strata submit | runs | run-status |
//! cancel` client. Submitted runs must give the same tables as an embedded build; a
//! coordinator killed mid-run and started again must finish the run with the same output.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{CLUSTER_SECRET, STRATA, Scenario, Workers, assert_same_tables, broker_url};

const TOKEN: &str = "s3cr3t-token-for-tests";

/// A `strata coordinator` process on an ephemeral port, killed when the test ends.
struct CoordinatorProcess {
    child: Child,
    address: String,
    token_file: PathBuf,
    log: PathBuf,
}

impl CoordinatorProcess {
    fn start(dir: &Path, queue: &str) -> CoordinatorProcess {
        CoordinatorProcess::start_with(dir, queue, &[], "http")
    }

    fn start_with(dir: &Path, queue: &str, extra: &[&str], scheme: &str) -> CoordinatorProcess {
        CoordinatorProcess::start_with_env(dir, queue, extra, scheme, &[])
    }

    fn start_with_env(
        dir: &Path,
        queue: &str,
        extra: &[&str],
        scheme: &str,
        env: &[(&str, &str)],
    ) -> CoordinatorProcess {
        let token_file = dir.join("tokens");
        std::fs::write(&token_file, format!("# test token\n{TOKEN}\n")).unwrap();
        let log = dir.join("coordinator.log");
        let mut child = Command::new(STRATA)
            .env("STRATA__CLUSTER__SECRET", CLUSTER_SECRET)
            .envs(env.iter().copied())
            .args(["coordinator", "--listen", "127.0.0.1:0"])
            .args(["--amqp-url", &broker_url(), "--task-queue", queue])
            .args(["--data-dir", dir.join("coordinator").to_str().unwrap()])
            .args(["--token-file", token_file.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("strata coordinator starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split(" on ")
            .nth(1)
            .and_then(|rest| rest.split([',', ' ']).next())
            .unwrap_or_else(|| {
                panic!(
                    "no address in {line:?}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        CoordinatorProcess {
            child,
            address: format!("{scheme}://{address}"),
            token_file,
            log,
        }
    }

    /// Runs a client command against this coordinator, with the token.
    fn client(&self, args: &[&str]) -> std::process::Output {
        Command::new(STRATA)
            .env("STRATA__CLUSTER__SECRET", CLUSTER_SECRET)
            .args(args)
            .args(["--coordinator", &self.address])
            .args(["--token-file", self.token_file.to_str().unwrap()])
            .output()
            .expect("strata client runs")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.client(&[args, &["--output", "json"]].concat());
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "{err}: {args:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn submit_args<'a>(scenario: &'a Scenario, warehouse: &'a str) -> Vec<&'a str> {
    vec![
        "submit",
        "--project-dir",
        scenario.project.to_str().unwrap(),
        "--set",
        warehouse,
    ]
}

/// Polls `run-status` until `done` holds for the run's JSON, at most `limit`.
fn wait_until(
    coordinator: &CoordinatorProcess,
    run_id: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let run = coordinator.json(&["run-status", run_id]);
        if done(&run) {
            return run;
        }
        assert!(started.elapsed() < limit, "run never got there: {run:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn nodes_with_status(run: &serde_json::Value, status: &str) -> usize {
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["status"] == status)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn submitted_runs_match_embedded_builds_and_keys_are_idempotent() {
    let scenario = Scenario::new("20000");
    let _workers = Workers::start(2, "svc", &scenario.queue);
    let coordinator = CoordinatorProcess::start(scenario.dir.path(), &scenario.queue);
    let warehouse = format!("warehouse={}", scenario.clustered.display());
    let submit = submit_args(&scenario, &warehouse);

    let run =
        coordinator.json(&[&submit[..], &["--idempotency-key", "nightly-1", "--watch"]].concat());
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(nodes_with_status(&run, "success"), 8, "{run:#}");
    assert_same_tables(&scenario.embedded, &scenario.clustered).await;
    let run_id = run["run_id"].as_str().unwrap();

    // The same key again: the same run, not a second one.
    let again = coordinator.json(&[&submit[..], &["--idempotency-key", "nightly-1"]].concat());
    assert_eq!(again["run_id"], run_id);
    assert_eq!(again["existing"], true);

    let runs = coordinator.json(&["runs", "--status", "succeeded"]);
    let listed: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|run| run["run_id"].as_str())
        .collect();
    assert_eq!(listed, vec![run_id], "one run: {runs:#}");

    // A node's compiled SQL, for debugging a failure without the project at hand.
    let status = coordinator.json(&[
        "run-status",
        run_id,
        "--node",
        "model.medallion.silver_events",
    ]);
    let sql = status["node_detail"]["compiled_sql"].as_str().unwrap();
    assert!(sql.contains("row_number()"), "{sql}");

    // A dry run compiles and lists the selection without executing it.
    let dry = coordinator.json(
        &[
            &submit[..],
            &["--dry-run", "--select", "+silver_events", "--watch"],
        ]
        .concat(),
    );
    assert_eq!(dry["status"], "succeeded");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        nodes_with_status(&dry, "pending"),
        dry["nodes"].as_array().unwrap().len()
    );
}

#[test]
fn bad_requests_are_invalid_arguments_and_tokens_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let project = common::medallion(dir.path(), "100");
    let queue = common::unique_queue("invalid");
    let coordinator = CoordinatorProcess::start(dir.path(), &queue);
    let project_dir = project.to_str().unwrap();

    let bad_selector =
        coordinator.client(&["submit", "--project-dir", project_dir, "--select", "tag:"]);
    let stderr = String::from_utf8_lossy(&bad_selector.stderr);
    assert!(!bad_selector.status.success());
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("selector"),
        "{stderr}"
    );

    let missing = coordinator.client(&["submit", "--project-dir", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("dbt_project.yml"),
        "{stderr}"
    );

    let unknown_setting = coordinator.client(&[
        "submit",
        "--project-dir",
        project_dir,
        "--set",
        "colour=blue",
    ]);
    let stderr = String::from_utf8_lossy(&unknown_setting.stderr);
    assert!(
        stderr.contains("unknown config override 'colour'"),
        "{stderr}"
    );

    // No token, or a wrong one: UNAUTHENTICATED, logged without the token.
    let anonymous = Command::new(STRATA)
        .env("STRATA__CLUSTER__SECRET", CLUSTER_SECRET)
        .args(["runs", "--coordinator", &coordinator.address])
        .env_remove("STRATA_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    let wrong = Command::new(STRATA)
        .env("STRATA__CLUSTER__SECRET", CLUSTER_SECRET)
        .args(["runs", "--coordinator", &coordinator.address])
        .env("STRATA_TOKEN", "not-the-token-42")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("Unauthenticated"));
    let log = std::fs::read_to_string(&coordinator.log).unwrap();
    assert!(
        log.contains("rejected a call with an invalid bearer token"),
        "{log}"
    );
    assert!(
        !log.contains("not-the-token-42") && !log.contains(TOKEN),
        "{log}"
    );
}

/// A submitted project's `env_var()` sees the variables its submission sends and those the
/// coordinator's allowlist names — never the coordinator's other variables, whose values reach
/// no response and no log line.
#[test]
fn submitted_projects_see_no_coordinator_secrets() {
    const SECRET: &str = "coordinator-only-secret-value-7f3a";
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("leaky");
    std::fs::create_dir_all(project.join("models")).unwrap();
    std::fs::write(
        project.join("dbt_project.yml"),
        "name: leaky\nversion: '1.0'\nconfig-version: 2\n",
    )
    .unwrap();
    std::fs::write(
        project.join("models/leak.sql"),
        "select '{{ env_var(\"AWS_SECRET_ACCESS_KEY\") }}' as secret, '{{ env_var(\"AWS_REGION\") }}' as region\n",
    )
    .unwrap();
    let queue = common::unique_queue("env");
    let coordinator = CoordinatorProcess::start_with_env(
        dir.path(),
        &queue,
        &[],
        "http",
        &[
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", "eu-test-1"),
            ("STRATA__COORDINATOR__ENV_ALLOWLIST", "[AWS_REGION]"),
        ],
    );
    let project_dir = project.to_str().unwrap();
    let refused = coordinator.client(&["submit", "--project-dir", project_dir, "--dry-run"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr),
    );
    assert!(!refused.status.success(), "{stdout}");
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("'AWS_SECRET_ACCESS_KEY'"),
        "{stderr}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));

    // Sent with the submission, the variable is the submitter's own; the allowlisted one is
    // the coordinator's.
    let accepted = coordinator.json(&[
        "submit",
        "--project-dir",
        project_dir,
        "--dry-run",
        "--watch",
        "--env",
        "AWS_SECRET_ACCESS_KEY=sent-by-the-submitter",
    ]);
    assert_eq!(accepted["status"], "succeeded", "{accepted:#}");
    let run_id = accepted["run_id"].as_str().unwrap();
    let status = coordinator.json(&["run-status", run_id, "--node", "model.leaky.leak"]);
    let sql = status["node_detail"]["compiled_sql"].as_str().unwrap();
    assert!(
        sql.contains("sent-by-the-submitter") && sql.contains("eu-test-1"),
        "{sql}"
    );
    let runs = coordinator.client(&["runs", "--output", "json"]);
    let everything = format!(
        "{}{}{sql}{}",
        String::from_utf8_lossy(&runs.stdout),
        std::fs::read_to_string(&coordinator.log).unwrap(),
        status
    );
    assert!(!everything.contains(SECRET), "{everything}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_mid_run_resumes_it_with_the_same_output() {
    let scenario = Scenario::new("60000");
    let _workers = Workers::start(2, "resume", &scenario.queue);
    let mut coordinator = CoordinatorProcess::start(scenario.dir.path(), &scenario.queue);
    let warehouse = format!("warehouse={}", scenario.clustered.display());
    let submitted = coordinator.json(
        &[
            &submit_args(&scenario, &warehouse)[..],
            &["--set", "threads=1"],
        ]
        .concat(),
    );
    let run_id = submitted["run_id"].as_str().unwrap().to_string();

    // Kill -9 once the first model is committed and others are still to come.
    let midway = wait_until(&coordinator, &run_id, Duration::from_secs(120), |run| {
        nodes_with_status(run, "success") >= 1
    });
    assert_eq!(midway["status"], "running", "{midway:#}");
    coordinator.kill();
    let finished_before = nodes_with_status(&midway, "success");

    let restarted = CoordinatorProcess::start(scenario.dir.path(), &scenario.queue);
    let log = std::fs::read_to_string(&restarted.log).unwrap_or_default();
    let run = wait_until(&restarted, &run_id, Duration::from_secs(240), |run| {
        run["status"] != "running" && run["status"] != "queued"
    });
    assert_eq!(run["status"], "succeeded", "{run:#}\n{log}");
    assert!(finished_before >= 1);
    assert_same_tables(&scenario.embedded, &scenario.clustered).await;
    // Each model was committed once by this run: a resumed node never commits twice.
    for table in common::tables(&scenario.clustered) {
        let log_dir = table.join("_delta_log");
        let commits = std::fs::read_dir(&log_dir)
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .is_ok_and(|entry| entry.file_name().to_string_lossy().ends_with(".json"))
            })
            .count();
        assert_eq!(
            commits,
            1,
            "{} was committed {commits} times",
            table.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_and_concurrent_runs_leave_consistent_tables() {
    let scenario = Scenario::new("60000");
    let _workers = Workers::start(2, "cancel", &scenario.queue);
    let coordinator = CoordinatorProcess::start(scenario.dir.path(), &scenario.queue);

    // Cancel a run as soon as it has committed something.
    let cancelled_warehouse = scenario.dir.path().join("cancelled");
    let warehouse = format!("warehouse={}", cancelled_warehouse.display());
    let submitted = coordinator.json(
        &[
            &submit_args(&scenario, &warehouse)[..],
            &["--set", "threads=1"],
        ]
        .concat(),
    );
    let run_id = submitted["run_id"].as_str().unwrap().to_string();
    wait_until(&coordinator, &run_id, Duration::from_secs(120), |run| {
        nodes_with_status(run, "success") >= 1
    });
    let cancel = coordinator.client(&["cancel", &run_id]);
    assert!(cancel.status.success(), "{cancel:?}");
    let run = wait_until(&coordinator, &run_id, Duration::from_secs(60), |run| {
        run["status"] == "cancelled"
    });
    assert!(nodes_with_status(&run, "cancelled") >= 1, "{run:#}");
    // What was committed before the cancel is whole: every committed table equals the
    // embedded build's. Folders of uncommitted tables hold only files of cancelled attempts,
    // which no reader sees (no Delta log).
    let committed = |table: &Path| {
        std::fs::read_dir(table.join("_delta_log")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().ends_with(".json"))
        })
    };
    let tables = common::tables(&cancelled_warehouse);
    assert!(tables.iter().any(|table| committed(table)), "{tables:?}");
    for table in tables.into_iter().filter(|table| committed(table)) {
        let relative = table.strip_prefix(&cancelled_warehouse).unwrap();
        assert_eq!(
            common::rows(&table).await,
            common::rows(&scenario.embedded.join(relative)).await,
            "{}",
            relative.display()
        );
    }

    // Two runs of one project into one warehouse at once: both end, every table is whole.
    let shared = format!("warehouse={}", scenario.clustered.display());
    let first = coordinator.json(&submit_args(&scenario, &shared));
    let second = coordinator.json(&submit_args(&scenario, &shared));
    for submitted in [&first, &second] {
        let run_id = submitted["run_id"].as_str().unwrap();
        let run = wait_until(&coordinator, run_id, Duration::from_secs(240), |run| {
            run["status"] == "succeeded" || run["status"] == "failed"
        });
        for node in run["nodes"].as_array().unwrap() {
            if node["status"] == "error" {
                let error = node["error"].as_str().unwrap_or_default();
                assert!(
                    error.contains("concurrent"),
                    "only commit conflicts may fail: {error}"
                );
            }
        }
    }
    assert_same_tables(&scenario.embedded, &scenario.clustered).await;
}

/// Runs openssl(1) with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

#[test]
fn with_tls_the_api_speaks_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    // A CA, and a certificate for 127.0.0.1 signed by it.
    openssl(
        path,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=strata test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        path,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        path.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        path,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    let queue = common::unique_queue("tls");
    let cert = path.join("server.pem");
    let key = path.join("server.key");
    let coordinator = CoordinatorProcess::start_with(
        path,
        &queue,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        "https",
    );
    let ca = path.join("ca.pem");
    let listed = coordinator.client(&["runs", "--ca-cert", ca.to_str().unwrap()]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(
        String::from_utf8_lossy(&listed.stdout).starts_with("RUN"),
        "{listed:?}"
    );
    // A client that does not trust the CA, or speaks plain HTTP/2, gets nothing.
    let untrusted = coordinator.client(&["runs"]);
    assert!(!untrusted.status.success(), "{untrusted:?}");
    let plain = Command::new(STRATA)
        .env("STRATA__CLUSTER__SECRET", CLUSTER_SECRET)
        .args([
            "runs",
            "--coordinator",
            &coordinator.address.replace("https://", "http://"),
        ])
        .args(["--token-file", coordinator.token_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "{plain:?}");
}

/// A free local port (bound and released: another process could take it in between, which
/// these tests accept).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True when the endpoint on `port` answers `/readyz` with 200; false while it is not
/// listening yet or not ready.
fn ready(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        && http_get(port, "/readyz", None).0 == 200
}

/// `GET path` on `port`, with a bearer token when given: (status code, body).
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token.map_or_else(String::new, |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Samples of a Prometheus exposition, parsed by a real parser: value by metric and labels.
fn scrape(port: u16, token: &str) -> Vec<prometheus_parse::Sample> {
    let (status, body) = http_get(port, "/metrics", Some(token));
    assert_eq!(status, 200, "{body}");
    // The body may be chunked; the parser needs the exposition's lines only.
    let lines = body
        .lines()
        .filter(|line| line.starts_with('#') || line.starts_with("strata_"))
        .map(|line| Ok(line.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap().samples
}

fn value(samples: &[prometheus_parse::Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.metric == metric)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => value,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_probes_follow_a_submitted_run() {
    let scenario = Scenario::new("20000");
    let token = "metrics-token-for-tests";
    let env = [("STRATA__METRICS__TOKEN", token)];
    let worker_port = free_port();
    let worker_listen = format!("127.0.0.1:{worker_port}");
    let _workers = Workers::start_with_env(
        1,
        "metrics",
        &scenario.queue,
        &["--metrics-listen", &worker_listen],
        &env,
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let coordinator = CoordinatorProcess::start_with_env(
        scenario.dir.path(),
        &scenario.queue,
        &["--metrics-listen", &listen],
        "http",
        &env,
    );
    for probe_port in [port, worker_port] {
        let started = Instant::now();
        while !ready(probe_port) {
            assert!(started.elapsed() < Duration::from_secs(30), "never ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(http_get(probe_port, "/healthz", None).0, 200);
        assert_eq!(http_get(probe_port, "/metrics", None).0, 401);
        assert_eq!(http_get(probe_port, "/metrics", Some("wrong")).0, 401);
    }
    let warehouse = format!("warehouse={}", scenario.clustered.display());
    let run = coordinator.json(&[&submit_args(&scenario, &warehouse)[..], &["--watch"]].concat());
    assert_eq!(run["status"], "succeeded", "{run:#}");

    let samples = scrape(port, token);
    assert_eq!(
        value(&samples, "strata_runs_total", &[("status", "success")]),
        1.0
    );
    assert_eq!(value(&samples, "strata_runs_active", &[]), 0.0);
    let nodes = run["nodes"].as_array().unwrap();
    // Sources and ephemeral models are listed but not executed.
    let executed = nodes
        .iter()
        .filter(|node| node["status"] != "pending")
        .count();
    assert_eq!(value(&samples, "strata_nodes_total", &[]), executed as f64);
    for node in nodes
        .iter()
        .filter(|node| node["resource_type"] == "model" && node["status"] == "success")
    {
        let name = node["name"].as_str().unwrap();
        assert_eq!(
            value(&samples, "strata_rows_written_total", &[("node", name)]),
            node["rows"].as_f64().unwrap(),
            "{name}"
        );
    }
    let tasks = value(&samples, "strata_tasks_total", &[("outcome", "success")]);
    let worker = scrape(worker_port, token);
    assert_eq!(value(&worker, "strata_worker_slots", &[]), 2.0);
    assert_eq!(value(&worker, "strata_worker_slots_busy", &[]), 0.0);
    // One worker ran every task the coordinator counted.
    assert_eq!(
        value(
            &worker,
            "strata_worker_tasks_total",
            &[("outcome", "success")]
        ),
        tasks
    );
    assert!(
        tasks >= executed as f64,
        "{tasks} tasks for {executed} nodes"
    );
}
