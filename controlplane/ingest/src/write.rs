//! Remote write (1.0 and 2.0) and OTLP/HTTP handlers: decode, validate,
//! propose through Raft, answer per the remote write specification.
// Helpers return the finished HTTP response as their error: that is the
// handler's answer, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use strata_otel_prom::otlp_http::{Encoding, RpcStatus, decode_request};
use strata_otel_prom::{Translator, TranslatorConfig};
use strata_proto::prometheus::WriteRequest;
use strata_proto::remote_write as rw;

use crate::head::AppendOutcome;
use crate::proposer::Payload;
use crate::server::AppState;
use crate::tenant_usage::Rejection;

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into()).into_response()
}

/// The tenant from `X-Scope-OrgID` (default `anonymous`).
pub fn tenant_of(headers: &HeaderMap) -> Result<String, String> {
    strata_model::tenant::tenant_from_header(headers.get(strata_model::tenant::TENANT_HEADER).map(|v| v.as_bytes()))
}

/// Drops invalid series (counting their samples as rejected) and checks the request limit.
async fn validate(
    st: &AppState,
    tenant: &str,
    req: &mut WriteRequest,
    outcome: &mut AppendOutcome,
) -> Result<(), Response> {
    let samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
    let usage = &st.metrics.usage;
    usage.received(tenant, request_samples(req));
    // The `--limits.*` flags, with the tenant's label limits from
    // --limits.overrides-file in their place where it sets them.
    let limits = &st.overrides.current().write_limits(tenant, &st.cfg.head.limits);
    if samples > limits.max_samples_per_request {
        usage.rejected(tenant, Rejection::Invalid, request_samples(req));
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request has {samples} samples, over the limit of {} (max_samples_per_request)",
                limits.max_samples_per_request
            ),
        ));
    }
    // Native histograms are not stored yet: never acknowledge them. Each
    // one counts as a rejected sample and the answer names the series (a
    // 400 partial failure, as Prometheus answers a partly bad request);
    // float samples of the same request are still written.
    for ts in req.timeseries.iter_mut().filter(|ts| !ts.histograms.is_empty()) {
        let n = ts.histograms.len();
        outcome.samples_rejected += n as u64;
        st.metrics.histograms_rejected.inc_by(n as u64);
        usage.rejected(tenant, Rejection::NativeHistogram, n as u64);
        if outcome.errors.len() < 5 {
            outcome.errors.push(format!(
                "series {} carries {n} native histogram sample{}, which Strata does not store yet (send classic histograms: _bucket/_sum/_count)",
                strata_model::series_text(&ts.labels),
                if n == 1 { "" } else { "s" }
            ));
        }
        ts.histograms.clear();
    }
    // Samples from the far future (a wrong clock, a corrupt request).
    if limits.creation_grace_period_ms > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let horizon = now.saturating_add(limits.creation_grace_period_ms);
        let mut emptied = false;
        for ts in req.timeseries.iter_mut() {
            let Some(t) = ts.samples.iter().map(|s| s.timestamp).filter(|&t| t > horizon).max() else { continue };
            let before = ts.samples.len();
            ts.samples.retain(|s| s.timestamp <= horizon);
            emptied |= ts.samples.is_empty();
            let n = (before - ts.samples.len()) as u64;
            outcome.samples_rejected += n;
            usage.rejected(tenant, Rejection::Invalid, n);
            if outcome.errors.len() < 5 {
                outcome.errors.push(format!(
                    "series {} has {n} sample{} in the future (up to {t}, {} s ahead of this node's clock; the limit is {} s, --limits.creation-grace-period)",
                    strata_model::series_text(&ts.labels),
                    if n == 1 { "" } else { "s" },
                    (t - now) / 1000,
                    limits.creation_grace_period_ms / 1000
                ));
            }
        }
        if emptied {
            // No series is created for samples that were all refused.
            req.timeseries.retain(|ts| !(ts.samples.is_empty() && ts.histograms.is_empty()));
        }
    }
    req.timeseries.retain(|ts| match strata_model::validate_series(&ts.labels, limits) {
        Ok(()) => true,
        Err(msg) => {
            outcome.samples_rejected += ts.samples.len() as u64;
            usage.rejected(tenant, Rejection::Invalid, ts.samples.len() as u64);
            if outcome.errors.len() < 5 {
                outcome.errors.push(msg);
            }
            false
        }
    });
    // The tenant's series limits (--limits.overrides-file): new series past
    // them are dropped here, at the node that received the write, against
    // its own head (existing series keep being written).
    let series_limits = st.overrides.current().series(tenant);
    if series_limits.any() {
        let verdicts = {
            let sm = st.sm.state.read().await;
            sm.head.admit_new_series(
                tenant,
                req.timeseries.iter().map(|t| t.labels.as_slice()),
                series_limits.max_series,
                series_limits.max_series_per_metric,
            )
        };
        let mut verdicts = verdicts.into_iter();
        req.timeseries.retain(|ts| match verdicts.next() {
            Some(Err(msg)) => {
                let n = (ts.samples.len() + ts.histograms.len()) as u64;
                outcome.samples_rejected += n;
                usage.rejected(tenant, Rejection::SeriesLimit, n);
                if outcome.errors.len() < 5 {
                    outcome.errors.push(msg);
                }
                false
            }
            _ => true,
        });
    }
    Ok(())
}

