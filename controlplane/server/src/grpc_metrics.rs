//! Every gRPC call counted and timed by service, method and status code
//! (`strata_grpc_server_*`, [`strata_telemetry`]): a tower layer for
//! tonic's server, the status read from the trailers (or from the headers
//! of a trailers-only error response).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use strata_telemetry::GrpcCall;
use tracing::Instrument as _;

/// `tonic::transport::Server::builder().layer(GrpcMetricsLayer)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetricsService<S> {
    inner: S,
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str) {
    let p = path.strip_prefix('/').unwrap_or(path);
    p.split_once('/').unwrap_or(("other", "other"))
}

/// Go's names for gRPC status codes (`OK`, `Unavailable`, …), as
/// grpc-ecosystem's Prometheus metrics label them.
fn code_name(status: &[u8]) -> &'static str {
    let n = std::str::from_utf8(status).ok().and_then(|s| s.trim().parse::<i32>().ok()).unwrap_or(2);
    match n {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(req.uri().path());
        let call = strata_telemetry::global().grpc_call(service, method);
        // A span only for calls that continue a trace (queries fanning out,
        // forwarded writes): Raft's own traffic would drown the traces.
        let span = if req.headers().contains_key("traceparent") {
            let span = tracing::info_span!(
                target: "strata_server::grpc",
                "grpc",
                otel.name = format!("{service}/{method}"),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
            );
            crate::trace::continue_from(&span, req.headers());
            span
        } else {
            tracing::Span::none()
        };
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let resp = fut.await?;
                // A trailers-only response (most errors) has the status here.
                let header_code = resp.headers().get("grpc-status").map(|v| code_name(v.as_bytes()));
                Ok(resp.map(|inner| MeteredBody { inner, call: Some(call), header_code }))
            }
            .instrument(span),
        )
    }
}

/// A response body that records its call when the status goes out (or,
/// when the client goes away first, as `Canceled` on drop).
pub struct MeteredBody<B> {
    inner: B,
    call: Option<GrpcCall>,
    header_code: Option<&'static str>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status"))
                    && let Some(call) = this.call.take()
                {
                    call.finish(code_name(code.as_bytes()));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.finish("Internal");
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    call.finish(this.header_code.unwrap_or("Unknown"));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_codes_are_named_like_grpc_ecosystem() {
        assert_eq!(split_path("/strata.raft.Raft/AppendEntries"), ("strata.raft.Raft", "AppendEntries"));
        assert_eq!(split_path("/nonsense"), ("other", "other"));
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"14"), "Unavailable");
        assert_eq!(code_name(b"x"), "Unknown");
    }
}
