//! Untrusted OTLP bytes, as the agent and the ingester receive them:
//! protobuf and JSON decoding, then translation to Prometheus series.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata_otel_prom::{Translator, TranslatorConfig};
use strata_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;

fuzz_target!(|data: &[u8]| {
    let mut tr = Translator::new(TranslatorConfig::default());
    if let Ok(req) = ExportMetricsServiceRequest::decode(data) {
        let out = tr.translate(&req, 0);
        // Every produced series has sorted, non-empty label names and a name.
        for ts in &out.write_request().timeseries {
            assert!(ts.labels.windows(2).all(|w| w[0].name < w[1].name));
            assert!(ts.labels.iter().any(|l| l.name == "__name__" && !l.value.is_empty()));
        }
        let _ = out.rejection_message();
    }
    if let Ok(req) = serde_json::from_slice::<ExportMetricsServiceRequest>(data) {
        let _ = tr.translate(&req, 1);
    }
});
