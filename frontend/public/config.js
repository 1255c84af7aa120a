// The deployment's settings, read before the app starts. An empty apiBase
// means the API answers on the page's own origin (the dev server's proxy,
// or a reverse proxy in front of both). A static host rewrites this file.
window.FASTPREP_CONFIG = { apiBase: "" };
