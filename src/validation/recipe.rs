//! Theus recipes: the YAML file that says which values of which process are checked.
//!
//! The format is Theus's own, so an existing Theus recipe file loads unchanged: keys
//! this product does not use are ignored and reported in [`Recipes::warnings`]. Anything
//! that would make a rule mean something other than what its author wrote (a wrong
//! type, an unknown level, a regex the engine cannot run) rejects the whole file with an
//! error naming the rule, so a reload never half-applies a bad file.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value as Yaml};
use thiserror::Error;

use super::rule::{regex_problem, Limit, Pattern};
use crate::event::{Level, Phase};

/// The `audit` section: what a rule falls back to, and the ring log size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditDefaults {
    /// Level of rules without their own `level`.
    pub level: Level,
    /// Threshold of rules without their own `max_threshold`: Block fires once a key's
    /// count exceeds it.
    pub threshold_max: u32,
    /// Block-level failures warn from this count on (until they block); 0 never warns.
    pub threshold_min: u32,
    /// Whether a passing rule resets its key's count to 0.
    pub reset_on_success: bool,
    /// Entries kept in each partition's ring log.
    pub ring_capacity: usize,
}

impl Default for AuditDefaults {
    fn default() -> Self {
        AuditDefaults {
            level: Level::B,
            threshold_max: 3,
            threshold_min: 0,
            reset_on_success: true,
            ring_capacity: 1000,
        }
    }
}

/// A recipe file that cannot be used. The previous recipes should stay in force.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecipeError {
    /// The file is not YAML.
    #[error("recipes are not valid yaml: {0}")]
    Yaml(String),
    /// The file is YAML but a value is unusable; `at` says where, for example
    /// `process_recipes.p_transfer.inputs[1] (field dest)`.
    #[error("{at}: {problem}")]
    Invalid { at: String, problem: String },
}

/// `result`'s problem, if any, located at `at`.
fn located<T>(at: &str, result: Result<T, String>) -> Result<T, RecipeError> {
    result.map_err(|problem| invalid(at, problem))
}

fn invalid(at: &str, problem: impl Into<String>) -> RecipeError {
    RecipeError::Invalid {
        at: at.to_owned(),
        problem: problem.into(),
    }
}

/// One check of one field or output path.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) field: String,
    pub(crate) min: Option<Limit>,
    pub(crate) max: Option<Limit>,
    pub(crate) eq: Option<Limit>,
    pub(crate) neq: Option<Limit>,
    pub(crate) min_len: Option<u64>,
    pub(crate) max_len: Option<u64>,
    pub(crate) regex: Option<Pattern>,
    pub(crate) message: Option<String>,
    pub(crate) level: Option<Level>,
    pub(crate) max_threshold: Option<u32>,
}

impl Rule {
    /// The input's name, or the output's dot path.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The message of a failure, when the recipe gives one.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The rule's own level, overriding `audit.level`.
    pub fn level(&self) -> Option<Level> {
        self.level
    }

    /// The rule's own threshold, overriding `audit.threshold_max`.
    pub fn max_threshold(&self) -> Option<u32> {
        self.max_threshold
    }
}

/// The rules of one process. A missing list means that phase is not checked.
#[derive(Debug, Clone, Default)]
pub struct ProcessRecipe {
    inputs: Option<Vec<Rule>>,
    outputs: Option<Vec<Rule>>,
}

impl ProcessRecipe {
    pub fn inputs(&self) -> Option<&[Rule]> {
        self.inputs.as_deref()
    }

    pub fn outputs(&self) -> Option<&[Rule]> {
        self.outputs.as_deref()
    }

    /// The rules of `phase`, in file order.
    pub fn rules(&self, phase: Phase) -> Option<&[Rule]> {
        match phase {
            Phase::Input => self.inputs(),
            Phase::Output => self.outputs(),
        }
    }
}

/// A parsed recipe file.
#[derive(Debug, Clone, Default)]
pub struct Recipes {
    defaults: AuditDefaults,
    processes: BTreeMap<String, ProcessRecipe>,
    warnings: Vec<String>,
}