/// Samples (float and native histogram) in `req`, the unit of the usage metrics.
fn request_samples(req: &WriteRequest) -> u64 {
    req.timeseries.iter().map(|t| (t.samples.len() + t.histograms.len()) as u64).sum()
}

/// Proposes the valid part and merges its outcome. `encoded`, when given,
/// is `req` already encoded (an unchanged remote write 1.0 body, still
/// snappy-compressed: the log keeps it as received).
async fn commit(
    st: &AppState,
    tenant: &str,
    req: &WriteRequest,
    encoded: Option<Payload>,
    outcome: &mut AppendOutcome,
) -> Result<(), Response> {
    // Metadata- and exemplar-only requests (Prometheus sends both on their
    // own) are replicated too: every replica records the same metric metadata.
    if req.timeseries.iter().all(|t| t.samples.is_empty() && t.exemplars.is_empty()) && req.metadata.is_empty() {
        return Ok(());
    }
    let usage = &st.metrics.usage;
    let n = request_samples(req);
    check_rate(st, tenant, req).inspect_err(|_| usage.rejected(tenant, Rejection::RateLimited, n))?;
    check_pending(st).inspect_err(|_| usage.rejected(tenant, Rejection::Throttled, n))?;
    match st.proposer.propose(tenant, encoded.unwrap_or_else(|| Payload::Raw(req.encode_to_vec()))).await {
        Ok(o) => {
            usage.written(tenant, o.samples_written);
            usage.rejected(tenant, Rejection::Head, o.samples_rejected);
            outcome.merge(o);
            Ok(())
        }
        Err(e) => {
            st.metrics.write_errors.inc();
            usage.rejected(tenant, Rejection::NotCommitted, n);
            Err(text(StatusCode::SERVICE_UNAVAILABLE, format!("write not committed: {e}")))
        }
    }
}

/// The tenant's ingestion rate (`--limits.overrides-file`): a request
/// whose samples and exemplars do not fit in the tenant's bucket now gets
/// 429 with `Retry-After`; nothing of it is written.
fn check_rate(st: &AppState, tenant: &str, req: &WriteRequest) -> Result<(), Response> {
    let Some(limit) = st.overrides.current().ingestion(tenant) else { return Ok(()) };
    let n: usize = req.timeseries.iter().map(|t| t.samples.len() + t.exemplars.len()).sum();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let admitted = st.limiter.lock().unwrap_or_else(|p| p.into_inner()).admit(tenant, limit, n as u64, now);
    let wait = match admitted {
        Ok(()) => return Ok(()),
        Err(wait) => wait,
    };
    st.metrics.writes_rate_limited.inc();
    let msg = match wait {
        Some(_) => format!(
            "tenant {tenant:?} is over its ingestion rate ({} samples/s, burst {}): this request's {n} samples \
             were not written, retry later",
            limit.rate, limit.burst
        ),
        None => format!(
            "tenant {tenant:?}: this request's {n} samples exceed its ingestion burst ({}) and can never be \
             accepted at once; send smaller requests",
            limit.burst
        ),
    };
    let mut resp = text(StatusCode::TOO_MANY_REQUESTS, msg);
    let secs = wait.unwrap_or(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&secs) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Err(resp)
}

