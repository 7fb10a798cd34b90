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
