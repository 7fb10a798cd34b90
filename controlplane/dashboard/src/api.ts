// Minimal client for the Prometheus HTTP API served by the querier.

export type Point = [number, string];
export interface Series {
  metric: Record<string, string>;
  values?: Point[];
  value?: Point;
}
export interface Result {
  series: Series[];
  warnings: string[];
}

export class QueryError extends Error {
  constructor(
    message: string,
    public kind: string,
  ) {
    super(message);
  }
}

// The tenant the dashboard reads (`X-Scope-OrgID`): empty means the
// credential's own tenant (or the default one without authentication).
// Admins and gateway identities allowed several tenants pick one here.
const TENANT_KEY = "strata.tenant";
let tenant = (() => {
  try {
    return window.localStorage.getItem(TENANT_KEY) ?? "";
  } catch {
    return "";
  }
})();

export function getTenant(): string {
  return tenant;
}

export function setTenant(t: string): void {
  tenant = t.trim();
  try {
    window.localStorage.setItem(TENANT_KEY, tenant);
  } catch {
    // Private mode: the choice lasts for this page only.
  }
}

function tenantHeaders(extra: Record<string, string> = {}): Record<string, string> {
  return tenant ? { ...extra, "X-Scope-OrgID": tenant } : extra;
}

type Body = { status?: string; data?: unknown; error?: string; errorType?: string; warnings?: string[] };

/** The Prometheus API's JSON answer, or a QueryError naming what failed
 * (`unavailable`: what could not be reached). */
async function answer(resp: Response, unavailable: string): Promise<{ data: unknown; warnings: string[] }> {
  let body: Body;
  try {
    body = await resp.json();
  } catch {
    throw new QueryError(`Querier answered HTTP ${resp.status} without JSON`, "internal");
  }
  if (body.status !== "success") {
    const kind = body.errorType ?? "internal";
    const msg =
      kind === "unavailable" ? `${unavailable}: ${body.error ?? ""}` : `${kind}: ${body.error ?? `HTTP ${resp.status}`}`;
    throw new QueryError(msg, kind);
  }
  return { data: body.data, warnings: body.warnings ?? [] };
}

async function call(path: string, params: Record<string, string>): Promise<{ data: unknown; warnings: string[] }> {
  let resp: Response;
  try {
    resp = await fetch(path, {
      method: "POST",
      headers: tenantHeaders({ "Content-Type": "application/x-www-form-urlencoded" }),
      body: new URLSearchParams(params).toString(),
    });
  } catch {
    throw new QueryError("Querier unreachable: the dashboard cannot reach the Strata querier.", "network");
  }
  return answer(resp, "Ingesters unreachable");
}

export async function queryRange(query: string, start: number, end: number, step: number): Promise<Result> {
  const r = await call("api/v1/query_range", {
    query,
    start: String(start),
    end: String(end),
    step: String(step),
  });
  const d = r.data as { result: Series[] };
  return { series: d.result, warnings: r.warnings };
}

export async function queryInstant(query: string, time?: number): Promise<Result> {
  const params: Record<string, string> = { query };
  if (time !== undefined) params.time = String(time);
  const r = await call("api/v1/query", params);
  const d = r.data as { resultType: string; result: unknown };
  if (d.resultType === "scalar" || d.resultType === "string") {
    return { series: [{ metric: {}, value: d.result as Point }], warnings: r.warnings };
  }
  return { series: d.result as Series[], warnings: r.warnings };
}

export async function labelValues(name: string, match?: string): Promise<string[]> {
  const params: Record<string, string> = {};
  if (match) params["match[]"] = match;
  const qs = new URLSearchParams(params).toString();
  let resp: Response;
  try {
    resp = await fetch(`api/v1/label/${encodeURIComponent(name)}/values${qs ? "?" + qs : ""}`, {
      headers: tenantHeaders(),
    });
  } catch {
    throw new QueryError("Querier unreachable", "network");
  }
  const body = await resp.json();
  if (body.status !== "success") throw new QueryError(body.error ?? "error", body.errorType ?? "internal");
  return body.data as string[];
}

export async function labelNames(): Promise<string[]> {
  let resp: Response;
  try {
    resp = await fetch("api/v1/labels", { headers: tenantHeaders() });
  } catch {
    throw new QueryError("Querier unreachable", "network");
  }
  const body = await resp.json();
  if (body.status !== "success") throw new QueryError(body.error ?? "error", body.errorType ?? "internal");
  return body.data as string[];
}

export function seriesName(metric: Record<string, string>, keys?: string[]): string {
  const entries = Object.entries(metric).filter(([k]) => (keys ? keys.includes(k) : k !== "__name__"));
  if (entries.length === 0) return metric.__name__ ?? "{}";
  return entries.map(([k, v]) => `${k}="${v}"`).join(", ");
}

export function num(p?: Point): number | null {
  if (!p) return null;
  const v = parseFloat(p[1]);
  return Number.isFinite(v) ? v : null;
}

// Alerts and rules, from the rulers behind the querier (`--ruler.url`).
export interface Alert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: "pending" | "firing";
  activeAt: string;
  value: string;
}

export interface Rule {
  name: string;
  type: "alerting" | "recording";
  health: "ok" | "err" | "unknown";
  lastError?: string;
  state?: string;
}

export interface RuleGroup {
  name: string;
  file: string;
  rules: Rule[];
  lastEvaluation: string;
}

async function getJSON(path: string): Promise<unknown> {
  let resp: Response;
  try {
    resp = await fetch(path, { headers: tenantHeaders() });
  } catch {
    throw new QueryError("Querier unreachable", "network");
  }
  return (await answer(resp, "Ruler unreachable")).data;
}

export async function alerts(): Promise<Alert[]> {
  const d = (await getJSON("api/v1/alerts")) as { alerts: Alert[] };
  return d.alerts ?? [];
}

export async function ruleGroups(): Promise<RuleGroup[]> {
  const d = (await getJSON("api/v1/rules?exclude_alerts=true")) as { groups: RuleGroup[] };
  return d.groups ?? [];
}
