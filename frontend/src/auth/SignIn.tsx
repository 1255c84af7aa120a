//! The sign-in screen, which also says why a session ended (expired, ended
//! elsewhere, account deactivated, signed out).

import { useEffect, useRef, useState, type FormEvent } from "react";
import { ApiFailure } from "../api/failure";
import { useServices, useSession } from "../app/services";
import { useI18n, type T } from "../i18n";
import { LangSwitch } from "../ui/LangSwitch";

function failureText(t: T, e: unknown): string {
  if (!(e instanceof ApiFailure)) return t("signin.failed", { message: String(e) });
  if (e.isNetwork) return t("signin.offline");
  if (e.status === 401) return t("signin.invalid");
  if (e.status === 429) return t("signin.throttled", { seconds: e.retryAfter ?? 60 });
  if (e.status === 503) return t("signin.unavailable");
  return t("signin.failed", { message: e.message });
}

function EndedNotice() {
  const { t } = useI18n();
  const { ended } = useSession();
  if (!ended) return null;
  if (ended === "signed_out") {
    return (
      <p className="notice notice-info" role="status" data-testid="ended" data-reason={ended}>
        {t("ended.signed_out")}
      </p>
    );
  }
  return (
    <div className="notice notice-warn" role="alert" data-testid="ended" data-reason={ended}>
      <h2>{t(`ended.${ended}.title`)}</h2>
      <p>{t(`ended.${ended}`)}</p>
    </div>
  );
}

export function SignIn() {
  const { t } = useI18n();
  const { session } = useServices();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const emailRef = useRef<HTMLInputElement>(null);

  useEffect(() => emailRef.current?.focus(), []);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      await session.signIn(email.trim(), password);
    } catch (err) {
      setError(failureText(t, err));
      setBusy(false);
    }
  }

  return (
    <main className="signin" aria-labelledby="signin-title">
      <div className="signin-card">
        <div className="signin-top">
          <span className="brand">{t("app.name")}</span>
          <LangSwitch />
        </div>
        <EndedNotice />
        <h1 id="signin-title">{t("signin.title")}</h1>
        <form onSubmit={submit} noValidate>
          <label htmlFor="email">{t("signin.email")}</label>
          <input
            id="email"
            ref={emailRef}
            type="email"
            autoComplete="username"
            value={email}
            onChange={(e) => setEmail(e.target.value)}
            required
          />
          <label htmlFor="password">{t("signin.password")}</label>
          <input
            id="password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            required
          />
          {error && (
            <p className="form-error" role="alert">
              {error}
            </p>
          )}
          <button type="submit" className="primary" disabled={busy || !email || !password}>
            {busy ? t("signin.busy") : t("signin.submit")}
          </button>
        </form>
        <p className="hint">{t("signin.reload_note")}</p>
      </div>
    </main>
  );
}
