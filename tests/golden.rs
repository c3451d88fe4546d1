//! Golden tests of `process`: every record file in `examples/golden/` (and the demo's
//! sample) is run through the offline pipeline and compared, line for line, with its
//! `.expected.jsonl`. `audited_at` is pinned by the injected clock and `duration_ms`
//! (measured) is zeroed before comparing. `UPDATE_GOLDEN=1` rewrites the expected
//! files; review the diff before committing it.

use std::path::{Path, PathBuf};

use audit_stream::config::Config;
use audit_stream::pipeline::{offline, recipe_source, Operator};
use chrono::{TimeZone, Utc};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Input files with their expected outputs.
fn cases() -> Vec<(PathBuf, PathBuf)> {
    let dir = root().join("examples/golden");
    let mut cases: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(&dir)
        .expect("examples/golden")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".jsonl") && !name.ends_with(".expected.jsonl")
        })
        .map(|p| {
            let expected = p.with_extension("expected.jsonl");
            (p, expected)
        })
        .collect();
    cases.push((
        root().join("examples/demo.jsonl"),
        dir.join("demo.expected.jsonl"),
    ));
    cases.sort();
    cases
}

fn run(input: &Path) -> String {
    let config_file = input.with_extension("toml");
    let config = Config::load(config_file.exists().then_some(config_file.as_path()))
        .expect("golden config loads");
    let recipes = recipe_source::load(&root().join("config/recipes.yaml")).expect("recipes load");
    let operator = Operator::new(&config).expect("schemas compile");
    let file = std::fs::File::open(input).expect("input opens");
    let mut out = Vec::new();
    offline::process(
        &operator,
        &recipes,
        std::io::BufReader::new(file),
        &mut out,
        || Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
    )
    .expect("process succeeds");
    let text = String::from_utf8(out).expect("UTF-8");
    regex::Regex::new(r#""duration_ms":\d+"#)
        .expect("regex")
        .replace_all(&text, r#""duration_ms":0"#)
        .into_owned()
}

#[test]
fn process_output_matches_every_golden_file() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let cases = cases();
    assert!(cases.len() >= 5, "golden cases found: {}", cases.len());
    for (input, expected_path) in cases {
        let actual = run(&input);
        if update {
            std::fs::write(&expected_path, &actual).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run with UPDATE_GOLDEN=1 and review it",
                expected_path.display()
            )
        });
        for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
            assert_eq!(a, e, "{}: output line {} differs", input.display(), i + 1);
        }
        assert_eq!(
            actual.lines().count(),
            expected.lines().count(),
            "{}: number of output lines",
            input.display()
        );
    }
}

#[test]
fn process_is_identical_on_every_run() {
    for (input, _) in cases() {
        assert_eq!(run(&input), run(&input), "{}", input.display());
    }
}
