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
