//! OTLP receivers: gRPC (`opentelemetry.proto.collector.metrics.v1.MetricsService/Export`)
//! and HTTP (`POST /v1/metrics`, protobuf or JSON, optionally gzip), with
//! the OTLP specification's responses:
//!
//! * success, or partial success naming the rejected data points;
//! * 400 / `INVALID_ARGUMENT` for bodies that cannot be decoded (not retryable);
//! * 415 for an unsupported `Content-Type` or `Content-Encoding`, 413 for oversize bodies;
//! * 503 with `Retry-After` / `UNAVAILABLE` when the disk queue is full (retryable:
//!   the sender keeps its data).

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use strata_proto::otlp::collector::metrics::v1::metrics_service_server::{MetricsService, MetricsServiceServer};
use strata_proto::otlp::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};

use crate::pipeline::{Accepted, Pipeline, SubmitError};
pub use strata_otel_prom::otlp_http::{Encoding, RpcStatus, decode_request};

const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_RESOURCE_EXHAUSTED: i32 = 8;
const CODE_UNAVAILABLE: i32 = 14;

fn response_of(accepted: Accepted) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: (accepted.rejected_points > 0).then_some(ExportMetricsPartialSuccess {
            rejected_data_points: accepted.rejected_points as i64,
            error_message: accepted.message,
        }),
    }
}

/// gRPC receiver.
pub struct GrpcReceiver {
    pipeline: Arc<Pipeline>,
}

impl GrpcReceiver {
    pub fn service(pipeline: Arc<Pipeline>, max_bytes: usize) -> MetricsServiceServer<GrpcReceiver> {
        MetricsServiceServer::new(GrpcReceiver { pipeline })
            .max_decoding_message_size(max_bytes)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let metrics = &self.pipeline.metrics();
        match self.pipeline.submit(request.get_ref()).await {
            Ok(a) => {
                metrics.otlp_request("grpc", if a.rejected_points > 0 { "partial" } else { "success" });
                Ok(tonic::Response::new(response_of(a)))
            }
            Err(e) => {
                metrics.otlp_request("grpc", "unavailable");
                Err(tonic::Status::unavailable(e.to_string()))
            }
        }
    }
}

struct HttpState {
    pipeline: Arc<Pipeline>,
    max_bytes: usize,
}

/// What the receiver's routes need with `http_server.web_config_file`:
/// OTLP export needs `write`; anything else `admin`.
pub fn http_access(_: &axum::http::Method, path: &str) -> strata_server::Access {
    use strata_server::{Access, Role};
    match path {
        "/v1/metrics" => Access::Role(Role::Write),
        _ => Access::Role(Role::Admin),
    }
}

/// HTTP receiver routes (`POST /v1/metrics`).
pub fn http_router(pipeline: Arc<Pipeline>, max_bytes: usize) -> Router {
    Router::new()
        .route("/v1/metrics", post(export_http))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(Arc::new(HttpState { pipeline, max_bytes }))
}

fn status_response(enc: Encoding, http: StatusCode, code: i32, message: String) -> Response {
    let status = RpcStatus { code, message };
    let mut resp = match enc {
        Encoding::Protobuf => {
            ([(header::CONTENT_TYPE, "application/x-protobuf")], status.encode_to_vec()).into_response()
        }
        Encoding::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": status.code, "message": status.message}).to_string(),
        )
            .into_response(),
    };
    *resp.status_mut() = http;
    resp
}

async fn export_http(State(st): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    let metrics = st.pipeline.metrics();
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let enc = match Encoding::from_content_type(ct) {
        Some(e) => e,
        None => {
            metrics.otlp_request("http", "bad_request");
            return status_response(
                Encoding::Protobuf,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                CODE_INVALID_ARGUMENT,
                format!("unsupported Content-Type {ct:?}: use application/x-protobuf or application/json"),
            );
        }
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" => true,
        Some(e) => {
            metrics.otlp_request("http", "bad_request");
            return status_response(
                enc,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                CODE_INVALID_ARGUMENT,
                format!("unsupported Content-Encoding {e:?}: use gzip or none"),
            );
        }
    };
    let too_large = |n: usize| {
        status_response(
            enc,
            StatusCode::PAYLOAD_TOO_LARGE,
            CODE_RESOURCE_EXHAUSTED,
            format!("request body exceeds the limit of {n} bytes (otlp.max_request_bytes)"),
        )
    };
    let raw: Bytes = match axum::body::to_bytes(body, st.max_bytes).await {
        Ok(b) => b,
        Err(_) => {
            metrics.otlp_request("http", "too_large");
            return too_large(st.max_bytes);
        }
    };
    let raw = if gzip {
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(raw.as_ref()).take(st.max_bytes as u64 + 1);
        if let Err(e) = dec.read_to_end(&mut out) {
            metrics.otlp_request("http", "bad_request");
            return status_response(
                enc,
                StatusCode::BAD_REQUEST,
                CODE_INVALID_ARGUMENT,
                format!("invalid gzip body: {e}"),
            );
        }
        if out.len() > st.max_bytes {
            metrics.otlp_request("http", "too_large");
            return too_large(st.max_bytes);
        }
        Bytes::from(out)
    } else {
        raw
    };
    let req = match decode_request(enc, &raw) {
        Ok(r) => r,
        Err(msg) => {
            metrics.otlp_request("http", "bad_request");
            return status_response(enc, StatusCode::BAD_REQUEST, CODE_INVALID_ARGUMENT, msg);
        }
    };
    match st.pipeline.submit(&req).await {
        Ok(a) => {
            metrics.otlp_request("http", if a.rejected_points > 0 { "partial" } else { "success" });
            let resp = response_of(a);
            match enc {
                Encoding::Protobuf => {
                    ([(header::CONTENT_TYPE, "application/x-protobuf")], resp.encode_to_vec()).into_response()
                }
                Encoding::Json => (
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into()),
                )
                    .into_response(),
            }
        }
        Err(e) => {
            metrics.otlp_request("http", "unavailable");
            let mut r = status_response(enc, StatusCode::SERVICE_UNAVAILABLE, CODE_UNAVAILABLE, e.to_string());
            if matches!(e, SubmitError::QueueFull(_)) {
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            r
        }
    }
}
