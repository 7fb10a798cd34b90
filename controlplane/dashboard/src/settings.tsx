import { createContext, useContext } from "react";

export interface Settings {
  /** Time range in seconds. */
  range: number;
  /** Bumped on every (auto) refresh; panels re-query when it changes. */
  tick: number;
}

export const SettingsContext = createContext<Settings>({ range: 900, tick: 0 });

export function useSettings(): Settings {
  return useContext(SettingsContext);
}
