import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies /api (REST and the WebSocket) to the API that
// scripts/dev starts, so the page and the API share one origin.
const api = process.env.FASTPREP_API_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  server: {
    host: "127.0.0.1",
    port: 5173,
    proxy: { "/api": { target: api, ws: true, changeOrigin: false } },
  },
  build: {
    target: "es2022",
    sourcemap: true,
    manifest: true,
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
  },
});
