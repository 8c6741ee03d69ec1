//! Splits the input at NUL bytes into the files of a project (project file, two models, a
//! property file, a macro file, --vars) and compiles it, then uses the two model texts as
//! selectors: nothing may panic.
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
    let loaded = strata_core::project::Project::load(root);
    let Some(project) = loaded.project else { return };
    let source = strata_core::diagnostics::SourceText::new("--vars", vars);
    let cli_vars = match strata_core::yaml::Yaml::parse(&source).map(|yaml| yaml.to_json()) {
        Ok(serde_json::Value::Object(vars)) => vars,
        _ => serde_json::Map::new(),
    };
    let options = strata_core::compiler::CompileOptions { cli_vars, ..Default::default() };
    let compilation = strata_core::compiler::compile(&project, &options);
    if let Some(manifest) = compilation.manifest {
        let _ = strata_core::selection::select(&manifest, &[model_a.clone()], &[model_b.clone()]);
    }
});
