use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{
    EngineSettings, Explained, Flags, MIN_MEMORY_MARGIN_MIB, MIN_TASK_MEMORY_MIB, Origin, Role,
    SettingsError, load,
};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The entry of `key` among the settings `config show` would print.
fn shown_entry<'a>(shown: &'a [Explained], key: &str) -> &'a Explained {
    shown
        .iter()
        .find(|entry| entry.key == key)
        .unwrap_or_else(|| panic!("{key} is not shown"))
}

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn defaults_then_file_then_environment_then_flags() {
    let (_dir, path) = file(
        "worker:\n  slots: 2\n  heartbeat_interval_ms: 750\nengine:\n  memory_limit_mib: 512\n",
    );
    let env = env(&[
        ("STRATA__WORKER__SLOTS", "3"),
        ("STRATA__WORKER__HEARTBEAT_INTERVAL_MS", "900"),
        ("HOME", "/root"),
    ]);
    let flags = Flags::default()
        .set("worker.slots", "--slots", Some(5usize))
        .set("worker.id", "--worker-id", None::<String>);
    let resolved = load(Some(&path), &env, flags).unwrap();
    let worker = &resolved.settings.worker;
    assert_eq!(worker.slots, 5);
    assert_eq!(worker.heartbeat_interval_ms, 900);
    assert_eq!(resolved.settings.engine.memory_limit_mib, Some(512));
    assert_eq!(worker.fetch_timeout_secs, 30);
    assert_eq!(
        resolved.origin("worker.slots"),
        &Origin::Flag("--slots".into())
    );
    assert_eq!(
        resolved.origin("worker.heartbeat_interval_ms"),
        &Origin::Env("STRATA__WORKER__HEARTBEAT_INTERVAL_MS".into())
    );
    assert_eq!(
        resolved.origin("engine.memory_limit_mib"),
        &Origin::File(path.clone())
    );
    assert_eq!(
        resolved.origin("worker.fetch_timeout_secs"),
        &Origin::Default
    );
    let shown = resolved.explain(Role::Worker);
    let slots = shown_entry(&shown, "worker.slots");
    assert_eq!(
        (slots.value.as_str(), slots.source.as_str()),
        ("5", "flag --slots")
    );
    let memory = shown_entry(&shown, "engine.memory_limit_mib");
    assert_eq!(memory.source, format!("file {}", path.display()));
    assert!(
        shown
            .iter()
            .all(|entry| !entry.key.starts_with("coordinator."))
    );
}

#[test]
fn an_unknown_key_names_its_layer_and_the_closest_key() {
    let (_dir, path) = file("worker:\n  slotz: 2\n");
    let err = load(Some(&path), &BTreeMap::new(), Flags::default()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SettingsError::UnknownKey { .. }), "{message}");
    assert!(message.contains("'worker.slotz'"), "{message}");
    assert!(message.contains("did you mean 'slots'"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");

    let err = load(
        None,
        &env(&[("STRATA__WROKER__SLOTS", "2")]),
        Flags::default(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("did you mean 'worker'"), "{message}");
    assert!(message.contains("env STRATA__WROKER__SLOTS"), "{message}");
}

#[test]
fn a_value_of_the_wrong_type_names_the_key_and_the_variable() {
    let err = load(
        None,
        &env(&[("STRATA__WORKER__SLOTS", "many")]),
        Flags::default(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SettingsError::Invalid { .. }), "{message}");
    assert!(message.contains("worker.slots"), "{message}");
    assert!(message.contains("STRATA__WORKER__SLOTS"), "{message}");
}

#[test]
fn secrets_are_redacted_wherever_settings_are_shown() {
    let (_dir, path) = file(
        "broker:\n  url: amqp://strata:hunter2-password@rabbit:5672/%2f\ncoordinator:\n  tokens: [token-one-secret]\n",
    );
    let env = env(&[("STRATA__CLUSTER__SECRET", "cluster-secret-value-123")]);
    let resolved = load(Some(&path), &env, Flags::default()).unwrap();
    assert_eq!(
        resolved
            .settings
            .cluster
            .secret()
            .unwrap()
            .unwrap()
            .expose(),
        "cluster-secret-value-123"
    );
    let shown = format!(
        "{:?} {:?} {:?}",
        resolved.explain(Role::Coordinator),
        resolved.explain(Role::Worker),
        resolved.settings
    );
    for secret in [
        "hunter2-password",
        "token-one-secret",
        "cluster-secret-value-123",
    ] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert!(
        shown.contains("amqp://strata:***@rabbit:5672/%2f"),
        "{shown}"
    );
}

#[test]
fn the_cluster_secret_can_come_from_a_file() {
    let (dir, path) = file("");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "from-a-mounted-secret-file\n").unwrap();
    let env = env(&[(
        "STRATA__CLUSTER__SECRET_FILE",
        secret_file.to_str().unwrap(),
    )]);
    let resolved = load(Some(&path), &env, Flags::default()).unwrap();
    let secret = resolved.settings.cluster.secret().unwrap().unwrap();
    assert_eq!(secret.expose(), "from-a-mounted-secret-file");
}

#[test]
fn the_task_pool_defaults_to_the_machines_share_per_slot_and_the_margin_has_a_floor() {
    let engine = EngineSettings::default();
    let (one, four) = (engine.task_memory_mib(1), engine.task_memory_mib(4));
    assert!(four >= MIN_TASK_MEMORY_MIB);
    assert!(
        one >= four * 3,
        "one slot {one} MiB, four slots {four} MiB each"
    );
    let set = EngineSettings {
        memory_limit_mib: Some(100),
        ..EngineSettings::default()
    };
    assert_eq!(set.task_memory_mib(8), 100);
    assert_eq!(
        set.memory_budget(2).process_mib,
        200 + MIN_MEMORY_MARGIN_MIB
    );
    let large = EngineSettings {
        memory_limit_mib: Some(1000),
        ..EngineSettings::default()
    };
    assert_eq!(large.memory_budget(2).process_mib, 2000 + 1000);
}

#[test]
fn config_show_gives_the_derived_pool_and_how_it_was_derived() {
    let flags = Flags::default().set("worker.slots", "--slots", Some(4usize));
    let resolved = load(None, &env(&[]), flags).unwrap();
    let shown = resolved.explain(Role::Worker);
    let memory = shown_entry(&shown, "engine.memory_limit_mib");
    assert_eq!(
        memory.value,
        resolved.settings.engine.task_memory_mib(4).to_string()
    );
    assert!(
        memory.source.starts_with("derived: 60% of") && memory.source.ends_with("over 4 slots"),
        "{}",
        memory.source
    );
}
