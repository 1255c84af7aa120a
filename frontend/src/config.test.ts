import { afterEach, describe, expect, it, vi } from "vitest";
import { apiBase, wsBase, wsUrl } from "./config";

describe("where the API and the socket are", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("takes the page's origin when nothing is set", () => {
    vi.stubGlobal("window", { location: { origin: "https://admin.example.com" } });
    expect(apiBase()).toBe("");
    expect(wsUrl()).toBe("wss://admin.example.com/api/ws");
  });

  it("sends the socket to the API's origin, or to wsBase when set", () => {
    vi.stubGlobal("window", {
      location: { origin: "https://admin.example.com" },
      FASTPREP_CONFIG: { apiBase: "https://api.example.com/" },
    });
    expect(wsUrl()).toBe("wss://api.example.com/api/ws");
    // The static host passes /api through (same-site cookie); the socket goes straight to the API.
    vi.stubGlobal("window", {
      location: { origin: "https://admin.example.com" },
      FASTPREP_CONFIG: { apiBase: "", wsBase: "https://fastprep-api.onrender.com/" },
    });
    expect(apiBase()).toBe("");
    expect(wsBase()).toBe("https://fastprep-api.onrender.com");
    expect(wsUrl()).toBe("wss://fastprep-api.onrender.com/api/ws");
  });
});