/// A tenant whose bucket is empty gets its 429 before the request is
/// decompressed and decoded: a tenant hammering past its limit then costs
/// the node little more than reading its bodies, so other tenants keep
/// their throughput (loadgen/bench/tenants.sh). Its samples are not
/// counted in the usage metrics (they were never decoded); the request is,
/// in `strata_ingester_tenant_requests_rate_limited_total`.
fn check_rate_before_decoding(st: &AppState, tenant: &str) -> Result<(), Response> {
    let Some(limit) = st.overrides.current().ingestion(tenant) else { return Ok(()) };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let Some(wait) = st.limiter.lock().unwrap_or_else(|p| p.into_inner()).empty(tenant, limit, now) else {
        return Ok(());
    };
    st.metrics.writes_rate_limited.inc();
    st.metrics.usage.request_rate_limited(tenant);
    let mut resp = text(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "tenant {tenant:?} is over its ingestion rate ({} samples/s, burst {}): this request was not written, retry later",
            limit.rate, limit.burst
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Err(resp)
}

/// Backpressure: past `--ingest.max-pending-bytes` of cut blocks waiting
/// for their upload, writes are refused with 503 and `Retry-After` (remote
/// write senders and Strata's agent retry; nothing is acknowledged).
fn check_pending(st: &AppState) -> Result<(), Response> {
    let (pending, limit) = (st.sm.pending_bytes(), st.cfg.max_pending_bytes);
    if pending < limit {
        return Ok(());
    }
    st.metrics.writes_throttled.inc();
    let mut resp = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "write refused: {pending} bytes of cut blocks wait for their upload to object storage \
             (limit --ingest.max-pending-bytes={limit}); uploads are failing or slow, retry later"
        ),
    );
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    Err(resp)
}

fn written_headers(resp: &mut Response, o: &AppendOutcome) {
    let h = resp.headers_mut();
    let n = |v: u64| HeaderValue::from_str(&v.to_string()).unwrap_or(HeaderValue::from_static("0"));
    h.insert(rw::SAMPLES_WRITTEN_HEADER, n(o.samples_written));
    h.insert(rw::HISTOGRAMS_WRITTEN_HEADER, n(0));
    h.insert(rw::EXEMPLARS_WRITTEN_HEADER, n(o.exemplars_written));
}

/// Reads at most `limit` bytes of a request body. An oversized body is
/// drained (up to 8× the limit) before the 413 goes out, so the client,
/// still sending, reads the answer instead of a reset connection.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ()> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ())?;
        seen += chunk.len();
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else if seen > limit.saturating_mul(8) {
            return Err(());
        }
    }
    if seen > limit { Err(()) } else { Ok(buf.freeze()) }
}

pub async fn remote_write(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let hv = |k: header::HeaderName| headers.get(k).and_then(|v| v.to_str().ok());
    let version = match rw::version_from_content_type(hv(header::CONTENT_TYPE)) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()),
    };
    if let Err(e) = rw::check_content_encoding(hv(header::CONTENT_ENCODING)) {
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string());
    }
    let tenant = match tenant_of(&headers) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let body: Bytes = match read_limited(body, st.cfg.max_request_bytes).await {
        Ok(b) => b,
        Err(()) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {} bytes", st.cfg.max_request_bytes),
            );
        }
    };
    if let Err(r) = check_rate_before_decoding(&st, &tenant) {
        return r;
    }
    let limit = st.cfg.max_request_bytes * 8;
    // A valid 1.0 request is proposed as received (snappy-compressed).
    let mut raw_v1 = None;
    let decoded = match version {
        rw::Version::V1 => rw::decompress(&body, limit).and_then(|raw| {
            let req = WriteRequest::decode(raw.as_slice())?;
            raw_v1 = Some(Payload::Snappy(body.to_vec()));
            Ok(req)
        }),
        rw::Version::V2 => rw::decode_v2(&body, limit).map(|r| rw::v2_to_v1(&r)),
    };
    let mut req = match decoded {
        Ok(r) => r,
        Err(e) => return text(StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST), e.to_string()),
    };
    let mut outcome = AppendOutcome::default();
    let before = req.timeseries.len();
    let had_histograms = req.timeseries.iter().any(|t| !t.histograms.is_empty());
    if let Err(r) = validate(&st, &tenant, &mut req, &mut outcome).await {
        return r;
    }
    let unchanged = if req.timeseries.len() == before && !had_histograms { raw_v1 } else { None };
    if let Err(r) = commit(&st, &tenant, &req, unchanged, &mut outcome).await {
        return r;
    }
    st.metrics.samples_written.inc_by(outcome.samples_written);
    st.metrics.samples_rejected.inc_by(outcome.samples_rejected);
    let mut resp = if outcome.samples_rejected == 0 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let total = outcome.samples_written + outcome.samples_rejected;
        text(
            StatusCode::BAD_REQUEST,
            format!(
                "{} of {} samples rejected ({} written): {}",
                outcome.samples_rejected,
                total,
                outcome.samples_written,
                outcome.errors.join("; ")
            ),
        )
    };
    if version == rw::Version::V2 {
        written_headers(&mut resp, &outcome);
    }
    resp
}