impl Recipes {
    /// Parses a recipe file's text. YAML merge keys (`<<: *anchor`) are applied first,
    /// as PyYAML does. An empty file is no recipes at all.
    pub fn parse(yaml: &str) -> Result<Recipes, RecipeError> {
        let mut doc: Yaml =
            serde_yaml_ng::from_str(yaml).map_err(|e| RecipeError::Yaml(e.to_string()))?;
        doc.apply_merge()
            .map_err(|e| RecipeError::Yaml(e.to_string()))?;

        let mut recipes = Recipes::default();
        let top = match &doc {
            Yaml::Null => return Ok(recipes),
            Yaml::Mapping(m) => m,
            other => {
                return Err(invalid(
                    "recipes",
                    format!("must be a mapping, got {}", describe(other)),
                ))
            }
        };
        for (key, value) in top {
            match key.as_str() {
                Some("audit") => recipes.defaults = parse_audit(value, &mut recipes.warnings)?,
                Some("process_recipes") => {
                    recipes.processes = parse_processes(value, &mut recipes.warnings)?
                }
                _ => recipes.warnings.push(unknown_key("top level", key)),
            }
        }
        Ok(recipes)
    }

    pub fn defaults(&self) -> &AuditDefaults {
        &self.defaults
    }

    /// The recipe of the process (function) called `name`.
    pub fn process(&self, name: &str) -> Option<&ProcessRecipe> {
        self.processes.get(name)
    }

    /// Every process recipe, by name.
    pub fn processes(&self) -> impl Iterator<Item = (&str, &ProcessRecipe)> {
        self.processes.iter().map(|(name, p)| (name.as_str(), p))
    }

    /// One line per key that was ignored, for the loader to log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

fn unknown_key(at: &str, key: &Yaml) -> String {
    match key.as_str() {
        Some(k) => format!("{at}: unknown key {k:?} ignored"),
        None => format!("{at}: unknown key {} ignored", describe(key)),
    }
}

/// A YAML value as an error message shows it.
fn describe(value: &Yaml) -> String {
    match value {
        Yaml::Null => "null".to_owned(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::String(s) => format!("string {s:?}"),
        Yaml::Sequence(_) => "a list".to_owned(),
        Yaml::Mapping(_) => "a mapping".to_owned(),
        Yaml::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// A section that may be absent or empty (`null`), or a mapping.
fn mapping<'a>(value: &'a Yaml, at: &str) -> Result<Option<&'a Mapping>, RecipeError> {
    match value {
        Yaml::Null => Ok(None),
        Yaml::Mapping(m) => Ok(Some(m)),
        other => Err(invalid(
            at,
            format!("must be a mapping, got {}", describe(other)),
        )),
    }
}

fn parse_audit(value: &Yaml, warnings: &mut Vec<String>) -> Result<AuditDefaults, RecipeError> {
    const AT: &str = "audit";
    let mut defaults = AuditDefaults::default();
    let Some(section) = mapping(value, AT)? else {
        return Ok(defaults);
    };
    for (key, value) in section {
        let Some(name) = key.as_str() else {
            warnings.push(unknown_key(AT, key));
            continue;
        };
        if value.is_null() {
            if is_audit_key(name) {
                continue;
            }
            warnings.push(unknown_key(AT, key));
            continue;
        }
        match name {
            "level" => defaults.level = located(AT, level(value, name))?,
            "threshold_max" => defaults.threshold_max = located(AT, count(value, name))?,
            "threshold_min" => defaults.threshold_min = located(AT, count(value, name))?,
            "reset_on_success" => defaults.reset_on_success = located(AT, boolean(value, name))?,
            "ring_capacity" => {
                let n = located(AT, non_negative(value, name))?;
                defaults.ring_capacity =
                    usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                        invalid(
                            AT,
                            format!("ring_capacity must be a positive integer, got {n}"),
                        )
                    })?;
            }
            _ => warnings.push(unknown_key(AT, key)),
        }
    }
    Ok(defaults)
}

fn is_audit_key(name: &str) -> bool {
    matches!(
        name,
        "level" | "threshold_max" | "threshold_min" | "reset_on_success" | "ring_capacity"
    )
}

