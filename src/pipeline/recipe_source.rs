//! Where the recipes in force come from: the recipe file, reloaded without a restart.
//!
//! The file is re-read every `reload_interval_ms`; when its content changed and parses,
//! the new recipes replace the old ones between two records. A file that does not
//! parse is rejected with a clear error and the previous recipes stay in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics;
use crate::validation::{RecipeError, Recipes};

/// A recipe file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecipeLoadError {
    #[error("recipes {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("recipes {path}: {source}")]
    Invalid { path: PathBuf, source: RecipeError },
}

/// Reads and parses a recipe file, logging ignored keys.
pub fn load(path: &Path) -> Result<Recipes, RecipeLoadError> {
    read(path).map(|(_, recipes)| recipes)
}

/// The file's bytes and the recipes parsed from exactly those bytes.
fn read(path: &Path) -> Result<(Vec<u8>, Recipes), RecipeLoadError> {
    let bytes = std::fs::read(path).map_err(|source| RecipeLoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let recipes = Recipes::parse(&text).map_err(|source| RecipeLoadError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    for warning in recipes.warnings() {
        tracing::warn!(path = %path.display(), warning = %warning.escape_debug(), "Recipe key ignored");
    }
    Ok((bytes, recipes))
}

/// The recipes of `path`, or none (no process is checked) without a path.
pub fn load_optional(path: Option<&Path>) -> Result<Recipes, RecipeLoadError> {
    path.map_or_else(|| Ok(Recipes::default()), load)
}

/// Loads `path`, then reloads it every `interval`; the receiver always holds the
/// recipes in force. A change is detected against the very bytes the recipes in force
/// were parsed from, so no write between loading and watching goes unnoticed.
pub fn watch(
    path: PathBuf,
    interval: Duration,
) -> Result<(watch::Receiver<Arc<Recipes>>, tokio::task::JoinHandle<()>), RecipeLoadError> {
    let (bytes, initial) = read(&path)?;
    let (tx, rx) = watch::channel(Arc::new(initial));
    let task = tokio::spawn(async move {
        let mut last = Some(bytes);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let current = std::fs::read(&path).ok();
            if current == last {
                continue;
            }
            last = current;
            match read(&path) {
                Ok((_, recipes)) => {
                    tracing::info!(path = %path.display(), "Recipes reloaded");
                    metrics::recipes_reloaded("accepted");
                    if tx.send(Arc::new(recipes)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "Recipe file rejected; the previous recipes stay in force");
                    metrics::recipes_reloaded("rejected");
                }
            }
        }
    });
    Ok((rx, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "process_recipes:\n  p:\n    inputs:\n      - { field: a, min: 1 }\n";
    const BETTER: &str = "process_recipes:\n  p:\n    inputs:\n      - { field: a, min: 1 }\n  q:\n    inputs:\n      - { field: b, max: 2 }\n";

    async fn wait_for(
        rx: &mut watch::Receiver<Arc<Recipes>>,
        check: impl Fn(&Recipes) -> bool,
    ) -> bool {
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| check(r)))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_changed_valid_file_replaces_the_recipes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("recipes.yaml");
        std::fs::write(&path, GOOD).expect("write");
        let (mut rx, task) = watch(path.clone(), Duration::from_millis(20)).expect("loads");
        assert!(rx.borrow().process("q").is_none());
        std::fs::write(&path, BETTER).expect("write");
        assert!(
            wait_for(&mut rx, |r| r.process("q").is_some()).await,
            "reloaded"
        );
        task.abort();
    }

    #[tokio::test]
    async fn an_invalid_file_is_rejected_and_the_previous_recipes_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("recipes.yaml");
        std::fs::write(&path, GOOD).expect("write");
        let (mut rx, task) = watch(path.clone(), Duration::from_millis(20)).expect("loads");
        std::fs::write(
            &path,
            "process_recipes:\n  p:\n    inputs:\n      - { field: a, regex: \"(?=x)\" }\n",
        )
        .expect("write");
        // Give the watcher several intervals to (wrongly) pick it up.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !rx.has_changed().expect("sender alive"),
            "an invalid file must not be published"
        );
        assert!(rx.borrow().process("p").is_some());
        // A valid file afterwards is picked up again.
        std::fs::write(&path, BETTER).expect("write");
        assert!(
            wait_for(&mut rx, |r| r.process("q").is_some()).await,
            "reloaded after the bad file"
        );
        task.abort();
    }

    #[test]
    fn a_load_error_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "process_recipes: [").expect("write");
        let error = load(&path).expect_err("invalid YAML").to_string();
        assert!(
            error.starts_with(&format!("recipes {}: ", path.display())),
            "{error}"
        );
        let missing = load(&dir.path().join("none.yaml"))
            .expect_err("missing")
            .to_string();
        assert!(missing.contains("none.yaml"), "{missing}");
    }
}
