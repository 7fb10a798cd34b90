//! Strata's wire protocols.
//!
//! * [`prometheus`]: remote write 1.0 (`prometheus.WriteRequest`) and remote
//!   read (`ReadRequest`/`ReadResponse`/`ChunkedReadResponse`).
//! * [`write_v2`]: remote write 2.0 (`io.prometheus.write.v2.Request`).
//! * [`otlp`]: OTLP types, re-exported from the `opentelemetry-proto` crate.
//! * [`remote_write`]: the framing around those messages (snappy, content
//!   types, response headers) and conversion between 1.0 and 2.0.
//! * [`client_model`]: Prometheus' exposition protobuf (`io.prometheus.client.MetricFamily`).
//! * [`write_view`]: a borrowed reading of samples-only 1.0 write requests.

pub mod remote_write;
pub mod write_view;

/// Prometheus remote write 1.0 and remote read messages (package `prometheus`).
pub mod prometheus {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Prometheus remote write 2.0 messages (package `io.prometheus.write.v2`).
pub mod write_v2 {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
}

/// Prometheus' exposition data model (package `io.prometheus.client`): the
/// delimited protobuf bodies Pushgateway clients send.
pub mod client_model {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.client.rs"));
}

/// Strata's own services (package `strata.*`); nested so generated
/// cross-package paths (`super::super::prometheus`) resolve.
pub mod strata {
    /// StoreAPI: series reads from ingesters and stores (package `strata.store`).
    pub mod store {
        #![allow(clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/strata.store.rs"));
    }

    /// Raft RPC between ingesters (package `strata.raft`).
    pub mod raft {
        #![allow(clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/strata.raft.rs"));
    }
}

pub use strata::{raft, store};

/// OTLP protobuf types and gRPC services.
pub use opentelemetry_proto::tonic as otlp;
