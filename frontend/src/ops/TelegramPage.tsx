//! The Telegram account: its session (authorized, needs a login, or in a
//! flood wait until a time), the login's step, and the login itself: phone,
//! then code, then the 2FA password. The code and the password are cleared
//! from the form as soon as they are sent.

import { useState, type FormEvent } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { unwrap } from "../api/client";
import type { components } from "../api/schema";
import { useServices } from "../app/services";
import { useI18n } from "../i18n";
import { LoadError, Loading } from "../ui/pageStates";
import { loginError, type Worded } from "./telegramLogin";

type LoginView = components["schemas"]["LoginView"];
type Step = LoginView["step"];
const key = ["ops", "telegram"] as const;

function LoginForm({ step, login }: { step: Exclude<Step, "authorized">; login: LoginView | null }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const [value, setValue] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Worded | null>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const sent = value.trim();
    if (!sent) return;
    // The code and the password leave the form now, whatever the answer.
    if (step !== "phone") setValue("");
    setBusy(true);
    setError(null);
    try {
      const view =
        step === "phone"
          ? await unwrap(api.POST("/api/ops/telegram/login/phone", { body: { phone: sent } }))
          : step === "code"
            ? await unwrap(api.POST("/api/ops/telegram/login/code", { body: { code: sent } }))
            : await unwrap(api.POST("/api/ops/telegram/login/password", { body: { password: sent } }));
      setValue("");
      qc.setQueryData(key, (old: components["schemas"]["TelegramAccount"] | undefined) =>
        old ? { ...old, login: view } : old,
      );
      void qc.invalidateQueries({ queryKey: key });
    } catch (err) {
      setError(loginError(err));
    } finally {
      setBusy(false);
    }
  }

  const id = `tg-${step}`;
  return (
    <form className="tg-login" onSubmit={(e) => void submit(e)} data-testid="tg-login" data-step={step}>
      <h2>{t(`tg.step.${step}.title`)}</h2>
      {step === "code" && login?.phone && <p>{t("tg.code_sent", { phone: login.phone })}</p>}
      {step === "password" && login?.hint && <p>{t("tg.hint", { hint: login.hint })}</p>}
      <label htmlFor={id}>{t(`tg.step.${step}.label`)}</label>
      <div className="inline">
        <input
          id={id}
          type={step === "password" ? "password" : step === "phone" ? "tel" : "text"}
          inputMode={step === "code" ? "numeric" : undefined}
          autoComplete={step === "password" ? "current-password" : step === "code" ? "one-time-code" : "tel"}
          value={value}
          onChange={(e) => setValue(e.target.value)}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? `${id}-error` : undefined}
          maxLength={step === "password" ? 256 : step === "code" ? 16 : 32}
          required
        />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? t("tg.sending") : t(`tg.step.${step}.submit`)}
        </button>
      </div>
      {error && (
        <p id={`${id}-error`} className="form-error" role="alert" data-testid="tg-error">
          {t(error.key, error.vars)}
        </p>
      )}
    </form>
  );
}

export function TelegramPage() {
  const { t, dateTime } = useI18n();
  const { api } = useServices();
  const q = useQuery({
    queryKey: key,
    queryFn: ({ signal }) => unwrap(api.GET("/api/ops/telegram", { signal })),
    refetchInterval: 10_000,
    staleTime: 0,
  });
  const [relogin, setRelogin] = useState(false);
  return (
    <section className="page" aria-labelledby="tg-title">
      <h1 id="tg-title">{t("nav.telegram")}</h1>
      {q.isPending ? (
        <Loading />
      ) : q.isError ? (
        <LoadError error={q.error} retry={() => void q.refetch()} />
      ) : (
        (() => {
          const { session, login } = q.data;
          const step: Step = login?.step ?? (session.session === "authorized" ? "authorized" : "phone");
          return (
            <>
              <div className="cards">
                <div className="card" data-testid="tg-session" data-state={session.session}>
                  <div className="card-label">{t("tg.session")}</div>
                  <div className={`card-value tg-${session.session}`}>
                    {session.session === "flood_wait" && session.until
                      ? t("tg.session.flood_wait_until", { time: dateTime(session.until) })
                      : t(`tg.session.${session.session}`)}
                  </div>
                </div>
                <div className="card" data-testid="tg-step" data-step={login?.step ?? "none"}>
                  <div className="card-label">{t("tg.login_step")}</div>
                  <div className="card-value">{login ? t(`tg.step.${login.step}`) : t("tg.step.none")}</div>
                </div>
              </div>
              {!login && <p className="notice notice-info">{t("tg.no_login")}</p>}
              {step === "authorized" && !relogin ? (
                <p>
                  <button type="button" onClick={() => setRelogin(true)}>
                    {t("tg.relogin")}
                  </button>
                </p>
              ) : (
                <LoginForm key={step === "authorized" ? "phone" : step} step={step === "authorized" ? "phone" : step} login={login} />
              )}
            </>
          );
        })()
      )}
    </section>
  );
}
