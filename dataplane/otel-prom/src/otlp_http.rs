//! OTLP/HTTP body handling shared by every OTLP endpoint (agent and ingester).

use prost::Message;
use strata_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Body encoding of an OTLP/HTTP request.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a `Content-Type` header value; `None` if it is neither protobuf nor JSON.
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        match ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// Decodes an OTLP/HTTP body (protobuf or the OTLP JSON mapping).
pub fn decode_request(enc: Encoding, raw: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
    match enc {
        Encoding::Protobuf => {
            ExportMetricsServiceRequest::decode(raw).map_err(|e| format!("invalid OTLP protobuf: {e}"))
        }
        Encoding::Json => serde_json::from_slice(raw).map_err(|e| format!("invalid OTLP JSON: {e}")),
    }
}
