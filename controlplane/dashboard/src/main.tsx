import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import "./style.css";
import { Alerts, Cardinality, Compare, DataPlanes, Environment, Explore, Health, Overview } from "./pages";
import { SettingsContext } from "./settings";
import { getTenant, setTenant } from "./api";

const RANGES: [string, number][] = [
  ["5m", 300],
  ["15m", 900],
  ["1h", 3600],
  ["6h", 21600],
  ["24h", 86400],
];
const REFRESH: [string, number][] = [
  ["off", 0],
  ["10s", 10],
  ["30s", 30],
  ["1m", 60],
];
const PAGES: [string, string][] = [
  ["overview", "Overview"],
  ["env", "Environment"],
  ["compare", "Compare"],
  ["dataplanes", "Data planes"],
  ["alerts", "Alerts"],
  ["explore", "Explore"],
  ["cardinality", "Cardinality"],
  ["health", "Strata health"],
];

function useHash(): string[] {
  const [hash, setHash] = useState(window.location.hash);
  useEffect(() => {
    const f = () => setHash(window.location.hash);
    window.addEventListener("hashchange", f);
    return () => window.removeEventListener("hashchange", f);
  }, []);
  return hash.replace(/^#\/?/, "").split("/").filter(Boolean);
}

function App() {
  const [page, arg] = useHash();
  const [range, setRange] = useState(900);
  const [refresh, setRefresh] = useState(10);
  const [tick, setTick] = useState(0);
  const [updated, setUpdated] = useState(new Date());
  const [tenant, setTenantState] = useState(getTenant());
  const applyTenant = (t: string) => {
    setTenant(t);
    setTenantState(getTenant());
    setTick((n) => n + 1);
  };
  useEffect(() => {
    if (!refresh) return;
    const id = setInterval(() => setTick((t) => t + 1), refresh * 1000);
    return () => clearInterval(id);
  }, [refresh]);
  useEffect(() => setUpdated(new Date()), [tick, range, page, arg]);
  const current = page ?? "overview";
  return (
    <SettingsContext.Provider value={{ range, tick }}>
      <header>
        <span className="brand">Strata</span>
        <nav>
          {PAGES.map(([id, label]) => (
            <a key={id} href={`#/${id}`} className={current === id ? "active" : ""}>
              {label}
            </a>
          ))}
        </nav>
        <div className="controls">
          <select value={range} onChange={(e) => setRange(Number(e.target.value))} title="Time range">
            {RANGES.map(([l, v]) => (
              <option key={v} value={v}>
                Last {l}
              </option>
            ))}
          </select>
          <select value={refresh} onChange={(e) => setRefresh(Number(e.target.value))} title="Auto-refresh">
            {REFRESH.map(([l, v]) => (
              <option key={v} value={v}>
                Refresh {l}
              </option>
            ))}
          </select>
          <input
            key={tenant}
            defaultValue={tenant}
            placeholder="tenant"
            title="Tenant (X-Scope-OrgID) for admins and gateways allowed several; empty: your credential's own"
            data-testid="tenant"
            size={12}
            onBlur={(e) => e.target.value.trim() !== tenant && applyTenant(e.target.value)}
            onKeyDown={(e) => e.key === "Enter" && applyTenant((e.target as HTMLInputElement).value)}
          />
          <button onClick={() => setTick((t) => t + 1)}>Refresh</button>
          <span className="muted" data-testid="updated">
            Updated {updated.toLocaleTimeString()}
          </span>
        </div>
      </header>
      <main>
        {current === "overview" && <Overview />}
        {current === "env" && <Environment env={arg} />}
        {current === "compare" && <Compare />}
        {current === "dataplanes" && <DataPlanes />}
        {current === "alerts" && <Alerts />}
        {current === "explore" && <Explore />}
        {current === "cardinality" && <Cardinality />}
        {current === "health" && <Health />}
      </main>
    </SettingsContext.Provider>
  );
}

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
