import { useEffect, useState } from "react";
import { Chart } from "./Chart";
import { formatValue } from "./Chart";
import {
  alerts as fetchAlerts,
  labelNames,
  labelValues,
  num,
  queryInstant,
  queryRange,
  QueryError,
  ruleGroups,
  seriesName,
  type Alert,
  type Series,
} from "./api";
import * as Q from "./queries";
import { useSettings } from "./settings";

/** Runs `fn` whenever its inputs or the refresh tick change. */
function useData<T>(fn: () => Promise<T>, deps: unknown[]): { data: T | null; error: string | null } {
  const { tick } = useSettings();
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let cancelled = false;
    fn()
      .then((d) => {
        if (!cancelled) {
          setData(d);
          setError(null);
        }
      })
      .catch((e: unknown) => {
        if (!cancelled) setError(e instanceof QueryError ? e.message : String(e));
      });
    return () => {
      cancelled = true;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  return { data, error };
}

const dpKey = (m: Record<string, string>) => `${m.environment ?? ""}/${m.data_plane_id ?? ""}`;

function byDataPlane(series: Series[]): Map<string, number | null> {
  return new Map(series.map((s) => [dpKey(s.metric), num(s.value)]));
}

interface DataPlaneRow {
  environment: string;
  dataPlane: string;
  rate: number | null;
  errorRatio: number | null;
  p95: number | null;
  lastSeen: number | null;
  series: number | null;
}

function useDataPlanes() {
  return useData(async () => {
    const [rate, errors, p95, last, series] = await Promise.all([
      queryInstant(Q.overview.rate),
      queryInstant(Q.overview.errors),
      queryInstant(Q.overview.p95),
      queryInstant(Q.overview.lastSeen),
      queryInstant(Q.overview.series),
    ]);
    const keys = new Set<string>();
    for (const r of [rate, last, series]) r.series.forEach((s) => s.metric.environment && keys.add(dpKey(s.metric)));
    const [er, p, l, c, rt] = [errors, p95, last, series, rate].map((r) => byDataPlane(r.series));
    const rows: DataPlaneRow[] = [...keys].sort().map((k) => {
      const [environment, dataPlane] = k.split("/");
      const total = rt.get(k) ?? null;
      const bad = er.get(k) ?? 0;
      return {
        environment,
        dataPlane,
        rate: total,
        errorRatio: total ? (bad ?? 0) / total : total === 0 ? 0 : null,
        p95: p.get(k) ?? null,
        lastSeen: l.get(k) ?? null,
        series: c.get(k) ?? null,
      };
    });
    return { rows, warnings: [rate, errors, p95, last, series].flatMap((r) => r.warnings) };
  }, []);
}

function ago(ts: number | null): string {
  if (ts === null) return "never (> 5m)";
  const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
  return s < 60 ? `${s}s ago` : `${Math.round(s / 60)}m ago`;
}

const healthy = (r: DataPlaneRow) => r.lastSeen !== null && Date.now() / 1000 - r.lastSeen < 60;

function Status({ error, warnings, empty }: { error: string | null; warnings?: string[]; empty?: boolean }) {
  if (error) return <div className="error">{error}</div>;
  if (warnings && warnings.length) return <div className="warning">Partial result: {warnings.join("; ")}</div>;
  if (empty) return <div className="state">No data yet. Data planes appear here once their agents ship metrics.</div>;
  return null;
}

/** Pending and firing alerts; an unreachable ruler is an error, not "none". */
function useAlerts() {
  return useData(() => fetchAlerts(), []);
}

/** An environment's alert state on its overview card. */
function AlertBadge({ list }: { list: Alert[] }) {
  const firing = list.filter((a) => a.state === "firing").length;
  const pending = list.length - firing;
  if (list.length === 0) return <span className="badge ok" data-testid="dp-alerts" data-state="ok">no alerts</span>;
  return (
    <span
      className={`badge ${firing ? "firing" : "pending"}`}
      data-testid="dp-alerts"
      data-state={firing ? "firing" : "pending"}
      title={list.map((a) => `${a.labels.alertname} (${a.state})`).join(", ")}
    >
      {firing ? `${firing} firing` : ""}
      {firing && pending ? ", " : ""}
      {pending ? `${pending} pending` : ""}
    </span>
  );
}

export function Overview() {
  const { data, error } = useDataPlanes();
  const active = useAlerts();
  if (!data && !error) return <div className="state">Loading…</div>;
  return (
    <div>
      <h2>Overview</h2>
      <Status error={error} warnings={data?.warnings} empty={data?.rows.length === 0} />
      <div className="cards" data-testid="overview">
        {data?.rows.map((r) => (
          <a key={r.environment + r.dataPlane} className="card" href={`#/env/${r.environment}`} data-testid="dp-card">
            <div className="card-head">
              <span className={healthy(r) ? "dot up" : "dot down"} />
              <strong data-testid="dp-env">{r.environment}</strong>
              <span className="muted">{r.dataPlane}</span>
              {active.data && <AlertBadge list={active.data.filter((a) => a.labels.environment === r.environment)} />}
            </div>
            <dl>
              <dt>Requests</dt>
              <dd data-testid="dp-rate">{r.rate === null ? "–" : `${formatValue(r.rate)}/s`}</dd>
              <dt>Errors</dt>
              <dd>{r.errorRatio === null ? "–" : `${(r.errorRatio * 100).toFixed(1)}%`}</dd>
              <dt>p95 latency</dt>
              <dd>{r.p95 === null || Number.isNaN(r.p95) ? "–" : `${(r.p95 * 1000).toFixed(0)} ms`}</dd>
              <dt>Last seen</dt>
              <dd>{ago(r.lastSeen)}</dd>
            </dl>
          </a>
        ))}
      </div>
    </div>
  );
}

function useEnvironments() {
  return useData(() => labelValues("environment"), []);
}

export function Environment({ env }: { env?: string }) {
  const envs = useEnvironments();
  const current = env ?? envs.data?.[0];
  return (
    <div>
      <div className="row">
        <h2>Environment</h2>
        <select
          data-testid="env-select"
          value={current ?? ""}
          onChange={(e) => (window.location.hash = `#/env/${e.target.value}`)}
        >
          {(envs.data ?? []).map((e) => (
            <option key={e}>{e}</option>
          ))}
        </select>
      </div>
      <Status error={envs.error} empty={envs.data?.length === 0} />
      {current && (
        <div className="grid" data-testid="env-panels" data-env={current}>
          {Q.envPanels(current).map((p) => (
            <Chart key={current + p.title} title={`${p.title} — ${current}`} queries={p.queries} unit={p.unit} threshold={p.threshold} />
          ))}
        </div>
      )}
    </div>
  );
}

export function Compare() {
  const envs = useEnvironments();
  const [chosen, setChosen] = useState<string[] | null>(null);
  const selected = chosen ?? envs.data ?? [];
  return (
    <div>
      <div className="row">
        <h2>Compare</h2>
        {(envs.data ?? []).map((e) => (
          <label key={e} className="check">
            <input
              type="checkbox"
              checked={selected.includes(e)}
              onChange={() => setChosen(selected.includes(e) ? selected.filter((x) => x !== e) : [...selected, e])}
            />
            {e}
          </label>
        ))}
      </div>
      <Status error={envs.error} empty={envs.data?.length === 0} />
      <div className="compare" style={{ gridTemplateColumns: `repeat(${Math.max(1, selected.length)}, 1fr)` }}>
        {selected.map((env) => (
          <div key={env}>
            <h3 className="center">{env}</h3>
            {Q.envPanels(env).map((p) => (
              <Chart key={env + p.title} title={p.title} queries={p.queries} unit={p.unit} threshold={p.threshold} height={160} />
            ))}
          </div>
        ))}
      </div>
    </div>
  );
}

export function DataPlanes() {
  const { data, error } = useDataPlanes();
  const queue = useData(() => queryInstant("sum by (environment, data_plane_id) (strata_agent_queue_bytes)"), []);
  const q = queue.data ? byDataPlane(queue.data.series) : new Map();
  return (
    <div>
      <h2>Data planes</h2>
      <Status error={error} warnings={data?.warnings} empty={data?.rows.length === 0} />
      <table data-testid="dataplanes">
        <thead>
          <tr>
            <th>Status</th>
            <th>Environment</th>
            <th>Data plane</th>
            <th>Last sample</th>
            <th>Series</th>
            <th>Agent queue</th>
          </tr>
        </thead>
        <tbody>
          {data?.rows.map((r) => (
            <tr key={r.environment + r.dataPlane}>
              <td>
                <span className={healthy(r) ? "dot up" : "dot down"} /> {healthy(r) ? "up" : "down"}
              </td>
              <td>{r.environment}</td>
              <td>{r.dataPlane}</td>
              <td>{r.lastSeen ? new Date(r.lastSeen * 1000).toLocaleTimeString() : "–"} ({ago(r.lastSeen)})</td>
              <td>{r.series ?? "–"}</td>
              <td title="strata_agent_queue_bytes: bytes in the agent's disk queue not yet delivered (shipped by the agent's self-monitoring)">
                {q.has(`${r.environment}/${r.dataPlane}`) ? `${formatValue(q.get(`${r.environment}/${r.dataPlane}`) ?? 0)}B` : "n/a"}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Explore() {
  const { range } = useSettings();
  const [text, setText] = useState('sum by (environment) (rate(http_server_request_duration_seconds_count[1m]))');
  const [expr, setExpr] = useState<string | null>(null);
  const [table, setTable] = useState<Series[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const run = (q: string) => {
    setExpr(q);
    setError(null);
    queryInstant(q)
      .then((r) => setTable(r.series))
      .catch((e: unknown) => {
        setTable(null);
        setError(e instanceof QueryError ? e.message : String(e));
      });
    // Validate the range form too, so syntax errors show even for graph-only use.
    queryRange(q, Math.floor(Date.now() / 1000) - range, Math.floor(Date.now() / 1000), 60).catch(() => undefined);
  };
  return (
    <div>
      <h2>Explore</h2>
      <div className="row">
        <textarea
          data-testid="explore-input"
          value={text}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(text);
          }}
          rows={3}
        />
        <button data-testid="explore-run" onClick={() => run(text)}>
          Run
        </button>
      </div>
      {error && (
        <div className="error" data-testid="explore-error">
          {error}
        </div>
      )}
      {expr && !error && <Chart title="Graph" queries={[{ expr }]} />}
      {table && !error && (
        <table data-testid="explore-table">
          <thead>
            <tr>
              <th>Series</th>
              <th>Value</th>
            </tr>
          </thead>
          <tbody>
            {table.length === 0 && (
              <tr>
                <td colSpan={2}>No data</td>
              </tr>
            )}
            {table.map((s, i) => (
              <tr key={i}>
                <td className="mono">{seriesName(s.metric) || "{}"}</td>
                <td className="mono">{s.value?.[1]}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

export function Cardinality() {
  const metrics = useData(() => queryInstant(Q.cardinality.topMetrics), []);
  const labels = useData(async () => {
    const names = (await labelNames()).filter((n) => n !== "__name__").slice(0, 30);
    const counts = await Promise.all(
      names.map(async (n) => {
        const r = await queryInstant(Q.cardinality.labelValues(n));
        return { name: n, values: num(r.series[0]?.value) ?? 0 };
      }),
    );
    return counts.sort((a, b) => b.values - a.values).slice(0, 15);
  }, []);
  return (
    <div>
      <h2>Cardinality</h2>
      <div className="grid">
        <div className="panel">
          <h3>Top metrics by series</h3>
          <pre className="query">{Q.cardinality.topMetrics}</pre>
          <Status error={metrics.error} empty={metrics.data?.series.length === 0} />
          <table data-testid="card-metrics">
            <tbody>
              {metrics.data?.series
                .slice()
                .sort((a, b) => (num(b.value) ?? 0) - (num(a.value) ?? 0))
                .map((s) => (
                  <tr key={s.metric.__name__}>
                    <td className="mono">{s.metric.__name__}</td>
                    <td>{s.value?.[1]}</td>
                  </tr>
                ))}
            </tbody>
          </table>
        </div>
        <div className="panel">
          <h3>Top labels by distinct values</h3>
          <pre className="query">{Q.cardinality.labelValues("<label>")}</pre>
          <Status error={labels.error} empty={labels.data?.length === 0} />
          <table>
            <tbody>
              {labels.data?.map((l) => (
                <tr key={l.name}>
                  <td className="mono">{l.name}</td>
                  <td>{l.values}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </div>
    </div>
  );
}

interface HealthStats {
  leader: string | null;
  term: number | null;
  lag: number | null;
  pending: number | null;
  objstoreErrors: number | null;
  targetsUp: number | null;
  targets: number | null;
  warnings: string[];
}

const first = (r: { series: Series[] }) => (r.series.length ? num(r.series[0].value) : null);

/** "Strata health": the control plane's own metrics (docs/metrics.md), one page. */
export function Health() {
  const { data, error } = useData<HealthStats>(async () => {
    const S = Q.health.stats;
    const [leader, term, lag, pending, errors, up, targets] = await Promise.all(
      [S.leader, S.term, S.lag, S.pending, S.objstoreErrors, S.targetsUp, S.targets].map((q) => queryInstant(q)),
    );
    return {
      leader: leader.series.length ? leader.series.map((s) => s.metric.instance ?? "?").join(", ") : null,
      term: first(term),
      lag: first(lag),
      pending: first(pending),
      objstoreErrors: first(errors),
      targetsUp: first(up),
      targets: first(targets),
      warnings: [leader, term, lag, pending, errors, up, targets].flatMap((r) => r.warnings),
    };
  }, []);
  const show = (v: number | null, fmt = (x: number) => formatValue(x)) => (v === null ? "–" : fmt(v));
  const targetsOk = data && data.targets !== null && data.targetsUp === data.targets;
  return (
    <div>
      <h2>Strata health</h2>
      <Status error={error} warnings={data?.warnings} />
      {data && data.targets === null && data.term === null && (
        <div className="state">
          No self-metrics: Strata's own /metrics are not collected into this tenant (an agent scraping the control plane: docs/operations.md).
        </div>
      )}
      <div className="cards" data-testid="health-stats">
        <div className="card" data-testid="health-leader">
          <div className="card-head">
            <span className={data?.leader ? "dot up" : "dot down"} />
            <strong>Raft</strong>
          </div>
          <dl>
            <dt>Leader</dt>
            <dd data-testid="health-leader-instance">{data?.leader ?? "none"}</dd>
            <dt>Term</dt>
            <dd data-testid="health-term">{show(data?.term ?? null, (x) => x.toFixed(0))}</dd>
            <dt>Apply lag</dt>
            <dd>{show(data?.lag ?? null, (x) => `${x.toFixed(0)} entries`)}</dd>
          </dl>
        </div>
        <div className="card">
          <div className="card-head">
            <span className={targetsOk ? "dot up" : "dot down"} />
            <strong>Components</strong>
          </div>
          <dl>
            <dt>Scraped up</dt>
            <dd data-testid="health-targets">
              {data?.targets === null || !data ? "–" : `${show(data.targetsUp, (x) => x.toFixed(0))} / ${data.targets.toFixed(0)}`}
            </dd>
            <dt>Blocks pending upload</dt>
            <dd>{show(data?.pending ?? null, (x) => x.toFixed(0))}</dd>
            <dt>Object-storage errors (15m)</dt>
            <dd data-testid="health-objstore-errors">{show(data?.objstoreErrors ?? null, (x) => x.toFixed(0))}</dd>
          </dl>
        </div>
      </div>
      <div className="grid" data-testid="health-panels">
        {Q.health.panels.map((p) => (
          <Chart key={p.title} title={p.title} queries={p.queries} unit={p.unit} />
        ))}
      </div>
    </div>
  );
}

function since(iso: string): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "–";
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/** The Alerts page: firing then pending alerts, and the rules' health. */
export function Alerts() {
  const active = useAlerts();
  const rules = useData(() => ruleGroups(), []);
  const list = [...(active.data ?? [])].sort(
    (a, b) =>
      (a.state === b.state ? 0 : a.state === "firing" ? -1 : 1) ||
      (a.labels.alertname ?? "").localeCompare(b.labels.alertname ?? "") ||
      Date.parse(a.activeAt) - Date.parse(b.activeAt),
  );
  const groups = rules.data ?? [];
  const all = groups.flatMap((g) => g.rules.map((r) => ({ ...r, group: g.name })));
  const broken = all.filter((r) => r.health === "err");
  return (
    <div>
      <h2>Alerts</h2>
      <Status error={active.error} />
      {active.data && list.length === 0 && <div className="state" data-testid="alerts-none">No alert is pending or firing.</div>}
      {list.length > 0 && (
        <table data-testid="alerts">
          <thead>
            <tr>
              <th>State</th>
              <th>Alert</th>
              <th>Labels</th>
              <th>Summary</th>
              <th>Active for</th>
              <th>Runbook</th>
            </tr>
          </thead>
          <tbody>
            {list.map((a) => {
              const labels = Object.entries(a.labels).filter(([k]) => k !== "alertname");
              return (
                <tr
                  key={JSON.stringify(a.labels)}
                  data-testid="alert-row"
                  data-alertname={a.labels.alertname}
                  data-state={a.state}
                  data-environment={a.labels.environment ?? ""}
                >
                  <td>
                    <span className={`badge ${a.state}`}>{a.state}</span>
                  </td>
                  <td>
                    <strong>{a.labels.alertname}</strong>
                  </td>
                  <td className="mono">{labels.map(([k, v]) => `${k}="${v}"`).join(", ")}</td>
                  <td>
                    <div data-testid="alert-summary">{a.annotations.summary ?? ""}</div>
                    {a.annotations.description && <div className="muted small">{a.annotations.description}</div>}
                  </td>
                  <td title={`since ${new Date(Date.parse(a.activeAt)).toLocaleString()}`}>{since(a.activeAt)}</td>
                  <td>
                    {a.annotations.runbook_url ? (
                      <a href={a.annotations.runbook_url} target="_blank" rel="noreferrer" data-testid="alert-runbook">
                        runbook
                      </a>
                    ) : (
                      "–"
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <h3 className="section">Rules</h3>
      <Status error={rules.error} />
      {rules.data && (
        <div data-testid="rules-summary">
          {groups.length} groups, {all.filter((r) => r.type === "alerting").length} alerting and{" "}
          {all.filter((r) => r.type === "recording").length} recording rules
          {broken.length ? `, ${broken.length} failing` : ", all healthy"}.
        </div>
      )}
      {broken.length > 0 && (
        <table data-testid="rules-failing">
          <tbody>
            {broken.map((r) => (
              <tr key={r.group + r.name}>
                <td>{r.group}</td>
                <td>{r.name}</td>
                <td className="error">{r.lastError}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
