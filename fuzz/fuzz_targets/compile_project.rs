//! Splits the input at NUL bytes into the files of a project (project file, two models, a
//! property file, a macro file, --vars) and compiles it: nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or_default().to_string();
    let (project, model_a, model_b, properties, macros, vars) = (next(), next(), next(), next(), next(), next());
    let Ok(dir) = tempfile::tempdir() else { return };
    let root = dir.path();
    let files = [
        ("dbt_project.yml", project.as_str()),
        ("models/silver/a.sql", model_a.as_str()),
        ("models/gold/b.sql", model_b.as_str()),
        ("models/schema.yml", properties.as_str()),
        ("macros/m.sql", macros.as_str()),
    ];
    for (path, content) in files {
        let full = root.join(path);
        let _ = std::fs::create_dir_all(full.parent().unwrap_or(root));
        let _ = std::fs::write(full, content);
    }
    let vars = (!vars.is_empty()).then_some(vars);
    let env = std::collections::BTreeMap::new();
    let _ = strata::run_compile(root, vars.as_deref(), "dev", &[], &[], &env);
});
