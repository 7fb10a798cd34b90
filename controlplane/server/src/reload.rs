//! Configuration files re-read at run time (the web config, the limits
//! overrides): on SIGHUP and when the file's content changes.

use std::path::PathBuf;
use std::time::Duration;

/// Calls `reload` after SIGHUP and whenever the content of `path` differs
/// from what it was at the previous check (every `every`), until `reload`
/// returns false. Needs a Tokio runtime.
pub fn watch_file(path: PathBuf, every: Duration, reload: impl FnMut() -> bool + Send + 'static) {
    watch_files(vec![path], every, reload)
}

/// [`watch_file`] over several files (a certificate, its key, a CA):
/// `reload` runs once when any of them changed.
pub fn watch_files(paths: Vec<PathBuf>, every: Duration, mut reload: impl FnMut() -> bool + Send + 'static) {
    let read_all = move || paths.iter().map(|p| std::fs::read(p).ok()).collect::<Vec<_>>();
    tokio::spawn(async move {
        let mut last = read_all();
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let signalled = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = async {
                    match hup.as_mut() {
                        Some(h) => { h.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => true,
            };
            #[cfg(not(unix))]
            let signalled = {
                tokio::time::sleep(every).await;
                false
            };
            let now = read_all();
            if !signalled && now == last {
                continue;
            }
            last = now;
            if !reload() {
                return;
            }
        }
    });
}

/// `--limits.overrides-file` as the process sees it: the current per-tenant
/// overrides, replaced when the file changes (or on SIGHUP); a file that
/// no longer parses is logged and the previous overrides stay.
pub struct LiveOverrides {
    current: std::sync::RwLock<std::sync::Arc<strata_model::overrides::Overrides>>,
}

impl LiveOverrides {
    /// Reads `path` (none: no overrides, every key unlimited) and, with a
    /// file, keeps it current while the returned value is in use. The
    /// error names the flag, the file and the entry at fault.
    pub fn load(path: Option<&std::path::Path>) -> Result<std::sync::Arc<LiveOverrides>, String> {
        let first = read_overrides(path)?;
        let live = std::sync::Arc::new(LiveOverrides { current: std::sync::RwLock::new(std::sync::Arc::new(first)) });
        if let Some(path) = path.map(std::path::Path::to_path_buf) {
            let weak = std::sync::Arc::downgrade(&live);
            watch_file(path.clone(), Duration::from_secs(5), move || {
                let Some(live) = weak.upgrade() else { return false };
                match read_overrides(Some(&path)) {
                    Ok(o) => {
                        if let Ok(mut g) = live.current.write() {
                            *g = std::sync::Arc::new(o);
                        }
                        tracing::info!(file = %path.display(), "limits overrides reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "limits overrides not reloaded; the previous ones stay"),
                }
                true
            });
        }
        Ok(live)
    }

    /// The overrides in force now.
    pub fn current(&self) -> std::sync::Arc<strata_model::overrides::Overrides> {
        self.current.read().map(|g| g.clone()).unwrap_or_default()
    }
}

fn read_overrides(path: Option<&std::path::Path>) -> Result<strata_model::overrides::Overrides, String> {
    let Some(path) = path else { return Ok(Default::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("--limits.overrides-file {}: {e}", path.display()))?;
    strata_model::overrides::Overrides::parse(&text)
        .map_err(|e| format!("--limits.overrides-file {}: {e}", path.display()))
}