fn parse_processes(
    value: &Yaml,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, ProcessRecipe>, RecipeError> {
    const AT: &str = "process_recipes";
    let mut processes = BTreeMap::new();
    let Some(section) = mapping(value, AT)? else {
        return Ok(processes);
    };
    for (key, value) in section {
        // Theus looks recipes up by function name; a key that is not a string can
        // never match one.
        let Some(name) = key.as_str() else {
            warnings.push(unknown_key(AT, key));
            continue;
        };
        let at = format!("{AT}.{name}");
        let mut recipe = ProcessRecipe::default();
        if let Some(fields) = mapping(value, &at)? {
            for (key, value) in fields {
                match key.as_str() {
                    Some("inputs") => recipe.inputs = parse_rules(value, &at, "inputs", warnings)?,
                    Some("outputs") => {
                        recipe.outputs = parse_rules(value, &at, "outputs", warnings)?
                    }
                    _ => warnings.push(unknown_key(&at, key)),
                }
            }
        }
        processes.insert(name.to_owned(), recipe);
    }
    Ok(processes)
}

fn parse_rules(
    value: &Yaml,
    process_at: &str,
    list: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<Rule>>, RecipeError> {
    let at = format!("{process_at}.{list}");
    let items = match value {
        Yaml::Null => return Ok(None),
        Yaml::Sequence(items) => items,
        other => {
            return Err(invalid(
                &at,
                format!("must be a list of rules, got {}", describe(other)),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_rule(item, &format!("{at}[{i}]"), warnings))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_rule(value: &Yaml, at: &str, warnings: &mut Vec<String>) -> Result<Rule, RecipeError> {
    let Yaml::Mapping(fields) = value else {
        return Err(invalid(
            at,
            format!("a rule must be a mapping, got {}", describe(value)),
        ));
    };
    let field = match fields.get("field") {
        None | Some(Yaml::Null) => return Err(invalid(at, "rule has no field")),
        Some(Yaml::String(s)) if s.is_empty() => return Err(invalid(at, "field is empty")),
        Some(Yaml::String(s)) => s.clone(),
        Some(other) => {
            return Err(invalid(
                at,
                format!("field must be a string, got {}", describe(other)),
            ))
        }
    };
    let at = format!("{at} (field {field})");
    let mut rule = Rule {
        field,
        min: None,
        max: None,
        eq: None,
        neq: None,
        min_len: None,
        max_len: None,
        regex: None,
        message: None,
        level: None,
        max_threshold: None,
    };
    let mut threshold_keys: Vec<&str> = Vec::new();
    for (key, value) in fields {
        let Some(name) = key.as_str() else {
            warnings.push(unknown_key(&at, key));
            continue;
        };
        // `key: ~` is the same as leaving the key out.
        if value.is_null() && name != "field" {
            if !is_rule_key(name) {
                warnings.push(unknown_key(&at, key));
            }
            continue;
        }
        match name {
            "field" => {}
            "min" => rule.min = Some(located(&at, limit(value, name))?),
            "max" => rule.max = Some(located(&at, limit(value, name))?),
            "eq" => rule.eq = Some(located(&at, limit(value, name))?),
            "neq" => rule.neq = Some(located(&at, limit(value, name))?),
            "min_len" => rule.min_len = Some(located(&at, non_negative(value, name))?),
            "max_len" => rule.max_len = Some(located(&at, non_negative(value, name))?),
            "regex" => {
                let source = located(&at, string(value, name))?;
                let pattern = Pattern::new(&source).map_err(|e| {
                    invalid(
                        &at,
                        format!("regex {source:?} is not supported: {}", regex_problem(&e)),
                    )
                })?;
                rule.regex = Some(pattern);
            }
            "message" => rule.message = Some(located(&at, string(value, name))?),
            "level" => rule.level = Some(located(&at, level(value, name))?),
            "max_threshold" | "threshold_max" => {
                threshold_keys.push(name);
                rule.max_threshold = Some(located(&at, count(value, name))?);
            }
            _ => warnings.push(unknown_key(&at, key)),
        }
    }
    if threshold_keys.len() > 1 {
        return Err(invalid(
            &at,
            "max_threshold and threshold_max are the same setting; give only one",
        ));
    }
    Ok(rule)
}

fn is_rule_key(name: &str) -> bool {
    matches!(
        name,
        "field"
            | "min"
            | "max"
            | "eq"
            | "neq"
            | "min_len"
            | "max_len"
            | "regex"
            | "message"
            | "level"
            | "max_threshold"
            | "threshold_max"
    )
}

// Typed values. Each returns the problem, without the location, on a wrong type.

fn limit(value: &Yaml, name: &str) -> Result<Limit, String> {
    let Yaml::Number(n) = value else {
        return Err(format!("{name} must be a number, got {}", describe(value)));
    };
    if let Some(i) = n.as_i64() {
        Ok(Limit::Int(i.into()))
    } else if let Some(u) = n.as_u64() {
        Ok(Limit::Int(u.into()))
    } else {
        n.as_f64()
            .map(Limit::Float)
            .ok_or_else(|| format!("{name} must be a number, got {n}"))
    }
}

fn non_negative(value: &Yaml, name: &str) -> Result<u64, String> {
    value.as_u64().ok_or_else(|| {
        format!(
            "{name} must be a non-negative integer, got {}",
            describe(value)
        )
    })
}

fn count(value: &Yaml, name: &str) -> Result<u32, String> {
    let n = non_negative(value, name)?;
    u32::try_from(n).map_err(|_| format!("{name} must be at most {}, got {n}", u32::MAX))
}

fn string(value: &Yaml, name: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{name} must be a string, got {}", describe(value)))
}

fn level(value: &Yaml, name: &str) -> Result<Level, String> {
    match value.as_str() {
        Some("S" | "s") => Ok(Level::S),
        Some("A" | "a") => Ok(Level::A),
        Some("B" | "b") => Ok(Level::B),
        Some("C" | "c") => Ok(Level::C),
        _ => Err(format!(
            "{name} must be one of S, A, B, C, got {}",
            describe(value)
        )),
    }
}

/// A boolean, also in the YAML 1.1 spellings PyYAML reads as booleans (`yes`, `off`…),
/// which a Theus recipe may use.
fn boolean(value: &Yaml, name: &str) -> Result<bool, String> {
    match value {
        Yaml::Bool(b) => Ok(*b),
        Yaml::String(s) => match s.as_str() {
            "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(true),
            "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(false),
            _ => Err(format!(
                "{name} must be true or false, got {}",
                describe(value)
            )),
        },
        _ => Err(format!(
            "{name} must be true or false, got {}",
            describe(value)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THEUS_EXAMPLE: &str = r#"
audit:                    # global defaults, whole section optional
  level: B                # S | A | B | C   (default B)
  threshold_max: 3        # default 3
  threshold_min: 0        # warn from this count on; 0 = never warn
  reset_on_success: true  # default true
  ring_capacity: 1000     # default 1000
process_recipes:
  p_transfer:
    inputs:
      - { field: amount, min: 100, message: "Amount must be >= 100", level: B, max_threshold: 1 }
      - { field: dest, regex: "^User.*", level: C }
    outputs:
      - { field: domain.balance, max: 5000 }
"#;

    fn error(yaml: &str) -> String {
        Recipes::parse(yaml).unwrap_err().to_string()
    }

    #[test]
    fn the_theus_example_loads_unchanged() {
        let recipes = Recipes::parse(THEUS_EXAMPLE).unwrap();
        assert_eq!(recipes.defaults(), &AuditDefaults::default());
        assert!(recipes.warnings().is_empty(), "{:?}", recipes.warnings());
        let p = recipes.process("p_transfer").unwrap();
        let inputs = p.inputs().unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].field(), "amount");
        assert_eq!(inputs[0].message(), Some("Amount must be >= 100"));
        assert_eq!(inputs[0].level(), Some(Level::B));
        assert_eq!(inputs[0].max_threshold(), Some(1));
        assert_eq!(inputs[1].field(), "dest");
        assert_eq!(inputs[1].level(), Some(Level::C));
        assert_eq!(inputs[1].max_threshold(), None);
        assert_eq!(p.outputs().unwrap()[0].field(), "domain.balance");
        assert!(recipes.process("p_other").is_none());
    }

    #[test]
    fn an_empty_file_is_no_recipes_with_default_settings() {
        let recipes = Recipes::parse("").unwrap();
        assert_eq!(recipes.defaults(), &AuditDefaults::default());
        assert_eq!(recipes.processes().count(), 0);
    }

    #[test]
    fn default_recipes_have_no_processes_and_theus_defaults() {
        let recipes = Recipes::default();
        let d = recipes.defaults();
        assert_eq!(d.level, Level::B);
        assert_eq!(d.threshold_max, 3);
        assert_eq!(d.threshold_min, 0);
        assert!(d.reset_on_success);
        assert_eq!(d.ring_capacity, 1000);
        assert_eq!(recipes.processes().count(), 0);
    }

    #[test]
    fn the_audit_section_sets_every_default() {
        let recipes = Recipes::parse(
            "audit: { level: s, threshold_max: 7, threshold_min: 2, reset_on_success: false, ring_capacity: 5 }",
        )
        .unwrap();
        assert_eq!(
            recipes.defaults(),
            &AuditDefaults {
                level: Level::S,
                threshold_max: 7,
                threshold_min: 2,
                reset_on_success: false,
                ring_capacity: 5,
            }
        );
    }

    #[test]
    fn levels_are_accepted_in_lower_case() {
        let recipes = Recipes::parse(
            "process_recipes: { p: { inputs: [ {field: a, level: s}, {field: b, level: a}, {field: c, level: b}, {field: d, level: c} ] } }",
        )
        .unwrap();
        let levels: Vec<_> = recipes
            .process("p")
            .unwrap()
            .inputs()
            .unwrap()
            .iter()
            .map(|r| r.level())
            .collect();
        assert_eq!(
            levels,
            vec![
                Some(Level::S),
                Some(Level::A),
                Some(Level::B),
                Some(Level::C)
            ]
        );
    }

    #[test]
    fn threshold_max_is_accepted_on_a_rule_as_an_alias() {
        let recipes =
            Recipes::parse("process_recipes: { p: { inputs: [ {field: a, threshold_max: 9} ] } }")
                .unwrap();
        let rule = &recipes.process("p").unwrap().inputs().unwrap()[0];
        assert_eq!(rule.max_threshold(), Some(9));
        assert!(recipes.warnings().is_empty());
    }

    #[test]
    fn a_rule_with_both_threshold_spellings_is_rejected() {
        let err = error(
            "process_recipes: { p: { inputs: [ {field: a, threshold_max: 9, max_threshold: 2} ] } }",
        );
        assert!(
            err.starts_with("process_recipes.p.inputs[0] (field a): "),
            "{err}"
        );
        assert!(err.contains("give only one"), "{err}");
    }

    #[test]
    fn unknown_keys_at_every_level_are_ignored_with_a_warning() {
        let recipes = Recipes::parse(
            r#"
version: 2
audit: { level: B, retention: 30 }
process_recipes:
  p:
    side_effects: [x]
    inputs:
      - { field: a, min: 1, description: "why" }
"#,
        )
        .unwrap();
        assert_eq!(
            recipes.warnings(),
            &[
                r#"top level: unknown key "version" ignored"#.to_owned(),
                r#"audit: unknown key "retention" ignored"#.to_owned(),
                r#"process_recipes.p: unknown key "side_effects" ignored"#.to_owned(),
                r#"process_recipes.p.inputs[0] (field a): unknown key "description" ignored"#
                    .to_owned(),
            ]
        );
        assert!(recipes.process("p").unwrap().inputs().is_some());
    }

    #[test]
    fn a_file_that_is_not_yaml_is_rejected() {
        let err = error("process_recipes: { p: [ }");
        assert!(err.starts_with("recipes are not valid yaml: "), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_mapping_is_rejected() {
        assert_eq!(
            error("- a\n- b\n"),
            "recipes: must be a mapping, got a list"
        );
    }

    #[test]
    fn an_unknown_level_is_rejected_naming_the_rule() {
        let err =
            error("process_recipes: { p_transfer: { inputs: [ {field: amount, level: X} ] } }");
        assert_eq!(
            err,
            r#"process_recipes.p_transfer.inputs[0] (field amount): level must be one of S, A, B, C, got string "X""#
        );
    }

    #[test]
    fn an_unknown_global_level_is_rejected() {
        let err = error("audit: { level: Block }");
        assert_eq!(
            err,
            r#"audit: level must be one of S, A, B, C, got string "Block""#
        );
    }

    #[test]
    fn a_non_numeric_limit_is_rejected_naming_the_rule() {
        let err = error("process_recipes: { p: { outputs: [ {field: a.b, min: abc} ] } }");
        assert_eq!(
            err,
            r#"process_recipes.p.outputs[0] (field a.b): min must be a number, got string "abc""#
        );
    }

    #[test]
    fn a_zero_ring_capacity_is_rejected() {
        assert_eq!(
            error("audit: { ring_capacity: 0 }"),
            "audit: ring_capacity must be a positive integer, got 0"
        );
    }

    #[test]
    fn a_negative_length_or_threshold_is_rejected() {
        let err = error("process_recipes: { p: { inputs: [ {field: a, min_len: -1} ] } }");
        assert!(
            err.ends_with("min_len must be a non-negative integer, got -1"),
            "{err}"
        );
        let err = error("audit: { threshold_max: -3 }");
        assert_eq!(
            err,
            "audit: threshold_max must be a non-negative integer, got -3"
        );
    }

    #[test]
    fn a_rule_without_field_is_rejected() {
        let err = error("process_recipes: { p: { inputs: [ {field: a}, {min: 3} ] } }");
        assert_eq!(err, "process_recipes.p.inputs[1]: rule has no field");
    }

    #[test]
    fn a_lookahead_regex_is_rejected_naming_the_rule() {
        let err = error(
            r#"process_recipes: { p_transfer: { inputs: [ {field: amount}, {field: dest, regex: "(?=x)"} ] } }"#,
        );
        assert!(
            err.starts_with(
                r#"process_recipes.p_transfer.inputs[1] (field dest): regex "(?=x)" is not supported: "#
            ),
            "{err}"
        );
        assert!(err.contains("look-around"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_backreference_regex_is_rejected() {
        let err = error(r#"process_recipes: { p: { inputs: [ {field: a, regex: '(a)\1'} ] } }"#);
        assert!(err.contains("is not supported: "), "{err}");
    }

    #[test]
    fn every_regex_construct_the_engine_cannot_run_is_rejected_naming_recipe_and_rule() {
        // What Python's `re` takes and a linear-time engine cannot (or will not) run.
        let cases = [
            ("look-ahead", r"(?=x)a", "look-around"),
            ("negative look-ahead", r"(?!x)a", "look-around"),
            ("look-behind", r"(?<=x)a", "look-around"),
            ("negative look-behind", r"(?<!x)a", "look-around"),
            (
                "backreference",
                r"(a)\1",
                "backreferences are not supported",
            ),
            ("named backreference", r"(?P<n>a)(?P=n)", ""),
            ("atomic group", r"(?>a+)b", ""),
            ("possessive star", r"a*+b", "possessive quantifier \"*+\""),
            ("possessive plus", r"x++", "possessive quantifier \"++\""),
            (
                "possessive count",
                r"a{2,3}+",
                "possessive quantifier \"{2,3}+\"",
            ),
            ("conditional", r"(a)?(?(1)b|c)", ""),
            ("comment group", r"a(?#note)b", ""),
            (
                "too large once compiled",
                r"(\w{1000}){1000}",
                "exceeds the size limit",
            ),
        ];
        for (name, source, problem) in cases {
            let yaml = format!(
                "process_recipes: {{ p_transfer: {{ inputs: [ {{field: amount}}, {{field: dest, regex: '{source}'}} ] }} }}"
            );
            let err = error(&yaml);
            let prefix = format!(
                "process_recipes.p_transfer.inputs[1] (field dest): regex {source:?} is not supported: "
            );
            assert!(err.starts_with(&prefix), "{name}: {err}");
            let why = &err[prefix.len()..];
            assert!(!why.trim().is_empty(), "{name}: no reason given: {err}");
            assert!(why.contains(problem), "{name}: {err}");
            assert!(!err.contains('\n'), "{name}: one line: {err}");
        }
    }

    #[test]
    fn a_rejected_regex_in_outputs_names_the_output_rule() {
        let err =
            error(r#"process_recipes: { p: { outputs: [ {field: a.b, regex: '(?<=x)y'} ] } }"#);
        assert!(
            err.starts_with(
                r#"process_recipes.p.outputs[0] (field a.b): regex "(?<=x)y" is not supported: "#
            ),
            "{err}"
        );
    }

    #[test]
    fn a_regex_that_would_escape_its_anchor_is_rejected() {
        let err = error(r#"process_recipes: { p: { inputs: [ {field: a, regex: "a)|(b"} ] } }"#);
        assert!(err.contains(r#"regex "a)|(b" is not supported"#), "{err}");
    }

    #[test]
    fn null_values_mean_not_set() {
        let recipes = Recipes::parse(
            "audit:\nprocess_recipes:\n  p:\n    inputs:\n      - { field: a, min: ~, level: ~ }\n  q:\n",
        )
        .unwrap();
        assert_eq!(recipes.defaults(), &AuditDefaults::default());
        let rule = &recipes.process("p").unwrap().inputs().unwrap()[0];
        assert_eq!(rule.level(), None);
        let q = recipes.process("q").unwrap();
        assert!(q.inputs().is_none() && q.outputs().is_none());
    }

    #[test]
    fn yaml_merge_keys_are_applied() {
        let recipes = Recipes::parse(
            r#"
process_recipes:
  p:
    inputs:
      - &amount { field: amount, min: 100, level: A }
      - { <<: *amount, field: fee }
"#,
        )
        .unwrap();
        let inputs = recipes.process("p").unwrap().inputs().unwrap();
        assert_eq!(inputs[1].field(), "fee");
        assert_eq!(inputs[1].level(), Some(Level::A));
    }

    #[test]
    fn yaml_1_1_booleans_are_read_as_booleans() {
        let recipes = Recipes::parse("audit: { reset_on_success: no }").unwrap();
        assert!(!recipes.defaults().reset_on_success);
    }
}
