import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { queryRange, QueryError, seriesName, type Series } from "./api";
import { useSettings } from "./settings";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];

export interface PanelQuery {
  expr: string;
  /** Legend for every series of this query; default: its labels. */
  legend?: string;
}

interface Props {
  title: string;
  queries: PanelQuery[];
  unit?: string;
  threshold?: number;
  height?: number;
}

/** A time-series panel: runs its range queries and draws them with uPlot. */
export function Chart({ title, queries, unit = "", threshold, height = 220 }: Props) {
  const { range, tick } = useSettings();
  const [data, setData] = useState<{ series: { name: string; values: (number | null)[] }[]; xs: number[] } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [warnings, setWarnings] = useState<string[]>([]);
  const [loading, setLoading] = useState(true);
  const [showQuery, setShowQuery] = useState(false);
  const key = queries.map((q) => q.expr).join("\n");

  useEffect(() => {
    let cancelled = false;
    const end = Math.floor(Date.now() / 1000);
    const start = end - range;
    const step = Math.max(5, Math.round(range / 240));
    const xs: number[] = [];
    for (let t = start; t <= end; t += step) xs.push(t);
    setLoading(true);
    Promise.all(queries.map((q) => queryRange(q.expr, start, end, step).then((r) => ({ q, r }))))
      .then((results) => {
        if (cancelled) return;
        const series: { name: string; values: (number | null)[] }[] = [];
        const warn: string[] = [];
        for (const { q, r } of results) {
          warn.push(...r.warnings);
          r.series.forEach((s: Series) => {
            const byT = new Map<number, number>();
            for (const [t, v] of s.values ?? []) byT.set(Math.round(t), parseFloat(v));
            series.push({
              name: q.legend ?? seriesName(s.metric),
              values: xs.map((t) => (byT.has(t) ? (byT.get(t) as number) : null)),
            });
          });
        }
        setData({ series, xs });
        setWarnings(warn);
        setError(null);
      })
      .catch((e: unknown) => {
        if (!cancelled) setError(e instanceof QueryError ? e.message : String(e));
      })
      .finally(() => {
        if (!cancelled) setLoading(false);
      });
    return () => {
      cancelled = true;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, range, tick]);

  return (
    <div className="panel" data-testid="panel">
      <div className="panel-head">
        <h3>{title}</h3>
        <button className="link" onClick={() => setShowQuery(!showQuery)}>
          {showQuery ? "Hide query" : "View query"}
        </button>
      </div>
      {showQuery && (
        <pre className="query" data-testid="panel-query">
          {queries.map((q) => q.expr).join("\n")}
        </pre>
      )}
      {error ? (
        <div className="error">{error}</div>
      ) : !data ? (
        <div className="state">Loading…</div>
      ) : data.series.length === 0 ? (
        <div className="state">{loading ? "Loading…" : "No data in this time range"}</div>
      ) : (
        <Plot data={data} unit={unit} threshold={threshold} height={height} />
      )}
      {warnings.length > 0 && <div className="warning">Partial result: {warnings.join("; ")}</div>}
    </div>
  );
}

function Plot({
  data,
  unit,
  threshold,
  height,
}: {
  data: { series: { name: string; values: (number | null)[] }[]; xs: number[] };
  unit: string;
  threshold?: number;
  height: number;
}) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const fmt = (v: number | null) => (v === null ? "–" : `${formatValue(v)}${unit}`);
    const series: uPlot.Series[] = [{}];
    const values: (number | null)[][] = [];
    data.series.forEach((s, i) => {
      // Sparse series (a data plane that just started) would be invisible as lines: draw their points.
      const present = s.values.filter((v) => v !== null).length;
      series.push({
        label: s.name,
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        value: (_u, v) => fmt(v),
        spanGaps: false,
        points: { show: present <= 60, size: 5, fill: COLORS[i % COLORS.length] },
      });
      values.push(s.values);
    });
    if (threshold !== undefined) {
      series.push({ label: `threshold ${threshold}${unit}`, stroke: "#f59e0b", dash: [6, 4], width: 1 });
      values.push(data.xs.map(() => threshold));
    }
    const opts: uPlot.Options = {
      width: Math.max(el.clientWidth, 300),
      height,
      series,
      axes: [{}, { values: (_u, ticks) => ticks.map((t) => `${formatValue(t)}${unit}`), size: 70 }],
      legend: { show: true },
    };
    const plot = new uPlot(opts, [data.xs, ...values] as uPlot.AlignedData, el);
    const onResize = () => plot.setSize({ width: Math.max(el.clientWidth, 300), height });
    window.addEventListener("resize", onResize);
    return () => {
      window.removeEventListener("resize", onResize);
      plot.destroy();
    };
  }, [data, unit, threshold, height]);
  return <div ref={ref} className="plot" data-testid="plot" />;
}

export function formatValue(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (a >= 10 || a === 0) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}
