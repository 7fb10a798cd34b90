// The PromQL behind every panel (shown by "View query").
const COUNT = "http_server_request_duration_seconds_count";
const BUCKET = "http_server_request_duration_seconds_bucket";
const ERR = 'http_response_status_code=~"5.."';

export const overview = {
  rate: `sum by (environment, data_plane_id) (rate(${COUNT}[1m]))`,
  errors: `sum by (environment, data_plane_id) (rate(${COUNT}{${ERR}}[1m]))`,
  p95: `histogram_quantile(0.95, sum by (environment, data_plane_id, le) (rate(${BUCKET}[1m])))`,
  lastSeen: `max by (environment, data_plane_id) (timestamp(target_info))`,
  series: `count by (environment, data_plane_id) ({data_plane_id!=""})`,
};

const sel = (env: string, extra = "") => `{environment="${env}"${extra ? "," + extra : ""}}`;

export function envPanels(env: string) {
  return [
    {
      title: "Request rate by route (req/s)",
      unit: "",
      queries: [{ expr: `sum by (http_route) (rate(${COUNT}${sel(env)}[1m]))` }],
    },
    {
      title: "Latency p50 / p95 / p99",
      unit: "s",
      queries: [0.5, 0.95, 0.99].map((q) => ({
        expr: `histogram_quantile(${q}, sum by (le) (rate(${BUCKET}${sel(env)}[1m])))`,
        legend: `p${Math.round(q * 100)}`,
      })),
    },
    {
      title: "Error rate (%)",
      unit: "%",
      threshold: 5,
      queries: [
        {
          expr: `100 * (sum(rate(${COUNT}${sel(env, ERR)}[1m])) or vector(0)) / sum(rate(${COUNT}${sel(env)}[1m]))`,
          legend: "5xx %",
        },
      ],
    },
    {
      title: "Active requests",
      unit: "",
      queries: [{ expr: `sum(http_server_active_requests${sel(env)})`, legend: "active" }],
    },
  ];
}

export const cardinality = {
  topMetrics: `topk(15, count by (__name__) ({__name__=~".+"}))`,
  labelValues: (name: string) => `count(count by ("${name}") ({"${name}"!=""}))`,
};

// The "Strata health" page: the control plane's own metrics, scraped into
// Strata by the self-monitoring agent (docs/metrics.md has every name).
export const health = {
  stats: {
    leader: `max by (instance) (strata_ingester_raft_is_leader) == 1`,
    term: `max(strata_ingester_raft_term)`,
    lag: `max(strata_ingester_raft_last_log_index - strata_ingester_raft_applied_index)`,
    pending: `sum(strata_ingester_blocks_pending)`,
    objstoreErrors: `sum(increase(strata_objstore_operations_total{result="error"}[15m])) or vector(0)`,
    targetsUp: `sum(up{job=~"strata-.*"})`,
    targets: `count(up{job=~"strata-.*"})`,
  },
  panels: [
    {
      title: "Ingest rate (samples/s)",
      unit: "",
      queries: [{ expr: `sum(rate(strata_ingester_samples_written_total[1m]))`, legend: "written" }],
    },
    {
      title: "Rejected samples by reason (samples/s)",
      unit: "",
      queries: [
        { expr: `sum(rate(strata_ingester_samples_rejected_total[1m]))`, legend: "all reasons" },
        { expr: `sum by (reason) (rate(strata_ingester_tenant_samples_rejected_total[1m]))` },
      ],
    },
    {
      title: "Query latency p50 / p99",
      unit: "s",
      queries: [0.5, 0.99].map((q) => ({
        expr: `histogram_quantile(${q}, sum by (le) (rate(strata_querier_request_duration_seconds_bucket[1m])))`,
        legend: `p${Math.round(q * 100)}`,
      })),
    },
    {
      title: "Raft leader (1) per ingester",
      unit: "",
      queries: [{ expr: `max by (instance) (strata_ingester_raft_is_leader)` }],
    },
    {
      title: "Raft term and apply lag (entries)",
      unit: "",
      queries: [
        { expr: `max(strata_ingester_raft_term)`, legend: "term" },
        { expr: `max by (instance) (strata_ingester_raft_last_log_index - strata_ingester_raft_applied_index)` },
      ],
    },
    {
      title: "Blocks pending upload",
      unit: "",
      queries: [{ expr: `max by (instance) (strata_ingester_blocks_pending)` }],
    },
    {
      title: "Object-storage operations by result (ops/s)",
      unit: "",
      queries: [{ expr: `sum by (job, result) (rate(strata_objstore_operations_total[1m]))` }],
    },
    {
      title: "Background runs by worker and result (runs/s)",
      unit: "",
      queries: [{ expr: `sum by (worker, result) (rate(strata_background_runs_total[5m]))` }],
    },
  ],
};
