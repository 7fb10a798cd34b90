import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Built into dist/, which the querier embeds and serves at `/`.
// `npm run dev` proxies the API to a querier on :9090.
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1000 },
  server: { proxy: { "/api": "http://127.0.0.1:9090" } },
});