/// `POST /otlp/v1/metrics`: OTLP/HTTP straight into the control plane,
/// translated by the same library as the agent.
pub async fn otlp(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(enc) = Encoding::from_content_type(ct) else {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Type {ct:?}: use application/x-protobuf or application/json"),
        );
    };
    let status = |code: StatusCode, msg: String| -> Response {
        let s = RpcStatus { code: 3, message: msg };
        let mut r = match enc {
            Encoding::Protobuf => {
                ([(header::CONTENT_TYPE, "application/x-protobuf")], s.encode_to_vec()).into_response()
            }
            Encoding::Json => (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"code": 3, "message": s.message}).to_string(),
            )
                .into_response(),
        };
        *r.status_mut() = code;
        r
    };
    let tenant = match tenant_of(&headers) {
        Ok(t) => t,
        Err(e) => return status(StatusCode::BAD_REQUEST, e),
    };
    let raw = match read_limited(body, st.cfg.max_request_bytes).await {
        Ok(b) => b,
        Err(()) => {
            return status(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {} bytes", st.cfg.max_request_bytes),
            );
        }
    };
    let otlp_req = match decode_request(enc, &raw) {
        Ok(r) => r,
        Err(m) => return status(StatusCode::BAD_REQUEST, m),
    };
    let out = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut translators = st.translators.lock().unwrap_or_else(|p| p.into_inner());
        translators.of(&tenant, now).translate(&otlp_req, now)
    };
    let mut rejected = out.stats.rejected_points;
    st.metrics.usage.received(&tenant, rejected);
    st.metrics.usage.rejected(&tenant, Rejection::Invalid, rejected);
    let mut message = out.rejection_message();
    let mut req = out.write_request();
    let mut outcome = AppendOutcome::default();
    if let Err(r) = validate(&st, &tenant, &mut req, &mut outcome).await {
        return r;
    }
    if let Err(r) = commit(&st, &tenant, &req, None, &mut outcome).await {
        return r;
    }
    if outcome.samples_rejected > 0 {
        rejected += outcome.samples_rejected;
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&outcome.errors.join("; "));
    }
    use strata_proto::otlp::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
    let resp = ExportMetricsServiceResponse {
        partial_success: (rejected > 0)
            .then_some(ExportMetricsPartialSuccess { rejected_data_points: rejected as i64, error_message: message }),
    };
    match enc {
        Encoding::Protobuf => {
            ([(header::CONTENT_TYPE, "application/x-protobuf")], resp.encode_to_vec()).into_response()
        }
        Encoding::Json => {
            ([(header::CONTENT_TYPE, "application/json")], serde_json::to_string(&resp).unwrap_or_default())
                .into_response()
        }
    }
}

/// Tenants whose OTLP translation state (delta-to-cumulative streams,
/// caches) is kept at once; past it the least recently used is dropped
/// (its delta streams start again from their next point).
const MAX_OTLP_TENANTS: usize = 1000;

/// The ingester's OTLP translators, one per tenant: two tenants sending
/// the same delta stream must not be summed together.
#[derive(Default)]
pub struct OtlpTranslators {
    by_tenant: std::collections::HashMap<String, (Translator, i64)>,
}

impl OtlpTranslators {
    /// `tenant`'s translator (created on first use), marked used at `now_ms`.
    pub fn of(&mut self, tenant: &str, now_ms: i64) -> &mut Translator {
        if !self.by_tenant.contains_key(tenant) && self.by_tenant.len() >= MAX_OTLP_TENANTS {
            let oldest = self.by_tenant.iter().min_by_key(|(_, (_, used))| *used).map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                tracing::warn!(tenant = %t, "OTLP translation state dropped: more than {MAX_OTLP_TENANTS} tenants");
                self.by_tenant.remove(&t);
            }
        }
        let entry = self
            .by_tenant
            .entry(tenant.to_string())
            .or_insert_with(|| (Translator::new(TranslatorConfig::default()), now_ms));
        entry.1 = now_ms;
        &mut entry.0
    }
}
