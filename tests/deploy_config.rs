//! Every `AUDIT_STREAM__*` variable that the Helm chart, docker-compose.yml and the
//! deployment docs set names a real configuration key: a typo there would stop the
//! service at start (unknown keys are rejected).

use std::collections::BTreeSet;
use std::path::Path;

use audit_stream::config::Config;

fn variables() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("docker-compose.yml"),
        root.join("deploy/README.md"),
    ];
    for dir in ["helm/audit-stream/templates", "helm/audit-stream"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("chart dir") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    let pattern = regex::Regex::new(r"AUDIT_STREAM__[A-Z0-9_]*[A-Z0-9]").expect("regex");
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for m in pattern.find_iter(&text) {
            names.insert(m.as_str().to_string());
        }
    }
    names
}

#[test]
#[allow(clippy::result_large_err)] // figment's test jail returns its own error type
fn every_variable_the_deployment_sets_is_a_config_key() {
    let names = variables();
    assert!(names.len() >= 5, "found the variables: {names:?}");
    for name in names {
        // A placeholder in prose, or a pass-through property (any name is valid there).
        if name.ends_with("__KEY") || name.contains("__PROPERTIES__") || name.ends_with("_SECTION")
        {
            continue;
        }
        let value = if name.ends_with("NODES") {
            r#"["n:9042"]"#
        } else {
            "1"
        };
        figment::Jail::expect_with(|jail| {
            jail.set_env(&name, value);
            if let Err(error) = Config::load(None) {
                let text = error.to_string();
                assert!(
                    !text.contains("unknown field"),
                    "{name} is not a configuration key: {text}"
                );
            }
            Ok(())
        });
    }
}
