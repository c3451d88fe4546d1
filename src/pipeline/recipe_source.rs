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
    let text = std::fs::read_to_string(path).map_err(|source| RecipeLoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let recipes = Recipes::parse(&text).map_err(|source| RecipeLoadError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    for warning in recipes.warnings() {
        tracing::warn!(path = %path.display(), warning = %warning.escape_debug(), "Recipe key ignored");
    }
    Ok(recipes)
}

/// The recipes of `path`, or none (no process is checked) without a path.
pub fn load_optional(path: Option<&Path>) -> Result<Recipes, RecipeLoadError> {
    path.map_or_else(|| Ok(Recipes::default()), load)
}

/// Starts reloading `path` every `interval`; the receiver always holds the recipes in
/// force.
pub fn watch(
    path: PathBuf,
    interval: Duration,
    initial: Recipes,
) -> (watch::Receiver<Arc<Recipes>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Arc::new(initial));
    let task = tokio::spawn(async move {
        let mut last = std::fs::read(&path).ok();
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let current = std::fs::read(&path).ok();
            if current == last {
                continue;
            }
            last = current;
            match load(&path) {
                Ok(recipes) => {
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
    (rx, task)
}
