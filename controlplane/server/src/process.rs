//! Process and build metrics every Strata binary adds to its `/metrics`
//! (Prometheus' process collector names): `process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`
//! (read from `/proc/self` at scrape time; left out where `/proc` is not
//! there), `strata_build_info{version,revision}` and the process'
//! self-metrics ([`strata_telemetry`]: HTTP, gRPC, object storage,
//! background workers).

use std::fmt::Write;
use std::sync::OnceLock;

static BUILD: OnceLock<(String, String)> = OnceLock::new();

/// Records the binary's version and revision (`main` calls it once with
/// `env!("CARGO_PKG_VERSION")` and `env!("STRATA_REVISION")`; the commit
/// is taken from a `commit <hex>, tree <hex>` description).
pub fn set_build_info(version: &str, revision: &str) {
    let commit = revision.strip_prefix("commit ").and_then(|r| r.split(',').next()).unwrap_or(revision).to_string();
    let _ = BUILD.set((version.to_string(), commit));
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as f64 } else { 4096.0 }
}

/// (cpu seconds, start time in Unix seconds) from /proc/self/stat.
fn stat() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let start: f64 = f.get(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = clock_ticks();
    Some(((utime + stime) / hz, boot + start / hz))
}

fn statm() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut f = text.split_whitespace();
    let virt: f64 = f.next()?.parse().ok()?;
    let rss: f64 = f.next()?.parse().ok()?;
    Some((virt * page_size(), rss * page_size()))
}

fn max_fds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn gauge(out: &mut String, name: &str, kind: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
}

/// The content type of every Strata `/metrics` page (prometheus-client
/// renders OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A component's `/metrics` response: `registry` rendered, then the
/// process and build metrics.
pub fn metrics_response(registry: &prometheus_client::registry::Registry) -> axum::response::Response {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    page_response(out)
}

/// [`metrics_response`] for a page the component rendered itself.
pub fn page_response(mut page: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    append(&mut page);
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], page).into_response()
}

/// Appends the process and build metrics to a rendered `/metrics` page
/// (before its `# EOF` line when it has one).
pub fn append(out: &mut String) {
    let eof = out.ends_with("# EOF\n");
    if eof {
        out.truncate(out.len() - "# EOF\n".len());
    }
    strata_telemetry::encode(out);
    if let Some((cpu, start)) = stat() {
        gauge(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpu);
        gauge(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
    }
    if let Some((virt, rss)) = statm() {
        gauge(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", virt);
        gauge(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        gauge(out, "process_open_fds", "gauge", "Number of open file descriptors.", dir.count() as f64);
    }
    if let Some(n) = max_fds() {
        gauge(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.", n);
    }
    let (version, revision) = BUILD.get().cloned().unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let _ = writeln!(
        out,
        "# HELP strata_build_info The binary's version and source revision.\n# TYPE strata_build_info gauge\nstrata_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        esc(&version),
        esc(&revision)
    );
    if eof {
        out.push_str("# EOF\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_metrics_response_is_the_registry_then_the_process_as_openmetrics() {
        let mut registry = prometheus_client::registry::Registry::default();
        let c: prometheus_client::metrics::counter::Counter = Default::default();
        c.inc();
        registry.register("things", "Things done", c);
        let r = metrics_response(&registry);
        assert_eq!(r.headers()[axum::http::header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with("# HELP things Things done.\n# TYPE things counter\nthings_total 1\n"), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes ") && text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn process_metrics_are_read_from_proc_and_go_before_eof() {
        set_build_info("1.2.3", "commit 0123456789ab-dirty, tree 00");
        let mut out = String::from("# TYPE x gauge\nx 1\n# EOF\n");
        let _f = std::fs::File::open("/proc/self/stat").unwrap();
        append(&mut out);
        assert!(
            out.ends_with("strata_build_info{version=\"1.2.3\",revision=\"0123456789ab-dirty\"} 1\n# EOF\n"),
            "{out}"
        );
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing: {out}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 4.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(start > now - 86_400.0 && start <= now + 1.0, "{start} vs {now}");
        assert_eq!(out.matches("# EOF").count(), 1);
    }
}
